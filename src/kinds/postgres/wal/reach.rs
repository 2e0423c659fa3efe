//! What the archive can recover to: timelines, gaps, and each base
//! backup's recovery window, from the archived file names alone (no key
//! needed, so `wal-verify` can run anywhere).
//!
//! A timeline's parent and switch point are inferred the way recovery
//! meets them: a promoted server's new timeline starts with a copy of the
//! segment holding the switch point, so timeline T begins at its lowest
//! archived segment, and its parent is the highest lower timeline that had
//! reached that segment. PostgreSQL itself follows the `.history` files,
//! which are archived and fetched like every other file.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::archive::ArchivedFile;
use super::{segment_name, Lsn, WalFile};

/// The archived WAL of one source, indexed for planning.
#[derive(Debug)]
pub struct WalIndex {
    pub segment_size: u64,
    /// timeline → segment number → when it was archived.
    segments: BTreeMap<u32, BTreeMap<u64, Option<DateTime<Utc>>>>,
    partials: BTreeMap<u32, BTreeSet<u64>>,
    histories: BTreeSet<u32>,
}

/// A timeline as seen in the archive.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineInfo {
    pub timeline: u32,
    /// The timeline it branched from, and the segment where it did.
    pub parent: Option<u32>,
    pub first_segment: Option<String>,
    pub last_segment: Option<String>,
    pub segments: usize,
    pub has_history_file: bool,
    pub has_partial: bool,
}

/// Missing segments between two archived ones of the same timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    pub timeline: u32,
    pub first_missing: String,
    pub last_missing: String,
    pub count: u64,
}

/// How far WAL replay from a given start can go.
#[derive(Debug, Clone, Serialize)]
pub struct Reach {
    /// The timeline recovery ends on (the newest descending from the start).
    pub timeline: u32,
    /// The end of the last segment of the unbroken run (an upper bound of
    /// the last replayable record).
    pub end_lsn: Lsn,
    pub last_segment: Option<String>,
    /// When that segment was archived: no commit after this time can be
    /// replayed.
    pub last_archived_at: Option<DateTime<Utc>>,
    /// The first missing segment, when later segments exist (a real gap,
    /// not just the end of the archive).
    pub gap_at: Option<String>,
    /// Timelines crossed, oldest first.
    pub path: Vec<u32>,
}

impl WalIndex {
    pub fn new(files: &[ArchivedFile], segment_size: u64) -> WalIndex {
        let mut idx = WalIndex {
            segment_size,
            segments: BTreeMap::new(),
            partials: BTreeMap::new(),
            histories: BTreeSet::new(),
        };
        for f in files {
            match f.file {
                WalFile::Segment { timeline, .. } => {
                    let segno = f.file.segno(segment_size).expect("segment");
                    idx.segments
                        .entry(timeline)
                        .or_default()
                        .insert(segno, f.archived_at);
                }
                WalFile::Partial { timeline, .. } => {
                    let segno = f.file.segno(segment_size).expect("partial");
                    idx.partials.entry(timeline).or_default().insert(segno);
                }
                WalFile::History { timeline } => {
                    idx.histories.insert(timeline);
                }
                WalFile::Backup { .. } => {}
            }
        }
        idx
    }

    fn timelines(&self) -> BTreeSet<u32> {
        let mut t: BTreeSet<u32> = self.segments.keys().copied().collect();
        t.extend(self.partials.keys().copied());
        t.extend(self.histories.iter().copied());
        t
    }

