//! Restoring a PostgreSQL dump into a database with pg_restore.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::keys::Identities;
use crate::kinds::postgres::source::{self as pg, Inventory, PgConn, PgError, PgTools};
use crate::pipeline::{self, PipelineError};
use crate::process::{self, ProcessError};
use crate::repository::{Artifact, Manifest, Repository};
use crate::restore::{InventoryCheck, Mismatch};

/// Errors of a PostgreSQL restore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("backup {backup} holds several databases ({available}); choose one with --database")]
    ChooseDatabase { backup: String, available: String },
    #[error("backup {backup} has no dump of database '{database}' (it has: {available})")]
    NoSuchDatabase {
        backup: String,
        database: String,
        available: String,
    },
    #[error("backup {backup} has no {what} artifact for database '{database}'; it was not made by this version of lifeboat or is damaged")]
    MissingArtifact {
        backup: String,
        what: &'static str,
        database: String,
    },
    #[error("target {target} is not empty ({objects} tables, views, sequences or large objects); restore into a new or empty database, or pass --clean to replace the objects the dump contains")]
    TargetNotEmpty { target: String, objects: i64 },
    #[error("inventory artifact {key} cannot be read: {detail}")]
    BadInventory { key: String, detail: String },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("pg_restore into {target} failed: {source}. {state}")]
    PgRestore {
        target: String,
        source: ProcessError,
        state: &'static str,
    },
    #[error("restoring globals into {target} failed: {source}")]
    Globals {
        target: String,
        source: ProcessError,
    },
    #[error("cannot stage the dump for a parallel restore in {dir}: {source}; use --jobs 1 to stream instead")]
    Stage {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl crate::outcome::Classify for RestoreError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::TargetNotEmpty { .. } => Outcome::Refused,
            Self::ChooseDatabase { .. } => Outcome::Usage,
            Self::NoSuchDatabase { .. } | Self::MissingArtifact { .. } => Outcome::NotFound,
            Self::BadInventory { .. } => Outcome::Integrity,
            Self::Pipeline(e) => e.outcome(),
            Self::Postgres(e) => e.outcome(),
            Self::PgRestore { .. } | Self::Globals { .. } | Self::Stage { .. } => Outcome::Failure,
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Database of the backup to restore; needed when it holds several.
    pub database: Option<String>,
    /// Target connection; the database name comes from the URL, else the
    /// original name.
    pub target: PgConn,
    pub target_database: Option<String>,
    /// pg_restore parallelism. 1 streams (single transaction: all or
    /// nothing); more needs a seekable file, so the dump is decoded into
    /// `scratch_dir` first.
    pub jobs: u32,
    pub clean: bool,
    pub globals: bool,
    pub no_owner: bool,
    pub scratch_dir: PathBuf,
    /// Folder of the PostgreSQL client tools (the source's `bin_dir`).
    pub bin_dir: Option<PathBuf>,
}

/// The target database's state before the restore.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TargetState {
    /// It does not exist and will be created.
    Missing,
    /// It exists and holds no user objects.
    Empty,
    /// It holds this many user objects.
    NotEmpty { objects: i64 },
}

/// The plan, shown before anything is touched.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub backup: String,
    pub source: String,
    pub backup_started_at: chrono::DateTime<chrono::Utc>,
    pub database: String,
    pub dump: Artifact,
    pub inventory: Artifact,
    pub globals: Option<Artifact>,
    pub target: String,
    pub target_database: String,
    pub target_state: TargetState,
    pub jobs: u32,
    pub clean: bool,
    /// The pg_dump that wrote the archive (`pg_dump (PostgreSQL) 15.19`).
    pub dump_tool_version: String,
    pub steps: Vec<String>,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub plan: Plan,
    pub seconds: f64,
    pub globals_warnings: usize,
    pub inventory: InventoryCheck,
}

