//! PostgreSQL dump backups: pg_dump of each database on an exported snapshot with its row-count inventory.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use chrono::Utc;

use crate::backup::{key_safe, BackupError, Run};
use crate::kinds::postgres::source::{self as postgres, PgConn, PgTools};
use crate::process::ProcessError;
use crate::repository::{self, Manifest};

pub(crate) async fn backup_postgres(
    run: &mut Run<'_>,
    pg: &crate::kinds::postgres::config::PostgresSource,
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

    if pg.globals {
        dump_globals(run, &conn, &tools, superuser, &source_name).await?;
    }
    for db in &databases {
        dump_database(run, &conn, &tools, db, &source_name).await?;
    }

    Ok(run.manifest(
        repository::ManifestKind::PostgresDump,
        started_at,
        server.version,
        tools.version,
    ))
}

/// A failed dump tool, with the server it ran against.
fn dump_err(
    conn: &PgConn,
    what: &'static str,
    database: &str,
    source: ProcessError,
) -> BackupError {
    BackupError::Dump {
        what,
        database: database.to_string(),
        host: conn.host.clone(),
        port: conn.port,
        source,
    }
}

/// `pg_dumpall --globals-only` (roles, tablespaces) as `globals.sql`;
/// without role passwords when not a superuser.
async fn dump_globals(
    run: &mut Run<'_>,
    conn: &PgConn,
    tools: &PgTools,
    superuser: bool,
    source_name: &str,
) -> Result<(), BackupError> {
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
            return Err(dump_err(conn, "pg_dumpall --globals-only", "(globals)", e));
        }
    }
    Ok(())
}

/// One database: `pg_dump` on an exported snapshot while its inventory is
/// counted on the same snapshot, then both stored.
async fn dump_database(
    run: &mut Run<'_>,
    conn: &PgConn,
    tools: &PgTools,
    db: &str,
    source_name: &str,
) -> Result<(), BackupError> {
    // The snapshot transaction stays open until pg_dump has finished, so
    // the inventory counted here is exactly what the dump contains.
    let snap_client = conn.connect(db).await?;
    let snapshot = postgres::export_snapshot(conn, &snap_client, db).await?;
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
    let inventory = postgres::take_inventory(conn, &snap_client, db, Some(snapshot.clone()));
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
            return Err(dump_err(conn, "pg_dump", db, e));
        }
        // Both: the inventory's error is often the cause (it aborts the
        // snapshot's transaction), so both are reported.
        (Err(dump), Err(inventory)) => {
            pending.abort().await;
            return Err(BackupError::DumpAndInventory {
                database: db.to_string(),
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
    Ok(())
}