    fn first_segno(&self, tli: u32) -> Option<u64> {
        let full = self
            .segments
            .get(&tli)
            .and_then(|m| m.keys().next().copied());
        let partial = self
            .partials
            .get(&tli)
            .and_then(|s| s.iter().next().copied());
        match (full, partial) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn last_segno(&self, tli: u32) -> Option<u64> {
        let full = self
            .segments
            .get(&tli)
            .and_then(|m| m.keys().last().copied());
        let partial = self
            .partials
            .get(&tli)
            .and_then(|s| s.iter().last().copied());
        match (full, partial) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The inferred parent of `tli` (see the module comment).
    pub fn parent(&self, tli: u32) -> Option<u32> {
        if tli <= 1 {
            return None;
        }
        let start = self.first_segno(tli)?;
        (1..tli).rev().find(|&p| {
            // A switch exactly at a segment boundary leaves no copy of the
            // switch segment: the child then starts right after the parent's last.
            matches!((self.first_segno(p), self.last_segno(p)), (Some(a), Some(b)) if a <= start && start <= b + 1)
        })
    }

    pub fn timeline_info(&self) -> Vec<TimelineInfo> {
        self.timelines()
            .into_iter()
            .map(|t| {
                let segs = self.segments.get(&t);
                TimelineInfo {
                    timeline: t,
                    parent: self.parent(t),
                    first_segment: segs
                        .and_then(|m| m.keys().next())
                        .map(|&s| segment_name(t, s, self.segment_size)),
                    last_segment: segs
                        .and_then(|m| m.keys().last())
                        .map(|&s| segment_name(t, s, self.segment_size)),
                    segments: segs.map_or(0, |m| m.len()),
                    has_history_file: self.histories.contains(&t),
                    has_partial: self.partials.contains_key(&t),
                }
            })
            .collect()
    }

    /// Holes inside each timeline's archived range.
    pub fn gaps(&self) -> Vec<Gap> {
        let mut out = Vec::new();
        for (&tli, segs) in &self.segments {
            let mut prev: Option<u64> = None;
            for &s in segs.keys() {
                if let Some(p) = prev {
                    if s > p + 1 {
                        out.push(Gap {
                            timeline: tli,
                            first_missing: segment_name(tli, p + 1, self.segment_size),
                            last_missing: segment_name(tli, s - 1, self.segment_size),
                            count: s - p - 1,
                        });
                    }
                }
                prev = Some(s);
            }
        }
        out
    }

    /// The newest timeline descending from `tli`, and the path to it.
    fn newest_descendant_path(&self, tli: u32) -> Vec<u32> {
        let mut best = vec![tli];
        for t in self.timelines().into_iter().filter(|&t| t > tli) {
            let mut path = vec![t];
            let mut cur = t;
            while let Some(p) = self.parent(cur) {
                path.push(p);
                if p == tli {
                    break;
                }
                cur = p;
            }
            if path.last() == Some(&tli) {
                path.reverse();
                if path.last() > best.last() {
                    best = path;
                }
            }
        }
        best
    }

    /// How far replay can go from `start` on `tli`, following the newest
    /// timeline that descends from it, as recovery with
    /// `recovery_target_timeline = 'latest'` does.
    pub fn reach(&self, tli: u32, start: Lsn) -> Reach {
        let path = self.newest_descendant_path(tli);
        // (timeline, first segment it is used for), oldest first.
        let begins: Vec<(u32, u64)> = path
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                (
                    t,
                    if i == 0 {
                        0
                    } else {
                        self.first_segno(t).unwrap_or(0)
                    },
                )
            })
            .collect();
        let timeline_for = |segno: u64| {
            begins
                .iter()
                .rev()
                .find(|(_, b)| *b <= segno)
                .map(|(t, _)| *t)
                .unwrap_or(tli)
        };
        // The highest segment on the path: each timeline counts only
        // up to where its child takes over.
        let max_segno = begins
            .iter()
            .enumerate()
            .filter_map(|(i, &(t, begin))| {
                let until = begins.get(i + 1).map_or(u64::MAX, |&(_, b)| b);
                self.segments
                    .get(&t)?
                    .range(begin..until)
                    .next_back()
                    .map(|(&s, _)| s)
            })
            .max();
        let mut segno = start.segment(self.segment_size);
        let mut last: Option<(u32, u64, Option<DateTime<Utc>>)> = None;
        let mut gap_at = None;
        loop {
            let t = timeline_for(segno);
            match self.segments.get(&t).and_then(|m| m.get(&segno)) {
                Some(at) => last = Some((t, segno, *at)),
                None => {
                    if max_segno.is_some_and(|m| m > segno) {
                        gap_at = Some(segment_name(t, segno, self.segment_size));
                    }
                    break;
                }
            }
            segno += 1;
        }
        let (end_tli, end_lsn, last_segment, last_archived_at) = match last {
            Some((t, s, at)) => (
                t,
                Lsn((s + 1) * self.segment_size),
                Some(segment_name(t, s, self.segment_size)),
                at,
            ),
            None => (tli, start, None, None),
        };
        Reach {
            timeline: end_tli,
            end_lsn,
            last_segment,
            last_archived_at,
            gap_at,
            path,
        }
    }

