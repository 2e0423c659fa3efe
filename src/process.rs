//! Child processes (pg_dump, pg_restore, psql): spawning with secrets in the
//! environment only, capturing the tail of stderr for error messages, and
//! killing them when lifeboat gives up.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

/// Lines of a child's stderr kept for the error message.
const STDERR_TAIL_LINES: usize = 20;

/// Errors of child processes.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {program}: {source}; install it or set bin_dir in the policy")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
}

/// A running child with its stderr being collected.
pub struct Child {
    inner: tokio::process::Child,
    program: String,
    stderr: JoinHandle<(Vec<String>, usize)>,
}

/// What a successful child left on stderr.
#[derive(Debug, Default)]
pub struct Finished {
    /// The last lines.
    pub tail: Vec<String>,
    /// How many lines contained `ERROR:` (psql's per-statement errors).
    pub error_lines: usize,
}

/// Starts `cmd` with stdin/stdout piped as asked and stderr captured. The
/// child is killed if the returned handle is dropped before `wait`.
pub fn spawn(
    mut cmd: Command,
    program: &Path,
    stdin: bool,
    stdout: bool,
) -> Result<(Child, Option<ChildStdin>, Option<ChildStdout>), ProcessError> {
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.display().to_string());
    cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(if stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut inner = cmd.spawn().map_err(|source| ProcessError::Spawn {
        program: program.display().to_string(),
        source,
    })?;
    let child_stdin = inner.stdin.take();
    let child_stdout = inner.stdout.take();
    let err = inner.stderr.take().expect("stderr is piped");
    let log_name = name.clone();
    let stderr = tokio::spawn(async move {
        let mut lines = BufReader::new(err).lines();
        let mut tail = VecDeque::new();
        let mut errors = 0;
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(program = %log_name, "{line}");
            if line.contains("ERROR:") {
                errors += 1;
            }
            if tail.len() == STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        (tail.into(), errors)
    });
    Ok((
        Child {
            inner,
            program: name,
            stderr,
        },
        child_stdin,
        child_stdout,
    ))
}

impl Child {
    /// Waits for the child; a non-zero exit becomes an error carrying the
    /// last lines of its stderr.
    pub async fn wait(mut self) -> Result<Finished, ProcessError> {
        let status = self
            .inner
            .wait()
            .await
            .map_err(|source| ProcessError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let (tail, error_lines) = self.stderr.await.unwrap_or_default();
        if status.success() {
            Ok(Finished { tail, error_lines })
        } else {
            Err(ProcessError::Failed {
                program: self.program,
                status: status.to_string(),
                stderr: if tail.is_empty() {
                    "no output on stderr".into()
                } else {
                    tail.join(" | ")
                },
            })
        }
    }

    /// Kills the child and reaps it.
    pub async fn kill(mut self) {
        let _ = self.inner.kill().await;
    }
}
