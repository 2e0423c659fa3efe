//! Taking a backup of one source: source → pipeline → repository, with the
//! manifest written last.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use chrono::Utc;

use crate::pipeline::{self, EncodeSettings, PipelineError};
use crate::policy::{Policy, PolicyError, Source, SourceKind};
use crate::process::{self, ProcessError};
use crate::repository::{self, Artifact, Manifest, Repository, RepositoryError};
use crate::source::postgres::{self, PgConn, PgError, PgTools};
use crate::storage::StorageError;

/// Errors of a backup run.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Mysql(#[from] crate::source::mysql::MyError),
    #[error(transparent)]
    Kubernetes(#[from] crate::source::kubernetes::KubeError),
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
struct Run<'a> {
    policy: &'a Policy,
    source: &'a Source,
    repo: &'a Repository,
    settings: EncodeSettings,
    id: String,
    artifacts: Vec<Artifact>,
    recipients: Vec<String>,
    /// The lock's: beaten while bytes move, so a stuck run loses its lease.
    heartbeat: crate::lock::Heartbeat,
}

impl Run<'_> {
    /// Logs the progress of reading one artifact, and beats the lock's
    /// heartbeat while bytes move.
    fn ticker(&self, artifact: String) -> crate::progress::ProgressTicker {
        crate::progress::ProgressTicker::start_beating(
            self.source.name.to_string(),
            artifact,
            "read",
            Some(self.heartbeat.clone()),
        )
    }

    fn key(&self, file: &str) -> String {
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

    fn record(
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
    fn manifest(
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
    async fn store_small(
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
    async fn child_artifact(
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
pub async fn backup_source(
    policy: &Policy,
    source: &Source,
    repo: &Repository,
    kind: BackupKind,
) -> Result<Finished, BackupError> {
    let lock = crate::lock::acquire(
        Arc::clone(repo.store()),
        policy.name.as_str(),
        source.name.as_str(),
        "backup",
        policy.repository.lock_lease.0,
        crate::lock::DEFAULT_SETTLE,
    )
    .await?;
    let result = backup_source_locked(policy, source, repo, kind, &lock).await;
    let result = match result {
        Ok(manifest) => {
            let prune = match &policy.retention {
                Some(rules) if !crate::shutdown::is_requested() => {
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
) -> Result<Manifest, BackupError> {
    let stall_after = policy.repository.stall_timeout.0;
    let heartbeat = lock.follow_progress(stall_after);
    let recipients = policy.encryption.all_recipients()?;
    let settings = EncodeSettings {
        compression: policy.compression,
        recipients: Arc::new(recipients.clone()),
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
        let work = async {
            match (source.kind(), kind) {
                (SourceKind::Postgres(pg), BackupKind::Dump) => {
                    backup_postgres(&mut run, pg, started_at).await
                }
                (SourceKind::Postgres(pg), BackupKind::Base) => {
                    backup_postgres_base(&mut run, pg, started_at).await
                }
                (SourceKind::Mysql(my), BackupKind::Dump) => {
                    backup_mysql(&mut run, my, started_at).await
                }
                (SourceKind::Kubernetes(k), BackupKind::Dump) => {
                    backup_kubernetes(&mut run, k, started_at).await
                }
                (SourceKind::Mysql(_) | SourceKind::Kubernetes(_), BackupKind::Base) => {
                    Err(BackupError::KindNotSupported {
                        kind: "base",
                        source_name: source.name.to_string(),
                    })
                }
            }
        };
        tokio::select! {
            r = work => r,
            _ = crate::shutdown::requested() => Err(BackupError::Interrupted),
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

async fn backup_postgres(
    run: &mut Run<'_>,
    pg: &crate::policy::PostgresSource,
    started_at: chrono::DateTime<Utc>,
) -> Result<Manifest, BackupError> {
    let conn = PgConn::from_source(pg)?;
    let admin = conn.connect("postgres").await?;
    let server = postgres::server_info(&conn, &admin).await?;
    let tools = PgTools::find(pg.bin_dir.as_deref(), "pg_dump", server.major).await?;
    let databases = postgres::databases(&conn, &admin, &pg.databases).await?;
    // Only a superuser may read role passwords (pg_authid); other roles
    // (least-privilege backup users, managed services) dump roles without them.
    let superuser: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| conn.query_error("postgres", "check for superuser", e))?
        .get(0);
    drop(admin);
    let source_name = run.source.name.to_string();
    tracing::info!(source = %source_name, backup = %run.id, server = %server.version, tool = %tools.version, databases = databases.len(), "backup started");

    let dump_err = |what: &'static str, database: &str, source: ProcessError| BackupError::Dump {
        what,
        database: database.to_string(),
        host: conn.host.clone(),
        port: conn.port,
        source,
    };

    if pg.globals {
        let program = tools.tool("pg_dumpall");
        let mut cmd = conn.command(&program, "postgres");
        cmd.args(["--globals-only", "--no-password"]);
        if !superuser {
            tracing::warn!(source = %source_name, user = %conn.user, "not a superuser: roles are dumped without their passwords (pg_dumpall --no-role-passwords)");
            cmd.arg("--no-role-passwords");
        }
        let counter = Arc::new(AtomicU64::new(0));
        let (key, pending, status) = run
            .child_artifact(cmd, &program, "globals.sql", counter)
            .await?;
        match status {
            Ok(()) => {
                let enc = pending.commit().await?;
                run.record("globals".into(), "pg-globals-sql", None, key, enc);
            }
            Err(e) => {
                pending.abort().await;
                return Err(dump_err("pg_dumpall --globals-only", "(globals)", e));
            }
        }
    }

    for db in &databases {
        // The snapshot transaction stays open until pg_dump has finished, so
        // the inventory counted here is exactly what the dump contains.
        let snap_client = conn.connect(db).await?;
        let snapshot = postgres::export_snapshot(&conn, &snap_client, db).await?;
        let program = tools.tool("pg_dump");
        let mut cmd = conn.command(&program, db);
        cmd.args([
            "--format=custom",
            "--compress=0",
            "--no-password",
            &format!("--snapshot={snapshot}"),
        ]);
        let safe = key_safe(db);
        let ticker = run.ticker(format!("db/{db}"));
        let counter = ticker.counter();
        let file = format!("db-{safe}.pgdump");
        let dump = run.child_artifact(cmd, &program, &file, counter);
        let inventory = postgres::take_inventory(&conn, &snap_client, db, Some(snapshot.clone()));
        let (dump, inventory) = tokio::join!(dump, inventory);
        let (key, pending, status) = dump?;
        let inventory = match (status, inventory) {
            (Ok(()), Ok(inv)) => inv,
            (Ok(()), Err(e)) => {
                pending.abort().await;
                return Err(e.into());
            }
            (Err(e), Ok(_)) => {
                pending.abort().await;
                return Err(dump_err("pg_dump", db, e));
            }
            // Both: the inventory's error is often the cause (it aborts the
            // snapshot's transaction), so both are reported.
            (Err(dump), Err(inventory)) => {
                pending.abort().await;
                return Err(BackupError::DumpAndInventory {
                    database: db.clone(),
                    host: conn.host.clone(),
                    port: conn.port,
                    inventory,
                    dump,
                });
            }
        };
        let enc = pending.commit().await?;
        tracing::info!(source = %source_name, database = %db, plaintext = %crate::progress::human_bytes(enc.plaintext.size), stored = %crate::progress::human_bytes(enc.stored.size), tables = inventory.tables.len(), "database dumped");
        run.record(format!("db/{db}"), "pg-dump-custom", Some(db), key, enc);
        let _ = snap_client.batch_execute("COMMIT").await;

        let body = serde_json::to_vec_pretty(&inventory).expect("inventory serializes");
        run.store_small(
            &format!("inventory-{safe}.json"),
            format!("inventory/{db}"),
            "inventory-json",
            Some(db),
            body,
        )
        .await?;
    }

    Ok(run.manifest(
        repository::ManifestKind::PostgresDump,
        started_at,
        server.version,
        tools.version,
    ))
}

/// A physical base backup: `pg_basebackup` as one tar on its stdout,
/// without WAL (the archive has it), streamed into the pipeline while its
/// `backup_label` and `backup_manifest` are read on the way through.
async fn backup_postgres_base(
    run: &mut Run<'_>,
    pg: &crate::policy::PostgresSource,
    started_at: chrono::DateTime<Utc>,
) -> Result<Manifest, BackupError> {
    use crate::wal;
    let conn = PgConn::from_source(pg)?;
    let admin = conn.connect("postgres").await?;
    let server = postgres::server_info(&conn, &admin).await?;
    let tools = PgTools::find(pg.bin_dir.as_deref(), "pg_basebackup", server.major).await?;
    let q = |what: &'static str| {
        let conn = &conn;
        move |e| conn.query_error("postgres", what, e)
    };
    let spaces: Vec<String> = admin
        .query(
            "SELECT spcname::text FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1",
            &[],
        )
        .await
        .map_err(q("list tablespaces"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !spaces.is_empty() {
        return Err(BackupError::Tablespaces {
            host: conn.host.clone(),
            port: conn.port,
            names: spaces.join(", "),
        });
    }
    let archive_mode: String = admin
        .query_one("SELECT current_setting('archive_mode')", &[])
        .await
        .map_err(q("read archive_mode"))?
        .get(0);
    if archive_mode == "off" {
        return Err(BackupError::NoArchiving {
            host: conn.host.clone(),
            port: conn.port,
        });
    }
    let row = admin
        .query_one(
            "SELECT system_identifier::text, (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') FROM pg_control_system()",
            &[],
        )
        .await
        .map_err(q("read the system identifier"))?;
    let system_identifier: String = row.get(0);
    let segment_size = row.get::<_, i64>(1) as u64;
    drop(admin);

    let source_name = run.source.name.to_string();
    tracing::info!(source = %source_name, backup = %run.id, server = %server.version, tool = %tools.version, "base backup started");
    let program = tools.tool("pg_basebackup");
    let mut cmd = conn.command(&program, "postgres");
    cmd.args([
        "--pgdata=-",
        "--format=tar",
        "--wal-method=none",
        "--checkpoint=fast",
        "--no-password",
    ])
    .arg(format!("--label=lifeboat {}", run.id));
    let key = run.key("base.tar");
    let writer = run.repo.store().create(&key).await?;
    let (child, _, stdout) = match process::spawn(cmd, &program, false, true) {
        Ok(c) => c,
        Err(e) => {
            writer.abort().await;
            return Err(e.into());
        }
    };
    let (watched, members) = crate::source::tar::TarWatch::new(
        stdout.expect("stdout is piped"),
        &["backup_label", "backup_manifest"],
    );
    let ticker = run.ticker("base.tar".into());
    let pending = match pipeline::encode(
        watched,
        &run.settings,
        &key,
        writer,
        Some(ticker.counter()),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            child.kill().await;
            return Err(e.into());
        }
    };
    drop(ticker);
    if let Err(e) = child.wait().await {
        pending.abort().await;
        return Err(BackupError::Dump {
            what: "pg_basebackup",
            database: "(cluster)".into(),
            host: conn.host.clone(),
            port: conn.port,
            source: e,
        });
    }
    let (label, backup_manifest) = {
        let mut m = members.lock().expect("poisoned");
        (
            m.files.remove("backup_label"),
            m.files.remove("backup_manifest"),
        )
    };
    let member_err = |member, hint| BackupError::BaseMember {
        host: conn.host.clone(),
        port: conn.port,
        member,
        hint,
    };
    let Some(label) = label else {
        pending.abort().await;
        return Err(member_err(
            "backup_label",
            "the tar stream is not a base backup; check pg_basebackup's version",
        ));
    };
    let Some(backup_manifest) = backup_manifest else {
        pending.abort().await;
        return Err(member_err(
            "backup_manifest",
            "PostgreSQL 13 or newer writes one; older servers are not supported for base backups",
        ));
    };
    let label = String::from_utf8_lossy(&label).into_owned();
    let ranges = parse_wal_ranges(&backup_manifest);
    let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
        pending.abort().await;
        return Err(member_err(
            "WAL-Ranges in backup_manifest",
            "the manifest cannot be read; check pg_basebackup's version",
        ));
    };
    let (timeline, start_lsn, stop_lsn) = (last.0, first.1, last.2);
    let enc = pending.commit().await?;
    tracing::info!(source = %source_name, plaintext = %crate::progress::human_bytes(enc.plaintext.size), stored = %crate::progress::human_bytes(enc.stored.size), start = %start_lsn, stop = %stop_lsn, timeline, "base backup streamed");
    run.record("base".into(), "pg-base-tar", None, key, enc);

    run.store_small(
        "backup_manifest",
        "backup_manifest".into(),
        "pg-backup-manifest",
        None,
        backup_manifest,
    )
    .await?;

    Ok(Manifest {
        physical: Some(repository::Physical {
            timeline,
            start_lsn,
            stop_lsn,
            system_identifier,
            wal_segment_size: segment_size,
            start_segment: wal::segment_name(
                timeline,
                start_lsn.segment(segment_size),
                segment_size,
            ),
            stop_segment: wal::segment_name(timeline, stop_lsn.segment(segment_size), segment_size),
            backup_label: label,
        }),
        ..run.manifest(
            repository::ManifestKind::PostgresBase,
            started_at,
            server.version,
            tools.version,
        )
    })
}

/// `WAL-Ranges` of a `backup_manifest`: (timeline, start, end), oldest first.
fn parse_wal_ranges(manifest: &[u8]) -> Vec<(u32, crate::wal::Lsn, crate::wal::Lsn)> {
    #[derive(serde::Deserialize)]
    struct Range {
        #[serde(rename = "Timeline")]
        timeline: u32,
        #[serde(rename = "Start-LSN")]
        start: crate::wal::Lsn,
        #[serde(rename = "End-LSN")]
        end: crate::wal::Lsn,
    }
    #[derive(serde::Deserialize)]
    struct M {
        #[serde(rename = "WAL-Ranges")]
        ranges: Vec<Range>,
    }
    let mut ranges: Vec<_> = serde_json::from_slice::<M>(manifest)
        .map(|m| m.ranges)
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.timeline, r.start, r.end))
        .collect();
    // The manifest lists the newest timeline first.
    ranges.sort_by_key(|r| r.1);
    ranges
}

/// Sends the snapshot marker's result once the dump's output shows it.
struct MarkerWatch<R> {
    inner: R,
    marker: crate::source::mysql::SnapshotMarker,
    tx: Option<tokio::sync::oneshot::Sender<Option<(String, u64)>>>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for MarkerWatch<R> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &r {
            if this.tx.is_some() && this.marker.feed(&buf.filled()[before..]) {
                if let Some(tx) = this.tx.take() {
                    let _ = tx.send(this.marker.file_and_position.clone());
                }
            }
        }
        r
    }
}

/// A consistent logical dump of a MySQL/MariaDB server: every listed
/// database in one file (one consistency point across them), an inventory
/// per database counted at that point, and the binlog coordinates.
async fn backup_mysql(
    run: &mut Run<'_>,
    my: &crate::policy::MysqlSource,
    started_at: chrono::DateTime<Utc>,
) -> Result<Manifest, BackupError> {
    use crate::source::mysql::{self, MyConn};
    use mysql_async::prelude::Queryable;

    let conn = MyConn::from_source(my)?;
    let mut admin = conn.connect().await?;
    let info = mysql::server_info(&conn, &mut admin).await?;
    let tool = mysql::find_dump_tool(my.bin_dir.as_deref(), info.flavor)?;
    let tool_version = tokio::process::Command::new(&tool)
        .arg("--version")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let databases = mysql::databases(&conn, &mut admin, &my.databases).await?;
    let source_name = run.source.name.to_string();
    if !info.log_bin {
        tracing::warn!(source = %source_name, host = %conn.host, port = conn.port, "the binary log is off on this server: the dump restores as of its own moment only. For point-in-time recovery set log_bin, server_id and binlog_format=ROW in the server's configuration and restart it");
    } else if my.flush_binlogs {
        // The dump then starts near the top of a fresh binlog file.
        admin.query_drop("FLUSH BINARY LOGS").await.map_err(|e| {
            conn.query_error(
                "FLUSH BINARY LOGS (needs the RELOAD privilege; or set flush_binlogs: false)",
                e,
            )
        })?;
    }
    drop(admin);
    tracing::info!(source = %source_name, backup = %run.id, server = %info.version, tool = %tool_version, databases = databases.len(), "backup started");

    // The consistency point (see source::mysql).
    let mut snap = conn.connect().await?;
    for sql in [
        "FLUSH TABLES WITH READ LOCK",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT",
    ] {
        snap.query_drop(sql).await.map_err(|e| {
            conn.query_error(
                &format!("{sql} (the consistency point needs the RELOAD privilege)"),
                e,
            )
        })?;
    }
    let binlog = mysql::binlog_point(&conn, &mut snap, &info).await?;

    let defaults = conn.defaults_file()?;
    let mut cmd = tokio::process::Command::new(&tool);
    cmd.arg(format!(
        "--defaults-extra-file={}",
        defaults.path().display()
    ))
    .args(mysql::dump_args(&info, &databases));
    let key = run.key("dump.sql");
    let writer = run.repo.store().create(&key).await?;
    let (child, _, stdout) = match process::spawn(cmd, &tool, false, true) {
        Ok(c) => c,
        Err(e) => {
            writer.abort().await;
            return Err(e.into());
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let watched = MarkerWatch {
        inner: stdout.expect("stdout is piped"),
        marker: Default::default(),
        tx: Some(tx),
    };
    let ticker = run.ticker("dump.sql".into());
    let dump = pipeline::encode(watched, &run.settings, &key, writer, Some(ticker.counter()));
    let inventories = async {
        // Until the dump has its snapshot the lock must hold; a dump that
        // ends without the marker (an error) releases it too.
        let seen = rx.await.ok();
        snap.query_drop("UNLOCK TABLES")
            .await
            .map_err(|e| conn.query_error("UNLOCK TABLES", e))?;
        if let (Some(Some((file, pos))), Some(b)) = (&seen, &binlog) {
            if (file, *pos) != (&b.file, b.position) {
                tracing::warn!(dump_file = %file, dump_position = pos, file = %b.file, position = b.position, "the dump tool reports other binlog coordinates than the consistency point; recording lifeboat's");
            }
        }
        let mut out = Vec::new();
        for db in &databases {
            out.push(mysql::take_inventory(&conn, &mut snap, db, binlog.clone()).await?);
        }
        let _ = snap.query_drop("COMMIT").await;
        Ok::<_, mysql::MyError>(out)
    };
    let (dump, inventories) = tokio::join!(dump, inventories);
    drop(ticker);
    drop(defaults);
    let pending = match dump {
        Ok(p) => p,
        Err(e) => {
            child.kill().await;
            return Err(e.into());
        }
    };
    let status = child.wait().await;
    let inventories = match (status, inventories) {
        (Ok(_), Ok(inv)) => inv,
        (Err(e), _) => {
            pending.abort().await;
            return Err(BackupError::Dump {
                what: "mariadb-dump/mysqldump",
                database: databases.join(", "),
                host: conn.host.clone(),
                port: conn.port,
                source: e,
            });
        }
        (Ok(_), Err(e)) => {
            pending.abort().await;
            return Err(e.into());
        }
    };
    let enc = pending.commit().await?;
    tracing::info!(source = %source_name, plaintext = %crate::progress::human_bytes(enc.plaintext.size), stored = %crate::progress::human_bytes(enc.stored.size), binlog = ?binlog, "dump stored");
    run.record("dump".into(), "mysql-dump-sql", None, key, enc);

    for inv in inventories {
        let body = serde_json::to_vec_pretty(&inv).expect("inventory serializes");
        run.store_small(
            &format!("inventory-{}.json", key_safe(&inv.database)),
            format!("inventory/{}", inv.database),
            "mysql-inventory-json",
            Some(&inv.database),
            body,
        )
        .await?;
    }

    Ok(Manifest {
        binlog,
        ..run.manifest(
            repository::ManifestKind::MysqlDump,
            started_at,
            info.version,
            tool_version,
        )
    })
}

/// Exports a Kubernetes source: objects stream from the API server into a
/// tar (on a blocking thread) and through the pipeline into storage; the
/// manifest records counts per namespace and kind.
async fn backup_kubernetes(
    run: &mut Run<'_>,
    k: &crate::policy::KubernetesSource,
    started_at: chrono::DateTime<Utc>,
) -> Result<Manifest, BackupError> {
    use crate::source::kubernetes::{self as kube_src, Cluster, ConnectOptions};
    let cluster = Cluster::connect(&ConnectOptions::from_source(k)).await?;
    let version = cluster.version().await?;
    let source_name = run.source.name.to_string();
    tracing::info!(source = %source_name, backup = %run.id, server = %cluster.server, version = %version, "backup started");

    let key = run.key("objects.tar");
    let writer = run.repo.store().create(&key).await?;
    let (files_tx, files_rx) = tokio::sync::mpsc::channel(256);
    let (tar_in, tar_out) = tokio::io::duplex(256 << 10);
    let bridge = tokio_util::io::SyncIoBridge::new(tar_in);
    let mtime = started_at.timestamp().max(0) as u64;
    let tar = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut out = kube_src::write_tar(files_rx, bridge, mtime)?;
        out.flush()?;
        out.shutdown()
    });
    let ticker = run.ticker("objects.tar".into());
    let (exported, encoded) = tokio::join!(
        kube_src::export(&cluster, k, files_tx),
        pipeline::encode(tar_out, &run.settings, &key, writer, Some(ticker.counter()))
    );
    let tar = tar
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    // The storage error comes first: it is also why the export stopped.
    let pending = encoded?;
    let summary = match (exported, tar) {
        (Ok(s), Ok(())) => s,
        // The export stopped because the tar writer did: its error is the cause.
        (Err(crate::source::kubernetes::KubeError::SinkClosed), Err(e)) => {
            pending.abort().await;
            return Err(BackupError::Tar(e));
        }
        (Err(e), _) => {
            pending.abort().await;
            return Err(e.into());
        }
        (Ok(_), Err(e)) => {
            pending.abort().await;
            return Err(BackupError::Tar(e));
        }
    };
    let enc = pending.commit().await?;
    tracing::info!(source = %source_name, objects = summary.objects(), namespaces = summary.namespaces.len(), plaintext = %crate::progress::human_bytes(enc.plaintext.size), stored = %crate::progress::human_bytes(enc.stored.size), "cluster configuration exported");
    run.record("objects".into(), "kubernetes-yaml-tar", None, key, enc);
    Ok(Manifest {
        kubernetes: Some(summary),
        ..run.manifest(
            repository::ManifestKind::KubernetesExport,
            started_at,
            format!("Kubernetes {version}"),
            "lifeboat kubernetes export (kube-rs 2)".into(),
        )
    })
}
