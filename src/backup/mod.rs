//! Taking a backup of one source: source → pipeline → repository, with the
//! manifest written last.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::kinds::postgres::source::PgError;
use crate::pipeline::{self, EncodeSettings, PipelineError};
use crate::policy::{Policy, PolicyError, Source};
use crate::process::{self, ProcessError};
use crate::repository::{self, Artifact, Manifest, Repository, RepositoryError};
use crate::storage::StorageError;

/// Errors of a backup run.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Mysql(#[from] crate::kinds::mysql::source::MyError),
    #[error(transparent)]
    Kubernetes(#[from] crate::kube::KubeError),
    #[error(transparent)]
    Kind(#[from] crate::kinds::Failure),
    #[error(transparent)]
    Locked(#[from] crate::lock::LockError),
    #[error("writing the export's tar stream failed: {0}")]
    Tar(std::io::Error),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("stopped by a shutdown request before it finished")]
    Interrupted,
    #[error("the backup of source '{source_name}' made no progress for {} (no bytes read from the source or written to the repository), so it was stopped and its lock let go; nothing half-written is listed. Something is stuck: a dead database connection, a dump waiting for a table lock, an S3 endpoint that stopped answering. Fix that and run again; if a step of this source legitimately takes longer without moving data, raise repository.stall_timeout", humantime::format_duration(std::time::Duration::from_secs(.idle.as_secs())))]
    Stalled {
        source_name: String,
        idle: std::time::Duration,
    },
    #[error("{host}:{port} has tablespaces outside the data directory ({names}); lifeboat's base backups do not support them yet: use dump backups for this server, or move the objects to pg_default")]
    Tablespaces {
        host: String,
        port: u16,
        names: String,
    },
    #[error("archive_mode is off on {host}:{port}: a base backup cannot be restored without the WAL written during and after it. Set archive_mode = on and archive_command = 'lifeboat wal-push --policy POLICY %p' in postgresql.conf and restart the server")]
    NoArchiving { host: String, port: u16 },
    #[error("pg_basebackup's output from {host}:{port} has no {member}; {hint}")]
    BaseMember {
        host: String,
        port: u16,
        member: &'static str,
        hint: &'static str,
    },
    #[error("{kind} backups are for PostgreSQL sources; source '{source_name}' is not one")]
    KindNotSupported {
        kind: &'static str,
        source_name: String,
    },
    #[error("pg_dump and the row count inventory of database '{database}' on {host}:{port} both failed; inventory: {inventory}; pg_dump: {dump}")]
    DumpAndInventory {
        database: String,
        host: String,
        port: u16,
        inventory: PgError,
        dump: ProcessError,
    },
    #[error("{what} of database '{database}' on {host}:{port} failed: {source}")]
    Dump {
        what: &'static str,
        database: String,
        host: String,
        port: u16,
        source: ProcessError,
    },
}

impl crate::outcome::Classify for BackupError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Policy(e) => e.outcome(),
            Self::Postgres(e) => e.outcome(),
            Self::Mysql(e) => e.outcome(),
            Self::Kubernetes(e) => e.outcome(),
            Self::Kind(e) => e.outcome(),
            Self::Locked(e) => e.outcome(),
            Self::Pipeline(e) => e.outcome(),
            Self::Storage(e) => e.outcome(),
            Self::Repository(e) => e.outcome(),
            Self::Process(e) => e.outcome(),
            Self::Tar(_)
            | Self::Interrupted
            | Self::Stalled { .. }
            | Self::Tablespaces { .. }
            | Self::NoArchiving { .. }
            | Self::BaseMember { .. }
            | Self::KindNotSupported { .. }
            | Self::DumpAndInventory { .. }
            | Self::Dump { .. } => Outcome::Failure,
        }
    }
}

pub use crate::layout::key_safe;
pub use crate::policy::BackupKind;

