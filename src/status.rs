//! The state of a policy's sources, as `lifeboat status` shows it and the
//! daemon's metrics report it: the newest backup and its age, the last
//! attempt (from the catalog), the WAL or binlog archive's lag, the next
//! scheduled run.
//!
//! Archive lag compares the server's position with the archive: for
//! PostgreSQL the current WAL segment (`pg_walfile_name_offset(pg_current_wal_lsn())`)
//! against the newest archived segment; for MySQL/MariaDB `SHOW BINARY
//! LOGS` against the stored copies. Segments: files the server finished
//! that are not archived whole. Seconds: 0 when nothing waits, else the
//! time since the archive last received anything.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{Catalog, RunRecord};
use crate::kinds::postgres::wal::WalFile;
use crate::policy::{Policy, Source};
use crate::repository::{Repository, RepositoryError, Unreadable};

/// How long a server may take to answer the lag query.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize)]
pub struct PolicyStatus {
    pub policy: String,
    pub repository: String,
    pub now: DateTime<Utc>,
    pub schedule: Option<String>,
    pub next_run: Option<DateTime<Utc>>,
    pub sources: Vec<SourceStatus>,
    pub unreadable: Vec<Unreadable>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub source: String,
    /// postgres, mysql or kubernetes.
    pub kind: &'static str,
    pub newest_backup: Option<BackupSummary>,
    pub backups: usize,
    pub last_attempt: Option<RunRecord>,
    pub archive: Option<ArchiveStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    pub id: String,
    pub kind: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub age_seconds: i64,
    pub stored_bytes: u64,
    pub read_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArchiveStatus {
    /// wal or binlog.
    pub kind: &'static str,
    pub files: usize,
    /// The newest archived file and when it was stored.
    pub newest: Option<String>,
    pub newest_at: Option<DateTime<Utc>>,
    /// The server's current file, when the server answered.
    pub server_current: Option<String>,
    pub lag_seconds: Option<f64>,
    pub lag_segments: Option<u64>,
    /// Why the server's position is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_error: Option<String>,
    /// What a restore of the newest backup can reach, read from the
    /// archived data (only with a key: `status --identity`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recoverable_end: Option<RecoverableEnd>,
}

/// The newest point a point-in-time restore of the newest base backup or
/// dump can reach, read from the archive's own data (docs/RUNBOOK.md, "What
/// --until means").
#[derive(Debug, Clone, Serialize)]
pub struct RecoverableEnd {
    /// The backup it was computed from.
    pub backup: String,
    /// The newest archived transaction end (PostgreSQL: commit or abort, to
    /// the microsecond; MySQL/MariaDB: the newest transaction event, whole
    /// seconds).
    pub newest_transaction: Option<DateTime<Utc>>,
    /// Where replay ends: the last whole WAL record's LSN, or FILE:POS.
    pub position: String,
    /// The latest `--until` that is restored exactly (MySQL/MariaDB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_until: Option<DateTime<Utc>>,
    /// The first missing file the replay stops at, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hole: Option<String>,
    /// Why it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Reads the recoverable end of `source`'s archive from its newest base
/// backup (PostgreSQL) or dump (MySQL/MariaDB). None for a source without
/// such a backup or archive.
pub async fn recoverable_end(
    repo: &Repository,
    policy: &Policy,
    source: &Source,
    identities: &std::sync::Arc<crate::keys::Identities>,
) -> Option<RecoverableEnd> {
    let (p, s) = (policy.name.as_str(), source.name.as_str());
    let listing = match repo.list_backups(p, Some(s)).await {
        Ok(l) => l,
        Err(e) => return Some(RecoverableEnd::failed(String::new(), e.to_string())),
    };
    let query = crate::kinds::StatusQuery {
        repo,
        policy,
        source,
        now: chrono::Utc::now(),
        probe: false,
    };
    source
        .kind()
        .imp()
        .recoverable_end(query, &listing.backups, identities)
        .await
}

impl RecoverableEnd {
    pub(crate) fn failed(backup: String, error: String) -> RecoverableEnd {
        RecoverableEnd {
            backup,
            newest_transaction: None,
            position: String::new(),
            exact_until: None,
            hole: None,
            error: Some(error),
        }
    }
}

/// Reads the state of every source of a policy. `probe` connects to the
/// servers to measure archive lag.
pub async fn policy_status(
    repo: &Repository,
    policy: &Policy,
    catalog: Option<&Catalog>,
    now: DateTime<Utc>,
    probe: bool,
) -> Result<PolicyStatus, RepositoryError> {
    let listing = repo.list_backups(policy.name.as_str(), None).await?;
    let mut sources = Vec::new();
    for source in &policy.sources {
        let mine: Vec<_> = listing
            .backups
            .iter()
            .filter(|m| m.source == source.name.as_str())
            .collect();
        let newest = mine.last().map(|m| BackupSummary {
            id: m.id.clone(),
            kind: m.kind.to_string(),
            started_at: m.started_at,
            finished_at: m.finished_at,
            age_seconds: (now - m.started_at).num_seconds(),
            stored_bytes: m.stored_size(),
            read_bytes: m.plaintext_size(),
        });
        let last_attempt = match catalog {
            Some(c) => match c
                .runs(
                    policy.name.as_str(),
                    Some(source.name.as_str()),
                    Some("backup"),
                    1,
                )
                .await
            {
                Ok(mut runs) => runs.pop(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the catalog; the last attempt is not shown");
                    None
                }
            },
            None => None,
        };
        let archive = archive_status(repo, policy, source, now, probe).await?;
        sources.push(SourceStatus {
            source: source.name.to_string(),
            kind: source.kind().imp().name(),
            newest_backup: newest,
            backups: mine.len(),
            last_attempt,
            archive,
        });
    }
    Ok(PolicyStatus {
        policy: policy.name.to_string(),
        repository: repo.describe(),
        now,
        schedule: policy.schedule.as_ref().map(|s| s.expression.clone()),
        next_run: policy.next_run(now),
        sources,
        unreadable: listing.unreadable,
    })
}

/// The archive of one source, if it has one (or should: a MySQL source
/// with `archive_binlogs`).
pub async fn archive_status(
    repo: &Repository,
    policy: &Policy,
    source: &Source,
    now: DateTime<Utc>,
    probe: bool,
) -> Result<Option<ArchiveStatus>, RepositoryError> {
    let query = crate::kinds::StatusQuery {
        repo,
        policy,
        source,
        now,
        probe,
    };
    source.kind().imp().archive_status(query).await
}

pub(crate) fn lag_seconds(
    waiting: u64,
    newest_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> f64 {
    if waiting == 0 {
        return 0.0;
    }
    newest_at
        .map(|t| ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0))
        // Nothing archived ever, while the server has data: as old as
        // can be said; the alert fires.
        .unwrap_or(f64::INFINITY)
}

/// Finished segments not archived: those between the newest archived one
/// and the server's current (in-progress) segment.
pub fn wal_lag(current: &str, newest_archived: Option<&str>, segment_size: u64) -> u64 {
    let (Some(cur), newest) = (
        WalFile::parse(current),
        newest_archived.and_then(WalFile::parse),
    ) else {
        return 0;
    };
    let cur_no = cur.segno(segment_size).unwrap_or(0);
    match newest {
        Some(n) => cur_no.saturating_sub(n.segno(segment_size).unwrap_or(0) + 1),
        None => cur_no,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_lag_counts_finished_unarchived_segments() {
        assert_eq!(
            wal_lag(
                "000000010000000000000005",
                Some("000000010000000000000004"),
                1 << 24
            ),
            0
        );
        assert_eq!(
            wal_lag(
                "000000010000000100000002",
                Some("0000000100000000000000FE"),
                1 << 24
            ),
            3
        );
        assert_eq!(wal_lag("000000010000000000000003", None, 1 << 24), 3);
        let now: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
        assert_eq!(lag_seconds(0, None, now), 0.0);
        assert_eq!(
            lag_seconds(2, Some(now - chrono::Duration::seconds(90)), now),
            90.0
        );
    }
}
