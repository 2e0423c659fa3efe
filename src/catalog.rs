//! The catalog: a local SQLite database (sqlx, migrations embedded in the
//! binary) with an index of the repository's backups and the history of
//! runs (start, end, outcome, bytes, error).
//!
//! The repository stays the source of truth: nothing reads the catalog to
//! decide what to restore or delete. [`Catalog::rebuild`] recreates the
//! backup index from the manifests, so a lost catalog loses only the run
//! history, never a backup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use crate::repository::{Manifest, Repository, RepositoryError};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot create the catalog's folder {path}: {source}; pass --catalog PATH (or LIFEBOAT_CATALOG) to put it elsewhere")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the catalog {path}: {source}; it can be deleted and rebuilt with `lifeboat catalog rebuild`")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot migrate the catalog {path}: {source}; a newer lifeboat may have written it: delete it and run `lifeboat catalog rebuild`")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error("catalog {path}: {what} failed: {source}")]
    Query {
        path: PathBuf,
        what: &'static str,
        source: sqlx::Error,
    },
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

impl crate::outcome::Classify for CatalogError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Repository(e) => e.outcome(),
            Self::Folder { .. } | Self::Open { .. } | Self::Migrate { .. } | Self::Query { .. } => {
                Outcome::Failure
            }
        }
    }
}

/// Where the catalog lives by default: `$XDG_STATE_HOME/lifeboat/`, else
/// `~/.local/state/lifeboat/`, else the current folder.
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        });
    match base {
        Some(b) => b.join("lifeboat").join("catalog.db"),
        None => PathBuf::from("lifeboat-catalog.db"),
    }
}

/// An open catalog.
#[derive(Clone)]
pub struct Catalog {
    pool: SqlitePool,
    path: PathBuf,
}

/// One run, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub policy: String,
    pub source: String,
    pub operation: String,
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: String,
    pub stored_bytes: Option<i64>,
    pub read_bytes: Option<i64>,
    pub backup_id: Option<String>,
    pub error: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct RunEnd<'a> {
    pub outcome: &'a str,
    pub stored_bytes: Option<u64>,
    pub read_bytes: Option<u64>,
    pub backup_id: Option<&'a str>,
    pub error: Option<String>,
}

