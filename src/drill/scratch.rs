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

use crate::policy::{ScratchMariaDbConfig, ScratchPostgresConfig, Secret};
use crate::source::mysql::{self as my, MyConn, MyError};
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
    /// `postgres` or `mariadb`: how to stop what runs in the folder.
    #[serde(default = "postgres_server")]
    server: String,
}

fn postgres_server() -> String {
    "postgres".into()
}

/// A running throwaway PostgreSQL cluster.
pub struct ScratchPostgres {
    dir: PathBuf,
    pg_ctl: PathBuf,
    run_as: Option<String>,
    /// uid and gid of `run_as`.
    ids: Option<(u32, u32)>,
    /// Superuser connection: TCP on 127.0.0.1 for a new cluster, the
    /// socket in the scratch folder for a restored base backup.
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
        let mut scratch = Self::prepare(parent, id, major, cfg, false).await?;
        let password = random_hex(16).map_err(io("read", Path::new("/dev/urandom")))?;
        scratch.initdb(&password).await?;
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

    /// Creates `<parent>/lifeboat-drill-<id>` with its owner file, and no
    /// cluster yet. `exact`: the server binaries must be of `major` itself
    /// (a physical copy), not newer (a dump).
    pub async fn prepare(
        parent: &Path,
        id: &str,
        major: u32,
        cfg: &ScratchPostgresConfig,
        exact: bool,
    ) -> Result<ScratchPostgres, ScratchError> {
        let tools = PgTools::find(cfg.bin_dir.as_deref(), "initdb", major)
            .await
            .map_err(|source| ScratchError::Tools { major, source })?;
        if exact && tools.major != major {
            return Err(ScratchError::WrongMajor {
                major,
                found: tools.major,
                tool: tools.tool("postgres"),
            });
        }
        let run_as = if crate::restore::pitr::running_as_root() {
            Some(cfg.run_as.clone().unwrap_or_else(|| "postgres".into()))
        } else {
            None
        };
        let ids = match &run_as {
            Some(user) => Some(user_ids(user).await?),
            None => None,
        };
        let dir = create_folder(parent, id)?;
        let pg_ctl = tools.tool("pg_ctl");
        let scratch = ScratchPostgres {
            dir: dir.clone(),
            pg_ctl: pg_ctl.clone(),
            run_as: run_as.clone(),
            ids,
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
        write_owner(&dir, id, pg_ctl, run_as, postgres_server())?;
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(io("chown", &dir))?;
        }
        Ok(scratch)
    }

    /// uid and gid of the user the server runs as, when lifeboat runs as
    /// root.
    pub fn owner_ids(&self) -> Option<(u32, u32)> {
        self.ids
    }

    /// The data directory a restored base backup is unpacked into.
    pub fn data_dir(&self) -> PathBuf {
        self.data()
    }

