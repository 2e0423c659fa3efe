//! Restoring a MySQL/MariaDB dump: the SQL script streamed into the
//! server's own client, then every table's row count compared with the
//! inventory taken at the dump's consistency point.
//!
//! A MySQL load is not one transaction (DDL commits): a load that stops
//! part way leaves the databases it reached partly restored, and the error
//! says so and names them.
//!
//! [`pitr`] rolls a loaded dump forward with the archived binlogs to a
//! point in time.

mod pitr;

pub use pitr::{
    plan_pitr, plan_replay, replay, whole_second, BinlogGap, EndReader, MyTarget, ReplayError,
    ReplayPlan,
};

use std::sync::Arc;
use std::time::Instant;

use mysql_async::prelude::Queryable;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::keys::Identities;
use crate::kinds::mysql::source::{self as my, MyConn, MyError, MyInventory};
use crate::pipeline::{self, PipelineError};
use crate::process::{self, ProcessError};
use crate::repository::{Artifact, Manifest, Repository};
use crate::restore::{InventoryCheck, Mismatch};

#[derive(Debug, thiserror::Error)]
pub enum MyRestoreError {
    #[error("backup {backup} is a {kind} backup, not a MySQL/MariaDB dump")]
    WrongKind { backup: String, kind: String },
    #[error("backup {backup} has no {what} artifact; it was not made by this version of lifeboat or is damaged")]
    MissingArtifact { backup: String, what: String },
    #[error("target {target} already has database(s) with tables: {databases}; restore into a server without them, or pass --clean to drop and replace them")]
    TargetNotEmpty { target: String, databases: String },
    #[error("inventory artifact {key} cannot be read: {detail}")]
    BadInventory { key: String, detail: String },
    #[error("loading the dump into {target} failed: {source}. Loads are not atomic: databases {databases} may be partly restored; drop them and restore again")]
    Load {
        target: String,
        databases: String,
        source: ProcessError,
    },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Mysql(#[from] MyError),
}

impl crate::outcome::Classify for MyRestoreError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::TargetNotEmpty { .. } => Outcome::Refused,
            Self::WrongKind { .. } => Outcome::Usage,
            Self::MissingArtifact { .. } => Outcome::NotFound,
            Self::BadInventory { .. } => Outcome::Integrity,
            Self::Pipeline(e) => e.outcome(),
            Self::Mysql(e) => e.outcome(),
            Self::Load { .. } => Outcome::Failure,
        }
    }
}

/// What a MySQL restore will do.
#[derive(Debug, Clone, Serialize)]
pub struct MyPlan {
    pub backup: String,
    pub source: String,
    pub backup_started_at: chrono::DateTime<chrono::Utc>,
    pub binlog: Option<my::BinlogPoint>,
    pub target: String,
    pub databases: Vec<String>,
    /// Databases that exist on the target with tables (replaced with --clean).
    pub existing: Vec<String>,
    pub clean: bool,
    pub dump: Artifact,
    pub inventories: Vec<Artifact>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MyReport {
    pub plan: MyPlan,
    pub inventory: InventoryCheck,
    pub seconds: f64,
}

/// Builds the plan: checks the backup's artifacts and the target's state.
pub async fn plan(
    manifest: &Manifest,
    target: &MyConn,
    clean: bool,
) -> Result<MyPlan, MyRestoreError> {
    if manifest.kind != crate::repository::ManifestKind::MysqlDump {
        return Err(MyRestoreError::WrongKind {
            backup: manifest.id.clone(),
            kind: manifest.kind.to_string(),
        });
    }
    let dump =
        manifest
            .artifact("dump")
            .cloned()
            .ok_or_else(|| MyRestoreError::MissingArtifact {
                backup: manifest.id.clone(),
                what: "dump".into(),
            })?;
    let inventories: Vec<Artifact> = manifest
        .artifacts
        .iter()
        .filter(|a| a.kind == "mysql-inventory-json")
        .cloned()
        .collect();
    let databases: Vec<String> = inventories
        .iter()
        .filter_map(|a| a.database.clone())
        .collect();
    let mut c = target.connect().await?;
    let mut existing = Vec::new();
    for db in &databases {
        let tables: Option<u64> = c
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
                (db,),
            )
            .await
            .map_err(|e| target.query_error("inspect the target", e))?;
        if tables.unwrap_or(0) > 0 {
            existing.push(db.clone());
        }
    }
    let target_name = format!("{}:{}", target.host, target.port);
    if !existing.is_empty() && !clean {
        return Err(MyRestoreError::TargetNotEmpty {
            target: target_name,
            databases: existing.join(", "),
        });
    }
    Ok(MyPlan {
        backup: manifest.id.clone(),
        source: manifest.source.clone(),
        backup_started_at: manifest.started_at,
        binlog: manifest.binlog.clone(),
        target: target_name,
        databases,
        existing,
        clean,
        dump,
        inventories,
    })
}

