//! The daemon's metrics, served at `/metrics` in the Prometheus text
//! exposition format (version 0.0.4, [`CONTENT_TYPE`]) by prometheus-client.
//!
//! Everything is a gauge or a counter keyed by `policy` and `source` (and
//! a `kind`, `outcome` or `what` label where it says); values are set by
//! the scheduler, the archivers and the archive-lag probe. Each metric is a
//! typed family, a field of `Families` registered once under its name, so
//! a misspelt metric does not compile. [`names`] lists every metric: the
//! alert rules and the dashboard in `deploy/` use only these (a test checks).

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A time (Unix seconds), a duration or a lag.
type Seconds = Gauge<f64, AtomicU64>;
/// Bytes, files, checks.
type Count = Gauge<u64, AtomicU64>;
/// 1 or 0.
type Flag = Gauge;
type Total = Counter<u64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    policy: String,
    source: String,
}

/// `outcome`: success or failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    policy: String,
    source: String,
    outcome: &'static str,
}

/// `kind`: wal or binlog.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    policy: String,
    source: String,
    kind: String,
}

/// `what`: backup, wal, binlog, orphan or upload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabels {
    policy: String,
    source: String,
    what: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

impl SourceLabels {
    fn new(policy: &str, source: &str) -> SourceLabels {
        SourceLabels {
            policy: policy.to_string(),
            source: source.to_string(),
        }
    }
    fn outcome(&self, outcome: &'static str) -> OutcomeLabels {
        OutcomeLabels {
            policy: self.policy.clone(),
            source: self.source.clone(),
            outcome,
        }
    }
    fn kind(&self, kind: &str) -> KindLabels {
        KindLabels {
            policy: self.policy.clone(),
            source: self.source.clone(),
            kind: kind.to_string(),
        }
    }
    fn what(&self, what: &'static str) -> WhatLabels {
        WhatLabels {
            policy: self.policy.clone(),
            source: self.source.clone(),
            what,
        }
    }
}

/// A label set's policy, for dropping a removed policy's series.
trait OfPolicy {
    fn policy(&self) -> Option<&str>;
}

macro_rules! of_policy {
    ($($t:ty),*) => {$(
        impl OfPolicy for $t {
            fn policy(&self) -> Option<&str> {
                Some(&self.policy)
            }
        }
    )*};
}
of_policy!(
    PolicyLabels,
    SourceLabels,
    OutcomeLabels,
    KindLabels,
    WhatLabels
);

impl OfPolicy for VersionLabels {
    fn policy(&self) -> Option<&str> {
        None
    }
}

/// A labelled family that remembers its label sets (prometheus-client's
/// [`Family`] cannot list them), so a policy's series can be dropped.
#[derive(Debug)]
struct Series<L, M> {
    family: Family<L, M>,
    known: Mutex<HashSet<L>>,
}

impl<L: Clone + Hash + Eq, M: Default> Default for Series<L, M> {
    fn default() -> Self {
        Series {
            family: Family::default(),
            known: Mutex::default(),
        }
    }
}

impl<L: Clone + Hash + Eq, M: Clone + Default> Series<L, M> {
    /// Calls `f` on the series of `labels`, created (at 0) if new.
    fn with(&self, labels: L, f: impl FnOnce(&M)) {
        // The label sets' lock is held throughout so that a series cannot
        // be created behind a `forget_policy`.
        let mut known = self.known.lock().expect("metrics lock");
        f(&self.family.get_or_create(&labels));
        known.insert(labels);
    }

    fn remove(&self, labels: &L) {
        let mut known = self.known.lock().expect("metrics lock");
        self.family.remove(labels);
        known.remove(labels);
    }
}

/// What a field of [`Families`] needs: registering, forgetting a policy.
trait Exported {
    fn register(&self, registry: &mut Registry, name: &str, help: &str);
    fn forget_policy(&self, policy: &str);
}

/// prometheus-client appends the `.` and, to a counter's name, `_total`.
fn register_as<M: TypedMetric + EncodeMetric + Debug + Send + Sync + 'static>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) {
    let name = if M::TYPE == MetricType::Counter {
        name.strip_suffix("_total")
            .expect("a counter's name ends in _total")
    } else {
        name
    };
    registry.register(name, help.strip_suffix('.').unwrap_or(help), metric);
}

