//! MySQL/MariaDB backups: a consistent mariadb-dump with its binlog position and per-table inventories.

use chrono::Utc;

use crate::backup::{key_safe, BackupError, Run};
use crate::kinds::mysql::source::{self as mysql, MyConn};
use crate::pipeline;
use crate::process;
use crate::repository::{self, Manifest};

/// Sends the snapshot marker's result once the dump's output shows it.
pub(super) struct MarkerWatch<R> {
    inner: R,
    marker: crate::kinds::mysql::source::SnapshotMarker,
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
pub(crate) async fn backup_mysql(
    run: &mut Run<'_>,
    my: &crate::kinds::mysql::config::MysqlSource,
    started_at: chrono::DateTime<Utc>,
) -> Result<Manifest, BackupError> {
    use mysql_async::prelude::Queryable;

    let conn = MyConn::from_source(my)?;
    let mut admin = conn.connect().await?;
    let info = mysql::server_info(&conn, &mut admin).await?;
    let tool = mysql::find_dump_tool(my.bin_dir.as_deref(), info.flavor)?;
    let tool_version = dump_tool_version(&tool).await;
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

    let (mut snap, binlog) = consistency_point(&conn, &info).await?;

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
    let (pending, inventories) = settle_dump(child, dump, inventories, &conn, &databases).await?;
    let enc = pending.commit().await?;
    tracing::info!(source = %source_name, plaintext = %crate::progress::human_bytes(enc.plaintext.size), stored = %crate::progress::human_bytes(enc.stored.size), binlog = ?binlog, "dump stored");
    run.record("dump".into(), "mysql-dump-sql", None, key, enc);

    store_inventories(run, inventories).await?;

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

/// The dump tool's `--version` line, empty if it cannot say.
async fn dump_tool_version(tool: &std::path::Path) -> String {
    tokio::process::Command::new(tool)
        .arg("--version")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The consistency point (see kinds::mysql::source): a connection holding
/// the global read lock and a consistent-snapshot transaction, and the
/// binlog coordinates at that point.
async fn consistency_point(
    conn: &MyConn,
    info: &mysql::ServerInfo,
) -> Result<(mysql_async::Conn, Option<mysql::BinlogPoint>), BackupError> {
    use mysql_async::prelude::Queryable;

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
    let binlog = mysql::binlog_point(conn, &mut snap, info).await?;
    Ok((snap, binlog))
}

/// The dump's outcome once both it and the inventories are done: the
/// pending object, or the first failure with the object aborted (or the
/// tool killed when the pipeline failed).
async fn settle_dump(
    child: process::Child,
    dump: Result<pipeline::Pending, pipeline::PipelineError>,
    inventories: Result<Vec<mysql::MyInventory>, mysql::MyError>,
    conn: &MyConn,
    databases: &[String],
) -> Result<(pipeline::Pending, Vec<mysql::MyInventory>), BackupError> {
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
    Ok((pending, inventories))
}

/// One small object per database: its inventory as JSON.
async fn store_inventories(
    run: &mut Run<'_>,
    inventories: Vec<mysql::MyInventory>,
) -> Result<(), BackupError> {
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
    Ok(())
}
