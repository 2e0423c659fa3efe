//! The end of an archived binlog file, read from its own events: the
//! decoded bytes are walked header by header (magic, then 19-byte event
//! headers), so no statement text can pass for an event and no tool's
//! output format matters.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{BinlogError, BinlogRecord};
use crate::pipeline::{self, PipelineError};
use crate::repository::Repository;

/// What the end of an archived binlog file says, read from its events.
#[derive(Debug, Clone, Serialize)]
pub struct BinlogEnd {
    pub file: String,
    /// Stored whole (the server had rotated away from it).
    pub complete: bool,
    /// Where the event after the last whole one would start: `--until-position
    /// FILE:POS` with this value replays the whole copy.
    pub end_position: u64,
    /// The newest time stamped on an event of a transaction (binlog times
    /// are whole seconds); None when the file holds none.
    pub newest_event: Option<DateTime<Utc>>,
    /// The newest time on any event, the file's own header events included
    /// (its Format_desc is stamped when the server opened it).
    pub newest_any: Option<DateTime<Utc>>,
    /// The time of the Rotate or Stop event that closes a whole file: the
    /// server wrote nothing more into this file, and its next file starts
    /// then. None for a copy of the file in progress.
    pub closed_at: Option<DateTime<Utc>>,
    /// The newest archived MariaDB GTID of each domain (`domain-server-seq`).
    pub gtids: Vec<String>,
}

impl BinlogEnd {
    /// The newest time a `--until` can name and still be restored exactly
    /// from the archive: every event stamped before it is in the archive.
    /// For a whole file, when the server left it; for a copy of the file in
    /// progress, its newest event (what came after the copy is unknown).
    pub fn exact_until(&self) -> Option<DateTime<Utc>> {
        match (self.closed_at, self.newest_any) {
            (Some(c), Some(n)) => Some(c.max(n)),
            (c, n) => c.or(n),
        }
    }

    /// "binlog.000005:12119 (a copy of the file in progress, newest event
    /// stamped ...)", for plans and messages.
    pub fn describe(&self) -> String {
        format!(
            "{}:{} ({}{})",
            self.file,
            self.end_position,
            copy_kind(self.complete),
            self.newest_event
                .map(|t| format!(
                    ", newest event stamped {}",
                    t.format("%Y-%m-%d %H:%M:%S UTC")
                ))
                .unwrap_or_default()
        )
    }

    /// The newest archived sequence number of a GTID domain.
    pub fn gtid_seq(&self, domain: u32) -> Option<u64> {
        self.gtids.iter().find_map(|g| {
            let (d, _, n) = parse_gtid(g)?;
            (d == domain).then_some(n)
        })
    }
}

/// What an archived copy of a binlog file is.
pub fn copy_kind(complete: bool) -> &'static str {
    if complete {
        "a whole file"
    } else {
        "a copy of the file in progress"
    }
}

/// `domain-server-seq` → its parts.
pub fn parse_gtid(g: &str) -> Option<(u32, u32, u64)> {
    let mut it = g.trim().split('-');
    let d = it.next()?.parse().ok()?;
    let s = it.next()?.parse().ok()?;
    let n = it.next()?.parse().ok()?;
    it.next().is_none().then_some((d, s, n))
}

/// One event header as `mariadb-binlog` prints it (run with `TZ=UTC`):
/// `#241204  9:05:01 server id 1  end_log_pos 676 CRC32 0x73170120 \tXid = 12`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHeader {
    /// Seconds since the epoch.
    pub time: i64,
    pub end_log_pos: u64,
    /// The event type and what follows it (`Xid = 12`, `Rotate to ...`).
    pub kind: String,
}