/// Builds the plan: picks the dump and inventory and looks at the target.
pub async fn plan(manifest: &Manifest, opts: &Options) -> Result<Plan, RestoreError> {
    let dump = pick_dump(manifest, opts.database.as_deref())?;
    let database = dump.database.clone().unwrap_or_default();
    let inventory = manifest
        .artifacts
        .iter()
        .find(|a| a.kind == "inventory-json" && a.database.as_deref() == Some(&database))
        .ok_or_else(|| RestoreError::MissingArtifact {
            backup: manifest.id.clone(),
            what: "inventory",
            database: database.clone(),
        })?;
    let globals = if opts.globals {
        Some(
            manifest
                .artifact("globals")
                .ok_or_else(|| RestoreError::MissingArtifact {
                    backup: manifest.id.clone(),
                    what: "globals",
                    database: database.clone(),
                })?
                .clone(),
        )
    } else {
        None
    };
    let target_database = opts
        .target_database
        .clone()
        .unwrap_or_else(|| database.clone());
    let target_state = target_state(&opts.target, &target_database).await?;

    let mut steps = Vec::new();
    steps.push(format!(
        "decrypt and check the inventory {} (proves the identity before touching the target)",
        inventory.key
    ));
    if let Some(g) = &globals {
        steps.push(format!("restore roles and tablespaces from {} with psql (existing roles get the backed-up attributes and passwords; \"already exists\" errors are expected)", g.key));
    }
    match &target_state {
        TargetState::Missing => steps.push(format!("create database {target_database}")),
        TargetState::Empty => steps.push(format!("use the existing empty database {target_database}")),
        TargetState::NotEmpty { objects } if opts.clean => steps.push(format!(
            "replace the objects of the dump in {target_database} (--clean; it holds {objects} objects now)"
        )),
        TargetState::NotEmpty { objects } => {
            return Err(RestoreError::TargetNotEmpty {
                target: opts.target.display(&target_database),
                objects: *objects,
            })
        }
    }
    if opts.jobs > 1 {
        steps.push(format!(
            "decode the dump ({} plaintext) into {} and run pg_restore --jobs {}",
            crate::progress::human_bytes(dump.plaintext.size),
            opts.scratch_dir.display(),
            opts.jobs
        ));
    } else {
        steps.push(
            "stream the dump into pg_restore in a single transaction (all or nothing)".into(),
        );
    }
    steps.push("compare every table's row count with the inventory".into());
    Ok(Plan {
        backup: manifest.id.clone(),
        source: manifest.source.clone(),
        backup_started_at: manifest.started_at,
        database,
        dump: dump.clone(),
        inventory: inventory.clone(),
        globals,
        target: opts.target.display(&target_database),
        target_database,
        target_state,
        jobs: opts.jobs,
        clean: opts.clean,
        dump_tool_version: manifest.dump_tool_version.clone(),
        steps,
    })
}

/// The dump of `database`, or the backup's only dump when none is named.
fn pick_dump<'a>(
    manifest: &'a Manifest,
    database: Option<&str>,
) -> Result<&'a Artifact, RestoreError> {
    let dumps: Vec<&Artifact> = manifest
        .artifacts
        .iter()
        .filter(|a| a.kind == "pg-dump-custom")
        .collect();
    let names = || {
        dumps
            .iter()
            .filter_map(|a| a.database.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match database {
        Some(db) => dumps
            .iter()
            .find(|a| a.database.as_deref() == Some(db))
            .copied()
            .ok_or_else(|| RestoreError::NoSuchDatabase {
                backup: manifest.id.clone(),
                database: db.to_string(),
                available: names(),
            }),
        None if dumps.len() == 1 => Ok(dumps[0]),
        None => Err(RestoreError::ChooseDatabase {
            backup: manifest.id.clone(),
            available: names(),
        }),
    }
}

async fn target_state(conn: &PgConn, database: &str) -> Result<TargetState, RestoreError> {
    let admin = conn.connect("postgres").await?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await
        .map_err(|e| conn.query_error("postgres", "look up the target database", e))?
        .is_some();
    if !exists {
        return Ok(TargetState::Missing);
    }
    let client = conn.connect(database).await?;
    let objects: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relkind IN ('r','p','v','m','S','f') \
                       AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                       AND n.nspname !~ '^pg_(toast|temp)' \
                       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                                       AND d.objid = c.oid AND d.deptype = 'e')) \
                  + (SELECT count(*) FROM pg_largeobject_metadata)",
            &[],
        )
        .await
        .map_err(|e| conn.query_error(database, "inspect the target database", e))?
        .get(0);
    Ok(if objects == 0 {
        TargetState::Empty
    } else {
        TargetState::NotEmpty { objects }
    })
}

