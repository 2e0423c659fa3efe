//! Drills that replay archived WAL (PostgreSQL base backups) or binlogs
//! (MariaDB) to the newest point, and fail when a piece is missing.

use std::time::Duration;

use super::{assert_nothing_left, check_line, drill, scratch_root, scratch_yaml, set_drill};
use crate::harness::{Garage, Repo};
use crate::unattended::signal;

/// Deletes every object under `prefix` whose key contains `needle`;
/// returns the keys deleted.
fn delete_objects(garage: &Garage, store_prefix: &str, prefix: &str, needle: &str) -> Vec<String> {
    use lifeboat::storage::ObjectStore;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = garage.store(store_prefix).await;
        let mut gone = Vec::new();
        for o in store.list(prefix).await.unwrap() {
            if o.key.contains(needle) {
                store.delete(&o.key).await.unwrap();
                gone.push(o.key);
            }
        }
        gone
    })
}

// Stays long: one archived cluster: its replay checked, then a missing segment on the same archive.
#[test]
fn a_base_backup_drill_replays_wal_to_the_newest_point_and_a_missing_segment_fails_it() {
    use crate::pitr::{archiving, load, switch_and_wait};
    let garage = Garage::start();
    let (pg, lb) = archiving(Repo::Garage(&garage, "drillbase"));
    let scratch_dir = scratch_root();
    let scratch = scratch_dir.path().to_path_buf();
    // This lifeboat runs as postgres (the server's archive_command does):
    // the drill runs its scratch server as itself, as in a container.
    crate::harness::chown_to_postgres(&scratch);
    load(&pg, 5_000);
    let backup = lb.run(&["backup", "--source", "main-db", "--kind", "base", "--json"]);
    backup.ok();
    let manifest: serde_json::Value = serde_json::from_str(&backup.stdout).unwrap();
    let stop_segment = manifest[0]["physical"]["stop_segment"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..3 {
        load(&pg, 5_000);
        switch_and_wait(&pg, pg.port, Duration::from_secs(60));
    }
    pg.psql(
        "app",
        "INSERT INTO orders (amount, note) VALUES (424242, 'the last order')",
    );
    switch_and_wait(&pg, pg.port, Duration::from_secs(60));
    let rows = pg.psql("app", "SELECT count(*) FROM orders");
    set_drill(
        &lb,
        &format!(
            "{}  max_rpo: 1h\n  checks:\n    - name: every order\n      source: main-db\n      \
             sql: SELECT count(*) FROM orders\n      expect: == {rows}\n    \
             - name: the last order\n      source: main-db\n      \
             sql: SELECT note FROM orders WHERE amount = 424242\n      expect: == the last order\n",
            scratch_yaml(&scratch)
        ),
    );

    let text = drill(&lb, &["--kind", "base"]);
    text.ok();
    eprintln!("{}", text.stdout);
    let r = drill(&lb, &["--kind", "base", "--json"]);
    r.ok();
    let reports: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    let report = &reports[0];
    assert_eq!(report["passed"], true, "{report:#}\n{}", r.stderr);
    assert_eq!(report["backup_kind"], "postgres-base");
    let checks: Vec<(String, String)> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (name, status) in [
        ("scratch target", "passed"),
        ("WAL archive", "passed"),
        ("restore base", "passed"),
        ("pg_verifybackup", "passed"),
        ("recovery", "passed"),
        ("pg_amcheck", "passed"),
        ("check: every order", "passed"),
        ("check: the last order", "passed"),
        ("scratch removed", "passed"),
        ("object hashes", "passed"),
        ("recovery point", "passed"),
    ] {
        assert!(
            checks.contains(&(name.to_string(), status.to_string())),
            "{name} not {status}: {checks:?}"
        );
    }
    // The restored point is the last replayed commit: seconds ago.
    let rpo = report["rpo_seconds"].as_f64().unwrap();
    assert!(rpo > 0.0 && rpo < 600.0, "{report:#}");
    assert_nothing_left(&scratch);
    // A backup named by id must be of the kind asked for.
    let id = manifest[0]["id"].as_str().unwrap();
    drill(&lb, &["--backup", id, "--kind", "dump"]).fails_with(2, &[id, "postgres-base", "--kind"]);

    // A segment after the backup's own WAL goes missing: the drill fails
    // naming it, and still restores up to the hole.
    let missing = {
        let mut segs: Vec<String> = {
            use lifeboat::storage::ObjectStore;
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let store = garage.store("drillbase").await;
                lifeboat::kinds::postgres::wal::archive::list(
                    &store as &dyn ObjectStore,
                    "test",
                    "main-db",
                )
                .await
                .unwrap()
                .files
                .into_iter()
                .map(|f| f.name)
                .filter(|n| n.len() == 24)
                .collect()
            })
        };
        segs.sort();
        segs.into_iter()
            .find(|s| s[8..] > stop_segment[8..])
            .expect("a segment after the backup")
    };
    let gone = delete_objects(&garage, "drillbase", "", &missing);
    assert!(!gone.is_empty());
    let r = drill(&lb, &["--kind", "base"]);
    r.fails_with(3, &[]);
    let first = r.stdout.lines().next().unwrap_or("");
    assert!(
        first.starts_with("drill FAILED: WAL archive:") && first.contains(&missing),
        "first line: {first}\n{}",
        r.stdout
    );
    assert!(check_line(&r, "recovery").contains("ok"), "{}", r.stdout);
    assert!(
        check_line(&r, "check: every order").contains("FAILED"),
        "{}",
        r.stdout
    );
    assert_nothing_left(&scratch);
}

