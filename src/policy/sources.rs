//! The `sources:` list: PostgreSQL, MySQL/MariaDB and Kubernetes sources, and the backup kinds.

use super::*;
use crate::kinds::kubernetes::config::KubernetesSource;
use crate::kinds::mysql::config::MysqlSource;
use crate::kinds::postgres::config::PostgresSource;

/// What `lifeboat backup --kind` takes, and a schedule's `backup:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// Logical dumps (pg_dump) of each database, with row-count inventories.
    #[default]
    Dump,
    /// A physical base backup of the whole cluster (pg_basebackup), for
    /// point-in-time recovery with the WAL archive.
    Base,
}

/// One protected system. Exactly one kind block (`postgres`, `mysql`) is given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The source's name, used on the command line (`--source`) and in keys.
    pub name: Name,
    /// A PostgreSQL server whose databases are dumped with pg_dump.
    #[serde(default)]
    pub postgres: Option<PostgresSource>,
    /// A MySQL or MariaDB server whose databases are dumped with
    /// mariadb-dump or mysqldump.
    #[serde(default)]
    pub mysql: Option<MysqlSource>,
    /// A Kubernetes cluster whose configuration (the objects of some
    /// namespaces) is exported.
    #[serde(default)]
    pub kubernetes: Option<KubernetesSource>,
}

impl Source {
    /// What a backup of this source takes unless told otherwise.
    pub fn default_backup_kind(&self) -> BackupKind {
        match self.kind() {
            SourceKind::Postgres(pg) => pg.backup,
            _ => BackupKind::Dump,
        }
    }

    /// The source's kind.
    pub fn kind(&self) -> SourceKind<'_> {
        match (&self.postgres, &self.mysql, &self.kubernetes) {
            (Some(pg), _, _) => SourceKind::Postgres(pg),
            (None, Some(my), _) => SourceKind::Mysql(my),
            (None, None, Some(k)) => SourceKind::Kubernetes(k),
            (None, None, None) => unreachable!("validated at load: every source has a kind"),
        }
    }
}

/// A source, by kind.
#[derive(Debug, Clone, Copy)]
pub enum SourceKind<'a> {
    Postgres(&'a PostgresSource),
    Mysql(&'a MysqlSource),
    Kubernetes(&'a KubernetesSource),
}

pub(crate) fn default_true() -> bool {
    true
}

/// Which databases a PostgreSQL source dumps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Databases {
    #[default]
    All,
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for Databases {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Databases::deserialize_named(d, "databases", "database")
    }
}

impl Databases {
    /// `all` or a non-empty list of names; `field` and `what` name them in
    /// messages.
    pub(crate) fn deserialize_named<'de, D: serde::Deserializer<'de>>(
        d: D,
        field: &'static str,
        what: &'static str,
    ) -> Result<Self, D::Error> {
        struct V {
            field: &'static str,
            what: &'static str,
        }
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Databases;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "`all` or a list of {} names", self.what)
            }
            fn visit_str<E: serde::de::Error>(self, w: &str) -> Result<Databases, E> {
                if w == "all" {
                    Ok(Databases::All)
                } else {
                    Err(E::custom(format!(
                        "{f}: '{w}' is neither 'all' nor a list; write `{f}: all` or `{f}: [{w}]`",
                        f = self.field
                    )))
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Databases, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    out.push(name);
                }
                if out.is_empty() {
                    return Err(serde::de::Error::custom(format!(
                        "{f}: the list is empty; name at least one {w} or write `{f}: all`",
                        f = self.field,
                        w = self.what
                    )));
                }
                Ok(Databases::List(out))
            }
        }
        d.deserialize_any(V { field, what })
    }
}
