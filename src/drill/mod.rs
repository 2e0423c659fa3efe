//! Restore drills: restore a backup into a scratch target the way an
//! incident restore would, check the result, measure how long recovery
//! took (RTO) and how old the restored data is (RPO), report, tear down.
//!
//! A drill never throws a failure away: whatever goes wrong after the
//! backup is chosen (the scratch target does not start, an object is
//! damaged, a row count differs, a user check fails) becomes a failed
//! [`Check`] in the [`DrillReport`], which is stored in the repository
//! (`drills/<policy>/<source>/<id>.json`, `.md` and `.html`) whether the
//! drill passed or not. The scratch target is removed on every path: at
//! the end, on an error, on SIGINT/SIGTERM (drop), and after a SIGKILL by
//! the next drill ([`scratch::sweep`]).
//!
//! Drills restore PostgreSQL dumps so far; base backups (point in time),
//! MySQL/MariaDB and Kubernetes drills are refused with a message.

pub mod report;
pub mod scratch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::keys::Identities;
use crate::policy::{Policy, SourceKind};
use crate::repository::{BackupSelector, Manifest, Repository, RepositoryError};
use crate::restore::postgres as pg_restore;
use crate::storage::StorageError;

/// Version of the stored report documents.
pub const REPORT_FORMAT: u32 = 1;

/// Which backup a drill restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Latest,
    /// A random one of the source's backups of the kind drilled: over
    /// months, every retained backup gets its turn.
    Random,
    Id(String),
}

impl std::str::FromStr for Pick {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "latest" => Pick::Latest,
            "random" => Pick::Random,
            id => Pick::Id(id.to_string()),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("source '{source_name}' is a {kind} source; drills restore PostgreSQL dumps so far (MySQL/MariaDB and Kubernetes drills are not built yet)")]
    UnsupportedSource {
        source_name: String,
        kind: &'static str,
    },
    #[error("backup {backup} is a {kind} backup; drills restore PostgreSQL dumps so far (point-in-time drills of base backups are not built yet); pick a dump with --backup ID (`lifeboat list`)")]
    UnsupportedBackup { backup: String, kind: String },
    #[error("source '{source_name}' has no PostgreSQL dump in {store}; take one with `lifeboat backup --source {source_name} --kind dump`")]
    NoDumps { source_name: String, store: String },
    #[error("the drill was interrupted; its scratch target was removed")]
    Interrupted,
    #[error("drill report {key} cannot be read: {detail}; delete it or restore it from a copy")]
    Report { key: String, detail: String },
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Passed,
    Failed,
    /// Not run because an earlier step failed.
    Skipped,
}

/// One line of the report's check table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
}

/// What a drill did and found. Stored in the repository as JSON (this
/// struct), Markdown and HTML.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    pub format: u32,
    /// Drill id, sortable by time like backup ids.
    pub id: String,
    pub policy: String,
    pub source: String,
    pub host: String,
    pub lifeboat_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub backup: String,
    pub backup_kind: String,
    pub backup_started_at: DateTime<Utc>,
    /// Where it was restored (`throwaway PostgreSQL 15.19 on 127.0.0.1:41234`).
    pub target: String,
    pub passed: bool,
    /// `check name: detail` of the first failing check.
    pub first_failure: Option<String>,
    /// Seconds from the drill's start to a usable restored target (scratch
    /// start, decode, restore, inventory).
    pub rto_seconds: Option<f64>,
    /// Seconds from the newest restored point to the end of the restore.
    pub rpo_seconds: Option<f64>,
    /// The newest point in time the restored data holds.
    pub restored_point: Option<DateTime<Utc>>,
    /// Bytes of the backup read from the repository.
    pub bytes_read: u64,
    pub checks: Vec<Check>,
    /// Scratch targets of earlier, killed drills removed before this one.
    #[serde(default)]
    pub leftovers_removed: Vec<scratch::Leftover>,
}

