//! Drills stopped by SIGTERM remove their scratch servers; killed ones are
//! removed by the next drill.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use super::{
    assert_nothing_left, drill, scratch_left, scratch_root, scratch_yaml, servers_in, set_drill,
    source_cluster,
};
use crate::harness::{Lifeboat, Repo};
use crate::unattended::signal;

fn spawn_drill(lb: &Lifeboat, log: &str) -> Child {
    let identity = lb.identity.display().to_string();
    lb.spawn(&["drill", "--identity", &identity], log)
}

/// Waits until a scratch cluster of a running drill accepts connections
/// (its server has written `postmaster.pid` with "ready" in it).
fn wait_for_scratch_server(scratch: &Path, lb: &Lifeboat, log: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = scratch_left(scratch).iter().any(|d| {
            std::fs::read_to_string(d.join("data/postmaster.pid"))
                .is_ok_and(|t| t.contains("ready"))
        });
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no scratch server came up; drill log:\n{}",
            lb.log(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// After a SIGKILL: one scratch folder is left with its server running;
/// the next drill stops that server, removes the folder and says so.
fn next_drill_removes_the_killed_one(lb: &Lifeboat, scratch: &Path, args: &[&str]) {
    let left = scratch_left(scratch);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        !servers_in(scratch).is_empty(),
        "the killed drill's server still runs"
    );
    let r = drill(lb, args);
    r.ok();
    assert!(
        r.stdout.contains(&format!(
            "removed the scratch target of an earlier drill: {} (removed)",
            left[0].display()
        )),
        "{}",
        r.stdout
    );
    assert_nothing_left(scratch);
}

#[test]
fn a_drill_killed_leaves_nothing_behind_or_the_next_drill_removes_it() {
    let pg = source_cluster();
    // Enough rows that the restore is still running when the signal comes.
    pg.psql(
        "shop",
        "CREATE TABLE events AS SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, 2000000) g",
    );
    let repo_dir = tempfile::tempdir().unwrap();
    let lb = Lifeboat::new(Repo::Local(repo_dir.path().join("repo")), &pg, "[shop]");
    let scratch_dir = scratch_root();
    let scratch = scratch_dir.path().to_path_buf();
    set_drill(&lb, &scratch_yaml(&scratch));
    lb.run(&["backup"]).ok();

    // SIGTERM: the drill removes its scratch cluster and exits 143.
    let mut child = spawn_drill(&lb, "term.log");
    wait_for_scratch_server(&scratch, &lb, "term.log");
    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{}", lb.log("term.log"));
    assert_nothing_left(&scratch);

    // SIGKILL: the cluster stays behind until the next drill.
    let mut child = spawn_drill(&lb, "kill.log");
    wait_for_scratch_server(&scratch, &lb, "kill.log");
    signal(&child, "-KILL");
    child.wait().unwrap();
    next_drill_removes_the_killed_one(&lb, &scratch, &[]);
}

/// A MariaDB drill stopped with SIGTERM removes its server; one killed
/// with SIGKILL leaves it, and the next drill kills and removes it.
#[test]
fn a_killed_mariadb_drill_leaves_nothing_behind_or_the_next_drill_removes_it() {
    use crate::mysql::{fixture, lifeboat_for};
    let m = crate::harness::MariaDb::start();
    fixture(&m);
    // Enough rows that the load is still running when the signal comes.
    m.sql(
        "shop",
        "CREATE TABLE big (id INT PRIMARY KEY, payload VARCHAR(200)) ENGINE=InnoDB; \
         INSERT INTO big SELECT seq, REPEAT('x', 200) FROM seq_1_to_400000",
    );
    let repo = tempfile::tempdir().unwrap();
    let lb = lifeboat_for(Repo::Local(repo.path().join("repo")), &m, None);
    let scratch_dir = scratch_root();
    let scratch = scratch_dir.path().to_path_buf();
    set_drill(&lb, &scratch_yaml(&scratch));
    lb.run(&["backup", "--source", "business-db"]).ok();
    let identity = lb.identity.display().to_string();
    let spawn = |log: &str| {
        lb.spawn(
            &["drill", "--identity", &identity, "--source", "business-db"],
            log,
        )
    };
    let wait_for_mariadbd = |log: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !scratch_left(&scratch)
            .iter()
            .any(|d| d.join("mariadbd.pid").exists())
        {
            assert!(
                Instant::now() < deadline,
                "no scratch mariadbd came up:\n{}",
                lb.log(log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let mut child = spawn("term.log");
    wait_for_mariadbd("term.log");
    signal(&child, "-TERM");
    assert_eq!(
        child.wait().unwrap().code(),
        Some(143),
        "{}",
        lb.log("term.log")
    );
    assert_nothing_left(&scratch);

    let mut child = spawn("kill.log");
    wait_for_mariadbd("kill.log");
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "-KILL");
    child.wait().unwrap();
    next_drill_removes_the_killed_one(&lb, &scratch, &["--source", "business-db"]);
}