// Stays long: one archived server: its replay checked, then a removed binlog and missing binaries.
#[test]
fn a_mariadb_drill_replays_binlogs_and_a_removed_binlog_fails_it() {
    use crate::mysql::{fixture, lifeboat_for, wait_archived, writes};
    let garage = Garage::start();
    let m = crate::harness::MariaDb::start();
    fixture(&m);
    let lb = lifeboat_for(Repo::Garage(&garage, "drillmy"), &m, None);
    let scratch_dir = scratch_root();
    let scratch = scratch_dir.path().to_path_buf();
    let mut archiver = lb.spawn(
        &[
            "binlog-archive",
            "--source",
            "business-db",
            "--interval",
            "1s",
        ],
        "archiver.log",
    );
    writes(&m, 2);
    lb.run(&["backup", "--source", "business-db"]).ok();
    writes(&m, 2);
    m.sql("", "FLUSH BINARY LOGS");
    writes(&m, 2);
    m.sql("", "FLUSH BINARY LOGS");
    let clock = || m.sql("", "SELECT UNIX_TIMESTAMP()").parse::<i64>().unwrap();
    let before_last = clock();
    m.sql("shop", "CALL add_customer('after the dump')");
    let after_last = clock();
    wait_archived(&garage, "drillmy", &lb, &m, "archiver.log");
    signal(&archiver, "-TERM");
    assert!(
        archiver.wait().unwrap().success(),
        "{}",
        lb.log("archiver.log")
    );
    let orders = m.sql("shop", "SELECT COUNT(*) FROM orders");
    set_drill(
        &lb,
        &format!(
            "{}  max_rpo: 1h\n  checks:\n    - name: every order\n      source: business-db\n      database: shop\n      \
             sql: SELECT COUNT(*) FROM orders\n      expect: == {orders}\n    \
             - name: the newest customer\n      source: business-db\n      database: shop\n      \
             sql: SELECT name FROM customers ORDER BY id DESC LIMIT 1\n      expect: == after the dump\n",
            scratch_yaml(&scratch)
        ),
    );

    let r = drill(&lb, &["--source", "business-db"]);
    r.ok();
    eprintln!("{}", r.stdout);
    let first = r.stdout.lines().next().unwrap_or("");
    assert!(
        first.starts_with("drill PASSED:"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    for name in [
        "scratch target",
        "restore",
        "inventory",
        "binlog archive",
        "binlog replay",
        "check: every order",
        "check: the newest customer",
        "scratch removed",
        "object hashes",
        "recovery point",
    ] {
        assert!(check_line(&r, name).contains("ok"), "{name}:\n{}", r.stdout);
    }
    assert!(
        check_line(&r, "scratch target").contains("MariaDB"),
        "{}",
        r.stdout
    );
    // The restored point is the newest event replayed (the last
    // customer's), not when its binlog was copied.
    let replay = check_line(&r, "binlog replay");
    let newest = replay
        .split("newest event ")
        .nth(1)
        .and_then(|t| chrono::NaiveDateTime::parse_from_str(t.get(..19)?, "%Y-%m-%d %H:%M:%S").ok())
        .unwrap_or_else(|| panic!("no event time in: {replay}"))
        .and_utc()
        .timestamp();
    assert!(
        (before_last..=after_last).contains(&newest),
        "{newest} not in {before_last}..={after_last}: {replay}"
    );
    assert_nothing_left(&scratch);

    // The middle binlog file goes missing from the archive.
    let files: Vec<String> = crate::mysql::archived(&garage, "drillmy", &lb)
        .into_iter()
        .map(|(f, _, _)| f)
        .collect();
    let mut files = files;
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let middle = files[files.len() - 2].clone();
    let gone = delete_objects(&garage, "drillmy", "", &middle);
    assert!(!gone.is_empty());
    let r = drill(&lb, &["--source", "business-db"]);
    r.fails_with(3, &[]);
    let first = r.stdout.lines().next().unwrap_or("");
    assert!(
        first.starts_with("drill FAILED: binlog archive:") && first.contains(&middle),
        "first line: {first}\n{}",
        r.stdout
    );
    assert!(
        check_line(&r, "check: the newest customer").contains("FAILED"),
        "{}",
        r.stdout
    );
    assert_nothing_left(&scratch);

    // No server binaries: the drill cannot run (exit 1) and says what to do.
    set_drill(
        &lb,
        &format!(
            "{}  mariadb:\n    bin_dir: /nonexistent/mariadb/bin\n",
            scratch_yaml(&scratch)
        ),
    );
    let r = drill(&lb, &["--source", "business-db"]);
    r.fails_with(
        1,
        &["no MariaDB/MySQL server binaries", "drill.mariadb.bin_dir"],
    );
    assert_nothing_left(&scratch);
}