/// One backup in progress: what is needed to write its artifacts, and what
/// was written so far (deleted again if the backup fails).
pub struct Run<'a> {
    policy: &'a Policy,
    pub(crate) source: &'a Source,
    pub(crate) repo: &'a Repository,
    pub(crate) settings: EncodeSettings,
    pub(crate) id: String,
    artifacts: Vec<Artifact>,
    recipients: Vec<String>,
    /// The lock's: beaten while bytes move, so a stuck run loses its lease.
    heartbeat: crate::lock::Heartbeat,
}

impl Run<'_> {
    /// Logs the progress of reading one artifact, and beats the lock's
    /// heartbeat while bytes move.
    pub(crate) fn ticker(&self, artifact: String) -> crate::progress::ProgressTicker {
        crate::progress::ProgressTicker::start_beating(
            self.source.name.to_string(),
            artifact,
            "read",
            Some(self.heartbeat.clone()),
        )
    }

    pub(crate) fn key(&self, file: &str) -> String {
        Repository::artifact_key(
            self.policy.name.as_str(),
            self.source.name.as_str(),
            &self.id,
            &format!(
                "{file}.{}.age",
                self.policy.compression.algorithm.extension()
            ),
        )
    }

    pub(crate) fn record(
        &mut self,
        name: String,
        kind: &str,
        database: Option<&str>,
        key: String,
        enc: pipeline::Encoded,
    ) {
        self.artifacts.push(Artifact {
            name,
            kind: kind.to_string(),
            database: database.map(str::to_string),
            key,
            stored: enc.stored,
            plaintext: enc.plaintext,
            compression: self.policy.compression.algorithm,
            compression_level: self.policy.compression.effective_level(),
            encryption: "age-x25519".into(),
            recipients: self.recipients.clone(),
        });
    }

    /// The manifest of this run's artifacts, for the kind-specific fields
    /// to be filled in by the caller.
    pub(crate) fn manifest(
        &mut self,
        kind: repository::ManifestKind,
        started_at: chrono::DateTime<Utc>,
        server_version: String,
        dump_tool_version: String,
    ) -> Manifest {
        Manifest {
            format: repository::FORMAT_VERSION,
            id: self.id.clone(),
            policy: self.policy.name.to_string(),
            source: self.source.name.to_string(),
            kind,
            started_at,
            finished_at: Utc::now(),
            server_version,
            tool_version: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
            dump_tool_version,
            artifacts: std::mem::take(&mut self.artifacts),
            physical: None,
            binlog: None,
            kubernetes: None,
        }
    }

    /// Stores a small artifact held in memory (an inventory, a manifest)
    /// and records it.
    pub(crate) async fn store_small(
        &mut self,
        file: &str,
        name: String,
        kind: &str,
        database: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(), BackupError> {
        let key = self.key(file);
        let writer = self.repo.store().create(&key).await?;
        let pending = pipeline::encode(
            std::io::Cursor::new(body),
            &self.settings,
            &key,
            writer,
            None,
        )
        .await?;
        let enc = pending.commit().await?;
        self.record(name, kind, database, key, enc);
        Ok(())
    }

    /// Streams a child's stdout into a new artifact, not yet visible, and
    /// waits for the child. The caller commits the artifact only if the
    /// child's exit status (returned alongside) is a success: a dump tool
    /// can close its output cleanly and still fail.
    pub(crate) async fn child_artifact(
        &self,
        cmd: tokio::process::Command,
        program: &std::path::Path,
        file: &str,
        progress: Arc<AtomicU64>,
    ) -> Result<(String, pipeline::Pending, Result<(), ProcessError>), BackupError> {
        let key = self.key(file);
        let writer = self.repo.store().create(&key).await?;
        let (child, _, stdout) = match process::spawn(cmd, program, false, true) {
            Ok(c) => c,
            Err(e) => {
                writer.abort().await;
                return Err(e.into());
            }
        };
        let stdout = stdout.expect("stdout is piped");
        match pipeline::encode(stdout, &self.settings, &key, writer, Some(progress)).await {
            Ok(pending) => Ok((key, pending, child.wait().await.map(|_| ()))),
            Err(e) => {
                child.kill().await;
                Err(e.into())
            }
        }
    }
}

