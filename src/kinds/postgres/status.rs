//! What `lifeboat status` and the daemon's metrics say of a PostgreSQL
//! source: the WAL archive's files and lag (the server's current segment
//! against the newest archived one), and the newest point a point-in-time
//! restore can reach from the newest base backup.

use std::sync::Arc;

use super::config::PostgresSource;
use super::wal::WalFile;
use crate::kinds::StatusQuery;
use crate::repository::{Manifest, RepositoryError};
use crate::status::{lag_seconds, wal_lag, ArchiveStatus, RecoverableEnd, PROBE_TIMEOUT};

/// The WAL archive, if anything was archived.
pub(crate) async fn archive_status(
    q: StatusQuery<'_>,
    pg: &PostgresSource,
) -> Result<Option<ArchiveStatus>, RepositoryError> {
    let (p, s, repo, probe, now) = (
        q.policy.name.as_str(),
        q.source.name.as_str(),
        q.repo,
        q.probe,
        q.now,
    );
    let listing = super::wal::archive::list(repo.store().as_ref(), p, s).await?;
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

/// Read from the newest base backup and the WAL archived after it.
pub(crate) async fn recoverable_end(
    q: StatusQuery<'_>,
    pg: &PostgresSource,
    listing: &[Manifest],
    identities: &Arc<crate::keys::Identities>,
) -> Option<RecoverableEnd> {
    let (p, s, repo) = (q.policy.name.as_str(), q.source.name.as_str(), q.repo);
    let base = listing.iter().rev().find(|m| m.physical.is_some())?;
    let reader = super::pitr::EndReader {
        identities,
        bin_dir: pg.bin_dir.as_deref(),
    };
    let dir = std::env::temp_dir().join("lifeboat-status-unused");
    let plan = super::pitr::plan(
        repo,
        p,
        s,
        super::pitr::Target::LatestReachable,
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

/// The segment the server writes now and the segment size. Computed from
/// the LSN: `pg_walfile_name()` names the previous segment for an LSN on a
/// segment boundary (right after a switch).
async fn pg_current_segment(pg: &super::config::PostgresSource) -> Result<(String, u64), String> {
    let work = async {
        let conn = super::source::PgConn::from_source(pg).map_err(|e| e.to_string())?;
        let client = conn.connect("postgres").await.map_err(|e| e.to_string())?;
        let row = client
            .query_one(
                "SELECT pg_current_wal_lsn()::text, (SELECT timeline_id FROM pg_control_checkpoint()), \
                 (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')",
                &[],
            )
            .await
            .map_err(|e| super::source::error_detail(&e))?;
        let lsn: String = row.get(0);
        let timeline: i32 = row.get(1);
        let size: i64 = row.get(2);
        let lsn = super::wal::Lsn::parse(&lsn).ok_or_else(|| format!("unexpected LSN '{lsn}'"))?;
        let size = size as u64;
        Ok::<_, String>((
            super::wal::segment_name(timeline as u32, lsn.segment(size), size),
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