    /// The name of the segment holding `lsn` on the timeline replay uses
    /// there, starting from `tli`.
    pub fn segment_for(&self, tli: u32, lsn: Lsn) -> String {
        segment_name(tli, lsn.segment(self.segment_size), self.segment_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Digest;
    use crate::policy::Algorithm;

    const SEG: u64 = crate::kinds::postgres::wal::DEFAULT_SEGMENT_SIZE;

    fn at(min: i64) -> Option<DateTime<Utc>> {
        Some(DateTime::from_timestamp(1_700_000_000 + min * 60, 0).unwrap())
    }

    fn file(name: &str, minute: i64) -> ArchivedFile {
        ArchivedFile {
            name: name.into(),
            file: WalFile::parse(name).unwrap(),
            key: format!("wal/p/s/{name}/x"),
            plaintext: Digest {
                size: 0,
                sha256: String::new(),
            },
            stored: Digest {
                size: 0,
                sha256: String::new(),
            },
            compression: Algorithm::Zstd,
            archived_at: at(minute),
        }
    }

    fn segs(tli: u32, range: std::ops::RangeInclusive<u64>) -> Vec<ArchivedFile> {
        range
            .map(|s| file(&segment_name(tli, s, SEG), s as i64))
            .collect()
    }

    #[test]
    fn an_unbroken_archive_reaches_its_last_segment() {
        let idx = WalIndex::new(&segs(1, 2..=9), SEG);
        let r = idx.reach(1, Lsn(2 * SEG + 0x28));
        assert_eq!(r.last_segment.as_deref(), Some("000000010000000000000009"));
        assert_eq!(r.end_lsn, Lsn(10 * SEG));
        assert_eq!(r.last_archived_at, at(9));
        assert_eq!(r.gap_at, None);
        assert!(idx.gaps().is_empty());
    }

    #[test]
    fn a_missing_segment_stops_replay_and_is_named() {
        let mut files = segs(1, 2..=4);
        files.extend(segs(1, 6..=8));
        let idx = WalIndex::new(&files, SEG);
        let r = idx.reach(1, Lsn(2 * SEG));
        assert_eq!(r.last_segment.as_deref(), Some("000000010000000000000004"));
        assert_eq!(r.gap_at.as_deref(), Some("000000010000000000000005"));
        let gaps = idx.gaps();
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].first_missing, "000000010000000000000005");
        assert_eq!(gaps[0].count, 1);
    }

    #[test]
    fn replay_follows_the_newest_timeline_from_its_switch_segment() {
        // Timeline 1 ran to segment 9; a PITR promoted at segment 5 and
        // archived timeline 2 from there (with 1's copy as .partial).
        let mut files = segs(1, 2..=9);
        files.push(file("000000010000000000000005.partial", 20));
        files.push(file("00000002.history", 20));
        files.extend(segs(2, 5..=7));
        let idx = WalIndex::new(&files, SEG);
        assert_eq!(idx.parent(2), Some(1));
        let r = idx.reach(1, Lsn(2 * SEG));
        assert_eq!(r.path, vec![1, 2]);
        assert_eq!(r.timeline, 2);
        assert_eq!(r.last_segment.as_deref(), Some("000000020000000000000007"));
        assert_eq!(r.gap_at, None);
        let info = idx.timeline_info();
        assert_eq!(info.len(), 2);
        assert!(info[1].has_history_file);
        assert!(info[0].has_partial);
    }

    #[test]
    fn a_switch_at_a_segment_boundary_is_followed() {
        let mut files = segs(1, 2..=3);
        files.push(file("00000002.history", 20));
        files.extend(segs(2, 4..=5));
        let idx = WalIndex::new(&files, SEG);
        assert_eq!(idx.parent(2), Some(1));
        let r = idx.reach(1, Lsn(2 * SEG));
        assert_eq!(r.path, vec![1, 2]);
        assert_eq!(r.last_segment.as_deref(), Some("000000020000000000000005"));
        assert_eq!(r.gap_at, None);
    }

    #[test]
    fn a_hole_on_the_new_timeline_is_a_gap() {
        let mut files = segs(1, 2..=5);
        files.extend(segs(2, 5..=5));
        files.extend(segs(2, 7..=8));
        let idx = WalIndex::new(&files, SEG);
        let r = idx.reach(1, Lsn(2 * SEG));
        assert_eq!(r.gap_at.as_deref(), Some("000000020000000000000006"));
    }
}
