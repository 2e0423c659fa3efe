//! The replay: each planned binlog file decoded into `mariadb-binlog`
//! and the SQL it writes streamed into one client session on the target.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::super::{find_client, MyRestoreError};
use super::{MyTarget, ReplayError, ReplayPlan};
use crate::keys::Identities;
use crate::kinds::mysql::source::{self as my, MyConn};
use crate::pipeline::{self, PipelineError};
use crate::process::{self, ProcessError};
use crate::repository::Repository;

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
        let cmd = binlog_command(&binlog_tool, plan, i == 0, i + 1 == n);
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

/// The `mariadb-binlog` command that decodes one planned file read from
/// stdin: from the dump's position in the `first` file, stopping at the
/// target (a position only in the `last` file).
fn binlog_command(
    binlog_tool: &std::path::Path,
    plan: &ReplayPlan,
    first: bool,
    last: bool,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binlog_tool);
    // --stop-datetime is read in the tool's local time zone.
    cmd.env("TZ", "UTC").env("LC_ALL", "C");
    if first {
        cmd.arg(format!("--start-position={}", plan.from.position));
    }
    match &plan.target {
        MyTarget::Time(t) => {
            cmd.arg(format!("--stop-datetime={}", t.format("%Y-%m-%d %H:%M:%S")));
        }
        // u64::MAX: to the end of the file.
        MyTarget::Position { position, .. } if last && *position != u64::MAX => {
            cmd.arg(format!("--stop-position={position}"));
        }
        MyTarget::Gtid(g) => {
            cmd.arg(format!("--stop-position={g}"));
        }
        _ => {}
    }
    cmd.arg("-");
    cmd
}

/// Copies the decoded SQL of one binlog file into the client, noting the
/// newest event time the tool writes (see [`event_timestamp`]).
pub(super) async fn forward_sql<R, W>(
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
pub(super) fn event_timestamp(line: &[u8]) -> Option<i64> {
    crate::kinds::mysql::binlog::event_header(line).map(|h| h.time)
}
