//! Bad input and broken infrastructure: each fails with a clear message and
//! a meaningful exit code, and nothing is listed as a backup.

use std::time::{Duration, Instant};

use lifeboat::storage::ObjectStore;

use crate::harness::{free_port, Garage, Lifeboat, PgCluster, Repo};

fn local_lb(pg: &PgCluster) -> (tempfile::TempDir, Lifeboat) {
    let repo = tempfile::tempdir().unwrap();
    let lb = Lifeboat::new(Repo::Local(repo.path().join("repo")), pg, "[app]");
    (repo, lb)
}

fn small_db(pg: &PgCluster) {
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
    );
}

#[test]
fn invalid_policies_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Lifeboat::with_source(
        Repo::Local(dir.path().join("r")),
        "  - name: x\n    postgres: {}\n",
        &[],
    );
    let text = std::fs::read_to_string(&lb.policy).unwrap();
    let bad = text.replace("name: test\n", "name: test\nretenion:\n  keep_last: 3\n");
    std::fs::write(&lb.policy, bad).unwrap();
    let p = lb.policy.to_str().unwrap();
    let r = lb.run(&["policy", "check", p]);
    r.fails_with(2, &[&format!("{p}:2:1"), "unknown field `retenion`"]);
    // A backup with the broken policy fails the same way and touches nothing.
    lb.run(&["backup"])
        .fails_with(2, &["unknown field `retenion`"]);
    assert!(!dir.path().join("r").exists(), "no repository was created");

    std::fs::write(
        &lb.policy,
        text.replace("  url:", "  part_size: 1MiB\n  url:"),
    )
    .unwrap();
    lb.run(&["policy", "check", p])
        .fails_with(2, &["part_size", "between 8MiB and 5GiB"]);
    std::fs::write(&lb.policy, text.clone() + "schedule: \"0 2 * *\"\n").unwrap();
    lb.run(&["policy", "check", p])
        .fails_with(2, &[":9:", "has 4 fields"]);
    std::fs::write(&lb.policy, text).unwrap();
    lb.run(&["policy", "check", p]).ok();
}

#[test]
fn unknown_source_is_refused_with_the_known_ones() {
    let pg = PgCluster::start();
    let (_repo, lb) = local_lb(&pg);
    lb.run(&["backup", "--source", "nope"])
        .fails_with(2, &["no source named 'nope'", "main-db"]);
    lb.run(&[
        "restore",
        "--source",
        "nope",
        "--to",
        "postgres://x@127.0.0.1/db",
        "--dry-run",
    ])
    .fails_with(2, &["no source named 'nope'"]);
}

#[test]
fn wrong_identity_and_damaged_or_missing_objects() {
    let pg = PgCluster::start();
    small_db(&pg);
    let (repo, lb) = local_lb(&pg);
    lb.run(&["backup"]).ok();
    let pw = [("PGPASSWORD", pg.password.as_str())];

    // Wrong identity: refused before the target is touched.
    let other = lb.dir.path().join("other.key");
    lifeboat::keys::generate(&other).unwrap();
    lb.run_env(
        &[
            "restore",
            "--source",
            "main-db",
            "--identity",
            other.to_str().unwrap(),
            "--to",
            &pg.url("r1"),
        ],
        &pw,
    )
    .fails_with(6, &["no identity in", "can decrypt", "inventory-app"]);
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'r1'"
        ),
        "0"
    );
    lb.run(&[
        "verify",
        "--read-data",
        "--identity",
        other.to_str().unwrap(),
    ])
    .fails_with(6, &["WRONG KEY"]);

    // One byte changed in the dump object.
    let manifest: serde_json::Value =
        serde_json::from_str(&lb.run(&["list", "--json"]).stdout).unwrap();
    let dump_key = manifest[0]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "pg-dump-custom")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let path = repo.path().join("repo").join(&dump_key);
    let original = std::fs::read(&path).unwrap();
    let mut bytes = original.clone();
    let i = bytes.len() - 200;
    bytes[i] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    lb.run(&["verify"]).fails_with(3, &["CORRUPT", &dump_key]);
    lb.verify_read_data().fails_with(3, &["CORRUPT", &dump_key]);
    let r = lb.restore(&pg, "r2", &[]);
    r.fails_with(3, &["corrupt", &dump_key]);
    // The single transaction rolled back: the new database holds nothing.
    assert_eq!(
        pg.psql(
            "r2",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );

    // The object missing.
    std::fs::remove_file(&path).unwrap();
    lb.run(&["verify"]).fails_with(4, &["MISSING", &dump_key]);
    lb.restore(&pg, "r3", &[])
        .fails_with(4, &["not found", &dump_key]);
    // Checked before the target was touched.
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'r3'"
        ),
        "0"
    );

    // Restored, it verifies again.
    std::fs::write(&path, &original).unwrap();
    lb.verify_read_data().ok();
}

