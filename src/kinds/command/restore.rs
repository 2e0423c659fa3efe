//! Restoring a command source's backup: the decoded output is piped into
//! the restore command, which runs in a new or empty folder.
//!
//! Success with other data is ruled out on every path: a damaged object
//! fails the restore (age authenticates every chunk as it streams, and the
//! whole size and hash are checked at the end, by which time the command
//! may have finished: its folder is then not the backup, and the error
//! says so), and a command that exits before reading the whole backup
//! fails it even if its exit status is 0.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{CommandError, CommandSource, ARTIFACT};
use crate::keys::Identities;
use crate::pipeline::{self, PipelineError};
use crate::process::{self, ProcessError};
use crate::repository::{Manifest, ManifestKind, Repository};

/// A finished restore.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    pub backup: String,
    pub dir: String,
    /// Plaintext bytes the restore command read.
    pub bytes: u64,
    pub seconds: f64,
}

/// Why a restore did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RestoreFailed {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("stopped by a shutdown request before it finished")]
    Interrupted,
}

impl crate::outcome::Classify for RestoreFailed {
    fn outcome(&self) -> crate::outcome::Outcome {
        match self {
            Self::Command(e) => e.outcome(),
            Self::Pipeline(e) => e.outcome(),
            Self::Interrupted => crate::outcome::Outcome::Failure,
        }
    }
}

