//! PostgreSQL: connections, tool discovery, snapshots, inventories.
//!
//! A dump and its inventory see the same data: lifeboat opens a
//! `REPEATABLE READ` transaction, exports its snapshot, hands the snapshot
//! to `pg_dump --snapshot`, and counts rows inside that same transaction.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio_postgres::{Client, NoTls};

use crate::kinds::postgres::config::PostgresSource;
use crate::policy::{Databases, PolicyError, Secret};

/// Errors talking to PostgreSQL or finding its tools.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot connect to PostgreSQL at {host}:{port} as user '{user}' (database '{database}'): {detail}")]
    Connect {
        host: String,
        port: u16,
        user: String,
        database: String,
        detail: String,
    },
    #[error("query on {host}:{port}/{database} failed ({what}): {detail}")]
    Query {
        host: String,
        port: u16,
        database: String,
        what: String,
        detail: String,
    },
    #[error("databases not found on {host}:{port}: {missing}; fix the policy's databases list")]
    MissingDatabases {
        host: String,
        port: u16,
        missing: String,
    },
    #[error("{tool} is version {found} but PostgreSQL {server} is needed here (a client tool must be at least as new as the server and the archive it handles); install postgresql-client-{server} or set bin_dir in the policy")]
    ToolTooOld {
        tool: String,
        found: u32,
        server: u32,
    },
    #[error("cannot find {tool}: looked in {looked}; install the PostgreSQL client tools (Debian: postgresql-client) or set bin_dir in the policy")]
    ToolMissing { tool: String, looked: String },
    #[error("cannot run {tool} --version: {detail}")]
    ToolVersion { tool: String, detail: String },
}

impl crate::outcome::Classify for PgError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Connect { .. }
            | Self::Query { .. }
            | Self::MissingDatabases { .. }
            | Self::ToolTooOld { .. }
            | Self::ToolMissing { .. }
            | Self::ToolVersion { .. } => Outcome::Failure,
        }
    }
}

/// Where and as whom to connect. The password is kept only in memory.
#[derive(Debug, Clone)]
pub struct PgConn {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
}

impl PgConn {
    /// Resolves a policy source, reading its password now.
    pub fn from_source(src: &PostgresSource) -> Result<PgConn, PolicyError> {
        Ok(PgConn {
            host: src.host.clone(),
            port: src.port,
            user: src.user.clone(),
            password: src.password.as_ref().map(|p| p.resolve()).transpose()?,
        })
    }

    /// Parses a `postgres://user@host:port/db` target. A password in the URL
    /// is accepted but `PGPASSWORD` is better: URLs show up in `ps`.
    /// Returns the connection, the database named in the URL, and whether
    /// the URL carried a password.
    pub fn from_url(url: &str) -> Result<(PgConn, Option<String>, bool), String> {
        let cfg: tokio_postgres::Config = url.parse().map_err(|e| {
            format!(
                "'{}' is not a PostgreSQL URL ({e}); write postgres://user@host:port/dbname",
                redact_url(url)
            )
        })?;
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let user = cfg
            .get_user()
            .map(str::to_string)
            .or_else(|| std::env::var("PGUSER").ok())
            .unwrap_or_else(|| "postgres".into());
        let in_url = cfg.get_password().is_some();
        let password = cfg
            .get_password()
            .map(|p| Secret::new(String::from_utf8_lossy(p).into_owned()))
            .or_else(|| std::env::var("PGPASSWORD").ok().map(Secret::new));
        Ok((
            PgConn {
                host,
                port,
                user,
                password,
            },
            cfg.get_dbname().map(str::to_string),
            in_url,
        ))
    }

