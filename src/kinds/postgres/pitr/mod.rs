//! Point-in-time recovery: a base backup unpacked into a data directory,
//! recovery settings that fetch WAL with `lifeboat wal-fetch`, and
//! optionally the server started and watched until it has promoted.
//!
//! The plan is made from manifests and the archive's listing only: which
//! base backup (the newest that is consistent before the target), which WAL
//! it needs, and whether the archive reaches the target. A target it cannot
//! reach is refused with the reason before anything is written.
//!
//! Layout: `plan.rs` makes the plan (`decide.rs` holds the rule for the
//! target), `execute.rs` restores the files, `settings.rs` writes the
//! recovery settings, `recovery.rs` runs the server until it promoted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

mod decide;
mod execute;
mod plan;
mod recovery;
mod settings;
pub use execute::{check_datadir, execute, running_as_root, PitrOptions, PitrReport};
pub use plan::plan;
pub(crate) use plan::waldump_tools;
pub(crate) use recovery::wait_for_promotion;
pub(crate) use settings::command_arg;

use crate::keys::Identities;
use crate::kinds::postgres::source::PgError;
use crate::kinds::postgres::wal::end::WalEnd;
use crate::kinds::postgres::wal::reach::Reach;
use crate::kinds::postgres::wal::Lsn;
use crate::pipeline::PipelineError;
use crate::process::ProcessError;
use crate::repository::{Manifest, Physical, RepositoryError};
use crate::storage::StorageError;

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    /// Replay every archived segment; refused when the archive has a hole.
    Latest,
    /// Replay up to the last whole record before the first hole (or the
    /// end of the archive): what an incident with a damaged archive needs,
    /// asked for explicitly.
    LatestReachable,
    Time(DateTime<Utc>),
    Lsn(Lsn),
    Xid(u64),
    /// A restore point made with `pg_create_restore_point`.
    Name(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Latest => write!(f, "latest (every archived segment)"),
            Target::LatestReachable => {
                write!(
                    f,
                    "latest reachable (the last whole WAL record before any hole)"
                )
            }
            Target::Time(t) => write!(f, "time {}", t.format("%Y-%m-%d %H:%M:%S%.f UTC")),
            Target::Lsn(l) => write!(f, "LSN {l}"),
            Target::Xid(x) => write!(f, "transaction {x}"),
            Target::Name(n) => write!(f, "restore point '{n}'"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PitrError {
    #[error("no base backup of source '{source_name}' in {store}; take one with `lifeboat backup --source {source_name} --kind base`")]
    NoBaseBackups { source_name: String, store: String },
    #[error("backup {id} is a {kind} backup; --to-datadir restores base backups (`lifeboat list` shows the kinds)")]
    NotABaseBackup { id: String, kind: String },
    #[error("{target} is before the first base backup's consistent point ({first} finished at {at}); no backup can recover to it")]
    BeforeFirstBase {
        target: String,
        first: String,
        at: String,
    },
    #[error("base backup {backup} cannot be made consistent: WAL segment {missing} is missing from the archive (it needs {from} to {to})")]
    BaseIncomplete {
        backup: String,
        missing: String,
        from: String,
        to: String,
    },
    #[error(transparent)]
    Gap(Box<GapError>),
    #[error("{target} is after the newest archived WAL: {newest}; the last archived segment is {last} (stored {last_at}) and later changes are not in the archive yet. {advice}, or check that archive_command runs (pg_stat_archiver)")]
    AfterLastWal {
        target: String,
        newest: String,
        last: String,
        last_at: String,
        advice: String,
    },
    #[error("cannot find pg_waldump {major} to read the end of the WAL archive: {source}. Install the PostgreSQL {major} server package (it ships pg_waldump) or set the source's bin_dir")]
    NoWaldump { major: u32, source: PgError },
    #[error(transparent)]
    End(#[from] crate::kinds::postgres::wal::end::EndError),
    #[error("the data directory {path} exists and is not empty; give a new or empty directory")]
    DatadirNotEmpty { path: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("PostgreSQL refuses to run as root; run the restore as the user that will own the data directory (e.g. `runuser -u postgres -- lifeboat restore ...`), or leave out --start")]
    RunningAsRoot,
    #[error("pg_verifybackup found the restored files do not match the backup's manifest: {0}")]
    VerifyBackup(String),
    #[error("the server did not finish recovery: {detail}; the data directory {datadir} is left as it is for inspection; the log is {log}")]
    Recovery {
        detail: String,
        datadir: String,
        log: String,
    },
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Postgres(#[from] PgError),
}

impl crate::outcome::Classify for PitrError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::NoBaseBackups { .. }
            | Self::BeforeFirstBase { .. }
            | Self::BaseIncomplete { .. }
            | Self::Gap(_)
            | Self::AfterLastWal { .. } => Outcome::NotFound,
            Self::DatadirNotEmpty { .. } => Outcome::Refused,
            Self::RunningAsRoot | Self::NotABaseBackup { .. } | Self::NoWaldump { .. } => {
                Outcome::Usage
            }
            Self::VerifyBackup(_) => Outcome::Integrity,
            Self::End(e) => e.outcome(),
            Self::Pipeline(e) => e.outcome(),
            Self::Repository(e) => e.outcome(),
            Self::Storage(e) => e.outcome(),
            Self::Process(e) => e.outcome(),
            Self::Postgres(e) => e.outcome(),
            Self::Io { .. } | Self::Recovery { .. } => Outcome::Failure,
        }
    }
}

/// A target behind a hole in the archive.
#[derive(Debug, thiserror::Error)]
#[error("{target} cannot be reached: WAL segment {missing} is missing from the archive, so recovery from base backup {backup} stops at the end of segment {last} (archived {last_at}){reachable}. Put the segment back and restore again, or restore everything before the hole: {advice}")]
pub struct GapError {
    pub target: String,
    pub missing: String,
    pub backup: String,
    /// The end of the last segment before the hole.
    pub reach_lsn: Lsn,
    /// Where the last whole record before the hole starts: the newest
    /// `--until-lsn` that recovery can reach (None when the plan could not
    /// read the WAL: a dry run without --identity).
    pub latest_target: Option<Lsn>,
    /// ", where the newest archived transaction committed at ..." or "".
    pub reachable: String,
    pub advice: String,
    pub last: String,
    pub last_at: String,
}

impl crate::outcome::Classify for GapError {
    fn outcome(&self) -> crate::outcome::Outcome {
        crate::outcome::Outcome::NotFound
    }
}

/// What a point-in-time restore will do.
#[derive(Debug, Clone, Serialize)]
pub struct PitrPlan {
    pub policy: String,
    pub source: String,
    pub backup: String,
    pub backup_finished_at: DateTime<Utc>,
    pub server_version: String,
    pub base_stored_size: u64,
    pub base_plaintext_size: u64,
    pub physical: Physical,
    pub target: Target,
    /// What recovery is told (recovery_target_*): the target, or the last
    /// whole record when the target is at or after the newest archived
    /// transaction (PostgreSQL cannot "reach" a time no record is stamped
    /// after; recovery would stop with FATAL instead).
    pub recovery: Target,
    /// A plain statement of what the restore gives when that differs from
    /// the target as asked ("the newest archived transaction ... is before
    /// your target; everything archived is restored").
    pub notice: Option<String>,
    /// What the archive lets recovery reach from this base backup.
    pub reach: Reach,
    /// The last whole record and newest transaction end, read from the
    /// archived WAL (None in a dry run without an identity).
    pub end: Option<WalEnd>,
    pub datadir: PathBuf,
    pub warnings: Vec<String>,
    #[serde(skip)]
    manifest: Manifest,
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "at an unknown time".into())
}

/// What the planner needs to read the archived WAL's end: without it (a
/// dry run without --identity) it judges by segment names only and says so.
#[derive(Clone, Copy)]
pub struct EndReader<'a> {
    pub identities: &'a Arc<Identities>,
    /// The server binaries (the policy's bin_dir), else found as for dumps.
    pub bin_dir: Option<&'a Path>,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PitrError {
    let path = path.display().to_string();
    move |source| PitrError::Io { what, path, source }
}

/// `PostgreSQL 15.20 (Debian ...)` → 15.
pub(crate) fn server_major(version: &str) -> u32 {
    version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}
