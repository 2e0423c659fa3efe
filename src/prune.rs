//! Pruning one source: the policy's retention applied to its backups, the
//! WAL and binlog archives trimmed to what the kept backups need, and the
//! leftovers of crashed runs removed.
//!
//! [`plan`] reads the repository and decides; [`execute`] deletes. Nothing
//! is deleted that a kept backup may need:
//!
//! - backups: [`crate::retention::plan`] per kind (dumps and base backups
//!   of one source are separate histories); the newest of each kind stays;
//! - WAL: segments before the start segment of the oldest kept base backup
//!   (its `start_segment`, any timeline); history files always stay; no
//!   base backup, no deletion;
//! - binlogs: files before the file of the oldest kept dump that has a
//!   binlog position; no such dump, no deletion;
//! - orphans: artifacts under `data/` whose backup has no manifest (a run
//!   that crashed before its commit point), older than the grace period;
//! - unfinished writes (S3 multipart uploads, local temp files) older
//!   than the grace period.
//!
//! A manifest that cannot be read stops every deletion but the backups'
//! own (it might be a backup that needs the WAL, binlogs or data).
//!
//! A backup is deleted manifest first, so it stops being listed before its
//! artifacts go; artifacts left by a failed deletion are orphans the next
//! prune removes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::kinds::postgres::wal::WalFile;
use crate::lock::LockError;
use crate::policy::{Policy, Retention, Source};
use crate::repository::{self, Repository, RepositoryError};
use crate::retention::{self, Candidate};
use crate::storage::{StorageError, Unfinished};

/// How old unlisted data and unfinished uploads must be before they are
/// taken for leftovers of a crashed run rather than work in progress.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("policy '{policy}' has no retention section, so prune would keep everything; add one to {path}, e.g. `retention: {{ keep_daily: 14, keep_monthly: 6 }}`")]
    NoRetention { policy: String, path: String },
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error("{failed} of {total} deletions in source '{source_name}' failed, the first: {first}. Nothing half-deleted is listed; run prune again")]
    Incomplete {
        source_name: String,
        failed: usize,
        total: usize,
        first: StorageError,
    },
}

impl crate::outcome::Classify for PruneError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::NoRetention { .. } => Outcome::Usage,
            Self::Locked(e) => e.outcome(),
            Self::Repository(e) => e.outcome(),
            Self::Storage(e) => e.outcome(),
            Self::Incomplete { .. } => Outcome::Failure,
        }
    }
}

/// What an object to delete is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum What {
    /// A manifest or artifact of a backup the retention does not keep.
    Backup,
    Wal,
    Binlog,
    /// Data of a backup with no manifest.
    Orphan,
    /// An unfinished write.
    Upload,
}

impl What {
    pub fn as_str(self) -> &'static str {
        match self {
            What::Backup => "backup",
            What::Wal => "wal",
            What::Binlog => "binlog",
            What::Orphan => "orphan",
            What::Upload => "upload",
        }
    }
}

/// The decision on one backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupDecision {
    pub id: String,
    pub kind: String,
    pub at: DateTime<Utc>,
    pub keep: bool,
    /// The rules that keep it; empty when it goes.
    pub reasons: Vec<String>,
    pub stored_bytes: u64,
}

/// One object to delete.
#[derive(Debug, Clone, Serialize)]
pub struct Doomed {
    pub key: String,
    pub size: u64,
    pub what: What,
}

/// Everything prune would do to one source.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub policy: String,
    pub source: String,
    pub now: DateTime<Utc>,
    /// Newest first, per kind.
    pub backups: Vec<BackupDecision>,
    /// Objects to delete, in deletion order: each deleted backup's
    /// manifest before its artifacts, then archives and leftovers.
    pub objects: Vec<Doomed>,
    pub uploads: Vec<Unfinished>,
    /// Why something was kept that a reader might expect to go.
    pub notes: Vec<String>,
}

impl Plan {
    pub fn deleted_backups(&self) -> usize {
        self.backups.iter().filter(|b| !b.keep).count()
    }
    pub fn count(&self, what: What) -> usize {
        if what == What::Upload {
            return self.uploads.len();
        }
        self.objects.iter().filter(|o| o.what == what).count()
    }
    pub fn bytes(&self, what: What) -> u64 {
        self.objects
            .iter()
            .filter(|o| o.what == what)
            .map(|o| o.size)
            .sum()
    }
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.uploads.is_empty()
    }
}

/// What [`execute`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Done {
    pub backups: u64,
    /// Objects deleted, by what they were.
    pub objects: BTreeMap<What, u64>,
    pub bytes: u64,
}

