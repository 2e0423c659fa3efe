//! Scratch targets of drills: a throwaway PostgreSQL cluster (initdb and
//! pg_ctl on a free loopback port, in a folder of its own), always removed
//! afterwards.
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

use crate::policy::{ScratchPostgresConfig, Secret};
use crate::source::postgres::{PgConn, PgError, PgTools};

/// The folder-name prefix that marks scratch folders.
pub const PREFIX: &str = "lifeboat-drill-";
const OWNER_FILE: &str = "lifeboat-drill.json";
/// The superuser lifeboat connects as. Not `postgres`: a backup's roles
/// (pg_dumpall's globals) redefine `postgres`, password included, which
/// would lock lifeboat out of its own scratch cluster. For a backup without
/// globals the drill creates `postgres` ([`ScratchPostgres::create_postgres_role`]),
/// so that a dump's ownership finds it.
const SUPERUSER: &str = "lifeboat_drill";

#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    #[error("no PostgreSQL server binaries for the scratch cluster: {source}. Install the server package (postgresql-{major} on Debian) or set drill.postgres.bin_dir in the policy")]
    Tools { major: u32, source: PgError },
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

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ScratchError + 'a {
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
}

/// A running throwaway PostgreSQL cluster.
pub struct ScratchPostgres {
    dir: PathBuf,
    pg_ctl: PathBuf,
    run_as: Option<String>,
    /// Superuser connection over TCP on 127.0.0.1.
    pub conn: PgConn,
    /// The server's installation (its major may be newer than the backup's).
    pub tools: PgTools,
    removed: bool,
}

impl ScratchPostgres {
    /// Creates `<parent>/lifeboat-drill-<id>`, runs initdb and starts the
    /// server on the configured port or a free one.
    pub async fn start(
        parent: &Path,
        id: &str,
        major: u32,
        cfg: &ScratchPostgresConfig,
    ) -> Result<ScratchPostgres, ScratchError> {
        let tools = PgTools::find(cfg.bin_dir.as_deref(), "initdb", major)
            .await
            .map_err(|source| ScratchError::Tools { major, source })?;
        let run_as = if crate::restore::pitr::running_as_root() {
            Some(cfg.run_as.clone().unwrap_or_else(|| "postgres".into()))
        } else {
            None
        };
        let ids = match &run_as {
            Some(user) => Some(user_ids(user).await?),
            None => None,
        };
        let dir = parent.join(format!("{PREFIX}{id}"));
        std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        std::fs::create_dir(&dir).map_err(io("create", &dir))?;
        let pg_ctl = tools.tool("pg_ctl");
        let mut scratch = ScratchPostgres {
            dir: dir.clone(),
            pg_ctl: pg_ctl.clone(),
            run_as: run_as.clone(),
            conn: PgConn {
                host: "127.0.0.1".into(),
                port: 0,
                user: SUPERUSER.into(),
                password: None,
            },
            tools,
            removed: false,
        };
        // From here on, dropping `scratch` removes the folder.
        let owner = Owner {
            pid: std::process::id(),
            process_start: process_start(std::process::id()).unwrap_or(0),
            host: hostname(),
            drill: id.to_string(),
            created: Utc::now(),
            pg_ctl,
            run_as,
        };
        let owner_path = dir.join(OWNER_FILE);
        std::fs::write(
            &owner_path,
            serde_json::to_vec_pretty(&owner).expect("owner serializes"),
        )
        .map_err(io("write", &owner_path))?;
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(io("chown", &dir))?;
        }
        let password = random_hex(16).map_err(io("read", Path::new("/dev/urandom")))?;
        scratch.initdb(&password, ids).await?;
        scratch.conn.password = Some(Secret::new(password));
        let mut port = cfg.port.unwrap_or_else(free_port);
        for attempt in 1..=3 {
            match scratch.start_server(port).await {
                Ok(()) => break,
                // A free port taken by someone else before the server bound
                // it: try another. A configured port is not changed.
                Err(ScratchError::Start { ref detail, .. })
                    if cfg.port.is_none() && attempt < 3 && port_taken(detail) =>
                {
                    tracing::warn!(port, "scratch port taken meanwhile; trying another");
                    port = free_port();
                }
                Err(e) => return Err(e),
            }
        }
        scratch.conn.port = port;
        tracing::info!(dir = %scratch.dir.display(), port, version = %scratch.tools.version, "scratch PostgreSQL cluster running");
        Ok(scratch)
    }

    /// Creates the superuser role `postgres`, which objects of a dump
    /// usually belong to, for a backup without globals (whose roles would
    /// otherwise create it).
    pub async fn create_postgres_role(&self) -> Result<(), ScratchError> {
        let port = self.conn.port;
        let setup = async {
            let client = self
                .conn
                .connect("postgres")
                .await
                .map_err(|e| e.to_string())?;
            client
                .batch_execute("CREATE ROLE postgres SUPERUSER LOGIN")
                .await
                .map_err(|e| crate::source::postgres::error_detail(&e))
        };
        setup
            .await
            .map_err(|detail| ScratchError::Setup { port, detail })
    }

    /// The folder of this cluster.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &Path) -> tokio::process::Command {
        as_user(program, self.run_as.as_deref())
    }

    async fn initdb(&self, password: &str, ids: Option<(u32, u32)>) -> Result<(), ScratchError> {
        let pwfile = self.dir.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).map_err(io("write", &pwfile))?;
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
                .map_err(io("chown", &pwfile))?;
        }
        let initdb = self.tools.tool("initdb");
        let out = self
            .command(&initdb)
            .arg("-D")
            .arg(self.data())
            .args(["-U", SUPERUSER, "-A", "scram-sha-256", "--no-sync"])
            .args(["-E", "UTF8", "--locale=C"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .await
            .map_err(|source| ScratchError::Spawn {
                program: initdb.display().to_string(),
                source,
            })?;
        let _ = std::fs::remove_file(&pwfile);
        if !out.status.success() {
            let mut detail = last_lines(&out.stderr, 5);
            if let (Some(user), true) = (&self.run_as, detail.contains("ermission denied")) {
                let parent = self.dir.parent().unwrap_or(&self.dir);
                detail.push_str(&format!(
                    "; user '{user}' must be able to reach {} (set drill.scratch_dir to a folder it can, e.g. /var/tmp)",
                    parent.display()
                ));
            }
            return Err(ScratchError::Initdb {
                data: self.data(),
                detail,
            });
        }
        Ok(())
    }

    async fn start_server(&self, port: u16) -> Result<(), ScratchError> {
        let log = self.dir.join("server.log");
        let _ = std::fs::remove_file(&log);
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            self.dir.display()
        );
        let out = self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(self.data())
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "120", "start"])
            .output()
            .await
            .map_err(|source| ScratchError::Spawn {
                program: self.pg_ctl.display().to_string(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        let logged = std::fs::read(&log).unwrap_or_default();
        let detail = format!("{} {}", last_lines(&out.stderr, 2), last_lines(&logged, 4));
        let hint = if port_taken(&detail) {
            "; the port is in use: free it, or leave drill.postgres.port out to use a free one"
        } else {
            ""
        };
        Err(ScratchError::Start {
            port,
            detail: detail.trim().to_string(),
            hint,
        })
    }

    /// Stops the server and removes the folder.
    pub async fn remove(mut self) -> Result<(), ScratchError> {
        self.removed = true;
        let out = self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-t", "60", "stop"])
            .output()
            .await;
        if let Ok(o) = &out {
            if !o.status.success() && self.data().join("postmaster.pid").exists() {
                tracing::warn!(dir = %self.dir.display(), error = %last_lines(&o.stderr, 2), "pg_ctl stop failed; killing the scratch server");
                kill_postmaster(&self.data(), &self.pg_ctl, self.run_as.as_deref());
            }
        }
        std::fs::remove_dir_all(&self.dir).map_err(io("remove", &self.dir))?;
        tracing::info!(dir = %self.dir.display(), "scratch PostgreSQL cluster removed");
        Ok(())
    }
}

/// Whether the server's failure to start says its port is taken.
fn port_taken(detail: &str) -> bool {
    [
        "could not bind",
        "in use",
        "Is another postmaster already running on port",
        "could not create any TCP/IP sockets",
    ]
    .iter()
    .any(|s| detail.contains(s))
}

impl Drop for ScratchPostgres {
    /// A drill that ends early (an error, a panic, a signal) still removes
    /// its cluster.
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        stop_blocking(&self.data(), &self.pg_ctl, self.run_as.as_deref());
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::error!(dir = %self.dir.display(), error = %e, "cannot remove the scratch folder; the next drill removes it");
        } else {
            tracing::info!(dir = %self.dir.display(), "scratch PostgreSQL cluster removed");
        }
    }
}

