//! Restoring the files: the data directory checked and filled with the
//! base backup (streamed through decode into `tar -x`, then checked with
//! `pg_verifybackup`), the recovery settings written, and with `start`
//! the server run until it has promoted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::recovery::run_recovery;
use super::settings::write_recovery_settings;
use super::{io_err, server_major, PitrError, PitrPlan, Target};
use crate::keys::Identities;
use crate::kinds::postgres::source::{PgError, PgTools};
use crate::kinds::postgres::wal::archive;
use crate::pipeline;
use crate::process::{self, ProcessError};
use crate::repository::{Repository, RepositoryError};
use crate::storage::StorageError;

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
    unpack_into_datadir(repo, &base, identities, datadir, create).await?;
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
        note_recovery_log(&mut report, &text);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Unpacks the base backup into the data directory, creating it first
/// when `create`; a failed unpack leaves nothing half-unpacked behind.
async fn unpack_into_datadir(
    repo: &Repository,
    base: &pipeline::Expected,
    identities: Arc<Identities>,
    datadir: &Path,
    create: bool,
) -> Result<(), PitrError> {
    if create {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(datadir)
            .map_err(io_err("cannot create", datadir))?;
    }
    let unpacked = unpack(repo, base, identities, datadir).await;
    if let Err(e) = unpacked {
        // Nothing half-unpacked stays behind.
        let _ = if create {
            std::fs::remove_dir_all(datadir)
        } else {
            empty_dir(datadir)
        };
        return Err(e);
    }
    Ok(())
}

/// Notes what the server log says about the recovery: where it stopped,
/// the last replayed transaction's time, and the new timeline.
fn note_recovery_log(report: &mut PitrReport, text: &str) {
    for line in text.lines() {
        if let Some(i) = line.find("recovery stopping ") {
            report.stopped_at = Some(line[i..].to_string());
        }
        if let Some(i) = line.find("last completed transaction was at log time ") {
            report.last_transaction_at =
                Some(line[i + "last completed transaction was at log time ".len()..].to_string());
        }
        if let Some(i) = line.find("selected new timeline ID: ") {
            report.new_timeline = line[i + "selected new timeline ID: ".len()..]
                .trim()
                .parse()
                .ok();
        }
    }
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
