//! MySQL and MariaDB: connections, the server's flavor and version, binlog
//! coordinates, the consistency point of a dump, and the row-count
//! inventory taken at that point.
//!
//! The consistency point: one session takes `FLUSH TABLES WITH READ LOCK`,
//! starts a `WITH CONSISTENT SNAPSHOT` transaction and reads the binlog
//! coordinates; the dump tool is started with `--single-transaction` and
//! takes its own snapshot while the lock still holds, so both snapshots see
//! the same committed state, which is exactly the binlog position read. The
//! lock is released as soon as the dump's output shows it has its snapshot;
//! the inventory then counts rows in the first session's snapshot.

use std::path::{Path, PathBuf};

use mysql_async::prelude::Queryable;
use serde::{Deserialize, Serialize};

use super::config::MysqlSource;
use crate::policy::{Databases, PolicyError, Secret};

#[derive(Debug, thiserror::Error)]
pub enum MyError {
    #[error("cannot connect to {flavor} at {host}:{port} as user '{user}': {detail}")]
    Connect {
        flavor: &'static str,
        host: String,
        port: u16,
        user: String,
        detail: String,
    },
    #[error("query on {host}:{port} failed ({what}): {detail}")]
    Query {
        host: String,
        port: u16,
        what: String,
        detail: String,
    },
    #[error("databases not found on {host}:{port}: {missing}; fix the policy's databases list")]
    MissingDatabases {
        host: String,
        port: u16,
        missing: String,
    },
    #[error("cannot find {tool}: looked in {looked}; install the client tools (Debian: mariadb-client) or set bin_dir in the policy")]
    ToolMissing { tool: String, looked: String },
    #[error("cannot write the temporary defaults file for the dump tool: {0}")]
    DefaultsFile(std::io::Error),
}

impl crate::outcome::Classify for MyError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Connect { .. }
            | Self::Query { .. }
            | Self::MissingDatabases { .. }
            | Self::ToolMissing { .. }
            | Self::DefaultsFile(_) => Outcome::Failure,
        }
    }
}

/// How long connecting (TCP, TLS, authentication) may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Idle time before TCP keepalive probes start on lifeboat's own
/// connections.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(30);

/// Where and as whom to connect. The password stays in memory and in a
/// 0600 defaults file that lives as long as the dump.
#[derive(Debug, Clone)]
pub struct MyConn {
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<Secret>,
}

impl MyConn {
    pub fn new(host: String, port: u16, user: String, password: Option<String>) -> MyConn {
        MyConn {
            host,
            port,
            user,
            password: password.map(Secret::new),
        }
    }

    pub fn from_source(src: &MysqlSource) -> Result<MyConn, PolicyError> {
        Ok(MyConn {
            host: src.host.clone(),
            port: src.port,
            user: src.user.clone(),
            password: src.password.as_ref().map(|p| p.resolve()).transpose()?,
        })
    }