    /// A folder inside the scratch folder the server's user can read
    /// (staged WAL).
    pub fn make_dir(&self, name: &str) -> Result<PathBuf, ScratchError> {
        let path = self.dir.join(name);
        std::fs::create_dir(&path).map_err(io("create", &path))?;
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(io("chown", &path))?;
        }
        Ok(path)
    }

    /// Makes an unpacked base backup startable here, for this drill only:
    /// owned by the server's user, a `postgresql.conf` if the source kept
    /// its own elsewhere (Debian's /etc/postgresql), and authentication
    /// files of the drill's own that allow only local connections through
    /// the socket in the scratch folder (the source's roles and passwords
    /// are unknown here).
    pub fn adopt_restored(&self) -> Result<(), ScratchError> {
        let data = self.data();
        let conf = data.join("postgresql.conf");
        if !conf.exists() {
            std::fs::write(
                &conf,
                "# Written by a lifeboat drill: the backup held no postgresql.conf.\n",
            )
            .map_err(io("write", &conf))?;
        }
        let hba = self.dir.join("drill_hba.conf");
        std::fs::write(
            &hba,
            "# lifeboat drill: local socket only (listen_addresses is empty)\nlocal all all trust\n",
        )
        .map_err(io("write", &hba))?;
        let ident = self.dir.join("drill_ident.conf");
        std::fs::write(&ident, "").map_err(io("write", &ident))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .map_err(io("chmod", &data))?;
        if let Some((uid, gid)) = self.ids {
            for path in [&hba, &ident] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io("chown", path))?;
            }
            chown_tree(&data, uid, gid)?;
        }
        Ok(())
    }

    /// Starts the server on a restored data directory; it replays WAL
    /// and promotes ([`crate::restore::pitr::wait_for_promotion`] waits).
    /// No TCP: only the socket in the scratch folder, trust, as
    /// [`Self::adopt_restored`] set up. Returns the server log.
    pub async fn start_recovery(&mut self, port: Option<u16>) -> Result<PathBuf, ScratchError> {
        let port = port.unwrap_or_else(free_port);
        let log = self.dir.join("server.log");
        let options = format!(
            "-p {port} -k {} -c unix_socket_permissions=0700 -c listen_addresses='' -c hba_file={} -c ident_file={} -c archive_mode=off",
            sh_quote(&self.dir),
            sh_quote(&self.dir.join("drill_hba.conf")),
            sh_quote(&self.dir.join("drill_ident.conf")),
        );
        let out = self.pg_ctl_start(&options, &log, &["-W"]).await?;
        if !out.status.success() {
            let logged = std::fs::read(&log).unwrap_or_default();
            return Err(ScratchError::Start {
                port,
                detail: format!("{} {}", last_lines(&out.stderr, 2), last_lines(&logged, 4))
                    .trim()
                    .to_string(),
                hint: "",
            });
        }
        self.conn = PgConn {
            host: self.dir.display().to_string(),
            port,
            user: SUPERUSER.into(),
            password: None,
        };
        Ok(log)
    }

    /// Connects to the restored server as its bootstrap superuser, found
    /// through the first of `candidates` that exists (the source's backup
    /// user, `postgres`); `conn` uses it from then on.
    pub async fn find_superuser(&mut self, candidates: &[&str]) -> Result<String, ScratchError> {
        let port = self.conn.port;
        let mut tried = Vec::new();
        for user in candidates {
            let conn = PgConn {
                user: user.to_string(),
                ..self.conn.clone()
            };
            for db in ["postgres", "template1"] {
                match conn.connect(db).await {
                    Ok(client) => {
                        let row = client
                            .query_one("SELECT rolname::text FROM pg_roles WHERE oid = 10", &[])
                            .await
                            .map_err(|e| ScratchError::Setup {
                                port,
                                detail: crate::source::postgres::error_detail(&e),
                            })?;
                        let name: String = row.get(0);
                        self.conn.user = name.clone();
                        return Ok(name);
                    }
                    Err(e) => tried.push(e.to_string()),
                }
            }
        }
        Err(ScratchError::Setup {
            port,
            detail: format!(
                "no role to connect as ({}): {}",
                candidates.join(", "),
                tried.join("; ")
            ),
        })
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

    /// A command run as the server's user.
    pub fn command(&self, program: &Path) -> tokio::process::Command {
        as_user(program, self.run_as.as_deref())
    }

    async fn initdb(&self, password: &str) -> Result<(), ScratchError> {
        let pwfile = self.dir.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).map_err(io("write", &pwfile))?;
        if let Some((uid, gid)) = self.ids {
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
            sh_quote(&self.dir)
        );
        let out = self
            .pg_ctl_start(&options, &log, &["-w", "-t", "120"])
            .await?;
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

    /// `pg_ctl start` with server `options` (pg_ctl hands them to
    /// `/bin/sh -c`: paths in them go through [`sh_quote`]).
    async fn pg_ctl_start(
        &self,
        options: &str,
        log: &Path,
        wait: &[&str],
    ) -> Result<std::process::Output, ScratchError> {
        self.command(&self.pg_ctl)
            .arg("-D")
            .arg(self.data())
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(log)
            .args(wait)
            .arg("start")
            .output()
            .await
            .map_err(|source| ScratchError::Spawn {
                program: self.pg_ctl.display().to_string(),
                source,
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
        let failed = match &out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(last_lines(&o.stderr, 2)),
            Err(e) => Some(format!("cannot start {}: {e}", self.pg_ctl.display())),
        };
        if let Some(error) = failed {
            if self.data().join("postmaster.pid").exists() {
                tracing::warn!(dir = %self.dir.display(), %error, "pg_ctl stop failed; killing the scratch server");
                kill_postmaster(&self.data(), &self.pg_ctl, self.run_as.as_deref());
            }
        }
        std::fs::remove_dir_all(&self.dir).map_err(io("remove", &self.dir))?;
        tracing::info!(dir = %self.dir.display(), "scratch PostgreSQL cluster removed");
        Ok(())
    }
}

/// One word for `/bin/sh`.
fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
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
        .filter(|p| {
            p.parse::<u32>()
                .is_ok_and(|pid| serves(pid, data, &["postgres", "postmaster"]))
        })
    else {
        // No pid, or a stale one: that pid is now another process.
        return;
    };
    let _ = blocking_pg_ctl(pg_ctl, run_as)
        .args(["kill", "KILL", &pid])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    std::thread::sleep(Duration::from_millis(500));
}