/// The client for loading: `mariadb`, else `mysql`.
fn find_client(bin_dir: Option<&std::path::Path>) -> Result<std::path::PathBuf, MyError> {
    my::find_tool(bin_dir, &["mariadb", "mysql"])
}

/// Loads the dump and checks the result against the inventories.
pub async fn execute(
    repo: &Repository,
    plan: MyPlan,
    target: &MyConn,
    identities: Arc<Identities>,
    bin_dir: Option<&std::path::Path>,
) -> Result<MyReport, MyRestoreError> {
    let started = Instant::now();
    // Read the inventories first: a wrong key or a damaged object stops
    // the restore before the target is touched.
    let inventories = read_inventories(repo, &plan.inventories, &identities).await?;
    pipeline::check_stored(repo.store().as_ref(), &plan.dump.expected()).await?;
    let client = find_client(bin_dir)?;
    if plan.clean {
        drop_databases(target, &plan.existing).await?;
    }
    let defaults = target.defaults_file()?;
    let mut cmd = tokio::process::Command::new(&client);
    cmd.arg(format!(
        "--defaults-extra-file={}",
        defaults.path().display()
    ))
    .args(["--binary-mode", "--default-character-set=utf8mb4"]);
    let load_err = |source| MyRestoreError::Load {
        target: plan.target.clone(),
        databases: plan.databases.join(", "),
        source,
    };
    let (child, stdin, _) = process::spawn(cmd, &client, true, false).map_err(load_err)?;
    let mut stdin = stdin.expect("stdin is piped");
    let (writer, mut reader) = tokio::io::duplex(1 << 20);
    let forward = async move {
        let r = tokio::io::copy(&mut reader, &mut stdin).await;
        (stdin, r)
    };
    let ticker = crate::progress::ProgressTicker::start(
        plan.source.clone(),
        plan.dump.name.clone(),
        "loaded",
    );
    let expected = plan.dump.expected();
    let decode = pipeline::decode(
        repo.store().as_ref(),
        &expected,
        identities,
        writer,
        "the mariadb client",
        Some(ticker.counter()),
    );
    let (decoded, (mut stdin, forwarded)) = tokio::join!(decode, forward);
    drop(ticker);
    match decoded {
        Ok(()) => {}
        Err(PipelineError::Output { .. }) => {
            drop(stdin);
            return Err(load_err(match child.wait().await {
                Err(failed) => failed,
                Ok(_) => ProcessError::Failed {
                    program: client.display().to_string(),
                    status: "stopped reading its input".into(),
                    stderr: String::new(),
                },
            }));
        }
        Err(e) => {
            // A damaged object: stop the client before the rest of a
            // truncated statement can run.
            child.kill().await;
            drop(stdin);
            return Err(e.into());
        }
    }
    let _ = stdin.shutdown().await;
    drop(stdin);
    child.wait().await.map_err(load_err)?;
    if let Err(e) = forwarded {
        return Err(load_err(ProcessError::Failed {
            program: client.display().to_string(),
            status: "input closed early".into(),
            stderr: e.to_string(),
        }));
    }
    drop(defaults);
    let inventory = check_inventories(target, &inventories).await?;
    Ok(MyReport {
        plan,
        inventory,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Decrypts and reads the inventory artifacts.
async fn read_inventories(
    repo: &Repository,
    artifacts: &[Artifact],
    identities: &Arc<Identities>,
) -> Result<Vec<MyInventory>, MyRestoreError> {
    let mut inventories: Vec<MyInventory> = Vec::new();
    for a in artifacts {
        let bytes =
            pipeline::decode_to_vec(repo.store().as_ref(), &a.expected(), identities.clone())
                .await?;
        inventories.push(serde_json::from_slice(&bytes).map_err(|e| {
            MyRestoreError::BadInventory {
                key: a.key.clone(),
                detail: e.to_string(),
            }
        })?);
    }
    Ok(inventories)
}

/// Drops the target's databases the dump replaces (`--clean`).
async fn drop_databases(target: &MyConn, databases: &[String]) -> Result<(), MyRestoreError> {
    let mut c = target.connect().await?;
    for db in databases {
        c.query_drop(format!("DROP DATABASE {}", my::quote_ident(db)))
            .await
            .map_err(|e| target.query_error(&format!("drop database {db} (--clean)"), e))?;
    }
    Ok(())
}

async fn check_inventories(
    target: &MyConn,
    inventories: &[MyInventory],
) -> Result<InventoryCheck, MyRestoreError> {
    let mut c = target.connect().await?;
    let mut check = InventoryCheck {
        tables_checked: 0,
        rows_expected: 0,
        large_objects_expected: 0,
        large_objects_found: 0,
        mismatches: Vec::new(),
    };
    for inv in inventories {
        for t in &inv.tables {
            check.tables_checked += 1;
            check.rows_expected += t.rows as i64;
            let name = format!(
                "{}.{}",
                my::quote_ident(&inv.database),
                my::quote_ident(&t.table)
            );
            let found: Result<Option<u64>, _> =
                c.query_first(format!("SELECT COUNT(*) FROM {name}")).await;
            let found = match found {
                Ok(n) => Some(n.unwrap_or(0) as i64),
                // 1146: table doesn't exist.
                Err(mysql_async::Error::Server(e)) if e.code == 1146 => None,
                Err(e) => {
                    return Err(target
                        .query_error(&format!("count rows of {name}"), e)
                        .into())
                }
            };
            if found != Some(t.rows as i64) {
                check.mismatches.push(Mismatch {
                    table: format!("{}.{}", inv.database, t.table),
                    expected: t.rows as i64,
                    found,
                });
            }
        }
    }
    Ok(check)
}

/// Parses `mysql://user[:password]@host[:port][/]`. Returns the connection
/// and whether a password was in the URL.
pub fn parse_url(url: &str, env_password: Option<String>) -> Result<(MyConn, bool), String> {
    let rest = url
        .strip_prefix("mysql://")
        .or_else(|| url.strip_prefix("mariadb://"))
        .ok_or_else(|| format!("--to '{url}' is not a mysql://user@host:port/ URL"))?;
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        return Err(format!(
            "--to '{}' names a database; a MySQL dump creates its databases under their own names, so give only mysql://user@host:port/",
            redact(url)
        ));
    }
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((u, p)) => (u.to_string(), Some(p.to_string())),
            None => (u.to_string(), None),
        },
        None => ("root".to_string(), None),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse::<u16>()
                .map_err(|_| format!("--to '{}': port '{p}' is not a number", redact(url)))?,
        ),
        None => (hostport.to_string(), 3306),
    };
    if host.is_empty() {
        return Err(format!("--to '{}' has no host", redact(url)));
    }
    let in_url = password.is_some();
    Ok((
        MyConn::new(host, port, user, password.or(env_password)),
        in_url,
    ))
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((u, _)) => format!("{}{u}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_urls_are_parsed_and_passwords_redacted() {
        let (c, in_url) = parse_url("mysql://root@127.0.0.1:3307/", None).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str(), in_url),
            ("127.0.0.1", 3307, "root", false)
        );
        let (_, in_url) = parse_url("mysql://app:s3cret@db", None).unwrap();
        assert!(in_url);
        assert_eq!(
            redact("mysql://app:s3cret@db:3306/"),
            "mysql://app:***@db:3306/"
        );
        let e = parse_url("mysql://app:s3cret@db/shop", None).unwrap_err();
        assert!(
            e.contains("names a database") && !e.contains("s3cret"),
            "{e}"
        );
        assert!(parse_url("postgres://x@y/z", None).is_err());
    }
}