/// Carries out a plan.
pub async fn execute(
    repo: &Repository,
    plan: Plan,
    opts: &Options,
    identities: Arc<Identities>,
) -> Result<Report, RestoreError> {
    let started = Instant::now();
    let store = repo.store().as_ref();
    let conn = &opts.target;
    let target = plan.target.clone();

    // Before touching the target: every object must be there, the identity
    // must decrypt, and the inventory must be intact.
    for a in [
        Some(&plan.dump),
        Some(&plan.inventory),
        plan.globals.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if store
            .head(&a.key)
            .await
            .map_err(PipelineError::Storage)?
            .is_none()
        {
            return Err(
                PipelineError::Storage(crate::storage::StorageError::NotFound {
                    store: repo.describe(),
                    key: a.key.clone(),
                })
                .into(),
            );
        }
    }
    let inv_bytes =
        pipeline::decode_to_vec(store, &plan.inventory.expected(), identities.clone()).await?;
    let inventory: Inventory =
        serde_json::from_slice(&inv_bytes).map_err(|e| RestoreError::BadInventory {
            key: plan.inventory.key.clone(),
            detail: e.to_string(),
        })?;

    let admin = conn.connect("postgres").await?;
    let server = pg::server_info(conn, &admin).await?;
    // pg_restore must be at least as new as both the target server and the
    // pg_dump that wrote the archive.
    let archive_major = pg::parse_major(&plan.dump_tool_version).unwrap_or(0);
    let tools = PgTools::find(
        opts.bin_dir.as_deref(),
        "pg_restore",
        server.major.max(archive_major),
    )
    .await?;

    let mut globals_warnings = 0;
    if let Some(g) = &plan.globals {
        let sql = pipeline::decode_to_vec(store, &g.expected(), identities.clone()).await?;
        globals_warnings = restore_globals(conn, &tools, sql, &target).await?;
    }
    let result = restore_database(repo, &plan, opts, identities, &tools, &inventory, admin).await;
    if result.is_err() && plan.globals.is_some() {
        // Roles live outside any database transaction: say so.
        tracing::error!(target = %target, "roles and tablespaces of the backup were already applied to the server before this failure (--globals); review them");
    }
    result?;
    let check = check_inventory(conn, &plan.target_database, &inventory).await?;
    Ok(Report {
        plan,
        seconds: started.elapsed().as_secs_f64(),
        globals_warnings,
        inventory: check,
    })
}

