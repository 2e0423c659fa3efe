//! What `lifeboat status` and the daemon's metrics say of a MySQL/MariaDB
//! source: the binlog archive's files and lag (`SHOW BINARY LOGS` against
//! the stored copies), and the newest point a restore can reach.

use std::sync::Arc;

use super::config::MysqlSource;
use crate::kinds::StatusQuery;
use crate::repository::{Manifest, ManifestKind, RepositoryError};
use crate::status::{lag_seconds, ArchiveStatus, RecoverableEnd, PROBE_TIMEOUT};

/// The binlog archive, if there is one or should be (`archive_binlogs`).
pub(crate) async fn archive_status(
    q: StatusQuery<'_>,
    my: &MysqlSource,
) -> Result<Option<ArchiveStatus>, RepositoryError> {
    let (p, s) = (q.policy.name.as_str(), q.source.name.as_str());
    let state = match super::binlog::load_state(q.repo, p, s).await {
        Ok(st) => st,
        Err(super::binlog::BinlogError::Storage(e)) => return Err(e.into()),
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
        .max_by_key(|r| super::binlog::file_order(&r.file));
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
    if q.probe {
        match server_binlogs(my).await {
            Ok(files) => {
                let (segments, waiting_bytes) = binlog_lag(&files, &state);
                st.lag_segments = Some(segments);
                st.lag_seconds = Some(lag_seconds(
                    segments + u64::from(waiting_bytes > 0),
                    newest_at,
                    q.now,
                ));
                st.server_current = files.last().map(|(f, _)| f.clone());
            }
            Err(e) => st.server_error = Some(e),
        }
    }
    Ok(Some(st))
}

/// Read from the newest dump with a binlog point and the binlogs after it.
pub(crate) async fn recoverable_end(
    q: StatusQuery<'_>,
    listing: &[Manifest],
    identities: &Arc<crate::keys::Identities>,
) -> Option<RecoverableEnd> {
    let (p, s) = (q.policy.name.as_str(), q.source.name.as_str());
    let dump = listing
        .iter()
        .rev()
        .find(|m| m.kind == ManifestKind::MysqlDump && m.binlog.is_some())?;
    let reader = super::restore::EndReader { identities };
    let plan = super::restore::plan_replay(
        q.repo,
        p,
        s,
        dump,
        &super::restore::MyTarget::LatestReachable,
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

/// (finished files not stored whole, bytes of the current file not yet
/// stored).
pub fn binlog_lag(
    server: &[(String, u64)],
    stored: &std::collections::BTreeMap<String, super::binlog::BinlogRecord>,
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

async fn server_binlogs(my: &MysqlSource) -> Result<Vec<(String, u64)>, String> {
    use mysql_async::prelude::Queryable;
    let work = async {
        let conn = super::source::MyConn::from_source(my).map_err(|e| e.to_string())?;
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
        files.sort_by_key(|(f, _)| super::binlog::file_order(f));
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
