//! Restore drills against real servers: a PostgreSQL source, dumps in a
//! local folder or on Garage, throwaway scratch clusters started by
//! lifeboat itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{Garage, Lifeboat, PgCluster, Repo, Run};
use crate::unattended::signal;

/// A cluster with two databases: `shop` (orders) and `crm` (contacts).
fn source_cluster() -> PgCluster {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql("postgres", "CREATE DATABASE crm");
    pg.psql(
        "shop",
        "CREATE TABLE orders (id serial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(), total numeric NOT NULL); \
         INSERT INTO orders (total) SELECT g FROM generate_series(1, 500) g; \
         CREATE TABLE items (order_id int REFERENCES orders, sku text); \
         INSERT INTO items SELECT g, 'sku-' || g FROM generate_series(1, 500) g; \
         SELECT lo_from_bytea(0, 'a large object');",
    );
    pg.psql(
        "crm",
        "CREATE TABLE contacts (id int, name text); INSERT INTO contacts VALUES (1, 'Ada'), (2, 'Grace'), (3, 'Émilie');",
    );
    pg
}

/// Adds a `drill:` section to the test policy.
fn set_drill(lb: &Lifeboat, drill_yaml: &str) {
    let text = std::fs::read_to_string(&lb.policy).unwrap();
    let base = match text.find("\ndrill:\n") {
        Some(i) => text[..i + 1].to_string(),
        None => text,
    };
    std::fs::write(&lb.policy, format!("{base}drill:\n{drill_yaml}")).unwrap();
}

/// A scratch folder the scratch cluster's user can reach (run as root,
/// the cluster runs as postgres; tempdirs are 0700).
fn scratch_root() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("lifeboat-scratch-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn scratch_yaml(scratch: &Path) -> String {
    format!("  scratch_dir: {}\n", scratch.display())
}

fn drill(lb: &Lifeboat, extra: &[&str]) -> Run {
    let identity = lb.identity.display().to_string();
    let mut args = vec!["drill", "--identity", &identity];
    args.extend_from_slice(extra);
    lb.run(&args)
}

/// Scratch folders left in `dir`.
fn scratch_left(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// PostgreSQL processes whose command line mentions `dir`.
fn servers_in(dir: &Path) -> Vec<String> {
    let out = Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()) && !l.contains("lifeboat drill"))
        .map(str::to_string)
        .collect()
}

fn assert_nothing_left(scratch: &Path) {
    assert!(
        scratch_left(scratch).is_empty(),
        "scratch folders left: {:?}",
        scratch_left(scratch)
    );
    assert!(
        servers_in(scratch).is_empty(),
        "scratch servers left: {:?}",
        servers_in(scratch)
    );
}

