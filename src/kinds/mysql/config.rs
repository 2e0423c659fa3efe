//! The `mysql:` block of a source in a policy file: a MySQL or MariaDB server.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::policy::{Databases, HumanDuration, SecretRef};

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

fn default_true() -> bool {
    true
}