impl DrillReport {
    /// Checks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(|c| c.status == CheckStatus::Failed)
    }

    /// The report's objects: `drills/<policy>/<source>/<id>.{json,md,html}`.
    pub fn key(policy: &str, source: &str, id: &str, ext: &str) -> String {
        format!("{}{id}.{ext}", Self::prefix(policy, Some(source)))
    }

    pub fn prefix(policy: &str, source: Option<&str>) -> String {
        match source {
            Some(s) => format!("drills/{policy}/{s}/"),
            None => format!("drills/{policy}/"),
        }
    }
}

/// What the user asked for.
pub struct Options {
    pub pick: Pick,
    pub identities: Arc<Identities>,
    /// Where scratch folders go (the policy's `drill.scratch_dir`, else
    /// the system temp folder).
    pub scratch_dir: PathBuf,
}

/// Checks collected in order.
#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn add(&mut self, name: impl Into<String>, passed: bool, detail: impl Into<String>) {
        self.0.push(Check {
            name: name.into(),
            status: if passed {
                CheckStatus::Passed
            } else {
                CheckStatus::Failed
            },
            detail: detail.into(),
        });
    }

    fn skip(&mut self, name: impl Into<String>, why: &str) {
        self.0.push(Check {
            name: name.into(),
            status: CheckStatus::Skipped,
            detail: why.to_string(),
        });
    }
}

/// Runs until shutdown is requested.
async fn interruptible<T>(work: impl std::future::Future<Output = T>) -> Result<T, DrillError> {
    tokio::select! {
        r = work => Ok(r),
        _ = crate::shutdown::requested() => Err(DrillError::Interrupted),
    }
}

