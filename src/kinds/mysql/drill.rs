//! MySQL/MariaDB drills: a dump loaded into a scratch MariaDB.

use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::drill::{
    interruptible, inventory_detail, judge, report, skip_user_checks, Checks, Drill, DrillError,
    Restored,
};
use crate::kinds::mysql::restore as my_restore;
use crate::kinds::mysql::scratch;
use crate::kinds::mysql::source::MyConn;

impl Drill<'_> {
    /// A MySQL/MariaDB dump: a new server, the dump loaded and compared
    /// with its inventory (taken at the dump's consistency point), then
    /// the archived binlogs replayed to the newest archived event.
    pub(crate) async fn mysql(
        &self,
        my_source: &crate::kinds::mysql::config::MysqlSource,
        checks: &mut Checks,
    ) -> Result<Restored, DrillError> {
        let started = interruptible(
            &self.opts.cancel,
            scratch::ScratchMariaDb::start(
                &self.opts.scratch_dir,
                self.id,
                &self.policy.drill.mariadb,
            ),
        )
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
        let databases = match self.load_dump(&server.conn, bin_dir, checks).await? {
            Some(databases) => databases,
            None => {
                skip_rest(checks, 1, "the restore failed");
                remove_mariadb(server, checks).await;
                return Ok(restored);
            }
        };
        let point = match self
            .binlogs(my_source, &server.conn, bin_dir, checks)
            .await?
        {
            Binlogs::Reached(point) => point,
            Binlogs::ReplayFailed => {
                remove_mariadb(server, checks).await;
                return Ok(restored);
            }
        };
        restored.usable(self.clock, point);
        for c in self.user_checks {
            let (passed, detail) =
                interruptible(&self.opts.cancel, mysql_check(&server.conn, c, &databases)).await?;
            checks.add(format!("check: {}", c.name), passed, detail);
        }
        remove_mariadb(server, checks).await;
        Ok(restored)
    }

    /// Loads the dump into the scratch server: the "restore" and
    /// "inventory" checks. The restored databases, or None (after a failed
    /// "restore" check) when the dump could not be loaded.
    async fn load_dump(
        &self,
        conn: &MyConn,
        bin_dir: Option<&std::path::Path>,
        checks: &mut Checks,
    ) -> Result<Option<Vec<String>>, DrillError> {
        let loaded = interruptible(&self.opts.cancel, async {
            let plan = my_restore::plan(self.manifest, conn, false).await?;
            my_restore::execute(self.repo, plan, conn, self.opts.identities.clone(), bin_dir).await
        })
        .await?;
        Ok(match loaded {
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
                Some(r.plan.databases)
            }
            Err(e) => {
                checks.add("restore", false, e.to_string());
                None
            }
        })
    }

    /// The "binlog archive" and "binlog replay" checks: the archived
    /// binlogs planned and replayed onto the loaded dump, when there are
    /// any to expect.
    async fn binlogs(
        &self,
        my_source: &crate::kinds::mysql::config::MysqlSource,
        conn: &MyConn,
        bin_dir: Option<&std::path::Path>,
        checks: &mut Checks,
    ) -> Result<Binlogs, DrillError> {
        let manifest = self.manifest;
        // Without binlogs the data is as of the dump's snapshot.
        let point = manifest.started_at;
        // Binlogs are expected when the policy archives them or the
        // archive holds some (an archiver run by hand).
        let archived = interruptible(
            &self.opts.cancel,
            crate::kinds::mysql::binlog::load_state(
                self.repo,
                self.policy.name.as_str(),
                self.source_name,
            ),
        )
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
            match self.plan_binlog_replay(checks).await? {
                Err(e) => {
                    if !checks.0.iter().any(|c| c.name == "binlog archive") {
                        checks.add("binlog archive", false, e.to_string());
                    }
                    checks.skip("binlog replay", "no binlog to replay");
                }
                Ok(plan) => {
                    return self
                        .replay_binlogs(&plan, conn, bin_dir, point, checks)
                        .await
                }
            }
        }
        Ok(Binlogs::Reached(point))
    }

    /// Plans the replay to the newest archived event: a passed "binlog
    /// archive" check, or, on a hole, a failed one and the plan up to it.
    async fn plan_binlog_replay(
        &self,
        checks: &mut Checks,
    ) -> Result<Result<my_restore::ReplayPlan, my_restore::ReplayError>, DrillError> {
        let manifest = self.manifest;
        let policy = self.policy.name.as_str();
        let reader = my_restore::EndReader {
            identities: &self.opts.identities,
        };
        let planned = interruptible(
            &self.opts.cancel,
            my_restore::plan_replay(
                self.repo,
                policy,
                self.source_name,
                manifest,
                &my_restore::MyTarget::Latest,
                Some(reader),
            ),
        )
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
        Ok(match planned {
            Ok(p) => {
                checks.add("binlog archive", true, describe(&p));
                Ok(p)
            }
            // A hole: the check fails, and the replay goes on up to it.
            Err(e @ my_restore::ReplayError::Gap(_)) => {
                checks.add("binlog archive", false, e.to_string());
                interruptible(
                    &self.opts.cancel,
                    my_restore::plan_replay(
                        self.repo,
                        policy,
                        self.source_name,
                        manifest,
                        &my_restore::MyTarget::LatestReachable,
                        Some(reader),
                    ),
                )
                .await?
            }
            Err(e) => Err(e),
        })
    }

    /// Replays the planned binlogs: the "binlog replay" check. On a
    /// failure the user checks are skipped.
    async fn replay_binlogs(
        &self,
        plan: &my_restore::ReplayPlan,
        conn: &MyConn,
        bin_dir: Option<&std::path::Path>,
        mut point: DateTime<Utc>,
        checks: &mut Checks,
    ) -> Result<Binlogs, DrillError> {
        let began = Instant::now();
        let replayed = interruptible(
            &self.opts.cancel,
            my_restore::replay(self.repo, plan, conn, self.opts.identities.clone(), bin_dir),
        )
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
                Ok(Binlogs::Reached(point))
            }
            Err(e) => {
                checks.add("binlog replay", false, e.to_string());
                skip_user_checks(self.user_checks, checks, "the binlog replay failed");
                Ok(Binlogs::ReplayFailed)
            }
        }
    }
}

/// Where the binlog steps leave the restored data.
enum Binlogs {
    /// Usable, holding data up to this point (the dump's own when no
    /// binlog was replayed).
    Reached(DateTime<Utc>),
    /// The replay failed (its check added, the user checks skipped).
    ReplayFailed,
}

/// Stops and removes the scratch MariaDB server, as a check.
pub(super) async fn remove_mariadb(server: scratch::ScratchMariaDb, checks: &mut Checks) {
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

/// Runs one user check on a restored MySQL/MariaDB server.
pub(super) async fn mysql_check(
    conn: &crate::kinds::mysql::source::MyConn,
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
            .query_drop(format!(
                "USE {}",
                crate::kinds::mysql::source::quote_ident(db)
            ))
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