/// Creates `<parent>/lifeboat-drill-<id>`, which only its owner enters:
/// the restored copy of a base backup trusts whoever reaches the socket
/// in it, and a scratch MariaDB's root has no password on its socket.
fn create_folder(parent: &Path, id: &str) -> Result<PathBuf, ScratchError> {
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
fn write_owner(
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

/// Scratch databases on a server the policy names
/// (`drill.postgres.server`): `lifeboat_drill_<drill id>_<database>`, each
/// with the owner (host, pid, process start) as its comment, dropped at
/// the end, on errors and interruptions (drop), and by the next drill
/// when their drill is gone ([`ScratchDatabases::sweep`]).
pub struct ScratchDatabases {
    pub conn: PgConn,
    /// Database of the backup → scratch database.
    pub names: Vec<(String, String)>,
    removed: bool,
}

/// The database drills connect to for CREATE and DROP DATABASE.
const MAINTENANCE_DB: &str = "postgres";

impl ScratchDatabases {
    /// Creates one empty scratch database per database of the backup.
    pub async fn create(
        server: &crate::policy::ScratchServer,
        id: &str,
        databases: &[String],
    ) -> Result<ScratchDatabases, ScratchError> {
        let conn = PgConn {
            host: server.host.clone(),
            port: server.port,
            user: server.user.clone(),
            password: server
                .password
                .as_ref()
                .map(|p| p.resolve())
                .transpose()
                .map_err(|e| ScratchError::Server {
                    server: format!("{}:{}", server.host, server.port),
                    detail: e.to_string(),
                })?,
        };
        let names = scratch_database_names(id, databases);
        let mut scratch = ScratchDatabases {
            conn,
            names: Vec::new(),
            removed: false,
        };
        let me = std::process::id();
        let owner = serde_json::json!({
            "host": crate::lock::hostname(),
            "pid": me,
            "process_start": process_start(me).unwrap_or(0),
            "drill": id,
            "created": Utc::now(),
        })
        .to_string();
        let client = scratch
            .conn
            .connect(MAINTENANCE_DB)
            .await
            .map_err(|e| scratch.error(e.to_string()))?;
        for (db, name) in names {
            let q = crate::source::postgres::quote_ident(&name);
            client
                .batch_execute(&format!("CREATE DATABASE {q}"))
                .await
                .map_err(|e| {
                    scratch.error(format!(
                        "CREATE DATABASE {q}: {} (the role needs CREATEDB)",
                        crate::source::postgres::error_detail(&e)
                    ))
                })?;
            // From here on, dropping `scratch` drops it.
            scratch.names.push((db, name));
            client
                .batch_execute(&format!(
                    "COMMENT ON DATABASE {q} IS {}",
                    crate::source::postgres::quote_literal(&owner)
                ))
                .await
                .map_err(|e| scratch.error(crate::source::postgres::error_detail(&e)))?;
        }
        tracing::info!(server = %scratch.describe(), databases = ?scratch.names, "scratch databases created");
        Ok(scratch)
    }

    /// `postgres://user@host:port`.
    pub fn describe(&self) -> String {
        format!(
            "postgres://{}@{}:{}",
            self.conn.user, self.conn.host, self.conn.port
        )
    }

    fn error(&self, detail: String) -> ScratchError {
        ScratchError::Server {
            server: self.describe(),
            detail,
        }
    }

    /// Drops the scratch databases (sessions in them are ended).
    pub async fn remove(mut self) -> Result<(), ScratchError> {
        self.removed = true;
        let names: Vec<String> = self.names.iter().map(|(_, n)| n.clone()).collect();
        drop_databases(&self.conn, &names)
            .await
            .map_err(|e| self.error(e))
    }

    /// Drops scratch databases on the server whose drill is gone: made on
    /// this host by a process that no longer runs, or elsewhere more than
    /// a day ago (both from the owner comment; a database without one is
    /// left alone and named in a warning).
    pub async fn sweep(server: &crate::policy::ScratchServer) -> Vec<Leftover> {
        let conn = PgConn {
            host: server.host.clone(),
            port: server.port,
            user: server.user.clone(),
            password: match server.password.as_ref().map(|p| p.resolve()).transpose() {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for scratch databases of earlier drills");
                    return Vec::new();
                }
            },
        };
        let listed = async {
            let client = conn
                .connect(MAINTENANCE_DB)
                .await
                .map_err(|e| e.to_string())?;
            client
                .query(
                    "SELECT datname::text, coalesce(shobj_description(oid, 'pg_database'), ''), \
                     EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datid = d.oid) \
                     FROM pg_database d WHERE datname LIKE 'lifeboat\\_drill\\_%'",
                    &[],
                )
                .await
                .map_err(|e| crate::source::postgres::error_detail(&e))
        }
        .await;
        let rows = match listed {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for scratch databases of earlier drills");
                return Vec::new();
            }
        };
        let host = crate::lock::hostname();
        let mut out = Vec::new();
        for row in rows {
            let name: String = row.get(0);
            let comment: String = row.get(1);
            let busy: bool = row.get(2);
            let owner: serde_json::Value = serde_json::from_str(&comment).unwrap_or_default();
            if !database_owner_gone(&owner, &host, busy, Utc::now()) {
                if owner.is_null() || (owner["host"] != host.as_str() && owner["created"].is_null())
                {
                    tracing::warn!(database = %name, "a database named like a drill's scratch database has no owner comment with a creation time; it is left alone: drop it by hand if no drill is running");
                }
                continue;
            }
            let outcome = match drop_databases(&conn, std::slice::from_ref(&name)).await {
                Ok(()) => "removed".to_string(),
                Err(e) => format!("cannot remove: {e}"),
            };
            tracing::warn!(database = %name, %outcome, "scratch database left by an earlier drill");
            out.push(Leftover {
                path: format!("database/{name}").into(),
                drill: owner["drill"].as_str().map(str::to_string),
                outcome,
            });
        }
        out
    }
}