/// Drills one source: picks a backup, restores it into a scratch target,
/// checks, measures, tears down. The report is returned, not stored (see
/// [`store`]).
pub async fn drill_source(
    repo: &Repository,
    policy: &Policy,
    source_name: &str,
    opts: &Options,
) -> Result<DrillReport, DrillError> {
    let clock = Instant::now();
    let started_at = Utc::now();
    let source = policy.source(source_name)?;
    let pg_source = match source.kind() {
        SourceKind::Postgres(pg) => pg,
        SourceKind::Mysql(_) => {
            return Err(DrillError::UnsupportedSource {
                source_name: source_name.into(),
                kind: "MySQL/MariaDB",
            })
        }
        SourceKind::Kubernetes(_) => {
            return Err(DrillError::UnsupportedSource {
                source_name: source_name.into(),
                kind: "Kubernetes",
            })
        }
    };
    // Stopping a leftover server blocks (pg_ctl): off the async workers.
    let leftovers = {
        let dir = opts.scratch_dir.clone();
        tokio::task::spawn_blocking(move || scratch::sweep(&dir))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "looking for leftovers of earlier drills failed");
                Vec::new()
            })
    };
    let manifest = pick(repo, policy.name.as_str(), source_name, &opts.pick).await?;
    if manifest.kind != "postgres-dump" {
        return Err(DrillError::UnsupportedBackup {
            backup: manifest.id.clone(),
            kind: manifest.kind.clone(),
        });
    }
    let id = crate::repository::new_backup_id(started_at);
    tracing::info!(drill = %id, backup = %manifest.id, source = source_name, "drill started");
    let mut checks = Checks::default();
    let mut target = "none (the scratch cluster did not start)".to_string();
    let mut rto = None;
    let mut rpo = None;
    let mut restored_point = None;

    let major = crate::restore::pitr::server_major(&manifest.server_version);
    let started = interruptible(scratch::ScratchPostgres::start(
        &opts.scratch_dir,
        &id,
        major,
        &policy.drill.postgres,
    ))
    .await?;
    // Without globals nothing creates the role a dump's objects usually
    // belong to. (A failure drops the cluster, which removes it.)
    let started = match started {
        Ok(cluster) if manifest.artifact("globals").is_none() => {
            match interruptible(cluster.create_postgres_role()).await? {
                Ok(()) => Ok(cluster),
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    let databases: Vec<String> = manifest
        .artifacts
        .iter()
        .filter(|a| a.kind == "pg-dump-custom")
        .filter_map(|a| a.database.clone())
        .collect();
    let user_checks: Vec<&crate::policy::DrillCheck> = policy
        .drill
        .checks
        .iter()
        .filter(|c| c.source.as_str() == source_name)
        .collect();
    match started {
        Err(e) => {
            checks.add("scratch target", false, e.to_string());
            for db in &databases {
                checks.skip(format!("restore {db}"), "no scratch target");
                checks.skip(format!("inventory {db}"), "no scratch target");
            }
            for c in &user_checks {
                checks.skip(format!("check: {}", c.name), "no scratch target");
            }
        }
        Ok(cluster) => {
            target = format!(
                "throwaway PostgreSQL {} on 127.0.0.1:{} ({})",
                cluster.tools.major,
                cluster.conn.port,
                cluster.dir().display()
            );
            checks.add("scratch target", true, target.clone());
            let restored = restore_all(
                repo,
                &manifest,
                &databases,
                &cluster,
                pg_source.bin_dir.clone(),
                opts,
                &mut checks,
            )
            .await?;
            if restored {
                rto = Some(clock.elapsed().as_secs_f64());
                // A dump holds the data as of its snapshot, taken when the
                // backup started.
                restored_point = Some(manifest.started_at);
                rpo = Some((Utc::now() - manifest.started_at).num_milliseconds() as f64 / 1000.0);
            }
            for c in &user_checks {
                let name = format!("check: {}", c.name);
                if !restored {
                    checks.skip(name, "the restore failed");
                    continue;
                }
                let (passed, detail) = interruptible(user_check(&cluster, c, &databases)).await?;
                checks.add(name, passed, detail);
            }
            let removed = cluster.remove().await;
            checks.add(
                "scratch removed",
                removed.is_ok(),
                match removed {
                    Ok(()) => "server stopped, folder removed".to_string(),
                    Err(e) => e.to_string(),
                },
            );
        }
    }
    // Every object, read whole: stored and plaintext sizes and hashes.
    let verified = interruptible(crate::verify::verify(
        repo,
        std::slice::from_ref(&manifest),
        Some(opts.identities.clone()),
    ))
    .await?;
    let bad: Vec<String> = verified
        .iter()
        .filter(|o| o.status != crate::verify::Status::Ok)
        .map(|o| {
            format!(
                "{} {:?}: {}",
                o.key,
                o.status,
                o.detail.clone().unwrap_or_default()
            )
        })
        .collect();
    checks.add(
        "object hashes",
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "{} objects: stored and plaintext sha256 match the manifest",
                verified.len()
            )
        } else {
            bad.join("; ")
        },
    );
    match (policy.drill.max_rpo, rpo) {
        (Some(max), Some(seconds)) => checks.add(
            "recovery point",
            seconds <= max.0.as_secs_f64(),
            format!(
                "restored data is {} old (max_rpo {})",
                report::human_seconds(seconds),
                humantime::format_duration(max.0)
            ),
        ),
        (Some(_), None) => checks.skip("recovery point", "nothing was restored"),
        (None, _) => {}
    }
    let checks = checks.0;
    let first_failure = checks
        .iter()
        .find(|c| c.status == CheckStatus::Failed)
        .map(|c| format!("{}: {}", c.name, c.detail));
    let report = DrillReport {
        format: REPORT_FORMAT,
        id,
        policy: policy.name.to_string(),
        source: source_name.to_string(),
        host: crate::lock::hostname(),
        lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        finished_at: Utc::now(),
        backup: manifest.id.clone(),
        backup_kind: manifest.kind.clone(),
        backup_started_at: manifest.started_at,
        target,
        passed: first_failure.is_none(),
        first_failure,
        rto_seconds: rto,
        rpo_seconds: rpo,
        restored_point,
        bytes_read: manifest.artifacts.iter().map(|a| a.stored.size).sum(),
        checks,
        leftovers_removed: leftovers,
    };
    tracing::info!(drill = %report.id, passed = report.passed, rto = ?report.rto_seconds, "drill finished");
    Ok(report)
}