#[test]
fn a_damaged_manifest_is_reported_and_never_passed_over() {
    let pg = PgCluster::start();
    small_db(&pg);
    let (repo, lb) = local_lb(&pg);
    lb.run(&["backup"]).ok();
    lb.run(&["backup"]).ok();
    let ids = lb.backup_ids();
    assert_eq!(ids.len(), 2);
    let newest = repo
        .path()
        .join(format!("repo/manifests/test/main-db/{}.json", ids[1]));
    let text = std::fs::read_to_string(&newest).unwrap();
    std::fs::write(&newest, &text[..text.len() / 2]).unwrap();

    // list shows the readable backup and fails on the damaged one.
    let r = lb.run(&["list"]);
    r.fails_with(3, &["cannot be parsed", &ids[1]]);
    assert!(r.stdout.contains(&ids[0]), "{}", r.stdout);
    // verify reports it as corrupt.
    lb.run(&["verify"])
        .fails_with(3, &["CORRUPT", &format!("{}.json", ids[1])]);
    // restore of "latest" does not quietly use the older backup...
    lb.restore(&pg, "r", &["--dry-run"])
        .fails_with(3, &["newest backup's manifest", "--backup ID"]);
    // ...but the older one can be chosen by id.
    lb.restore(&pg, "r", &["--backup", &ids[0]]).ok();
}

#[test]
fn one_failing_source_does_not_stop_the_others() {
    let pg = PgCluster::start();
    small_db(&pg);
    let repo = tempfile::tempdir().unwrap();
    let sources = format!(
        "  - name: down-db\n    postgres:\n      host: 127.0.0.1\n      port: {}\n      password: {{ env: TEST_PGPASSWORD }}\n{}",
        free_port(),
        crate::harness::pg_source_yaml(&pg, "[app]", None)
    );
    let lb = Lifeboat::with_source(
        Repo::Local(repo.path().join("repo")),
        &sources,
        &[("TEST_PGPASSWORD", &pg.password)],
    );
    let r = lb.run(&["backup"]);
    r.fails_with(
        1,
        &[
            "backup of source 'down-db' failed",
            "cannot connect to PostgreSQL",
        ],
    );
    assert!(r.stdout.contains("main-db: backup"), "{}", r.stdout);
    let listed: serde_json::Value =
        serde_json::from_str(&lb.run(&["list", "--json"]).stdout).unwrap();
    let sources: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["main-db"]);
}

#[test]
fn unreachable_s3_and_wrong_credentials_and_missing_bucket() {
    let pg = PgCluster::start();
    small_db(&pg);
    let garage = Garage::start();

    let lb = Lifeboat::new(Repo::Garage(&garage, "p"), &pg, "[app]");
    let good = std::fs::read_to_string(&lb.policy).unwrap();

    // Nothing listens on this port.
    let dead = format!("http://127.0.0.1:{}", free_port());
    std::fs::write(&lb.policy, good.replace(&garage.endpoint(), &dead)).unwrap();
    lb.run(&["backup"])
        .fails_with(1, &["cannot reach S3 endpoint", &dead]);

    std::fs::write(&lb.policy, &good).unwrap();
    lb.run_env(
        &["backup"],
        &[(
            "TEST_S3_SECRET",
            "0000000000000000000000000000000000000000000000000000000000000000",
        )],
    )
    .fails_with(1, &["refused the credentials", "lifeboat-test"]);
    lb.run_env(
        &["backup"],
        &[("TEST_S3_KEY", "GK000000000000000000000000")],
    )
    .fails_with(1, &["refused the credentials"]);

    std::fs::write(
        &lb.policy,
        good.replace("s3://lifeboat-test/", "s3://no-such-bucket/"),
    )
    .unwrap();
    lb.run(&["backup"])
        .fails_with(1, &["bucket no-such-bucket does not exist"]);

    std::fs::write(&lb.policy, &good).unwrap();
    assert!(lb.backup_ids().is_empty());
    lb.run(&["backup"]).ok();
    assert_eq!(lb.backup_ids().len(), 1);
}

