//! Restoring a command source's backup: the decoded output is piped into
//! the restore command, which runs in a new or empty folder.
//!
//! Success with other data is ruled out on every path: a damaged object
//! stops the command before the end (the pipeline checks sizes and hashes
//! as it streams), and a command that exits before reading the whole
//! backup fails the restore even if its exit status is 0.

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
    let mut watch = Some(reader.try_clone().map_err(|e| failed(spawn_error(e)))?);
    let (mut child, _, _) =
        process::spawn_with_stdin(cmd, &program, std::process::Stdio::from(reader), false)
            .map_err(failed)?;
    let ticker = crate::progress::ProgressTicker::start(
        manifest.source.clone(),
        ARTIFACT.into(),
        "restored",
    );
    let counter = ticker.counter();
    let (into_copy, from_decode) = tokio::io::duplex(1 << 20);
    let bridge = tokio_util::io::SyncIoBridge::new(from_decode);
    // Blocking writes into the pipe; the write end closes when all is in.
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
            // It exited before everything was written: what it left in the
            // pipe it never read. Letting go of the read end then fails a
            // write still waiting for room.
            unread = Some(pipe_holds(watch.take()));
            feed.await
        }
        _ = cancel.cancelled() => {
            child.kill().await;
            return Err(RestoreFailed::Interrupted);
        }
    };
    drop(ticker);
    match decoded {
        // The command stopped reading: judged below, with what it left.
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
    let status = child.wait().await;
    let written = match copied {
        Some(Ok(Ok(n))) => Some(n),
        _ => None,
    };
    if written != Some(artifact.plaintext.size) || unread > 0 {
        let sent = written.unwrap_or_else(|| counter.load(std::sync::atomic::Ordering::Relaxed));
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

/// Bytes still in the pipe (never read by the command), then lets go of
/// lifeboat's read end.
fn pipe_holds(watch: Option<std::os::fd::OwnedFd>) -> u64 {
    watch
        .map(|w| rustix::io::ioctl_fionread(&w).unwrap_or(0))
        .unwrap_or(0)
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
