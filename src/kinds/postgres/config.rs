//! The `postgres:` block of a source in a policy file.

use std::path::PathBuf;

use serde::Deserialize;

use crate::policy::{default_true, BackupKind, Databases, SecretRef};

/// A PostgreSQL server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    /// Host name or IP address (default `localhost`), or a Unix socket folder.
    #[serde(default = "default_pg_host")]
    pub host: String,
    /// Port (default 5432).
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Role to connect as (default `postgres`). It needs to read every
    /// table; `pg_dumpall --globals-only` also needs a superuser to include
    /// role passwords.
    #[serde(default = "default_pg_user")]
    pub user: String,
    /// Password, from an environment variable or a file. Handed to pg_dump
    /// through `PGPASSWORD`, never on a command line.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// `all` (every database that accepts connections, templates excluded)
    /// or a list of names.
    #[serde(default)]
    pub databases: Databases,
    /// Also dump roles and tablespaces with `pg_dumpall --globals-only`
    /// (default true).
    #[serde(default = "default_true")]
    pub globals: bool,
    /// Folder holding pg_dump, pg_dumpall, pg_restore and psql. By default
    /// lifeboat picks the Debian folder `/usr/lib/postgresql/N/bin` matching
    /// the server, then `PATH`.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// What scheduled backups (`lifeboat run`) and `lifeboat backup`
    /// without `--kind` take: `dump` (pg_dump per database, default) or
    /// `base` (pg_basebackup, for point-in-time recovery with the WAL
    /// archive).
    #[serde(default)]
    pub backup: BackupKind,
}

fn default_pg_host() -> String {
    "localhost".into()
}
pub(crate) fn default_pg_port() -> u16 {
    5432
}
fn default_pg_user() -> String {
    "postgres".into()
}
