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
//! What each kind restores and checks lives in its own folder:
//! `kinds::postgres::drill` (dumps; base backups recovered to the newest
//! archived WAL), `kinds::mysql::drill` (dumps into a scratch MariaDB),
//! `kinds::kubernetes::drill` (exports into scratch namespaces),
//! `kinds::command` (the restore command into a scratch folder). This file
//! picks the backup, runs the kind's drill, judges user checks and stores
//! the report.

pub mod report;
pub mod scratch;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::keys::Identities;
use crate::policy::{Policy, SourceKind};
use crate::repository::{BackupSelector, Manifest, Repository, RepositoryError};
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
    #[error("backup {backup} is a {kind} backup, which this source's drills do not restore; pick one with --backup ID (`lifeboat list`)")]
    UnsupportedBackup { backup: String, kind: String },
    #[error("source '{source_name}' has no backup of kind {kind} in {store}; take one with `lifeboat backup --source {source_name}`")]
    NoBackups {
        source_name: String,
        store: String,
        kind: String,
    },
    #[error("backup {backup} is a {kind} backup, not {wanted} as --kind asks; leave --kind out, or pick a backup of that kind (`lifeboat list --source {source_name}`)")]
    KindMismatch {
        backup: String,
        kind: String,
        wanted: String,
        source_name: String,
    },
    #[error("the drill was interrupted; its scratch target was removed")]
    Interrupted,
    #[error("drill report {key} cannot be read: {detail}; delete it or restore it from a copy")]
    Report { key: String, detail: String },
}

impl crate::outcome::Classify for DrillError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Repository(e) => e.outcome(),
            Self::Storage(e) => e.outcome(),
            Self::Policy(e) => e.outcome(),
            Self::UnsupportedBackup { .. } | Self::KindMismatch { .. } => Outcome::Usage,
            Self::NoBackups { .. } => Outcome::NotFound,
            Self::Report { .. } => Outcome::Integrity,
            Self::Interrupted => Outcome::Failure,
        }
    }
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
        crate::layout::drills_prefix(policy, source)
    }
}

/// What the user asked for.
pub struct Options {
    pub pick: Pick,
    pub identities: Arc<Identities>,
    /// Where scratch folders go (the policy's `drill.scratch_dir`, else
    /// the system temp folder).
    pub scratch_dir: PathBuf,
    /// Drill only backups of this kind (default: whichever is picked).
    pub kind: Option<Kind>,
    /// Fires when the drill must stop (SIGTERM): every step watches it, and
    /// what the drill made is torn down before it returns.
    pub cancel: CancellationToken,
}

/// The kinds of PostgreSQL backup a drill restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A logical dump (pg_dump): restored database by database and
    /// compared with its inventory.
    Dump,
    /// A base backup (pg_basebackup) with the WAL archived after it:
    /// recovered to the newest archived point.
    Base,
}

/// The manifest kinds a drill of a source picks from.
fn kinds(kind: Option<Kind>, source: SourceKind<'_>) -> Vec<crate::repository::ManifestKind> {
    source.imp().drilled(kind)
}

/// Checks collected in order.
#[derive(Default)]
pub struct Checks(pub(crate) Vec<Check>);

impl Checks {
    pub(crate) fn add(&mut self, name: impl Into<String>, passed: bool, detail: impl Into<String>) {
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

    pub(crate) fn skip(&mut self, name: impl Into<String>, why: &str) {
        self.0.push(Check {
            name: name.into(),
            status: CheckStatus::Skipped,
            detail: why.to_string(),
        });
    }
}

/// Runs `work` unless `cancel` fires first.
pub(crate) async fn interruptible<T>(
    cancel: &CancellationToken,
    work: impl std::future::Future<Output = T>,
) -> Result<T, DrillError> {
    tokio::select! {
        r = work => Ok(r),
        _ = cancel.cancelled() => Err(DrillError::Interrupted),
    }
}

/// What the restore step of a drill produced.
pub struct Restored {
    /// Where it was restored (`throwaway PostgreSQL 15 on ...`).
    pub(crate) target: String,
    rto: Option<f64>,
    rpo: Option<f64>,
    restored_point: Option<DateTime<Utc>>,
    /// Scratch targets of earlier, killed drills found on the way
    /// (namespaces, databases on a named server).
    pub(crate) leftovers: Vec<scratch::Leftover>,
}

impl Restored {
    pub(crate) fn nothing(target: impl Into<String>) -> Restored {
        Restored {
            target: target.into(),
            rto: None,
            rpo: None,
            restored_point: None,
            leftovers: Vec::new(),
        }
    }