/// Parses an event header line; anything else is None. Callers must only
/// ask for lines right after `# at <offset>`: a statement's text can look
/// the same.
pub fn event_header(line: &[u8]) -> Option<EventHeader> {
    let header = line.strip_prefix(b"#")?;
    let rest = header.get(15..)?.strip_prefix(b" server id ")?;
    // The hour is padded with a space.
    let stamp = std::str::from_utf8(&header[..15])
        .ok()?
        .replacen("  ", " 0", 1);
    let time = chrono::NaiveDateTime::parse_from_str(&stamp, "%y%m%d %H:%M:%S")
        .ok()?
        .and_utc()
        .timestamp();
    let rest = std::str::from_utf8(rest).ok()?;
    let end_log_pos = rest
        .split_once("end_log_pos ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let kind = rest
        .split_once('\t')
        .map_or("", |(_, k)| k)
        .trim()
        .to_string();
    Some(EventHeader {
        time,
        end_log_pos,
        kind,
    })
}

/// Event types the server writes for itself, not for a transaction: their
/// times say when a file was opened or closed, not when data changed.
/// (STOP, ROTATE, FORMAT_DESCRIPTION, HEARTBEAT, MySQL's PREVIOUS_GTIDS,
/// MariaDB's BINLOG_CHECKPOINT, GTID_LIST and START_ENCRYPTION.)
const HOUSEKEEPING: [u8; 8] = [3, 4, 15, 27, 35, 161, 163, 164];
const STOP_EVENT: u8 = 3;
const ROTATE_EVENT: u8 = 4;
const XID_EVENT: u8 = 16;
const START_ENCRYPTION_EVENT: u8 = 164;

/// What a walk over an archived file's event headers found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Scanned {
    /// The last whole event's time and type.
    last: Option<(i64, u8)>,
    /// Newest time of a transaction's event / of any event (seconds).
    newest: Option<i64>,
    newest_any: Option<i64>,
    /// MariaDB GTIDs: domain → (server id, newest sequence number), from
    /// the file's Gtid_list (the state when it was opened) and its GTID
    /// events.
    gtids: BTreeMap<u32, (u32, u64)>,
    /// The first Gtid_list event's GTIDs: the state before the file.
    start_state: Option<Vec<(u32, u32, u64)>>,
    /// The GTID of the group being read: it counts once an XID event, the
    /// next group, or the end of a whole file shows the group ended (a copy
    /// of the file in progress may end inside a transaction, which a
    /// replay then leaves out).
    pending: Option<(u32, u32, u64)>,
}

const GTID_EVENT: u8 = 162;
const GTID_LIST_EVENT: u8 = 163;

impl Scanned {
    fn gtid(&mut self, domain: u32, server: u32, seq: u64) {
        let e = self.gtids.entry(domain).or_insert((server, seq));
        if seq >= e.1 {
            *e = (server, seq);
        }
    }

