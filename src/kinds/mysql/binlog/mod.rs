//! MySQL/MariaDB binlog archiving: the server's binlog files, byte for
//! byte, in the repository, as they are written.
//!
//! The archiver supervises the server's own `mariadb-binlog` (or
//! `mysqlbinlog`) with `--read-from-remote-server --raw --stop-never`: it
//! speaks the replication protocol the server vendor maintains, including
//! MariaDB's GTID and checksum events, and writes files that are identical
//! to the server's (docs/BINLOG.md says why this beats a protocol client
//! of our own). lifeboat watches its output folder:
//!
//! - a file is complete once the next one exists (the server rotated):
//!   it is stored as `final` and removed locally;
//! - the newest file is stored as a `partial` copy every `interval`, so the
//!   data-loss window is bounded without rotation; a newer partial replaces
//!   the older one, the final replaces both;
//! - after a restart (of lifeboat, the server, or the connection) the
//!   stream starts again at the beginning of the first file that is not
//!   stored as final: nothing is skipped, and each file keeps one name.
//!
//! Layout (docs/FORMAT.md §11):
//!
//! ```text
//! binlog/<policy>/<source>/<file>/final.<c>.age + final.json
//! binlog/<policy>/<source>/<file>/partial-<size>.<c>.age + partial-<size>.json
//! ```
//!
//! The JSON record is written after its data object: it is the commit point.
//!
//! [`end`] reads an archived file's own event headers: where a replay of
//! the archive ends (the newest event, the time the server left a file,
//! the GTIDs), for restore plans, `binlog-verify`, `status` and drills.

mod end;
mod spool;

pub use end::{
    copy_kind, event_header, newest_before, parse_gtid, read_end, state_before, BinlogEnd,
    EventHeader,
};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::kinds::mysql::source::{MyConn, MyError};
use crate::pipeline::{self, Digest, EncodeSettings, Expected, PipelineError};
use crate::policy::Algorithm;
use crate::process::{self, ProcessError};
use crate::repository::Repository;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    #[error("the binary log is off on {host}:{port}: there is nothing to archive. Set log_bin=ON (or log_bin=<basename>), server_id=<unique number> and binlog_format=ROW in the server's configuration ([mysqld] section) and restart it")]
    BinlogOff { host: String, port: u16 },
    #[error("the binlog stream from {host}:{port} stopped: {source}")]
    Stream {
        host: String,
        port: u16,
        source: ProcessError,
    },
    #[error("binlog record {key} cannot be read: {detail}")]
    BadRecord { key: String, detail: String },
    #[error("reading archived binlog {file} failed: {source}")]
    Read { file: String, source: ProcessError },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mysql(#[from] MyError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl crate::outcome::Classify for BinlogError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Mysql(e) => e.outcome(),
            Self::Storage(e) => e.outcome(),
            Self::Pipeline(e) => e.outcome(),
            Self::BinlogOff { .. }
            | Self::Stream { .. }
            | Self::BadRecord { .. }
            | Self::Read { .. }
            | Self::Io { .. } => Outcome::Failure,
        }
    }
}

/// The record of one stored binlog file or prefix of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinlogRecord {
    pub format: u32,
    /// The server's file name, e.g. `binlog.000004`.
    pub file: String,
    /// True when the server had moved on to the next file: the object is
    /// the whole file. False: a prefix of the file in progress.
    pub complete: bool,
    pub key: String,
    pub plaintext: Digest,
    pub stored: Digest,
    pub compression: Algorithm,
    pub recipients: Vec<String>,
    pub archived_at: DateTime<Utc>,
}

impl BinlogRecord {
    pub fn expected(&self) -> Expected {
        Expected {
            key: self.key.clone(),
            compression: self.compression,
            stored: self.stored.clone(),
            plaintext: self.plaintext.clone(),
            recipients: self.recipients.clone(),
        }
    }
}

pub fn prefix(policy: &str, source: &str) -> String {
    crate::layout::binlog_prefix(policy, source)
}

/// The best stored copy of every archived file, by name: the final one,
/// else the longest partial.
pub async fn load_state(
    repo: &Repository,
    policy: &str,
    source: &str,
) -> Result<BTreeMap<String, BinlogRecord>, BinlogError> {
    // A running archiver deletes a partial copy's record right after it
    // stored the copy that replaces it: a record listed a moment ago may be
    // gone. Its replacement was written first, so a new listing has it.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match load_state_once(repo, policy, source).await {
            Err(BinlogError::Storage(StorageError::NotFound { .. })) if attempt < 5 => continue,
            other => return other,
        }
    }
}

