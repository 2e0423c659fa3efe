//! PostgreSQL base backups: pg_basebackup of the whole cluster, for point-in-time recovery with the WAL archive.

use chrono::Utc;

use crate::backup::{BackupError, Run};
use crate::kinds::postgres::source::{self as postgres, PgConn, PgTools};
use crate::pipeline;
use crate::process;
use crate::repository::{self, Manifest};

/// A physical base backup: `pg_basebackup` as one tar on its stdout,
/// without WAL (the archive has it), streamed into the pipeline while its
/// `backup_label` and `backup_manifest` are read on the way through.
pub(crate) async fn backup_postgres_base(
    run: &mut Run<'_>,
    pg: &crate::kinds::postgres::config::PostgresSource,
    started_at: chrono::DateTime<Utc>,
) -> Result<Manifest, BackupError> {
    use crate::kinds::postgres::wal;
    let conn = PgConn::from_source(pg)?;
    let admin = conn.connect("postgres").await?;
    let server = postgres::server_info(&conn, &admin).await?;
    let tools = PgTools::find(pg.bin_dir.as_deref(), "pg_basebackup", server.major).await?;
    let (system_identifier, segment_size) = check_cluster(&conn, &admin).await?;
    drop(admin);

    let source_name = run.source.name.to_string();
    tracing::info!(source = %source_name, backup = %run.id, server = %server.version, tool = %tools.version, "base backup started");
    let (key, pending, members) = stream_base(run, &conn, &tools).await?;
    let BaseMembers {
        label,
        backup_manifest,
        timeline,
        start_lsn,
        stop_lsn,
    } = match base_members(&members) {
        Ok(m) => m,
        Err((member, hint)) => {
            pending.abort().await;
            return Err(BackupError::BaseMember {
                host: conn.host.clone(),
                port: conn.port,
                member,
                hint,
            });
        }
    };
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

/// Runs `pg_basebackup` and streams its tar into the pipeline, watching
/// for `backup_label` and `backup_manifest` on the way through. Returns the
/// object's key, the pending object (to commit once the members check out)
/// and the members seen.
async fn stream_base(
    run: &Run<'_>,
    conn: &PgConn,
    tools: &PgTools,
) -> Result<
    (
        String,
        pipeline::Pending,
        std::sync::Arc<std::sync::Mutex<crate::source::tar::TarMembers>>,
    ),
    BackupError,
> {
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
    Ok((key, pending, members))
}

/// Refuses a cluster a base backup cannot cover (extra tablespaces, WAL
/// archiving off) and reads its system identifier and WAL segment size.
async fn check_cluster(
    conn: &PgConn,
    admin: &tokio_postgres::Client,
) -> Result<(String, u64), BackupError> {
    let q = |what: &'static str| move |e| conn.query_error("postgres", what, e);
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
    Ok((system_identifier, segment_size))
}

/// What a base backup's tar must hold, read on the way through.
struct BaseMembers {
    /// `backup_label`, as text.
    label: String,
    backup_manifest: Vec<u8>,
    /// From the manifest's `WAL-Ranges`: the newest timeline, the oldest
    /// start and the newest end.
    timeline: u32,
    start_lsn: crate::kinds::postgres::wal::Lsn,
    stop_lsn: crate::kinds::postgres::wal::Lsn,
}

/// The base backup's members from the tar, or the missing or unreadable
/// one with a hint (for [`BackupError::BaseMember`]).
fn base_members(
    members: &std::sync::Mutex<crate::source::tar::TarMembers>,
) -> Result<BaseMembers, (&'static str, &'static str)> {
    let (label, backup_manifest) = {
        let mut m = members.lock().expect("poisoned");
        (
            m.files.remove("backup_label"),
            m.files.remove("backup_manifest"),
        )
    };
    let Some(label) = label else {
        return Err((
            "backup_label",
            "the tar stream is not a base backup; check pg_basebackup's version",
        ));
    };
    let Some(backup_manifest) = backup_manifest else {
        return Err((
            "backup_manifest",
            "PostgreSQL 13 or newer writes one; older servers are not supported for base backups",
        ));
    };
    let label = String::from_utf8_lossy(&label).into_owned();
    let ranges = parse_wal_ranges(&backup_manifest);
    let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
        return Err((
            "WAL-Ranges in backup_manifest",
            "the manifest cannot be read; check pg_basebackup's version",
        ));
    };
    Ok(BaseMembers {
        label,
        timeline: last.0,
        start_lsn: first.1,
        stop_lsn: last.2,
        backup_manifest,
    })
}

/// `WAL-Ranges` of a `backup_manifest`: (timeline, start, end), oldest first.
pub(super) fn parse_wal_ranges(
    manifest: &[u8],
) -> Vec<(
    u32,
    crate::kinds::postgres::wal::Lsn,
    crate::kinds::postgres::wal::Lsn,
)> {
    #[derive(serde::Deserialize)]
    struct Range {
        #[serde(rename = "Timeline")]
        timeline: u32,
        #[serde(rename = "Start-LSN")]
        start: crate::kinds::postgres::wal::Lsn,
        #[serde(rename = "End-LSN")]
        end: crate::kinds::postgres::wal::Lsn,
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
