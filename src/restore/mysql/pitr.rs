//! Point-in-time restores of MySQL/MariaDB: which dump, which archived
//! binlog files, and where the replay stops, decided from the archived
//! data before the target is touched (docs/RUNBOOK.md, "What --until
//! means"); then the replay through `mariadb-binlog` into the client.

use std::sync::Arc;

use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::{find_client, MyRestoreError};
use crate::keys::Identities;
use crate::pipeline::{self, PipelineError};
use crate::process::{self, ProcessError};
use crate::repository::{Manifest, Repository};
use crate::source::mysql::{self as my, MyConn};

/// Where a MySQL point-in-time restore stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum MyTarget {
    /// Every archived event; refused when the archive has a hole.
    Latest,
    /// Every archived event before the first hole.
    LatestReachable,
    Time(chrono::DateTime<chrono::Utc>),
    /// A binlog file and position (the event starting there is not applied).
    Position {
        file: String,
        position: u64,
    },
    /// A GTID list (MariaDB `domain-server-seq`): replay stops after it.
    Gtid(String),
}

impl std::fmt::Display for MyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MyTarget::Latest => write!(f, "latest (every archived event)"),
            MyTarget::LatestReachable => {
                write!(f, "latest reachable (every archived event before any hole)")
            }
            MyTarget::Time(t) => write!(f, "time {}", t.format("%Y-%m-%d %H:%M:%S UTC")),
            MyTarget::Position { file, position } => write!(f, "position {file}:{position}"),
            MyTarget::Gtid(g) => write!(f, "GTID {g}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no dump of source '{source_name}' is old enough for {target} (the first was taken at {first}); no backup can recover to it")]
    BeforeFirstDump {
        source_name: String,
        target: String,
        first: String,
    },
    #[error("dump {backup} has no binlog position (the server had no binlog then); it cannot be rolled forward. Restore it without --until")]
    NoPosition { backup: String },
    #[error("dump {backup} is too new for {target}: {why}. Leave out --backup (an older dump is chosen) or choose an older one from `lifeboat list`")]
    DumpTooNew {
        backup: String,
        why: String,
        target: String,
    },
    #[error("--until-gtid {given} names several GTIDs; a restore stops at one: give the one GTID to stop after (domain-server-seq)")]
    SeveralGtids { given: String },
    #[error(transparent)]
    Gap(Box<BinlogGap>),
    #[error("{target} is beyond the last archived event: {detail}; is `lifeboat binlog-archive` running? {advice}")]
    AfterLast {
        target: String,
        detail: String,
        advice: String,
    },
    #[error("--until {given} has a fraction of a second, but binlog events carry whole seconds, so a MySQL/MariaDB restore can stop only at a whole second: --until '{below}' replays every event stamped before {below}; --until '{above}' also those stamped within the second of your target (some may be later than it)")]
    Fractional {
        given: String,
        below: String,
        above: String,
    },
    #[error("binlog file {file} is archived only up to position {end}, before {target}; {advice}")]
    PositionPastEnd {
        file: String,
        end: u64,
        target: String,
        advice: String,
    },
    #[error("replaying {file} into {target} failed: {source}. The target is partly restored: its databases hold the dump plus the changes replayed before this file; drop them before restoring again")]
    Replay {
        file: String,
        target: String,
        source: ProcessError,
    },
    #[error("reading archived binlog {file} during the replay into {target} failed: {source}. The target is partly restored: its databases hold the dump plus the changes replayed before this file; drop them before restoring again")]
    ReplayRead {
        file: String,
        target: String,
        source: Box<PipelineError>,
    },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Binlog(#[from] crate::binlog::BinlogError),
    #[error(transparent)]
    Restore(#[from] MyRestoreError),
    #[error(transparent)]
    Repository(#[from] crate::repository::RepositoryError),
}

impl crate::outcome::Classify for ReplayError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::BeforeFirstDump { .. }
            | Self::Gap(_)
            | Self::AfterLast { .. }
            | Self::PositionPastEnd { .. } => Outcome::NotFound,
            Self::NoPosition { .. }
            | Self::Fractional { .. }
            | Self::DumpTooNew { .. }
            | Self::SeveralGtids { .. } => Outcome::Usage,
            Self::ReplayRead { source, .. } => source.outcome(),
            Self::Binlog(e) => e.outcome(),
            Self::Restore(e) => e.outcome(),
            Self::Storage(e) => e.outcome(),
            Self::Repository(e) => e.outcome(),
            Self::Replay { .. } => Outcome::Failure,
        }
    }
}