    /// `postgres://user@host:port/db`, never with a password.
    pub fn display(&self, database: &str) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, database
        )
    }

    /// Connects to one database.
    pub async fn connect(&self, database: &str) -> Result<Client, PgError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(database)
            .application_name("lifeboat")
            .connect_timeout(Duration::from_secs(10))
            // A peer that vanished (a partition, a dead node) is noticed
            // within about a minute instead of the kernel's two hours.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .tcp_user_timeout(Duration::from_secs(60))
            // The snapshot's connection stays idle in its transaction while
            // pg_dump reads; a server-wide idle timeout must not end it.
            // Catalog and inventory queries wait for a table lock at most
            // this long instead of forever behind a migration.
            .options("-c idle_in_transaction_session_timeout=0 -c lock_timeout=5min");
        if let Some(p) = &self.password {
            cfg.password(p.expose());
        }
        let (client, connection) = cfg.connect(NoTls).await.map_err(|e| PgError::Connect {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            database: database.to_string(),
            detail: error_detail(&e),
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection closed");
            }
        });
        Ok(client)
    }

    /// A command for a PostgreSQL client tool, connected through the
    /// environment: the password goes in `PGPASSWORD`, never in arguments.
    pub fn command(&self, program: &Path, database: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", database)
            .env("PGAPPNAME", "lifeboat")
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE");
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p.expose());
        }
        cmd
    }

    pub(crate) fn query_error(
        &self,
        database: &str,
        what: &str,
        e: tokio_postgres::Error,
    ) -> PgError {
        PgError::Query {
            host: self.host.clone(),
            port: self.port,
            database: database.to_string(),
            what: what.to_string(),
            detail: error_detail(&e),
        }
    }
}

/// The server's message when there is one, else the client's.
pub fn error_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
    }
}

fn redact_url(url: &str) -> String {
    // postgres://user:secret@host → postgres://user:***@host
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((u, _)) => format!("{}{u}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The server's version.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `PostgreSQL 15.19 (Debian 15.19-0+deb12u1) on x86_64...`
    pub version: String,
    pub major: u32,
}

pub async fn server_info(conn: &PgConn, client: &Client) -> Result<ServerInfo, PgError> {
    let row = client
        .query_one(
            "SELECT version(), current_setting('server_version_num')::int",
            &[],
        )
        .await
        .map_err(|e| conn.query_error("postgres", "server version", e))?;
    let num: i32 = row.get(1);
    Ok(ServerInfo {
        version: row.get(0),
        major: (num / 10000) as u32,
    })
}

/// The databases to dump, checked against the server.
pub async fn databases(
    conn: &PgConn,
    client: &Client,
    wanted: &Databases,
) -> Result<Vec<String>, PgError> {
    let rows = client
        .query(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
            &[],
        )
        .await
        .map_err(|e| conn.query_error("postgres", "list databases", e))?;
    let present: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    match wanted {
        Databases::All => Ok(present),
        Databases::List(list) => {
            let missing: Vec<&str> = list
                .iter()
                .filter(|d| !present.contains(d))
                .map(String::as_str)
                .collect();
            if missing.is_empty() {
                Ok(list.clone())
            } else {
                Err(PgError::MissingDatabases {
                    host: conn.host.clone(),
                    port: conn.port,
                    missing: missing.join(", "),
                })
            }
        }
    }
}

/// PostgreSQL client tools of one installation.
#[derive(Debug, Clone)]
pub struct PgTools {
    pub bin_dir: Option<PathBuf>,
    pub major: u32,
    /// `pg_dump (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)`
    pub version: String,
}

impl PgTools {
    /// The path of one tool of this installation.
    pub fn tool(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        }
    }

    /// Finds an installation whose `probe` tool (pg_dump, pg_restore) can
    /// handle `server_major`: `bin_dir` if given, else Debian's
    /// `/usr/lib/postgresql/N/bin` for the lowest `N >= server_major`, else
    /// `PATH`. Refuses tools older than needed.
    pub async fn find(
        bin_dir: Option<&Path>,
        probe: &str,
        server_major: u32,
    ) -> Result<PgTools, PgError> {
        let mut looked = Vec::new();
        let candidates: Vec<Option<PathBuf>> = match bin_dir {
            Some(d) => vec![Some(d.to_path_buf())],
            None => {
                let mut c: Vec<Option<PathBuf>> = (server_major..=server_major + 10)
                    .map(|n| PathBuf::from(format!("/usr/lib/postgresql/{n}/bin")))
                    .filter(|d| d.join(probe).exists())
                    .map(Some)
                    .collect();
                c.push(None);
                c
            }
        };
        for dir in candidates {
            let tools = PgTools {
                bin_dir: dir.clone(),
                major: 0,
                version: String::new(),
            };
            let pg_dump = tools.tool(probe);
            looked.push(pg_dump.display().to_string());
            let out = match Command::new(&pg_dump).arg("--version").output().await {
                Ok(o) => o,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(PgError::ToolVersion {
                        tool: pg_dump.display().to_string(),
                        detail: e.to_string(),
                    })
                }
            };
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let major = parse_major(&version).ok_or_else(|| PgError::ToolVersion {
                tool: pg_dump.display().to_string(),
                detail: format!("unexpected output '{version}'"),
            })?;
            if major < server_major {
                return Err(PgError::ToolTooOld {
                    tool: pg_dump.display().to_string(),
                    found: major,
                    server: server_major,
                });
            }
            return Ok(PgTools {
                bin_dir: dir,
                major,
                version,
            });
        }
        Err(PgError::ToolMissing {
            tool: probe.into(),
            looked: looked.join(", "),
        })
    }
}

