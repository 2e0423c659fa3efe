//! Which archived binlog files roll a dump forward to the target and where
//! the replay stops, decided from the archive before the target is touched
//! (docs/RUNBOOK.md, "What --until means"); a target the archive cannot
//! reach is refused, naming a target that restores.

use chrono::{DateTime, Utc};

use super::{gtid_targets, utc, BinlogGap, EndReader, MyTarget, ReplayError, ReplayPlan};
use crate::kinds::mysql::binlog::{file_order, BinlogEnd, BinlogRecord};
use crate::kinds::mysql::source::BinlogPoint;
use crate::repository::{Manifest, Repository};

/// A hole in the archive: the first file the replay lacks, and why.
type Hole = (String, String);

/// The binlog files that roll dump `chosen` forward to `target`, decided
/// before anything is touched (docs/RUNBOOK.md, "What --until means"):
/// - the replay follows the archived files from the dump's position while
///   each is whole and its data object exists; a missing file, a missing
///   data object, or a partial copy with later files after it is a hole;
/// - a time target no later than the end of what is archived (the time
///   the server left the last whole file, or the newest event of a copy of
///   the file in progress) restores exactly; later, or behind a hole, it
///   is refused, naming the file and a target that restores.
pub async fn plan_replay(
    repo: &Repository,
    policy: &str,
    source: &str,
    chosen: &Manifest,
    target: &MyTarget,
    reader: Option<EndReader<'_>>,
) -> Result<ReplayPlan, ReplayError> {
    let from = chosen
        .binlog
        .clone()
        .ok_or_else(|| ReplayError::NoPosition {
            backup: chosen.id.clone(),
        })?;
    let state = crate::kinds::mysql::binlog::load_state(repo, policy, source).await?;
    let (mut chain, mut hole) = contiguous(state.into_values(), &from.file);
    drop_missing_data(repo, &mut chain, &mut hole).await?;
    let Some(last) = chain.last().cloned() else {
        return Err(first_missing(target, &from, chosen, hole.as_ref()));
    };
    if chain[0].file != from.file {
        return Err(first_missing(target, &from, chosen, hole.as_ref()));
    }
    let end = match reader {
        Some(r) => {
            Some(crate::kinds::mysql::binlog::read_end(repo, &last, r.identities.clone()).await?)
        }
        None => None,
    };
    let mut warnings = Vec::new();
    if end.is_none() {
        warnings.push("without --identity the plan reads the archive's records only; pass --identity to check the exact end of the archive (its newest event)".into());
    }
    let bounds = Bounds {
        target,
        backup: &chosen.id,
        last: &last,
        end_desc: match &end {
            Some(e) => e.describe(),
            None => format!(
                "{} ({})",
                last.file,
                crate::kinds::mysql::binlog::copy_kind(last.complete)
            ),
        },
        exact_until: end.as_ref().and_then(|e| e.exact_until()),
    };
    let notice = match target {
        MyTarget::Time(t) => time_notice(t, end.as_ref(), hole.as_ref(), &bounds)?,
        MyTarget::Position { file, position } => {
            stop_at_position(&mut chain, file, *position, hole.as_ref(), &bounds)?;
            None
        }
        MyTarget::Gtid(g) => {
            stop_at_gtid(repo, &mut chain, g, end.as_ref(), reader, hole.as_ref(), &bounds)
                .await?;
            None
        }
        MyTarget::Latest => {
            if let Some(h) = &hole {
                return Err(bounds.gap(h));
            }
            None
        }
        MyTarget::LatestReachable => hole.as_ref().map(|(missing, why)| {
            let end_desc = &bounds.end_desc;
            format!(
                "binlog file {missing} {why}: replaying up to the hole only, through {end_desc}; changes after it are not restored"
            )
        }),
    };
    if let (Some((missing, why)), MyTarget::Time(_) | MyTarget::Position { .. }) = (&hole, target) {
        warnings.push(format!(
            "binlog file {missing} {why}; the replay cannot go past it (the target is before it)"
        ));
    }
    Ok(ReplayPlan {
        target: target.clone(),
        from,
        files: chain.iter().map(|r| (r.file.clone(), r.complete)).collect(),
        end,
        hole: hole.map(|(f, _)| f),
        notice,
        warnings,
        records: chain,
    })
}