    /// Connects, within [`CONNECT_TIMEOUT`], with TCP keepalives on.
    pub async fn connect(&self) -> Result<mysql_async::Conn, MyError> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(self.password.as_ref().map(|p| p.expose().to_string()))
            .prefer_socket(false)
            // A peer that vanished (a partition, a dead node) is noticed in
            // about a minute instead of the kernel's two hours.
            .tcp_keepalive(Some(KEEPALIVE));
        let err = |detail: String| MyError::Connect {
            flavor: "MySQL/MariaDB",
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            detail,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, mysql_async::Conn::new(opts)).await {
            Ok(conn) => conn.map_err(|e| err(e.to_string())),
            Err(_) => Err(err(format!(
                "no answer within {}s (the server or the network to it is stuck)",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    pub fn query_error(&self, what: &str, e: mysql_async::Error) -> MyError {
        MyError::Query {
            host: self.host.clone(),
            port: self.port,
            what: what.to_string(),
            detail: e.to_string(),
        }
    }

    /// A `[client]` defaults file with the connection settings, for
    /// `--defaults-extra-file`: the password never reaches an argument list.
    pub fn defaults_file(&self) -> Result<tempfile::NamedTempFile, MyError> {
        self.defaults_file_in(&std::env::temp_dir())
    }

    /// [`MyConn::defaults_file`] in folder `dir` (0600, like every
    /// temporary file lifeboat makes).
    pub fn defaults_file_in(
        &self,
        dir: &std::path::Path,
    ) -> Result<tempfile::NamedTempFile, MyError> {
        use std::io::Write;
        let mut f = tempfile::Builder::new()
            .prefix(DEFAULTS_FILE_PREFIX)
            .tempfile_in(dir)
            .map_err(MyError::DefaultsFile)?;
        let mut text = format!(
            "[client]\nhost={}\nport={}\nuser={}\nprotocol=tcp\n",
            self.host, self.port, self.user
        );
        if let Some(p) = &self.password {
            // Option files take quoted values with backslash escapes.
            let v = p.expose().replace('\\', "\\\\").replace('"', "\\\"");
            text.push_str(&format!("password=\"{v}\"\n"));
        }
        f.write_all(text.as_bytes())
            .and_then(|_| f.flush())
            .map_err(MyError::DefaultsFile)?;
        Ok(f)
    }
}

/// How the client option files lifeboat writes are named.
pub const DEFAULTS_FILE_PREFIX: &str = "lifeboat-my-";

/// Which server family: they differ in tool names, GTID formats and the
/// statements for binlog coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    Mariadb,
    Mysql,
}

#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `SELECT VERSION()`: `10.11.6-MariaDB-0+deb12u1-log`, `8.0.36`.
    pub version: String,
    pub flavor: Flavor,
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// `@@log_bin`: whether the server writes binlogs at all.
    pub log_bin: bool,
}

/// Reads the flavor and (major, minor, patch) from a version string.
pub fn parse_version(version: &str) -> (Flavor, u32, u32, u32) {
    let flavor = if version.to_ascii_lowercase().contains("mariadb") {
        Flavor::Mariadb
    } else {
        Flavor::Mysql
    };
    let mut nums = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0));
    let mut next = || nums.next().unwrap_or(0);
    (flavor, next(), next(), next())
}

pub async fn server_info(conn: &MyConn, c: &mut mysql_async::Conn) -> Result<ServerInfo, MyError> {
    let (version, log_bin): (String, i64) = c
        .query_first("SELECT VERSION(), @@log_bin")
        .await
        .map_err(|e| conn.query_error("read the version", e))?
        .unwrap_or_default();
    let (flavor, major, minor, patch) = parse_version(&version);
    Ok(ServerInfo {
        version,
        flavor,
        major,
        minor,
        patch,
        log_bin: log_bin == 1,
    })
}

/// A position in the binlog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinlogPoint {
    /// The binlog file, e.g. `binlog.000004`.
    pub file: String,
    pub position: u64,
    /// MariaDB `@@gtid_binlog_pos` (`0-1-42`) or MySQL `@@gtid_executed`;
    /// empty when GTIDs are not in use.
    pub gtid: String,
}

