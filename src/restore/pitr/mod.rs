//! Point-in-time recovery: a base backup unpacked into a data directory,
//! recovery settings that fetch WAL with `lifeboat wal-fetch`, and
//! optionally the server started and watched until it has promoted.
//!
//! The plan is made from manifests and the archive's listing only: which
//! base backup (the newest that is consistent before the target), which WAL
//! it needs, and whether the archive reaches the target. A target it cannot
//! reach is refused with the reason before anything is written.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::keys::Identities;
use crate::pipeline::{self, PipelineError};
use crate::process::{self, ProcessError};
use crate::repository::{Manifest, Physical, Repository, RepositoryError};
use crate::source::postgres::{PgError, PgTools};
use crate::storage::StorageError;
use crate::wal::archive;
use crate::wal::end::WalEnd;

mod decide;
use crate::wal::reach::{Reach, WalIndex};
use crate::wal::Lsn;

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
    End(#[from] crate::wal::end::EndError),
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

/// Builds the plan. `backup` picks a base backup by id instead of by target.
pub async fn plan(
    repo: &Repository,
    policy: &str,
    source: &str,
    target: Target,
    backup: Option<&str>,
    datadir: &Path,
    reader: Option<EndReader<'_>>,
) -> Result<PitrPlan, PitrError> {
    let listing = repo.list_backups(policy, Some(source)).await?;
    let mut warnings: Vec<String> = listing
        .unreadable
        .iter()
        .map(|u| format!("manifest {} cannot be read: {}", u.key, u.error))
        .collect();
    let bases: Vec<&Manifest> = listing
        .backups
        .iter()
        .filter(|m| m.physical.is_some())
        .collect();
    let manifest: &Manifest = match backup {
        Some(id) => {
            let m = listing.backups.iter().find(|m| m.id == id).ok_or_else(|| {
                RepositoryError::NoSuchBackup {
                    store: repo.describe(),
                    source_name: source.to_string(),
                    id: id.to_string(),
                }
            })?;
            if m.physical.is_none() {
                return Err(PitrError::NotABaseBackup {
                    id: m.id.clone(),
                    kind: m.kind.to_string(),
                });
            }
            m
        }
        None => {
            let newest = bases.last().ok_or_else(|| PitrError::NoBaseBackups {
                source_name: source.to_string(),
                store: repo.describe(),
            })?;
            let first = bases[0];
            match &target {
                Target::Time(t) => *bases
                    .iter()
                    .rev()
                    .find(|m| m.finished_at <= *t)
                    .ok_or_else(|| PitrError::BeforeFirstBase {
                        target: target.to_string(),
                        first: first.id.clone(),
                        at: when(Some(first.finished_at)),
                    })?,
                Target::Lsn(l) => *bases
                    .iter()
                    .rev()
                    .find(|m| m.physical.as_ref().is_some_and(|p| p.stop_lsn <= *l))
                    .ok_or_else(|| PitrError::BeforeFirstBase {
                        target: target.to_string(),
                        first: first.id.clone(),
                        at: format!(
                            "{} (LSN {})",
                            when(Some(first.finished_at)),
                            first.physical.as_ref().expect("base").stop_lsn
                        ),
                    })?,
                Target::Xid(_) | Target::Name(_) => {
                    warnings.push(format!(
                        "the archive's listing cannot tell where {target} lies; using the newest base backup {}: if the target is older, recovery stops with an error and nothing is promoted (pass --backup ID for an older one)",
                        newest.id
                    ));
                    newest
                }
                Target::Latest | Target::LatestReachable => newest,
            }
        }
    };
    let physical = manifest.physical.clone().expect("chosen a base backup");
    let wal = archive::list(repo.store().as_ref(), policy, source).await?;
    for key in &wal.unrecognized {
        warnings.push(format!(
            "{key} in the WAL archive is not an archived file; it is ignored"
        ));
    }
    let index = WalIndex::new(&wal.files, physical.wal_segment_size);
    let reach = index.reach(physical.timeline, physical.start_lsn);
    if reach.end_lsn <= physical.stop_lsn {
        let missing = reach.gap_at.clone().unwrap_or_else(|| {
            crate::wal::segment_name(
                physical.timeline,
                reach.end_lsn.segment(physical.wal_segment_size),
                physical.wal_segment_size,
            )
        });
        return Err(PitrError::BaseIncomplete {
            backup: manifest.id.clone(),
            missing,
            from: physical.start_segment.clone(),
            to: physical.stop_segment.clone(),
        });
    }
    let end = match reader {
        Some(r) => {
            let major = server_major(&manifest.server_version);
            match waldump_tools(r.bin_dir, major).await {
                Ok(tools) => Some(
                    crate::wal::end::find(
                        repo.store().as_ref(),
                        &wal.files,
                        &reach,
                        physical.start_lsn,
                        physical.wal_segment_size,
                        r.identities,
                        &tools,
                    )
                    .await?,
                ),
                // These targets are judged by segment names as before; the
                // others cannot be decided without the archive's end.
                Err(e) if matches!(target, Target::Latest | Target::Xid(_) | Target::Name(_)) => {
                    warnings.push(format!("{e}; the newest archived transaction is not shown"));
                    None
                }
                Err(e) => return Err(e),
            }
        }
        None => {
            warnings.push(
                "without --identity the plan reads segment names only; pass --identity to check the exact end of the archive (the newest archived transaction)".into(),
            );
            None
        }
    };
    let decided = decide::decide(&target, &reach, end.as_ref(), &manifest.id)?;
    warnings.extend(decided.warnings);
    Ok(PitrPlan {
        policy: policy.to_string(),
        source: source.to_string(),
        backup: manifest.id.clone(),
        backup_finished_at: manifest.finished_at,
        server_version: manifest.server_version.clone(),
        base_stored_size: manifest.stored_size(),
        base_plaintext_size: manifest.plaintext_size(),
        physical,
        target,
        recovery: decided.recovery,
        notice: decided.notice,
        reach,
        end,
        datadir: datadir.to_path_buf(),
        warnings,
        manifest: manifest.clone(),
    })
}

/// The server's own `pg_waldump`, of the server's major version (WAL
/// formats differ between majors).
pub(crate) async fn waldump_tools(
    bin_dir: Option<&Path>,
    major: u32,
) -> Result<PgTools, PitrError> {
    let tools = PgTools::find(bin_dir, "pg_waldump", major)
        .await
        .map_err(|source| PitrError::NoWaldump { major, source })?;
    if tools.major != major {
        return Err(PitrError::NoWaldump {
            major,
            source: PgError::ToolTooOld {
                tool: tools.tool("pg_waldump").display().to_string(),
                found: tools.major,
                server: major,
            },
        });
    }
    Ok(tools)
}

/// How the restored server is started and fetches WAL.
#[derive(Debug, Clone)]
pub struct PitrOptions {
    /// The lifeboat executable and the absolute paths `wal-fetch` needs.
    pub exe: PathBuf,
    pub policy_file: PathBuf,
    pub identity_file: PathBuf,
    /// Start the server and wait until it has promoted.
    pub start: bool,
    pub port: Option<u16>,
    /// How long to wait for recovery.
    pub timeout: Duration,
    /// The server binaries (the policy's bin_dir), else found as for dumps.
    pub bin_dir: Option<PathBuf>,
    /// Write `archive_mode = off` (a copy must not archive a new timeline
    /// into the source's archive).
    pub no_archive: bool,
    /// A `restore_command` instead of `lifeboat wal-fetch` (drills copy
    /// WAL they fetched and checked themselves).
    pub restore_command: Option<String>,
}

/// What the restore did.
#[derive(Debug, Clone, Serialize)]
pub struct PitrReport {
    pub backup: String,
    pub datadir: PathBuf,
    pub target: Target,
    pub verified_with_pg_verifybackup: bool,
    pub started: bool,
    pub port: Option<u16>,
    /// From the server log: where recovery stopped and the last replayed
    /// transaction's time.
    pub stopped_at: Option<String>,
    pub last_transaction_at: Option<String>,
    pub new_timeline: Option<u32>,
    pub log: Option<PathBuf>,
    pub seconds: f64,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PitrError {
    let path = path.display().to_string();
    move |source| PitrError::Io { what, path, source }
}

/// Refuses a data directory that holds anything; returns whether it must
/// be created.
pub fn check_datadir(path: &Path) -> Result<bool, PitrError> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                Err(PitrError::DatadirNotEmpty {
                    path: path.display().to_string(),
                })
            } else {
                Ok(false)
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io_err("cannot read", path)(e)),
    }
}

