//! Retention planning: which backups of one source (and kind) to keep, and
//! why. Pure: the caller passes the backups and *now*; nothing here reads or
//! deletes anything.
//!
//! The rules are the usual ones (restic, borg): `keep_last` N newest;
//! `keep_within` everything younger than a duration; `keep_hourly`,
//! `keep_daily`, `keep_weekly` (ISO weeks), `keep_monthly`, `keep_yearly`
//! keep the newest backup of each of the N most recent periods that have
//! one. A backup is kept if any rule keeps it. Periods are in UTC.
//!
//! Two rules protect against mistakes: the newest backup is always kept
//! (whatever the rules say), and a backup dated after *now* (a skewed
//! clock) is kept and takes no period's place.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

use crate::policy::Retention;

/// A backup, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// When it was taken (its consistency point; the manifest's start).
    pub at: DateTime<Utc>,
}

/// What happens to one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub at: DateTime<Utc>,
    pub keep: bool,
    /// Every rule that keeps it (empty when it goes).
    pub reasons: Vec<String>,
}

/// A period rule: how many periods, its name, and the period of a time.
type PeriodRule<'a> = (Option<u32>, &'a str, fn(&DateTime<Utc>) -> String);

fn hour(t: &DateTime<Utc>) -> String {
    format!("{} {:02}h", t.date_naive(), t.hour())
}
fn day(t: &DateTime<Utc>) -> String {
    t.date_naive().to_string()
}
fn week(t: &DateTime<Utc>) -> String {
    let w = t.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}
fn month(t: &DateTime<Utc>) -> String {
    format!("{}-{:02}", t.year(), t.month())
}
fn year(t: &DateTime<Utc>) -> String {
    t.year().to_string()
}