/// Whether the drill that made a scratch database (its comment, parsed)
/// is gone: on this host, its process no longer runs; elsewhere (another
/// pod), it was made more than [`STALE_HOURS`] ago and no session is in it
/// (`busy`: a long restore is still running). No owner: not known.
fn database_owner_gone(
    owner: &serde_json::Value,
    host: &str,
    busy: bool,
    now: DateTime<Utc>,
) -> bool {
    if owner["host"].as_str() == Some(host) {
        return !alive(
            owner["pid"].as_u64().unwrap_or(0) as u32,
            owner["process_start"].as_u64().unwrap_or(0),
        );
    }
    !busy
        && owner["created"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|c| now - c.with_timezone(&Utc) > chrono::Duration::hours(STALE_HOURS))
}

/// A scratch target made on another host is judged abandoned after this
/// long (its process cannot be looked at from here).
pub(crate) const STALE_HOURS: i64 = 24;

impl Drop for ScratchDatabases {
    /// An error, a panic or a signal still drops the databases (on a
    /// thread of its own: there is no async here).
    fn drop(&mut self) {
        if self.removed || self.names.is_empty() {
            return;
        }
        let conn = self.conn.clone();
        let names: Vec<String> = self.names.iter().map(|(_, n)| n.clone()).collect();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(drop_databases(&conn, &names))
        })
        .join();
        match dropped {
            Ok(Ok(())) => tracing::info!(databases = ?self.names, "scratch databases dropped"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot drop the scratch databases; the next drill drops them")
            }
            Err(_) => tracing::error!(
                "dropping the scratch databases panicked; the next drill drops them"
            ),
        }
    }
}

