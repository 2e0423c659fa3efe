//! Drills of PostgreSQL dumps: a good backup passes every check, each kind
//! of damage fails naming its cause, scratch databases on a named server.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{
    assert_nothing_left, check_line, drill, scratch_root, scratch_yaml, set_drill, source_cluster,
};
use crate::harness::{Garage, Lifeboat, PgCluster, Repo};

// Stays long: one drill, its report checked in every place it is stored.
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
        workers: 1,
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

// Stays long: one repository, each way a drill can fail set up and checked in turn.
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

// Stays long: one named server, the leftovers of earlier drills and their cleanup checked on it.
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
