//! Point-in-time restores of MySQL/MariaDB: which dump, which archived
//! binlog files, and where the replay stops, decided from the archived
//! data before the target is touched (docs/RUNBOOK.md, "What --until
//! means"); then the replay through `mariadb-binlog` into the client.
//!
//! Layout: `dump.rs` picks the dump, `binlogs.rs` the archived files and
//! where the replay stops, `replay.rs` runs it.

mod binlogs;
mod dump;
mod replay;
pub use binlogs::plan_replay;
pub use dump::plan_pitr;
pub use replay::replay;

use std::sync::Arc;

use serde::Serialize;

use super::MyRestoreError;
use crate::keys::Identities;
use crate::kinds::mysql::source as my;
use crate::pipeline::PipelineError;
use crate::process::ProcessError;

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
    Binlog(#[from] crate::kinds::mysql::binlog::BinlogError),
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
    pub end: Option<crate::kinds::mysql::binlog::BinlogEnd>,
    /// The first hole after the dump's position, if any (the replay never
    /// goes past it).
    pub hole: Option<String>,
    /// A plain statement of what the restore gives when it differs from
    /// the target as asked.
    pub notice: Option<String>,
    pub warnings: Vec<String>,
    #[serde(skip)]
    records: Vec<crate::kinds::mysql::binlog::BinlogRecord>,
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

/// A `--until-gtid` list of MariaDB GTIDs (`0-1-42[,1-1-7]`); None for
/// anything else (MySQL's `uuid:n` form is passed to the tool unchecked).
fn gtid_targets(g: &str) -> Option<Vec<(u32, u32, u64)>> {
    g.split(',')
        .map(crate::kinds::mysql::binlog::parse_gtid)
        .collect()
}

impl ReplayPlan {
    /// When the newest file replayed was copied into the archive: no event
    /// after it is in the restored data.
    pub fn last_archived_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.records.last().map(|r| r.archived_at)
    }
}

#[cfg(test)]
mod tests;
