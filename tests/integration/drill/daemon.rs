//! The daemon's scheduled drills.

use std::time::Duration;

use super::{assert_nothing_left, scratch_root, scratch_yaml, set_drill, source_cluster};
use crate::harness::{Lifeboat, Repo};
use crate::unattended::signal;

/// The daemon drills on the policy's `drill.schedule` (a slot this very
/// minute, caught up at start), stores the report, shows it in the
/// metrics, and leaves nothing behind.
#[test]
fn the_daemon_drills_on_schedule_and_exports_the_result() {
    use crate::unattended::{spawn_daemon, wait_exit, wait_for_metrics};
    use chrono::Timelike;

    let pg = source_cluster();
    let repo_dir = tempfile::tempdir().unwrap();
    let lb = Lifeboat::new(Repo::Local(repo_dir.path().join("repo")), &pg, "[shop]");
    // No globals in this backup: the drill creates the role `postgres`
    // the dump's objects belong to.
    let text = std::fs::read_to_string(&lb.policy).unwrap();
    assert!(text.contains("    postgres:\n"), "{text}");
    std::fs::write(
        &lb.policy,
        text.replace("    postgres:\n", "    postgres:\n      globals: false\n"),
    )
    .unwrap();
    let scratch_dir = scratch_root();
    let scratch = scratch_dir.path().to_path_buf();
    lb.run(&["backup"]).ok();
    assert!(
        !lb.run(&["list", "--json"]).stdout.contains("\"globals\""),
        "a backup without globals"
    );

    let now = chrono::Utc::now();
    set_drill(
        &lb,
        &format!(
            "{}  schedule: \"{} {} * * *\"\n  identity: {}\n  checks:\n    - name: orders\n      source: main-db\n      \
             sql: SELECT count(*) FROM orders\n      expect: 500\n",
            scratch_yaml(&scratch),
            now.minute(),
            now.hour(),
            lb.identity.display()
        ),
    );
    let policies = lb.dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let text = std::fs::read_to_string(&lb.policy)
        .unwrap()
        .replace("drill:\n", "timezone: UTC\ndrill:\n");
    std::fs::write(policies.join("app.yaml"), text).unwrap();

    let log = lb.dir.path().join("daemon.log");
    let port = crate::harness::free_port();
    let mut daemon = spawn_daemon(&lb, &policies, port, &["--missed-run-window", "1h"], &log);
    let series = |name: &str| format!("{name}{{policy=\"test\",source=\"main-db\"}}");
    let m = wait_for_metrics(port, &log, "the scheduled drill", |m| {
        m.contains_key(&series("lifeboat_drill_last_success"))
    });
    assert_eq!(
        m[&series("lifeboat_drill_last_success")],
        1.0,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(m[&series("lifeboat_drill_checks_failed")], 0.0);
    assert!(m[&series("lifeboat_drill_rto_seconds")] > 0.0, "{m:?}");
    assert!(m[&series("lifeboat_drill_rpo_seconds")] > 0.0, "{m:?}");
    let finished = m[&series("lifeboat_drill_last_timestamp_seconds")];
    assert!(finished >= now.timestamp() as f64, "{m:?}");

    let list = lb.run(&["drill", "--list", "--json"]);
    list.ok();
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let drills = v["drills"].as_array().unwrap();
    assert_eq!(drills.len(), 1, "one caught-up drill, no burst: {v}");
    assert_eq!(drills[0]["passed"], true);
    assert!(
        drills[0]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "check: orders" && c["status"] == "passed"),
        "{v}"
    );

    signal(&daemon, "-TERM");
    let (status, _) = wait_exit(&mut daemon, Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_nothing_left(&scratch);
}
