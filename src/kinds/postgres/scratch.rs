//! A throwaway PostgreSQL cluster: initdb and pg_ctl on a free loopback port, or a restored base backup started in place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::drill::scratch::{
    as_user, chown_tree, create_folder, free_port, io, last_lines, port_taken, random_hex, serves,
    user_ids, write_owner, ScratchError, SUPERUSER,
};
use crate::kinds::postgres::source::{PgConn, PgTools};
use crate::policy::{ScratchPostgresConfig, Secret};

pub(crate) fn postgres_server() -> String {
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
        let run_as = if crate::kinds::postgres::pitr::running_as_root() {
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
    /// and promotes ([`crate::kinds::postgres::pitr::wait_for_promotion`] waits).
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
                                detail: crate::kinds::postgres::source::error_detail(&e),
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
                .map_err(|e| crate::kinds::postgres::source::error_detail(&e))
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
pub(super) fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
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
pub(super) fn blocking_pg_ctl(pg_ctl: &Path, run_as: Option<&str>) -> std::process::Command {
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
pub(crate) fn stop_blocking(data: &Path, pg_ctl: &Path, run_as: Option<&str>) {
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
pub(super) fn kill_postmaster(data: &Path, pg_ctl: &Path, run_as: Option<&str>) {
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
