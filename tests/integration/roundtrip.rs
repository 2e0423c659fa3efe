//! Back up, drop, restore, compare: the restored database equals the original.

use std::process::Command;

use crate::harness::{rich_fixture, Garage, Lifeboat, PgCluster, Repo};

fn assert_same_database(
    pg: &PgCluster,
    original_schema: &str,
    original_sums: &[(String, String)],
    restored: &str,
) {
    let schema = pg.schema_dump(restored);
    assert!(
        schema == original_schema,
        "schema of {restored} differs from the original"
    );
    assert_eq!(
        pg.checksums(restored),
        original_sums,
        "data of {restored} differs"
    );
}

#[test]
fn rich_database_round_trip_through_a_local_folder() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql_file("shop", &rich_fixture());
    let repo_dir = tempfile::tempdir().unwrap();
    let lb = Lifeboat::new(Repo::Local(repo_dir.path().join("repo")), &pg, "[shop]");

    lb.run(&["backup"]).ok();
    let ids = lb.backup_ids();
    assert_eq!(ids.len(), 1);

    let schema = pg.schema_dump("shop");
    let sums = pg.checksums("shop");
    assert!(sums.len() > 45, "fixture has many tables: {sums:?}");
    pg.psql("postgres", "DROP DATABASE shop");

    let target = pg.url("shop");
    let plan = lb.run_env(
        &[
            "restore",
            "--source",
            "main-db",
            "--to",
            &target,
            "--dry-run",
        ],
        &[("PGPASSWORD", &pg.password)],
    );
    plan.ok();
    assert!(
        plan.stdout.contains("does not exist, will be created"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains(&ids[0]), "{}", plan.stdout);
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'shop'"
        ),
        "0",
        "dry run changed nothing"
    );

    let r = lb.restore(&pg, "shop", &["--backup", &ids[0], "--globals"]);
    r.ok();
    assert!(r.stdout.contains("all match the backup"), "{}", r.stdout);
    // Database-level settings and locale came back too.
    let props = pg.psql(
        "shop",
        "SELECT array_to_string(s.setconfig, ';') || ' ' || pg_encoding_to_char(d.encoding) FROM pg_database d \
         JOIN pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = 0 WHERE d.datname = 'shop'",
    );
    assert_eq!(
        props,
        "search_path=shop, public;statement_timeout=5min UTF8"
    );
    assert_same_database(&pg, &schema, &sums, "shop");

    // Restoring again into the now non-empty database is refused...
    lb.restore(&pg, "shop", &[])
        .fails_with(5, &["is not empty", "--clean"]);
    // ...unless --clean is given.
    pg.psql("shop", "DELETE FROM audit.t1");
    lb.restore(&pg, "shop", &["--clean"]).ok();
    assert_same_database(&pg, &schema, &sums, "shop");

    lb.verify_read_data().ok();
}

#[test]
fn large_database_round_trip_through_garage_with_parallel_restore() {
    let pg = PgCluster::start();
    let garage = Garage::start();
    pg.psql("postgres", "CREATE DATABASE big");
    pg.psql_file("big", &rich_fixture());
    // About 300 MB of table data, part random (incompressible), so the
    // stored dump spans many 8 MiB multipart parts.
    pg.psql(
        "big",
        "CREATE TABLE public.payload AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS noise, \
         repeat(md5(g::text), 6) AS filler, now() AS at FROM generate_series(1, 1000000) g; \
         ALTER TABLE public.payload ADD PRIMARY KEY (id);",
    );
    let size: i64 = pg
        .psql("big", "SELECT pg_database_size('big')")
        .parse()
        .unwrap();
    assert!(size > 250_000_000, "test database is {size} bytes");

    let lb = Lifeboat::new(Repo::Garage(&garage, "large"), &pg, "all");
    let out = lb.run(&["backup", "--json"]);
    out.ok();
    let manifests: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let dump = manifests[0]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["database"] == "big" && a["kind"] == "pg-dump-custom")
        .unwrap()
        .clone();
    assert!(
        dump["stored"]["size"].as_u64().unwrap() > 3 * 8 * 1024 * 1024,
        "{dump}"
    );
    // Every database of the cluster is in the backup ("databases: all").
    let dbs: Vec<&str> = manifests[0]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["database"].as_str())
        .collect();
    assert!(dbs.contains(&"postgres") && dbs.contains(&"big"), "{dbs:?}");

    let schema = pg.schema_dump("big");
    let sums = pg.checksums("big");
    pg.psql("postgres", "DROP DATABASE big");
    let r = lb.restore(&pg, "big", &["--database", "big", "--jobs", "2"]);
    r.ok();
    assert!(r.stdout.contains("all match the backup"), "{}", r.stdout);
    assert_same_database(&pg, &schema, &sums, "big");

    // Several databases and no --database: the user is asked to choose.
    lb.restore(&pg, "x", &["--dry-run"])
        .fails_with(2, &["holds several databases", "--database"]);
}

/// The README's promise: with only age, zstd and pg_restore, a dump restores.
#[test]
fn a_dump_restores_with_only_age_zstd_and_pg_restore() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql_file("shop", &rich_fixture());
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repo_dir.path().join("repo");
    let lb = Lifeboat::new(Repo::Local(repo.clone()), &pg, "[shop]");
    lb.run(&["backup"]).ok();
    let schema = pg.schema_dump("shop");
    let sums = pg.checksums("shop");

    // Find the object through the manifest, as the runbook says.
    let manifest_dir = repo.join("manifests/test/main-db");
    let manifest_file = std::fs::read_dir(&manifest_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_file).unwrap()).unwrap();
    let dump = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "pg-dump-custom")
        .unwrap();
    let object = repo.join(dump["key"].as_str().unwrap());

    // sha256sum of the stored object matches the manifest.
    let sha = Command::new("sha256sum").arg(&object).output().unwrap();
    let sha = String::from_utf8(sha.stdout).unwrap();
    assert_eq!(
        sha.split_whitespace().next().unwrap(),
        dump["stored"]["sha256"].as_str().unwrap()
    );

    pg.psql("postgres", "CREATE DATABASE shop_manual");
    let script = format!(
        "set -euo pipefail; age -d -i '{}' '{}' | zstd -d | '{}' --dbname=shop_manual --exit-on-error --single-transaction",
        lb.identity.display(),
        object.display(),
        pg.bin.join("pg_restore").display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PGPASSWORD", &pg.password)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port.to_string())
        .env("PGUSER", "postgres")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "manual restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_database(&pg, &schema, &sums, "shop_manual");
}
