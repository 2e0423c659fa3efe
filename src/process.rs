//! Child processes (pg_dump, pg_restore, psql): spawning with secrets in the
//! environment only, capturing the tail of stderr for error messages, and
//! killing them when lifeboat gives up or dies.
//!
//! A child must never outlive lifeboat: a `pg_dump` left running after the
//! CronJob's pod process was SIGKILLed holds a snapshot open on the
//! production database, a `mariadb-binlog` keeps streaming plaintext. Every
//! child is therefore started with `PR_SET_PDEATHSIG = SIGKILL`, so the
//! kernel kills it when lifeboat dies, however it dies. The signal follows
//! the *thread* that forked the child, not the process, so all children are
//! forked by one thread that lives as long as the process ([`spawn_child`]).
//! The signal is not inherited by grandchildren: a server that `pg_ctl`
//! starts, or a command `runuser` runs in a child of its own, outlives
//! lifeboat; drills' scratch servers are therefore also swept by owner
//! file at the next drill.

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

impl crate::outcome::Classify for ProcessError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Spawn { .. } | Self::Failed { .. } => Outcome::Failure,
        }
    }
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
    cmd: Command,
    program: &Path,
    stdin: bool,
    stdout: bool,
) -> Result<(Child, Option<ChildStdin>, Option<ChildStdout>), ProcessError> {
    let input = if stdin { Stdio::piped() } else { Stdio::null() };
    spawn_with_stdin(cmd, program, input, stdout)
}

/// [`spawn`] with the child's stdin given (e.g. the read end of a pipe
/// the caller keeps watching).
pub fn spawn_with_stdin(
    mut cmd: Command,
    program: &Path,
    stdin: Stdio,
    stdout: bool,
) -> Result<(Child, Option<ChildStdin>, Option<ChildStdout>), ProcessError> {
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.display().to_string());
    cmd.stdin(stdin)
        .stdout(if stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut inner = spawn_child(&mut cmd).map_err(|source| ProcessError::Spawn {
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

/// A command for the spawner thread, with the runtime the child's pipes
/// and exit belong to, and where to send the spawned child.
struct SpawnRequest {
    cmd: Command,
    runtime: tokio::runtime::Handle,
    reply: std::sync::mpsc::SyncSender<std::io::Result<tokio::process::Child>>,
}

/// The thread that forks every child. It never exits, so a child's
/// parent-death signal fires only when the process dies.
static SPAWNER: std::sync::OnceLock<std::sync::mpsc::Sender<SpawnRequest>> =
    std::sync::OnceLock::new();

fn spawner() -> std::sync::mpsc::Sender<SpawnRequest> {
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("lifeboat-spawner".into())
                .spawn(move || {
                    for mut req in rx {
                        let _runtime = req.runtime.enter();
                        let _ = req.reply.send(req.cmd.spawn());
                    }
                })
                .expect("cannot start the thread that starts child processes");
            tx
        })
        .clone()
}

/// Spawns `cmd` so that the kernel kills the child (SIGKILL) when
/// lifeboat dies, even by SIGKILL or the OOM killer. Must be called inside
/// a Tokio runtime, like `Command::spawn`.
pub fn spawn_child(cmd: &mut Command) -> std::io::Result<tokio::process::Child> {
    die_with_parent(cmd);
    let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    let mut taken = Command::new("");
    std::mem::swap(&mut taken, cmd);
    spawner()
        .send(SpawnRequest {
            cmd: taken,
            runtime,
            reply,
        })
        .map_err(|_| std::io::Error::other("the thread that starts child processes is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the thread that starts child processes is gone"))?
}

/// Asks the kernel to SIGKILL the child when its parent thread (the
/// spawner, which lives as long as the process) dies.
///
/// This is lifeboat's one `unsafe`: `pre_exec` runs between fork and exec,
/// where only async-signal-safe calls are allowed. `prctl` and `getppid`
/// are plain system calls that allocate nothing and take no lock.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure only makes two async-signal-safe system calls and
    // builds an io::Error from errno (no allocation for OS errors).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Lifeboat died between fork and prctl: no signal will come.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
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

    /// Waits until the child has exited, without taking it: [`Child::wait`]
    /// afterwards returns at once with its verdict. Cancel-safe.
    pub async fn exited(&mut self) {
        let _ = self.inner.wait().await;
    }

    /// Kills the child and reaps it.
    pub async fn kill(mut self) {
        let _ = self.inner.kill().await;
    }
}