/// Makes sure `dir` is a new or empty folder.
fn prepare(dir: &Path) -> Result<(), CommandError> {
    let folder = |error| CommandError::Folder {
        dir: dir.display().to_string(),
        error,
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(CommandError::NotEmpty {
                    dir: dir.display().to_string(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(folder)
        }
        Err(e) => Err(folder(e)),
    }
}

/// The source's restore command, to run in `dir`, and its program.
fn restore_command(
    source: &CommandSource,
    manifest: &Manifest,
    dir: &Path,
) -> (tokio::process::Command, std::path::PathBuf) {
    let program = CommandSource::program(&source.restore);
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&source.restore[1..])
        .current_dir(dir)
        .envs(&source.env)
        .env("LIFEBOAT_SOURCE", &manifest.source)
        .env("LIFEBOAT_BACKUP_ID", &manifest.id)
        .env("LIFEBOAT_RESTORE_DIR", dir);
    (cmd, program)
}

/// Pipes backup `manifest` of `source` into its restore command, run in
/// `dir` (created if missing, refused if not empty).
///
/// The command reads from a pipe whose read end lifeboat keeps a copy of:
/// once the command has exited, bytes still in the pipe are bytes it never
/// read, so a command that ignores its input fails the restore even when
/// the whole backup fits in the pipe's buffer.
pub async fn restore_into(
    repo: &Repository,
    manifest: &Manifest,
    identities: Arc<Identities>,
    source: &CommandSource,
    dir: &Path,
    cancel: &CancellationToken,
) -> Result<Restored, RestoreFailed> {
    let started = Instant::now();
    let artifact = manifest
        .artifacts
        .iter()
        .find(|a| a.name == ARTIFACT)
        .ok_or_else(|| CommandError::NoOutput {
            backup: manifest.id.clone(),
        })?;
    let dir = &std::path::absolute(dir).map_err(|error| CommandError::Folder {
        dir: dir.display().to_string(),
        error,
    })?;
    prepare(dir)?;
    let dir_text = dir.display().to_string();
    let failed = |error| CommandError::Restore {
        backup: manifest.id.clone(),
        dir: dir_text.clone(),
        error,
    };
    let (cmd, program) = restore_command(source, manifest, dir);
    let spawn_error = |source| ProcessError::Spawn {
        program: program.display().to_string(),
        source,
    };
    // Close-on-exec: no other child may inherit an end of this pipe.
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| failed(spawn_error(e.into())))?;
    let writer = std::fs::File::from(writer);
    let watch = reader.try_clone().map_err(|e| failed(spawn_error(e)))?;
    let (child, _, _) =
        process::spawn_with_stdin(cmd, &program, std::process::Stdio::from(reader), false)
            .map_err(failed)?;
    let piped = pipe_backup(
        repo,
        manifest,
        artifact,
        identities,
        (child, writer, watch),
        cancel,
    )
    .await
    .map_err(|e| match e {
        RestoreFailed::Pipeline(error) => CommandError::Incomplete {
            backup: manifest.id.clone(),
            dir: dir_text.clone(),
            error: Box::new(error),
        }
        .into(),
        other => other,
    })?;
    let (child, written, unread) = (piped.child, piped.written, piped.unread);
    // It has exited; its stderr may still be held open by a child of its own.
    let status = tokio::select! {
        r = child.wait() => r,
        _ = cancel.cancelled() => return Err(RestoreFailed::Interrupted),
    };
    if written != Some(artifact.plaintext.size) || unread > 0 {
        let sent = written.unwrap_or(piped.sent);
        return Err(match status {
            Err(e) => failed(e).into(),
            Ok(_) => CommandError::StoppedReading {
                backup: manifest.id.clone(),
                dir: dir_text,
                read: sent.saturating_sub(unread),
                size: artifact.plaintext.size,
            }
            .into(),
        });
    }
    status.map_err(failed)?;
    Ok(Restored {
        backup: manifest.id.clone(),
        dir: dir_text,
        bytes: artifact.plaintext.size,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What piping a backup into the restore command left.
struct Piped {
    child: process::Child,
    /// Bytes written into the pipe, if all writing ended without an error.
    written: Option<u64>,
    /// Decoded bytes handed on (what `written` would be).
    sent: u64,
    /// Bytes left in the pipe once the command exited: never read.
    unread: u64,
}

/// Decodes the artifact into the pipe (a blocking thread writes, closing
/// the write end when all is in) and waits for the command to exit. A
/// damaged object kills the command before the rest reaches it.
async fn pipe_backup(
    repo: &Repository,
    manifest: &Manifest,
    artifact: &crate::repository::Artifact,
    identities: Arc<Identities>,
    (mut child, writer, watch): (process::Child, std::fs::File, std::os::fd::OwnedFd),
    cancel: &CancellationToken,
) -> Result<Piped, RestoreFailed> {
    let mut watch = Some(watch);
    let ticker = crate::progress::ProgressTicker::start(
        manifest.source.clone(),
        ARTIFACT.into(),
        "restored",
    );
    let counter = ticker.counter();
    let (into_copy, from_decode) = tokio::io::duplex(1 << 20);
    let bridge = tokio_util::io::SyncIoBridge::new(from_decode);
    let copy = tokio::task::spawn_blocking(move || {
        let (mut from, mut to) = (bridge, writer);
        std::io::copy(&mut from, &mut to)
    });
    let expected = artifact.expected();
    let decode = pipeline::decode(
        repo.store().as_ref(),
        &expected,
        identities,
        into_copy,
        "the restore command",
        Some(Arc::clone(&counter)),
    );
    let feed = async {
        let decoded = decode.await;
        if decoded.is_err() {
            // Stop the command before the rest can reach it.
            return (decoded, None);
        }
        (decoded, Some(copy.await))
    };
    tokio::pin!(feed);
    let mut unread = None;
    let (decoded, copied) = tokio::select! {
        fed = &mut feed => fed,
        _ = child.exited() => {
            // It exited before everything was written. Whatever is in the
            // pipe now, and whatever is still written, it never read:
            // lifeboat reads it off and counts it, which also lets the
            // writing finish.
            let drained = drain(watch.take());
            let both = async { tokio::join!(feed, drained) };
            tokio::select! {
                (fed, n) = both => {
                    unread = Some(n);
                    fed
                }
                _ = cancel.cancelled() => {
                    child.kill().await;
                    return Err(RestoreFailed::Interrupted);
                }
            }
        }
        _ = cancel.cancelled() => {
            child.kill().await;
            return Err(RestoreFailed::Interrupted);
        }
    };
    drop(ticker);
    match decoded {
        // The command stopped reading: judged by the caller, with what it left.
        Ok(()) | Err(PipelineError::Output { .. }) => {}
        Err(e) => {
            // A damaged object: the command must not finish with part of it.
            child.kill().await;
            return Err(e.into());
        }
    }
    let unread = match unread {
        Some(n) => n,
        None => {
            tokio::select! {
                _ = child.exited() => {}
                _ = cancel.cancelled() => {
                    child.kill().await;
                    return Err(RestoreFailed::Interrupted);
                }
            }
            pipe_holds(watch.take())
        }
    };
    Ok(Piped {
        child,
        written: match copied {
            Some(Ok(Ok(n))) => Some(n),
            _ => None,
        },
        sent: counter.load(std::sync::atomic::Ordering::Relaxed),
        unread,
    })
}

/// Reads lifeboat's end of the pipe to its end (the write end closes when
/// all is written), counting the bytes: the command, gone, read none of
/// them. A read error counts as everything unread.
async fn drain(watch: Option<std::os::fd::OwnedFd>) -> u64 {
    let Some(watch) = watch else { return 0 };
    let read = tokio::task::spawn_blocking(move || {
        std::io::copy(&mut std::fs::File::from(watch), &mut std::io::sink())
    })
    .await;
    match read {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read what the restore command left in its input; failing the restore");
            u64::MAX
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading what the restore command left in its input failed; failing the restore");
            u64::MAX
        }
    }
}

/// Bytes still in the pipe (never read by the command), then lets go of
/// lifeboat's read end. If the kernel cannot say, every byte counts as
/// unread: the restore fails rather than guess.
fn pipe_holds(watch: Option<std::os::fd::OwnedFd>) -> u64 {
    match watch.map(|w| rustix::io::ioctl_fionread(&w)) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot tell whether the restore command read all of its input (FIONREAD failed); failing the restore");
            u64::MAX
        }
    }
}

