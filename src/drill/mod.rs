//! Restore drills: restore a backup into a scratch target the way an
//! incident restore would, check the result, measure how long recovery
//! took (RTO) and how old the restored data is (RPO), report, tear down.
//!
//! A drill never throws a failure away: whatever goes wrong after the
//! backup is chosen (the scratch target does not start, an object is
//! damaged, a row count differs, a user check fails) becomes a failed
//! [`Check`] in the [`DrillReport`], which is stored in the repository
//! (`drills/<policy>/<source>/<id>.json`, `.md` and `.html`) whether the
//! drill passed or not. The scratch target is removed on every path: at
//! the end, on an error, on SIGINT/SIGTERM (drop), and after a SIGKILL by
//! the next drill ([`scratch::sweep`]).
//!
//! Drills restore PostgreSQL dumps and base backups (point in time, to
//! the newest archived WAL); MySQL/MariaDB and Kubernetes drills are
//! refused with a message.

pub mod kube;
pub mod report;
pub mod scratch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::keys::Identities;
use crate::policy::{Policy, SourceKind};
use crate::repository::{BackupSelector, Manifest, Repository, RepositoryError};
use crate::restore::mysql as my_restore;
use crate::restore::pitr;
use crate::restore::postgres as pg_restore;
use crate::storage::StorageError;

/// Version of the stored report documents.
pub const REPORT_FORMAT: u32 = 1;

/// Which backup a drill restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Latest,
    /// A random one of the source's backups of the kind drilled: over
    /// months, every retained backup gets its turn.
    Random,
    Id(String),
}

impl std::str::FromStr for Pick {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "latest" => Pick::Latest,
            "random" => Pick::Random,
            id => Pick::Id(id.to_string()),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("backup {backup} is a {kind} backup, which this source's drills do not restore; pick one with --backup ID (`lifeboat list`)")]
    UnsupportedBackup { backup: String, kind: String },
    #[error("source '{source_name}' has no backup of kind {kind} in {store}; take one with `lifeboat backup --source {source_name}`")]
    NoBackups {
        source_name: String,
        store: String,
        kind: String,
    },
    #[error("backup {backup} is a {kind} backup, not {wanted} as --kind asks; leave --kind out, or pick a backup of that kind (`lifeboat list --source {source_name}`)")]
    KindMismatch {
        backup: String,
        kind: String,
        wanted: String,
        source_name: String,
    },
    #[error("the drill was interrupted; its scratch target was removed")]
    Interrupted,
    #[error("drill report {key} cannot be read: {detail}; delete it or restore it from a copy")]
    Report { key: String, detail: String },
}

impl crate::outcome::Classify for DrillError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Repository(e) => e.outcome(),
            Self::Storage(e) => e.outcome(),
            Self::Policy(e) => e.outcome(),
            Self::UnsupportedBackup { .. } | Self::KindMismatch { .. } => Outcome::Usage,
            Self::NoBackups { .. } => Outcome::NotFound,
            Self::Report { .. } => Outcome::Integrity,
            Self::Interrupted => Outcome::Failure,
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Passed,
    Failed,
    /// Not run because an earlier step failed.
    Skipped,
}

/// One line of the report's check table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
}

/// What a drill did and found. Stored in the repository as JSON (this
/// struct), Markdown and HTML.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    pub format: u32,
    /// Drill id, sortable by time like backup ids.
    pub id: String,
    pub policy: String,
    pub source: String,
    pub host: String,
    pub lifeboat_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub backup: String,
    pub backup_kind: String,
    pub backup_started_at: DateTime<Utc>,
    /// Where it was restored (`throwaway PostgreSQL 15.19 on 127.0.0.1:41234`).
    pub target: String,
    pub passed: bool,
    /// `check name: detail` of the first failing check.
    pub first_failure: Option<String>,
    /// Seconds from the drill's start to a usable restored target (scratch
    /// start, decode, restore, inventory).
    pub rto_seconds: Option<f64>,
    /// Seconds from the newest restored point to the end of the restore.
    pub rpo_seconds: Option<f64>,
    /// The newest point in time the restored data holds.
    pub restored_point: Option<DateTime<Utc>>,
    /// Bytes of the backup read from the repository.
    pub bytes_read: u64,
    pub checks: Vec<Check>,
    /// Scratch targets of earlier, killed drills removed before this one.
    #[serde(default)]
    pub leftovers_removed: Vec<scratch::Leftover>,
}

impl DrillReport {
    /// Checks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(|c| c.status == CheckStatus::Failed)
    }

    /// The report's objects: `drills/<policy>/<source>/<id>.{json,md,html}`.
    pub fn key(policy: &str, source: &str, id: &str, ext: &str) -> String {
        format!("{}{id}.{ext}", Self::prefix(policy, Some(source)))
    }

    pub fn prefix(policy: &str, source: Option<&str>) -> String {
        crate::layout::drills_prefix(policy, source)
    }
}

/// What the user asked for.
pub struct Options {
    pub pick: Pick,
    pub identities: Arc<Identities>,
    /// Where scratch folders go (the policy's `drill.scratch_dir`, else
    /// the system temp folder).
    pub scratch_dir: PathBuf,
    /// Drill only backups of this kind (default: whichever is picked).
    pub kind: Option<Kind>,
}

/// The kinds of PostgreSQL backup a drill restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A logical dump (pg_dump): restored database by database and
    /// compared with its inventory.
    Dump,
    /// A base backup (pg_basebackup) with the WAL archived after it:
    /// recovered to the newest archived point.
    Base,
}