#[test]
fn a_drill_of_good_dumps_passes_reports_every_check_and_leaves_nothing() {
    let garage = Garage::start();
    let pg = source_cluster();
    let lb = Lifeboat::new(Repo::Garage(&garage, "drills"), &pg, "[shop, crm]");
    let scratch_dir = scratch_root();
    let scratch = scratch_dir.path().to_path_buf();
    set_drill(
        &lb,
        &format!(
            "{}  max_rpo: 1h\n  checks:\n    - name: orders exist\n      source: main-db\n      database: shop\n      \
             sql: SELECT count(*) FROM orders WHERE created_at > now() - interval '1 day'\n      expect: '>= 500'\n    \
             - name: Ada is a contact\n      source: main-db\n      database: crm\n      \
             sql: SELECT name FROM contacts WHERE id = 1\n      expect: == Ada\n",
            scratch_yaml(&scratch)
        ),
    );
    lb.run(&["backup"]).ok();
    let backup = lb.backup_ids().pop().unwrap();

    let report_file = lb.dir.path().join("drill.md");
    let r = drill(&lb, &["--report", &report_file.display().to_string()]);
    r.ok();
    let first = r.stdout.lines().next().unwrap_or("");
    assert!(
        first.starts_with("drill PASSED:") && first.contains(&backup),
        "first line: {first}\n{}",
        r.stdout
    );
    for check in [
        "scratch target",
        "restore shop",
        "inventory shop",
        "restore crm",
        "inventory crm",
        "check: orders exist",
        "check: Ada is a contact",
        "scratch removed",
        "object hashes",
        "recovery point",
    ] {
        let line = r
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(check))
            .unwrap_or_else(|| panic!("no '{check}' line in:\n{}", r.stdout));
        assert!(line.contains(" ok "), "{line}");
    }
    assert!(
        r.stdout
            .contains("2 tables, 1000 rows, 1 large objects: all match"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("500 (expected >= 500)"), "{}", r.stdout);
    assert_nothing_left(&scratch);

    // The report: in the file, in the repository (JSON, Markdown, HTML),
    // in the history and in the catalog.
    let md = std::fs::read_to_string(&report_file).unwrap();
    assert!(
        md.contains(": PASSED") && md.contains("| check: orders exist | ok |"),
        "{md}"
    );
    let list = lb.run(&["drill", "--list", "--json"]);
    list.ok();
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let drills = v["drills"].as_array().unwrap();
    assert_eq!(drills.len(), 1, "{v}");
    let d = &drills[0];
    assert_eq!(d["passed"], true);
    assert_eq!(d["backup"], backup.as_str());
    let rto = d["rto_seconds"].as_f64().unwrap();
    let rpo = d["rpo_seconds"].as_f64().unwrap();
    assert!(rto > 0.0 && rpo > 0.0 && rpo < 3600.0, "{d}");
    eprintln!("drill RTO {rto:.2} s, RPO {rpo:.2} s");
    let id = d["id"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys: Vec<String> = rt.block_on(async {
        let store = garage.store("drills").await;
        use lifeboat::storage::ObjectStore;
        store
            .list("drills/test/main-db/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    });
    for ext in ["json", "md", "html"] {
        let key = format!("drills/test/main-db/{id}.{ext}");
        assert!(keys.contains(&key), "{key} not in {keys:?}");
    }
    let text = lb.run(&["drill", "--list"]);
    text.ok();
    assert!(
        text.stdout.contains(&id) && text.stdout.contains("passed"),
        "{}",
        text.stdout
    );
    let catalog = lb
        .env
        .iter()
        .find(|(k, _)| k == "LIFEBOAT_CATALOG")
        .map(|(_, v)| PathBuf::from(v))
        .unwrap();
    let recorded = rt.block_on(async {
        lifeboat::catalog::Catalog::open(&catalog)
            .await
            .unwrap()
            .drill_count("test", "main-db")
            .await
            .unwrap()
    });
    assert_eq!(recorded, 1);
}

/// Rewrites the inventory of `database` in a backup of a local-folder
/// repository so that its first table has one row more than the dump:
/// re-encrypted, with the manifest's digests updated, so only the row
/// count comparison can notice.
fn skew_inventory(lb: &Lifeboat, repo: &Path, backup: &str, database: &str) {
    let manifest_path = repo.join(format!("manifests/test/main-db/{backup}.json"));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let parsed: lifeboat::repository::Manifest = serde_json::from_value(manifest.clone()).unwrap();
    let artifact = parsed
        .artifacts
        .iter()
        .find(|a| a.kind == "inventory-json" && a.database.as_deref() == Some(database))
        .unwrap();
    let object = repo.join(&artifact.key);
    let identities = lifeboat::keys::Identities::load(&lb.identity).unwrap();
    let plain = lifeboat::pipeline::decode_bytes(
        &std::fs::read(&object).unwrap(),
        &artifact.expected(),
        &identities,
    )
    .unwrap();
    let mut inventory: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    let rows = inventory["tables"][0]["rows"].as_i64().unwrap();
    inventory["tables"][0]["rows"] = (rows + 1).into();
    let policy = lifeboat::policy::Policy::load(&lb.policy).unwrap();
    let settings = lifeboat::pipeline::EncodeSettings {
        compression: policy.compression,
        recipients: Arc::new(policy.encryption.all_recipients().unwrap()),
    };
    let (stored, encoded) = lifeboat::pipeline::encode_bytes(
        &serde_json::to_vec(&inventory).unwrap(),
        &settings,
        &artifact.key,
    )
    .unwrap();
    std::fs::write(&object, stored).unwrap();
    for a in manifest["artifacts"].as_array_mut().unwrap() {
        if a["key"] == artifact.key.as_str() {
            a["stored"] = serde_json::to_value(&encoded.stored).unwrap();
            a["plaintext"] = serde_json::to_value(&encoded.plaintext).unwrap();
        }
    }
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_drill_fails_naming_the_cause() {
    let pg = source_cluster();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repo_dir.path().join("repo");
    let lb = Lifeboat::new(Repo::Local(repo.clone()), &pg, "[shop]");
    let scratch_dir = scratch_root();
    let scratch = scratch_dir.path().to_path_buf();
    lb.run(&["backup"]).ok();
    let good = lb.backup_ids().pop().unwrap();

    // A user check that does not hold.
    set_drill(
        &lb,
        &format!(
            "{}  checks:\n    - name: many orders\n      source: main-db\n      \
             sql: SELECT count(*) FROM orders\n      expect: '> 1000'\n",
            scratch_yaml(&scratch)
        ),
    );
    let r = drill(&lb, &[]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout.lines().next().unwrap(),
        "drill FAILED: check: many orders: got 500, expected > 1000"
    );
    assert!(
        r.stdout.contains("inventory shop"),
        "the other checks ran: {}",
        r.stdout
    );
    assert_nothing_left(&scratch);

    // A scratch target that cannot start: its port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    set_drill(
        &lb,
        &format!("{}  postgres:\n    port: {port}\n", scratch_yaml(&scratch)),
    );
    let r = drill(&lb, &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let first = r.stdout.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "drill FAILED: scratch target: the scratch PostgreSQL server did not start on 127.0.0.1:{port}"
        )) && first.contains("the port is in use"),
        "{first}"
    );
    assert!(
        r.stdout.contains("restore shop") && r.stdout.contains("skipped"),
        "{}",
        r.stdout
    );
    drop(taken);
    assert_nothing_left(&scratch);

    // ... or its binaries are missing.
    set_drill(
        &lb,
        &format!(
            "{}  postgres:\n    bin_dir: /nonexistent/postgresql/bin\n",
            scratch_yaml(&scratch)
        ),
    );
    let r = drill(&lb, &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let first = r.stdout.lines().next().unwrap();
    assert!(
        first.starts_with("drill FAILED: scratch target: no PostgreSQL server binaries")
            && first.contains("/nonexistent/postgresql/bin")
            && first.contains("drill.postgres.bin_dir"),
        "{first}"
    );
    assert_nothing_left(&scratch);
    set_drill(&lb, &scratch_yaml(&scratch));

    // A table whose restored row count differs from the inventory.
    lb.run(&["backup"]).ok();
    let skewed = lb.backup_ids().pop().unwrap();
    skew_inventory(&lb, &repo, &skewed, "shop");
    let r = drill(&lb, &["--backup", &skewed]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    let first = r.stdout.lines().next().unwrap();
    assert!(
        first.starts_with("drill FAILED: inventory shop: public.") && first.contains("rows, found"),
        "{first}"
    );
    // Its objects are intact: only the counts disagree.
    assert!(
        r.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("object hashes") && l.contains(" ok ")),
        "{}",
        r.stdout
    );
    assert_nothing_left(&scratch);

    // An artifact with one byte changed.
    lb.run(&["backup"]).ok();
    let damaged = lb.backup_ids().pop().unwrap();
    let dump = walk(&repo.join(format!("data/test/main-db/{damaged}")))
        .into_iter()
        .find(|p| p.to_string_lossy().contains("db-shop.pgdump"))
        .expect("the dump object");
    let mut bytes = std::fs::read(&dump).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&dump, bytes).unwrap();
    let r = drill(&lb, &["--backup", &damaged]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    let first = r.stdout.lines().next().unwrap();
    assert!(first.starts_with("drill FAILED: restore shop:"), "{first}");
    let hashes = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("object hashes"))
        .unwrap();
    let key = dump.strip_prefix(&repo).unwrap().display().to_string();
    assert!(
        hashes.contains("FAILED") && hashes.contains(&key) && hashes.contains("Corrupt"),
        "{hashes}"
    );
    assert_nothing_left(&scratch);

    // The history has all of them; the good backup still drills clean.
    drill(&lb, &["--backup", &good]).ok();
    let list = lb.run(&["drill", "--list"]);
    list.ok();
    assert_eq!(list.stdout.matches("FAILED").count(), 5, "{}", list.stdout);
    assert_eq!(list.stdout.matches("passed").count(), 1, "{}", list.stdout);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

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

/// The line the CLI prints for a check: `  name  status  detail`.
fn check_line<'a>(r: &'a Run, name: &str) -> &'a str {
    r.stdout
        .lines()
        .find(|l| {
            l.trim_start()
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with("  "))
        })
        .unwrap_or_else(|| panic!("no '{name}' line in\n{}", r.stdout))
}

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
                lifeboat::wal::archive::list(&store as &dyn ObjectStore, "test", "main-db")
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

