//! Scratch targets of drills: a throwaway PostgreSQL cluster (initdb and
//! pg_ctl on a free loopback port, or a restored base backup), or a
//! throwaway MariaDB server (mariadb-install-db and mariadbd), each in a
//! folder of its own, always removed afterwards.
//!
//! Every scratch folder is named `lifeboat-drill-<drill id>` and holds
//! `lifeboat-drill.json`: the owning process (pid and start time), the
//! host, and how to stop the server. A drill killed with SIGKILL leaves
//! its folder and server behind; the next drill with the same scratch
//! folder finds it (the owner is gone), stops the server and removes it
//! ([`sweep`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::kinds::mysql::scratch::{kill_mariadbd, MARIADB};
use crate::kinds::mysql::source::MyError;
use crate::kinds::postgres::scratch::{postgres_server, stop_blocking};
use crate::kinds::postgres::source::{PgConn, PgError};

mod databases;

pub use databases::*;

/// The folder-name prefix that marks scratch folders.
pub const PREFIX: &str = "lifeboat-drill-";
const OWNER_FILE: &str = "lifeboat-drill.json";
/// The superuser lifeboat connects as. Not `postgres`: a backup's roles
/// (pg_dumpall's globals) redefine `postgres`, password included, which
/// would lock lifeboat out of its own scratch cluster. For a backup without
/// globals the drill creates `postgres` ([`ScratchPostgres::create_postgres_role`]),
/// so that a dump's ownership finds it.
pub(crate) const SUPERUSER: &str = "lifeboat_drill";

#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    #[error("no PostgreSQL server binaries for the scratch cluster: {source}. Install the server package (postgresql-{major} on Debian) or set drill.postgres.bin_dir in the policy")]
    Tools { major: u32, source: PgError },
    #[error("a base backup of PostgreSQL {major} starts only with the server binaries of that major version; found {found} ({tool}). Install postgresql-{major} or set drill.postgres.bin_dir in the policy")]
    WrongMajor {
        major: u32,
        found: u32,
        tool: PathBuf,
    },
    #[error("no MariaDB/MySQL server binaries for the scratch server: {source}. Install mariadb-server (Debian) or set drill.mariadb.bin_dir in the policy")]
    MariaDbTools { source: MyError },
    #[error("the scratch MariaDB server did not start on 127.0.0.1:{port}: {detail}{hint}")]
    StartMariaDb {
        port: u16,
        detail: String,
        hint: &'static str,
    },
    #[error(
        "the scratch MariaDB server on 127.0.0.1:{port} started but cannot be prepared: {detail}"
    )]
    SetupMariaDb { port: u16, detail: String },
    #[error("the scratch server {server} (drill.postgres.server): {detail}")]
    Server { server: String, detail: String },
    #[error("PostgreSQL refuses to run as root and the system user '{user}' to run the scratch cluster as does not exist ({detail}); create it, set drill.postgres.run_as, or run the drill as a non-root user")]
    NoSuchUser { user: String, detail: String },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("initdb of the scratch cluster in {data} failed: {detail}")]
    Initdb { data: PathBuf, detail: String },
    #[error("the scratch PostgreSQL server did not start on 127.0.0.1:{port}: {detail}{hint}")]
    Start {
        port: u16,
        detail: String,
        hint: &'static str,
    },
    #[error("the scratch PostgreSQL server on 127.0.0.1:{port} started but cannot be prepared: {detail}")]
    Setup { port: u16, detail: String },
}

impl crate::outcome::Classify for ScratchError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Tools { .. }
            | Self::WrongMajor { .. }
            | Self::MariaDbTools { .. }
            | Self::StartMariaDb { .. }
            | Self::SetupMariaDb { .. }
            | Self::Server { .. }
            | Self::NoSuchUser { .. }
            | Self::Io { .. }
            | Self::Spawn { .. }
            | Self::Initdb { .. }
            | Self::Start { .. }
            | Self::Setup { .. } => Outcome::Failure,
        }
    }
}

pub(crate) fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ScratchError + 'a {
    move |source| ScratchError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Who made a scratch folder, and how to stop what runs in it.
#[derive(Debug, Serialize, Deserialize)]
struct Owner {
    pid: u32,
    /// The owner's start time in clock ticks since boot (`/proc/PID/stat`
    /// field 22): a reused pid has another.
    process_start: u64,
    host: String,
    drill: String,
    created: DateTime<Utc>,
    pg_ctl: PathBuf,
    run_as: Option<String>,
    /// `postgres` or `mariadb`: how to stop what runs in the folder.
    #[serde(default = "postgres_server")]
    server: String,
}

