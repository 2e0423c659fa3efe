//! Source kinds: everything one kind of source knows lives in its folder,
//! behind the [`Kind`] trait ([`registry`]). The `kinds!` list below is the
//! one place that names every kind: one line each, which makes the
//! policy's `Source` (one optional block per kind), `SourceKind` and
//! `ManifestKind` (the format's strings, and the short label `lifeboat
//! list` shows). Each kind's folder is declared as a module next to it
//! (outside the macro, so rustfmt and rust-analyzer see it).

pub mod command;
pub mod kubernetes;
pub mod mysql;
pub mod postgres;
pub mod registry;

pub use registry::*;

use registry::{kinds, label};

kinds! {
    /// A PostgreSQL server whose databases are dumped with pg_dump (or
    /// copied whole with pg_basebackup, for point-in-time recovery).
    postgres: Postgres(postgres::config::PostgresSource) => [PostgresDump = "postgres-dump" as "dump", PostgresBase = "postgres-base" as "base"],
    /// A MySQL or MariaDB server whose databases are dumped with
    /// mariadb-dump or mysqldump.
    mysql: Mysql(mysql::config::MysqlSource) => [MysqlDump = "mysql-dump"],
    /// A Kubernetes cluster whose configuration (the objects of some
    /// namespaces) is exported.
    kubernetes: Kubernetes(kubernetes::config::KubernetesSource) => [KubernetesExport = "kubernetes-export" as "k8s-export"],
    /// Any tool that writes a backup to its standard output, restored by a
    /// command that reads it from its standard input.
    command: Command(command::CommandSource) => [CommandOutput = "command"],
}

impl From<ManifestKind> for String {
    fn from(k: ManifestKind) -> String {
        match k {
            ManifestKind::Unknown(s) => s,
            known => known.as_str().to_string(),
        }
    }
}

impl std::fmt::Display for ManifestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