/// Restores every database of the dump (globals first) into the scratch
/// cluster and compares each with its inventory. True when all restored.
async fn restore_all(
    repo: &Repository,
    manifest: &Manifest,
    databases: &[String],
    cluster: &scratch::ScratchPostgres,
    bin_dir: Option<PathBuf>,
    opts: &Options,
    checks: &mut Checks,
) -> Result<bool, DrillError> {
    let mut all = true;
    let has_globals = manifest.artifact("globals").is_some();
    for (i, db) in databases.iter().enumerate() {
        let restore = format!("restore {db}");
        let inventory = format!("inventory {db}");
        if !all {
            checks.skip(restore, "an earlier restore failed");
            checks.skip(inventory, "an earlier restore failed");
            continue;
        }
        let ropts = pg_restore::Options {
            database: Some(db.clone()),
            target: cluster.conn.clone(),
            target_database: None,
            jobs: 1,
            clean: false,
            // Roles first, as an incident restore into a new server would.
            globals: i == 0 && has_globals,
            no_owner: false,
            scratch_dir: opts.scratch_dir.clone(),
            bin_dir: bin_dir.clone(),
        };
        let result = interruptible(async {
            let plan = pg_restore::plan(manifest, &ropts).await?;
            pg_restore::execute(repo, plan, &ropts, opts.identities.clone()).await
        })
        .await?;
        match result {
            Ok(r) => {
                checks.add(
                    restore,
                    true,
                    format!(
                        "{} into {} in {}",
                        report::human_bytes(r.plan.dump.plaintext.size),
                        r.plan.target,
                        report::human_seconds(r.seconds)
                    ),
                );
                let inv = &r.inventory;
                let detail = if inv.passed() {
                    format!(
                        "{} tables, {} rows, {} large objects: all match the backup",
                        inv.tables_checked, inv.rows_expected, inv.large_objects_expected
                    )
                } else {
                    let mut parts: Vec<String> = inv
                        .mismatches
                        .iter()
                        .map(|m| match m.found {
                            Some(f) => {
                                format!("{}: expected {} rows, found {f}", m.table, m.expected)
                            }
                            None => {
                                format!("{}: expected {} rows, table missing", m.table, m.expected)
                            }
                        })
                        .collect();
                    if inv.large_objects_expected != inv.large_objects_found {
                        parts.push(format!(
                            "large objects: expected {}, found {}",
                            inv.large_objects_expected, inv.large_objects_found
                        ));
                    }
                    parts.join("; ")
                };
                checks.add(inventory, inv.passed(), detail);
            }
            Err(e) => {
                all = false;
                checks.add(restore, false, e.to_string());
                checks.skip(inventory, "the restore failed");
            }
        }
    }
    Ok(all)
}

/// Runs one user check on the restored data.
async fn user_check(
    cluster: &scratch::ScratchPostgres,
    check: &crate::policy::DrillCheck,
    databases: &[String],
) -> (bool, String) {
    let database = match (&check.database, databases) {
        (Some(d), _) => d.clone(),
        (None, [only]) => only.clone(),
        (None, _) => {
            return (
                false,
                format!(
                "the backup holds several databases ({}); name one with `database:` in the check",
                databases.join(", ")
            ),
            )
        }
    };
    let client = match cluster.conn.connect(&database).await {
        Ok(c) => c,
        Err(e) => return (false, e.to_string()),
    };
    let rows = match client.simple_query(&check.sql).await {
        Ok(r) => r,
        Err(e) => {
            return (
                false,
                format!(
                    "the query failed in {database}: {}",
                    crate::source::postgres::error_detail(&e)
                ),
            )
        }
    };
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
        _ => None,
    });
    let shown = match &value {
        Some(Some(v)) => v.clone(),
        Some(None) => "NULL".into(),
        None => "no row".into(),
    };
    match check.expect.holds(value.flatten().as_deref()) {
        Ok(true) => (true, format!("{shown} (expected {})", check.expect)),
        Ok(false) => (false, format!("got {shown}, expected {}", check.expect)),
        Err(e) => (false, e),
    }
}