/// The manifest kinds a drill of a source picks from.
fn kinds(kind: Option<Kind>, source: SourceKind<'_>) -> Vec<crate::repository::ManifestKind> {
    use crate::repository::ManifestKind as M;
    match (source, kind) {
        (SourceKind::Mysql(_), _) => vec![M::MysqlDump],
        (SourceKind::Kubernetes(_), _) => vec![M::KubernetesExport],
        (SourceKind::Postgres(_), Some(Kind::Dump)) => vec![M::PostgresDump],
        (SourceKind::Postgres(_), Some(Kind::Base)) => vec![M::PostgresBase],
        (SourceKind::Postgres(_), None) => vec![M::PostgresDump, M::PostgresBase],
    }
}

/// Checks collected in order.
#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn add(&mut self, name: impl Into<String>, passed: bool, detail: impl Into<String>) {
        self.0.push(Check {
            name: name.into(),
            status: if passed {
                CheckStatus::Passed
            } else {
                CheckStatus::Failed
            },
            detail: detail.into(),
        });
    }

    fn skip(&mut self, name: impl Into<String>, why: &str) {
        self.0.push(Check {
            name: name.into(),
            status: CheckStatus::Skipped,
            detail: why.to_string(),
        });
    }
}

/// Runs until shutdown is requested.
async fn interruptible<T>(work: impl std::future::Future<Output = T>) -> Result<T, DrillError> {
    tokio::select! {
        r = work => Ok(r),
        _ = crate::shutdown::requested() => Err(DrillError::Interrupted),
    }
}

/// What the restore step of a drill produced.
struct Restored {
    /// Where it was restored (`throwaway PostgreSQL 15 on ...`).
    target: String,
    rto: Option<f64>,
    rpo: Option<f64>,
    restored_point: Option<DateTime<Utc>>,
    /// Scratch targets of earlier, killed drills found on the way
    /// (namespaces, databases on a named server).
    leftovers: Vec<scratch::Leftover>,
}

impl Restored {
    fn nothing(target: impl Into<String>) -> Restored {
        Restored {
            target: target.into(),
            rto: None,
            rpo: None,
            restored_point: None,
            leftovers: Vec::new(),
        }
    }

    /// The target is usable now and holds data up to `point`.
    fn usable(&mut self, clock: Instant, point: DateTime<Utc>) {
        self.rto = Some(clock.elapsed().as_secs_f64());
        self.restored_point = Some(point);
        self.rpo = Some((Utc::now() - point).num_milliseconds() as f64 / 1000.0);
    }
}

/// Drills one source: picks a backup, restores it into a scratch target,
/// checks, measures, tears down. The report is returned, not stored (see
/// [`store`]).
pub async fn drill_source(
    repo: &Repository,
    policy: &Policy,
    source_name: &str,
    opts: &Options,
) -> Result<DrillReport, DrillError> {
    let clock = Instant::now();
    let started_at = Utc::now();
    let source = policy.source(source_name)?;
    // Stopping a leftover server blocks (pg_ctl): off the async workers.
    let mut leftovers = {
        let dir = opts.scratch_dir.clone();
        tokio::task::spawn_blocking(move || scratch::sweep(&dir))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "looking for leftovers of earlier drills failed");
                Vec::new()
            })
    };
    let manifest = pick(
        repo,
        policy.name.as_str(),
        source_name,
        &opts.pick,
        &kinds(opts.kind, source.kind()),
    )
    .await?;
    let id = crate::repository::new_backup_id(started_at);
    tracing::info!(drill = %id, backup = %manifest.id, kind = %manifest.kind, source = source_name, "drill started");
    let mut checks = Checks::default();
    let user_checks: Vec<&crate::policy::DrillCheck> = policy
        .drill
        .checks
        .iter()
        .filter(|c| c.source.as_str() == source_name)
        .collect();
    let drill = Drill {
        repo,
        policy,
        source_name,
        manifest: &manifest,
        id: &id,
        opts,
        clock,
        user_checks: &user_checks,
    };
    use crate::repository::ManifestKind as M;
    let mut restored = match (&manifest.kind, source.kind()) {
        (M::PostgresDump, SourceKind::Postgres(pg)) => drill.dump(pg, &mut checks).await?,
        (M::PostgresBase, SourceKind::Postgres(pg)) => drill.base(pg, &mut checks).await?,
        (M::MysqlDump, SourceKind::Mysql(my)) => drill.mysql(my, &mut checks).await?,
        (M::KubernetesExport, SourceKind::Kubernetes(k)) => {
            drill.kubernetes(k, &mut checks).await?
        }
        (other, _) => {
            return Err(DrillError::UnsupportedBackup {
                backup: manifest.id.clone(),
                kind: other.to_string(),
            })
        }
    };
    // Every object, read whole: stored and plaintext sizes and hashes.
    let verified = interruptible(crate::verify::verify(
        repo,
        std::slice::from_ref(&manifest),
        Some(opts.identities.clone()),
    ))
    .await?;
    let bad: Vec<String> = verified
        .iter()
        .filter(|o| o.status != crate::verify::Status::Ok)
        .map(|o| {
            format!(
                "{} {:?}: {}",
                o.key,
                o.status,
                o.detail.clone().unwrap_or_default()
            )
        })
        .collect();
    checks.add(
        "object hashes",
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "{} objects: stored and plaintext sha256 match the manifest",
                verified.len()
            )
        } else {
            bad.join("; ")
        },
    );
    match (policy.drill.max_rpo, restored.rpo) {
        (Some(max), Some(seconds)) => checks.add(
            "recovery point",
            seconds <= max.0.as_secs_f64(),
            format!(
                "restored data is {} old (max_rpo {})",
                report::human_seconds(seconds),
                humantime::format_duration(max.0)
            ),
        ),
        (Some(_), None) => checks.skip("recovery point", "nothing was restored"),
        (None, _) => {}
    }
    leftovers.append(&mut restored.leftovers);
    let checks = checks.0;
    let first_failure = checks
        .iter()
        .find(|c| c.status == CheckStatus::Failed)
        .map(|c| format!("{}: {}", c.name, c.detail));
    let report = DrillReport {
        format: REPORT_FORMAT,
        id,
        policy: policy.name.to_string(),
        source: source_name.to_string(),
        host: crate::lock::hostname(),
        lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        finished_at: Utc::now(),
        backup: manifest.id.clone(),
        backup_kind: manifest.kind.to_string(),
        backup_started_at: manifest.started_at,
        target: restored.target,
        passed: first_failure.is_none(),
        first_failure,
        rto_seconds: restored.rto,
        rpo_seconds: restored.rpo,
        restored_point: restored.restored_point,
        bytes_read: manifest.artifacts.iter().map(|a| a.stored.size).sum(),
        checks,
        leftovers_removed: leftovers,
    };
    tracing::info!(drill = %report.id, passed = report.passed, rto = ?report.rto_seconds, "drill finished");
    Ok(report)
}