async fn load_state_once(
    repo: &Repository,
    policy: &str,
    source: &str,
) -> Result<BTreeMap<String, BinlogRecord>, BinlogError> {
    let mut out: BTreeMap<String, BinlogRecord> = BTreeMap::new();
    for obj in repo.store().list(&prefix(policy, source)).await? {
        if !obj.key.ends_with(".json") {
            continue;
        }
        let bytes = repo.store().get_bytes(&obj.key).await?;
        let rec: BinlogRecord =
            serde_json::from_slice(&bytes).map_err(|e| BinlogError::BadRecord {
                key: obj.key.clone(),
                detail: e.to_string(),
            })?;
        let better = match out.get(&rec.file) {
            None => true,
            Some(old) => {
                (rec.complete && !old.complete)
                    || (rec.complete == old.complete && rec.plaintext.size > old.plaintext.size)
            }
        };
        if better {
            out.insert(rec.file.clone(), rec);
        }
    }
    Ok(out)
}

/// Sorts binlog names by their numeric suffix (`binlog.000009` before
/// `binlog.000010`, also past 999999).
pub fn file_order(name: &str) -> (String, u64) {
    match name.rsplit_once('.') {
        Some((base, n)) => (base.to_string(), n.parse().unwrap_or(0)),
        None => (name.to_string(), 0),
    }
}

/// What the archiver needs.
pub struct Archiver<'a> {
    pub repo: &'a Repository,
    pub policy: String,
    pub source: String,
    pub conn: MyConn,
    pub bin_dir: Option<PathBuf>,
    pub settings: EncodeSettings,
    pub recipients: Vec<String>,
    /// How often the file in progress is stored.
    pub interval: Duration,
    /// How far each spooled file has been walked event by event.
    pub scanned: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Fires when archiving must stop: the file in progress is stored as a
    /// partial copy and [`Archiver::run`] returns.
    pub cancel: tokio_util::sync::CancellationToken,
}

/// `lifeboat run`'s binlog archiver of `my` (`archive_binlogs: true`):
/// set up from the policy, then run until it stops or `run.cancel` fires.
pub(crate) async fn archive_continuously(
    my: &crate::kinds::mysql::config::MysqlSource,
    run: crate::kinds::ArchiveRun<'_>,
) -> Result<(), crate::kinds::Failure> {
    use crate::kinds::Failure;
    let recipients = run
        .policy
        .encryption
        .all_recipients()
        .map_err(Failure::new)?;
    let archiver = Archiver {
        repo: run.repo,
        policy: run.policy.name.to_string(),
        source: run.source_name.to_string(),
        conn: MyConn::from_source(my).map_err(Failure::new)?,
        bin_dir: my.bin_dir.clone(),
        settings: EncodeSettings {
            compression: run.policy.compression,
            recipients: std::sync::Arc::new(recipients.clone()),
            workers: 1,
        },
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        interval: my.binlog_interval.0,
        scanned: Default::default(),
        cancel: run.cancel,
    };
    (run.started)();
    archiver.run().await.map_err(Failure::new)
}

/// The end of the last whole event in the first `size` bytes of a binlog
/// file, walking event headers from `from` (a known boundary, or 0). A
/// partial copy cut there replays cleanly.
pub fn event_boundary(path: &Path, from: u64, size: u64) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    const MAGIC: u64 = 4;
    const HEADER: u64 = 19;
    let mut f = std::fs::File::open(path)?;
    let mut pos = from.max(MAGIC);
    if size < MAGIC {
        return Ok(0);
    }
    let mut header = [0u8; HEADER as usize];
    while pos + HEADER <= size {
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[9], header[10], header[11], header[12]]) as u64;
        if len < HEADER || pos + len > size {
            break;
        }
        pos += len;
    }
    Ok(pos)
}