impl Catalog {
    /// Opens (creating if needed) and migrates the catalog at `path`.
    pub async fn open(path: &Path) -> Result<Catalog, CatalogError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CatalogError::Folder {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        // Two processes creating the same catalog at once (the daemon
        // starting while `lifeboat status` runs) race: switching the new
        // file to WAL finds it locked, or the first migration finds the
        // other's tables. The loser tries again and sees a migrated catalog.
        let mut attempt = 1;
        let pool = loop {
            match Self::connect_and_migrate(path).await {
                Ok(pool) => break pool,
                Err(e) if attempt < 5 => {
                    tracing::debug!(error = %e, "opening the catalog raced with another process; again");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Catalog {
            pool,
            path: path.to_path_buf(),
        })
    }

    async fn connect_and_migrate(path: &Path) -> Result<SqlitePool, CatalogError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| CatalogError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        MIGRATIONS
            .run(&pool)
            .await
            .map_err(|source| CatalogError::Migrate {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(pool)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, what: &'static str) -> impl FnOnce(sqlx::Error) -> CatalogError + '_ {
        move |source| CatalogError::Query {
            path: self.path.clone(),
            what,
            source,
        }
    }

    /// Adds (or refreshes) one backup in the index.
    pub async fn record_backup(&self, m: &Manifest) -> Result<(), CatalogError> {
        insert_backup(&self.pool, m)
            .await
            .map_err(self.err("recording a backup"))
    }

    /// Records a drill and its report (replacing a row with the same id).
    pub async fn record_drill(&self, r: &crate::drill::DrillReport) -> Result<(), CatalogError> {
        sqlx::query(
            "INSERT OR REPLACE INTO drills (policy, source, id, backup_id, started_at, finished_at, \
             passed, rto_seconds, rpo_seconds, checks_failed, first_failure, report) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.policy)
        .bind(&r.source)
        .bind(&r.id)
        .bind(&r.backup)
        .bind(r.started_at.to_rfc3339())
        .bind(r.finished_at.to_rfc3339())
        .bind(r.passed)
        .bind(r.rto_seconds)
        .bind(r.rpo_seconds)
        .bind(r.failed().count() as i64)
        .bind(&r.first_failure)
        .bind(serde_json::to_string(r).expect("report serializes"))
        .execute(&self.pool)
        .await
        .map_err(self.err("recording a drill"))?;
        Ok(())
    }

    /// The number of drills recorded for a policy's source.
    pub async fn drill_count(&self, policy: &str, source: &str) -> Result<i64, CatalogError> {
        sqlx::query_scalar("SELECT count(*) FROM drills WHERE policy = ? AND source = ?")
            .bind(policy)
            .bind(source)
            .fetch_one(&self.pool)
            .await
            .map_err(self.err("counting drills"))
    }

    /// Removes backups from the index (deleted by retention).
    pub async fn forget_backups(
        &self,
        policy: &str,
        source: &str,
        ids: &[String],
    ) -> Result<(), CatalogError> {
        for id in ids {
            sqlx::query("DELETE FROM backups WHERE policy = ? AND source = ? AND id = ?")
                .bind(policy)
                .bind(source)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(self.err("forgetting a backup"))?;
        }
        Ok(())
    }

    /// Records the start of a run; returns its id for [`Self::finish_run`].
    pub async fn start_run(
        &self,
        policy: &str,
        source: &str,
        operation: &str,
        trigger: &str,
        started_at: DateTime<Utc>,
    ) -> Result<i64, CatalogError> {
        let row = sqlx::query(
            "INSERT INTO runs (policy, source, operation, trigger, started_at, outcome) VALUES (?, ?, ?, ?, ?, 'running') RETURNING id",
        )
        .bind(policy)
        .bind(source)
        .bind(operation)
        .bind(trigger)
        .bind(started_at)
        .fetch_one(&self.pool)
        .await
        .map_err(self.err("recording a run"))?;
        Ok(row.get(0))
    }

    /// Records how a run ended.
    pub async fn finish_run(
        &self,
        run: i64,
        finished_at: DateTime<Utc>,
        end: RunEnd<'_>,
    ) -> Result<(), CatalogError> {
        sqlx::query(
            "UPDATE runs SET finished_at = ?, outcome = ?, stored_bytes = ?, read_bytes = ?, backup_id = ?, error = ? WHERE id = ?",
        )
        .bind(finished_at)
        .bind(end.outcome)
        .bind(end.stored_bytes.map(|b| b as i64))
        .bind(end.read_bytes.map(|b| b as i64))
        .bind(end.backup_id)
        .bind(end.error)
        .bind(run)
        .execute(&self.pool)
        .await
        .map_err(self.err("recording the end of a run"))?;
        Ok(())
    }

    /// Runs still marked `running` were cut off (the process died): they
    /// are marked `interrupted`. Returns how many.
    pub async fn close_dangling_runs(&self, now: DateTime<Utc>) -> Result<u64, CatalogError> {
        let r = sqlx::query(
            "UPDATE runs SET outcome = 'interrupted', finished_at = ?, error = 'the process ended before the run finished' WHERE outcome = 'running'",
        )
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(self.err("closing runs of a previous process"))?;
        Ok(r.rows_affected())
    }

    /// The most recent runs of a policy, newest first.
    pub async fn runs(
        &self,
        policy: &str,
        source: Option<&str>,
        operation: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, CatalogError> {
        let rows = sqlx::query(
            "SELECT id, policy, source, operation, trigger, started_at, finished_at, outcome, stored_bytes, read_bytes, backup_id, error
             FROM runs WHERE policy = ?1 AND (?2 IS NULL OR source = ?2) AND (?3 IS NULL OR operation = ?3)
             ORDER BY started_at DESC, id DESC LIMIT ?4",
        )
        .bind(policy)
        .bind(source)
        .bind(operation)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err("reading runs"))?;
        rows.iter()
            .map(|r| {
                Ok(RunRecord {
                    id: r.try_get("id")?,
                    policy: r.try_get("policy")?,
                    source: r.try_get("source")?,
                    operation: r.try_get("operation")?,
                    trigger: r.try_get("trigger")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    outcome: r.try_get("outcome")?,
                    stored_bytes: r.try_get("stored_bytes")?,
                    read_bytes: r.try_get("read_bytes")?,
                    backup_id: r.try_get("backup_id")?,
                    error: r.try_get("error")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.err("reading runs"))
    }

    /// When a scheduled (or catch-up) backup of the policy last started.
    pub async fn last_scheduled_start(
        &self,
        policy: &str,
    ) -> Result<Option<DateTime<Utc>>, CatalogError> {
        let row = sqlx::query(
            "SELECT MAX(started_at) FROM runs WHERE policy = ? AND operation = 'backup' AND trigger IN ('schedule', 'catch-up')",
        )
        .bind(policy)
        .fetch_one(&self.pool)
        .await
        .map_err(self.err("reading the last scheduled run"))?;
        row.try_get::<Option<DateTime<Utc>>, _>(0)
            .map_err(self.err("reading the last scheduled run"))
    }

    /// Backup ids in the index for a policy (and source), oldest first.
    pub async fn backup_ids(
        &self,
        policy: &str,
        source: Option<&str>,
    ) -> Result<Vec<(String, String)>, CatalogError> {
        let rows = sqlx::query(
            "SELECT source, id FROM backups WHERE policy = ?1 AND (?2 IS NULL OR source = ?2) ORDER BY started_at, id",
        )
        .bind(policy)
        .bind(source)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err("reading backups"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
            .collect())
    }

    /// Replaces the policy's backup index with what the repository's
    /// manifests say; one transaction, so a failure leaves the old index.
    /// Returns the number of backups indexed and the unreadable manifests.
    pub async fn rebuild(
        &self,
        repo: &Repository,
        policy: &str,
    ) -> Result<(usize, Vec<crate::repository::Unreadable>), CatalogError> {
        let listing = repo.list_backups(policy, None).await?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(self.err("starting the rebuild"))?;
        sqlx::query("DELETE FROM backups WHERE policy = ?")
            .bind(policy)
            .execute(&mut *tx)
            .await
            .map_err(self.err("clearing the index"))?;
        for m in &listing.backups {
            insert_backup(&mut *tx, m)
                .await
                .map_err(self.err("indexing a backup"))?;
        }
        tx.commit()
            .await
            .map_err(self.err("committing the rebuild"))?;
        Ok((listing.backups.len(), listing.unreadable))
    }
}

async fn insert_backup<'e, E>(exec: E, m: &Manifest) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    sqlx::query(
        "INSERT OR REPLACE INTO backups (policy, source, id, kind, started_at, finished_at, stored_bytes, plaintext_bytes, artifacts, server_version, manifest_key)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&m.policy)
    .bind(&m.source)
    .bind(&m.id)
    .bind(m.kind.as_str())
    .bind(m.started_at)
    .bind(m.finished_at)
    .bind(m.stored_size() as i64)
    .bind(m.plaintext_size() as i64)
    .bind(m.artifacts.len() as i64)
    .bind(&m.server_version)
    .bind(Repository::manifest_key(&m.policy, &m.source, &m.id))
    .execute(exec)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon starting while `lifeboat status` runs: both create and
    /// migrate the same new catalog at once, and both open it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_creating_the_catalog_at_once_both_open_it() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("catalog.db");
            let (a, b) = tokio::join!(Catalog::open(&path), Catalog::open(&path));
            a.unwrap();
            b.unwrap();
        }
    }

    #[tokio::test]
    async fn runs_are_recorded_and_dangling_ones_closed() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(&dir.path().join("sub/catalog.db"))
            .await
            .unwrap();
        let t0: DateTime<Utc> = "2026-11-23T02:15:00Z".parse().unwrap();
        let a = cat
            .start_run("app", "db", "backup", "schedule", t0)
            .await
            .unwrap();
        cat.finish_run(
            a,
            t0 + chrono::Duration::seconds(42),
            RunEnd {
                outcome: "success",
                stored_bytes: Some(1000),
                read_bytes: Some(5000),
                backup_id: Some("20261123T021500Z-0001"),
                error: None,
            },
        )
        .await
        .unwrap();
        let t1 = t0 + chrono::Duration::hours(1);
        cat.start_run("app", "db", "backup", "cli", t1)
            .await
            .unwrap();
        assert_eq!(cat.close_dangling_runs(t1).await.unwrap(), 1);
        let runs = cat.runs("app", Some("db"), None, 10).await.unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].outcome, "interrupted");
        assert_eq!(runs[1].outcome, "success");
        assert_eq!(runs[1].stored_bytes, Some(1000));
        assert_eq!(
            runs[1].finished_at,
            Some(t0 + chrono::Duration::seconds(42))
        );
        // Only scheduled runs count for the missed-run rule.
        assert_eq!(cat.last_scheduled_start("app").await.unwrap(), Some(t0));
        assert_eq!(cat.last_scheduled_start("other").await.unwrap(), None);
        // Reopening runs no migration twice.
        drop(cat);
        let cat = Catalog::open(&dir.path().join("sub/catalog.db"))
            .await
            .unwrap();
        assert_eq!(
            cat.runs("app", None, Some("backup"), 1)
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
