//! Running recovery: the restored server started with `pg_ctl` and
//! watched until recovery has ended and it promoted.

use std::path::Path;
use std::time::Duration;

use super::PitrError;
use crate::kinds::postgres::source::PgTools;
use crate::process::{self, ProcessError};

/// Starts the server and waits until recovery has ended and it promoted.
pub(super) async fn run_recovery(
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
