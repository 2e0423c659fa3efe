//! A backup of a command source: the command's standard output, streamed
//! through the pipeline into one artifact; committed only if the command
//! exits 0 and wrote something.

use chrono::{DateTime, Utc};

use super::{CommandError, CommandSource, ARTIFACT, ARTIFACT_KIND};
use crate::backup::{BackupError, BackupKind, Run};
use crate::kinds::Failure;
use crate::repository::{Manifest, ManifestKind};

pub(super) async fn backup(
    source: &CommandSource,
    run: &mut Run<'_>,
    kind: BackupKind,
    started_at: DateTime<Utc>,
) -> Result<Manifest, BackupError> {
    let source_name = run.source.name.to_string();
    if kind == BackupKind::Base {
        return Err(BackupError::KindNotSupported {
            kind: "base",
            source_name,
        });
    }
    let program = CommandSource::program(&source.backup);
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&source.backup[1..])
        .envs(&source.env)
        .env("LIFEBOAT_SOURCE", &source_name)
        .env("LIFEBOAT_BACKUP_ID", &run.id);
    if let Some(dir) = &source.working_dir {
        cmd.current_dir(dir);
    }
    tracing::info!(source = %source_name, backup = %run.id, program = %program.display(), "backup started");
    let ticker = run.ticker(ARTIFACT.into());
    let (key, pending, status) = run
        .child_artifact(cmd, &program, ARTIFACT, ticker.counter())
        .await?;
    drop(ticker);
    if let Err(error) = status {
        pending.abort().await;
        return Err(Failure::new(CommandError::Backup { source_name, error }).into());
    }
    if pending.encoded.plaintext.size == 0 {
        pending.abort().await;
        return Err(Failure::new(CommandError::Empty { source_name }).into());
    }
    let enc = pending.commit().await?;
    tracing::info!(source = %source_name, plaintext = %crate::progress::human_bytes(enc.plaintext.size), stored = %crate::progress::human_bytes(enc.stored.size), "command output stored");
    run.record(ARTIFACT.into(), ARTIFACT_KIND, None, key, enc);
    let tool = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(run.manifest(ManifestKind::CommandOutput, started_at, String::new(), tool))
}