/// A target behind a hole in the binlog archive.
#[derive(Debug, thiserror::Error)]
#[error("{target} cannot be reached: binlog file {missing} {why}, so replay from dump {backup} stops at the end of {last}. Put the file back and restore again, or restore everything before the hole: {advice}")]
pub struct BinlogGap {
    pub target: String,
    /// The first file the replay lacks.
    pub missing: String,
    /// "is missing from the archive", or which object of it is gone.
    pub why: String,
    pub backup: String,
    /// Where the reachable part ends.
    pub last: String,
    pub advice: String,
}

impl crate::outcome::Classify for BinlogGap {
    fn outcome(&self) -> crate::outcome::Outcome {
        crate::outcome::Outcome::NotFound
    }
}

/// The replay part of a point-in-time plan.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayPlan {
    pub target: MyTarget,
    pub from: my::BinlogPoint,
    /// The archived files to replay, in order, with whether each is whole.
    pub files: Vec<(String, bool)>,
    /// The end of the last file replayed, read from its events (None in a
    /// dry run without an identity).
    pub end: Option<crate::binlog::BinlogEnd>,
    /// The first hole after the dump's position, if any (the replay never
    /// goes past it).
    pub hole: Option<String>,
    /// A plain statement of what the restore gives when it differs from
    /// the target as asked.
    pub notice: Option<String>,
    pub warnings: Vec<String>,
    #[serde(skip)]
    records: Vec<crate::binlog::BinlogRecord>,
}

/// What the planner needs to read the end of the binlog archive: without
/// it (a dry run without --identity) it judges by the records only.
#[derive(Clone, Copy)]
pub struct EndReader<'a> {
    pub identities: &'a Arc<Identities>,
}

