//! PostgreSQL drills: a dump restored into a scratch cluster or a named server, a base backup recovered with the archived WAL.

use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::drill::{
    interruptible, inventory_detail, report, scratch, skip_user_checks, Checks, Drill, DrillError,
    Options, Restored,
};
use crate::kinds::postgres::pitr;
use crate::kinds::postgres::restore as pg_restore;
use crate::kinds::postgres::scratch::ScratchPostgres;
use crate::repository::{Manifest, Repository};
use crate::storage::StorageError;

/// A failed step of a base-backup drill: the index in `base`'s list of
/// checks from which the rest are skipped, and why.
type SkipFrom = (usize, &'static str);

impl Drill<'_> {
    /// A dump: a new cluster, roles, then every database, each compared
    /// with the inventory taken at backup time.
    pub(crate) async fn dump(
        &self,
        pg_source: &crate::kinds::postgres::config::PostgresSource,
        checks: &mut Checks,
    ) -> Result<Restored, DrillError> {
        if let Some(server) = &self.policy.drill.postgres.server {
            return self.dump_on_server(pg_source, server, checks).await;
        }
        let manifest = self.manifest;
        let major = crate::kinds::postgres::pitr::server_major(&manifest.server_version);
        let started = interruptible(
            &self.opts.cancel,
            ScratchPostgres::start(
                &self.opts.scratch_dir,
                self.id,
                major,
                &self.policy.drill.postgres,
            ),
        )
        .await?;
        // Without globals nothing creates the role a dump's objects usually
        // belong to. (A failure drops the cluster, which removes it.)
        let started = match started {
            Ok(cluster) if manifest.artifact("globals").is_none() => {
                match interruptible(&self.opts.cancel, cluster.create_postgres_role()).await? {
                    Ok(()) => Ok(cluster),
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        let databases = dump_databases(manifest);
        let cluster = match started {
            Err(e) => {
                checks.add("scratch target", false, e.to_string());
                for db in &databases {
                    checks.skip(format!("restore {db}"), "no scratch target");
                    checks.skip(format!("inventory {db}"), "no scratch target");
                }
                for c in self.user_checks {
                    checks.skip(format!("check: {}", c.name), "no scratch target");
                }
                return Ok(Restored::nothing(
                    "none (the scratch cluster did not start)",
                ));
            }
            Ok(cluster) => cluster,
        };
        let mut restored = Restored::nothing(format!(
            "throwaway PostgreSQL {} on 127.0.0.1:{} ({})",
            cluster.tools.major,
            cluster.conn.port,
            cluster.dir().display()
        ));
        checks.add("scratch target", true, restored.target.clone());
        let pairs: Vec<(String, String)> =
            databases.iter().map(|d| (d.clone(), d.clone())).collect();
        let all = restore_all(
            self.repo,
            manifest,
            &pairs,
            &cluster.conn,
            false,
            pg_source.bin_dir.clone(),
            self.opts,
            checks,
        )
        .await?;
        if all {
            // A dump holds the data as of its snapshot, taken when the
            // backup started.
            restored.usable(self.clock, manifest.started_at);
        }
        self.user_checks(&cluster.conn, &pairs, all, checks).await?;
        remove(cluster, checks).await;
        Ok(restored)
    }

    /// A dump into scratch databases on the server the policy names
    /// (`drill.postgres.server`): without the backup's roles (objects
    /// belong to the drill's role), dropped afterwards.
    pub(super) async fn dump_on_server(
        &self,
        pg_source: &crate::kinds::postgres::config::PostgresSource,
        server: &crate::policy::ScratchServer,
        checks: &mut Checks,
    ) -> Result<Restored, DrillError> {
        let manifest = self.manifest;
        let databases = dump_databases(manifest);
        let leftovers =
            interruptible(&self.opts.cancel, scratch::ScratchDatabases::sweep(server)).await?;
        let created = interruptible(
            &self.opts.cancel,
            scratch::ScratchDatabases::create(server, self.id, &databases),
        )
        .await?;
        let scratch = match created {
            Ok(s) => s,
            Err(e) => {
                checks.add("scratch target", false, e.to_string());
                for db in &databases {
                    checks.skip(format!("restore {db}"), "no scratch database");
                    checks.skip(format!("inventory {db}"), "no scratch database");
                }
                skip_user_checks(self.user_checks, checks, "no scratch database");
                let mut r = Restored::nothing(format!(
                    "none (no scratch database on {}:{})",
                    server.host, server.port
                ));
                r.leftovers = leftovers;
                return Ok(r);
            }
        };
        let mut restored = Restored::nothing(format!(
            "scratch databases {} on {}",
            scratch
                .names
                .iter()
                .map(|(_, n)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            scratch.describe()
        ));
        restored.leftovers = leftovers;
        checks.add("scratch target", true, restored.target.clone());
        let all = restore_all(
            self.repo,
            manifest,
            &scratch.names,
            &scratch.conn,
            true,
            pg_source.bin_dir.clone(),
            self.opts,
            checks,
        )
        .await?;
        if all {
            restored.usable(self.clock, manifest.started_at);
        }
        self.user_checks(&scratch.conn, &scratch.names, all, checks)
            .await?;
        let removed = scratch.remove().await;
        checks.add(
            "scratch removed",
            removed.is_ok(),
            match removed {
                Ok(()) => "scratch databases dropped".to_string(),
                Err(e) => e.to_string(),
            },
        );
        Ok(restored)
    }

    /// A base backup: unpacked into a scratch data directory, checked with
    /// `pg_verifybackup`, WAL replayed to the newest archived point, the
    /// server promoted, then `pg_amcheck` (where installed) and the
    /// policy's checks.
    pub(crate) async fn base(
        &self,
        pg_source: &crate::kinds::postgres::config::PostgresSource,
        checks: &mut Checks,
    ) -> Result<Restored, DrillError> {
        let manifest = self.manifest;
        let major = crate::kinds::postgres::pitr::server_major(&manifest.server_version);
        let prepared = interruptible(
            &self.opts.cancel,
            ScratchPostgres::prepare(
                &self.opts.scratch_dir,
                self.id,
                major,
                &self.policy.drill.postgres,
                true,
            ),
        )
        .await?;
        let skip_rest = |checks: &mut Checks, from: usize, why: &str| {
            let names = [
                "WAL archive",
                "restore base",
                "pg_verifybackup",
                "recovery",
                "pg_amcheck",
            ];
            for n in &names[from..] {
                checks.skip(*n, why);
            }
            for c in self.user_checks {
                checks.skip(format!("check: {}", c.name), why);
            }
        };
        let mut cluster = match prepared {
            Ok(c) => c,
            Err(e) => {
                checks.add("scratch target", false, e.to_string());
                skip_rest(checks, 0, "no scratch target");
                return Ok(Restored::nothing("none (no server binaries to start it)"));
            }
        };
        let mut restored = Restored::nothing(format!(
            "throwaway PostgreSQL {} from base backup {} ({})",
            cluster.tools.major,
            manifest.id,
            cluster.dir().display()
        ));
        checks.add("scratch target", true, restored.target.clone());
        let datadir = cluster.data_dir();
        let (plan, gap) = match self.plan_base_wal(&cluster, &datadir, checks).await? {
            Ok(p) => p,
            Err((from, why)) => {
                skip_rest(checks, from, why);
                remove(cluster, checks).await;
                return Ok(restored);
            }
        };
        let wal_dir = match self.stage_base_wal(&cluster, &plan, gap, checks).await? {
            Ok(dir) => dir,
            Err((from, why)) => {
                skip_rest(checks, from, why);
                remove(cluster, checks).await;
                return Ok(restored);
            }
        };
        let restored_base = self
            .restore_base(&cluster, &plan, &datadir, &wal_dir, checks)
            .await?;
        if let Err((from, why)) = restored_base {
            skip_rest(checks, from, why);
            remove(cluster, checks).await;
            return Ok(restored);
        }
        let recovered = self
            .recover_base(&mut cluster, &plan, &pg_source.user, &mut restored, checks)
            .await?;
        let databases = match recovered {
            Ok(databases) => databases,
            Err((from, why)) => {
                skip_rest(checks, from, why);
                remove(cluster, checks).await;
                return Ok(restored);
            }
        };
        let amcheck = interruptible(&self.opts.cancel, amcheck(&cluster)).await?;
        match amcheck {
            Some((passed, detail)) => checks.add("pg_amcheck", passed, detail),
            None => checks.skip("pg_amcheck", "not installed"),
        }
        let pairs: Vec<(String, String)> =
            databases.iter().map(|d| (d.clone(), d.clone())).collect();
        self.user_checks(&cluster.conn, &pairs, true, checks)
            .await?;
        remove(cluster, checks).await;
        Ok(restored)
    }

    /// Plans the recovery to the newest archived point. A hole in the
    /// archive fails the "WAL archive" check and the plan goes to the
    /// point before it (the bool: a hole was found). The error: the
    /// checks to skip.
    async fn plan_base_wal(
        &self,
        cluster: &ScratchPostgres,
        datadir: &std::path::Path,
        checks: &mut Checks,
    ) -> Result<Result<(pitr::PitrPlan, bool), SkipFrom>, DrillError> {
        let manifest = self.manifest;
        let policy_name = self.policy.name.as_str();
        let source = self.pg_source_name();
        // The newest point the archive reaches; a hole in it fails the
        // check, and the drill goes on to the point before the hole.
        let mut gap = false;
        let reader = pitr::EndReader {
            identities: &self.opts.identities,
            bin_dir: cluster.tools.bin_dir.as_deref(),
        };
        let planned = match interruptible(
            &self.opts.cancel,
            pitr::plan(
                self.repo,
                policy_name,
                source,
                pitr::Target::Latest,
                Some(&manifest.id),
                datadir,
                Some(reader),
            ),
        )
        .await?
        {
            Ok(plan) => Ok(plan),
            Err(pitr::PitrError::Gap(hole)) => {
                gap = true;
                checks.add("WAL archive", false, hole.to_string());
                // Up to the last whole record before the hole, read from
                // the archived WAL (the same plan as --until latest-reachable).
                interruptible(
                    &self.opts.cancel,
                    pitr::plan(
                        self.repo,
                        policy_name,
                        source,
                        pitr::Target::LatestReachable,
                        Some(&manifest.id),
                        datadir,
                        Some(reader),
                    ),
                )
                .await?
            }
            Err(e) => Err(e),
        };
        let plan = match planned {
            Ok(p) => p,
            Err(e) => {
                checks.add("WAL archive", false, e.to_string());
                return Ok(Err((
                    1,
                    "the WAL archive cannot make the backup consistent",
                )));
            }
        };
        Ok(Ok((plan, gap)))
    }

    /// Fetches the WAL the plan needs into the scratch folder: the "WAL
    /// archive" check (unless a hole already failed it). The error: the
    /// checks to skip.
    async fn stage_base_wal(
        &self,
        cluster: &ScratchPostgres,
        plan: &pitr::PitrPlan,
        gap: bool,
        checks: &mut Checks,
    ) -> Result<Result<PathBuf, SkipFrom>, DrillError> {
        // Fetched and checked against their hashes here; the server copies
        // them from the scratch folder.
        let staged = interruptible(&self.opts.cancel, self.stage_wal(cluster, plan)).await?;
        Ok(match staged {
            Ok((dir, n)) => {
                if !gap {
                    checks.add(
                        "WAL archive",
                        true,
                        format!(
                            "{n} files fetched and checked, up to segment {} (archived {}); {}, timelines {:?}",
                            plan.reach.last_segment.as_deref().unwrap_or("?"),
                            plan.reach
                                .last_archived_at
                                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                                .unwrap_or_else(|| "at an unknown time".into()),
                            plan.end.as_ref().map_or_else(
                                || "the end of the archive was not read".to_string(),
                                |e| format!("{}, last whole record at LSN {}", e.describe_newest(), e.last_record)
                            ),
                            plan.reach.path
                        ),
                    );
                }
                Ok(dir)
            }
            Err(e) => {
                if !gap {
                    checks.add("WAL archive", false, e.to_string());
                } else {
                    tracing::error!(error = %e, "fetching the WAL before the hole failed too");
                }
                Err((1, "the WAL could not be fetched"))
            }
        })
    }

    /// Unpacks the base backup into the scratch data directory and checks
    /// it with `pg_verifybackup`: the "restore base" and "pg_verifybackup"
    /// checks. The error: the checks to skip.
    async fn restore_base(
        &self,
        cluster: &ScratchPostgres,
        plan: &pitr::PitrPlan,
        datadir: &std::path::Path,
        wal_dir: &std::path::Path,
        checks: &mut Checks,
    ) -> Result<Result<(), SkipFrom>, DrillError> {
        let popts = pitr::PitrOptions {
            exe: PathBuf::new(),
            policy_file: PathBuf::new(),
            identity_file: PathBuf::new(),
            start: false,
            port: None,
            timeout: RECOVERY_TIMEOUT,
            bin_dir: cluster.tools.bin_dir.clone(),
            no_archive: true,
            restore_command: Some(format!("cp {}/%f %p", pitr::command_arg(wal_dir))),
        };
        let executed = interruptible(
            &self.opts.cancel,
            pitr::execute(plan, self.repo, self.opts.identities.clone(), &popts),
        )
        .await?;
        Ok(match executed {
            Ok(r) => {
                checks.add(
                    "restore base",
                    true,
                    format!(
                        "{} unpacked into {}",
                        report::human_bytes(plan.base_plaintext_size),
                        datadir.display()
                    ),
                );
                if r.verified_with_pg_verifybackup {
                    checks.add(
                        "pg_verifybackup",
                        true,
                        "every file matches the backup's manifest",
                    );
                } else {
                    checks.skip("pg_verifybackup", "not installed");
                }
                Ok(())
            }
            Err(pitr::PitrError::VerifyBackup(detail)) => {
                checks.add(
                    "restore base",
                    true,
                    format!("unpacked into {}", datadir.display()),
                );
                checks.add("pg_verifybackup", false, detail);
                Err((3, "pg_verifybackup failed"))
            }
            Err(e) => {
                checks.add("restore base", false, e.to_string());
                Err((2, "the restore failed"))
            }
        })
    }

    /// Recovers the restored base backup and promotes it: the "recovery"
    /// check; the target is usable from here. The databases, or the
    /// checks to skip.
    async fn recover_base(
        &self,
        cluster: &mut ScratchPostgres,
        plan: &pitr::PitrPlan,
        backup_user: &str,
        restored: &mut Restored,
        checks: &mut Checks,
    ) -> Result<Result<Vec<String>, SkipFrom>, DrillError> {
        let recovered =
            interruptible(&self.opts.cancel, self.recover(cluster, plan, backup_user)).await?;
        Ok(match recovered {
            Ok((detail, point, databases)) => {
                checks.add("recovery", true, detail);
                restored.usable(self.clock, point);
                Ok(databases)
            }
            Err(e) => {
                checks.add("recovery", false, e.to_string());
                Err((4, "recovery failed"))
            }
        })
    }

    pub(super) fn pg_source_name(&self) -> &str {
        self.source_name
    }

    /// Fetches the WAL recovery will replay into `<scratch>/wal`: every
    /// history file, and the segments of the timelines crossed from the
    /// backup's start to the newest point the plan reaches.
    pub(super) async fn stage_wal(
        &self,
        cluster: &ScratchPostgres,
        plan: &pitr::PitrPlan,
    ) -> Result<(PathBuf, usize), RecoveryError> {
        let dir = cluster.make_dir("wal")?;
        let store = self.repo.store();
        let listing = crate::kinds::postgres::wal::archive::list(
            store.as_ref(),
            self.policy.name.as_str(),
            self.pg_source_name(),
        )
        .await
        .map_err(RecoveryError::List)?;
        let size = plan.physical.wal_segment_size;
        let first = plan.physical.start_lsn.segment(size);
        // The reach ends at the last segment before any hole.
        let last = plan.reach.end_lsn.0.saturating_sub(1) / size;
        let wanted: Vec<&crate::kinds::postgres::wal::archive::ArchivedFile> = listing
            .files
            .iter()
            .filter(|f| match f.file {
                crate::kinds::postgres::wal::WalFile::History { .. } => true,
                crate::kinds::postgres::wal::WalFile::Segment { timeline, .. } => {
                    plan.reach.path.contains(&timeline)
                        && f.file.segno(size).is_some_and(|s| s >= first && s <= last)
                }
                _ => false,
            })
            .collect();
        for f in &wanted {
            let dest = dir.join(&f.name);
            crate::kinds::postgres::wal::archive::fetch_to(
                store.as_ref(),
                f,
                &self.opts.identities,
                &dest,
            )
            .await
            .map_err(|source| RecoveryError::Fetch {
                key: f.key.clone(),
                source,
            })?;
        }
        if let Some((uid, gid)) = cluster.owner_ids() {
            for f in &wanted {
                let p = dir.join(&f.name);
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                    .map_err(|source| RecoveryError::Chown { path: p, source })?;
            }
        }
        Ok((dir, wanted.len()))
    }

    /// Starts the server on the restored data directory, waits until it
    /// has replayed the WAL and promoted, and connects. Returns what the
    /// report says, the newest restored point and the databases.
    pub(super) async fn recover(
        &self,
        cluster: &mut ScratchPostgres,
        plan: &pitr::PitrPlan,
        backup_user: &str,
    ) -> Result<(String, DateTime<Utc>, Vec<String>), RecoveryError> {
        cluster.adopt_restored()?;
        let began = Instant::now();
        let log = cluster
            .start_recovery(self.policy.drill.postgres.port)
            .await?;
        pitr::wait_for_promotion(
            &cluster.tools,
            &cluster.data_dir(),
            &log,
            RECOVERY_TIMEOUT,
            plan.physical.timeline,
        )
        .await?;
        let user = cluster.find_superuser(&[backup_user, "postgres"]).await?;
        let client = cluster.conn.connect("postgres").await?;
        let row = client
            .query_one(
                "SELECT extract(epoch FROM pg_last_xact_replay_timestamp())::float8, \
                 pg_is_in_recovery()",
                &[],
            )
            .await?;
        let replayed: Option<f64> = row.get(0);
        let in_recovery: bool = row.get(1);
        if in_recovery {
            return Err(RecoveryError::NotPromoted);
        }
        let databases: Vec<String> = client
            .query(
                "SELECT datname::text FROM pg_database \
                 WHERE datallowconn AND NOT datistemplate AND datname <> 'postgres' ORDER BY 1",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // No transaction replayed: the data is as of the backup's end.
        let point = replayed
            .and_then(|s| DateTime::<Utc>::from_timestamp_millis((s * 1000.0) as i64))
            .unwrap_or(self.manifest.finished_at);
        let detail = format!(
            "replayed WAL to {} in {}, promoted; last transaction {}; connected as {user} through the scratch socket; databases: {}",
            match &plan.reach.gap_at {
                None => "the end of the archive".to_string(),
                Some(missing) => format!("the hole at {missing}"),
            },
            report::human_seconds(began.elapsed().as_secs_f64()),
            point.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
            if databases.is_empty() { "none besides postgres".to_string() } else { databases.join(", ") },
        );
        Ok((detail, point, databases))
    }
}

/// Why staging the WAL or recovering a restored base backup failed (the
/// detail of the `WAL archive` or `recovery` check).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecoveryError {
    #[error(transparent)]
    Scratch(#[from] scratch::ScratchError),
    #[error("cannot list the WAL archive: {0}")]
    List(#[source] StorageError),
    #[error("{key}: {source}")]
    Fetch {
        key: String,
        #[source]
        source: crate::kinds::postgres::wal::archive::WalError,
    },
    #[error("cannot chown {}: {source}", path.display())]
    Chown {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pitr(#[from] pitr::PitrError),
    #[error(transparent)]
    Connect(#[from] crate::kinds::postgres::source::PgError),
    #[error("{0}")]
    Query(String),
    #[error("the server is still in recovery after it said it promoted")]
    NotPromoted,
}

impl crate::outcome::Classify for RecoveryError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Scratch(e) => e.outcome(),
            Self::List(e) => e.outcome(),
            Self::Fetch { source, .. } => source.outcome(),
            Self::Pitr(e) => e.outcome(),
            Self::Connect(e) => e.outcome(),
            Self::Chown { .. } | Self::Query(_) | Self::NotPromoted => Outcome::Failure,
        }
    }
}

impl From<tokio_postgres::Error> for RecoveryError {
    fn from(e: tokio_postgres::Error) -> Self {
        RecoveryError::Query(crate::kinds::postgres::source::error_detail(&e))
    }
}

/// The databases of a PostgreSQL dump, in the manifest's order.
pub(super) fn dump_databases(manifest: &Manifest) -> Vec<String> {
    manifest
        .artifacts
        .iter()
        .filter(|a| a.kind == "pg-dump-custom")
        .filter_map(|a| a.database.clone())
        .collect()
}

/// How long a drill waits for WAL replay.
pub(super) const RECOVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Stops and removes the scratch cluster, as a check.
pub(super) async fn remove(cluster: ScratchPostgres, checks: &mut Checks) {
    let removed = cluster.remove().await;
    checks.add(
        "scratch removed",
        removed.is_ok(),
        match removed {
            Ok(()) => "server stopped, folder removed".to_string(),
            Err(e) => e.to_string(),
        },
    );
}

/// `pg_amcheck --all` on the restored cluster (tables and B-tree
/// indexes); None when the tool is not installed.
pub(super) async fn amcheck(cluster: &ScratchPostgres) -> Option<(bool, String)> {
    let tool = cluster.tools.tool("pg_amcheck");
    if cluster.tools.bin_dir.is_some() && !tool.exists() {
        return None;
    }
    let out = cluster
        .conn
        .command(&tool, "postgres")
        .args(["--all", "--install-missing"])
        .output()
        .await;
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some((false, format!("cannot run {}: {e}", tool.display()))),
        Ok(o) if o.status.success() => Some((
            true,
            "every table and B-tree index of every database checks out".into(),
        )),
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(5)
                .collect();
            Some((false, lines.join(" | ")))
        }
    }
}

/// Restores every database of the dump (globals first) into the scratch
/// cluster and compares each with its inventory. True when all restored.
#[allow(clippy::too_many_arguments)]
pub(super) async fn restore_all(
    repo: &Repository,
    manifest: &Manifest,
    databases: &[(String, String)],
    conn: &crate::kinds::postgres::source::PgConn,
    shared: bool,
    bin_dir: Option<PathBuf>,
    opts: &Options,
    checks: &mut Checks,
) -> Result<bool, DrillError> {
    let mut all = true;
    let has_globals = manifest.artifact("globals").is_some();
    for (i, (db, target_db)) in databases.iter().enumerate() {
        let restore = format!("restore {db}");
        let inventory = format!("inventory {db}");
        if !all {
            checks.skip(restore, "an earlier restore failed");
            checks.skip(inventory, "an earlier restore failed");
            continue;
        }
        let ropts = pg_restore::Options {
            database: Some(db.clone()),
            target: conn.clone(),
            target_database: Some(target_db.clone()),
            jobs: 1,
            clean: false,
            // Roles first, as an incident restore into a new server would;
            // never onto a shared server, whose roles are not the drill's.
            globals: i == 0 && has_globals && !shared,
            no_owner: shared,
            scratch_dir: opts.scratch_dir.clone(),
            bin_dir: bin_dir.clone(),
        };
        let result = interruptible(&opts.cancel, async {
            let plan = pg_restore::plan(manifest, &ropts).await?;
            pg_restore::execute(repo, plan, &ropts, opts.identities.clone()).await
        })
        .await?;
        match result {
            Ok(r) => {
                checks.add(
                    restore,
                    true,
                    format!(
                        "{} into {} in {}",
                        report::human_bytes(r.plan.dump.plaintext.size),
                        r.plan.target,
                        report::human_seconds(r.seconds)
                    ),
                );
                let (passed, detail) = inventory_detail(&r.inventory);
                checks.add(inventory, passed, detail);
            }
            Err(e) => {
                all = false;
                checks.add(restore, false, e.to_string());
                checks.skip(inventory, "the restore failed");
            }
        }
    }
    Ok(all)
}