    /// The target is usable now and holds data up to `point`.
    pub(crate) fn usable(&mut self, clock: Instant, point: DateTime<Utc>) {
        self.rto = Some(clock.elapsed().as_secs_f64());
        self.restored_point = Some(point);
        self.rpo = Some((Utc::now() - point).num_milliseconds() as f64 / 1000.0);
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
    let mut leftovers = sweep_scratch_dir(&opts.scratch_dir).await;
    let manifest = pick(
        repo,
        policy.name.as_str(),
        source_name,
        &opts.pick,
        &kinds(opts.kind, source.kind()),
    )
    .await?;
    let id = crate::repository::new_backup_id(started_at);
    tracing::info!(drill = %id, backup = %manifest.id, kind = %manifest.kind, source = source_name, "drill started");
    let mut checks = Checks::default();
    let user_checks: Vec<&crate::policy::DrillCheck> = policy
        .drill
        .checks
        .iter()
        .filter(|c| c.source.as_str() == source_name)
        .collect();
    let drill = Drill {
        repo,
        policy,
        source_name,
        manifest: &manifest,
        id: &id,
        opts,
        clock,
        user_checks: &user_checks,
    };
    if !kinds(opts.kind, source.kind()).contains(&manifest.kind) {
        return Err(DrillError::UnsupportedBackup {
            backup: manifest.id.clone(),
            kind: manifest.kind.to_string(),
        });
    }
    let mut restored = source.kind().imp().drill(&drill, &mut checks).await?;
    check_object_hashes(repo, &manifest, opts, &mut checks).await?;
    check_recovery_point(policy, &restored, &mut checks);
    leftovers.append(&mut restored.leftovers);
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
        backup_kind: manifest.kind.to_string(),
        backup_started_at: manifest.started_at,
        target: restored.target,
        passed: first_failure.is_none(),
        first_failure,
        rto_seconds: restored.rto,
        rpo_seconds: restored.rpo,
        restored_point: restored.restored_point,
        bytes_read: manifest.artifacts.iter().map(|a| a.stored.size).sum(),
        checks,
        leftovers_removed: leftovers,
    };
    tracing::info!(drill = %report.id, passed = report.passed, rto = ?report.rto_seconds, "drill finished");
    Ok(report)
}

/// Removes what earlier, killed drills left in the scratch folder.
/// Stopping a leftover server blocks (pg_ctl): off the async workers.
async fn sweep_scratch_dir(dir: &std::path::Path) -> Vec<scratch::Leftover> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || scratch::sweep(&dir))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "looking for leftovers of earlier drills failed");
            Vec::new()
        })
}

/// The "object hashes" check: every object of the backup, read whole,
/// its stored and plaintext sizes and hashes compared with the manifest.
async fn check_object_hashes(
    repo: &Repository,
    manifest: &Manifest,
    opts: &Options,
    checks: &mut Checks,
) -> Result<(), DrillError> {
    let verified = interruptible(
        &opts.cancel,
        crate::verify::verify(
            repo,
            std::slice::from_ref(manifest),
            Some(opts.identities.clone()),
        ),
    )
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
    Ok(())
}

/// The "recovery point" check: how old the restored data is, against
/// the policy's `max_rpo` (none without one).
fn check_recovery_point(policy: &Policy, restored: &Restored, checks: &mut Checks) {
    match (policy.drill.max_rpo, restored.rpo) {
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
}

/// One drill of one backup: what every restore path needs.
pub struct Drill<'a> {
    pub(crate) repo: &'a Repository,
    pub(crate) policy: &'a Policy,
    pub(crate) source_name: &'a str,
    pub(crate) manifest: &'a Manifest,
    pub(crate) id: &'a str,
    pub(crate) opts: &'a Options,
    pub(crate) clock: Instant,
    pub(crate) user_checks: &'a [&'a crate::policy::DrillCheck],
}

impl Drill<'_> {
    /// Runs the policy's checks on the restored target.
    pub(crate) async fn user_checks(
        &self,
        conn: &crate::kinds::postgres::source::PgConn,
        databases: &[(String, String)],
        restored: bool,
        checks: &mut Checks,
    ) -> Result<(), DrillError> {
        for c in self.user_checks {
            let name = format!("check: {}", c.name);
            if !restored {
                checks.skip(name, "the restore failed");
                continue;
            }
            let (passed, detail) =
                interruptible(&self.opts.cancel, user_check(conn, c, databases)).await?;
            checks.add(name, passed, detail);
        }
        Ok(())
    }
}