/// The archived files from the dump's file on, in order, while each
/// follows the one before and is whole (a partial copy ends them); and the
/// first hole: a missing file, or a partial copy with later files after it.
fn contiguous(
    records: impl IntoIterator<Item = BinlogRecord>,
    from_file: &str,
) -> (Vec<BinlogRecord>, Option<Hole>) {
    let mut records: Vec<_> = records
        .into_iter()
        .filter(|r| file_order(&r.file) >= file_order(from_file))
        .collect();
    records.sort_by_key(|r| file_order(&r.file));
    let width = from_file.rsplit_once('.').map_or(6, |(_, n)| n.len());
    // Contiguous from the dump's file on.
    let mut chain: Vec<BinlogRecord> = Vec::new();
    let mut expect = file_order(from_file);
    // (file, why) of the first hole.
    let mut hole: Option<Hole> = None;
    let total = records.len();
    for (i, r) in records.into_iter().enumerate() {
        let o = file_order(&r.file);
        if o != expect {
            hole = Some((
                format!("{}.{:0width$}", expect.0, expect.1),
                "is missing from the archive".into(),
            ));
            break;
        }
        expect = (o.0, o.1 + 1);
        let complete = r.complete;
        let (file, size) = (r.file.clone(), r.plaintext.size);
        chain.push(r);
        if !complete {
            if i + 1 < total {
                // Later files exist: the server finished this one, but only
                // a copy of its beginning reached the archive.
                hole = Some((
                    file,
                    format!("is archived only up to position {size} (a copy made while it was written) although later files are archived"),
                ));
            }
            break;
        }
    }
    (chain, hole)
}

/// The listing shows records; the data they point to must be there too:
/// the chain ends before the first file whose data object is gone, and
/// that file is the hole.
async fn drop_missing_data(
    repo: &Repository,
    chain: &mut Vec<BinlogRecord>,
    hole: &mut Option<Hole>,
) -> Result<(), ReplayError> {
    for i in 0..chain.len() {
        if repo.store().head(&chain[i].key).await?.is_none() {
            *hole = Some((
                chain[i].file.clone(),
                format!(
                    "is recorded but its data object {} is missing",
                    chain[i].key
                ),
            ));
            chain.truncate(i);
            break;
        }
    }
    Ok(())
}

/// The replay cannot start: the dump's own file is not in the archive (or
/// its data is not).
fn first_missing(
    target: &MyTarget,
    from: &BinlogPoint,
    chosen: &Manifest,
    hole: Option<&Hole>,
) -> ReplayError {
    ReplayError::Gap(Box::new(BinlogGap {
        target: target.to_string(),
        missing: from.file.clone(),
        why: hole.filter(|(f, _)| *f == from.file).map_or_else(
            || "is missing from the archive".to_string(),
            |(_, w)| w.clone(),
        ),
        backup: chosen.id.clone(),
        last: format!("the dump ({}:{})", from.file, from.position),
        advice: format!(
            "restore dump {} alone (--backup {} without --until), or an older dump",
            chosen.id, chosen.id
        ),
    }))
}

/// What a refusal of the target names: the target, the dump, and where
/// the archive ends.
struct Bounds<'a> {
    target: &'a MyTarget,
    backup: &'a str,
    /// The last file replayed before the target trims the chain.
    last: &'a BinlogRecord,
    /// Where the archive ends, in words.
    end_desc: String,
    /// The latest `--until` time that restores exactly (None without the
    /// archive's end).
    exact_until: Option<DateTime<Utc>>,
}

impl Bounds<'_> {
    /// A target that restores everything before the hole.
    fn reachable_advice(&self) -> String {
        let mut a = format!(
            "--backup {} --until latest-reachable (the same as --until-position {}:{})",
            self.backup, self.last.file, self.last.plaintext.size
        );
        if let (Some(w), MyTarget::Time(_)) = (self.exact_until, self.target) {
            a.push_str(&format!(
                ", or --until '{}', the latest time that is restored exactly",
                fmt_until(w)
            ));
        }
        a
    }

    /// The target is behind the hole.
    fn gap(&self, (missing, why): &Hole) -> ReplayError {
        ReplayError::Gap(Box::new(BinlogGap {
            target: self.target.to_string(),
            missing: missing.clone(),
            why: why.clone(),
            backup: self.backup.to_string(),
            last: self.end_desc.clone(),
            advice: self.reachable_advice(),
        }))
    }

    /// The target is past the last archived event.
    fn after_last(&self) -> ReplayError {
        let (last, end_desc) = (self.last, &self.end_desc);
        ReplayError::AfterLast {
            target: self.target.to_string(),
            detail: format!(
                "the archive ends at {end_desc}{}",
                if last.complete {
                    format!(
                        " and the server's next file after {} is not archived yet",
                        last.file
                    )
                } else {
                    format!(", copied {}", utc(last.archived_at))
                }
            ),
            advice: match self.exact_until {
                Some(w) => format!(
                    "--until latest restores every archived event; --until '{}' is the latest time that is restored exactly",
                    fmt_until(w)
                ),
                None => "Use an earlier target or --until latest".into(),
            },
        }
    }

    /// Behind the hole when there is one, else past the end.
    fn unreachable(&self, hole: Option<&Hole>) -> ReplayError {
        match hole {
            Some(h) => self.gap(h),
            None => self.after_last(),
        }
    }
}