/// `lifeboat restore` of a command source: `--to-dir DIR`.
pub(super) async fn cli(
    source: &CommandSource,
    args: crate::cli::restore::Args,
    policy: &crate::policy::Policy,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    use crate::cli::UsageError;
    let foreign = args.flags_given_besides(&["--to-dir"]);
    if let Some(flag) = foreign.first() {
        return Err(UsageError(format!(
            "{flag} does not apply to source '{}', a command source: its backup is restored by piping it into its restore command in a new folder (--to-dir DIR)",
            args.source
        ))
        .into());
    }
    let Some(dir) = args.to_dir.clone() else {
        return Err(UsageError(format!(
            "say where to restore source '{}': --to-dir DIR (a new or empty folder; the restore command runs there)",
            args.source
        ))
        .into());
    };
    let repo = crate::cli::open(policy, false).await?;
    let manifest = repo
        .find_backup_of_kind(
            policy.name.as_str(),
            &args.source,
            &args.backup,
            Some(ManifestKind::CommandOutput),
        )
        .await?;
    if args.dry_run {
        let plan = serde_json::json!({
            "dry_run": true,
            "backup": manifest.id,
            "source": manifest.source,
            "to_dir": dir,
            "restore_command": source.restore.first(),
            "bytes": manifest.artifacts.iter().map(|a| a.plaintext.size).sum::<u64>(),
        });
        if args.json {
            crate::cli::print_json(&plan);
        } else {
            println!("Restore plan");
            println!("  backup     {} of source {}", manifest.id, manifest.source);
            println!(
                "  into       {} (new or empty), by {}",
                dir.display(),
                source.restore.join(" ")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let identities = crate::cli::identities(&args.identity, "restore")?;
    let restored = restore_into(&repo, &manifest, identities, source, &dir, cancel)
        .await
        .map_err(crate::kinds::Failure::new)?;
    if args.json {
        crate::cli::print_json(&restored);
    } else {
        println!(
            "Restored backup {} into {} ({}, {:.1} s); the restore command read all of it and exited 0.",
            restored.backup,
            restored.dir,
            crate::progress::human_bytes(restored.bytes),
            restored.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_goes_into_a_new_or_empty_folder_only() {
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("a/b");
        prepare(&new).unwrap();
        assert!(new.is_dir());
        prepare(&new).unwrap();
        std::fs::write(new.join("left"), b"x").unwrap();
        assert!(matches!(prepare(&new), Err(CommandError::NotEmpty { .. })));
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(prepare(&file), Err(CommandError::Folder { .. })));
    }
}