async fn drop_databases(conn: &PgConn, names: &[String]) -> Result<(), String> {
    let client = conn
        .connect(MAINTENANCE_DB)
        .await
        .map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    for name in names {
        let q = crate::source::postgres::quote_ident(name);
        if let Err(e) = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {q} WITH (FORCE)"))
            .await
        {
            errors.push(format!(
                "DROP DATABASE {q}: {}",
                crate::source::postgres::error_detail(&e)
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// `lifeboat_drill_<id>_<database>`, lower case, at most 63 bytes (a
/// PostgreSQL identifier), unique.
pub fn scratch_database_names(id: &str, databases: &[String]) -> Vec<(String, String)> {
    let base: String = format!("lifeboat_drill_{}", id.to_ascii_lowercase())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut taken = std::collections::BTreeSet::new();
    databases
        .iter()
        .enumerate()
        .map(|(i, db)| {
            let clean: String = db
                .to_ascii_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let mut name: String = format!("{base}_{clean}").chars().take(63).collect();
            if !taken.insert(name.clone()) {
                let suffix = format!("_{}", i + 1);
                name.truncate(name.len().min(63 - suffix.len()));
                name.push_str(&suffix);
                taken.insert(name.clone());
            }
            (db.clone(), name)
        })
        .collect()
}

const MARIADB: &str = "mariadb";
const MARIADB_PID: &str = "mariadbd.pid";

/// A running throwaway MariaDB server: `mariadb-install-db` and
/// `mariadbd` on a free 127.0.0.1 port, in `<parent>/lifeboat-drill-<id>`.
/// Lifeboat connects as `lifeboat_drill` with a random password over TCP;
/// the socket (root without a password, as installed) is inside the
/// folder, which only its owner can enter.
pub struct ScratchMariaDb {
    dir: PathBuf,
    child: Option<tokio::process::Child>,
    pub conn: MyConn,
    /// `mariadbd --version`.
    pub version: String,
    removed: bool,
}

impl ScratchMariaDb {
    pub async fn start(
        parent: &Path,
        id: &str,
        cfg: &ScratchMariaDbConfig,
    ) -> Result<ScratchMariaDb, ScratchError> {
        let tool = |names: &[&str]| {
            let found = match &cfg.bin_dir {
                Some(d) => my::find_tool(Some(d), names),
                None => my::find_tool(None, names)
                    .or_else(|_| my::find_tool(Some(Path::new("/usr/sbin")), names)),
            };
            found.map_err(|source| ScratchError::MariaDbTools { source })
        };
        let install_db = tool(&["mariadb-install-db", "mysql_install_db"])?;
        let mariadbd = tool(&["mariadbd", "mysqld"])?;
        let client = tool(&["mariadb", "mysql"])?;
        let run_as = if crate::restore::pitr::running_as_root() {
            Some(cfg.run_as.clone().unwrap_or_else(|| "mysql".into()))
        } else {
            None
        };
        let ids = match &run_as {
            Some(user) => Some(user_ids(user).await?),
            None => None,
        };
        // `mariadbd  Ver 10.11.6-MariaDB-0+deb12u1 for debian-linux-gnu ...`
        let version = tokio::process::Command::new(&mariadbd)
            .arg("--version")
            .output()
            .await
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).to_string();
                let mut words = text.split_whitespace();
                match words.by_ref().find(|w| *w == "Ver").and(words.next()) {
                    Some(v) if v.contains("MariaDB") => format!("MariaDB {v}"),
                    Some(v) => format!("MySQL {v}"),
                    None => text.trim().to_string(),
                }
            })
            .map_err(|source| ScratchError::Spawn {
                program: mariadbd.display().to_string(),
                source,
            })?;
        let dir = create_folder(parent, id)?;
        let mut scratch = ScratchMariaDb {
            dir: dir.clone(),
            child: None,
            conn: MyConn::new("127.0.0.1".into(), 0, SUPERUSER.into(), None),
            version,
            removed: false,
        };
        // From here on, dropping `scratch` removes the folder.
        write_owner(&dir, id, PathBuf::new(), run_as.clone(), MARIADB.into())?;
        let data = dir.join("data");
        let tmp = dir.join("tmp");
        for d in [&data, &tmp] {
            std::fs::create_dir(d).map_err(io("create", d))?;
        }
        if let Some((uid, gid)) = ids {
            for d in [&dir, &data, &tmp] {
                std::os::unix::fs::chown(d, Some(uid), Some(gid)).map_err(io("chown", d))?;
            }
        }
        let user_arg = run_as.as_ref().map(|u| format!("--user={u}"));
        let out = tokio::process::Command::new(&install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args(user_arg.iter())
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .await
            .map_err(|source| ScratchError::Spawn {
                program: install_db.display().to_string(),
                source,
            })?;
        if !out.status.success() {
            return Err(ScratchError::Initdb {
                data,
                detail: format!(
                    "{} {}",
                    last_lines(&out.stdout, 3),
                    last_lines(&out.stderr, 3)
                )
                .trim()
                .to_string(),
            });
        }
        let port = cfg.port.unwrap_or_else(free_port);
        let socket = dir.join("sock");
        let log = dir.join("error.log");
        let mut cmd = tokio::process::Command::new(&mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.join(MARIADB_PID).display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--port={port}"))
            .args(user_arg.iter())
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=128M",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        // The scratch server dies with lifeboat; its folder is swept at the
        // next start.
        let child =
            crate::process::spawn_child(&mut cmd).map_err(|source| ScratchError::Spawn {
                program: mariadbd.display().to_string(),
                source,
            })?;
        scratch.child = Some(child);
        let password = random_hex(16).map_err(io("read", Path::new("/dev/urandom")))?;
        // The account is made through the socket, the password on the
        // client's stdin, never in its arguments.
        let setup = format!(
            "CREATE USER '{SUPERUSER}'@'127.0.0.1' IDENTIFIED BY '{password}';\n\
             GRANT ALL ON *.* TO '{SUPERUSER}'@'127.0.0.1' WITH GRANT OPTION;\n\
             DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1', ''@'localhost';\n"
        );
        let began = std::time::Instant::now();
        loop {
            let exited = scratch
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                let logged = std::fs::read(&log).unwrap_or_default();
                let detail = format!("mariadbd exited ({status}): {}", last_lines(&logged, 4));
                let hint = if port_taken(&detail) || detail.contains("Address already in use") {
                    "; the port is in use: free it, or leave drill.mariadb.port out to use a free one"
                } else {
                    ""
                };
                return Err(ScratchError::StartMariaDb { port, detail, hint });
            }
            if socket.exists() && client_sql(&client, &socket, "SELECT 1;\n").await.is_ok() {
                client_sql(&client, &socket, &setup)
                    .await
                    .map_err(|detail| ScratchError::SetupMariaDb { port, detail })?;
                break;
            }
            if began.elapsed() > Duration::from_secs(120) {
                let logged = std::fs::read(&log).unwrap_or_default();
                return Err(ScratchError::StartMariaDb {
                    port,
                    detail: format!("not ready after 120 s: {}", last_lines(&logged, 4)),
                    hint: "",
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        scratch.conn = MyConn::new("127.0.0.1".into(), port, SUPERUSER.into(), Some(password));
        tracing::info!(dir = %dir.display(), port, version = %scratch.version, "scratch MariaDB server running");
        Ok(scratch)
    }

    /// The folder of this server.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server (SIGKILL: its data is thrown away) and removes the
    /// folder.
    pub async fn remove(mut self) -> Result<(), ScratchError> {
        self.removed = true;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        std::fs::remove_dir_all(&self.dir).map_err(io("remove", &self.dir))?;
        tracing::info!(dir = %self.dir.display(), "scratch MariaDB server removed");
        Ok(())
    }
}

impl Drop for ScratchMariaDb {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
            let began = std::time::Instant::now();
            while began.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::error!(dir = %self.dir.display(), error = %e, "cannot remove the scratch folder; the next drill removes it");
        } else {
            tracing::info!(dir = %self.dir.display(), "scratch MariaDB server removed");
        }
    }
}

/// Runs SQL through the client on the socket, as root (no password: the
/// freshly installed server's root, reachable only through the folder).
async fn client_sql(client: &Path, socket: &Path, sql: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(client);
    cmd.arg("--no-defaults")
        .arg(format!("--socket={}", socket.display()))
        .args(["-uroot", "--batch"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = crate::process::spawn_child(&mut cmd)
        .map_err(|e| format!("cannot start {}: {e}", client.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(sql.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(last_lines(&out.stderr, 2))
    }
}

/// Kills the mariadbd a killed drill left (its pid file, if that process
/// is a mariadbd), without an async runtime.
fn kill_mariadbd(dir: &Path) {
    let Some(pid) = std::fs::read_to_string(dir.join(MARIADB_PID))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return;
    };
    if !serves(pid, &dir.join("data"), &["mariadbd", "mysqld"]) {
        // A stale pid file: that pid is now another process.
        return;
    }
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let began = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && began.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` is a server of `data`: its name starts with one
/// of `names` and its arguments name that data directory (`-D DIR`, as
/// pg_ctl starts postgres, or `--datadir=DIR`). A pid file's process is
/// then the server of this folder, not a later process that got the same
/// pid. Both files are world-readable, also for a server that dropped
/// root (its cwd is not, without CAP_SYS_PTRACE).
fn serves(pid: u32, data: &Path, names: &[&str]) -> bool {
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

/// `chown -R` without following symbolic links.
fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), ScratchError> {
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