impl<L, M> Exported for Series<L, M>
where
    L: Clone + Hash + Eq + Debug + EncodeLabelSet + OfPolicy + Send + Sync + 'static,
    M: Clone + Default + TypedMetric + EncodeMetric + Debug + Send + Sync + 'static,
{
    fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        register_as(registry, name, help, self.family.clone());
    }

    fn forget_policy(&self, policy: &str) {
        let mut known = self.known.lock().expect("metrics lock");
        known.retain(|l| {
            let keep = l.policy() != Some(policy);
            if !keep {
                self.family.remove(l);
            }
            keep
        });
    }
}

impl<N, A> Exported for Gauge<N, A>
where
    Gauge<N, A>: TypedMetric + EncodeMetric + Clone + Debug + Send + Sync + 'static,
{
    fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        register_as(registry, name, help, self.clone());
    }

    fn forget_policy(&self, _policy: &str) {}
}

/// Declares every metric once: its field, type, name (as Prometheus sees
/// it) and help text. Registration, [`NAMES`] and `forget_policy` follow.
macro_rules! families {
    ($($field:ident: $type:ty = $name:literal, $help:literal;)*) => {
        /// Every metric lifeboat exports, in the order of the exposition.
        const NAMES: &[&str] = &[$($name),*];

        struct Families {
            $($field: $type,)*
        }

        impl Families {
            fn register(registry: &mut Registry) -> Families {
                let families = Families {
                    $($field: Default::default(),)*
                };
                $(families.$field.register(registry, $name, $help);)*
                families
            }

            fn forget_policy(&self, policy: &str) {
                $(self.$field.forget_policy(policy);)*
            }
        }
    };
}

families! {
    backup_last_success: Series<SourceLabels, Seconds> = "lifeboat_backup_last_success_timestamp_seconds", "When the newest complete backup of the source started (Unix time); 0 if it has none.";
    backup_last_attempt: Series<SourceLabels, Seconds> = "lifeboat_backup_last_attempt_timestamp_seconds", "When the daemon last attempted a backup of the source (Unix time).";
    backup_last_attempt_success: Series<SourceLabels, Flag> = "lifeboat_backup_last_attempt_success", "1 if the last backup attempt succeeded, 0 if it failed.";
    backup_duration: Series<SourceLabels, Seconds> = "lifeboat_backup_duration_seconds", "Wall time of the last backup attempt.";
    backup_stored_bytes: Series<SourceLabels, Count> = "lifeboat_backup_stored_bytes", "Bytes stored (compressed, encrypted) by the newest complete backup.";
    backup_read_bytes: Series<SourceLabels, Count> = "lifeboat_backup_read_bytes", "Bytes read from the source (plaintext) by the newest complete backup.";
    backup_runs: Series<OutcomeLabels, Total> = "lifeboat_backup_runs_total", "Backup attempts by outcome (success, failure).";
    archive_lag_seconds: Series<KindLabels, Seconds> = "lifeboat_archive_lag_seconds", "How long WAL or binlog data written by the server has been waiting to be archived (0 when nothing waits).";
    archive_lag_segments: Series<KindLabels, Count> = "lifeboat_archive_lag_segments", "WAL segments or binlog files the server has finished that are not archived whole.";
    archiver_up: Series<KindLabels, Flag> = "lifeboat_archiver_up", "1 while the daemon's archiver of the source is running, 0 while it is down and waiting to restart.";
    archiver_restarts: Series<KindLabels, Total> = "lifeboat_archiver_restarts_total", "Times the daemon restarted the source's archiver after it stopped with an error.";
    retention_deleted_backups: Series<SourceLabels, Total> = "lifeboat_retention_deleted_backups_total", "Backups deleted by retention.";
    retention_deleted_objects: Series<WhatLabels, Total> = "lifeboat_retention_deleted_objects_total", "Objects deleted by retention, by what they were (backup, wal, binlog, orphan, upload).";
    retention_last_run_success: Series<SourceLabels, Flag> = "lifeboat_retention_last_run_success", "1 if the last retention run succeeded, 0 if it failed.";
    drill_last_timestamp: Series<SourceLabels, Seconds> = "lifeboat_drill_last_timestamp_seconds", "When the last restore drill of the source finished (Unix time).";
    drill_last_success: Series<SourceLabels, Flag> = "lifeboat_drill_last_success", "1 if the last restore drill passed every check, 0 if not.";
    drill_rto: Series<SourceLabels, Seconds> = "lifeboat_drill_rto_seconds", "Recovery time measured by the last drill: start to a usable restored target.";
    drill_rpo: Series<SourceLabels, Seconds> = "lifeboat_drill_rpo_seconds", "Data-loss window measured by the last drill: the end of its restore minus the newest restored point.";
    drill_checks_failed: Series<SourceLabels, Count> = "lifeboat_drill_checks_failed", "Checks that failed in the last drill.";
    next_run: Series<PolicyLabels, Seconds> = "lifeboat_next_run_timestamp_seconds", "When the policy's schedule fires next (Unix time).";
    policy_load_errors: Count = "lifeboat_policy_load_errors", "Policy files in the policies folder that cannot be loaded (the daemon runs the others).";
    build_info: Series<VersionLabels, Flag> = "lifeboat_build_info", "Always 1; the version label says which lifeboat runs.";
    daemon_start: Seconds = "lifeboat_daemon_start_timestamp_seconds", "When the daemon started (Unix time).";
}