/// Creates the target if needed and runs pg_restore into it.
async fn restore_database(
    repo: &Repository,
    plan: &Plan,
    opts: &Options,
    identities: Arc<Identities>,
    tools: &PgTools,
    inventory: &Inventory,
    admin: tokio_postgres::Client,
) -> Result<(), RestoreError> {
    let conn = &opts.target;
    let target = plan.target.clone();

    // Literals below are quoted for standard_conforming_strings = on.
    admin
        .batch_execute("SET standard_conforming_strings = on")
        .await
        .map_err(|e| conn.query_error("postgres", "set standard_conforming_strings", e))?;
    if plan.target_state == TargetState::Missing {
        tracing::info!(target = %target, "creating database");
        // Same encoding and locale as the original: they decide sorting,
        // index order and which characters can be stored. A locale this
        // server lacks (another distribution, a slim image) must not stop a
        // disaster recovery: fall back, and say so.
        let name = pg::quote_ident(&plan.target_database);
        let mut attempts = Vec::new();
        if let Some(p) = &inventory.properties {
            attempts.push(format!(
                " ENCODING {} LC_COLLATE {} LC_CTYPE {}",
                pg::quote_literal(&p.encoding),
                pg::quote_literal(&p.collate),
                pg::quote_literal(&p.ctype)
            ));
            attempts.push(format!(" ENCODING {}", pg::quote_literal(&p.encoding)));
        }
        attempts.push(String::new());
        for (i, options) in attempts.iter().enumerate() {
            let sql = format!("CREATE DATABASE {name} TEMPLATE template0{options}");
            match admin.batch_execute(&sql).await {
                Ok(()) => break,
                Err(e) if i + 1 < attempts.len() => {
                    tracing::warn!(target = %target, options = %options, error = %pg::error_detail(&e), "cannot create the database with the original's encoding and locale; trying the server's defaults (sorting may differ)");
                }
                Err(e) => {
                    return Err(conn
                        .query_error("postgres", "create the target database", e)
                        .into())
                }
            }
        }
    }

    let program = tools.tool("pg_restore");
    let mut cmd = conn.command(&program, &plan.target_database);
    // Without --dbname pg_restore prints SQL instead of restoring; a plain
    // name containing '=' would be read as a connection string, so pass a
    // quoted conninfo (host, port and user still come from the environment).
    cmd.arg(format!(
        "--dbname=dbname='{}'",
        plan.target_database
            .replace('\\', "\\\\")
            .replace('\'', "\\'")
    ))
    .args(["--no-password", "--exit-on-error"]);
    if opts.clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    if opts.no_owner {
        cmd.args(["--no-owner", "--no-privileges"]);
    }
    tracing::info!(target = %target, backup = %plan.backup, database = %plan.database, size = %crate::progress::human_bytes(plan.dump.plaintext.size), "restoring");
    if opts.jobs > 1 {
        restore_parallel(repo, plan, opts, identities, cmd, &program).await?;
    } else {
        restore_streaming(repo, plan, identities, cmd, &program).await?;
    }
    // Per-database settings (search_path and friends), which pg_restore
    // applies only when it creates the database itself. Applied after the
    // restore: some (default_transaction_read_only, role) would break it.
    for setting in inventory.properties.iter().flat_map(|p| &p.settings) {
        if let Some((name, value)) = setting.split_once('=') {
            let sql = format!(
                "ALTER DATABASE {} SET {} = {}",
                pg::quote_ident(&plan.target_database),
                pg::quote_ident(name),
                setting_value_sql(name, value)
            );
            if let Err(e) = admin.batch_execute(&sql).await {
                tracing::warn!(target = %target, setting = %setting, error = %pg::error_detail(&e), "could not apply a database setting of the original; set it by hand");
            }
        }
    }
    Ok(())
}

