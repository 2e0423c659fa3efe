//! The daemon's metrics, rendered in the Prometheus text exposition
//! format (version 0.0.4) at `/metrics`.
//!
//! Everything is a gauge or a counter keyed by `policy` and `source` (and
//! a `kind`, `outcome` or `what` label where it says); values are set by
//! the scheduler, the archivers and the archive-lag probe. [`NAMES`] lists
//! every metric: the alert rules and the dashboard in `deploy/` use only
//! these (a test checks).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Every metric lifeboat exports, with its type and help text.
pub const METRICS: &[(&str, &str, &str)] = &[
    ("lifeboat_backup_last_success_timestamp_seconds", "gauge", "When the newest complete backup of the source started (Unix time); 0 if it has none."),
    ("lifeboat_backup_last_attempt_timestamp_seconds", "gauge", "When the daemon last attempted a backup of the source (Unix time)."),
    ("lifeboat_backup_last_attempt_success", "gauge", "1 if the last backup attempt succeeded, 0 if it failed."),
    ("lifeboat_backup_duration_seconds", "gauge", "Wall time of the last backup attempt."),
    ("lifeboat_backup_stored_bytes", "gauge", "Bytes stored (compressed, encrypted) by the newest complete backup."),
    ("lifeboat_backup_read_bytes", "gauge", "Bytes read from the source (plaintext) by the newest complete backup."),
    ("lifeboat_backup_runs_total", "counter", "Backup attempts by outcome (success, failure)."),
    ("lifeboat_archive_lag_seconds", "gauge", "How long WAL or binlog data written by the server has been waiting to be archived (0 when nothing waits)."),
    ("lifeboat_archive_lag_segments", "gauge", "WAL segments or binlog files the server has finished that are not archived whole."),
    ("lifeboat_archiver_up", "gauge", "1 while the daemon's archiver of the source is running, 0 while it is down and waiting to restart."),
    ("lifeboat_archiver_restarts_total", "counter", "Times the daemon restarted the source's archiver after it stopped with an error."),
    ("lifeboat_retention_deleted_backups_total", "counter", "Backups deleted by retention."),
    ("lifeboat_retention_deleted_objects_total", "counter", "Objects deleted by retention, by what they were (backup, wal, binlog, orphan, upload)."),
    ("lifeboat_retention_last_run_success", "gauge", "1 if the last retention run succeeded, 0 if it failed."),
    ("lifeboat_drill_last_timestamp_seconds", "gauge", "When the last restore drill of the source finished (Unix time)."),
    ("lifeboat_drill_last_success", "gauge", "1 if the last restore drill passed every check, 0 if not."),
    ("lifeboat_drill_rto_seconds", "gauge", "Recovery time measured by the last drill: start to a usable restored target."),
    ("lifeboat_drill_rpo_seconds", "gauge", "Data-loss window measured by the last drill: the end of its restore minus the newest restored point."),
    ("lifeboat_drill_checks_failed", "gauge", "Checks that failed in the last drill."),
    ("lifeboat_next_run_timestamp_seconds", "gauge", "When the policy's schedule fires next (Unix time)."),
    ("lifeboat_policy_load_errors", "gauge", "Policy files in the policies folder that cannot be loaded (the daemon runs the others)."),
    ("lifeboat_build_info", "gauge", "Always 1; the version label says which lifeboat runs."),
    ("lifeboat_daemon_start_timestamp_seconds", "gauge", "When the daemon started (Unix time)."),
];

/// The metric names, for checks of alert rules and dashboards.
pub fn names() -> impl Iterator<Item = &'static str> {
    METRICS.iter().map(|(n, _, _)| *n)
}

type Labels = Vec<(&'static str, String)>;

/// The registry: metric name → label set → value.
#[derive(Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<&'static str, BTreeMap<Labels, f64>>>,
}