/// One drill of one backup: what every restore path needs.
struct Drill<'a> {
    repo: &'a Repository,
    policy: &'a Policy,
    source_name: &'a str,
    manifest: &'a Manifest,
    id: &'a str,
    opts: &'a Options,
    clock: Instant,
    user_checks: &'a [&'a crate::policy::DrillCheck],
}

impl Drill<'_> {
    /// A dump: a new cluster, roles, then every database, each compared
    /// with the inventory taken at backup time.
    async fn dump(
        &self,
        pg_source: &crate::policy::PostgresSource,
        checks: &mut Checks,
    ) -> Result<Restored, DrillError> {
        if let Some(server) = &self.policy.drill.postgres.server {
            return self.dump_on_server(pg_source, server, checks).await;
        }
        let manifest = self.manifest;
        let major = crate::restore::pitr::server_major(&manifest.server_version);
        let started = interruptible(scratch::ScratchPostgres::start(
            &self.opts.scratch_dir,
            self.id,
            major,
            &self.policy.drill.postgres,
        ))
        .await?;
        // Without globals nothing creates the role a dump's objects usually
        // belong to. (A failure drops the cluster, which removes it.)
        let started = match started {
            Ok(cluster) if manifest.artifact("globals").is_none() => {
                match interruptible(cluster.create_postgres_role()).await? {
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
    async fn dump_on_server(
        &self,
        pg_source: &crate::policy::PostgresSource,
        server: &crate::policy::ScratchServer,
        checks: &mut Checks,
    ) -> Result<Restored, DrillError> {
        let manifest = self.manifest;
        let databases = dump_databases(manifest);
        let leftovers = interruptible(scratch::ScratchDatabases::sweep(server)).await?;
        let created = interruptible(scratch::ScratchDatabases::create(
            server, self.id, &databases,
        ))
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

    /// Runs the policy's checks on the restored target.
    async fn user_checks(
        &self,
        conn: &crate::source::postgres::PgConn,
        databases: &[(String, String)],
        restored: bool,
        checks: &mut Checks,
    ) -> Result<(), DrillError> {
        for c in self.user_checks {
            let name = format!("check: {}", c.name);
            if !restored {
                checks.skip(name, "the restore failed");
                continue;
            }
            let (passed, detail) = interruptible(user_check(conn, c, databases)).await?;
            checks.add(name, passed, detail);
        }
        Ok(())
    }

    /// A base backup: unpacked into a scratch data directory, checked with
    /// `pg_verifybackup`, WAL replayed to the newest archived point, the
    /// server promoted, then `pg_amcheck` (where installed) and the
    /// policy's checks.
    async fn base(
        &self,
        pg_source: &crate::policy::PostgresSource,
        checks: &mut Checks,
    ) -> Result<Restored, DrillError> {
        let manifest = self.manifest;
        let major = crate::restore::pitr::server_major(&manifest.server_version);
        let prepared = interruptible(scratch::ScratchPostgres::prepare(
            &self.opts.scratch_dir,
            self.id,
            major,
            &self.policy.drill.postgres,
            true,
        ))
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
        let policy_name = self.policy.name.as_str();
        let source = self.pg_source_name();
        // The newest point the archive reaches; a hole in it fails the
        // check, and the drill goes on to the point before the hole.
        let mut gap = false;
        let reader = pitr::EndReader {
            identities: &self.opts.identities,
            bin_dir: cluster.tools.bin_dir.as_deref(),
        };
        let planned = match interruptible(pitr::plan(
            self.repo,
            policy_name,
            source,
            pitr::Target::Latest,
            Some(&manifest.id),
            &datadir,
            Some(reader),
        ))
        .await?
        {
            Ok(plan) => Ok(plan),
            Err(pitr::PitrError::Gap(hole)) => {
                gap = true;
                checks.add("WAL archive", false, hole.to_string());
                // Up to the last whole record before the hole, read from
                // the archived WAL (the same plan as --until latest-reachable).
                interruptible(pitr::plan(
                    self.repo,
                    policy_name,
                    source,
                    pitr::Target::LatestReachable,
                    Some(&manifest.id),
                    &datadir,
                    Some(reader),
                ))
                .await?
            }
            Err(e) => Err(e),
        };
        let plan = match planned {
            Ok(p) => p,
            Err(e) => {
                checks.add("WAL archive", false, e.to_string());
                skip_rest(
                    checks,
                    1,
                    "the WAL archive cannot make the backup consistent",
                );
                remove(cluster, checks).await;
                return Ok(restored);
            }
        };
        // Fetched and checked against their hashes here; the server copies
        // them from the scratch folder.
        let staged = interruptible(self.stage_wal(&cluster, &plan)).await?;
        let wal_dir = match staged {
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
                dir
            }
            Err(e) => {
                if !gap {
                    checks.add("WAL archive", false, e.to_string());
                } else {
                    tracing::error!(error = %e, "fetching the WAL before the hole failed too");
                }
                skip_rest(checks, 1, "the WAL could not be fetched");
                remove(cluster, checks).await;
                return Ok(restored);
            }
        };
        let popts = pitr::PitrOptions {
            exe: PathBuf::new(),
            policy_file: PathBuf::new(),
            identity_file: PathBuf::new(),
            start: false,
            port: None,
            timeout: RECOVERY_TIMEOUT,
            bin_dir: cluster.tools.bin_dir.clone(),
            no_archive: true,
            restore_command: Some(format!("cp {}/%f %p", pitr::command_arg(&wal_dir))),
        };
        let executed = interruptible(pitr::execute(
            &plan,
            self.repo,
            self.opts.identities.clone(),
            &popts,
        ))
        .await?;
        match executed {
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
            }
            Err(pitr::PitrError::VerifyBackup(detail)) => {
                checks.add(
                    "restore base",
                    true,
                    format!("unpacked into {}", datadir.display()),
                );
                checks.add("pg_verifybackup", false, detail);
                skip_rest(checks, 3, "pg_verifybackup failed");
                remove(cluster, checks).await;
                return Ok(restored);
            }
            Err(e) => {
                checks.add("restore base", false, e.to_string());
                skip_rest(checks, 2, "the restore failed");
                remove(cluster, checks).await;
                return Ok(restored);
            }
        }
        let recovered = interruptible(self.recover(&mut cluster, &plan, &pg_source.user)).await?;
        let databases = match recovered {
            Ok((detail, point, databases)) => {
                checks.add("recovery", true, detail);
                restored.usable(self.clock, point);
                databases
            }
            Err(e) => {
                checks.add("recovery", false, e.to_string());
                skip_rest(checks, 4, "recovery failed");
                remove(cluster, checks).await;
                return Ok(restored);
            }
        };
        let amcheck = interruptible(amcheck(&cluster)).await?;
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

    /// A MySQL/MariaDB dump: a new server, the dump loaded and compared
    /// with its inventory (taken at the dump's consistency point), then
    /// the archived binlogs replayed to the newest archived event.
    async fn mysql(
        &self,
        my_source: &crate::policy::MysqlSource,
        checks: &mut Checks,
    ) -> Result<Restored, DrillError> {
        let manifest = self.manifest;
        let started = interruptible(scratch::ScratchMariaDb::start(
            &self.opts.scratch_dir,
            self.id,
            &self.policy.drill.mariadb,
        ))
        .await?;
        let skip_rest = |checks: &mut Checks, from: usize, why: &str| {
            for n in &["restore", "inventory", "binlog archive", "binlog replay"][from..] {
                checks.skip(*n, why);
            }
            skip_user_checks(self.user_checks, checks, why);
        };
        let server = match started {
            Ok(s) => s,
            Err(e) => {
                checks.add("scratch target", false, e.to_string());
                skip_rest(checks, 0, "no scratch target");
                return Ok(Restored::nothing("none (the scratch server did not start)"));
            }
        };
        let mut restored = Restored::nothing(format!(
            "throwaway {} on 127.0.0.1:{} ({})",
            server.version,
            server.conn.port,
            server.dir().display()
        ));
        checks.add("scratch target", true, restored.target.clone());
        let bin_dir = my_source.bin_dir.as_deref();
        let loaded = interruptible(async {
            let plan = my_restore::plan(manifest, &server.conn, false).await?;
            my_restore::execute(
                self.repo,
                plan,
                &server.conn,
                self.opts.identities.clone(),
                bin_dir,
            )
            .await
        })
        .await?;
        let databases = match loaded {
            Ok(r) => {
                checks.add(
                    "restore",
                    true,
                    format!(
                        "{} ({}) into {} in {}",
                        report::human_bytes(r.plan.dump.plaintext.size),
                        r.plan.databases.join(", "),
                        r.plan.target,
                        report::human_seconds(r.seconds)
                    ),
                );
                let (passed, detail) = inventory_detail(&r.inventory);
                checks.add("inventory", passed, detail);
                r.plan.databases
            }
            Err(e) => {
                checks.add("restore", false, e.to_string());
                skip_rest(checks, 1, "the restore failed");
                remove_mariadb(server, checks).await;
                return Ok(restored);
            }
        };
        // Without binlogs the data is as of the dump's snapshot.
        let mut point = manifest.started_at;
        // Binlogs are expected when the policy archives them or the
        // archive holds some (an archiver run by hand).
        let archived = interruptible(crate::binlog::load_state(
            self.repo,
            self.policy.name.as_str(),
            self.source_name,
        ))
        .await?;
        let none_archived = archived.as_ref().is_ok_and(|a| a.is_empty());
        if manifest.binlog.is_none() {
            checks.skip(
                "binlog archive",
                "the server had no binlog when the dump was taken",
            );
            checks.skip("binlog replay", "no binlog position in the backup");
        } else if none_archived && !my_source.archive_binlogs {
            checks.skip(
                "binlog archive",
                "the source does not archive binlogs (archive_binlogs is off and the archive holds none)",
            );
            checks.skip(
                "binlog replay",
                "no archived binlog: the dump is restored as of its consistency point",
            );
        } else if let Err(e) = archived {
            checks.add("binlog archive", false, e.to_string());
            checks.skip("binlog replay", "the binlog archive cannot be read");
        } else {
            let policy = self.policy.name.as_str();
            let reader = my_restore::EndReader {
                identities: &self.opts.identities,
            };
            let planned = interruptible(my_restore::plan_replay(
                self.repo,
                policy,
                self.source_name,
                manifest,
                &my_restore::MyTarget::Latest,
                Some(reader),
            ))
            .await?;
            let describe = |p: &my_restore::ReplayPlan| {
                format!(
                    "{} files from {}:{} on, newest copied {}{}",
                    p.files.len(),
                    p.from.file,
                    p.from.position,
                    p.last_archived_at()
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                        .unwrap_or_else(|| "never".into()),
                    p.end
                        .as_ref()
                        .and_then(|e| e.newest_event)
                        .map(|t| format!(
                            ", newest archived event stamped {}",
                            t.format("%Y-%m-%d %H:%M:%S UTC")
                        ))
                        .unwrap_or_default()
                )
            };
            let planned = match planned {
                Ok(p) => {
                    checks.add("binlog archive", true, describe(&p));
                    Ok(p)
                }
                // A hole: the check fails, and the replay goes on up to it.
                Err(e @ my_restore::ReplayError::Gap(_)) => {
                    checks.add("binlog archive", false, e.to_string());
                    interruptible(my_restore::plan_replay(
                        self.repo,
                        policy,
                        self.source_name,
                        manifest,
                        &my_restore::MyTarget::LatestReachable,
                        Some(reader),
                    ))
                    .await?
                }
                Err(e) => Err(e),
            };
            match planned {
                Err(e) => {
                    if !checks.0.iter().any(|c| c.name == "binlog archive") {
                        checks.add("binlog archive", false, e.to_string());
                    }
                    checks.skip("binlog replay", "no binlog to replay");
                }
                Ok(plan) => {
                    let began = Instant::now();
                    let replayed = interruptible(my_restore::replay(
                        self.repo,
                        &plan,
                        &server.conn,
                        self.opts.identities.clone(),
                        bin_dir,
                    ))
                    .await?;
                    match replayed {
                        Ok(newest_event) => {
                            checks.add(
                                "binlog replay",
                                true,
                                format!(
                                    "{} files replayed ({}) in {}; newest event {}",
                                    plan.files.len(),
                                    plan.files
                                        .iter()
                                        .map(|(f, whole)| if *whole {
                                            f.clone()
                                        } else {
                                            format!("{f} (in progress)")
                                        })
                                        .collect::<Vec<_>>()
                                        .join(", "),
                                    report::human_seconds(began.elapsed().as_secs_f64()),
                                    newest_event
                                        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                                        .unwrap_or_else(|| "none".into())
                                ),
                            );
                            // The newest event replayed, as for WAL: the
                            // copy's own time would claim events it lacks.
                            // No later than that copy, though: the source's
                            // clock may run ahead of lifeboat's.
                            if let Some(at) = newest_event {
                                let at = plan.last_archived_at().map_or(at, |c| at.min(c));
                                point = point.max(at);
                            }
                        }
                        Err(e) => {
                            checks.add("binlog replay", false, e.to_string());
                            skip_user_checks(self.user_checks, checks, "the binlog replay failed");
                            remove_mariadb(server, checks).await;
                            return Ok(restored);
                        }
                    }
                }
            }
        }
        restored.usable(self.clock, point);
        for c in self.user_checks {
            let (passed, detail) = interruptible(mysql_check(&server.conn, c, &databases)).await?;
            checks.add(format!("check: {}", c.name), passed, detail);
        }
        remove_mariadb(server, checks).await;
        Ok(restored)
    }

    /// A Kubernetes export: restored into scratch namespaces with the
    /// harmless-copy rules, every applied object read back, the policy's
    /// kind counts checked, the namespaces deleted. Also returns the
    /// scratch namespaces of earlier, killed drills it deleted.
    async fn kubernetes(
        &self,
        k: &crate::policy::KubernetesSource,
        checks: &mut Checks,
    ) -> Result<Restored, DrillError> {
        use crate::restore::kubernetes as kr;
        use crate::source::kubernetes::{Cluster, ConnectOptions};
        let manifest = self.manifest;
        let skip_rest = |checks: &mut Checks, from: usize, why: &str| {
            for n in &["restore", "objects"][from..] {
                checks.skip(*n, why);
            }
            skip_user_checks(self.user_checks, checks, why);
        };
        let connected = interruptible(async {
            let cluster = Cluster::connect(&ConnectOptions::from_source(k))
                .await
                .map_err(|e| e.to_string())?;
            let discovery = cluster.discover().await.map_err(|e| e.to_string())?;
            let ns_type = kube::namespace_type(&discovery).map_err(|e| e.to_string())?;
            Ok::<_, String>((cluster, discovery, ns_type))
        })
        .await?;
        let (cluster, discovery, ns_type) = match connected {
            Ok(c) => c,
            Err(e) => {
                checks.add("scratch target", false, e);
                skip_rest(checks, 0, "no scratch namespace");
                return Ok(Restored::nothing("none (the cluster cannot be reached)"));
            }
        };
        let leftovers = interruptible(kube::sweep(&cluster, &ns_type)).await?;
        // The export is read and verified whole before anything is applied.
        let loaded = {
            let (repo, m, ids) = (
                self.repo.clone(),
                manifest.clone(),
                self.opts.identities.clone(),
            );
            match kube::on_blocking_thread(move || async move { kr::load(&repo, &m, ids).await })
                .await
            {
                Ok(loaded) => loaded.ok_or(DrillError::Interrupted)?,
                // Nothing made yet: a bug, reported as one.
                Err(panic) => panic!("reading the export panicked: {panic}"),
            }
        };
        let objects = match loaded {
            Ok(o) => o,
            Err(e) => {
                checks.add(
                    "scratch target",
                    false,
                    format!("not created: the export cannot be read: {e}"),
                );
                skip_rest(checks, 0, "the export cannot be read");
                let mut r = Restored::nothing("none (the export cannot be read)");
                r.leftovers = leftovers;
                return Ok(r);
            }
        };
        let sources: Vec<String> = objects
            .iter()
            .filter_map(|e| kr::home_namespace(&e.obj).map(str::to_string))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mapping = kube::scratch_names(self.id, &sources);
        let names: Vec<String> = mapping.values().cloned().collect();
        let mut restored = Restored::nothing(format!(
            "scratch namespaces {} on {} (context {})",
            mapping
                .iter()
                .map(|(from, to)| format!("{to} (from {from})"))
                .collect::<Vec<_>>()
                .join(", "),
            cluster.server,
            cluster.context
        ));
        restored.leftovers = leftovers;
        // From here on the namespaces are deleted on every path, an
        // interruption included.
        let body = async {
            // The scratch namespaces were just made: into_existing. They
            // get the backup's labels and annotations (what a copy keeps),
            // so that admission rules keyed on them apply as in production.
            let opts = kr::Options {
                namespace_map: mapping.clone(),
                into_existing: true,
                ..Default::default()
            };
            let mut plan =
                kr::plan(manifest, objects, &opts).map_err(|e| ("restore", e.to_string()))?;
            let scratch = kube::scratch_namespaces(&mut plan, self.id);
            kube::create(
                &cluster,
                &discovery,
                &ns_type,
                &scratch,
                &self.policy.drill.kubernetes,
            )
            .await
            .map_err(|e| ("scratch target", e.to_string()))?;
            let (c, id) = (cluster.clone(), manifest.id.clone());
            let report = kube::on_blocking_thread(move || async move {
                kr::execute(&c, plan, &opts, false, &id).await
            })
            .await
            .map_err(|panic| {
                (
                    "restore",
                    format!("the restore panicked (a bug; please report it): {panic}"),
                )
            })?
            .ok_or(("interrupted", String::new()))?
            .map_err(|e| ("restore", e.to_string()))?;
            Ok::<_, (&str, String)>(report)
        };
        let outcome = interruptible(body).await;
        let report = match outcome {
            Err(interrupted) => {
                kube::delete_logged(&cluster, &ns_type, &names).await;
                return Err(interrupted);
            }
            Ok(Err(("interrupted", _))) => {
                kube::delete_logged(&cluster, &ns_type, &names).await;
                return Err(DrillError::Interrupted);
            }
            Ok(Err((step, e))) => {
                if step == "scratch target" {
                    checks.add("scratch target", false, e);
                    skip_rest(checks, 0, "no scratch namespace");
                } else {
                    checks.add("scratch target", true, restored.target.clone());
                    checks.add("restore", false, e);
                    skip_rest(checks, 1, "the restore failed");
                }
                self.delete_namespaces(&cluster, &ns_type, &names, checks)
                    .await;
                return Ok(restored);
            }
            Ok(Ok(report)) => report,
        };
        checks.add("scratch target", true, restored.target.clone());
        let count = |o: kr::Outcome| report.count(o);
        let failed: Vec<String> = report
            .objects
            .iter()
            .filter(|o| o.outcome == kr::Outcome::Failed)
            .take(5)
            .map(|o| {
                format!(
                    "{} {}/{}: {}",
                    o.kind,
                    o.namespace.as_deref().unwrap_or("-"),
                    o.name,
                    o.detail
                )
            })
            .collect();
        checks.add(
            "restore",
            failed.is_empty(),
            if failed.is_empty() {
                format!(
                    "{} objects created, {} updated, {} unchanged, {} skipped ({}), {} not selected (cluster-scoped) in {}",
                    count(kr::Outcome::Created),
                    count(kr::Outcome::Updated),
                    count(kr::Outcome::Unchanged),
                    count(kr::Outcome::Skipped),
                    kr::describe_skips(&report.skipped_by_reason()),
                    report.not_selected,
                    report::human_seconds(report.seconds)
                )
            } else {
                format!("{} objects failed: {}", count(kr::Outcome::Failed), failed.join("; "))
            },
        );
        // Every object applied is there, read back from the server.
        let read_back = interruptible(async {
            let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
            let mut missing = Vec::new();
            for o in &report.objects {
                if !matches!(
                    o.outcome,
                    kr::Outcome::Created | kr::Outcome::Updated | kr::Outcome::Unchanged
                ) {
                    continue;
                }
                let Some(rt) = discovery.find(&o.api_version, &o.kind) else {
                    missing.push(format!(
                        "{} {} (type unknown to the server)",
                        o.kind, o.name
                    ));
                    continue;
                };
                match cluster.get(rt, o.namespace.as_deref(), &o.name).await {
                    Ok(Some(_)) => *kinds.entry(o.kind.clone()).or_default() += 1,
                    Ok(None) => missing.push(format!(
                        "{} {}/{}",
                        o.kind,
                        o.namespace.as_deref().unwrap_or("-"),
                        o.name
                    )),
                    Err(e) => missing.push(format!("{} {}: {e}", o.kind, o.name)),
                }
            }
            (kinds, missing)
        })
        .await;
        let (kinds, missing) = match read_back {
            Ok(r) => r,
            Err(interrupted) => {
                kube::delete_logged(&cluster, &ns_type, &names).await;
                return Err(interrupted);
            }
        };
        let total: usize = kinds.values().sum();
        checks.add(
            "objects",
            missing.is_empty(),
            if missing.is_empty() {
                format!(
                    "{total} objects read back: {}",
                    kinds
                        .iter()
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                format!(
                    "{} missing after the restore: {}",
                    missing.len(),
                    missing.join("; ")
                )
            },
        );
        if failed.is_empty() && missing.is_empty() {
            // An export is a listing as of its start.
            restored.usable(self.clock, manifest.started_at);
        }
        for c in self.user_checks {
            let name = format!("check: {}", c.name);
            let kind = c.kind.as_deref().unwrap_or("");
            let counted = interruptible(kube::count_kind(&cluster, &discovery, kind, &names)).await;
            let counted = match counted {
                Ok(r) => r,
                Err(interrupted) => {
                    kube::delete_logged(&cluster, &ns_type, &names).await;
                    return Err(interrupted);
                }
            };
            let (passed, detail) = match counted {
                Ok(n) => judge(c, Some(Some(n.to_string()))),
                Err(e) => (false, e.to_string()),
            };
            checks.add(name, passed, format!("{kind}: {detail}"));
        }
        self.delete_namespaces(&cluster, &ns_type, &names, checks)
            .await;
        Ok(restored)
    }

    async fn delete_namespaces(
        &self,
        cluster: &crate::source::kubernetes::Cluster,
        ns_type: &crate::source::kubernetes::ResourceType,
        names: &[String],
        checks: &mut Checks,
    ) {
        let deleted = kube::delete(cluster, ns_type, names).await;
        checks.add(
            "scratch removed",
            deleted.is_ok(),
            match deleted {
                Ok(()) => format!(
                    "namespaces {} deleted (the cluster removes what is in them)",
                    names.join(", ")
                ),
                Err(e) => format!(
                    "{e}; delete them by hand (`kubectl delete namespace -l {}={}`)",
                    kube::MANAGED_BY,
                    kube::MANAGED_BY_VALUE
                ),
            },
        );
    }

    fn pg_source_name(&self) -> &str {
        self.source_name
    }

    /// Fetches the WAL recovery will replay into `<scratch>/wal`: every
    /// history file, and the segments of the timelines crossed from the
    /// backup's start to the newest point the plan reaches.
    async fn stage_wal(
        &self,
        cluster: &scratch::ScratchPostgres,
        plan: &pitr::PitrPlan,
    ) -> Result<(PathBuf, usize), RecoveryError> {
        let dir = cluster.make_dir("wal")?;
        let store = self.repo.store();
        let listing = crate::wal::archive::list(
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
        let wanted: Vec<&crate::wal::archive::ArchivedFile> = listing
            .files
            .iter()
            .filter(|f| match f.file {
                crate::wal::WalFile::History { .. } => true,
                crate::wal::WalFile::Segment { timeline, .. } => {
                    plan.reach.path.contains(&timeline)
                        && f.file.segno(size).is_some_and(|s| s >= first && s <= last)
                }
                _ => false,
            })
            .collect();
        for f in &wanted {
            let dest = dir.join(&f.name);
            crate::wal::archive::fetch_to(store.as_ref(), f, &self.opts.identities, &dest)
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
    async fn recover(
        &self,
        cluster: &mut scratch::ScratchPostgres,
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
        source: crate::wal::archive::WalError,
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
    Connect(#[from] crate::source::postgres::PgError),
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
        RecoveryError::Query(crate::source::postgres::error_detail(&e))
    }
}

/// The databases of a PostgreSQL dump, in the manifest's order.
fn dump_databases(manifest: &Manifest) -> Vec<String> {
    manifest
        .artifacts
        .iter()
        .filter(|a| a.kind == "pg-dump-custom")
        .filter_map(|a| a.database.clone())
        .collect()
}

/// How long a drill waits for WAL replay.
const RECOVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Stops and removes the scratch cluster, as a check.
async fn remove(cluster: scratch::ScratchPostgres, checks: &mut Checks) {
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

/// Stops and removes the scratch MariaDB server, as a check.
async fn remove_mariadb(server: scratch::ScratchMariaDb, checks: &mut Checks) {
    let removed = server.remove().await;
    checks.add(
        "scratch removed",
        removed.is_ok(),
        match removed {
            Ok(()) => "server stopped, folder removed".to_string(),
            Err(e) => e.to_string(),
        },
    );
}

fn skip_user_checks(user_checks: &[&crate::policy::DrillCheck], checks: &mut Checks, why: &str) {
    for c in user_checks {
        checks.skip(format!("check: {}", c.name), why);
    }
}

/// The report line of an inventory comparison.
fn inventory_detail(inv: &crate::restore::InventoryCheck) -> (bool, String) {
    if inv.passed() {
        return (
            true,
            if inv.large_objects_expected > 0 {
                format!(
                    "{} tables, {} rows, {} large objects: all match the backup",
                    inv.tables_checked, inv.rows_expected, inv.large_objects_expected
                )
            } else {
                format!(
                    "{} tables, {} rows: all match the backup",
                    inv.tables_checked, inv.rows_expected
                )
            },
        );
    }
    let mut parts: Vec<String> = inv
        .mismatches
        .iter()
        .map(|m| match m.found {
            Some(f) => format!("{}: expected {} rows, found {f}", m.table, m.expected),
            None => format!("{}: expected {} rows, table missing", m.table, m.expected),
        })
        .collect();
    if inv.large_objects_expected != inv.large_objects_found {
        parts.push(format!(
            "large objects: expected {}, found {}",
            inv.large_objects_expected, inv.large_objects_found
        ));
    }
    (false, parts.join("; "))
}

/// `pg_amcheck --all` on the restored cluster (tables and B-tree
/// indexes); None when the tool is not installed.
async fn amcheck(cluster: &scratch::ScratchPostgres) -> Option<(bool, String)> {
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
async fn restore_all(
    repo: &Repository,
    manifest: &Manifest,
    databases: &[(String, String)],
    conn: &crate::source::postgres::PgConn,
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
        let result = interruptible(async {
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

/// Runs one user check on the restored data.
async fn user_check(
    conn: &crate::source::postgres::PgConn,
    check: &crate::policy::DrillCheck,
    databases: &[(String, String)],
) -> (bool, String) {
    // The check names the backup's database; it was restored as the second.
    let database = match (&check.database, databases) {
        (Some(d), _) => databases
            .iter()
            .find(|(from, _)| from == d)
            .map(|(_, to)| to.clone())
            .unwrap_or_else(|| d.clone()),
        (None, [(_, only)]) => only.clone(),
        (None, _) => {
            return (
                false,
                format!(
                "the backup holds several databases ({}); name one with `database:` in the check",
                databases
                    .iter()
                    .map(|(from, _)| from.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            )
        }
    };
    let client = match conn.connect(&database).await {
        Ok(c) => c,
        Err(e) => return (false, e.to_string()),
    };
    let rows = match client.simple_query(&check.sql).await {
        Ok(r) => r,
        Err(e) => {
            return (
                false,
                format!(
                    "the query failed in {database}: {}",
                    crate::source::postgres::error_detail(&e)
                ),
            )
        }
    };
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
        _ => None,
    });
    judge(check, value)
}

/// Runs one user check on a restored MySQL/MariaDB server.
async fn mysql_check(
    conn: &crate::source::mysql::MyConn,
    check: &crate::policy::DrillCheck,
    databases: &[String],
) -> (bool, String) {
    use mysql_async::prelude::Queryable;
    let database = match (&check.database, databases) {
        (Some(d), _) => Some(d.clone()),
        (None, [only]) => Some(only.clone()),
        (None, _) => None,
    };
    let mut c = match conn.connect().await {
        Ok(c) => c,
        Err(e) => return (false, e.to_string()),
    };
    if let Some(db) = &database {
        let used = c
            .query_drop(format!("USE {}", crate::source::mysql::quote_ident(db)))
            .await;
        if let Err(e) = used {
            return (false, format!("cannot use database {db}: {e}"));
        }
    }
    let row: Result<Option<mysql_async::Row>, _> = c.query_first(check.sql.as_str()).await;
    let value: Option<Option<String>> = match row {
        Ok(Some(r)) => Some(match r.as_ref(0) {
            None | Some(mysql_async::Value::NULL) => None,
            Some(mysql_async::Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Some(v) => Some(v.as_sql(true).trim_matches('\'').to_string()),
        }),
        Ok(None) => None,
        Err(e) => {
            return (
                false,
                format!(
                    "the query failed in {}: {e}",
                    database.as_deref().unwrap_or("(no database)")
                ),
            )
        }
    };
    judge(check, value)
}

/// Compares a check's result with its expectation.
fn judge(check: &crate::policy::DrillCheck, value: Option<Option<String>>) -> (bool, String) {
    let shown = match &value {
        Some(Some(v)) => v.clone(),
        Some(None) => "NULL".into(),
        None => "no row".into(),
    };
    match check.expect.holds(value.flatten().as_deref()) {
        Ok(true) => (true, format!("{shown} (expected {})", check.expect)),
        Ok(false) => (false, format!("got {shown}, expected {}", check.expect)),
        Err(e) => (false, e),
    }
}

/// The backup to drill, of one of `kinds`.
async fn pick(
    repo: &Repository,
    policy: &str,
    source: &str,
    pick: &Pick,
    kinds: &[crate::repository::ManifestKind],
) -> Result<Manifest, DrillError> {
    if let Pick::Id(id) = pick {
        let manifest = repo
            .find_backup(policy, source, &BackupSelector::Id(id.clone()))
            .await?;
        // A kind the source's drills do not restore at all is refused
        // later, naming it; only a --kind the backup contradicts is here.
        if let [wanted] = kinds {
            if manifest.kind != *wanted && manifest.kind.is_postgres() {
                return Err(DrillError::KindMismatch {
                    backup: manifest.id,
                    kind: manifest.kind.to_string(),
                    wanted: wanted.to_string(),
                    source_name: source.to_string(),
                });
            }
        }
        return Ok(manifest);
    }
    let mut listing = repo.list_backups(policy, Some(source)).await?;
    listing.backups.retain(|m| kinds.contains(&m.kind));
    if let [kind] = kinds {
        if *pick == Pick::Latest {
            // Says so when an unreadable manifest may be the newest.
            return Ok(repo
                .find_backup_of_kind(policy, source, &BackupSelector::Latest, Some(kind.clone()))
                .await?);
        }
    }
    if listing.backups.is_empty() {
        return Err(DrillError::NoBackups {
            source_name: source.to_string(),
            store: repo.describe(),
            kind: kinds
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(" or "),
        });
    }
    let i = match pick {
        Pick::Random => rand::random::<u32>() as usize % listing.backups.len(),
        _ => listing.backups.len() - 1,
    };
    Ok(listing.backups.swap_remove(i))
}

/// Stores a report in the repository: JSON (the record), Markdown and an
/// HTML page with the RTO history of the source's earlier drills.
pub async fn store(repo: &Repository, report: &DrillReport) -> Result<Vec<String>, DrillError> {
    let history = history(repo, &report.policy, Some(&report.source))
        .await
        .map(|(reports, _)| reports)
        .unwrap_or_default();
    let store = repo.store();
    let mut keys = Vec::new();
    for (ext, body) in [
        (
            "json",
            serde_json::to_vec_pretty(report).expect("report serializes"),
        ),
        ("md", report::markdown(report).into_bytes()),
        ("html", report::html(report, &history).into_bytes()),
    ] {
        let key = DrillReport::key(&report.policy, &report.source, &report.id, ext);
        store.put(&key, body.into()).await?;
        keys.push(key);
    }
    Ok(keys)
}

/// Unreadable report documents met by [`history`].
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    pub key: String,
    pub error: String,
}

/// Every stored drill report of a policy (one source, or all), oldest first.
pub async fn history(
    repo: &Repository,
    policy: &str,
    source: Option<&str>,
) -> Result<(Vec<DrillReport>, Vec<Unreadable>), DrillError> {
    let store = repo.store();
    let mut reports = Vec::new();
    let mut unreadable = Vec::new();
    for obj in store.list(&DrillReport::prefix(policy, source)).await? {
        if !obj.key.ends_with(".json") {
            continue;
        }
        let parsed = store
            .get_bytes(&obj.key)
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<DrillReport>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(r) => reports.push(r),
            Err(error) => unreadable.push(Unreadable {
                key: obj.key.clone(),
                error,
            }),
        }
    }
    reports.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    Ok((reports, unreadable))
}

/// The newest stored report of a source (ids sort by time), if any: what
/// the daemon's drill metrics show.
pub async fn latest(
    repo: &Repository,
    policy: &str,
    source: &str,
) -> Result<Option<DrillReport>, DrillError> {
    let store = repo.store();
    let newest = store
        .list(&DrillReport::prefix(policy, Some(source)))
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".json"))
        .max();
    let Some(key) = newest else {
        return Ok(None);
    };
    let bytes = store.get_bytes(&key).await?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| DrillError::Report {
            key,
            detail: e.to_string(),
        })
}
