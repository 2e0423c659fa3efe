//! The recoverable end of a WAL archive, read from the archived WAL itself.
//!
//! Object names say which segments exist, not what is in them: a segment
//! archived at 10:40:14 may hold no commit after 10:40:09.9, and a record
//! that starts in the last archived segment may end in one that was never
//! archived. A restore that trusts names or timestamps asks PostgreSQL for
//! a point it cannot reach, and recovery stops with `FATAL: recovery ended
//! before configured recovery target was reached`.
//!
//! So the plan decodes the last segments of the unbroken run and reads
//! them with the server's own `pg_waldump`: the last record that is whole
//! (recovery can stop after it: `recovery_target_lsn` with the default
//! `recovery_target_inclusive`) and the newest transaction end with its
//! timestamp (`recovery_target_time` stops before the first commit or
//! abort stamped later than the target, so a target at or after it can
//! never be "reached" and must become an LSN target).

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use super::archive::{self, ArchivedFile, WalError};
use super::reach::Reach;
use super::{segment_name, Lsn, WalFile};
use crate::keys::Identities;
use crate::kinds::postgres::source::{PgError, PgTools};
use crate::process::ProcessError;
use crate::storage::ObjectStore;

/// Segments decoded at first; doubled while no transaction end is found.
const FIRST_WINDOW: u64 = 2;
/// The most segments decoded looking for a transaction end (1 GiB at the
/// default size): past that the newest commit is reported as unknown.
const MAX_WINDOW: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum EndError {
    #[error("cannot read the end of the WAL archive: {0}")]
    Wal(#[from] WalError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("cannot read the end of the WAL archive: pg_waldump found no whole WAL record in {segments} (it said: {stderr}). Their hashes matched when they were fetched, so pg_waldump probably does not match the server: it must be the server's major version, and the policy's segment size the cluster's")]
    NoRecord { segments: String, stderr: String },
    #[error("cannot read the end of the WAL archive: pg_waldump stopped abnormally ({status}) reading {segments}: {stderr}")]
    Waldump {
        segments: String,
        status: String,
        stderr: String,
    },
    #[error("cannot read the end of the WAL archive: {0}")]
    Process(#[from] ProcessError),
    #[error("cannot read the end of the WAL archive: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl crate::outcome::Classify for EndError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Wal(e) => e.outcome(),
            Self::NoRecord { .. } => Outcome::Integrity,
            Self::Postgres(e) => e.outcome(),
            Self::Process(e) => e.outcome(),
            Self::Waldump { .. } | Self::Io { .. } => Outcome::Failure,
        }
    }
}

/// A transaction end (commit or abort) in the WAL, with its timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XactEnd {
    pub time: DateTime<Utc>,
    /// Where its record starts.
    pub lsn: Lsn,
    pub aborted: bool,
}

/// What replay from a base backup can actually reach.
#[derive(Debug, Clone, Serialize)]
pub struct WalEnd {
    pub timeline: u32,
    /// The last segment of the unbroken run.
    pub segment: String,
    /// Where the last whole record starts: `--until-lsn` of this value
    /// restores everything the archive holds.
    pub last_record: Lsn,
    /// The commit or abort with the newest timestamp among the decoded
    /// segments (timestamps are taken before the WAL insert, so under
    /// concurrency the newest is not always the last); `None` when the
    /// decoded segments hold none (see [`MAX_WINDOW`]).
    pub newest_xact: Option<XactEnd>,
    /// False when the search for a transaction end stopped at its limit
    /// rather than at the base backup's first segment.
    pub searched_to_start: bool,
}

impl WalEnd {
    /// For messages: "transaction committed at ... (LSN ...)".
    pub fn describe_newest(&self) -> String {
        match &self.newest_xact {
            Some(x) => format!(
                "the newest archived transaction {} at {} (LSN {})",
                if x.aborted {
                    "rolled back"
                } else {
                    "committed"
                },
                x.time.format("%Y-%m-%d %H:%M:%S%.6f UTC"),
                x.lsn
            ),
            None if self.searched_to_start => {
                "no transaction ended after the base backup".to_string()
            }
            None => format!("no transaction ended in the last {MAX_WINDOW} archived segments"),
        }
    }
}

/// One record as `pg_waldump` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    lsn: Lsn,
    /// A commit or abort (prepared ones too): its timestamp and whether it
    /// rolled back. These are the records `recovery_target_time` stops at.
    xact: Option<(DateTime<Utc>, bool)>,
}