/// When a backup id says it was started, if it is one.
fn id_time(id: &str) -> Option<DateTime<Utc>> {
    if !repository::is_backup_id(id) {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(&id[..15], "%Y%m%dT%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

/// Decides what to delete in one source. Reads only.
pub async fn plan(
    repo: &Repository,
    policy: &str,
    source: &str,
    rules: &Retention,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<Plan, PruneError> {
    let store = repo.store();
    let listing = repo.list_backups(policy, Some(source)).await?;
    let mut out = Plan {
        policy: policy.to_string(),
        source: source.to_string(),
        now,
        backups: Vec::new(),
        objects: Vec::new(),
        uploads: Vec::new(),
        notes: Vec::new(),
    };
    let grace_start = now - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);

    // Backups, per kind.
    let mut kinds: BTreeMap<&str, Vec<&repository::Manifest>> = BTreeMap::new();
    for m in &listing.backups {
        kinds.entry(m.kind.as_str()).or_default().push(m);
    }
    let by_id: BTreeMap<&str, &repository::Manifest> =
        listing.backups.iter().map(|m| (m.id.as_str(), m)).collect();
    for manifests in kinds.values() {
        let candidates: Vec<Candidate> = manifests
            .iter()
            .map(|m| Candidate {
                id: m.id.clone(),
                at: m.started_at,
            })
            .collect();
        for d in retention::plan(&candidates, rules, now) {
            let m = by_id[d.id.as_str()];
            out.backups.push(BackupDecision {
                id: d.id,
                kind: m.kind.to_string(),
                at: d.at,
                keep: d.keep,
                reasons: d.reasons,
                stored_bytes: m.stored_size(),
            });
        }
    }
    for b in out.backups.iter().filter(|b| !b.keep) {
        let key = Repository::manifest_key(policy, source, &b.id);
        let size = store.head(&key).await?.unwrap_or(0);
        out.objects.push(Doomed {
            key,
            size,
            what: What::Backup,
        });
        for obj in store
            .list(&Repository::artifact_key(policy, source, &b.id, ""))
            .await?
        {
            out.objects.push(Doomed {
                key: obj.key,
                size: obj.size,
                what: What::Backup,
            });
        }
    }

    if let Some(bad) = listing.unreadable.first() {
        out.notes.push(format!(
            "manifest {} cannot be read ({}): its backup may need WAL, binlogs or data, so only backups are pruned; fix or delete that manifest",
            bad.key, bad.error
        ));
        return Ok(out);
    }
    let kept: Vec<&repository::Manifest> = out
        .backups
        .iter()
        .filter(|b| b.keep)
        .map(|b| by_id[b.id.as_str()])
        .collect();

    wal_plan(store.as_ref(), policy, source, &kept, &mut out).await?;
    binlog_plan(store.as_ref(), policy, source, &kept, &mut out).await?;

    // Orphans: data whose backup has no manifest.
    let data_prefix = crate::layout::data_prefix(policy, source);
    let mut orphans: BTreeMap<String, Vec<crate::storage::ObjectMeta>> = BTreeMap::new();
    for obj in store.list(&data_prefix).await? {
        let Some((id, _)) = obj.key[data_prefix.len()..].split_once('/') else {
            continue;
        };
        if !by_id.contains_key(id) {
            orphans.entry(id.to_string()).or_default().push(obj);
        }
    }
    for (id, objects) in orphans {
        let started = id_time(&id);
        let old = started.is_some_and(|t| t < grace_start)
            && objects
                .iter()
                .all(|o| o.modified.is_none_or(|m| m < grace_start));
        if !old {
            out.notes.push(format!(
                "data of backup {id} has no manifest but is younger than the grace period ({}): a backup in progress?; kept",
                humantime::format_duration(grace)
            ));
            continue;
        }
        out.objects.extend(objects.into_iter().map(|o| Doomed {
            key: o.key,
            size: o.size,
            what: What::Orphan,
        }));
    }

    // Unfinished writes under this source's prefixes (a local folder's
    // temp files carry no key and are listed once for every prefix).
    let mut seen = BTreeSet::new();
    for prefix in [
        data_prefix.clone(),
        crate::kinds::postgres::wal::archive::prefix(policy, source),
        crate::kinds::mysql::binlog::prefix(policy, source),
        Repository::manifest_key(policy, source, ""),
    ] {
        for u in store.unfinished(&prefix).await? {
            if u.started.is_some_and(|t| t < grace_start) && seen.insert(u.key.clone()) {
                out.uploads.push(u);
            }
        }
    }
    Ok(out)
}

async fn wal_plan(
    store: &dyn crate::storage::ObjectStore,
    policy: &str,
    source: &str,
    kept: &[&repository::Manifest],
    out: &mut Plan,
) -> Result<(), PruneError> {
    let archive = crate::kinds::postgres::wal::archive::list(store, policy, source).await?;
    if archive.files.is_empty() {
        return Ok(());
    }
    let floor = kept
        .iter()
        .filter_map(|m| m.physical.as_ref())
        .filter_map(|p| {
            WalFile::parse(&p.start_segment)
                .and_then(|f| f.segno(p.wal_segment_size))
                .map(|n| (n, p.wal_segment_size))
        })
        .min();
    let Some((floor, segment_size)) = floor else {
        out.notes.push(format!(
            "no base backup is kept, so none needs the WAL archive's {} files: all kept (they serve the next base backup's point-in-time recovery only from its start; delete by hand if unwanted)",
            archive.files.len()
        ));
        return Ok(());
    };
    for f in &archive.files {
        let old = match f.file {
            WalFile::History { .. } => false,
            _ => f.file.segno(segment_size).is_some_and(|n| n < floor),
        };
        if old {
            out.objects.push(Doomed {
                key: f.key.clone(),
                size: f.stored.size,
                what: What::Wal,
            });
        }
    }
    Ok(())
}

async fn binlog_plan(
    store: &dyn crate::storage::ObjectStore,
    policy: &str,
    source: &str,
    kept: &[&repository::Manifest],
    out: &mut Plan,
) -> Result<(), PruneError> {
    let prefix = crate::kinds::mysql::binlog::prefix(policy, source);
    let objects = store.list(&prefix).await?;
    if objects.is_empty() {
        return Ok(());
    }
    let floor = kept
        .iter()
        .filter_map(|m| m.binlog.as_ref())
        .map(|b| crate::kinds::mysql::binlog::file_order(&b.file))
        .min_by_key(|(_, n)| *n);
    let Some((base, floor)) = floor else {
        out.notes
            .push("no kept dump has a binlog position, so the binlog archive is kept whole".into());
        return Ok(());
    };
    for obj in objects {
        let Some((file, _)) = obj.key[prefix.len()..].split_once('/') else {
            continue;
        };
        let (b, n) = crate::kinds::mysql::binlog::file_order(file);
        // Another base name (the server's log_basename changed): not
        // comparable, kept.
        if b == base && n < floor {
            out.objects.push(Doomed {
                key: obj.key,
                size: obj.size,
                what: What::Binlog,
            });
        }
    }
    Ok(())
}

/// Deletes what a plan names. Keeps going past failures and reports them
/// together; a backup whose manifest could not be deleted keeps its
/// artifacts (it is still listed). Stops between deletions once `cancel`
/// fires (what is left is deleted by the next prune).
pub async fn execute(
    repo: &Repository,
    plan: &Plan,
    cancel: &CancellationToken,
) -> Result<Done, PruneError> {
    let store = repo.store();
    let mut done = Done::default();
    let mut failures: Vec<StorageError> = Vec::new();
    let mut still_listed: BTreeSet<String> = BTreeSet::new();
    let deleted_ids: BTreeSet<&str> = plan
        .backups
        .iter()
        .filter(|b| !b.keep)
        .map(|b| b.id.as_str())
        .collect();
    for obj in &plan.objects {
        if cancel.is_cancelled() {
            break;
        }
        let backup_id = (obj.what == What::Backup)
            .then(|| backup_of(&obj.key))
            .flatten();
        if backup_id.is_some_and(|id| still_listed.contains(id)) {
            continue;
        }
        match store.delete(&obj.key).await {
            Ok(()) => {
                *done.objects.entry(obj.what).or_default() += 1;
                done.bytes += obj.size;
                if obj.key.starts_with(crate::layout::MANIFESTS) {
                    done.backups += 1;
                    tracing::info!(policy = %plan.policy, source = %plan.source, backup = backup_id.unwrap_or(""), "backup deleted by retention");
                }
            }
            Err(e) => {
                tracing::warn!(key = %obj.key, error = %e, "cannot delete");
                if obj.key.starts_with(crate::layout::MANIFESTS) {
                    if let Some(id) = backup_id {
                        still_listed.insert(id.to_string());
                    }
                }
                failures.push(e);
            }
        }
    }
    debug_assert!(still_listed
        .iter()
        .all(|id| deleted_ids.contains(id.as_str())));
    for u in &plan.uploads {
        match store.discard(u).await {
            Ok(()) => *done.objects.entry(What::Upload).or_default() += 1,
            Err(e) => {
                tracing::warn!(key = %u.key, upload = %u.id, error = %e, "cannot abort an unfinished upload");
                failures.push(e);
            }
        }
    }
    let total = plan.objects.len() + plan.uploads.len();
    match failures.len() {
        0 => Ok(done),
        n => Err(PruneError::Incomplete {
            source_name: plan.source.clone(),
            failed: n,
            total,
            first: failures.swap_remove(0),
        }),
    }
}

/// The backup id in a manifest or artifact key.
use crate::layout::backup_of;

/// Options of a prune.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub dry_run: bool,
    pub grace: Duration,
    pub now: DateTime<Utc>,
}

/// Plans and (unless a dry run) executes a prune of one source, holding
/// the source's lock so no backup or other prune runs meanwhile.
pub async fn prune_source(
    repo: &Repository,
    policy: &Policy,
    source: &Source,
    opts: Options,
    cancel: &CancellationToken,
) -> Result<(Plan, Option<Done>), PruneError> {
    let rules = policy
        .retention
        .as_ref()
        .ok_or_else(|| PruneError::NoRetention {
            policy: policy.name.to_string(),
            path: policy.path.display().to_string(),
        })?;
    if opts.dry_run {
        let plan = plan(
            repo,
            policy.name.as_str(),
            source.name.as_str(),
            rules,
            opts.now,
            opts.grace,
        )
        .await?;
        return Ok((plan, None));
    }
    let lock =
        crate::lock::acquire_source(Arc::clone(repo.store()), policy, source, "prune").await?;
    let result = prune_locked(
        repo,
        policy.name.as_str(),
        source.name.as_str(),
        rules,
        opts,
        cancel,
    )
    .await;
    lock.release().await;
    result.map(|(p, d)| (p, Some(d)))
}

/// Plans and executes a prune; the caller holds the source's lock.
pub async fn prune_locked(
    repo: &Repository,
    policy: &str,
    source: &str,
    rules: &Retention,
    opts: Options,
    cancel: &CancellationToken,
) -> Result<(Plan, Done), PruneError> {
    let plan = plan(repo, policy, source, rules, opts.now, opts.grace).await?;
    let done = execute(repo, &plan, cancel).await?;
    Ok((plan, done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LocalStore, ObjectStore};

    fn manifest(id: &str, kind: &str, extra: serde_json::Value) -> repository::Manifest {
        let at = id_time(id).unwrap();
        let mut m = serde_json::json!({
            "format": 1, "id": id, "policy": "p", "source": "s", "kind": kind,
            "started_at": at, "finished_at": at, "server_version": "x",
            "tool_version": "x", "dump_tool_version": "x", "artifacts": []
        });
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(m).unwrap()
    }

    fn physical(start: &str) -> serde_json::Value {
        serde_json::json!({"physical": {
            "timeline": 2, "start_lsn": "0/0", "stop_lsn": "0/0",
            "system_identifier": "1", "wal_segment_size": 16777216,
            "start_segment": start, "stop_segment": start, "backup_label": ""
        }})
    }

    async fn put(store: &LocalStore, key: &str) {
        store
            .put(key, bytes::Bytes::from_static(b"x"))
            .await
            .unwrap();
    }

    fn wal_key(name: &str) -> String {
        format!(
            "wal/p/s/{name}/{}-16777216-{}.zst.age",
            "a".repeat(64),
            "b".repeat(64)
        )
    }

    #[tokio::test]
    async fn archives_are_trimmed_to_the_oldest_kept_backup_and_no_further() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::new(dir.path().to_path_buf()));
        let repo = Repository::new(store.clone());
        // Base backups starting in segments 3 (timeline 1) and 0x105
        // (timeline 2); a dump at binlog.000007 and one at binlog.000012.
        let backups = [
            manifest(
                "20261101T000000Z-0001",
                "postgres-base",
                physical("000000010000000000000003"),
            ),
            manifest(
                "20261110T000000Z-0002",
                "postgres-base",
                physical("000000020000000100000005"),
            ),
            manifest(
                "20261101T000000Z-0003",
                "mysql-dump",
                serde_json::json!({"binlog": {"file": "binlog.000007", "position": 4, "gtid": ""}}),
            ),
            manifest(
                "20261110T000000Z-0004",
                "mysql-dump",
                serde_json::json!({"binlog": {"file": "binlog.000012", "position": 4, "gtid": ""}}),
            ),
        ];
        for m in &backups {
            repo.write_manifest(m).await.unwrap();
            put(
                &store,
                &Repository::artifact_key("p", "s", &m.id, "a.zst.age"),
            )
            .await;
        }
        for name in [
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000100000004",
            "000000010000000100000004.partial",
            "00000002.history",
            "000000020000000100000004",
            "000000020000000100000005",
            "000000020000000100000005.00000028.backup",
            "000000020000000100000006",
        ] {
            put(&store, &wal_key(name)).await;
        }
        for f in [
            "binlog.000006",
            "binlog.000007",
            "binlog.000011",
            "binlog.000012",
            "binlog.000013",
            "other.000001",
        ] {
            put(&store, &format!("binlog/p/s/{f}/final.zst.age")).await;
            put(&store, &format!("binlog/p/s/{f}/final.json")).await;
        }
        // A year later, keep_last 1: the newer backup of each kind stays.
        let rules = Retention {
            keep_last: Some(1),
            ..Default::default()
        };
        let now = "2027-11-01T00:00:00Z".parse().unwrap();
        let plan = plan(&repo, "p", "s", &rules, now, DEFAULT_GRACE)
            .await
            .unwrap();
        let gone: Vec<&str> = plan
            .backups
            .iter()
            .filter(|b| !b.keep)
            .map(|b| b.id.as_str())
            .collect();
        // Per kind, kinds in name order.
        assert_eq!(gone, ["20261101T000000Z-0003", "20261101T000000Z-0001"]);
        let names = |what: What| -> Vec<String> {
            plan.objects
                .iter()
                .filter(|o| o.what == what)
                .map(|o| o.key.split('/').nth(3).unwrap().to_string())
                .collect()
        };
        // Everything before segment 0x105 goes, whatever the timeline;
        // history files stay.
        assert_eq!(
            names(What::Wal),
            [
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000100000004",
                "000000010000000100000004.partial",
                "000000020000000100000004",
            ]
        );
        // Binlogs before the kept dump's file, twice (data and record);
        // another base name is not comparable and stays.
        assert_eq!(
            names(What::Binlog),
            [
                "binlog.000006",
                "binlog.000006",
                "binlog.000007",
                "binlog.000007",
                "binlog.000011",
                "binlog.000011"
            ]
        );
        // Each deleted backup's manifest comes before its artifacts.
        let backup_keys: Vec<&str> = plan
            .objects
            .iter()
            .filter(|o| o.what == What::Backup)
            .map(|o| o.key.as_str())
            .collect();
        assert_eq!(
            backup_keys,
            [
                "manifests/p/s/20261101T000000Z-0003.json",
                "data/p/s/20261101T000000Z-0003/a.zst.age",
                "manifests/p/s/20261101T000000Z-0001.json",
                "data/p/s/20261101T000000Z-0001/a.zst.age",
            ]
        );
        let done = execute(&repo, &plan, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(done.backups, 2);
        assert_eq!(done.objects[&What::Wal], 5);
        let again = super::plan(&repo, "p", "s", &rules, now, DEFAULT_GRACE)
            .await
            .unwrap();
        assert!(again.is_empty(), "{again:?}");

        // An unreadable manifest stops every deletion but the backups'.
        store
            .put(
                "manifests/p/s/20261120T000000Z-0005.json",
                bytes::Bytes::from_static(b"{"),
            )
            .await
            .unwrap();
        put(&store, &wal_key("000000020000000100000003")).await;
        let careful = super::plan(&repo, "p", "s", &rules, now, DEFAULT_GRACE)
            .await
            .unwrap();
        assert!(careful.objects.is_empty(), "{careful:?}");
        assert!(careful.notes[0].contains("cannot be read"), "{careful:?}");
    }

    #[test]
    fn backup_ids_in_keys() {
        assert_eq!(
            backup_of("manifests/app/db/20261123T141502Z-3f9a.json"),
            Some("20261123T141502Z-3f9a")
        );
        assert_eq!(
            backup_of("data/app/db/20261123T141502Z-3f9a/db/x.zst.age"),
            Some("20261123T141502Z-3f9a")
        );
        assert_eq!(backup_of("wal/app/db/000000010000000000000001/x"), None);
        assert_eq!(
            id_time("20261123T141502Z-3f9a"),
            Some("2026-11-23T14:15:02Z".parse().unwrap())
        );
        assert_eq!(id_time("garbage"), None);
    }
}