/// A finished backup, and the prune that followed it.
#[derive(Debug)]
pub struct Finished {
    pub manifest: Manifest,
    /// The policy's retention applied after the backup (`None` without a
    /// retention section). Its failure does not fail the backup.
    pub prune: Option<Result<(crate::prune::Plan, crate::prune::Done), crate::prune::PruneError>>,
}

/// Backs up one source and returns its manifest, then applies the
/// policy's retention to the source. On failure, artifacts already
/// written are deleted and no manifest is written, so nothing is listed.
/// Holds the source's lock (see [`crate::lock`]) meanwhile: a second
/// process backing up or pruning the same source is refused.
///
/// When `cancel` fires (SIGTERM, a daemon's shutdown deadline) the step
/// in progress is dropped (its upload aborted, its child killed), what was
/// written is deleted and the backup fails with [`BackupError::Interrupted`].
pub async fn backup_source(
    policy: &Policy,
    source: &Source,
    repo: &Repository,
    kind: BackupKind,
    cancel: &CancellationToken,
) -> Result<Finished, BackupError> {
    let lock =
        crate::lock::acquire_source(Arc::clone(repo.store()), policy, source, "backup").await?;
    let result = backup_source_locked(policy, source, repo, kind, &lock, cancel).await;
    let result = match result {
        Ok(manifest) => {
            let prune = match &policy.retention {
                Some(rules) if !cancel.is_cancelled() => {
                    let opts = crate::prune::Options {
                        dry_run: false,
                        grace: crate::prune::DEFAULT_GRACE,
                        now: Utc::now(),
                    };
                    let r = crate::prune::prune_locked(
                        repo,
                        policy.name.as_str(),
                        source.name.as_str(),
                        rules,
                        opts,
                        cancel,
                    )
                    .await;
                    if let Err(e) = &r {
                        tracing::warn!(source = %source.name, error = %e, "retention after the backup failed; the backup itself is complete");
                    }
                    Some(r)
                }
                _ => None,
            };
            Ok(Finished { manifest, prune })
        }
        Err(e) => Err(e),
    };
    lock.release().await;
    result
}