impl Archiver<'_> {
    /// Runs until `cancel` fires, restarting the stream with backoff when
    /// it stops.
    pub async fn run(&self) -> Result<(), BinlogError> {
        let mut backoff = Duration::from_secs(1);
        loop {
            let began = Instant::now();
            match self.stream_once().await {
                Ok(()) => return Ok(()),
                // Configuration problems do not heal by retrying.
                Err(
                    e @ (BinlogError::BinlogOff { .. }
                    | BinlogError::Mysql(MyError::ToolMissing { .. })),
                ) => return Err(e),
                Err(e) => {
                    if began.elapsed() > Duration::from_secs(60) {
                        backoff = Duration::from_secs(1);
                    }
                    tracing::warn!(source = %self.source, error = %e, retry_in = ?backoff, "binlog archiving interrupted; resuming from the last stored file");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.cancel.cancelled() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// One connection's worth of streaming.
    async fn stream_once(&self) -> Result<(), BinlogError> {
        use mysql_async::prelude::Queryable;
        let mut stored = load_state(self.repo, &self.policy, &self.source).await?;
        let mut c = self.conn.connect().await?;
        let log_bin: Option<i64> = c
            .query_first("SELECT @@log_bin")
            .await
            .map_err(|e| self.conn.query_error("read @@log_bin", e))?;
        if log_bin != Some(1) {
            return Err(BinlogError::BinlogOff {
                host: self.conn.host.clone(),
                port: self.conn.port,
            });
        }
        let rows: Vec<mysql_async::Row> = c.query("SHOW BINARY LOGS").await.map_err(|e| {
            self.conn
                .query_error("SHOW BINARY LOGS (needs REPLICATION CLIENT)", e)
        })?;
        drop(c);
        let mut server: Vec<String> = rows.iter().filter_map(|r| r.get(0)).collect();
        server.sort_by_key(|f| file_order(f));
        let start = self.start_file(&stored, &server);
        let Some(start) = start else {
            return Err(BinlogError::Stream {
                host: self.conn.host.clone(),
                port: self.conn.port,
                source: ProcessError::Failed {
                    program: "SHOW BINARY LOGS".into(),
                    status: "empty".into(),
                    stderr: "the server lists no binlog files".into(),
                },
            });
        };
        tracing::info!(source = %self.source, start = %start, "binlog archiving started");

        let tool = crate::kinds::mysql::source::find_tool(
            self.bin_dir.as_deref(),
            &["mariadb-binlog", "mysqlbinlog"],
        )?;
        let tmp = std::env::temp_dir();
        for stale in spool::sweep(&tmp) {
            tracing::warn!(spool = %stale.display(), "a killed archiver's plaintext spool was removed");
        }
        let spool = spool::create(&tmp).map_err(|source| BinlogError::Io {
            what: "cannot create a spool folder in",
            path: tmp.display().to_string(),
            source,
        })?;
        let defaults = self.conn.defaults_file_in(spool.path())?;
        let mut cmd = tokio::process::Command::new(&tool);
        cmd.arg(format!(
            "--defaults-extra-file={}",
            defaults.path().display()
        ))
        .args(["--read-from-remote-server", "--raw", "--stop-never"])
        .arg(format!("--result-file={}/", spool.path().display()))
        .arg(&start);
        let (child, _, _) =
            process::spawn(cmd, &tool, false, false).map_err(|source| BinlogError::Stream {
                host: self.conn.host.clone(),
                port: self.conn.port,
                source,
            })?;
        let mut child = Box::pin(child.wait());
        let mut last_partial = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                exit = &mut child => {
                    // Store what arrived, then report why the stream ended.
                    self.sweep(spool.path(), &mut stored, true).await?;
                    let source = match exit {
                        Err(e) => e,
                        Ok(_) => ProcessError::Failed {
                            program: tool.display().to_string(),
                            status: "exited".into(),
                            stderr: "the server closed the stream".into(),
                        },
                    };
                    return Err(BinlogError::Stream {
                        host: self.conn.host.clone(),
                        port: self.conn.port,
                        source,
                    });
                }
                _ = self.cancel.cancelled() => {
                    drop(child);
                    self.sweep(spool.path(), &mut stored, true).await?;
                    tracing::info!(source = %self.source, "binlog archiving stopped; the file in progress is stored as a partial copy");
                    return Ok(());
                }
                _ = tick.tick() => {
                    let due = last_partial.elapsed() >= self.interval;
                    self.sweep(spool.path(), &mut stored, due).await?;
                    if due {
                        last_partial = Instant::now();
                    }
                }
            }
        }
    }

    /// The first file to stream: the first the server has that is not
    /// stored complete. A file the server no longer has is a gap: said loudly.
    fn start_file(
        &self,
        stored: &BTreeMap<String, BinlogRecord>,
        server: &[String],
    ) -> Option<String> {
        let last_final = stored
            .values()
            .filter(|r| r.complete)
            .map(|r| r.file.clone())
            .max_by_key(|f| file_order(f));
        let first_missing = server
            .iter()
            .find(|f| {
                !stored.get(*f).is_some_and(|r| r.complete)
                    && last_final
                        .as_ref()
                        .is_none_or(|l| file_order(f) > file_order(l))
            })
            .cloned();
        if let (Some(last), Some(first)) = (&last_final, server.first()) {
            let (_, n_last) = file_order(last);
            let (_, n_first) = file_order(first);
            if n_first > n_last + 1 {
                tracing::error!(source = %self.source, last_archived = %last, oldest_on_server = %first, "binlog gap: files after the last archived one were purged from the server before they could be archived; point-in-time recovery cannot cross this gap. Take a new dump now");
            }
        }
        first_missing.or_else(|| server.last().cloned())
    }

    /// Stores every complete file in the spool and, when `partial_due`,
    /// the file in progress.
    async fn sweep(
        &self,
        spool: &Path,
        stored: &mut BTreeMap<String, BinlogRecord>,
        partial_due: bool,
    ) -> Result<(), BinlogError> {
        spool::restrict(spool);
        let mut files: Vec<String> = std::fs::read_dir(spool)
            .map_err(|source| BinlogError::Io {
                what: "cannot read",
                path: spool.display().to_string(),
                source,
            })?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            // The client's option file lives here too.
            .filter(|f| !f.starts_with(spool::CLIENT_FILE_PREFIX))
            .collect();
        files.sort_by_key(|f| file_order(f));
        let Some(newest) = files.pop() else {
            return Ok(());
        };
        for f in files {
            let path = spool.join(&f);
            if !stored.get(&f).is_some_and(|r| r.complete) {
                let rec = self.store(&path, &f, true, stored.get(&f)).await?;
                stored.insert(f.clone(), rec);
            }
            let _ = std::fs::remove_file(&path);
        }
        if partial_due {
            let path = spool.join(&newest);
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let have = stored.get(&newest).map_or(0, |r| r.plaintext.size);
            let from = self
                .scanned
                .lock()
                .expect("poisoned")
                .get(&newest)
                .copied()
                .unwrap_or(0);
            let whole = event_boundary(&path, from, size).unwrap_or(0);
            if whole > have && !stored.get(&newest).is_some_and(|r| r.complete) {
                let rec = self
                    .store(&path, &newest, false, stored.get(&newest))
                    .await?;
                stored.insert(newest.clone(), rec);
            }
        }
        Ok(())
    }

    /// Stores `path` (its first `size` bytes, fixed now: the file may be
    /// growing) and its record; removes the copy it replaces.
    async fn store(
        &self,
        path: &Path,
        file: &str,
        complete: bool,
        replaces: Option<&BinlogRecord>,
    ) -> Result<BinlogRecord, BinlogError> {
        let io_err = |source| BinlogError::Io {
            what: "cannot read",
            path: path.display().to_string(),
            source,
        };
        let f = tokio::fs::File::open(path).await.map_err(io_err)?;
        let mut size = f.metadata().await.map_err(io_err)?.len();
        if !complete {
            // The tool writes as it receives: cut at the last whole event.
            let from = self
                .scanned
                .lock()
                .expect("poisoned")
                .get(file)
                .copied()
                .unwrap_or(0);
            size = event_boundary(path, from, size).map_err(io_err)?;
            self.scanned
                .lock()
                .expect("poisoned")
                .insert(file.to_string(), size);
        }
        let base = format!("{}{file}/", prefix(&self.policy, &self.source));
        let stem = if complete {
            "final".to_string()
        } else {
            format!("partial-{size:012}")
        };
        let ext = self.settings.compression.algorithm.extension();
        let key = format!("{base}{stem}.{ext}.age");
        let record_key = format!("{base}{stem}.json");
        // A crash between data and record leaves a data object without a
        // record; a retry writes it again under the same name.
        let _ = self.repo.store().delete(&key).await;
        let writer = self.repo.store().create(&key).await?;
        let pending = pipeline::encode(f.take(size), &self.settings, &key, writer, None).await?;
        let enc = pending.commit().await?;
        let rec = BinlogRecord {
            format: crate::repository::FORMAT_VERSION,
            file: file.to_string(),
            complete,
            key,
            plaintext: enc.plaintext,
            stored: enc.stored,
            compression: self.settings.compression.algorithm,
            recipients: self.recipients.clone(),
            archived_at: Utc::now(),
        };
        let body = serde_json::to_vec_pretty(&rec).expect("record serializes");
        let _ = self.repo.store().delete(&record_key).await;
        self.repo.store().put(&record_key, body.into()).await?;
        tracing::info!(source = %self.source, file, complete, bytes = rec.plaintext.size, "binlog stored");
        if let Some(old) = replaces.filter(|o| o.key != rec.key) {
            let old_record = old
                .key
                .replace(&format!(".{}.age", old.compression.extension()), ".json");
            for k in [&old_record, &old.key] {
                if let Err(e) = self.repo.store().delete(k).await {
                    tracing::warn!(key = %k, error = %e, "cannot delete a replaced partial binlog copy; it is harmless");
                }
            }
        }
        Ok(rec)
    }
}

/// Gaps and windows of the binlog archive.
#[derive(Debug, Clone, Serialize)]
pub struct BinlogReport {
    pub files: Vec<FileState>,
    /// Files missing between archived ones (by number).
    pub gaps: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileState {
    pub file: String,
    pub complete: bool,
    pub bytes: u64,
    pub archived_at: DateTime<Utc>,
}

pub fn report(state: &BTreeMap<String, BinlogRecord>) -> BinlogReport {
    let mut files: Vec<&BinlogRecord> = state.values().collect();
    files.sort_by_key(|r| file_order(&r.file));
    let mut gaps = Vec::new();
    for w in files.windows(2) {
        let (base, a) = file_order(&w[0].file);
        let (base_b, b) = file_order(&w[1].file);
        if base == base_b && b > a + 1 {
            let width = w[0].file.rsplit_once('.').map_or(6, |(_, n)| n.len());
            for n in a + 1..b {
                gaps.push(format!("{base}.{n:0width$}"));
            }
        }
    }
    BinlogReport {
        files: files
            .iter()
            .map(|r| FileState {
                file: r.file.clone(),
                complete: r.complete,
                bytes: r.plaintext.size,
                archived_at: r.archived_at,
            })
            .collect(),
        gaps,
    }
}

/// Decodes one archived file (for tests and restores).
pub async fn fetch(
    repo: &Repository,
    rec: &BinlogRecord,
    identities: Arc<crate::keys::Identities>,
) -> Result<Vec<u8>, BinlogError> {
    Ok(pipeline::decode_to_vec(repo.store().as_ref(), &rec.expected(), identities).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(file: &str, complete: bool) -> BinlogRecord {
        BinlogRecord {
            format: 1,
            file: file.into(),
            complete,
            key: String::new(),
            plaintext: Digest {
                size: 1,
                sha256: String::new(),
            },
            stored: Digest {
                size: 1,
                sha256: String::new(),
            },
            compression: Algorithm::Zstd,
            recipients: vec![],
            archived_at: Utc::now(),
        }
    }

    #[test]
    fn partial_copies_end_on_an_event_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("binlog.000001");
        let mut data = vec![0xfe, b'b', b'i', b'n'];
        for len in [30u32, 19, 100] {
            let mut ev = vec![0u8; len as usize];
            ev[9..13].copy_from_slice(&len.to_le_bytes());
            data.extend(ev);
        }
        data.extend([1, 2, 3, 4, 5]); // the start of a fourth event
        std::fs::write(&path, &data).unwrap();
        let size = data.len() as u64;
        assert_eq!(event_boundary(&path, 0, size).unwrap(), 4 + 30 + 19 + 100);
        assert_eq!(event_boundary(&path, 34, size).unwrap(), 153);
        assert_eq!(event_boundary(&path, 0, 60).unwrap(), 53);
        assert_eq!(event_boundary(&path, 0, 2).unwrap(), 0);
    }

    #[test]
    fn binlog_files_sort_numerically_and_gaps_are_named() {
        assert!(file_order("binlog.000010") > file_order("binlog.000009"));
        assert!(file_order("binlog.1000000") > file_order("binlog.999999"));
        let mut state = BTreeMap::new();
        for (f, c) in [
            ("binlog.000001", true),
            ("binlog.000002", true),
            ("binlog.000005", false),
        ] {
            state.insert(f.to_string(), rec(f, c));
        }
        let r = report(&state);
        assert_eq!(r.gaps, ["binlog.000003", "binlog.000004"]);
        assert_eq!(r.files.len(), 3);
        assert!(!r.files[2].complete);
    }
}
