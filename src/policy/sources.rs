//! The `sources:` list (each source's block is its kind's, see
//! `kinds::registry`), and the backup kinds.

use super::*;

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

pub use crate::kinds::{Source, SourceKind};

impl Source {
    /// What a backup of this source takes unless told otherwise.
    pub fn default_backup_kind(&self) -> BackupKind {
        self.kind().imp().default_backup()
    }
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
