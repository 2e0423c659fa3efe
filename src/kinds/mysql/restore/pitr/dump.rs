//! Which dump a point-in-time restore starts from: the newest that holds
//! nothing past the target, or the one asked for with `--backup`, checked
//! against the target.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{
    gtid_targets, plan_replay, utc, whole_second, EndReader, MyTarget, ReplayError, ReplayPlan,
};
use crate::kinds::mysql::binlog::{file_order, parse_gtid, BinlogRecord};
use crate::repository::{Manifest, Repository};

/// Picks the dump (`backup`, or the newest that fits) and the binlog files
/// for `target`.
///
/// A time target means "every event stamped before T", so the dump must
/// hold no event stamped T or later: candidates are the dumps that
/// finished before T (by lifeboat's clock), newest first, and each is
/// checked against the server's own clock: the newest event before the
/// dump's binlog position must be stamped before T.
pub async fn plan_pitr(
    repo: &Repository,
    policy: &str,
    source: &str,
    target: &MyTarget,
    backup: Option<&str>,
    reader: Option<EndReader<'_>>,
) -> Result<(Manifest, ReplayPlan), ReplayError> {
    if let MyTarget::Time(t) = target {
        whole_second(t)?;
    }
    if let MyTarget::Gtid(g) = target {
        if gtid_targets(g).is_some_and(|t| t.len() > 1) {
            return Err(ReplayError::SeveralGtids { given: g.clone() });
        }
    }
    let listing = repo.list_backups(policy, Some(source)).await?;
    let dumps: Vec<&Manifest> = listing
        .backups
        .iter()
        .filter(|m| m.kind == crate::repository::ManifestKind::MysqlDump)
        .collect();
    let forced = match backup {
        Some(id) => Some(*dumps.iter().find(|m| m.id == id).ok_or_else(|| {
            crate::repository::RepositoryError::NoSuchBackup {
                store: repo.describe(),
                source_name: source.to_string(),
                id: id.to_string(),
            }
        })?),
        None => None,
    };
    let chosen = choose_dump(repo, policy, source, target, &dumps, forced, reader).await?;
    let replay = plan_replay(repo, policy, source, chosen, target, reader).await?;
    Ok((chosen.clone(), replay))
}

/// The dump for `target` among `dumps` (oldest first): `forced` when it
/// holds nothing past the target, else the newest that holds nothing past
/// it (see [`plan_pitr`]).
async fn choose_dump<'a>(
    repo: &Repository,
    policy: &str,
    source: &str,
    target: &MyTarget,
    dumps: &[&'a Manifest],
    forced: Option<&'a Manifest>,
    reader: Option<EndReader<'_>>,
) -> Result<&'a Manifest, ReplayError> {
    let first = dumps
        .first()
        .map(|m| format!("finished {}", utc(m.finished_at)))
        .unwrap_or_else(|| "never".into());
    let too_early = || ReplayError::BeforeFirstDump {
        source_name: source.to_string(),
        target: target.to_string(),
        first: first.clone(),
    };
    Ok(match (target, forced) {
        (MyTarget::Time(t), _) => {
            let candidates: Vec<&Manifest> = match forced {
                Some(m) => vec![m],
                None => dumps
                    .iter()
                    .rev()
                    .filter(|m| m.finished_at < *t)
                    .copied()
                    .collect(),
            };
            // The archive's records, read once for all candidates.
            let state = match reader {
                Some(_) => crate::kinds::mysql::binlog::load_state(repo, policy, source).await?,
                None => Default::default(),
            };
            let mut found = None;
            for m in candidates {
                match newest_event_before(repo, &state, m, reader).await? {
                    Some(n) if n >= *t => {
                        if forced.is_some() {
                            return Err(too_new(
                                m,
                                target,
                                format!("it holds an event stamped {}", utc(n)),
                            ));
                        }
                    }
                    _ => {
                        found = Some(m);
                        break;
                    }
                }
            }
            let m = found.ok_or_else(too_early)?;
            // A forced dump that could not be checked by its events is
            // checked by when it finished.
            if forced.is_some() && m.finished_at >= *t {
                return Err(too_new(
                    m,
                    target,
                    format!("it finished {}", utc(m.finished_at)),
                ));
            }
            m
        }
        (_, Some(m)) => {
            check_forced(m, target)?;
            m
        }
        (MyTarget::Position { file, position }, None) => *dumps
            .iter()
            .rev()
            .find(|m| {
                m.binlog.as_ref().is_some_and(|b| {
                    (file_order(&b.file), b.position) <= (file_order(file), *position)
                })
            })
            .ok_or_else(too_early)?,
        // MariaDB GTIDs: the newest dump taken before every target GTID
        // (its own GTID position is older in each domain named), so the
        // replay reaches the target instead of starting past it.
        (MyTarget::Gtid(g), None) if gtid_targets(g).is_some() => {
            let targets = gtid_targets(g).expect("checked");
            *dumps
                .iter()
                .rev()
                .find(|m| taken_before_gtids(m, &targets))
                .ok_or_else(too_early)?
        }
        (MyTarget::Latest | MyTarget::LatestReachable | MyTarget::Gtid(_), None) => {
            *dumps.last().ok_or_else(too_early)?
        }
    })
}