pub(crate) fn skip_user_checks(
    user_checks: &[&crate::policy::DrillCheck],
    checks: &mut Checks,
    why: &str,
) {
    for c in user_checks {
        checks.skip(format!("check: {}", c.name), why);
    }
}

/// The report line of an inventory comparison.
pub(crate) fn inventory_detail(inv: &crate::restore::InventoryCheck) -> (bool, String) {
    if inv.passed() {
        return (
            true,
            if inv.large_objects_expected > 0 {
                format!(
                    "{} tables, {} rows, {} large objects: all match the backup",
                    inv.tables_checked, inv.rows_expected, inv.large_objects_expected
                )
            } else {
                format!(
                    "{} tables, {} rows: all match the backup",
                    inv.tables_checked, inv.rows_expected
                )
            },
        );
    }
    let mut parts: Vec<String> = inv
        .mismatches
        .iter()
        .map(|m| match m.found {
            Some(f) => format!("{}: expected {} rows, found {f}", m.table, m.expected),
            None => format!("{}: expected {} rows, table missing", m.table, m.expected),
        })
        .collect();
    if inv.large_objects_expected != inv.large_objects_found {
        parts.push(format!(
            "large objects: expected {}, found {}",
            inv.large_objects_expected, inv.large_objects_found
        ));
    }
    (false, parts.join("; "))
}

/// Runs one user check on the restored data.
async fn user_check(
    conn: &crate::kinds::postgres::source::PgConn,
    check: &crate::policy::DrillCheck,
    databases: &[(String, String)],
) -> (bool, String) {
    // The check names the backup's database; it was restored as the second.
    let database = match (&check.database, databases) {
        (Some(d), _) => databases
            .iter()
            .find(|(from, _)| from == d)
            .map(|(_, to)| to.clone())
            .unwrap_or_else(|| d.clone()),
        (None, [(_, only)]) => only.clone(),
        (None, _) => {
            return (
                false,
                format!(
                "the backup holds several databases ({}); name one with `database:` in the check",
                databases
                    .iter()
                    .map(|(from, _)| from.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            )
        }
    };
    let client = match conn.connect(&database).await {
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
                    crate::kinds::postgres::source::error_detail(&e)
                ),
            )
        }
    };
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
        _ => None,
    });
    judge(check, value)
}

/// Compares a check's result with its expectation.
pub(crate) fn judge(
    check: &crate::policy::DrillCheck,
    value: Option<Option<String>>,
) -> (bool, String) {
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

/// The backup to drill, of one of `kinds`.
async fn pick(
    repo: &Repository,
    policy: &str,
    source: &str,
    pick: &Pick,
    kinds: &[crate::repository::ManifestKind],
) -> Result<Manifest, DrillError> {
    if let Pick::Id(id) = pick {
        let manifest = repo
            .find_backup(policy, source, &BackupSelector::Id(id.clone()))
            .await?;
        // A kind the source's drills do not restore at all is refused
        // later, naming it; only a --kind the backup contradicts is here.
        if let [wanted] = kinds {
            if manifest.kind != *wanted && manifest.kind.block() == wanted.block() {
                return Err(DrillError::KindMismatch {
                    backup: manifest.id,
                    kind: manifest.kind.to_string(),
                    wanted: wanted.to_string(),
                    source_name: source.to_string(),
                });
            }
        }
        return Ok(manifest);
    }
    let mut listing = repo.list_backups(policy, Some(source)).await?;
    listing.backups.retain(|m| kinds.contains(&m.kind));
    if let [kind] = kinds {
        if *pick == Pick::Latest {
            // Says so when an unreadable manifest may be the newest.
            return Ok(repo
                .find_backup_of_kind(policy, source, &BackupSelector::Latest, Some(kind.clone()))
                .await?);
        }
    }
    if listing.backups.is_empty() {
        return Err(DrillError::NoBackups {
            source_name: source.to_string(),
            store: repo.describe(),
            kind: kinds
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(" or "),
        });
    }
    let i = match pick {
        Pick::Random => rand::random::<u32>() as usize % listing.backups.len(),
        _ => listing.backups.len() - 1,
    };
    Ok(listing.backups.swap_remove(i))
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
