//! The `sources:` list: PostgreSQL, MySQL/MariaDB and Kubernetes sources, and the backup kinds.

use super::*;
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

/// A Kubernetes cluster: which namespaces (and cluster-scoped kinds) to
/// export. Every resource type the server offers is included, custom
/// resources too, except those that are never configuration (events,
/// endpoints, leases...) and those named in `exclude_resources`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSource {
    /// kubeconfig file. Default: KUBECONFIG or ~/.kube/config, then the
    /// Pod's service account when running in the cluster.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context. Default: the current context.
    #[serde(default)]
    pub context: Option<String>,
    /// `all`, or a list of namespace names.
    #[serde(default)]
    pub namespaces: Option<Namespaces>,
    /// Namespaces by label selector instead (`team=payments,env!=dev`).
    #[serde(default)]
    pub namespace_selector: Option<String>,
    /// With `all` or a selector: namespaces left out. Default:
    /// kube-system, kube-public, kube-node-lease.
    #[serde(default)]
    pub exclude_namespaces: Option<Vec<String>>,
    /// Cluster-scoped kinds to export too, by kind or plural name
    /// (`CustomResourceDefinition`, `clusterroles`, `storageclasses`).
    #[serde(default)]
    pub cluster_resources: Vec<String>,
    /// Resource types left out, by kind, plural or short name, optionally
    /// with the group (`secrets`, `certificates.cert-manager.io`), or a
    /// whole API group (`*.metrics.example.io`).
    #[serde(default)]
    pub exclude_resources: Vec<String>,
}

impl KubernetesSource {
    /// The namespaces left out of `all` or a selector.
    pub fn excluded_namespaces(&self) -> Vec<String> {
        self.exclude_namespaces.clone().unwrap_or_else(|| {
            ["kube-system", "kube-public", "kube-node-lease"]
                .map(String::from)
                .to_vec()
        })
    }
}

/// Which namespaces a Kubernetes source exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    All,
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for Namespaces {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Databases::deserialize_named(d, "namespaces", "namespace")? {
            Databases::All => Ok(Namespaces::All),
            Databases::List(l) => Ok(Namespaces::List(l)),
        }
    }
}

/// A MySQL or MariaDB server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSource {
    /// Host name or IP address (default `127.0.0.1`).
    #[serde(default = "default_my_host")]
    pub host: String,
    /// Port (default 3306).
    #[serde(default = "default_my_port")]
    pub port: u16,
    /// User to connect as (default `root`). It needs SELECT, SHOW VIEW,
    /// TRIGGER, EVENT, LOCK TABLES, RELOAD (for the consistency point) and
    /// REPLICATION CLIENT (binlog coordinates); REPLICATION SLAVE to archive
    /// binlogs.
    #[serde(default = "default_my_user")]
    pub user: String,
    /// Password, from an environment variable or a file. Handed to the dump
    /// tool in a temporary defaults file, never on a command line.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// `all` (every database except the system schemas) or a list.
    #[serde(default)]
    pub databases: Databases,
    /// Ask the server to start a new binlog file (`FLUSH BINARY LOGS`)
    /// before each dump, so the dump and the binlog after it line up
    /// (default true).
    #[serde(default = "default_true")]
    pub flush_binlogs: bool,
    /// Folder holding mariadb-dump/mysqldump and the client. Default: `PATH`.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// `lifeboat run` archives this server's binlogs continuously (as
    /// `lifeboat binlog-archive` does), restarting the archiver when it
    /// stops (default false).
    #[serde(default)]
    pub archive_binlogs: bool,
    /// How often the binlog file in progress is stored by the daemon's
    /// archiver: the most recent changes a lost server can take with it
    /// (default 60s).
    #[serde(default = "default_binlog_interval")]
    pub binlog_interval: HumanDuration,
}

fn default_binlog_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_my_host() -> String {
    "127.0.0.1".into()
}
fn default_my_port() -> u16 {
    3306
}
fn default_my_user() -> String {
    "root".into()
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
    fn deserialize_named<'de, D: serde::Deserializer<'de>>(
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
