//! The one rule that decides a point-in-time target against what the WAL
//! archive can replay: exact, the last whole record, or a refusal naming
//! the missing segment and a target that restores. Pure: no I/O.

use super::{when, GapError, PitrError, Target};
use crate::kinds::postgres::wal::end::WalEnd;
use crate::kinds::postgres::wal::reach::Reach;

/// What recovery is told, and what the user is told about it.
#[derive(Debug, PartialEq)]
pub(super) struct Decision {
    pub(super) recovery: Target,
    pub(super) notice: Option<String>,
    pub(super) warnings: Vec<String>,
}

/// The one rule for a target against the archive's recoverable end
/// (docs/RUNBOOK.md, "What --until means"):
/// - before the newest archived transaction end (time), or at or before the
///   last whole record (LSN): restored exactly;
/// - exactly the newest archived transaction's time, with no hole: the
///   last whole record (PostgreSQL would wait for a later commit that is
///   not archived and fail), which is exact;
/// - later than that, behind a hole or past the end: refused, naming the
///   missing segment or the newest archived transaction and a target that
///   restores (`--until latest`, or the last whole record's LSN, which
///   `--backup B --until latest-reachable` also uses).
///
/// `end` is None in a dry run without an identity (or without pg_waldump
/// for targets that do not need it): the names of the archived segments
/// are all it can judge by.
// Stays long: one match is the whole rule of the runbook, read against it in one place.
pub(super) fn decide(
    target: &Target,
    reach: &Reach,
    end: Option<&WalEnd>,
    backup: &str,
) -> Result<Decision, PitrError> {
    let exact = |t: &Target| Decision {
        recovery: t.clone(),
        notice: None,
        warnings: Vec::new(),
    };
    let last = reach.last_segment.clone().unwrap_or_default();
    let last_at = when(reach.last_archived_at);
    let newest = end.map_or_else(
        || "the newest archived transaction is unknown without --identity".to_string(),
        WalEnd::describe_newest,
    );
    let gap_err = |missing: &String| {
        PitrError::Gap(Box::new(GapError {
            target: target.to_string(),
            missing: missing.clone(),
            backup: backup.to_string(),
            reach_lsn: reach.end_lsn,
            latest_target: end.map(|e| e.last_record),
            reachable: end.map_or_else(String::new, |e| format!(", where {}", e.describe_newest())),
            advice: match end {
                Some(e) => format!(
                    "--backup {backup} --until latest-reachable (the same as --until-lsn {})",
                    e.last_record
                ),
                None => format!(
                    "--backup {backup} --until latest-reachable (pass --identity to see where it stops)"
                ),
            },
            last: last.clone(),
            last_at: last_at.clone(),
        }))
    };
    let after_end = |advice: String| PitrError::AfterLastWal {
        target: target.to_string(),
        newest: newest.clone(),
        last: last.clone(),
        last_at: last_at.clone(),
        advice,
    };
    let everything = |e: &WalEnd| {
        format!(
            "{}; recovery stops after the last whole archived record (LSN {})",
            e.describe_newest(),
            e.last_record
        )
    };
    let Some(e) = end else {
        // Segment names only.
        let unreachable = match target {
            Target::Time(t) => reach.last_archived_at.is_some_and(|at| at < *t),
            Target::Lsn(l) => reach.end_lsn <= *l,
            Target::Latest | Target::Xid(_) | Target::Name(_) => reach.gap_at.is_some(),
            Target::LatestReachable => false,
        };
        return match (&reach.gap_at, unreachable) {
            (Some(missing), true) => Err(gap_err(missing)),
            (None, true) => Err(after_end(
                "--until latest restores everything archived".into(),
            )),
            (_, false) => Ok(exact(target)),
        };
    };
    let mut d = match target {
        Target::Latest => match &reach.gap_at {
            Some(missing) => return Err(gap_err(missing)),
            None => exact(target),
        },
        Target::LatestReachable => Decision {
            recovery: Target::Lsn(e.last_record),
            notice: Some(match &reach.gap_at {
                Some(missing) => format!(
                    "WAL segment {missing} is missing from the archive: restoring up to the hole only; {}. Changes after it are not restored",
                    everything(e)
                ),
                None => format!("restoring everything archived; {}", everything(e)),
            }),
            warnings: Vec::new(),
        },
        Target::Time(t) => match (&e.newest_xact, &reach.gap_at) {
            // A transaction end stamped after the target is archived and
            // replayable: recovery stops right before it.
            (Some(x), _) if *t < x.time => exact(target),
            (_, Some(missing)) => return Err(gap_err(missing)),
            // Exactly the newest archived transaction's time: every
            // transaction stamped at or before it is archived.
            (Some(x), None) if *t == x.time => Decision {
                recovery: Target::Lsn(e.last_record),
                notice: Some(format!(
                    "your target is the time of {}: every archived transaction is restored (recovery stops after the last whole archived record, LSN {})",
                    e.describe_newest(),
                    e.last_record
                )),
                warnings: Vec::new(),
            },
            // Later than anything archived: what the server committed
            // between the archive's end and the target is not in it, and
            // nothing in the archive says it committed nothing then (an
            // object's storage time is not such proof: an archiver running
            // behind stores a segment long after the server left it).
            (_, None) => {
                return Err(after_end(format!(
                    "--until latest restores everything archived (to LSN {}); that is the state at your target only if nothing was committed after the newest archived transaction",
                    e.last_record
                )))
            }
        },
        Target::Lsn(l) => {
            if *l <= e.last_record {
                exact(target)
            } else if let Some(missing) = &reach.gap_at {
                return Err(gap_err(missing));
            } else {
                return Err(after_end(format!(
                    "--until-lsn {} (or --until latest) restores everything archived",
                    e.last_record
                )));
            }
        }
        Target::Xid(_) | Target::Name(_) => match &reach.gap_at {
            Some(missing) => return Err(gap_err(missing)),
            None => exact(target),
        },
    };
    if let (Some(missing), Target::Time(_) | Target::Lsn(_)) = (&reach.gap_at, target) {
        d.warnings.push(format!(
            "segment {missing} is missing from the archive; recovery cannot go past it (the target is before it)"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::postgres::wal::end::XactEnd;
    use crate::kinds::postgres::wal::Lsn;
    use chrono::{DateTime, Utc};

    fn t(s: &str) -> DateTime<Utc> {
        format!("2026-12-07T{s}Z").parse().unwrap()
    }

    /// An archive whose last segment was stored at 10:40:14 and whose
    /// newest commit is 10:40:09.912345, with or without a hole after it.
    fn archive(gap: bool) -> (Reach, WalEnd) {
        let reach = Reach {
            timeline: 1,
            end_lsn: Lsn(0x0A00_0000),
            last_segment: Some("000000010000000000000009".into()),
            last_archived_at: Some(t("10:40:14")),
            gap_at: gap.then(|| "00000001000000000000000A".into()),
            path: vec![1],
        };
        let end = WalEnd {
            timeline: 1,
            segment: "000000010000000000000009".into(),
            last_record: Lsn(0x09FF_FFE0),
            newest_xact: Some(XactEnd {
                time: t("10:40:09.912345"),
                lsn: Lsn(0x09A3_F2B8),
                aborted: false,
            }),
            searched_to_start: false,
        };
        (reach, end)
    }

    #[test]
    fn targets_are_exact_restored_to_the_end_with_a_notice_or_refused() {
        let (reach, end) = archive(false);
        let d = |target: Target| decide(&target, &reach, Some(&end), "b1");
        // Before the newest commit: exact.
        let before = Target::Time(t("10:40:09.912344"));
        assert_eq!(d(before.clone()).unwrap().recovery, before);
        // Exactly its time: the last whole record, said plainly.
        let x = d(Target::Time(t("10:40:09.912345"))).unwrap();
        assert_eq!(x.recovery, Target::Lsn(Lsn(0x09FF_FFE0)));
        let n = x.notice.unwrap();
        assert!(n.contains("2026-12-07 10:40:09.912345 UTC"), "{n}");
        // Later, even before the last segment was stored (an archiver
        // running behind stores it long after the server left it): refused,
        // naming the newest commit, advising --until latest.
        for at in ["10:40:09.912346", "10:40:14", "10:40:14.000001"] {
            let e = d(Target::Time(t(at))).unwrap_err().to_string();
            assert!(
                e.contains("10:40:09.912345") && e.contains("--until latest restores"),
                "{at}: {e}"
            );
        }
        // LSN targets: up to the last whole record.
        assert!(d(Target::Lsn(Lsn(0x09FF_FFE0))).is_ok());
        let e = d(Target::Lsn(Lsn(0x09FF_FFE1))).unwrap_err().to_string();
        assert!(e.contains("--until-lsn 0/9FFFFE0"), "{e}");
        assert_eq!(d(Target::Latest).unwrap().recovery, Target::Latest);
        assert_eq!(
            d(Target::LatestReachable).unwrap().recovery,
            Target::Lsn(Lsn(0x09FF_FFE0))
        );
    }

    #[test]
    fn a_hole_refuses_what_lies_behind_it_and_names_a_target_that_works() {
        let (reach, end) = archive(true);
        let d = |target: Target| decide(&target, &reach, Some(&end), "b1");
        assert!(d(Target::Time(t("10:40:09"))).is_ok());
        for target in [
            Target::Time(t("10:40:09.912345")),
            Target::Time(t("10:40:12")),
            Target::Latest,
            Target::Lsn(Lsn(0x0A00_0000)),
            Target::Xid(7),
        ] {
            let e = d(target.clone()).unwrap_err().to_string();
            assert!(
                e.contains("00000001000000000000000A is missing")
                    && e.contains("--backup b1 --until latest-reachable")
                    && e.contains("--until-lsn 0/9FFFFE0"),
                "{target}: {e}"
            );
        }
        let x = d(Target::LatestReachable).unwrap();
        assert_eq!(x.recovery, Target::Lsn(Lsn(0x09FF_FFE0)));
        assert!(x.notice.unwrap().contains("00000001000000000000000A"));
    }

    #[test]
    fn an_archive_without_a_transaction_after_the_base_refuses_time_targets() {
        let (reach, mut end) = archive(false);
        end.newest_xact = None;
        end.searched_to_start = true;
        let e = decide(&Target::Time(t("10:40:00")), &reach, Some(&end), "b1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no transaction ended after the base backup")
                && e.contains("--until latest"),
            "{e}"
        );
        assert!(decide(&Target::Latest, &reach, Some(&end), "b1").is_ok());
    }
}
