//! Restore drills against real servers: a PostgreSQL source, dumps in a
//! local folder or on Garage, throwaway scratch clusters started by
//! lifeboat itself.
//!
//! Layout: `postgres.rs` (drills of PostgreSQL dumps, passing and failing,
//! in scratch clusters or databases), `replay.rs` (WAL and binlog replay),
//! `kubernetes.rs` (scratch namespaces), `interrupted.rs` (drills stopped
//! or killed), `daemon.rs` (scheduled drills); the shared helpers are here.

mod daemon;
mod interrupted;
mod kubernetes;
mod postgres;
mod replay;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Lifeboat, PgCluster, Run};

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