fn utc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `--until` for MySQL/MariaDB is a whole second (see [`ReplayError::Fractional`]).
pub fn whole_second(t: &chrono::DateTime<chrono::Utc>) -> Result<(), ReplayError> {
    use chrono::TimeDelta;
    if t.timestamp_subsec_nanos() == 0 {
        return Ok(());
    }
    // (Not duration_trunc: it works in nanoseconds and fails past 2262.)
    let below = chrono::DateTime::from_timestamp(t.timestamp(), 0).expect("a valid time");
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S+00").to_string();
    Err(ReplayError::Fractional {
        given: t.format("%Y-%m-%d %H:%M:%S%.f UTC").to_string(),
        below: fmt(below),
        above: fmt(below + TimeDelta::seconds(1)),
    })
}

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
    use crate::binlog::file_order;
    if let MyTarget::Time(t) = target {
        whole_second(t)?;
    }
    if let MyTarget::Gtid(g) = target {
        if gtid_targets(g).is_some_and(|t| t.len() > 1) {
            return Err(ReplayError::SeveralGtids { given: g.clone() });
        }
    }
    let too_new = |m: &Manifest, why: String| ReplayError::DumpTooNew {
        backup: m.id.clone(),
        why,
        target: target.to_string(),
    };
    let listing = repo.list_backups(policy, Some(source)).await?;
    let dumps: Vec<&Manifest> = listing
        .backups
        .iter()
        .filter(|m| m.kind == crate::repository::ManifestKind::MysqlDump)
        .collect();
    let first = dumps
        .first()
        .map(|m| format!("finished {}", utc(m.finished_at)))
        .unwrap_or_else(|| "never".into());
    let too_early = || ReplayError::BeforeFirstDump {
        source_name: source.to_string(),
        target: target.to_string(),
        first: first.clone(),
    };
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
    let chosen: &Manifest = match (target, forced) {
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
                Some(_) => crate::binlog::load_state(repo, policy, source).await?,
                None => Default::default(),
            };
            let mut found = None;
            for m in candidates {
                match (reader, &m.binlog) {
                    (Some(r), Some(point)) => {
                        let Some(rec) = state.get(&point.file) else {
                            // The replay plan names the missing file.
                            found = Some(m);
                            break;
                        };
                        let newest = crate::binlog::newest_before(
                            repo,
                            rec,
                            point.position,
                            r.identities.clone(),
                        )
                        .await?;
                        match newest {
                            Some(n) if n >= *t => {
                                if forced.is_some() {
                                    return Err(too_new(
                                        m,
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
                return Err(too_new(m, format!("it finished {}", utc(m.finished_at))));
            }
            m
        }
        (MyTarget::Position { file, position }, Some(m)) => {
            let b = m.binlog.as_ref().ok_or_else(|| ReplayError::NoPosition {
                backup: m.id.clone(),
            })?;
            if (file_order(&b.file), b.position) > (file_order(file), *position) {
                return Err(too_new(
                    m,
                    format!("it is consistent at {}:{}", b.file, b.position),
                ));
            }
            m
        }
        (MyTarget::Gtid(g), Some(m)) => {
            if let Some(targets) = gtid_targets(g) {
                let pos = m
                    .binlog
                    .as_ref()
                    .map(|b| b.gtid.clone())
                    .unwrap_or_default();
                let held = pos
                    .split(',')
                    .filter_map(crate::binlog::parse_gtid)
                    .find(|p| targets.iter().any(|&(d, _, n)| p.0 == d && p.2 >= n));
                if let Some((d, srv, n)) = held {
                    return Err(too_new(
                        m,
                        format!("its GTID position {d}-{srv}-{n} already holds it"),
                    ));
                }
            }
            m
        }
        (_, Some(m)) => m,
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
                .find(|m| {
                    m.binlog.as_ref().is_some_and(|b| {
                        let pos: Vec<(u32, u32, u64)> = b
                            .gtid
                            .split(',')
                            .filter_map(crate::binlog::parse_gtid)
                            .collect();
                        targets
                            .iter()
                            .all(|&(d, _, n)| pos.iter().find(|p| p.0 == d).is_none_or(|p| p.2 < n))
                    })
                })
                .ok_or_else(too_early)?
        }
        (MyTarget::Latest | MyTarget::LatestReachable | MyTarget::Gtid(_), None) => {
            *dumps.last().ok_or_else(too_early)?
        }
    };
    let replay = plan_replay(repo, policy, source, chosen, target, reader).await?;
    Ok((chosen.clone(), replay))
}

/// A `--until-gtid` list of MariaDB GTIDs (`0-1-42[,1-1-7]`); None for
/// anything else (MySQL's `uuid:n` form is passed to the tool unchecked).
fn gtid_targets(g: &str) -> Option<Vec<(u32, u32, u64)>> {
    g.split(',').map(crate::binlog::parse_gtid).collect()
}

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
    use crate::binlog::file_order;
    let from = chosen
        .binlog
        .clone()
        .ok_or_else(|| ReplayError::NoPosition {
            backup: chosen.id.clone(),
        })?;
    let state = crate::binlog::load_state(repo, policy, source).await?;
    let mut records: Vec<_> = state
        .into_values()
        .filter(|r| file_order(&r.file) >= file_order(&from.file))
        .collect();
    records.sort_by_key(|r| file_order(&r.file));
    let width = from.file.rsplit_once('.').map_or(6, |(_, n)| n.len());
    // Contiguous from the dump's file on.
    let mut chain: Vec<crate::binlog::BinlogRecord> = Vec::new();
    let mut expect = file_order(&from.file);
    // (file, why) of the first hole.
    let mut hole: Option<(String, String)> = None;
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
    // The listing shows records; the data they point to must be there too.
    for i in 0..chain.len() {
        if repo.store().head(&chain[i].key).await?.is_none() {
            hole = Some((
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
    let first_missing = || {
        ReplayError::Gap(Box::new(BinlogGap {
            target: target.to_string(),
            missing: from.file.clone(),
            why: hole.as_ref().filter(|(f, _)| *f == from.file).map_or_else(
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
    };
    let Some(last) = chain.last().cloned() else {
        return Err(first_missing());
    };
    if chain[0].file != from.file {
        return Err(first_missing());
    }
    let end = match reader {
        Some(r) => Some(crate::binlog::read_end(repo, &last, r.identities.clone()).await?),
        None => None,
    };
    let mut warnings = Vec::new();
    if end.is_none() {
        warnings.push("without --identity the plan reads the archive's records only; pass --identity to check the exact end of the archive (its newest event)".into());
    }
    let exact_until = end.as_ref().and_then(|e| e.exact_until());
    let fmt_until = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S+00").to_string();
    let end_desc = match &end {
        Some(e) => e.describe(),
        None => format!(
            "{} ({})",
            last.file,
            crate::binlog::copy_kind(last.complete)
        ),
    };
    let reachable_advice = || {
        let mut a = format!(
            "--backup {} --until latest-reachable (the same as --until-position {}:{})",
            chosen.id, last.file, last.plaintext.size
        );
        if let (Some(w), MyTarget::Time(_)) = (exact_until, target) {
            a.push_str(&format!(
                ", or --until '{}', the latest time that is restored exactly",
                fmt_until(w)
            ));
        }
        a
    };
    let gap_err = |(missing, why): &(String, String)| {
        ReplayError::Gap(Box::new(BinlogGap {
            target: target.to_string(),
            missing: missing.clone(),
            why: why.clone(),
            backup: chosen.id.clone(),
            last: end_desc.clone(),
            advice: reachable_advice(),
        }))
    };
    let after_last = || {
        ReplayError::AfterLast {
        target: target.to_string(),
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
        advice: match exact_until {
            Some(w) => format!(
                "--until latest restores every archived event; --until '{}' is the latest time that is restored exactly",
                fmt_until(w)
            ),
            None => "Use an earlier target or --until latest".into(),
        },
    }
    };
    let mut notice = None;
    match target {
        MyTarget::Time(t) => match (&end, exact_until) {
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
            (Some(_), _) => {
                return Err(match &hole {
                    Some(h) => gap_err(h),
                    None => after_last(),
                })
            }
            // A dry run without a key: the record's copy time is the best
            // bound there is, and it is only a bound.
            (None, _) => {
                if last.archived_at < *t {
                    return Err(match &hole {
                        Some(h) => gap_err(h),
                        None => after_last(),
                    });
                }
            }
        },
        MyTarget::Position { file, position } => {
            if let Some(i) = chain.iter().position(|r| &r.file == file) {
                chain.truncate(i + 1);
                let r = &chain[i];
                if !r.complete && *position != u64::MAX && *position > r.plaintext.size {
                    return Err(ReplayError::PositionPastEnd {
                        file: file.clone(),
                        end: r.plaintext.size,
                        target: target.to_string(),
                        advice: format!(
                            "the rest of the file is not archived yet: --until-position {}:{} replays what is",
                            file, r.plaintext.size
                        ),
                    });
                }
            } else {
                return Err(match &hole {
                    Some(h) => gap_err(h),
                    None => after_last(),
                });
            }
        }
        MyTarget::Gtid(g) => {
            // Each GTID must be archived: mariadb-binlog would otherwise
            // replay everything and never stop.
            if let (Some(e), Some(targets), Some(r)) = (&end, gtid_targets(g), reader) {
                if let Some(&(d, srv, n)) = targets
                    .iter()
                    .find(|&&(d, _, n)| e.gtid_seq(d).is_none_or(|have| have < n))
                {
                    let newest = e
                        .gtids
                        .iter()
                        .find(|x| crate::binlog::parse_gtid(x).is_some_and(|p| p.0 == d))
                        .map_or_else(
                            || format!("domain {d} has no archived GTID"),
                            |x| format!("the newest archived GTID of domain {d} is {x}"),
                        );
                    return Err(match &hole {
                        Some(h) => gap_err(h),
                        None => ReplayError::AfterLast {
                            target: target.to_string(),
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
                        crate::binlog::state_before(repo, &chain[i], r.identities.clone()).await?;
                    let covered = targets
                        .iter()
                        .all(|&(d, _, n)| state.iter().any(|&(sd, _, sn)| sd == d && sn >= n));
                    if covered {
                        chain.truncate(i);
                        break;
                    }
                }
            } else if let Some(h) = &hole {
                return Err(gap_err(h));
            }
        }
        MyTarget::Latest => {
            if let Some(h) = &hole {
                return Err(gap_err(h));
            }
        }
        MyTarget::LatestReachable => {
            if let Some((missing, why)) = &hole {
                notice = Some(format!(
                    "binlog file {missing} {why}: replaying up to the hole only, through {end_desc}; changes after it are not restored"
                ));
            }
        }
    }
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

impl ReplayPlan {
    /// When the newest file replayed was copied into the archive: no event
    /// after it is in the restored data.
    pub fn last_archived_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.records.last().map(|r| r.archived_at)
    }
}

/// Replays the planned binlog files into the target after the dump was
/// loaded: each file is decoded into `mariadb-binlog -` (stdin) and its SQL
/// streamed into one client session. Returns the time of the newest event
/// replayed, if any was.
pub async fn replay(
    repo: &Repository,
    plan: &ReplayPlan,
    target: &MyConn,
    identities: Arc<Identities>,
    bin_dir: Option<&std::path::Path>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ReplayError> {
    let client = find_client(bin_dir).map_err(MyRestoreError::from)?;
    let binlog_tool =
        my::find_tool(bin_dir, &["mariadb-binlog", "mysqlbinlog"]).map_err(MyRestoreError::from)?;
    let target_name = format!("{}:{}", target.host, target.port);
    let defaults = target.defaults_file().map_err(MyRestoreError::from)?;
    let mut cmd = tokio::process::Command::new(&client);
    cmd.arg(format!(
        "--defaults-extra-file={}",
        defaults.path().display()
    ))
    .args(["--binary-mode", "--default-character-set=utf8mb4"]);
    let replay_err = |file: &str, source| ReplayError::Replay {
        file: file.to_string(),
        target: target_name.clone(),
        source,
    };
    let (client_child, client_in, _) =
        process::spawn(cmd, &client, true, false).map_err(|e| replay_err("(client)", e))?;
    let mut client_in = tokio::io::BufWriter::new(client_in.expect("stdin is piped"));
    let mut newest_event: Option<i64> = None;
    let n = plan.records.len();
    for (i, rec) in plan.records.iter().enumerate() {
        let mut cmd = tokio::process::Command::new(&binlog_tool);
        // --stop-datetime is read in the tool's local time zone.
        cmd.env("TZ", "UTC").env("LC_ALL", "C");
        if i == 0 {
            cmd.arg(format!("--start-position={}", plan.from.position));
        }
        match &plan.target {
            MyTarget::Time(t) => {
                cmd.arg(format!("--stop-datetime={}", t.format("%Y-%m-%d %H:%M:%S")));
            }
            // u64::MAX: to the end of the file.
            MyTarget::Position { position, .. } if i + 1 == n && *position != u64::MAX => {
                cmd.arg(format!("--stop-position={position}"));
            }
            MyTarget::Gtid(g) => {
                cmd.arg(format!("--stop-position={g}"));
            }
            _ => {}
        }
        cmd.arg("-");
        let (tool, tool_in, tool_out) =
            process::spawn(cmd, &binlog_tool, true, true).map_err(|e| replay_err(&rec.file, e))?;
        let mut tool_out = tool_out.expect("stdout is piped");
        let expected = rec.expected();
        let decode = pipeline::decode(
            repo.store().as_ref(),
            &expected,
            identities.clone(),
            tool_in.expect("stdin is piped"),
            "mariadb-binlog",
            None,
        );
        let forward = forward_sql(&mut tool_out, &mut client_in, &mut newest_event);
        let (decoded, forwarded) = tokio::join!(decode, forward);
        // The tool stops reading once it reaches the target: a closed
        // input is the target reached if the tool itself succeeded.
        let mut reached = false;
        match decoded {
            Ok(()) => {}
            Err(PipelineError::Output { .. }) => reached = true,
            Err(e) => {
                tool.kill().await;
                client_child.kill().await;
                return Err(ReplayError::ReplayRead {
                    file: rec.file.clone(),
                    target: target_name.clone(),
                    source: Box::new(e),
                });
            }
        }
        tool.wait().await.map_err(|e| replay_err(&rec.file, e))?;
        if let Err(e) = forwarded {
            client_child.kill().await;
            return Err(replay_err(
                &rec.file,
                ProcessError::Failed {
                    program: client.display().to_string(),
                    status: "stopped reading".into(),
                    stderr: e.to_string(),
                },
            ));
        }
        tracing::info!(file = %rec.file, complete = rec.complete, "binlog replayed");
        if reached {
            break;
        }
    }
    let _ = client_in.shutdown().await;
    drop(client_in);
    client_child
        .wait()
        .await
        .map_err(|e| replay_err(plan.files.last().map_or("", |f| f.0.as_str()), e))?;
    drop(defaults);
    Ok(newest_event.and_then(|t| chrono::DateTime::from_timestamp(t, 0)))
}

/// Copies the decoded SQL of one binlog file into the client, noting the
/// newest event time the tool writes (see [`event_timestamp`]).
async fn forward_sql<R, W>(
    from: &mut R,
    to: &mut W,
    newest: &mut Option<i64>,
) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    let mut from = tokio::io::BufReader::with_capacity(256 * 1024, from);
    let mut line = Vec::with_capacity(4096);
    // Headers come right after the tool's `# at <offset>` line; text of a
    // statement that merely looks like one does not.
    let mut after_offset = false;
    loop {
        line.clear();
        if from.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        if after_offset {
            if let Some(t) = event_timestamp(&line) {
                *newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
        after_offset = line.starts_with(b"# at ");
        to.write_all(&line).await?;
    }
    to.flush().await
}

/// The time of an event, in seconds since the epoch, from the header
/// `mariadb-binlog` writes before every event,
/// `#241204  9:05:01 server id 1  end_log_pos …` (in the tool's time
/// zone, UTC here). Row events have no `SET TIMESTAMP`; every event has
/// this header.
fn event_timestamp(line: &[u8]) -> Option<i64> {
    crate::binlog::event_header(line).map(|h| h.time)
}

#[cfg(test)]
mod tests;