/// Starts `lifeboat backup` with stdout and stderr going to files (a pipe
/// nobody reads could fill up and stall it).
fn spawn_backup(lb: &Lifeboat) -> (std::process::Child, std::path::PathBuf) {
    let err_path = lb
        .dir
        .path()
        .join(format!("stderr-{}", rand::random::<u32>()));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    cmd.args(["backup", "--policy"]).arg(&lb.policy);
    cmd.env("RUST_LOG", "info").env_remove("PGPASSWORD");
    for (k, v) in &lb.env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    (child, err_path)
}

/// Waits until the dump's multipart upload is visible in the bucket.
fn wait_for_upload(rt: &tokio::runtime::Runtime, store: &lifeboat::storage::S3Store) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending = rt.block_on(store.list_pending_uploads()).unwrap();
        if pending.iter().any(|u| u.key.contains("db-app.pgdump")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the dump never started a multipart upload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_nothing_left(rt: &tokio::runtime::Runtime, store: &lifeboat::storage::S3Store) {
    rt.block_on(async {
        assert!(
            store.list_pending_uploads().await.unwrap().is_empty(),
            "multipart upload aborted"
        );
        let objects = store.list("").await.unwrap();
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        assert!(
            keys.iter().all(|k| !k.starts_with("manifests/")),
            "no manifest: {keys:?}"
        );
        assert!(
            keys.iter().all(|k| !k.starts_with("data/")),
            "artifacts of the failed backup deleted: {keys:?}"
        );
    });
}

#[test]
fn database_killed_or_lifeboat_stopped_mid_dump_leaves_no_backup_and_no_upload() {
    let mut pg = PgCluster::start();
    let garage = Garage::start();
    pg.psql("postgres", "CREATE DATABASE app");
    // Random data compresses badly, so the dump needs many parts.
    pg.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(random()::text) AS v \
         FROM generate_series(1, 3000000) g",
    );
    let lb = Lifeboat::new(Repo::Garage(&garage, "killed"), &pg, "[app]");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(garage.store("killed"));

    // SIGTERM to lifeboat (a pod being evicted): it stops cleanly.
    let (child, err_path) = spawn_backup(&lb);
    wait_for_upload(&rt, &store);
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(out.status.code(), Some(143), "stderr: {stderr}");
    assert!(
        stderr.contains("interrupted by SIGTERM"),
        "stderr: {stderr}"
    );
    assert_nothing_left(&rt, &store);
    assert!(lb.backup_ids().is_empty());

    // The database server dies in the middle of the dump.
    let (child, err_path) = spawn_backup(&lb);
    wait_for_upload(&rt, &store);
    pg.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("pg_dump") && stderr.contains("nothing was listed"),
        "stderr: {stderr}"
    );
    assert_nothing_left(&rt, &store);
    assert!(lb.backup_ids().is_empty());
}

/// A backup killed with SIGKILL leaves its lock claim behind; the next run
/// on the same host sees that the claim's process is gone (pid and start
/// time) and takes the lock at once instead of waiting out the lease.
#[test]
fn a_lock_left_by_a_killed_backup_on_this_host_is_taken_over_at_once() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 400000) g",
    );
    let repo = tempfile::tempdir().unwrap();
    let lb = Lifeboat::new(Repo::Local(repo.path().join("repo")), &pg, "[app]");
    let locks = repo.path().join("repo/locks");
    let claims = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        walk(dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect()
    };
    let mut backup = lb.spawn(&["backup"], "killed.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while claims(&locks).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no lock claim: {}",
            lb.log("killed.log")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    crate::unattended::signal(&backup, "-KILL");
    backup.wait().unwrap();
    assert_eq!(claims(&locks).len(), 1, "the killed backup's claim stays");

    let r = lb.run(&["backup"]);
    r.ok();
    assert!(r.stderr.contains("whose process is gone"), "{}", r.stderr);
    assert!(claims(&locks).is_empty(), "released");
}

