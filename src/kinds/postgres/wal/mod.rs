//! PostgreSQL write-ahead log: file names, LSNs, and what a continuous
//! archive can recover to.
//!
//! - [`archive`]: `wal-push` and `wal-fetch`, the archive's object layout;
//! - [`end`]: the last whole record and newest commit replay can reach,
//!   read from the archived WAL with `pg_waldump`;
//! - [`reach`]: timelines, gaps, and the recovery window of each base backup
//!   (`wal-verify` and the point-in-time restore planner).

pub mod archive;
pub mod end;
pub mod reach;

use std::fmt;

/// The default WAL segment size (`initdb --wal-segsize`).
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// A log sequence number: a byte position in the WAL stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's `X/Y` notation (both parts hex).
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return None;
        }
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        Some(Lsn((hi << 32) | lo))
    }

    /// The segment number this position falls in.
    pub fn segment(self, segment_size: u64) -> u64 {
        self.0 / segment_size
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Lsn::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not an LSN: {s}")))
    }
}

/// What a file in `pg_wal` (or the archive) is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFile {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`: a complete segment.
    Segment { timeline: u32, log: u32, seg: u32 },
    /// The same with `.partial`: the last, incomplete segment of a timeline
    /// a promoted server left.
    Partial { timeline: u32, log: u32, seg: u32 },
    /// `...segment.OFFSET.backup`: a base backup's history file.
    Backup {
        timeline: u32,
        log: u32,
        seg: u32,
        offset: u32,
    },
    /// `TTTTTTTT.history`: a timeline's ancestry.
    History { timeline: u32 },
}

fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

fn hex24(s: &str) -> Option<(u32, u32, u32)> {
    if s.len() != 24 {
        return None;
    }
    Some((hex8(&s[..8])?, hex8(&s[8..16])?, hex8(&s[16..])?))
}

impl WalFile {
    /// Recognizes the names PostgreSQL archives; anything else is `None`.
    pub fn parse(name: &str) -> Option<WalFile> {
        if let Some((t, l, s)) = hex24(name) {
            return Some(WalFile::Segment {
                timeline: t,
                log: l,
                seg: s,
            });
        }
        if let Some(base) = name.strip_suffix(".partial") {
            let (t, l, s) = hex24(base)?;
            return Some(WalFile::Partial {
                timeline: t,
                log: l,
                seg: s,
            });
        }
        if let Some(base) = name.strip_suffix(".backup") {
            let (seg, off) = base.split_once('.')?;
            let (t, l, s) = hex24(seg)?;
            return Some(WalFile::Backup {
                timeline: t,
                log: l,
                seg: s,
                offset: hex8(off)?,
            });
        }
        if let Some(t) = name.strip_suffix(".history") {
            return Some(WalFile::History { timeline: hex8(t)? });
        }
        None
    }

    pub fn timeline(&self) -> u32 {
        match *self {
            WalFile::Segment { timeline, .. }
            | WalFile::Partial { timeline, .. }
            | WalFile::Backup { timeline, .. }
            | WalFile::History { timeline } => timeline,
        }
    }

    /// The segment number (counting from 0 across `log` boundaries).
    pub fn segno(&self, segment_size: u64) -> Option<u64> {
        match *self {
            WalFile::Segment { log, seg, .. }
            | WalFile::Partial { log, seg, .. }
            | WalFile::Backup { log, seg, .. } => {
                Some(log as u64 * segments_per_log(segment_size) + seg as u64)
            }
            WalFile::History { .. } => None,
        }
    }
}

/// Segments per `log` id: 256 with 16 MiB segments.
pub fn segments_per_log(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size
}

/// The file name of segment `segno` on `timeline`.
pub fn segment_name(timeline: u32, segno: u64, segment_size: u64) -> String {
    let per = segments_per_log(segment_size);
    format!("{:08X}{:08X}{:08X}", timeline, segno / per, segno % per)
}

/// Parses a timeline history file: `parent<TAB>switch LSN<TAB>reason` lines.
/// Returns (parent timeline, LSN where the child began), oldest first.
pub fn parse_history(text: &str) -> Vec<(u32, Lsn)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let mut f = l.split_whitespace();
            let tli = f.next()?.parse().ok()?;
            let lsn = Lsn::parse(f.next()?)?;
            Some((tli, lsn))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_round_trip_in_postgres_notation() {
        let l = Lsn::parse("0/5000060").unwrap();
        assert_eq!(l.0, 0x5000060);
        assert_eq!(l.to_string(), "0/5000060");
        assert_eq!(
            Lsn::parse("16/B374D848").unwrap().to_string(),
            "16/B374D848"
        );
        assert_eq!(
            Lsn::parse("1/0").unwrap().segment(DEFAULT_SEGMENT_SIZE),
            256
        );
        for bad in ["", "0", "/1", "1/", "x/1", "123456789/0"] {
            assert!(Lsn::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn wal_names_are_recognized_and_built() {
        let seg = WalFile::parse("000000010000000200000003").unwrap();
        assert_eq!(seg.segno(DEFAULT_SEGMENT_SIZE), Some(2 * 256 + 3));
        assert_eq!(
            segment_name(1, 2 * 256 + 3, DEFAULT_SEGMENT_SIZE),
            "000000010000000200000003"
        );
        assert!(matches!(
            WalFile::parse("000000020000000000000005.partial"),
            Some(WalFile::Partial { timeline: 2, .. })
        ));
        assert!(matches!(
            WalFile::parse("000000010000000000000002.00000028.backup"),
            Some(WalFile::Backup { offset: 0x28, .. })
        ));
        assert_eq!(
            WalFile::parse("0000000A.history"),
            Some(WalFile::History { timeline: 10 })
        );
        // One-gigabyte segments: four per log id.
        assert_eq!(segment_name(1, 5, 1 << 30), "000000010000000100000001");
        for bad in [
            "RECOVERYXLOG",
            "00000001000000000000000g",
            "000000010000000000000001.tmp",
            "archive_status",
            "0000000a0000000000000001",
        ] {
            assert_eq!(WalFile::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn history_files_list_parents_oldest_first() {
        let h = "1\t0/3000000\tno recovery target specified\n\n2\t0/5000A8\tbefore 2026-11-21 14:03:00+00\n";
        assert_eq!(
            parse_history(h),
            vec![(1, Lsn(0x3000000)), (2, Lsn(0x5000A8))]
        );
    }
}