/// `pg_ctl`, as `run_as` when set, for use without an async runtime.
fn blocking_pg_ctl(pg_ctl: &Path, run_as: Option<&str>) -> std::process::Command {
    match run_as {
        Some(user) => {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", user, "--"]).arg(pg_ctl);
            c
        }
        None => std::process::Command::new(pg_ctl),
    }
}

/// Stops a cluster without an async runtime (drop, sweep).
fn stop_blocking(data: &Path, pg_ctl: &Path, run_as: Option<&str>) {
    if !data.join("postmaster.pid").exists() {
        return;
    }
    let ok = blocking_pg_ctl(pg_ctl, run_as)
        .arg("-D")
        .arg(data)
        .args(["-m", "immediate", "-w", "-t", "60", "stop"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok && data.join("postmaster.pid").exists() {
        kill_postmaster(data, pg_ctl, run_as);
    }
}

/// Last resort: SIGKILL to the pid in `postmaster.pid` (pg_ctl's own
/// `kill` mode, so no signal code here). The children exit with it.
fn kill_postmaster(data: &Path, pg_ctl: &Path, run_as: Option<&str>) {
    let Some(pid) = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next().map(str::trim).map(str::to_string))
        .filter(|p| p.parse::<u32>().is_ok())
    else {
        return;
    };
    let _ = blocking_pg_ctl(pg_ctl, run_as)
        .args(["kill", "KILL", &pid])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    std::thread::sleep(Duration::from_millis(500));
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
    let host = hostname();
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
        if let Some(o) = &owner {
            stop_blocking(&path.join("data"), &o.pg_ctl, o.run_as.as_deref());
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
fn alive(pid: u32, start: u64) -> bool {
    match process_start(pid) {
        Some(s) => start == 0 || s == start,
        None => false,
    }
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks since boot).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(55432)
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn as_user(program: &Path, user: Option<&str>) -> tokio::process::Command {
    match user {
        Some(user) => {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    }
}

/// The uid and gid of a system user (`id -u`, `id -g`).
async fn user_ids(user: &str) -> Result<(u32, u32), ScratchError> {
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

fn last_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = std::process::id();
        let start = process_start(me).expect("own start time");
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
        assert!(!alive(u32::MAX - 1, start));
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
            };
            std::fs::write(dir.join(OWNER_FILE), serde_json::to_vec(&owner).unwrap()).unwrap();
            dir
        };
        let me = std::process::id();
        let start = process_start(me).unwrap();
        let running = write("lifeboat-drill-a", me, start, hostname());
        let dead = write("lifeboat-drill-b", me, start + 1, hostname());
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