/// Creates `<parent>/lifeboat-drill-<id>`, which only its owner enters:
/// the restored copy of a base backup trusts whoever reaches the socket
/// in it, and a scratch MariaDB's root has no password on its socket.
pub(crate) fn create_folder(parent: &Path, id: &str) -> Result<PathBuf, ScratchError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = parent.join(format!("{PREFIX}{id}"));
    std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(io("create", &dir))?;
    Ok(dir)
}

/// Describes this process as the folder's owner, for [`sweep`].
pub(crate) fn write_owner(
    dir: &Path,
    id: &str,
    pg_ctl: PathBuf,
    run_as: Option<String>,
    server: String,
) -> Result<(), ScratchError> {
    let me = std::process::id();
    let owner = Owner {
        pid: me,
        process_start: process_start(me).unwrap_or(0),
        host: crate::lock::hostname(),
        drill: id.to_string(),
        created: Utc::now(),
        pg_ctl,
        run_as,
        server,
    };
    let path = dir.join(OWNER_FILE);
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&owner).expect("owner serializes"),
    )
    .map_err(io("write", &path))
}

/// One scratch folder found by [`sweep`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Leftover {
    pub path: PathBuf,
    /// The drill that made it.
    pub drill: Option<String>,
    /// `removed`, or why it was not.
    pub outcome: String,
}

/// Finds scratch folders in `parent` whose drill is gone (crashed or
/// killed), stops their servers and removes them. Folders of drills still
/// running, or made on another host (a shared volume), are left alone.
pub fn sweep(parent: &Path) -> Vec<Leftover> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let host = crate::lock::hostname();
    let mut found = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(PREFIX) || !e.path().is_dir() {
            continue;
        }
        let path = e.path();
        let owner: Option<Owner> = std::fs::read(path.join(OWNER_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match &owner {
            Some(o) if o.host != host => continue,
            Some(o) if alive(o.pid, o.process_start) => continue,
            None => {
                // Made a moment ago and not yet described: leave it unless old.
                let young = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age < Duration::from_secs(600));
                if young {
                    continue;
                }
            }
            Some(_) => {}
        }
        match &owner {
            Some(o) if o.server == MARIADB => kill_mariadbd(&path),
            Some(o) => stop_blocking(&path.join("data"), &o.pg_ctl, o.run_as.as_deref()),
            None => {}
        }
        let outcome = match std::fs::remove_dir_all(&path) {
            Ok(()) => "removed".to_string(),
            Err(e) => format!("cannot remove: {e}"),
        };
        tracing::warn!(dir = %path.display(), drill = owner.as_ref().map(|o| o.drill.as_str()).unwrap_or("?"), %outcome, "scratch target left by an earlier drill");
        found.push(Leftover {
            path,
            drill: owner.map(|o| o.drill),
            outcome,
        });
    }
    found
}

/// Whether process `pid` runs and is the one that started at `start`.
pub(crate) fn alive(pid: u32, start: u64) -> bool {
    match process_start(pid) {
        Some(s) => start == 0 || s == start,
        None => false,
    }
}

pub(crate) use crate::lock::process_start;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(55432)
}