/// An S3 endpoint that accepts connections and never answers (a half-dead
/// load balancer, a partition): every command fails within its deadlines,
/// naming the endpoint and the operation, instead of hanging.
#[test]
fn a_black_holed_s3_endpoint_fails_commands_instead_of_hanging_them() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts, reads and discards, never writes; keeps every connection.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            let mut c = conn.try_clone().unwrap();
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c, &mut std::io::sink());
            });
            held.push(conn);
        }
    });
    let pg = PgCluster::start();
    let repo = tempfile::tempdir().unwrap();
    let local = repo.path().join("repo");
    let mut lb = Lifeboat::new(Repo::Local(local.clone()), &pg, "[postgres]");
    let policy = std::fs::read_to_string(&lb.policy).unwrap().replace(
        &format!("  url: {}\n", local.display()),
        &format!(
            "  url: s3://bucket/p\n  endpoint: http://127.0.0.1:{port}\n  region: x\n  path_style: true\n  \
             access_key_id: {{ env: TEST_S3_KEY }}\n  secret_access_key: {{ env: TEST_S3_SECRET }}\n  \
             request_timeout: 1s\n"
        ),
    );
    std::fs::write(&lb.policy, policy).unwrap();
    lb.env
        .push(("TEST_S3_KEY".into(), "GK000000000000000000".into()));
    lb.env.push(("TEST_S3_SECRET".into(), "0".repeat(40)));
    for (args, operation) in [
        (&["list"][..], "HeadBucket on bucket bucket"),
        (&["backup"][..], "on bucket bucket"),
    ] {
        let mut child = lb.spawn(args, "blackhole.log");
        let deadline = Instant::now() + Duration::from_secs(180);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("lifeboat {args:?} hung: {}", lb.log("blackhole.log"));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let log = lb.log("blackhole.log");
        assert_eq!(status.code(), Some(1), "{args:?}: {log}");
        assert!(
            log.contains(&format!(
                "S3 endpoint http://127.0.0.1:{port} did not answer"
            )) && log.contains(operation)
                && log.contains("repository.request_timeout"),
            "{args:?}: {log}"
        );
    }
}

/// A full bucket and a key that may not write are told apart from wrong
/// credentials, each with the advice that works, and leave nothing listed.
#[test]
fn a_full_bucket_and_a_read_only_key_are_named_as_such() {
    let garage = Garage::start();
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g",
    );
    let lb = Lifeboat::new(Repo::Garage(&garage, "quota"), &pg, "[app]");
    garage.admin(&["bucket", "set-quotas", "--max-size", "1MiB", &garage.bucket]);
    let r = lb.run(&["backup"]);
    r.fails_with(
        1,
        &[
            &format!("bucket {} at", garage.bucket),
            "is full",
            "quota",
            "lifeboat prune",
        ],
    );
    let listed = lb.run(&["list", "--json"]);
    listed.ok();
    assert!(
        !listed.stdout.contains("\"id\""),
        "nothing listed: {}",
        listed.stdout
    );

    garage.admin(&["bucket", "set-quotas", "--max-size", "none", &garage.bucket]);
    garage.admin(&["bucket", "deny", "--write", &garage.bucket, "--key", "test"]);
    let r = lb.run(&["backup"]);
    r.fails_with(
        1,
        &["denied PutObject", "not allowed to write", "s3:PutObject"],
    );
    assert!(
        !r.stderr.contains("refused the credentials"),
        "{}",
        r.stderr
    );
}

/// A backup that stops moving data without any deadline firing (here a
/// pg_dump queued behind a migration's ACCESS EXCLUSIVE lock) is stopped
/// after `repository.stall_timeout`, its lock is let go instead of being
/// renewed forever, and nothing is listed; the next run works.
#[test]
fn a_backup_that_stops_moving_data_is_stopped_and_lets_its_lock_go() {
    let pg = PgCluster::start();
    small_db(&pg);
    let (repo, lb) = local_lb(&pg);
    let policy = std::fs::read_to_string(&lb.policy).unwrap().replace(
        "repository:\n",
        "repository:\n  lock_lease: 6s\n  stall_timeout: 5s\n",
    );
    std::fs::write(&lb.policy, policy).unwrap();

    let migration = pg.lock_table("app", "t");
    let started = Instant::now();
    let mut child = lb.spawn(&["backup"], "stalled.log");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!(
                "the stalled backup was never stopped: {}",
                lb.log("stalled.log")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = lb.log("stalled.log");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("made no progress for") && log.contains("repository.stall_timeout"),
        "{log}"
    );
    // Its claim is gone and nothing is listed.
    let claims = walk(&repo.path().join("repo/locks"));
    assert!(claims.is_empty(), "{claims:?}");
    assert!(lb.backup_ids().is_empty());

    // The migration ends: the next backup runs.
    drop(migration);
    lb.run(&["backup"]).ok();
    assert_eq!(lb.backup_ids().len(), 1);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