async fn restore_streaming(
    repo: &Repository,
    plan: &Plan,
    identities: Arc<Identities>,
    mut cmd: tokio::process::Command,
    program: &std::path::Path,
) -> Result<(), RestoreError> {
    cmd.arg("--single-transaction");
    let (child, stdin, _) =
        process::spawn(cmd, program, true, false).map_err(|source| RestoreError::PgRestore {
            target: plan.target.clone(),
            source,
            state: "Nothing was restored.",
        })?;
    let mut stdin = stdin.expect("stdin is piped");
    // Decode into a pipe we forward ourselves: if the object turns out to
    // be damaged, pg_restore is killed *before* its input is closed, so its
    // single transaction never commits a truncated restore.
    let (writer, mut reader) = tokio::io::duplex(1 << 20);
    let forward = async move {
        let r = tokio::io::copy(&mut reader, &mut stdin).await;
        (stdin, r)
    };
    let expected = plan.dump.expected();
    let ticker = crate::progress::ProgressTicker::start(
        plan.source.clone(),
        plan.dump.name.clone(),
        "restored",
    );
    let progress = ticker.counter();
    let decode = pipeline::decode(
        repo.store().as_ref(),
        &expected,
        identities,
        writer,
        "pg_restore",
        Some(progress),
    );
    let (decoded, (stdin, forwarded)) = tokio::join!(decode, forward);
    const ROLLED_BACK: &str = "The single transaction was rolled back; the target is as it was (a database created for this restore stays, empty).";
    match decoded {
        Ok(()) => {}
        // pg_restore stopped reading: its own stderr says why.
        Err(e @ PipelineError::Output { .. }) => {
            drop(stdin);
            let source = match child.wait().await {
                Err(failed) => failed,
                Ok(_) => ProcessError::Failed {
                    program: "pg_restore".into(),
                    status: "stopped reading its input".into(),
                    stderr: e.to_string(),
                },
            };
            return Err(RestoreError::PgRestore {
                target: plan.target.clone(),
                source,
                state: ROLLED_BACK,
            });
        }
        // Damaged or unreadable object: kill pg_restore before its input
        // closes, so the transaction cannot commit a partial restore.
        Err(e) => {
            child.kill().await;
            drop(stdin);
            return Err(e.into());
        }
    }
    let mut stdin = stdin;
    let _ = stdin.shutdown().await;
    drop(stdin);
    let waited = child.wait().await;
    if let Err(source) = waited {
        return Err(RestoreError::PgRestore {
            target: plan.target.clone(),
            source,
            state: ROLLED_BACK,
        });
    }
    if let Err(e) = forwarded {
        return Err(RestoreError::PgRestore {
            target: plan.target.clone(),
            source: ProcessError::Failed {
                program: "pg_restore".into(),
                status: "input pipe failed".into(),
                stderr: e.to_string(),
            },
            state: "Check the target before using it.",
        });
    }
    Ok(())
}

async fn restore_parallel(
    repo: &Repository,
    plan: &Plan,
    opts: &Options,
    identities: Arc<Identities>,
    mut cmd: tokio::process::Command,
    program: &std::path::Path,
) -> Result<(), RestoreError> {
    // pg_restore --jobs needs to seek in the archive, which a pipe cannot
    // do: the dump is decoded (and fully verified) into a scratch file.
    let stage_err = |source| RestoreError::Stage {
        dir: opts.scratch_dir.clone(),
        source,
    };
    let tmp = tempfile::Builder::new()
        .prefix("lifeboat-restore-")
        .suffix(".pgdump")
        .tempfile_in(&opts.scratch_dir)
        .map_err(stage_err)?;
    let file = tokio::fs::File::from_std(tmp.reopen().map_err(stage_err)?);
    let ticker = crate::progress::ProgressTicker::start(
        plan.source.clone(),
        plan.dump.name.clone(),
        "decoded",
    );
    let progress = ticker.counter();
    pipeline::decode(
        repo.store().as_ref(),
        &plan.dump.expected(),
        identities,
        file,
        &tmp.path().display().to_string(),
        Some(progress),
    )
    .await?;
    drop(ticker);
    cmd.arg(format!("--jobs={}", opts.jobs)).arg(tmp.path());
    let (child, _, _) =
        process::spawn(cmd, program, false, false).map_err(|source| RestoreError::PgRestore {
            target: plan.target.clone(),
            source,
            state: "Nothing was restored.",
        })?;
    child
        .wait()
        .await
        .map_err(|source| RestoreError::PgRestore {
            target: plan.target.clone(),
            source,
            state: "A parallel restore is not atomic: drop the target database and restore again.",
        })?;
    Ok(())
}