/// Decides for every backup; the result is ordered newest first.
pub fn plan(backups: &[Candidate], rules: &Retention, now: DateTime<Utc>) -> Vec<Decision> {
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    sorted.sort_by(|a, b| (b.at, &b.id).cmp(&(a.at, &a.id)));
    let mut out: Vec<Decision> = sorted
        .iter()
        .map(|c| Decision {
            id: c.id.clone(),
            at: c.at,
            keep: false,
            reasons: Vec::new(),
        })
        .collect();

    for d in out.iter_mut().filter(|d| d.at > now) {
        d.reasons
            .push("dated after now (clock skew?): kept until now passes it".into());
    }
    // The newest backup that is not from the future.
    if let Some(d) = out.iter_mut().find(|d| d.at <= now) {
        d.reasons.push("newest backup: always kept".into());
    }
    if let Some(n) = rules.keep_last.filter(|n| *n > 0) {
        for d in out.iter_mut().filter(|d| d.at <= now).take(n as usize) {
            d.reasons.push(format!("keep_last {n}"));
        }
    }
    if let Some(within) = rules.keep_within {
        let d_within = chrono::Duration::from_std(within.0).unwrap_or(chrono::Duration::MAX);
        let since = now
            .checked_sub_signed(d_within)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let label = humantime::format_duration(within.0).to_string();
        for d in out.iter_mut().filter(|d| d.at <= now && d.at >= since) {
            d.reasons.push(format!("keep_within {label}"));
        }
    }
    let periods: [PeriodRule; 5] = [
        (rules.keep_hourly, "hourly", hour),
        (rules.keep_daily, "daily", day),
        (rules.keep_weekly, "weekly", week),
        (rules.keep_monthly, "monthly", month),
        (rules.keep_yearly, "yearly", year),
    ];
    for (count, name, period) in periods {
        let Some(n) = count.filter(|n| *n > 0) else {
            continue;
        };
        let mut used = 0;
        let mut last: Option<String> = None;
        // Newest first: the first backup met in a period is its newest.
        for d in out.iter_mut().filter(|d| d.at <= now) {
            let p = period(&d.at);
            if last.as_ref() == Some(&p) {
                continue;
            }
            if used == n {
                break;
            }
            d.reasons.push(format!("{name} {p}"));
            used += 1;
            last = Some(p);
        }
    }
    for d in &mut out {
        d.keep = !d.reasons.is_empty();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::HumanDuration;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn c(s: &str) -> Candidate {
        Candidate {
            id: s.to_string(),
            at: at(s),
        }
    }

    fn kept(decisions: &[Decision]) -> Vec<String> {
        decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.clone())
            .collect()
    }

    #[test]
    fn a_year_of_daily_backups() {
        // 2025-11-24 .. 2026-11-23, one at 02:15 each day; 2026-11-23 is a Monday.
        let first = Utc.with_ymd_and_hms(2025, 11, 24, 2, 15, 0).unwrap();
        let backups: Vec<Candidate> = (0..365)
            .map(|i| {
                let t = first + chrono::Duration::days(i);
                Candidate {
                    id: t.date_naive().to_string(),
                    at: t,
                }
            })
            .collect();
        let rules = Retention {
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(12),
            ..Default::default()
        };
        let plan = plan(&backups, &rules, at("2026-11-23T12:00:00Z"));
        assert_eq!(plan.len(), 365);
        let mut expected: Vec<&str> = vec![
            // daily: the last 7 days
            "2026-11-23",
            "2026-11-22",
            "2026-11-21",
            "2026-11-20",
            "2026-11-19",
            "2026-11-18",
            "2026-11-17",
            // weekly: the newest of each of the last 4 ISO weeks adds these
            "2026-11-15",
            "2026-11-08",
            // monthly: the newest of each of the last 12 months adds these
            "2026-10-31",
            "2026-09-30",
            "2026-08-31",
            "2026-07-31",
            "2026-06-30",
            "2026-05-31",
            "2026-04-30",
            "2026-03-31",
            "2026-02-28",
            "2026-01-31",
            "2025-12-31",
        ];
        expected.sort();
        expected.reverse();
        assert_eq!(kept(&plan), expected);
        let nov22 = plan.iter().find(|d| d.id == "2026-11-22").unwrap();
        assert_eq!(nov22.reasons, ["daily 2026-11-22", "weekly 2026-W47"]);
        let gone = plan.iter().find(|d| d.id == "2026-11-16").unwrap();
        assert!(!gone.keep && gone.reasons.is_empty());
    }

    #[test]
    fn sparse_histories_keep_the_newest_of_each_period_that_has_one() {
        let backups = [
            c("2026-11-01T10:00:00Z"),
            c("2026-11-05T10:00:00Z"),
            c("2026-11-09T10:00:00Z"),
            c("2026-11-10T08:00:00Z"),
            c("2026-11-10T20:00:00Z"),
        ];
        let rules = Retention {
            keep_daily: Some(3),
            ..Default::default()
        };
        let plan = plan(&backups, &rules, at("2026-11-23T00:00:00Z"));
        assert_eq!(
            kept(&plan),
            [
                "2026-11-10T20:00:00Z",
                "2026-11-09T10:00:00Z",
                "2026-11-05T10:00:00Z"
            ]
        );
    }

    #[test]
    fn hourly_last_and_within() {
        let backups: Vec<Candidate> = (0..10)
            .map(|i| c(&format!("2026-11-23T{:02}:{:02}:00Z", i / 2, (i % 2) * 30)))
            .collect();
        let now = at("2026-11-23T05:00:00Z");
        let hourly = plan(
            &backups,
            &Retention {
                keep_hourly: Some(2),
                ..Default::default()
            },
            now,
        );
        assert_eq!(
            kept(&hourly),
            ["2026-11-23T04:30:00Z", "2026-11-23T03:30:00Z"]
        );
        let last = plan(
            &backups,
            &Retention {
                keep_last: Some(3),
                ..Default::default()
            },
            now,
        );
        assert_eq!(
            kept(&last),
            [
                "2026-11-23T04:30:00Z",
                "2026-11-23T04:00:00Z",
                "2026-11-23T03:30:00Z"
            ]
        );
        let within = plan(
            &backups,
            &Retention {
                keep_within: Some(HumanDuration(std::time::Duration::from_secs(90 * 60))),
                ..Default::default()
            },
            now,
        );
        assert_eq!(
            kept(&within),
            [
                "2026-11-23T04:30:00Z",
                "2026-11-23T04:00:00Z",
                "2026-11-23T03:30:00Z"
            ]
        );
    }

    #[test]
    fn the_newest_backup_is_always_kept() {
        let backups = [c("2026-11-01T00:00:00Z"), c("2026-10-01T00:00:00Z")];
        let rules = Retention {
            keep_within: Some(HumanDuration(std::time::Duration::from_secs(3600))),
            ..Default::default()
        };
        let plan = plan(&backups, &rules, at("2026-11-23T00:00:00Z"));
        assert_eq!(kept(&plan), ["2026-11-01T00:00:00Z"]);
        assert_eq!(plan[0].reasons, ["newest backup: always kept"]);
    }

    #[test]
    fn no_backups_plan_nothing() {
        let rules = Retention {
            keep_last: Some(3),
            ..Default::default()
        };
        assert!(plan(&[], &rules, at("2026-11-23T00:00:00Z")).is_empty());
    }

    #[test]
    fn backups_from_the_future_are_kept_and_take_no_period() {
        let backups = [
            c("2026-11-23T13:00:00Z"), // an hour after "now": a skewed clock
            c("2026-11-23T11:00:00Z"),
            c("2026-11-22T11:00:00Z"),
            c("2026-11-21T11:00:00Z"),
        ];
        let rules = Retention {
            keep_daily: Some(2),
            ..Default::default()
        };
        let plan = plan(&backups, &rules, at("2026-11-23T12:00:00Z"));
        assert_eq!(
            kept(&plan),
            [
                "2026-11-23T13:00:00Z",
                "2026-11-23T11:00:00Z",
                "2026-11-22T11:00:00Z"
            ]
        );
        assert!(plan[0].reasons[0].contains("clock skew"));
        assert_eq!(
            plan[1].reasons,
            ["newest backup: always kept", "daily 2026-11-23"]
        );
    }
}
