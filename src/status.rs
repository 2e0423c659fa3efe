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
use crate::policy::{Policy, Source, SourceKind};
use crate::repository::{Repository, RepositoryError, Unreadable};

/// How long a server may take to answer the lag query.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

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
    match source.kind() {
        SourceKind::Postgres(pg) => {
            let base = listing
                .backups
                .iter()
                .rev()
                .find(|m| m.physical.is_some())?;
            let reader = crate::kinds::postgres::pitr::EndReader {
                identities,
                bin_dir: pg.bin_dir.as_deref(),
            };
            let dir = std::env::temp_dir().join("lifeboat-status-unused");
            let plan = crate::kinds::postgres::pitr::plan(
                repo,
                p,
                s,
                crate::kinds::postgres::pitr::Target::LatestReachable,
                Some(&base.id),
                &dir,
                Some(reader),
            )
            .await;
            Some(match plan {
                Ok(plan) => match plan.end {
                    Some(e) => RecoverableEnd {
                        backup: base.id.clone(),
                        newest_transaction: e.newest_xact.as_ref().map(|x| x.time),
                        position: e.last_record.to_string(),
                        exact_until: None,
                        hole: plan.reach.gap_at.clone(),
                        error: None,
                    },
                    None => RecoverableEnd::failed(base.id.clone(), "not read".into()),
                },
                Err(e) => RecoverableEnd::failed(base.id.clone(), e.to_string()),
            })
        }
        SourceKind::Mysql(_) => {
            let dump = listing.backups.iter().rev().find(|m| {
                m.kind == crate::repository::ManifestKind::MysqlDump && m.binlog.is_some()
            })?;
            let reader = crate::kinds::mysql::restore::EndReader { identities };
            let plan = crate::kinds::mysql::restore::plan_replay(
                repo,
                p,
                s,
                dump,
                &crate::kinds::mysql::restore::MyTarget::LatestReachable,
                Some(reader),
            )
            .await;
            Some(match plan {
                Ok(plan) => match plan.end {
                    Some(e) => RecoverableEnd {
                        backup: dump.id.clone(),
                        newest_transaction: e.newest_event,
                        position: format!("{}:{}", e.file, e.end_position),
                        exact_until: e.exact_until(),
                        hole: plan.hole.clone(),
                        error: None,
                    },
                    None => RecoverableEnd::failed(dump.id.clone(), "not read".into()),
                },
                Err(e) => RecoverableEnd::failed(dump.id.clone(), e.to_string()),
            })
        }
        SourceKind::Kubernetes(_) => None,
    }
}

impl RecoverableEnd {
    fn failed(backup: String, error: String) -> RecoverableEnd {
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
            kind: match source.kind() {
                SourceKind::Postgres(_) => "postgres",
                SourceKind::Mysql(_) => "mysql",
                SourceKind::Kubernetes(_) => "kubernetes",
            },
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
    let (p, s) = (policy.name.as_str(), source.name.as_str());
    match source.kind() {
        SourceKind::Postgres(pg) => {
            let listing =
                crate::kinds::postgres::wal::archive::list(repo.store().as_ref(), p, s).await?;
            if listing.files.is_empty() {
                return Ok(None);
            }
            let newest = listing
                .files
                .iter()
                .filter(|f| matches!(f.file, WalFile::Segment { .. }))
                .max_by(|a, b| {
                    (a.file.timeline(), a.file.segno(1 << 24))
                        .cmp(&(b.file.timeline(), b.file.segno(1 << 24)))
                });
            let newest_at = listing.files.iter().filter_map(|f| f.archived_at).max();
            let mut st = ArchiveStatus {
                kind: "wal",
                files: listing.files.len(),
                newest: newest.map(|f| f.name.clone()),
                newest_at,
                server_current: None,
                lag_seconds: None,
                lag_segments: None,
                server_error: None,
                recoverable_end: None,
            };
            if probe {
                match pg_current_segment(pg).await {
                    Ok((current, size)) => {
                        let segments = wal_lag(&current, newest.map(|f| f.name.as_str()), size);
                        st.lag_segments = Some(segments);
                        st.lag_seconds = Some(lag_seconds(segments, newest_at, now));
                        st.server_current = Some(current);
                    }
                    Err(e) => st.server_error = Some(e),
                }
            }
            Ok(Some(st))
        }
        SourceKind::Mysql(my) => {
            let state = match crate::kinds::mysql::binlog::load_state(repo, p, s).await {
                Ok(st) => st,
                Err(crate::kinds::mysql::binlog::BinlogError::Storage(e)) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(source = %s, error = %e, "cannot read the binlog archive's records");
                    Default::default()
                }
            };
            if state.is_empty() && !my.archive_binlogs {
                return Ok(None);
            }
            let newest = state
                .values()
                .max_by_key(|r| crate::kinds::mysql::binlog::file_order(&r.file));
            let newest_at = state.values().map(|r| r.archived_at).max();
            let mut st = ArchiveStatus {
                kind: "binlog",
                files: state.len(),
                newest: newest.map(|r| r.file.clone()),
                newest_at,
                server_current: None,
                lag_seconds: None,
                lag_segments: None,
                server_error: None,
                recoverable_end: None,
            };
            if probe {
                match server_binlogs(my).await {
                    Ok(files) => {
                        let (segments, waiting_bytes) = binlog_lag(&files, &state);
                        st.lag_segments = Some(segments);
                        st.lag_seconds = Some(lag_seconds(
                            segments + u64::from(waiting_bytes > 0),
                            newest_at,
                            now,
                        ));
                        st.server_current = files.last().map(|(f, _)| f.clone());
                    }
                    Err(e) => st.server_error = Some(e),
                }
            }
            Ok(Some(st))
        }
        SourceKind::Kubernetes(_) => Ok(None),
    }
}