/// Runs the globals script with psql; errors such as "role already exists"
/// are expected on a live server, so they are counted, not fatal.
async fn restore_globals(
    conn: &PgConn,
    tools: &PgTools,
    sql: Vec<u8>,
    target: &str,
) -> Result<usize, RestoreError> {
    let program = tools.tool("psql");
    let mut cmd = conn.command(&program, "postgres");
    cmd.args(["-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=0"]);
    let (child, stdin, _) =
        process::spawn(cmd, &program, true, false).map_err(|source| RestoreError::Globals {
            target: target.to_string(),
            source,
        })?;
    let mut stdin = stdin.expect("stdin is piped");
    let write = async move {
        let r = stdin.write_all(&sql).await;
        drop(stdin);
        r
    };
    let (written, waited) = tokio::join!(write, child.wait());
    let finished = waited.map_err(|source| RestoreError::Globals {
        target: target.to_string(),
        source,
    })?;
    if let Err(e) = written {
        return Err(RestoreError::Globals {
            target: target.to_string(),
            source: ProcessError::Failed {
                program: "psql".into(),
                status: "input pipe failed".into(),
                stderr: e.to_string(),
            },
        });
    }
    for l in &finished.tail {
        tracing::warn!(target = %target, "globals: {l}");
    }
    Ok(finished.error_lines)
}

/// A stored setting value as SQL, the way pg_dump writes it: list settings
/// (search_path and friends) element by element, everything else as one
/// string literal.
fn setting_value_sql(name: &str, value: &str) -> String {
    const LISTS: [&str; 5] = [
        "search_path",
        "temp_tablespaces",
        "local_preload_libraries",
        "session_preload_libraries",
        "shared_preload_libraries",
    ];
    if !LISTS.contains(&name.to_ascii_lowercase().as_str()) {
        return pg::quote_literal(value);
    }
    // Split on commas outside double quotes; "a""b" is a quoted element.
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => items.push(std::mem::take(&mut cur)),
            c if c.is_whitespace() && !quoted && cur.is_empty() => {}
            c => cur.push(c),
        }
    }
    items.push(cur);
    items
        .iter()
        .map(|i| pg::quote_literal(i.trim_end()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Counts rows of every table in the inventory on the restored database.
pub async fn check_inventory(
    conn: &PgConn,
    database: &str,
    inventory: &Inventory,
) -> Result<InventoryCheck, RestoreError> {
    let client = conn.connect(database).await?;
    let mut mismatches = Vec::new();
    for t in &inventory.tables {
        let sql = format!(
            "SELECT count(*) FROM {}.{}",
            pg::quote_ident(&t.schema),
            pg::quote_ident(&t.table)
        );
        let found = match client.query_one(&sql, &[]).await {
            Ok(row) => Some(row.get::<_, i64>(0)),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => None,
            Err(e) => {
                return Err(conn
                    .query_error(
                        database,
                        &format!("count rows of {}.{}", t.schema, t.table),
                        e,
                    )
                    .into())
            }
        };
        if found != Some(t.rows) {
            mismatches.push(Mismatch {
                table: format!("{}.{}", t.schema, t.table),
                expected: t.rows,
                found,
            });
        }
    }
    let large_objects_found: i64 = client
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .map_err(|e| conn.query_error(database, "count large objects", e))?
        .get(0);
    Ok(InventoryCheck {
        tables_checked: inventory.tables.len(),
        rows_expected: inventory.tables.iter().map(|t| t.rows).sum(),
        large_objects_expected: inventory.large_objects,
        large_objects_found,
        mismatches,
    })
}

#[cfg(test)]
mod tests {
    use super::setting_value_sql;

    #[test]
    fn settings_are_quoted_like_pg_dump_does() {
        assert_eq!(setting_value_sql("statement_timeout", "5min"), "'5min'");
        assert_eq!(
            setting_value_sql("search_path", "shop, public"),
            "'shop', 'public'"
        );
        assert_eq!(
            setting_value_sql("search_path", "\"$user\", public"),
            "'$user', 'public'"
        );
        assert_eq!(setting_value_sql("search_path", "\"a,\"\"b\""), "'a,\"b'");
        assert_eq!(setting_value_sql("application_name", "it's"), "'it''s'");
    }
}
