//! The scheduler of one policy: fires its job at each slot of the
//! schedule, never twice at once, and once at start for a slot missed
//! during downtime when it is recent enough.
//!
//! Time comes from a [`Clock`], so the loop runs under tokio's paused time
//! in tests ([`TokioClock`]) exactly as it does on the wall clock. Sleeps
//! are at most a minute long and the clock is read again after each, so a
//! wall clock that jumps (NTP, a suspended VM) is followed.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

pub use crate::clock::{Clock, SystemClock, TokioClock};

/// Why a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Its slot came.
    Schedule,
    /// Its slot passed while the daemon was down, recently enough.
    CatchUp,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch-up",
        }
    }
}

/// The most recent slot at or before `now`, if it is within `window` and
/// no run started at or after it (`last_start`): the one missed slot to
/// run at start. Several missed slots still give one run.
pub fn missed_slot(
    next: &dyn Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
    last_start: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    window: Duration,
) -> Option<DateTime<Utc>> {
    if window.is_zero() {
        return None;
    }
    let from = now - chrono::Duration::from_std(window).ok()?;
    let mut slot = next(from)?;
    if slot > now {
        return None;
    }
    // The latest slot not after now (bounded: a 1-minute schedule over a
    // long window is still a finite walk).
    for _ in 0..1_000_000 {
        match next(slot) {
            Some(n) if n <= now => slot = n,
            _ => break,
        }
    }
    match last_start {
        Some(t) if t >= slot => None,
        _ => Some(slot),
    }
}

/// Runs `job` at each slot until `stop` turns true (or its sender goes),
/// then returns once the job in progress has finished.
///
/// A job still running when its next slot comes is not started again:
/// the slots it outlasted are skipped (and logged), never queued.
/// `on_next` hears of each next slot (for the metrics).
pub async fn run_schedule<N, J, F>(
    clock: &dyn Clock,
    next: N,
    last_start: Option<DateTime<Utc>>,
    window: Duration,
    mut stop: watch::Receiver<bool>,
    mut on_next: impl FnMut(Option<DateTime<Utc>>),
    mut job: J,
) where
    N: Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
    J: FnMut(Trigger, DateTime<Utc>) -> F,
    F: Future<Output = ()>,
{
    let start = clock.now();
    let mut cursor = start;
    if let Some(slot) = missed_slot(&next, last_start, start, window) {
        if *stop.borrow() {
            return;
        }
        tracing::info!(slot = %slot, "a scheduled run was missed while lifeboat was not running; running it once now");
        job(Trigger::CatchUp, slot).await;
        cursor = skip_outlasted(&next, slot, clock.now());
    }
    loop {
        if *stop.borrow() {
            return;
        }
        let slot = next(cursor);
        on_next(slot);
        let Some(slot) = slot else {
            // A schedule that never fires again (a date in the past).
            let _ = stop.wait_for(|s| *s).await;
            return;
        };
        loop {
            let now = clock.now();
            if now >= slot {
                break;
            }
            let wait = (slot - now)
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
            }
        }
        job(Trigger::Schedule, slot).await;
        cursor = skip_outlasted(&next, slot, clock.now());
    }
}