/// The current binlog coordinates, or `None` when binlogs are off.
pub async fn binlog_point(
    conn: &MyConn,
    c: &mut mysql_async::Conn,
    info: &ServerInfo,
) -> Result<Option<BinlogPoint>, MyError> {
    if !info.log_bin {
        return Ok(None);
    }
    // MySQL 8.4 renamed the statement; MariaDB and older MySQL keep the old one.
    let status_sql = if info.flavor == Flavor::Mysql && (info.major, info.minor) >= (8, 4) {
        "SHOW BINARY LOG STATUS"
    } else {
        "SHOW MASTER STATUS"
    };
    let row: Option<mysql_async::Row> = c
        .query_first(status_sql)
        .await
        .map_err(|e| conn.query_error("read the binlog position", e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let file: String = row.get(0).unwrap_or_default();
    let position: u64 = row.get(1).unwrap_or_default();
    let gtid_sql = match info.flavor {
        Flavor::Mariadb => "SELECT @@gtid_binlog_pos",
        Flavor::Mysql => "SELECT @@gtid_executed",
    };
    let gtid: Option<String> = c
        .query_first(gtid_sql)
        .await
        .map_err(|e| conn.query_error("read the GTID position", e))?;
    Ok(Some(BinlogPoint {
        file,
        position,
        gtid: gtid.unwrap_or_default().replace('\n', ""),
    }))
}

/// Schemas that belong to the server, never dumped as data.
pub const SYSTEM_SCHEMAS: [&str; 4] = ["information_schema", "performance_schema", "mysql", "sys"];

pub async fn databases(
    conn: &MyConn,
    c: &mut mysql_async::Conn,
    wanted: &Databases,
) -> Result<Vec<String>, MyError> {
    let all: Vec<String> = c
        .query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME")
        .await
        .map_err(|e| conn.query_error("list databases", e))?;
    match wanted {
        Databases::All => Ok(all
            .into_iter()
            .filter(|d| !SYSTEM_SCHEMAS.contains(&d.as_str()))
            .collect()),
        Databases::List(list) => {
            let missing: Vec<&str> = list
                .iter()
                .filter(|d| !all.contains(d))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(MyError::MissingDatabases {
                    host: conn.host.clone(),
                    port: conn.port,
                    missing: missing.join(", "),
                });
            }
            Ok(list.clone())
        }
    }
}

/// Quotes an identifier with backticks.
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Exact row counts of one database's tables at the dump's consistency
/// point, stored encrypted beside the dump.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MyInventory {
    pub database: String,
    pub taken_at: chrono::DateTime<chrono::Utc>,
    /// The consistency point, when binlogs are on.
    pub binlog: Option<BinlogPoint>,
    pub tables: Vec<MyTableCount>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MyTableCount {
    pub table: String,
    pub engine: String,
    pub rows: u64,
    /// Non-transactional engines (MyISAM, Aria) are not covered by the
    /// snapshot: their count can differ from the dump by concurrent writes.
    pub transactional: bool,
}

/// Counts every base table of `database` in the session's snapshot.
pub async fn take_inventory(
    conn: &MyConn,
    c: &mut mysql_async::Conn,
    database: &str,
    binlog: Option<BinlogPoint>,
) -> Result<MyInventory, MyError> {
    let tables: Vec<(String, Option<String>)> = c
        .exec(
            "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            (database,),
        )
        .await
        .map_err(|e| conn.query_error(&format!("list tables of {database}"), e))?;
    let mut out = Vec::with_capacity(tables.len());
    for (table, engine) in tables {
        let engine = engine.unwrap_or_default();
        let rows: Option<u64> = c
            .query_first(format!(
                "SELECT COUNT(*) FROM {}.{}",
                quote_ident(database),
                quote_ident(&table)
            ))
            .await
            .map_err(|e| conn.query_error(&format!("count rows of {database}.{table}"), e))?;
        out.push(MyTableCount {
            transactional: matches!(engine.to_ascii_lowercase().as_str(), "innodb" | "rocksdb"),
            table,
            engine,
            rows: rows.unwrap_or(0),
        });
    }
    Ok(MyInventory {
        database: database.to_string(),
        taken_at: chrono::Utc::now(),
        binlog,
        tables: out,
    })
}

/// Finds the first of `names` in `bin_dir`, else on `PATH`. The error
/// lists where it looked.
pub fn find_tool(bin_dir: Option<&Path>, names: &[&str]) -> Result<PathBuf, MyError> {
    let dirs: Vec<PathBuf> = match bin_dir {
        Some(d) => vec![d.to_path_buf()],
        None => std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default(),
    };
    let mut looked = Vec::new();
    for name in names {
        for d in &dirs {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
            looked.push(p.display().to_string());
        }
    }
    Err(MyError::ToolMissing {
        tool: names.join(" or "),
        looked: if looked.is_empty() {
            "PATH (empty)".into()
        } else {
            looked.join(", ")
        },
    })
}

/// The dump tool for this server: `mariadb-dump` for MariaDB (falling back
/// to `mysqldump`, its old name), `mysqldump` for MySQL.
pub fn find_dump_tool(bin_dir: Option<&Path>, flavor: Flavor) -> Result<PathBuf, MyError> {
    match flavor {
        Flavor::Mariadb => find_tool(bin_dir, &["mariadb-dump", "mysqldump"]),
        Flavor::Mysql => find_tool(bin_dir, &["mysqldump"]),
    }
}

/// The arguments of a consistent logical dump (after `--defaults-extra-file`).
pub fn dump_args(info: &ServerInfo, databases: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--default-character-set=utf8mb4",
        "--skip-dump-date",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if info.log_bin {
        // The coordinates as a comment: also the sign that the tool has its
        // snapshot. MySQL 8.0.26 renamed the option.
        let newer_mysql =
            info.flavor == Flavor::Mysql && (info.major, info.minor, info.patch) >= (8, 0, 26);
        args.push(if newer_mysql {
            "--source-data=2".into()
        } else {
            "--master-data=2".into()
        });
    }
    args.push("--databases".into());
    args.extend(databases.iter().cloned());
    args
}

/// Watches the first part of a dump for the line that shows the tool has
/// taken its snapshot: its binlog coordinates (`CHANGE MASTER TO` /
/// `CHANGE REPLICATION SOURCE TO`) or the first database.
#[derive(Debug, Default)]
pub struct SnapshotMarker {
    buf: Vec<u8>,
    pub seen: bool,
    /// The coordinates the tool wrote, to cross-check.
    pub file_and_position: Option<(String, u64)>,
}

impl SnapshotMarker {
    pub fn feed(&mut self, data: &[u8]) -> bool {
        if self.seen {
            return false;
        }
        self.buf.extend_from_slice(data);
        // Only whole lines: a line cut by a chunk boundary waits for the rest.
        let Some(end) = self.buf.iter().rposition(|&b| b == b'\n') else {
            // Data lines without a marker first: the tool is past its
            // snapshot anyway; do not hold memory (or the lock) for it.
            if self.buf.len() > 1 << 20 {
                self.seen = true;
                self.buf = Vec::new();
                return true;
            }
            return false;
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        for line in text.lines() {
            if line.contains("CHANGE MASTER TO") || line.contains("CHANGE REPLICATION SOURCE TO") {
                self.file_and_position = parse_change_master(line);
                self.seen = true;
            } else if line.starts_with("-- Current Database:") {
                self.seen = true;
            }
            if self.seen {
                self.buf = Vec::new();
                return true;
            }
        }
        self.buf.drain(..=end);
        false
    }
}

fn parse_change_master(line: &str) -> Option<(String, u64)> {
    let file_key = ["MASTER_LOG_FILE='", "SOURCE_LOG_FILE='"]
        .iter()
        .find(|k| line.contains(*k))?;
    let after = &line[line.find(file_key)? + file_key.len()..];
    let file = after[..after.find('\'')?].to_string();
    let pos_key = ["MASTER_LOG_POS=", "SOURCE_LOG_POS="]
        .iter()
        .find(|k| line.contains(*k))?;
    let after = &line[line.find(pos_key)? + pos_key.len()..];
    let pos = after
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    Some((file, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavors_and_versions_are_read_from_the_version_string() {
        assert_eq!(
            parse_version("10.11.6-MariaDB-0+deb12u1-log"),
            (Flavor::Mariadb, 10, 11, 6)
        );
        assert_eq!(parse_version("8.0.36"), (Flavor::Mysql, 8, 0, 36));
        assert_eq!(parse_version("8.4.2-commercial"), (Flavor::Mysql, 8, 4, 2));
    }

    #[test]
    fn the_snapshot_marker_is_found_across_chunk_boundaries() {
        let dump = "-- MariaDB dump 10.19\n--\n-- Host: 127.0.0.1\n\n\
                    --\n-- Position to start replication or point-in-time recovery from\n--\n\n\
                    -- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000004', MASTER_LOG_POS=344;\n\n\
                    --\n-- Current Database: `shop`\n";
        for step in [1, 5, 64, dump.len()] {
            let mut m = SnapshotMarker::default();
            let mut fired = 0;
            for chunk in dump.as_bytes().chunks(step) {
                if m.feed(chunk) {
                    fired += 1;
                }
            }
            assert_eq!(fired, 1, "step {step}");
            assert_eq!(
                m.file_and_position,
                Some(("binlog.000004".to_string(), 344)),
                "step {step}"
            );
        }
        let mut m = SnapshotMarker::default();
        assert!(m.feed(b"-- header\n-- Current Database: `a`\n"));
        assert_eq!(m.file_and_position, None);
        let mysql84 = "-- CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='binlog.000002', SOURCE_LOG_POS=157;\n";
        let mut m = SnapshotMarker::default();
        assert!(m.feed(mysql84.as_bytes()));
        assert_eq!(m.file_and_position, Some(("binlog.000002".into(), 157)));
    }
}