pub fn running_as_root() -> bool {
    // The effective uid without libc: /proc/self/status "Uid: real effective ...".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A string value in postgresql.conf: backslashes start escapes there.
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A path as one word of a `restore_command`: quoted for the shell, and
/// `%` doubled (the server replaces `%f`, `%p`, `%r` and refuses any other
/// `%` sequence).
pub(crate) fn command_arg(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''")).replace('%', "%%")
}

/// Unpacks the base backup, checks it, writes the recovery settings, and
/// with `start` runs recovery to the end.
pub async fn execute(
    plan: &PitrPlan,
    repo: &Repository,
    identities: Arc<Identities>,
    opts: &PitrOptions,
) -> Result<PitrReport, PitrError> {
    let started = std::time::Instant::now();
    let datadir = &plan.datadir;
    let major = server_major(&plan.server_version);
    if opts.start && running_as_root() {
        return Err(PitrError::RunningAsRoot);
    }
    let create = check_datadir(datadir)?;
    let base = plan
        .manifest
        .artifact("base")
        .ok_or_else(|| RepositoryError::BadManifest {
            key: Repository::manifest_key(&plan.policy, &plan.source, &plan.backup),
            detail: "a base backup without its 'base' artifact".into(),
        })?
        .expected();
    // Fail before touching the target when the object is gone.
    if repo.store().head(&base.key).await?.is_none() {
        return Err(StorageError::NotFound {
            store: repo.describe(),
            key: base.key.clone(),
        }
        .into());
    }
    if create {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(datadir)
            .map_err(io_err("cannot create", datadir))?;
    }
    let unpacked = unpack(repo, &base, identities, datadir).await;
    if let Err(e) = unpacked {
        // Nothing half-unpacked stays behind.
        let _ = if create {
            std::fs::remove_dir_all(datadir)
        } else {
            empty_dir(datadir)
        };
        return Err(e);
    }
    let verified = verify_backup(opts.bin_dir.as_deref(), datadir, major).await?;
    write_recovery_settings(plan, opts)?;
    let mut report = PitrReport {
        backup: plan.backup.clone(),
        datadir: datadir.clone(),
        target: plan.target.clone(),
        verified_with_pg_verifybackup: verified,
        started: false,
        port: opts.port,
        stopped_at: None,
        last_transaction_at: None,
        new_timeline: None,
        log: None,
        seconds: 0.0,
    };
    if opts.start {
        let tools = PgTools::find(opts.bin_dir.as_deref(), "pg_ctl", major).await?;
        if tools.major != major {
            return Err(PgError::ToolTooOld {
                tool: tools.tool("pg_ctl").display().to_string(),
                found: tools.major,
                server: major,
            }
            .into());
        }
        let log = datadir.join("lifeboat-recovery.log");
        run_recovery(&tools, datadir, &log, opts.timeout, plan.physical.timeline).await?;
        // Segments prefetched past the recovery target are not needed.
        let _ = std::fs::remove_dir_all(datadir.join("pg_wal").join(archive::SPOOL_DIR));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        report.started = true;
        report.log = Some(log);
        for line in text.lines() {
            if let Some(i) = line.find("recovery stopping ") {
                report.stopped_at = Some(line[i..].to_string());
            }
            if let Some(i) = line.find("last completed transaction was at log time ") {
                report.last_transaction_at = Some(
                    line[i + "last completed transaction was at log time ".len()..].to_string(),
                );
            }
            if let Some(i) = line.find("selected new timeline ID: ") {
                report.new_timeline = line[i + "selected new timeline ID: ".len()..]
                    .trim()
                    .parse()
                    .ok();
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
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

fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// Streams the base tar through decode into `tar -x`.
async fn unpack(
    repo: &Repository,
    base: &pipeline::Expected,
    identities: Arc<Identities>,
    datadir: &Path,
) -> Result<(), PitrError> {
    let program = Path::new("tar");
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg("-x").arg("-f").arg("-").arg("-C").arg(datadir);
    let (child, stdin, _) = process::spawn(cmd, program, true, false)?;
    let stdin = stdin.expect("stdin is piped");
    let ticker =
        crate::progress::ProgressTicker::start("restore".into(), base.key.clone(), "unpacked");
    let target = format!("tar -x into {}", datadir.display());
    let decoded = pipeline::decode(
        repo.store().as_ref(),
        base,
        identities,
        stdin,
        &target,
        Some(ticker.counter()),
    )
    .await;
    match decoded {
        Ok(()) => {
            child.wait().await?;
            Ok(())
        }
        Err(e) => {
            child.kill().await;
            Err(e.into())
        }
    }
}

/// Runs `pg_verifybackup` against the unpacked files (without WAL, which
/// recovery fetches). Returns false when the tool is not installed.
async fn verify_backup(
    bin_dir: Option<&Path>,
    datadir: &Path,
    major: u32,
) -> Result<bool, PitrError> {
    let tools = match PgTools::find(bin_dir, "pg_verifybackup", major).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "pg_verifybackup not found; the restored files are checked by their stored hashes only");
            return Ok(false);
        }
    };
    let program = tools.tool("pg_verifybackup");
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg("--no-parse-wal").arg("--quiet").arg(datadir);
    let (child, _, _) = process::spawn(cmd, &program, false, false)?;
    match child.wait().await {
        Ok(_) => Ok(true),
        Err(ProcessError::Failed { stderr, .. }) => Err(PitrError::VerifyBackup(stderr)),
        Err(e) => Err(e.into()),
    }
}

fn write_recovery_settings(plan: &PitrPlan, opts: &PitrOptions) -> Result<(), PitrError> {
    let datadir = &plan.datadir;
    let fetch = opts.restore_command.clone().unwrap_or_else(|| {
        format!(
            "{} wal-fetch --policy {} --source {} --identity {} %f %p",
            command_arg(&opts.exe),
            command_arg(&opts.policy_file),
            command_arg(Path::new(&plan.source)),
            command_arg(&opts.identity_file),
        )
    });
    let mut conf = format!(
        "\n# Added by lifeboat restore {} of backup {}: point-in-time recovery to {}.\n\
         # Remove these lines once the server has promoted if WAL should no longer come from the archive.\n\
         restore_command = {}\nrecovery_target_timeline = 'latest'\n",
        Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        plan.backup,
        plan.recovery,
        conf_quote(&fetch)
    );
    match &plan.recovery {
        // Without a target recovery ends at the last whole record it can
        // fetch: the hole, or the end of the archive.
        Target::Latest | Target::LatestReachable => {}
        Target::Time(t) => conf.push_str(&format!(
            "recovery_target_time = {}\n",
            conf_quote(&t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        )),
        Target::Lsn(l) => conf.push_str(&format!("recovery_target_lsn = '{l}'\n")),
        Target::Xid(x) => conf.push_str(&format!("recovery_target_xid = '{x}'\n")),
        Target::Name(n) => conf.push_str(&format!("recovery_target_name = {}\n", conf_quote(n))),
    }
    if !matches!(plan.recovery, Target::Latest | Target::LatestReachable) {
        conf.push_str("recovery_target_action = 'promote'\n");
    }
    if let Some(p) = opts.port {
        conf.push_str(&format!("port = {p}\n"));
    }
    if opts.no_archive {
        conf.push_str("archive_mode = 'off'\n");
    }
    let auto = datadir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&conf);
    std::fs::write(&auto, text).map_err(io_err("cannot write", &auto))?;
    let signal = datadir.join("recovery.signal");
    std::fs::write(&signal, b"").map_err(io_err("cannot write", &signal))?;
    Ok(())
}

/// Starts the server and waits until recovery has ended and it promoted.
async fn run_recovery(
    tools: &PgTools,
    datadir: &Path,
    log: &Path,
    timeout: Duration,
    start_timeline: u32,
) -> Result<(), PitrError> {
    let pg_ctl = tools.tool("pg_ctl");
    let mut cmd = tokio::process::Command::new(&pg_ctl);
    cmd.arg("-D")
        .arg(datadir)
        .arg("-l")
        .arg(log)
        .args(["-W", "start"]);
    let (child, _, _) = process::spawn(cmd, &pg_ctl, false, false)?;
    child.wait().await?;
    wait_for_promotion(tools, datadir, log, timeout, start_timeline).await
}

/// How long a server may take to write its pid file after `pg_ctl -W start`.
const STARTUP_GRACE: Duration = Duration::from_secs(10);

/// Waits until a server started on a restored data directory has ended
/// recovery and promoted; fails when it exits or `timeout` passes.
pub(crate) async fn wait_for_promotion(
    tools: &PgTools,
    datadir: &Path,
    log: &Path,
    timeout: Duration,
    start_timeline: u32,
) -> Result<(), PitrError> {
    let recovery_err = |detail: String| PitrError::Recovery {
        detail,
        datadir: datadir.display().to_string(),
        log: log.display().to_string(),
    };
    tracing::info!(datadir = %datadir.display(), "server started; replaying WAL from the archive");
    let controldata = tools.tool("pg_controldata");
    let deadline = std::time::Instant::now() + timeout;
    let mut last_report = std::time::Instant::now();
    let began = std::time::Instant::now();
    let mut seen_running = false;
    let mut seen_recovery = false;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pid_file = datadir.join("postmaster.pid");
        let log_text = std::fs::read_to_string(log).unwrap_or_default();
        let running = pid_file.exists();
        seen_running |= running;
        // pg_ctl -W returns before the server has written its pid file, and
        // a server that cannot start (port taken, bad setting) may write
        // and remove it between two looks: its log says FATAL, and a server
        // that has not written its pid file within seconds never will.
        let died = log_text
            .lines()
            .any(|l| l.contains("FATAL:") || l.contains("PANIC:"));
        if !running && (seen_running || died || began.elapsed() > STARTUP_GRACE) {
            let tail: Vec<&str> = log_text.lines().rev().take(8).collect();
            return Err(recovery_err(format!(
                "the server exited: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        let out = tokio::process::Command::new(&controldata)
            .arg("-D")
            .arg(datadir)
            .output()
            .await
            .map_err(|source| ProcessError::Spawn {
                program: controldata.display().to_string(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or("")
                .to_string()
        };
        let state = field("Database cluster state:");
        let timeline: u32 = field("Latest checkpoint's TimeLineID:")
            .parse()
            .unwrap_or(0);
        seen_recovery |= state == "in archive recovery";
        // The copied pg_control says "in production" (the primary's state)
        // until the startup process rewrites it: trust that state only
        // after recovery was seen, or with a new timeline, or when the log
        // says the server accepts read-write connections.
        let ready_line = log_text.lines().any(|l| {
            l.trim_end()
                .ends_with("database system is ready to accept connections")
        });
        if ready_line || (state == "in production" && (seen_recovery || timeline > start_timeline))
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(recovery_err(format!(
                "still '{state}' after {}s (raise --timeout)",
                timeout.as_secs()
            )));
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = std::time::Instant::now();
            let replayed = log_text
                .lines()
                .rev()
                .find(|l| l.contains("restored log file"))
                .unwrap_or("");
            tracing::info!(state = %state, last = %replayed, "recovery in progress");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_settings_quote_for_the_conf_file_and_the_shell() {
        assert_eq!(conf_quote("it's"), "'it''s'");
        assert_eq!(conf_quote(r"C:\wal"), r"'C:\\wal'");
        assert_eq!(
            command_arg(Path::new("/srv/it's 100%/wal")),
            r"'/srv/it'\''s 100%%/wal'"
        );
        assert_eq!(command_arg(Path::new("/a b/it's")), "'/a b/it'\\''s'");
        assert_eq!(
            server_major("PostgreSQL 15.20 (Debian 15.20-0+deb12u1) on x86_64"),
            15
        );
    }
}