/// Parses one line of `pg_waldump` output (run with `TZ=UTC`):
/// `rmgr: Transaction len (rec/tot): 34/ 34, tx: 745, lsn: 0/0300A0B8, prev 0/0300A080, desc: COMMIT 2026-12-07 11:55:33.231242 UTC; ...`
fn parse_line(line: &str) -> Option<Record> {
    let rest = line.strip_prefix("rmgr: ")?;
    let rmgr = rest.split_whitespace().next()?;
    let lsn = Lsn::parse(rest.split_once(", lsn: ")?.1.split_once(',')?.0)?;
    let desc = rest.split_once(", desc: ").map_or("", |(_, d)| d);
    let xact = if rmgr == "Transaction" {
        // COMMIT_PREPARED and ABORT_PREPARED name the prepared transaction
        // first: "COMMIT_PREPARED 729: 2026-...".
        let (aborted, stamp) = if let Some(s) = desc.strip_prefix("COMMIT ") {
            (false, s)
        } else if let Some(s) = desc.strip_prefix("ABORT ") {
            (true, s)
        } else if let Some(s) = desc.strip_prefix("COMMIT_PREPARED ") {
            (false, s.split_once(": ").map_or("", |(_, t)| t))
        } else if let Some(s) = desc.strip_prefix("ABORT_PREPARED ") {
            (true, s.split_once(": ").map_or("", |(_, t)| t))
        } else {
            (false, "")
        };
        stamp
            .get(..26)
            .and_then(|s| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.6f").ok())
            .map(|t| (t.and_utc(), aborted))
    } else {
        None
    };
    Some(Record { lsn, xact })
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EndError {
    let path = path.display().to_string();
    move |source| EndError::Io { what, path, source }
}

/// Reads the end of the unbroken run `reach` describes (from a base backup
/// starting at `start`): decodes its last segments into a private folder
/// and walks them with `pg_waldump`.
pub async fn find(
    store: &dyn ObjectStore,
    files: &[ArchivedFile],
    reach: &Reach,
    start: Lsn,
    segment_size: u64,
    identities: &Arc<Identities>,
    tools: &PgTools,
) -> Result<WalEnd, EndError> {
    let last_name = reach
        .last_segment
        .clone()
        .expect("a reach with a segment (the base backup's own WAL is archived)");
    let last = WalFile::parse(&last_name)
        .and_then(|f| f.segno(segment_size))
        .expect("a segment name");
    let tli = reach.timeline;
    let by_name = |name: &str| files.iter().find(|f| f.name == name);
    // The lowest segment this timeline holds without a break, down to the
    // base backup's first.
    let mut lowest = last;
    while lowest > start.segment(segment_size)
        && by_name(&segment_name(tli, lowest - 1, segment_size)).is_some()
    {
        lowest -= 1;
    }
    let dir = tempfile::Builder::new()
        .prefix("lifeboat-walend-")
        .tempdir()
        .map_err(io_err(
            "cannot create a private folder in",
            &std::env::temp_dir(),
        ))?;
    let mut window = FIRST_WINDOW;
    let mut fetched_from = last + 1;
    loop {
        let first = last.saturating_sub(window - 1).max(lowest);
        for segno in (first..fetched_from).rev() {
            let name = segment_name(tli, segno, segment_size);
            let file = by_name(&name).expect("checked above");
            archive::fetch_to(store, file, identities, &dir.path().join(&name)).await?;
        }
        fetched_from = first;
        let (summary, stderr) = waldump(
            tools,
            dir.path(),
            &segment_name(tli, first, segment_size),
            &last_name,
        )
        .await?;
        let Some(last_record) = summary.last else {
            if first > lowest && window < MAX_WINDOW {
                // A record longer than the window: look further back.
                window *= 2;
                continue;
            }
            return Err(EndError::NoRecord {
                segments: format!("{} .. {last_name}", segment_name(tli, first, segment_size)),
                stderr,
            });
        };
        let newest_xact = summary.newest;
        let searched_to_start = first == lowest;
        if newest_xact.is_some() || searched_to_start || window >= MAX_WINDOW {
            return Ok(WalEnd {
                timeline: tli,
                segment: last_name,
                last_record,
                searched_to_start: newest_xact.is_none() && searched_to_start,
                newest_xact,
            });
        }
        window = (window * 4).min(MAX_WINDOW);
    }
}

/// What `pg_waldump` found: the last whole record and the transaction end
/// with the newest timestamp. Its output is read as it comes: a window of
/// 64 segments prints gigabytes.
#[derive(Debug, Default)]
struct Summary {
    last: Option<Lsn>,
    newest: Option<XactEnd>,
}

impl Summary {
    fn add(&mut self, r: Record) {
        if let Some((time, aborted)) = r.xact {
            if self.newest.as_ref().is_none_or(|n| time > n.time) {
                self.newest = Some(XactEnd {
                    time,
                    lsn: r.lsn,
                    aborted,
                });
            }
        }
        self.last = Some(r.lsn);
    }
}

/// Runs `pg_waldump` over the segments `first ..= last` in `dir`. It ends
/// with "error in WAL record" at the end of the archived WAL (the next
/// record is not there): that is expected. Any other end (a signal, a
/// crash) may have cut its output short and is an error.
async fn waldump(
    tools: &PgTools,
    dir: &Path,
    first: &str,
    last: &str,
) -> Result<(Summary, String), EndError> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let program = tools.tool("pg_waldump");
    // UTC times, and untranslated messages (the end of WAL is recognized
    // by its English text).
    let mut cmd = tokio::process::Command::new(&program);
    cmd.env("TZ", "UTC")
        .env("LC_ALL", "C")
        .arg("--path")
        .arg(dir)
        .arg(first)
        .arg(last)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child =
        crate::process::spawn_child(&mut cmd).map_err(|source| ProcessError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let collect_stderr = async {
        let mut buf = Vec::new();
        stderr.read_to_end(&mut buf).await.map(|_| buf)
    };
    let scan = async {
        // Not `lines()`: a restore point's name or a prepared transaction's
        // id in a non-UTF-8 database is not UTF-8.
        let mut reader = tokio::io::BufReader::new(stdout);
        let mut line = Vec::with_capacity(512);
        let mut summary = Summary::default();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).await? == 0 {
                break;
            }
            if let Some(r) = parse_line(&String::from_utf8_lossy(&line)) {
                summary.add(r);
            }
        }
        std::io::Result::Ok(summary)
    };
    let (summary, err) = tokio::join!(scan, collect_stderr);
    let summary = summary.map_err(io_err("cannot read the output of", &program))?;
    let err = err.map_err(io_err("cannot read the errors of", &program))?;
    let status = child
        .wait()
        .await
        .map_err(io_err("cannot wait for", &program))?;
    let stderr = String::from_utf8_lossy(&err).trim().to_string();
    let ended_normally =
        status.success() || (status.code() == Some(1) && stderr.contains("error in WAL record"));
    if !ended_normally && summary.last.is_some() {
        return Err(EndError::Waldump {
            segments: format!("{first} .. {last}"),
            status: status.to_string(),
            stderr,
        });
    }
    Ok((summary, stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waldump_lines_give_record_bounds_and_transaction_ends() {
        let commit = "rmgr: Transaction len (rec/tot):    405/   405, tx:        727, lsn: 0/01D754A0, prev 0/01D75460, desc: COMMIT 2026-12-07 11:55:33.231242 UTC; inval msgs: catcache 80";
        let r = parse_line(commit).unwrap();
        assert_eq!(r.lsn, Lsn(0x01D7_54A0));
        let (t, aborted) = r.xact.unwrap();
        assert!(!aborted);
        assert_eq!(
            t,
            "2026-12-07T11:55:33.231242Z"
                .parse::<DateTime<Utc>>()
                .unwrap()
        );
        let abort = "rmgr: Transaction len (rec/tot):     34/    34, tx:        728, lsn: 1/00000028, prev 0/FFFFFFD0, desc: ABORT 2026-12-07 11:55:34.000000 UTC";
        let r = parse_line(abort).unwrap();
        assert_eq!(r.lsn, Lsn((1 << 32) | 0x28));
        assert!(r.xact.unwrap().1);
        let heap = "rmgr: Heap        len (rec/tot):     59/    59, tx:        727, lsn: 0/01D75460, prev 0/01D75428, desc: INSERT+INIT off 1 flags 0x00, blkref #0: rel 1663/16386/16387 blk 0";
        assert_eq!(parse_line(heap).unwrap().xact, None);
        let switch = "rmgr: XLOG        len (rec/tot):     24/    24, tx:          0, lsn: 0/02FFFFE0, prev 0/02FFFF90, desc: SWITCH ";
        assert_eq!(parse_line(switch).unwrap().lsn, Lsn(0x02FF_FFE0));
        // PREPARE ends nothing; COMMIT/ABORT PREPARED do, and recovery
        // stops at them by time.
        let prepare = "rmgr: Transaction len (rec/tot):     34/    34, tx:        729, lsn: 0/03000028, prev 0/02FFFFE0, desc: PREPARE gid x: 2026-12-07 11:55:34.000000 UTC";
        assert_eq!(parse_line(prepare).unwrap().xact, None);
        let committed = "rmgr: Transaction len (rec/tot):     66/    66, tx:          0, lsn: 0/03000060, prev 0/03000028, desc: COMMIT_PREPARED 729: 2026-12-07 11:55:35.000001 UTC";
        let (t, aborted) = parse_line(committed).unwrap().xact.unwrap();
        assert!(!aborted);
        assert_eq!(
            t,
            "2026-12-07T11:55:35.000001Z"
                .parse::<DateTime<Utc>>()
                .unwrap()
        );
        let rolled_back = "rmgr: Transaction len (rec/tot):     66/    66, tx:          0, lsn: 0/030000A8, prev 0/03000060, desc: ABORT_PREPARED 730: 2026-12-07 11:55:36.000000 UTC";
        assert!(parse_line(rolled_back).unwrap().xact.unwrap().1);
        // The newest stamp wins, not the last record.
        let mut s = Summary::default();
        for l in [committed, commit, switch] {
            s.add(parse_line(l).unwrap());
        }
        assert_eq!(s.last, Some(Lsn(0x02FF_FFE0)));
        assert_eq!(s.newest.unwrap().lsn, Lsn(0x0300_0060));
        assert_eq!(parse_line("pg_waldump: error: error in WAL record"), None);
    }
}