/// `pg_dump (PostgreSQL) 15.19 (Debian ...)` → 15.
pub fn parse_major(version: &str) -> Option<u32> {
    let after = version.split(')').nth(1)?.trim();
    let num = after.split_whitespace().next()?;
    num.split('.').next()?.parse().ok()
}

/// Quotes an identifier for SQL.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Tables and exact row counts of one database at one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub database: String,
    pub taken_at: chrono::DateTime<chrono::Utc>,
    /// The exported snapshot the dump used, when there was one.
    #[serde(default)]
    pub snapshot: Option<String>,
    pub tables: Vec<TableCount>,
    pub large_objects: i64,
    /// The database's own properties, which a dump restored into another
    /// database does not carry (pg_restore applies them only with --create).
    #[serde(default)]
    pub properties: Option<DatabaseProperties>,
}

/// Encoding, locale and per-database settings (`ALTER DATABASE ... SET`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseProperties {
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// `name=value` as in `pg_db_role_setting.setconfig`.
    pub settings: Vec<String>,
}

/// SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// One table's row count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    pub schema: String,
    pub table: String,
    pub rows: i64,
}

/// Counts rows of every user table (not extension members) and the large
/// objects, in the client's current transaction.
pub async fn take_inventory(
    conn: &PgConn,
    client: &Client,
    database: &str,
    snapshot: Option<String>,
) -> Result<Inventory, PgError> {
    let q = |what: &str| {
        let what = what.to_string();
        move |e| conn.query_error(database, &what, e)
    };
    let rows = client
        .query(
            "SELECT n.nspname, c.relname FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname !~ '^pg_(toast|temp)' \
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                               AND d.objid = c.oid AND d.deptype = 'e') \
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(q("list tables"))?;
    let mut tables = Vec::with_capacity(rows.len());
    for r in rows {
        let schema: String = r.get(0);
        let table: String = r.get(1);
        let sql = format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(&schema),
            quote_ident(&table)
        );
        let count: i64 = client
            .query_one(&sql, &[])
            .await
            .map_err(q(&format!("count rows of {schema}.{table}")))?
            .get(0);
        tables.push(TableCount {
            schema,
            table,
            rows: count,
        });
    }
    let large_objects: i64 = client
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .map_err(q("count large objects"))?
        .get(0);
    let row = client
        .query_one(
            "SELECT pg_encoding_to_char(d.encoding), d.datcollate::text, d.datctype::text, \
                    coalesce((SELECT s.setconfig FROM pg_db_role_setting s \
                              WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}') \
             FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(q("read database properties"))?;
    let properties = DatabaseProperties {
        encoding: row.get(0),
        collate: row.get(1),
        ctype: row.get(2),
        settings: row.get(3),
    };
    Ok(Inventory {
        database: database.to_string(),
        taken_at: chrono::Utc::now(),
        snapshot,
        tables,
        large_objects,
        properties: Some(properties),
    })
}

/// Opens a read-only repeatable-read transaction on `client` and exports its
/// snapshot. Keep the client open until pg_dump has started with it.
pub async fn export_snapshot(
    conn: &PgConn,
    client: &Client,
    database: &str,
) -> Result<String, PgError> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| conn.query_error(database, "begin snapshot transaction", e))?;
    let row = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|e| conn.query_error(database, "export snapshot", e))?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tool_versions() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 17devel"), None);
        assert_eq!(parse_major("garbage"), None);
    }

    #[test]
    fn urls_are_parsed_and_passwords_redacted() {
        let (c, db, in_url) =
            PgConn::from_url("postgres://app:s3cret@db.example:6543/shop").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str()),
            ("db.example", 6543, "app")
        );
        assert_eq!(db.as_deref(), Some("shop"));
        assert!(in_url);
        assert!(!PgConn::from_url("postgres://app@h/db").unwrap().2);
        assert_eq!(c.display("shop"), "postgres://app@db.example:6543/shop");
        assert_eq!(
            redact_url("postgres://app:s3cret@h/db"),
            "postgres://app:***@h/db"
        );
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