async fn backup_source_locked(
    policy: &Policy,
    source: &Source,
    repo: &Repository,
    kind: BackupKind,
    lock: &crate::lock::Lock,
    cancel: &CancellationToken,
) -> Result<Manifest, BackupError> {
    let stall_after = policy.repository.stall_timeout.0;
    let heartbeat = lock.follow_progress(stall_after);
    let recipients = policy.encryption.all_recipients()?;
    let settings = EncodeSettings {
        compression: policy.compression,
        recipients: Arc::new(recipients.clone()),
        // pg_basebackup only streams files: all cores compress. A dump's
        // tool keeps one core busy.
        workers: policy.compression.backup_threads(match kind {
            BackupKind::Base => 0,
            BackupKind::Dump => 1,
        }),
    };
    let started_at = Utc::now();
    let mut run = Run {
        policy,
        source,
        repo,
        settings,
        id: repository::new_backup_id(started_at),
        artifacts: Vec::new(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        heartbeat,
    };
    // On SIGTERM the current step is dropped (its upload aborted, its child
    // killed) and the error path below deletes what was already written.
    let result = {
        let work = async { source.kind().imp().backup(&mut run, kind, started_at).await };
        tokio::select! {
            r = work => r,
            _ = cancel.cancelled() => Err(BackupError::Interrupted),
            idle = lock.stalled() => Err(BackupError::Stalled {
                source_name: source.name.to_string(),
                idle,
            }),
        }
    };
    // The manifest, the cleanup and retention are not watched for
    // progress: the lease must hold through them.
    lock.stop_following();
    let written = match &result {
        Ok(manifest) => manifest.artifacts.clone(),
        Err(_) => std::mem::take(&mut run.artifacts),
    };
    // The commit point: only once the manifest is stored does the backup exist.
    let result = match result {
        Ok(manifest) => match repo.write_manifest(&manifest).await {
            Ok(()) => Ok(manifest),
            Err(e) => {
                // The store may have kept the manifest although the call
                // failed (a timeout after the write): then the backup is
                // listed and its artifacts must stay.
                let key =
                    Repository::manifest_key(&manifest.policy, &manifest.source, &manifest.id);
                if matches!(repo.store().head(&key).await, Ok(Some(_))) {
                    tracing::warn!(backup = %manifest.id, error = %e, "writing the manifest reported an error, but it is stored; the backup is complete");
                    return Ok(manifest);
                }
                Err(e.into())
            }
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(manifest) => Ok(manifest),
        Err(e) if endpoint_stuck(&e) => {
            // Every cleanup call would wait out its own deadlines on the
            // same stuck endpoint (minutes each). Nothing is listed without
            // a manifest; `lifeboat prune` removes what is left.
            tracing::warn!(backup = %run.id, "the S3 endpoint is not answering: the failed backup's objects are left for `lifeboat prune` to remove (they are not listed)");
            Err(e)
        }
        Err(e) => {
            // Everything under this backup's own prefix goes, including an
            // object committed just before an interruption.
            let prefix =
                Repository::artifact_key(policy.name.as_str(), source.name.as_str(), &run.id, "");
            let mut keys: Vec<String> = written.iter().map(|a| a.key.clone()).collect();
            match repo.store().list(&prefix).await {
                Ok(objects) => keys.extend(objects.into_iter().map(|o| o.key)),
                Err(list) => {
                    tracing::warn!(prefix = %prefix, error = %list, "cannot list the failed backup's objects")
                }
            }
            keys.sort();
            keys.dedup();
            for key in &keys {
                if let Err(del) = repo.store().delete(key).await {
                    tracing::warn!(key = %key, error = %del, "could not delete an artifact of the failed backup; it is not listed, and `lifeboat prune` removes it after its grace period");
                }
            }
            Err(e)
        }
    }
}

/// The backup failed because the repository's endpoint stopped answering
/// (every attempt timed out, or it cannot be reached).
fn endpoint_stuck(e: &BackupError) -> bool {
    let stuck = |s: &StorageError| {
        matches!(
            s,
            StorageError::TimedOut { .. } | StorageError::Unreachable { .. }
        )
    };
    match e {
        BackupError::Storage(s) | BackupError::Pipeline(PipelineError::Storage(s)) => stuck(s),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_endpoint_that_stopped_answering_skips_the_cleanup() {
        let timed_out = || StorageError::TimedOut {
            endpoint: "http://s3".into(),
            operation: "PutObject",
            target: "object k".into(),
            attempts: 5,
            detail: "no answer within 60s".into(),
        };
        let unreachable = StorageError::Unreachable {
            endpoint: "http://s3".into(),
            detail: "connection refused".into(),
        };
        assert!(endpoint_stuck(&BackupError::Storage(timed_out())));
        assert!(endpoint_stuck(&BackupError::Pipeline(
            PipelineError::Storage(timed_out())
        )));
        assert!(endpoint_stuck(&BackupError::Storage(unreachable)));
        // Anything else: the cleanup runs (and deletes what was written).
        let not_found = StorageError::NotFound {
            store: "s3://b".into(),
            key: "k".into(),
        };
        assert!(!endpoint_stuck(&BackupError::Storage(not_found)));
        assert!(!endpoint_stuck(&BackupError::Interrupted));
        assert!(!endpoint_stuck(&BackupError::Kind(
            crate::kinds::Failure::new(crate::kinds::command::CommandError::Empty {
                source_name: "files".into()
            })
        )));
    }
}