/// Refuses a dump asked for with `--backup` that is already past a
/// position or GTID target.
fn check_forced(m: &Manifest, target: &MyTarget) -> Result<(), ReplayError> {
    match target {
        MyTarget::Position { file, position } => {
            let b = m.binlog.as_ref().ok_or_else(|| ReplayError::NoPosition {
                backup: m.id.clone(),
            })?;
            if (file_order(&b.file), b.position) > (file_order(file), *position) {
                return Err(too_new(
                    m,
                    target,
                    format!("it is consistent at {}:{}", b.file, b.position),
                ));
            }
        }
        MyTarget::Gtid(g) => {
            if let Some((d, srv, n)) = gtid_targets(g).and_then(|t| gtid_already_held(m, &t)) {
                return Err(too_new(
                    m,
                    target,
                    format!("its GTID position {d}-{srv}-{n} already holds it"),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Dump `m`, asked for with `--backup`, already holds what `target`
/// leaves out.
fn too_new(m: &Manifest, target: &MyTarget, why: String) -> ReplayError {
    ReplayError::DumpTooNew {
        backup: m.id.clone(),
        why,
        target: target.to_string(),
    }
}

/// The time of the newest event before dump `m`'s binlog position, read
/// from the archived file; None without a reader or a position, when the
/// file is not archived (the replay plan names it), or when no event is
/// before the position.
async fn newest_event_before(
    repo: &Repository,
    state: &BTreeMap<String, BinlogRecord>,
    m: &Manifest,
    reader: Option<EndReader<'_>>,
) -> Result<Option<DateTime<Utc>>, ReplayError> {
    let (Some(r), Some(point)) = (reader, &m.binlog) else {
        return Ok(None);
    };
    let Some(rec) = state.get(&point.file) else {
        return Ok(None);
    };
    Ok(
        crate::kinds::mysql::binlog::newest_before(repo, rec, point.position, r.identities.clone())
            .await?,
    )
}

/// The GTID of dump `m`'s position that already holds one of `targets`
/// (in the same domain, at or past its sequence number), if one does.
fn gtid_already_held(m: &Manifest, targets: &[(u32, u32, u64)]) -> Option<(u32, u32, u64)> {
    let pos = m
        .binlog
        .as_ref()
        .map(|b| b.gtid.clone())
        .unwrap_or_default();
    pos.split(',')
        .filter_map(parse_gtid)
        .find(|p| targets.iter().any(|&(d, _, n)| p.0 == d && p.2 >= n))
}

/// Whether dump `m` was taken before every target GTID: its own GTID
/// position is older in each domain named.
fn taken_before_gtids(m: &Manifest, targets: &[(u32, u32, u64)]) -> bool {
    m.binlog.as_ref().is_some_and(|b| {
        let pos: Vec<(u32, u32, u64)> = b.gtid.split(',').filter_map(parse_gtid).collect();
        targets
            .iter()
            .all(|&(d, _, n)| pos.iter().find(|p| p.0 == d).is_none_or(|p| p.2 < n))
    })
}
