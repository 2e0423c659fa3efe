//! Test harness: throwaway PostgreSQL clusters and Garage S3 servers on free
//! loopback ports in temp dirs, stopped on drop (also when a test panics),
//! and a runner for the lifeboat binary.
//!
//! The servers and the runner live in submodules (`postgres`, `mariadb`,
//! `garage`, `lifeboat`); everything a test uses is re-exported here, so
//! tests name it `crate::harness::X`. This file keeps the helpers they
//! share.

#![allow(dead_code)]

mod garage;
mod lifeboat;
mod mariadb;
mod postgres;

pub use self::garage::Garage;
pub use self::lifeboat::{Lifeboat, Repo, Run};
pub use self::mariadb::{mysql_source_yaml, MariaDb};
pub use self::postgres::{chown_to_postgres, pg_source_yaml, PgCluster, RestoredDir};
// No test names these today; re-exported so every `crate::harness::X` path
// of the single-file harness still resolves.
#[allow(unused_imports)]
pub use self::{
    garage::garage_bin,
    postgres::{pg_bin, TableLock},
};

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .unwrap()
        .port()
}

/// True when the tests run as root (CI): PostgreSQL refuses to run as root,
/// so the cluster runs as the `postgres` system user.
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn run_checked(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The repository's rich test schema: several schemas, many tables,
/// indexes, sequences, views, functions, triggers, enums, partitions,
/// binary data, unicode and large objects.
pub fn rich_fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/integration/fixtures/rich.sql")
}