    /// Reads the GTIDs of a GTID or Gtid_list event's body. A GTID counts
    /// only once its transaction is whole (see [`Scanned::pending`]).
    fn gtid_event(&mut self, kind: u8, server: u32, body: &[u8]) -> Result<(), String> {
        let u32_at = |i: usize| {
            body.get(i..i + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let u64_at = |i: usize| {
            body.get(i..i + 8)
                .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        };
        match kind {
            // seq_no (8), domain_id (4), flags.
            GTID_EVENT => {
                let (Some(seq), Some(domain)) = (u64_at(0), u32_at(8)) else {
                    return Err(format!("a GTID event of {} bytes", body.len()));
                };
                // A new group: the one before it ended.
                self.settle();
                self.pending = Some((domain, server, seq));
            }
            // count (low 28 bits), then count × (domain, server, seq), then
            // the checksum if any.
            GTID_LIST_EVENT => {
                let count = u32_at(0).unwrap_or(0) & 0x0fff_ffff;
                let need = 4 + 16 * count as usize;
                if body.len() != need && body.len() != need + 4 {
                    return Err(format!(
                        "a Gtid_list event of {} bytes for {count} GTIDs",
                        body.len()
                    ));
                }
                let mut list = Vec::new();
                for i in 0..count as usize {
                    let at = 4 + i * 16;
                    if let (Some(d), Some(srv), Some(seq)) =
                        (u32_at(at), u32_at(at + 4), u64_at(at + 8))
                    {
                        self.gtid(d, srv, seq);
                        list.push((d, srv, seq));
                    }
                }
                self.start_state.get_or_insert(list);
            }
            _ => {}
        }
        Ok(())
    }

    /// The pending transaction ended: its GTID counts.
    fn settle(&mut self) {
        if let Some((d, srv, seq)) = self.pending.take() {
            self.gtid(d, srv, seq);
        }
    }
}

/// Walks the binary event headers of a binlog file (the 4-byte magic, then
/// events of 19-byte headers: timestamp, type, server id, size, next
/// position, flags), up to the events starting before `stop_position`.
/// The file's own bytes, not a tool's text output, so no statement text
/// can pass for an event.
async fn walk_events<R: tokio::io::AsyncRead + Unpin>(
    mut r: R,
    stop_position: Option<u64>,
) -> std::io::Result<Scanned> {
    use tokio::io::AsyncReadExt;
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut out = Scanned::default();
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).await?;
    if magic != [0xfe, b'b', b'i', b'n'] {
        return Err(invalid(format!(
            "it does not start like a binlog file ({magic:02x?}; an encrypted MySQL binlog?)"
        )));
    }
    let mut pos = 4u64;
    let mut header = [0u8; 19];
    while stop_position.is_none_or(|s| pos < s) {
        let mut got = 0;
        while got < header.len() {
            let n = r.read(&mut header[got..]).await?;
            if n == 0 && got == 0 {
                return Ok(out);
            }
            if n == 0 {
                return Err(invalid(format!("the event at position {pos} is cut short")));
            }
            got += n;
        }
        let time = i64::from(u32::from_le_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        let kind = header[4];
        let size = u64::from(u32::from_le_bytes([
            header[9], header[10], header[11], header[12],
        ]));
        if size < 19 {
            return Err(invalid(format!(
                "an event at position {pos} claims {size} bytes"
            )));
        }
        if kind == START_ENCRYPTION_EVENT {
            return Err(invalid(format!(
                "the events after position {pos} are encrypted (encrypt_binlog)"
            )));
        }
        let mut body = Vec::new();
        let wanted = size - 19;
        if kind == GTID_EVENT || kind == GTID_LIST_EVENT {
            (&mut r).take(wanted).read_to_end(&mut body).await?;
        } else {
            let n = tokio::io::copy(&mut (&mut r).take(wanted), &mut tokio::io::sink()).await?;
            body.resize(n as usize, 0);
        }
        if (body.len() as u64) < wanted {
            return Err(invalid(format!("the event at position {pos} is cut short")));
        }
        let server = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
        out.gtid_event(kind, server, &body).map_err(invalid)?;
        if kind == XID_EVENT || kind == ROTATE_EVENT || kind == STOP_EVENT {
            out.settle();
        }
        // Events the server makes up for a stream carry time 0.
        if time > 0 {
            out.newest_any = Some(out.newest_any.map_or(time, |n| n.max(time)));
            if !HOUSEKEEPING.contains(&kind) {
                out.newest = Some(out.newest.map_or(time, |n| n.max(time)));
            }
        }
        out.last = Some((time, kind));
        pos += size;
    }
    Ok(out)
}

/// Walks an archived file's events (those starting before
/// `stop_position`, or all), decoding it as it streams: nothing is kept.
async fn scan(
    repo: &Repository,
    rec: &BinlogRecord,
    identities: Arc<crate::keys::Identities>,
    stop_position: Option<u64>,
) -> Result<Scanned, BinlogError> {
    let (writer, reader) = tokio::io::duplex(256 * 1024);
    let expected = rec.expected();
    let decode = pipeline::decode(
        repo.store().as_ref(),
        &expected,
        identities,
        writer,
        "the event walker",
        None,
    );
    let (decoded, walked) = tokio::join!(decode, walk_events(reader, stop_position));
    let walked = walked.map_err(|e| BinlogError::BadRecord {
        key: rec.key.clone(),
        detail: format!("its events cannot be walked: {e}"),
    });
    match decoded {
        Ok(()) => walked,
        // The walk stopped reading: at the stop position, or on an error
        // of its own, which says more than the broken pipe.
        Err(PipelineError::Output { .. }) => walked,
        // A damaged or undecryptable object.
        Err(e) => Err(e.into()),
    }
}

/// Reads an archived file's events to find its end (see [`BinlogEnd`]).
pub async fn read_end(
    repo: &Repository,
    rec: &BinlogRecord,
    identities: Arc<crate::keys::Identities>,
) -> Result<BinlogEnd, BinlogError> {
    let s = scan(repo, rec, identities, None).await?;
    let at = |t: i64| DateTime::from_timestamp(t, 0);
    let closed_at = s
        .last
        .filter(|&(_, kind)| rec.complete && (kind == ROTATE_EVENT || kind == STOP_EVENT))
        .and_then(|(time, _)| at(time));
    Ok(BinlogEnd {
        file: rec.file.clone(),
        complete: rec.complete,
        end_position: rec.plaintext.size,
        newest_event: s.newest.and_then(at),
        newest_any: s.newest_any.and_then(at),
        closed_at,
        gtids: s
            .gtids
            .iter()
            .map(|(d, (srv, n))| format!("{d}-{srv}-{n}"))
            .collect(),
    })
}

/// The GTID state before an archived file (MariaDB writes it as the
/// file's Gtid_list event): `domain-server-seq` of each domain's newest
/// transaction in earlier files. Reads only the file's first events.
pub async fn state_before(
    repo: &Repository,
    rec: &BinlogRecord,
    identities: Arc<crate::keys::Identities>,
) -> Result<Vec<(u32, u32, u64)>, BinlogError> {
    // The Format_description and Gtid_list events come first.
    let s = scan(repo, rec, identities, Some(1024)).await?;
    s.start_state.ok_or_else(|| BinlogError::BadRecord {
        key: rec.key.clone(),
        detail: "no Gtid_list event at the start of the file: not a MariaDB binlog with GTIDs"
            .into(),
    })
}

/// The newest time stamped on an event of a transaction that ends before
/// `position` in `rec`: for a dump consistent at that position, the newest
/// event it holds, by the server's clock.
pub async fn newest_before(
    repo: &Repository,
    rec: &BinlogRecord,
    position: u64,
    identities: Arc<crate::keys::Identities>,
) -> Result<Option<DateTime<Utc>>, BinlogError> {
    let s = scan(repo, rec, identities, Some(position)).await?;
    // The file's own header events count too: its Format_description is
    // stamped when the server opened it, after every event of earlier files.
    let newest = match (s.newest, s.newest_any) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    Ok(newest.and_then(|t| DateTime::from_timestamp(t, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_headers_give_time_position_and_kind_and_the_exact_end() {
        let h = event_header(
            b"#261207 12:01:00 server id 1  end_log_pos 829 CRC32 0x8ab1e2af \tRotate to binlog.000002  pos: 4\n",
        )
        .unwrap();
        assert_eq!(h.end_log_pos, 829);
        assert!(h.kind.starts_with("Rotate to binlog.000002"));
        let x = event_header(
            b"#261207  9:05:01 server id 1  end_log_pos 579 CRC32 0x26748293 \tXid = 6",
        )
        .unwrap();
        assert_eq!(x.time, 1_796_634_301);
        assert_eq!(x.kind, "Xid = 6");
        assert_eq!(event_header(b"# at 4"), None);
        let at = |s: i64| DateTime::from_timestamp(s, 0);
        let whole = BinlogEnd {
            file: "binlog.000004".into(),
            complete: true,
            end_position: 829,
            newest_event: at(100),
            newest_any: at(102),
            closed_at: at(102),
            gtids: vec!["0-1-42".into(), "3-2-7".into()],
        };
        assert_eq!(whole.gtid_seq(3), Some(7));
        assert_eq!(whole.gtid_seq(1), None);
        assert_eq!(parse_gtid("0-1-42"), Some((0, 1, 42)));
        assert_eq!(parse_gtid("0-1"), None);
        assert_eq!(whole.exact_until(), at(102));
        let copy = BinlogEnd {
            complete: false,
            closed_at: None,
            ..whole
        };
        assert_eq!(copy.exact_until(), at(102));
    }

    fn event(time: u32, kind: u8, body: usize) -> Vec<u8> {
        let size = (19 + body) as u32;
        let mut e = vec![0u8; 19 + body];
        e[0..4].copy_from_slice(&time.to_le_bytes());
        e[4] = kind;
        e[9..13].copy_from_slice(&size.to_le_bytes());
        e
    }

    #[tokio::test]
    async fn the_event_walk_reads_times_and_types_from_the_file_itself() {
        let mut file = vec![0xfe, b'b', b'i', b'n'];
        file.extend(event(100, 15, 100)); // Format_desc
                                          // GTID, then a statement whose text looks like an event header.
        file.extend(event(101, 162, 20));
        let mut query = event(102, 2, 60);
        query[19..39].copy_from_slice(b"#991231 23:59:59 ser");
        file.extend(query);
        let dump_position = file.len() as u64;
        file.extend(event(103, 16, 8)); // Xid
        file.extend(event(105, 4, 30)); // Rotate
        let s = walk_events(&file[..], None).await.unwrap();
        assert_eq!(s.newest, Some(103));
        let mut list = event(100, GTID_LIST_EVENT, 4 + 16 + 4);
        list[19..23].copy_from_slice(&1u32.to_le_bytes());
        list[23..27].copy_from_slice(&0u32.to_le_bytes());
        list[27..31].copy_from_slice(&1u32.to_le_bytes());
        list[31..39].copy_from_slice(&41u64.to_le_bytes());
        let mut gtid = event(101, GTID_EVENT, 13 + 4);
        gtid[5..9].copy_from_slice(&2u32.to_le_bytes());
        gtid[19..27].copy_from_slice(&42u64.to_le_bytes());
        let mut g = vec![0xfe, b'b', b'i', b'n'];
        g.extend(list);
        g.extend(gtid);
        // Without its XID the transaction is not whole: 0-2-42 is not there.
        let sg = walk_events(&g[..], None).await.unwrap();
        assert_eq!(sg.gtids.get(&0), Some(&(1, 41)));
        assert_eq!(sg.start_state, Some(vec![(0, 1, 41)]));
        g.extend(event(102, XID_EVENT, 8));
        let sg = walk_events(&g[..], None).await.unwrap();
        assert_eq!(sg.gtids.get(&0), Some(&(2, 42)));
        assert_eq!(s.newest_any, Some(105));
        assert_eq!(s.last, Some((105, ROTATE_EVENT)));
        // Only the events before a position (a dump's).
        let s = walk_events(&file[..], Some(dump_position)).await.unwrap();
        assert_eq!(s.newest, Some(102));
        // A cut event is an error, not an end.
        assert!(walk_events(&file[..file.len() - 5], None).await.is_err());
        assert!(walk_events(&b"\xfdbin"[..], None).await.is_err());
        assert!(walk_events(
            &[0xfe, b'b', b'i', b'n', 1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
            None
        )
        .await
        .is_err());
    }
}