#[test]
fn a_kubernetes_drill_restores_into_scratch_namespaces_and_deletes_them() {
    use crate::kube_server::KubeServer;
    use serde_json::{json, Value};
    let server = KubeServer::start();
    server.seed_realistic("prod");
    // Admission rules keyed on namespace labels must see the drill's
    // namespace as they see production's.
    let mut ns = server.get("v1", "Namespace", None, "prod").unwrap();
    ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = json!("restricted");
    ns["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
    ns["metadata"]["annotations"] = json!({"owner": "payments@example.com"});
    server.insert(ns);
    let repo = tempfile::tempdir().unwrap();
    let lb = Lifeboat::with_source(Repo::Local(repo.path().join("repo")), "", &[]);
    let kubeconfig = server.kubeconfig(lb.dir.path());
    let policy = std::fs::read_to_string(&lb.policy).unwrap();
    std::fs::write(
        &lb.policy,
        policy
            + &format!(
                "  - name: cluster-config\n    kubernetes:\n      kubeconfig: {}\n      context: test\n      namespaces: [prod]\n",
                kubeconfig.display()
            ),
    )
    .unwrap();
    lb.run(&["backup"]).ok();
    let deployments = server
        .objects_in("prod")
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .count();
    assert!(deployments > 0);
    let set_check = |expect: String| {
        set_drill(
            &lb,
            &format!(
                "  kubernetes:\n    service_account: lifeboat/lifeboat-drill\n  checks:\n    - name: deployments\n      source: cluster-config\n      kind: Deployment\n      expect: {expect}\n"
            ),
        )
    };
    set_check(format!("== {deployments}"));
    // What a drill killed on this host left: its owner's pid is a process
    // with another start time now.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let left = "lifeboat-drill-20200101t000000z-dead";
    server.insert(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {
            "name": left,
            "labels": {"app.kubernetes.io/managed-by": "lifeboat-drill"},
            "annotations": {"lifeboat.dev/drill-owner":
                format!("{{\"host\":\"{host}\",\"pid\":1,\"process_start\":999999999}}")}
        }
    }));
    server.clear_requests();

    let r = drill(&lb, &["--source", "cluster-config"]);
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
        "objects",
        "check: deployments",
        "scratch removed",
        "object hashes",
    ] {
        assert!(check_line(&r, name).contains("ok"), "{name}:\n{}", r.stdout);
    }
    // Skips are counted per reason: the Ingress by the harmless-copy
    // rules, and nothing else (the scratch namespace holds what the
    // backup's Namespace has, so it is not "exists and differs").
    assert!(
        check_line(&r, "restore").contains("1 skipped (1 harmless-copy rules)"),
        "{}",
        r.stdout
    );
    let scratch: Vec<Value> = server
        .deleted_namespaces()
        .into_iter()
        .filter(|n| {
            n["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("lifeboat-drill-")
                && n["metadata"]["name"] != left
        })
        .collect();
    assert_eq!(scratch.len(), 1, "{scratch:?}");
    let labels = &scratch[0]["metadata"]["labels"];
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels["team"], "payments");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "lifeboat-drill");
    assert_eq!(
        scratch[0]["metadata"]["annotations"]["owner"],
        "payments@example.com"
    );
    assert!(
        r.stdout.contains(&format!("namespace/{left} (removed)")),
        "{}",
        r.stdout
    );
    // Objects went into the scratch namespace only, and it is gone.
    let requests = server.requests();
    let writes: Vec<&String> = requests.iter().filter(|q| !q.starts_with("GET")).collect();
    assert!(!writes.is_empty());
    // The drill's account gets the scratch role before anything is restored.
    let bound = writes
        .iter()
        .position(|w| w.contains("/rolebindings/lifeboat-drill"))
        .unwrap_or_else(|| panic!("no RoleBinding for the drill account: {writes:?}"));
    let first_object = writes
        .iter()
        .position(|w| w.contains("/configmaps/") || w.contains("/deployments/"))
        .unwrap();
    assert!(bound < first_object, "{writes:?}");
    for w in &writes {
        assert!(
            w.contains("/namespaces/lifeboat-drill-"),
            "a write outside the scratch namespaces: {w}"
        );
    }
    let scratch_left: Vec<String> = server
        .objects()
        .iter()
        // Deleted: gone, or Terminating for a moment as on a real cluster.
        .filter(|o| o["kind"] == "Namespace" && o["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .filter(|n| n.starts_with("lifeboat-drill-"))
        .collect();
    assert!(scratch_left.is_empty(), "{scratch_left:?}");
    assert_eq!(
        server
            .objects_in("prod")
            .iter()
            .filter(|o| o["kind"] == "Deployment")
            .count(),
        deployments,
        "the source namespace is untouched"
    );

    // A check that does not hold fails the drill; nothing stays either.
    set_check(format!("== {}", deployments + 1));
    let r = drill(&lb, &["--source", "cluster-config"]);
    r.fails_with(3, &[]);
    let first = r.stdout.lines().next().unwrap_or("");
    assert!(
        first.starts_with("drill FAILED: check: deployments: Deployment: got"),
        "{}",
        r.stdout
    );
    assert!(server
        .objects()
        .iter()
        .filter(|o| o["kind"] == "Namespace" && o["metadata"]["deletionTimestamp"].is_null())
        .all(|o| !o["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .starts_with("lifeboat-drill-")));
}

#[test]
fn a_drill_into_scratch_databases_on_a_named_server_drops_them() {
    let pg = source_cluster();
    let server = PgCluster::start_with_password("drill-server-pw");
    server.psql("postgres", "CREATE DATABASE keep_me");
    let repo = tempfile::tempdir().unwrap();
    let lb = Lifeboat::new(Repo::Local(repo.path().join("repo")), &pg, "[shop, crm]");
    let drill_yaml = |user: &str| {
        format!(
            "  postgres:\n    server:\n      host: 127.0.0.1\n      port: {}\n      user: {user}\n      \
             password: {{ env: TEST_DRILL_PW }}\n  checks:\n    - name: orders exist\n      source: main-db\n      \
             database: shop\n      sql: SELECT count(*) FROM orders\n      expect: == 500\n",
            server.port
        )
    };
    set_drill(&lb, &drill_yaml("postgres"));
    lb.run(&["backup"]).ok();
    // What a drill killed on this host left on the server.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let left = "lifeboat_drill_20200101t000000z_dead_shop";
    let leave = |name: &str, host: &str, created: chrono::DateTime<chrono::Utc>| {
        server.psql("postgres", &format!("CREATE DATABASE {name}"));
        server.psql(
            "postgres",
            &format!(
                "COMMENT ON DATABASE {name} IS '{{\"host\":\"{host}\",\"pid\":1,\"process_start\":999999999,\"drill\":\"x\",\"created\":\"{}\"}}'",
                created.to_rfc3339()
            ),
        );
    };
    leave(left, &host, chrono::Utc::now());
    // Another pod's: abandoned after a day, running (as far as anyone
    // here can tell) before.
    let other_old = "lifeboat_drill_20200101t000000z_pod_b_shop";
    let other_new = "lifeboat_drill_20200101t000000z_pod_c_shop";
    leave(
        other_old,
        "pod-b",
        chrono::Utc::now() - chrono::Duration::hours(30),
    );
    leave(
        other_new,
        "pod-c",
        chrono::Utc::now() - chrono::Duration::hours(1),
    );
    let identity = lb.identity.display().to_string();
    let run = |pw: &str| {
        lb.run_env(
            &["drill", "--identity", &identity],
            &[("TEST_DRILL_PW", pw)],
        )
    };

    let r = run("drill-server-pw");
    r.ok();
    eprintln!("{}", r.stdout);
    let first = r.stdout.lines().next().unwrap_or("");
    assert!(
        first.starts_with("drill PASSED:"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let target = check_line(&r, "scratch target");
    assert!(
        target.contains("lifeboat_drill_")
            && target.contains(&format!("127.0.0.1:{}", server.port)),
        "{target}"
    );
    for name in [
        "restore shop",
        "inventory shop",
        "restore crm",
        "inventory crm",
        "check: orders exist",
        "scratch removed",
        "object hashes",
    ] {
        assert!(check_line(&r, name).contains("ok"), "{name}:\n{}", r.stdout);
    }
    for gone in [left, other_old] {
        assert!(
            r.stdout.contains(&format!("database/{gone} (removed)")),
            "{}",
            r.stdout
        );
    }
    assert!(!r.stdout.contains(other_new), "{}", r.stdout);
    assert!(!format!("{}{}", r.stdout, r.stderr).contains("drill-server-pw"));
    let scratch_dbs = |s: &PgCluster| {
        s.psql(
            "postgres",
            "SELECT coalesce(string_agg(datname, ','), '') FROM pg_database WHERE datname LIKE 'lifeboat%'",
        )
    };
    assert_eq!(scratch_dbs(&server), other_new, "scratch databases left");
    server.psql("postgres", &format!("DROP DATABASE {other_new}"));
    assert_eq!(
        server.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'keep_me'"
        ),
        "1"
    );
    assert_eq!(scratch_dbs(&pg), "", "nothing on the source");

    // A role that may not create databases: the drill cannot run.
    server.psql("postgres", "CREATE ROLE weak LOGIN PASSWORD 'weak-pw'");
    set_drill(&lb, &drill_yaml("weak"));
    run("weak-pw").fails_with(1, &["drill.postgres.server", "CREATEDB"]);
    assert_eq!(scratch_dbs(&server), "");
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