pub(crate) fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) fn as_user(program: &Path, user: Option<&str>) -> tokio::process::Command {
    match user {
        Some(user) => {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    }
}

/// `chown -R` without following symbolic links.
pub(crate) fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), ScratchError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io("chown", path))?;
    let meta = std::fs::symlink_metadata(path).map_err(io("read", path))?;
    if meta.is_dir() {
        for e in std::fs::read_dir(path).map_err(io("read", path))? {
            let e = e.map_err(io("read", path))?;
            chown_tree(&e.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// The uid and gid of a system user (`id -u`, `id -g`).
pub(crate) async fn user_ids(user: &str) -> Result<(u32, u32), ScratchError> {
    let id = |flag: &'static str| async move {
        let out = tokio::process::Command::new("id")
            .arg(flag)
            .arg(user)
            .output()
            .await
            .map_err(|e| ScratchError::NoSuchUser {
                user: user.to_string(),
                detail: e.to_string(),
            })?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .map_err(|_| ScratchError::NoSuchUser {
                user: user.to_string(),
                detail: last_lines(&out.stderr, 1),
            })
    };
    Ok((id("-u").await?, id("-g").await?))
}

pub(crate) fn last_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Whether the server's failure to start says its port is taken.
pub(crate) fn port_taken(detail: &str) -> bool {
    [
        "could not bind",
        "in use",
        "Is another postmaster already running on port",
        "could not create any TCP/IP sockets",
    ]
    .iter()
    .any(|s| detail.contains(s))
}

/// Whether process `pid` is a server of `data`: its name starts with one
/// of `names` and its arguments name that data directory (`-D DIR`, as
/// pg_ctl starts postgres, or `--datadir=DIR`). A pid file's process is
/// then the server of this folder, not a later process that got the same
/// pid. Both files are world-readable, also for a server that dropped
/// root (its cwd is not, without CAP_SYS_PTRACE).
pub(crate) fn serves(pid: u32, data: &Path, names: &[&str]) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !names.iter().any(|n| comm.starts_with(n)) {
        return false;
    }
    let (Ok(cmdline), Ok(want)) = (
        std::fs::read(format!("/proc/{pid}/cmdline")),
        std::fs::canonicalize(data),
    ) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.iter().enumerate().any(|(i, arg)| {
        let dir = match arg.strip_prefix(b"--datadir=") {
            Some(dir) => Some(dir),
            None if *arg == b"-D" => args.get(i + 1).copied(),
            None => None,
        };
        dir.and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| std::fs::canonicalize(d).ok())
            .is_some_and(|d| d == want)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_database_names_are_identifiers_unique_and_short() {
        let long = "a".repeat(80);
        let names = scratch_database_names(
            "20261204T051500Z-0c62",
            &["Shop".to_string(), "crm-eu".to_string(), long.clone(), long],
        );
        assert_eq!(names[0].1, "lifeboat_drill_20261204t051500z_0c62_shop");
        assert_eq!(names[1].1, "lifeboat_drill_20261204t051500z_0c62_crm_eu");
        assert!(names.iter().all(|(_, n)| n.len() <= 63));
        assert_ne!(names[2].1, names[3].1);
        // Short names that clash once cleaned.
        let clash = scratch_database_names("x", &["Shop".to_string(), "shop".to_string()]);
        assert_eq!(clash[1].1, "lifeboat_drill_x_shop_2");
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = std::process::id();
        let start = process_start(me).expect("own start time");
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
        assert!(!alive(u32::MAX - 1, start));
    }

    #[test]
    fn scratch_databases_of_other_hosts_are_abandoned_after_a_day() {
        let me = std::process::id();
        let start = process_start(me).unwrap();
        let now = Utc::now();
        let owner = |host: &str, start: u64, hours: i64| {
            serde_json::json!({
                "host": host, "pid": me, "process_start": start, "drill": "d",
                "created": now - chrono::Duration::hours(hours),
            })
        };
        let gone = |o: &serde_json::Value, busy| database_owner_gone(o, "here", busy, now);
        assert!(!gone(&owner("here", start, 30), false));
        assert!(gone(&owner("here", start + 1, 0), false));
        assert!(!gone(&owner("pod-b", start, 2), false));
        assert!(gone(&owner("pod-b", start, 25), false));
        // A day old, but a restore still works in it.
        assert!(!gone(&owner("pod-b", start, 25), true));
        // Made by an older lifeboat (no time), or not a drill's at all.
        let untimed = serde_json::json!({"host": "pod-b", "pid": 1, "drill": "d"});
        assert!(!gone(&untimed, false));
        assert!(!gone(&serde_json::Value::Null, false));
    }

    #[test]
    fn a_pid_file_names_the_folder_server_only_if_it_serves_that_data() {
        let data = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        // A process named `sh` whose arguments hold `-D <data>`, like
        // postgres, and `--datadir=<data>`, like mariadbd.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; true", "sh", "-D"])
            .arg(data.path())
            .arg(format!("--datadir={}", data.path().display()))
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !serves(pid, data.path(), &["sh"]) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let found = serves(pid, data.path(), &["sh"]);
        let other_dir = serves(pid, elsewhere.path(), &["sh"]);
        let other_name = serves(pid, data.path(), &["postgres"]);
        let _ = child.kill();
        let _ = child.wait();
        assert!(found && !other_dir && !other_name);
        assert!(!serves(u32::MAX - 1, data.path(), &["sh"]));
    }

    #[test]
    fn sweep_removes_folders_of_dead_drills_only() {
        let parent = tempfile::tempdir().unwrap();
        let write = |name: &str, pid: u32, start: u64, host: String| {
            let dir = parent.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            let owner = Owner {
                pid,
                process_start: start,
                host,
                drill: name.to_string(),
                created: Utc::now(),
                pg_ctl: PathBuf::from("/nonexistent/pg_ctl"),
                run_as: None,
                server: postgres_server(),
            };
            std::fs::write(dir.join(OWNER_FILE), serde_json::to_vec(&owner).unwrap()).unwrap();
            dir
        };
        let me = std::process::id();
        let start = process_start(me).unwrap();
        let running = write("lifeboat-drill-a", me, start, crate::lock::hostname());
        let dead = write("lifeboat-drill-b", me, start + 1, crate::lock::hostname());
        let elsewhere = write("lifeboat-drill-c", me, start + 1, "other-host".into());
        let unrelated = parent.path().join("something-else");
        std::fs::create_dir(&unrelated).unwrap();
        let found = sweep(parent.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, dead);
        assert_eq!(found[0].outcome, "removed");
        assert!(running.exists() && elsewhere.exists() && unrelated.exists());
        assert!(!dead.exists());
    }
}