/// After a run for `slot` that ended at `end`: the cursor to look for the
/// next slot from, logging the slots the run outlasted.
fn skip_outlasted(
    next: &dyn Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
    slot: DateTime<Utc>,
    end: DateTime<Utc>,
) -> DateTime<Utc> {
    let mut skipped = 0u32;
    let mut s = slot;
    while let Some(n) = next(s) {
        if n > end || skipped >= 10_000 {
            break;
        }
        skipped += 1;
        s = n;
    }
    if skipped > 0 {
        tracing::warn!(skipped, slot = %slot, finished = %end, "the run outlasted its next scheduled slot(s); they were skipped, not queued (the schedule may be too tight for the backup's duration)");
    }
    end.max(slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use std::sync::{Arc, Mutex};

    fn policy(schedule: &str, tz: &str) -> Policy {
        let text = format!(
            "name: t\nrepository: {{ url: /tmp/x }}\nencryption: {{ recipients: [age1qakkf9f6839syyhah3hx2hd24kxvafj6lvxn84y4gjafww8vcvzqy79w8q] }}\nschedule: \"{schedule}\"\ntimezone: {tz}\nsources:\n  - name: db\n    postgres: {{}}\n"
        );
        Policy::parse(&text, std::path::Path::new("t.yaml")).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    type Log = Arc<Mutex<Vec<(Trigger, DateTime<Utc>, DateTime<Utc>)>>>;

    /// Runs the scheduler under paused time from `start` until `until`;
    /// each job takes `takes`. Returns (trigger, slot, fired at).
    async fn simulate(
        p: &Policy,
        start: &str,
        until: &str,
        last_start: Option<DateTime<Utc>>,
        window: Duration,
        takes: Duration,
    ) -> Vec<(Trigger, DateTime<Utc>, DateTime<Utc>)> {
        let clock = Arc::new(TokioClock::starting_at(at(start)));
        let log: Log = Arc::default();
        let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = watch::channel(false);
        let stopper = {
            let clock = Arc::clone(&clock);
            let until = at(until);
            tokio::spawn(async move {
                let wait = (until - clock.now()).to_std().unwrap();
                tokio::time::sleep(wait).await;
                tx.send(true).unwrap();
            })
        };
        let p2 = p.clone();
        run_schedule(
            clock.as_ref(),
            move |t| p2.next_run(t),
            last_start,
            window,
            rx,
            |_| {},
            |trigger, slot| {
                let log = Arc::clone(&log);
                let clock = Arc::clone(&clock);
                let running = Arc::clone(&running);
                async move {
                    assert!(
                        !running.swap(true, std::sync::atomic::Ordering::SeqCst),
                        "two runs at once"
                    );
                    log.lock().unwrap().push((trigger, slot, clock.now()));
                    tokio::time::sleep(takes).await;
                    running.store(false, std::sync::atomic::Ordering::SeqCst);
                }
            },
        )
        .await;
        stopper.await.unwrap();
        let out = log.lock().unwrap().clone();
        out
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_each_slot_across_a_dst_change() {
        // Berlin springs forward on 2026-03-29 at 02:00 local (01:00 UTC):
        // 02:30 does not exist that day, so it is skipped; the hourly slots
        // around it keep their wall-clock minutes.
        let p = policy("30 * * * *", "Europe/Berlin");
        let fired = simulate(
            &p,
            "2026-03-28T23:45:00Z",
            "2026-03-29T03:00:00Z",
            None,
            Duration::ZERO,
            Duration::from_secs(60),
        )
        .await;
        let slots: Vec<String> = fired.iter().map(|f| f.1.to_rfc3339()).collect();
        assert_eq!(
            slots,
            [
                "2026-03-29T00:30:00+00:00", // 01:30 CET
                "2026-03-29T01:30:00+00:00", // 03:30 CEST (02:30 does not exist)
                "2026-03-29T02:30:00+00:00", // 04:30 CEST
            ]
        );
        for (trigger, slot, fired_at) in &fired {
            assert_eq!(*trigger, Trigger::Schedule);
            assert!(
                *fired_at >= *slot && *fired_at - *slot < chrono::Duration::seconds(1),
                "fired at {fired_at} for {slot}"
            );
        }
        // Autumn: 02:30 local happens twice on 2026-10-25; the daily run fires once.
        let p = policy("30 2 * * *", "Europe/Berlin");
        let fired = simulate(
            &p,
            "2026-10-24T12:00:00Z",
            "2026-10-26T12:00:00Z",
            None,
            Duration::ZERO,
            Duration::from_secs(60),
        )
        .await;
        let slots: Vec<String> = fired.iter().map(|f| f.1.to_rfc3339()).collect();
        assert_eq!(
            slots,
            ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_outlasts_its_next_slot_is_not_started_twice() {
        let p = policy("0 * * * *", "UTC");
        // Each run takes 90 minutes: 01:00 runs, 02:00 is skipped, 03:00 runs.
        let fired = simulate(
            &p,
            "2026-06-01T00:30:00Z",
            "2026-06-01T05:30:00Z",
            None,
            Duration::ZERO,
            Duration::from_secs(90 * 60),
        )
        .await;
        let slots: Vec<String> = fired
            .iter()
            .map(|f| f.1.format("%H:%M").to_string())
            .collect();
        assert_eq!(slots, ["01:00", "03:00", "05:00"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_missed_slot_runs_once_at_start_within_the_window() {
        let p = policy("15 2 * * *", "UTC");
        let last = Some(at("2026-06-01T02:15:03Z"));
        // Down from before 02:15 on the 2nd until 02:45: within a 1 h window.
        let fired = simulate(
            &p,
            "2026-06-02T02:45:00Z",
            "2026-06-02T03:00:00Z",
            last,
            Duration::from_secs(3600),
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].0, Trigger::CatchUp);
        assert_eq!(fired[0].1, at("2026-06-02T02:15:00Z"));
        assert_eq!(fired[0].2, at("2026-06-02T02:45:00Z"));
        // Outside the window: nothing until the next slot.
        let fired = simulate(
            &p,
            "2026-06-02T02:45:00Z",
            "2026-06-02T03:00:00Z",
            last,
            Duration::from_secs(600),
            Duration::from_secs(60),
        )
        .await;
        assert!(fired.is_empty(), "{fired:?}");
        // The slot already ran (the catalog says so): no catch-up.
        let fired = simulate(
            &p,
            "2026-06-02T02:45:00Z",
            "2026-06-02T03:00:00Z",
            Some(at("2026-06-02T02:15:01Z")),
            Duration::from_secs(3600),
            Duration::from_secs(60),
        )
        .await;
        assert!(fired.is_empty(), "{fired:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_downtime_gives_one_run_not_a_burst() {
        let p = policy("0 * * * *", "UTC");
        // Down for five hourly slots, window six hours: one catch-up run,
        // then the regular slots.
        let fired = simulate(
            &p,
            "2026-06-01T06:10:00Z",
            "2026-06-01T08:30:00Z",
            Some(at("2026-06-01T01:00:00Z")),
            Duration::from_secs(6 * 3600),
            Duration::from_secs(60),
        )
        .await;
        let got: Vec<(Trigger, String)> = fired
            .iter()
            .map(|f| (f.0, f.1.format("%H:%M").to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (Trigger::CatchUp, "06:00".to_string()),
                (Trigger::Schedule, "07:00".to_string()),
                (Trigger::Schedule, "08:00".to_string()),
            ]
        );
    }
}