/// A time as `--until` takes it.
fn fmt_until(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S+00").to_string()
}

/// A time target restores exactly up to the latest time the archive
/// covers; a notice says when every archived event is before it.
fn time_notice(
    t: &DateTime<Utc>,
    end: Option<&BinlogEnd>,
    hole: Option<&Hole>,
    bounds: &Bounds<'_>,
) -> Result<Option<String>, ReplayError> {
    let mut notice = None;
    match (end, bounds.exact_until) {
        (Some(e), Some(w)) if *t <= w => {
            if e.newest_event.is_none_or(|n| *t > n) {
                notice = Some(format!(
                    "{}, before your target: every archived event is replayed{}",
                    e.newest_event.map_or_else(
                        || format!("{} holds no transaction", e.file),
                        |n| format!("the newest archived event is stamped {}", utc(n))
                    ),
                    if e.complete {
                        format!(
                            " (the server left {} at {} and wrote nothing more into it)",
                            e.file,
                            utc(w)
                        )
                    } else {
                        String::new()
                    }
                ));
            }
        }
        (Some(_), _) => return Err(bounds.unreachable(hole)),
        // A dry run without a key: the record's copy time is the best
        // bound there is, and it is only a bound.
        (None, _) => {
            if bounds.last.archived_at < *t {
                return Err(bounds.unreachable(hole));
            }
        }
    }
    Ok(notice)
}

/// A position target: the replay ends with the target's file, which must
/// be archived up to the position.
fn stop_at_position(
    chain: &mut Vec<BinlogRecord>,
    file: &str,
    position: u64,
    hole: Option<&Hole>,
    bounds: &Bounds<'_>,
) -> Result<(), ReplayError> {
    let Some(i) = chain.iter().position(|r| r.file == file) else {
        return Err(bounds.unreachable(hole));
    };
    chain.truncate(i + 1);
    let r = &chain[i];
    if !r.complete && position != u64::MAX && position > r.plaintext.size {
        return Err(ReplayError::PositionPastEnd {
            file: file.to_string(),
            end: r.plaintext.size,
            target: bounds.target.to_string(),
            advice: format!(
                "the rest of the file is not archived yet: --until-position {}:{} replays what is",
                file, r.plaintext.size
            ),
        });
    }
    Ok(())
}

/// A GTID target: each GTID must be archived, and the replay ends with
/// the file holding the target.
async fn stop_at_gtid(
    repo: &Repository,
    chain: &mut Vec<BinlogRecord>,
    g: &str,
    end: Option<&BinlogEnd>,
    reader: Option<EndReader<'_>>,
    hole: Option<&Hole>,
    bounds: &Bounds<'_>,
) -> Result<(), ReplayError> {
    // Each GTID must be archived: mariadb-binlog would otherwise
    // replay everything and never stop.
    if let (Some(e), Some(targets), Some(r)) = (end, gtid_targets(g), reader) {
        if let Some(&(d, srv, n)) = targets
            .iter()
            .find(|&&(d, _, n)| e.gtid_seq(d).is_none_or(|have| have < n))
        {
            let newest = e
                .gtids
                .iter()
                .find(|x| crate::kinds::mysql::binlog::parse_gtid(x).is_some_and(|p| p.0 == d))
                .map_or_else(
                    || format!("domain {d} has no archived GTID"),
                    |x| format!("the newest archived GTID of domain {d} is {x}"),
                );
            let end_desc = &bounds.end_desc;
            return Err(match hole {
                Some(h) => bounds.gap(h),
                None => ReplayError::AfterLast {
                    target: bounds.target.to_string(),
                    detail: format!(
                        "GTID {d}-{srv}-{n} is not in the archive ({newest}; it ends at {end_desc})"
                    ),
                    advice: "--until latest restores every archived event".into(),
                },
            });
        }
        // The replay ends with the file holding the target: the
        // next one starts past it, and mariadb-binlog refuses a stop
        // GTID it has already passed.
        for i in 1..chain.len() {
            let state =
                crate::kinds::mysql::binlog::state_before(repo, &chain[i], r.identities.clone())
                    .await?;
            let covered = targets
                .iter()
                .all(|&(d, _, n)| state.iter().any(|&(sd, _, sn)| sd == d && sn >= n));
            if covered {
                chain.truncate(i);
                break;
            }
        }
    } else if let Some(h) = hole {
        return Err(bounds.gap(h));
    }
    Ok(())
}
