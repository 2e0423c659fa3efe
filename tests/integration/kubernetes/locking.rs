//! One backup of a source at a time; stale locks are taken over.

use super::setup;
use crate::kube_server::KubeServer;

/// Two backups of one source at once: one runs, the other is refused and
/// told who holds the lock; a stale lock (a killed process) is taken over.
#[test]
fn two_backups_of_one_source_at_once_and_a_stale_lock() {
    let server = KubeServer::start();
    server.seed_realistic("prod");
    // Slow answers keep the first backup busy for a few seconds.
    server.set_latency(std::time::Duration::from_millis(100));
    let (lb, repo) = setup(&server, "");
    let locks = repo.path().join("repo/locks/test/cluster-config");
    let mut first = lb.spawn(&["backup"], "first.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(&locks).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no lock claim appeared: {}",
            lb.log("first.log")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = lb.run(&["backup"]);
    second.fails_with(
        5,
        &[
            "source 'cluster-config' is locked by",
            &format!("pid {}", first.id()),
            "backup since",
        ],
    );
    assert!(first.wait().unwrap().success(), "{}", lb.log("first.log"));
    assert_eq!(lb.backup_ids().len(), 1);
    assert_eq!(std::fs::read_dir(&locks).unwrap().count(), 0, "released");

    // A claim nobody renews any more (its process was killed).
    server.set_latency(std::time::Duration::ZERO);
    std::fs::write(
        locks.join("20261101T000000.000Z-0123456789abcdef.json"),
        r#"{"holder":"0123456789abcdef","host":"old-pod","pid":4242,"operation":"backup","since":"2026-11-01T00:00:00Z","renewed_at":"2026-11-01T00:00:00Z","lease_secs":60}"#,
    )
    .unwrap();
    let r = lb.run(&["backup"]);
    r.ok();
    assert!(
        r.stderr.contains("taking over a stale lock") && r.stderr.contains("old-pod"),
        "{}",
        r.stderr
    );
    assert_eq!(lb.backup_ids().len(), 2);
    assert_eq!(std::fs::read_dir(&locks).unwrap().count(), 0);
}