fn ts(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn source_labels(policy: &str, source: &str) -> Labels {
    vec![
        ("policy", policy.to_string()),
        ("source", source.to_string()),
    ]
}

impl Metrics {
    pub fn new(started: DateTime<Utc>) -> Metrics {
        let m = Metrics::default();
        m.set(
            "lifeboat_build_info",
            vec![("version", env!("CARGO_PKG_VERSION").to_string())],
            1.0,
        );
        m.set(
            "lifeboat_daemon_start_timestamp_seconds",
            vec![],
            ts(started),
        );
        m.set("lifeboat_policy_load_errors", vec![], 0.0);
        m
    }

    fn set(&self, name: &'static str, labels: Labels, value: f64) {
        debug_assert!(names().any(|n| n == name), "{name} is not in METRICS");
        self.values
            .lock()
            .expect("metrics lock")
            .entry(name)
            .or_default()
            .insert(labels, value);
    }

    fn add(&self, name: &'static str, labels: Labels, by: f64) {
        debug_assert!(names().any(|n| n == name), "{name} is not in METRICS");
        *self
            .values
            .lock()
            .expect("metrics lock")
            .entry(name)
            .or_default()
            .entry(labels)
            .or_default() += by;
    }

    /// A value, for tests and the status page.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let values = self.values.lock().expect("metrics lock");
        values.get(name)?.iter().find_map(|(l, v)| {
            (l.len() == labels.len()
                && l.iter()
                    .zip(labels)
                    .all(|((k, v1), (k2, v2))| k == k2 && v1 == v2))
            .then_some(*v)
        })
    }

    /// Declares a source so its series exist (0) before anything happens.
    pub fn source_known(
        &self,
        policy: &str,
        source: &str,
        newest_backup: Option<(DateTime<Utc>, u64, u64)>,
    ) {
        let l = source_labels(policy, source);
        let (at, stored, read) = newest_backup
            .map(|(t, s, r)| (ts(t), s as f64, r as f64))
            .unwrap_or((0.0, 0.0, 0.0));
        self.set(
            "lifeboat_backup_last_success_timestamp_seconds",
            l.clone(),
            at,
        );
        self.set("lifeboat_backup_stored_bytes", l.clone(), stored);
        self.set("lifeboat_backup_read_bytes", l.clone(), read);
        for outcome in ["success", "failure"] {
            let mut lo = l.clone();
            lo.push(("outcome", outcome.to_string()));
            self.add("lifeboat_backup_runs_total", lo, 0.0);
        }
        self.add("lifeboat_retention_deleted_backups_total", l, 0.0);
    }

    /// Records a backup attempt.
    pub fn backup_attempt(
        &self,
        policy: &str,
        source: &str,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
        manifest: Option<&crate::repository::Manifest>,
    ) {
        let l = source_labels(policy, source);
        self.set(
            "lifeboat_backup_last_attempt_timestamp_seconds",
            l.clone(),
            ts(started),
        );
        self.set(
            "lifeboat_backup_duration_seconds",
            l.clone(),
            (finished - started).num_milliseconds() as f64 / 1000.0,
        );
        self.set(
            "lifeboat_backup_last_attempt_success",
            l.clone(),
            if manifest.is_some() { 1.0 } else { 0.0 },
        );
        let mut lo = l.clone();
        lo.push((
            "outcome",
            if manifest.is_some() {
                "success"
            } else {
                "failure"
            }
            .to_string(),
        ));
        self.add("lifeboat_backup_runs_total", lo, 1.0);
        if let Some(m) = manifest {
            self.set(
                "lifeboat_backup_last_success_timestamp_seconds",
                l.clone(),
                ts(m.started_at),
            );
            self.set(
                "lifeboat_backup_stored_bytes",
                l.clone(),
                m.stored_size() as f64,
            );
            self.set("lifeboat_backup_read_bytes", l, m.plaintext_size() as f64);
        }
    }

    /// Records a retention run.
    pub fn retention(&self, policy: &str, source: &str, done: Option<&crate::prune::Done>) {
        let l = source_labels(policy, source);
        self.set(
            "lifeboat_retention_last_run_success",
            l.clone(),
            if done.is_some() { 1.0 } else { 0.0 },
        );
        if let Some(d) = done {
            self.add(
                "lifeboat_retention_deleted_backups_total",
                l.clone(),
                d.backups as f64,
            );
            for (what, n) in &d.objects {
                let mut lw = l.clone();
                lw.push(("what", what.as_str().to_string()));
                self.add("lifeboat_retention_deleted_objects_total", lw, *n as f64);
            }
        }
    }

    /// Sets the archive lag of a source (`kind` wal or binlog).
    pub fn archive_lag(
        &self,
        policy: &str,
        source: &str,
        kind: &str,
        seconds: f64,
        segments: Option<u64>,
    ) {
        let mut l = source_labels(policy, source);
        l.push(("kind", kind.to_string()));
        self.set("lifeboat_archive_lag_seconds", l.clone(), seconds);
        if let Some(s) = segments {
            self.set("lifeboat_archive_lag_segments", l, s as f64);
        }
    }

    /// Marks a supervised archiver up or down; `restarted` counts a restart.
    pub fn archiver(&self, policy: &str, source: &str, kind: &str, up: bool, restarted: bool) {
        let mut l = source_labels(policy, source);
        l.push(("kind", kind.to_string()));
        self.set(
            "lifeboat_archiver_up",
            l.clone(),
            if up { 1.0 } else { 0.0 },
        );
        self.add(
            "lifeboat_archiver_restarts_total",
            l,
            if restarted { 1.0 } else { 0.0 },
        );
    }

    /// Sets a source's drill series from its newest drill report.
    pub fn drill(&self, policy: &str, source: &str, r: &crate::drill::DrillReport) {
        let l = source_labels(policy, source);
        self.set(
            "lifeboat_drill_last_timestamp_seconds",
            l.clone(),
            ts(r.finished_at),
        );
        self.set(
            "lifeboat_drill_last_success",
            l.clone(),
            if r.passed { 1.0 } else { 0.0 },
        );
        self.set(
            "lifeboat_drill_checks_failed",
            l.clone(),
            r.failed().count() as f64,
        );
        for (name, value) in [
            ("lifeboat_drill_rto_seconds", r.rto_seconds),
            ("lifeboat_drill_rpo_seconds", r.rpo_seconds),
        ] {
            match value {
                Some(v) => self.set(name, l.clone(), v),
                // Nothing was restored: no measurement, not a zero.
                None => self.forget(name, &l),
            }
        }
    }

    pub fn next_run(&self, policy: &str, at: Option<DateTime<Utc>>) {
        let l = vec![("policy", policy.to_string())];
        match at {
            Some(t) => self.set("lifeboat_next_run_timestamp_seconds", l, ts(t)),
            None => self.forget("lifeboat_next_run_timestamp_seconds", &l),
        }
    }

    pub fn policy_load_errors(&self, n: usize) {
        self.set("lifeboat_policy_load_errors", vec![], n as f64);
    }

    /// Drops every series of a policy (it was removed from the folder).
    pub fn forget_policy(&self, policy: &str) {
        let mut values = self.values.lock().expect("metrics lock");
        for series in values.values_mut() {
            series.retain(|l, _| !l.iter().any(|(k, v)| *k == "policy" && v == policy));
        }
    }

    fn forget(&self, name: &'static str, labels: &Labels) {
        if let Some(series) = self.values.lock().expect("metrics lock").get_mut(name) {
            series.remove(labels);
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let values = self.values.lock().expect("metrics lock");
        let mut out = String::new();
        for (name, kind, help) in METRICS {
            let Some(series) = values.get(name).filter(|s| !s.is_empty()) else {
                continue;
            };
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", format_value(*value));
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text format: integers without a fraction, `+Inf`, `-Inf`
/// and `NaN` spelled as the format wants them.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_spelled_as_prometheus_wants() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(1.5), "1.5");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
    }

    #[test]
    fn renders_the_exposition_format() {
        let m = Metrics::new("2026-11-23T00:00:00Z".parse().unwrap());
        m.source_known("app", "db", None);
        m.archive_lag("app", "db", "wal", 1.5, Some(2));
        m.next_run("app", Some("2026-11-23T02:15:00Z".parse().unwrap()));
        let text = m.render();
        assert!(text.contains("# TYPE lifeboat_backup_runs_total counter\n"));
        assert!(text.contains(
            "lifeboat_backup_runs_total{policy=\"app\",source=\"db\",outcome=\"failure\"} 0\n"
        ));
        assert!(text.contains(
            "lifeboat_archive_lag_seconds{policy=\"app\",source=\"db\",kind=\"wal\"} 1.5\n"
        ));
        assert!(text.contains("lifeboat_next_run_timestamp_seconds{policy=\"app\"} 1795400100\n"));
        assert!(text.contains("lifeboat_build_info{version=\""));
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        m.forget_policy("app");
        assert!(!m.render().contains("policy=\"app\""));
    }

    /// A failed drill that restored nothing: outcome, time and failed
    /// checks are set; RTO and RPO are absent, not zero.
    #[test]
    fn drill_series_follow_the_newest_report() {
        let m = Metrics::new("2026-11-23T00:00:00Z".parse().unwrap());
        let report = |passed: bool, rto: Option<f64>| -> crate::drill::DrillReport {
            serde_json::from_value(serde_json::json!({
                "format": 1, "id": "d", "policy": "app", "source": "db", "host": "h",
                "lifeboat_version": "0.1.0",
                "started_at": "2026-12-01T04:00:00Z", "finished_at": "2026-12-01T04:02:00Z",
                "backup": "b", "backup_kind": "postgres-dump",
                "backup_started_at": "2026-12-01T02:15:00Z", "target": "t",
                "passed": passed, "first_failure": null,
                "rto_seconds": rto, "rpo_seconds": rto.map(|_| 6300.5),
                "restored_point": null, "bytes_read": 1,
                "checks": [
                    {"name": "restore db", "status": if passed { "passed" } else { "failed" }, "detail": ""},
                    {"name": "inventory db", "status": if passed { "passed" } else { "skipped" }, "detail": ""}
                ]
            }))
            .unwrap()
        };
        m.drill("app", "db", &report(true, Some(42.25)));
        let text = m.render();
        for line in [
            "lifeboat_drill_last_timestamp_seconds{policy=\"app\",source=\"db\"} 1796097720\n",
            "lifeboat_drill_last_success{policy=\"app\",source=\"db\"} 1\n",
            "lifeboat_drill_checks_failed{policy=\"app\",source=\"db\"} 0\n",
            "lifeboat_drill_rto_seconds{policy=\"app\",source=\"db\"} 42.25\n",
            "lifeboat_drill_rpo_seconds{policy=\"app\",source=\"db\"} 6300.5\n",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        m.drill("app", "db", &report(false, None));
        let text = m.render();
        assert!(text.contains("lifeboat_drill_last_success{policy=\"app\",source=\"db\"} 0\n"));
        assert!(text.contains("lifeboat_drill_checks_failed{policy=\"app\",source=\"db\"} 1\n"));
        assert!(!text.contains("lifeboat_drill_rto_seconds{"), "{text}");
    }
}