fn lag_seconds(waiting: u64, newest_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> f64 {
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

/// (finished files not stored whole, bytes of the current file not yet
/// stored).
pub fn binlog_lag(
    server: &[(String, u64)],
    stored: &std::collections::BTreeMap<String, crate::kinds::mysql::binlog::BinlogRecord>,
) -> (u64, u64) {
    let Some((current, current_size)) = server.last() else {
        return (0, 0);
    };
    let finished = server[..server.len() - 1]
        .iter()
        .filter(|(f, _)| !stored.get(f).is_some_and(|r| r.complete))
        .count() as u64;
    let have = stored.get(current).map_or(0, |r| r.plaintext.size);
    (finished, current_size.saturating_sub(have))
}

/// The segment the server writes now and the segment size. Computed from
/// the LSN: `pg_walfile_name()` names the previous segment for an LSN on a
/// segment boundary (right after a switch).
async fn pg_current_segment(
    pg: &crate::kinds::postgres::config::PostgresSource,
) -> Result<(String, u64), String> {
    let work = async {
        let conn =
            crate::kinds::postgres::source::PgConn::from_source(pg).map_err(|e| e.to_string())?;
        let client = conn.connect("postgres").await.map_err(|e| e.to_string())?;
        let row = client
            .query_one(
                "SELECT pg_current_wal_lsn()::text, (SELECT timeline_id FROM pg_control_checkpoint()), \
                 (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')",
                &[],
            )
            .await
            .map_err(|e| crate::kinds::postgres::source::error_detail(&e))?;
        let lsn: String = row.get(0);
        let timeline: i32 = row.get(1);
        let size: i64 = row.get(2);
        let lsn = crate::kinds::postgres::wal::Lsn::parse(&lsn)
            .ok_or_else(|| format!("unexpected LSN '{lsn}'"))?;
        let size = size as u64;
        Ok::<_, String>((
            crate::kinds::postgres::wal::segment_name(timeline as u32, lsn.segment(size), size),
            size,
        ))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{}:{} did not answer within {}s",
            pg.host,
            pg.port,
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

async fn server_binlogs(
    my: &crate::kinds::mysql::config::MysqlSource,
) -> Result<Vec<(String, u64)>, String> {
    use mysql_async::prelude::Queryable;
    let work = async {
        let conn =
            crate::kinds::mysql::source::MyConn::from_source(my).map_err(|e| e.to_string())?;
        let mut c = conn.connect().await.map_err(|e| e.to_string())?;
        let rows: Vec<mysql_async::Row> = c
            .query("SHOW BINARY LOGS")
            .await
            .map_err(|e| conn.query_error("SHOW BINARY LOGS", e).to_string())?;
        let _ = c.disconnect().await;
        let mut files: Vec<(String, u64)> = rows
            .iter()
            .filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1)?)))
            .collect();
        files.sort_by_key(|(f, _)| crate::kinds::mysql::binlog::file_order(f));
        Ok::<_, String>(files)
    };
    match tokio::time::timeout(PROBE_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{}:{} did not answer within {}s",
            my.host,
            my.port,
            PROBE_TIMEOUT.as_secs()
        )),
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