/// The backup to drill.
async fn pick(
    repo: &Repository,
    policy: &str,
    source: &str,
    pick: &Pick,
) -> Result<Manifest, DrillError> {
    let kind = Some("postgres-dump");
    match pick {
        Pick::Latest => Ok(repo
            .find_backup_of_kind(policy, source, &BackupSelector::Latest, kind)
            .await?),
        Pick::Id(id) => Ok(repo
            .find_backup(policy, source, &BackupSelector::Id(id.clone()))
            .await?),
        Pick::Random => {
            let mut listing = repo.list_backups(policy, Some(source)).await?;
            listing.backups.retain(|m| m.kind == "postgres-dump");
            if listing.backups.is_empty() {
                return Err(DrillError::NoDumps {
                    source_name: source.to_string(),
                    store: repo.describe(),
                });
            }
            let i = rand::random::<u32>() as usize % listing.backups.len();
            Ok(listing.backups.swap_remove(i))
        }
    }
}

/// Stores a report in the repository: JSON (the record), Markdown and an
/// HTML page with the RTO history of the source's earlier drills.
pub async fn store(repo: &Repository, report: &DrillReport) -> Result<Vec<String>, DrillError> {
    let history = history(repo, &report.policy, Some(&report.source))
        .await
        .map(|(reports, _)| reports)
        .unwrap_or_default();
    let store = repo.store();
    let mut keys = Vec::new();
    for (ext, body) in [
        (
            "json",
            serde_json::to_vec_pretty(report).expect("report serializes"),
        ),
        ("md", report::markdown(report).into_bytes()),
        ("html", report::html(report, &history).into_bytes()),
    ] {
        let key = DrillReport::key(&report.policy, &report.source, &report.id, ext);
        store.put(&key, body.into()).await?;
        keys.push(key);
    }
    Ok(keys)
}

/// Unreadable report documents met by [`history`].
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    pub key: String,
    pub error: String,
}

/// Every stored drill report of a policy (one source, or all), oldest first.
pub async fn history(
    repo: &Repository,
    policy: &str,
    source: Option<&str>,
) -> Result<(Vec<DrillReport>, Vec<Unreadable>), DrillError> {
    let store = repo.store();
    let mut reports = Vec::new();
    let mut unreadable = Vec::new();
    for obj in store.list(&DrillReport::prefix(policy, source)).await? {
        if !obj.key.ends_with(".json") {
            continue;
        }
        let parsed = store
            .get_bytes(&obj.key)
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<DrillReport>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(r) => reports.push(r),
            Err(error) => unreadable.push(Unreadable {
                key: obj.key.clone(),
                error,
            }),
        }
    }
    reports.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    Ok((reports, unreadable))
}

/// The newest stored report of a source (ids sort by time), if any: what
/// the daemon's drill metrics show.
pub async fn latest(
    repo: &Repository,
    policy: &str,
    source: &str,
) -> Result<Option<DrillReport>, DrillError> {
    let store = repo.store();
    let newest = store
        .list(&DrillReport::prefix(policy, Some(source)))
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".json"))
        .max();
    let Some(key) = newest else {
        return Ok(None);
    };
    let bytes = store.get_bytes(&key).await?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| DrillError::Report {
            key,
            detail: e.to_string(),
        })
}
