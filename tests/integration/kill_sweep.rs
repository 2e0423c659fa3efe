//! lifeboat killed with SIGKILL at seeded random moments of a backup (the
//! OOM killer, a node lost, `kubectl delete pod --grace-period=0`): nothing
//! broken is ever listed, no child process outlives it, the next run
//! succeeds at once, and `prune --grace 0s` leaves no orphan and no pending
//! upload.
//!
//! CI kills 4 backups; `LIFEBOAT_KILL_RUNS=50` runs the long version and
//! `LIFEBOAT_KILL_SEED=N` repeats a run (the seed is printed).

use std::time::{Duration, Instant};

use lifeboat::storage::ObjectStore;
use rand::{Rng, SeedableRng};

use crate::harness::{Garage, Lifeboat, PgCluster, Repo};

/// Processes (other than the test itself) whose environment holds `marker`:
/// lifeboat and every child it started, which inherit its environment.
fn marked_processes(marker: &str) -> Vec<(u32, String)> {
    let needle = marker.as_bytes();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(|v| v == needle) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // A zombie waiting for init to reap it is dead.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .unwrap_or("?");
        if state == "Z" || state == "X" {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        out.push((pid, comm.trim().to_string()));
    }
    out
}

/// Waits (a few seconds at most) until no process carries `marker`.
fn assert_no_survivors(marker: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = marked_processes(marker);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for (pid, _) in &left {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            panic!("{what}: processes outlived the killed lifeboat: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn backups_to_s3_killed_at_random_moments_leave_nothing_broken_no_children_and_no_leftovers() {
    let garage = Garage::start();
    kill_sweep(Some(&garage));
}

#[test]
fn backups_to_a_folder_killed_at_random_moments_leave_nothing_broken_no_children_and_no_leftovers()
{
    kill_sweep(None);
}

/// The sweep against Garage, or against a local folder when `garage` is
/// None (where unfinished writes are temp files).
fn kill_sweep(garage: Option<&Garage>) {
    let seed = env_number("LIFEBOAT_KILL_SEED").unwrap_or_else(rand::random);
    let runs = env_number("LIFEBOAT_KILL_RUNS").unwrap_or(4);
    eprintln!(
        "kill sweep: seed {seed}, {runs} kills (LIFEBOAT_KILL_SEED={seed} repeats it, \
         LIFEBOAT_KILL_RUNS=N runs more)"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let pg = PgCluster::start();
    let folder = tempfile::tempdir().unwrap();
    pg.psql("postgres", "CREATE DATABASE app");
    // Random text compresses badly: a dump of several parts.
    pg.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS v \
         FROM generate_series(1, 1500000) g",
    );
    pg.psql("postgres", "CREATE DATABASE other");
    pg.psql(
        "other",
        "CREATE TABLE u AS SELECT g AS id FROM generate_series(1, 1000) g",
    );
    let repo = match garage {
        Some(g) => Repo::Garage(g, "sweep"),
        None => Repo::Local(folder.path().join("repo")),
    };
    let mut lb = Lifeboat::new(repo, &pg, "[app, other]");
    {
        let mut policy = std::fs::read_to_string(&lb.policy).unwrap();
        policy.push_str("retention:\n  keep_last: 100\n");
        std::fs::write(&lb.policy, policy).unwrap();
    }
    let marker = format!("LIFEBOAT_KILL_SWEEP={seed}-{}", std::process::id());
    let (key, value) = marker.split_once('=').unwrap();
    lb.env.push((key.to_string(), value.to_string()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: std::sync::Arc<dyn ObjectStore> = match garage {
        Some(g) => std::sync::Arc::new(rt.block_on(g.store("sweep"))),
        None => std::sync::Arc::new(lifeboat::storage::LocalStore::new(
            folder.path().join("repo"),
        )),
    };

    // How long a whole backup takes here, to kill inside it.
    let started = Instant::now();
    lb.run(&["backup"]).ok();
    let whole = started.elapsed();
    assert_no_survivors(&marker, "a finished backup");

    // A pg_dump waiting for a table lock writes nothing, so no broken pipe
    // ends it when lifeboat dies; it would hold its snapshot open on the
    // server for as long as the lock is held. It must die with lifeboat.
    {
        let migration = pg.lock_table("app", "t");
        let waiting = |q: &str| {
            pg.psql(
                "app",
                &format!("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '{q}'"),
            )
        };
        let started = Instant::now();
        let mut child = lb.spawn(&["backup"], "blocked.log");
        while waiting("LOCK TABLE %") == "0" {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "pg_dump never waited for the lock: {}",
                lb.log("blocked.log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let running = marked_processes(&marker);
        assert!(
            running.iter().any(|(_, comm)| comm == "pg_dump"),
            "{running:?}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert_no_survivors(&marker, "a pg_dump waiting for a table lock");
        drop(migration);
    }

    let mut children_killed = 0;
    for run in 0..runs {
        let log = format!("killed-{run}.log");
        let started = Instant::now();
        let mut child = lb.spawn(&["backup"], &log);
        if run == 0 {
            // The first kill lands while pg_dump runs, whatever the seed.
            while !marked_processes(&marker)
                .iter()
                .any(|(_, comm)| comm == "pg_dump")
            {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "pg_dump never started: {}",
                    lb.log(&log)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        } else {
            let at = Duration::from_millis(rng.gen_range(0..whole.as_millis() as u64 + 200));
            std::thread::sleep(at);
        }
        let at = started.elapsed();
        let pid = child.id().to_string();
        let children = marked_processes(&marker);
        if children.iter().any(|(p, _)| p.to_string() != pid) {
            children_killed += 1;
        }
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
        let status = child.wait().unwrap();
        eprintln!(
            "kill {run}: after {at:?} ({}), processes then: {children:?}",
            if status.success() {
                "it had finished"
            } else {
                "killed"
            }
        );
        assert_no_survivors(
            &marker,
            &format!("kill {run} after {at:?} (seed {seed}): {}", lb.log(&log)),
        );
    }

    eprintln!("{children_killed} of {runs} kills hit lifeboat with children running");
    assert!(children_killed >= 1);

    // Every listed backup is whole.
    let listed = lb.backup_ids();
    assert!(!listed.is_empty());
    lb.verify_read_data().ok();

    // The next run starts at once: a live claim would refuse it ("locked
    // by"), so success means the killed holders' claims were taken over
    // (their processes are gone), not waited out.
    lb.run(&["backup"]).ok();

    // prune with no grace clears what the kills left.
    lb.run(&["prune", "--grace", "0s"]).ok();
    let listed = lb.backup_ids();
    rt.block_on(async {
        // S3 multipart uploads, or a folder's temp files.
        let pending = store.unfinished("").await.unwrap();
        assert!(
            pending.is_empty(),
            "unfinished writes (seed {seed}): {pending:?}"
        );
        let data = store.list("data/").await.unwrap();
        let orphans: Vec<&str> = data
            .iter()
            .map(|o| o.key.as_str())
            .filter(|k| !listed.iter().any(|id| k.contains(&format!("/{id}/"))))
            .collect();
        assert!(orphans.is_empty(), "orphans (seed {seed}): {orphans:?}");
        let locks = store.list("locks/").await.unwrap();
        assert!(locks.is_empty(), "lock claims (seed {seed}): {locks:?}");
    });
    lb.verify_read_data().ok();
    assert_no_survivors(&marker, "after the sweep");
}