/// The metric names, for checks of alert rules and dashboards.
pub fn names() -> impl Iterator<Item = &'static str> {
    NAMES.iter().copied()
}

/// The registry and its families.
pub struct Metrics {
    registry: Registry,
    m: Families,
}

fn ts(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

impl Metrics {
    pub fn new(started: DateTime<Utc>) -> Metrics {
        let mut registry = Registry::default();
        let m = Families::register(&mut registry);
        m.build_info.with(
            VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            },
            |g| {
                g.set(1);
            },
        );
        m.daemon_start.set(ts(started));
        Metrics { registry, m }
    }

    /// Declares a source so its series exist (0) before anything happens.
    pub fn source_known(
        &self,
        policy: &str,
        source: &str,
        newest_backup: Option<(DateTime<Utc>, u64, u64)>,
    ) {
        let l = SourceLabels::new(policy, source);
        let (at, stored, read) = newest_backup
            .map(|(t, s, r)| (ts(t), s, r))
            .unwrap_or((0.0, 0, 0));
        let m = &self.m;
        m.backup_last_success.with(l.clone(), |g| {
            g.set(at);
        });
        m.backup_stored_bytes.with(l.clone(), |g| {
            g.set(stored);
        });
        m.backup_read_bytes.with(l.clone(), |g| {
            g.set(read);
        });
        for outcome in ["success", "failure"] {
            m.backup_runs.with(l.outcome(outcome), |_| {});
        }
        m.retention_deleted_backups.with(l, |_| {});
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
        let l = SourceLabels::new(policy, source);
        let m = &self.m;
        m.backup_last_attempt.with(l.clone(), |g| {
            g.set(ts(started));
        });
        m.backup_duration.with(l.clone(), |g| {
            g.set((finished - started).num_milliseconds() as f64 / 1000.0);
        });
        m.backup_last_attempt_success.with(l.clone(), |g| {
            g.set(flag(manifest.is_some()));
        });
        let outcome = if manifest.is_some() {
            "success"
        } else {
            "failure"
        };
        m.backup_runs.with(l.outcome(outcome), |c| {
            c.inc();
        });
        if let Some(manifest) = manifest {
            m.backup_last_success.with(l.clone(), |g| {
                g.set(ts(manifest.started_at));
            });
            m.backup_stored_bytes.with(l.clone(), |g| {
                g.set(manifest.stored_size());
            });
            m.backup_read_bytes.with(l, |g| {
                g.set(manifest.plaintext_size());
            });
        }
    }

    /// Records a retention run.
    pub fn retention(&self, policy: &str, source: &str, done: Option<&crate::prune::Done>) {
        let l = SourceLabels::new(policy, source);
        let m = &self.m;
        m.retention_last_run_success.with(l.clone(), |g| {
            g.set(flag(done.is_some()));
        });
        if let Some(d) = done {
            m.retention_deleted_backups.with(l.clone(), |c| {
                c.inc_by(d.backups);
            });
            for (what, n) in &d.objects {
                m.retention_deleted_objects
                    .with(l.what(what.as_str()), |c| {
                        c.inc_by(*n);
                    });
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
        let l = SourceLabels::new(policy, source).kind(kind);
        self.m.archive_lag_seconds.with(l.clone(), |g| {
            g.set(seconds);
        });
        if let Some(s) = segments {
            self.m.archive_lag_segments.with(l, |g| {
                g.set(s);
            });
        }
    }

    /// Marks a supervised archiver up or down; `restarted` counts a restart.
    pub fn archiver(&self, policy: &str, source: &str, kind: &str, up: bool, restarted: bool) {
        let l = SourceLabels::new(policy, source).kind(kind);
        self.m.archiver_up.with(l.clone(), |g| {
            g.set(flag(up));
        });
        self.m.archiver_restarts.with(l, |c| {
            if restarted {
                c.inc();
            }
        });
    }

    /// Sets a source's drill series from its newest drill report.
    pub fn drill(&self, policy: &str, source: &str, r: &crate::drill::DrillReport) {
        let l = SourceLabels::new(policy, source);
        let m = &self.m;
        m.drill_last_timestamp.with(l.clone(), |g| {
            g.set(ts(r.finished_at));
        });
        m.drill_last_success.with(l.clone(), |g| {
            g.set(flag(r.passed));
        });
        m.drill_checks_failed.with(l.clone(), |g| {
            g.set(r.failed().count() as u64);
        });
        for (series, value) in [(&m.drill_rto, r.rto_seconds), (&m.drill_rpo, r.rpo_seconds)] {
            match value {
                Some(v) => series.with(l.clone(), |g| {
                    g.set(v);
                }),
                // Nothing was restored: no measurement, not a zero.
                None => series.remove(&l),
            }
        }
    }

    pub fn next_run(&self, policy: &str, at: Option<DateTime<Utc>>) {
        let l = PolicyLabels {
            policy: policy.to_string(),
        };
        match at {
            Some(t) => self.m.next_run.with(l, |g| {
                g.set(ts(t));
            }),
            None => self.m.next_run.remove(&l),
        }
    }

    pub fn policy_load_errors(&self, n: usize) {
        self.m.policy_load_errors.set(n as u64);
    }

    /// Drops every series of a policy (it was removed from the folder).
    pub fn forget_policy(&self, policy: &str) {
        self.m.forget_policy(policy);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn type_lines(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect()
    }

    #[test]
    fn renders_the_exposition_format() {
        let m = Metrics::new("2026-11-23T00:00:00Z".parse().unwrap());
        let text = m.render();
        // Families without a series are left out.
        assert_eq!(
            type_lines(&text),
            [
                "lifeboat_policy_load_errors gauge",
                "lifeboat_build_info gauge",
                "lifeboat_daemon_start_timestamp_seconds gauge",
            ],
            "{text}"
        );
        assert!(text.contains(&format!(
            "# HELP lifeboat_build_info Always 1; the version label says which lifeboat runs.\n\
             # TYPE lifeboat_build_info gauge\n\
             lifeboat_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains("lifeboat_daemon_start_timestamp_seconds 1795392000.0\n"));
        assert!(text.contains("lifeboat_policy_load_errors 0\n"));

        m.source_known("app", "db", None);
        m.archive_lag("app", "db", "wal", 1.5, Some(2));
        m.next_run("app", Some("2026-11-23T02:15:00Z".parse().unwrap()));
        m.policy_load_errors(1);
        let text = m.render();
        for line in [
            "# HELP lifeboat_backup_runs_total Backup attempts by outcome (success, failure).\n\
             # TYPE lifeboat_backup_runs_total counter\n",
            "lifeboat_backup_runs_total{policy=\"app\",source=\"db\",outcome=\"failure\"} 0\n",
            "lifeboat_backup_runs_total{policy=\"app\",source=\"db\",outcome=\"success\"} 0\n",
            "lifeboat_retention_deleted_backups_total{policy=\"app\",source=\"db\"} 0\n",
            "lifeboat_backup_stored_bytes{policy=\"app\",source=\"db\"} 0\n",
            "lifeboat_archive_lag_seconds{policy=\"app\",source=\"db\",kind=\"wal\"} 1.5\n",
            "lifeboat_archive_lag_segments{policy=\"app\",source=\"db\",kind=\"wal\"} 2\n",
            "lifeboat_next_run_timestamp_seconds{policy=\"app\"} 1795400100.0\n",
            "lifeboat_policy_load_errors 1\n",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");

        m.forget_policy("app");
        let text = m.render();
        assert!(!text.contains("policy=\"app\""), "{text}");
        assert!(text.contains("lifeboat_build_info{"), "{text}");
    }

    /// Label values are escaped as the text format wants.
    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new("2026-11-23T00:00:00Z".parse().unwrap());
        m.next_run("a\"b\\c\nd", Some("2026-11-23T02:15:00Z".parse().unwrap()));
        assert!(m
            .render()
            .contains("lifeboat_next_run_timestamp_seconds{policy=\"a\\\"b\\\\c\\nd\"} "));
    }

    /// With a series in every family, the exposition names exactly
    /// [`NAMES`], in order, each with its HELP and TYPE: what `deploy/`
    /// is checked against is what Prometheus scrapes.
    #[test]
    fn every_family_is_exported_under_its_name() {
        let m = Metrics::new("2026-11-23T00:00:00Z".parse().unwrap());
        let at = "2026-11-23T00:00:00Z".parse().unwrap();
        m.source_known("app", "db", None);
        m.backup_attempt("app", "db", at, at, None);
        let done = crate::prune::Done {
            backups: 2,
            objects: [(crate::prune::What::Wal, 3)].into(),
            bytes: 0,
        };
        m.retention("app", "db", Some(&done));
        m.archive_lag("app", "db", "wal", 0.0, Some(0));
        m.archiver("app", "db", "binlog", false, true);
        m.drill("app", "db", &drill_report(true, Some(1.0)));
        m.next_run("app", Some(at));
        let text = m.render();
        let typed: Vec<&str> = type_lines(&text)
            .iter()
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(typed, NAMES, "{text}");
        let helped: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(helped, NAMES.iter().copied().collect());
        for line in [
            "# TYPE lifeboat_archiver_restarts_total counter\n",
            "# TYPE lifeboat_retention_deleted_objects_total counter\n",
            "# HELP lifeboat_drill_checks_failed Checks that failed in the last drill.\n",
            "lifeboat_archiver_restarts_total{policy=\"app\",source=\"db\",kind=\"binlog\"} 1\n",
            "lifeboat_archiver_up{policy=\"app\",source=\"db\",kind=\"binlog\"} 0\n",
            "lifeboat_retention_deleted_backups_total{policy=\"app\",source=\"db\"} 2\n",
            "lifeboat_retention_deleted_objects_total{policy=\"app\",source=\"db\",what=\"wal\"} 3\n",
            "lifeboat_backup_last_attempt_success{policy=\"app\",source=\"db\"} 0\n",
            "lifeboat_backup_runs_total{policy=\"app\",source=\"db\",outcome=\"failure\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        // Every sample belongs to a family of NAMES.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(NAMES.contains(&name), "{line}");
        }
    }

    fn drill_report(passed: bool, rto: Option<f64>) -> crate::drill::DrillReport {
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
    }

    /// A failed drill that restored nothing: outcome, time and failed
    /// checks are set; RTO and RPO are absent, not zero.
    #[test]
    fn drill_series_follow_the_newest_report() {
        let m = Metrics::new("2026-11-23T00:00:00Z".parse().unwrap());
        m.drill("app", "db", &drill_report(true, Some(42.25)));
        let text = m.render();
        for line in [
            "lifeboat_drill_last_timestamp_seconds{policy=\"app\",source=\"db\"} 1796097720.0\n",
            "lifeboat_drill_last_success{policy=\"app\",source=\"db\"} 1\n",
            "lifeboat_drill_checks_failed{policy=\"app\",source=\"db\"} 0\n",
            "lifeboat_drill_rto_seconds{policy=\"app\",source=\"db\"} 42.25\n",
            "lifeboat_drill_rpo_seconds{policy=\"app\",source=\"db\"} 6300.5\n",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        m.drill("app", "db", &drill_report(false, None));
        let text = m.render();
        assert!(text.contains("lifeboat_drill_last_success{policy=\"app\",source=\"db\"} 0\n"));
        assert!(text.contains("lifeboat_drill_checks_failed{policy=\"app\",source=\"db\"} 1\n"));
        assert!(!text.contains("lifeboat_drill_rto_seconds{"), "{text}");
        assert!(
            !text.contains("# TYPE lifeboat_drill_rto_seconds"),
            "{text}"
        );
    }
}
