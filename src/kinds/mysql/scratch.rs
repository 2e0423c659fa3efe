//! A throwaway MariaDB server: mariadb-install-db and mariadbd on a free loopback port, in a folder of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::drill::scratch::{
    create_folder, free_port, io, last_lines, port_taken, random_hex, serves, user_ids,
    write_owner, ScratchError, SUPERUSER,
};
use crate::kinds::mysql::source::{self as my, MyConn};
use crate::policy::ScratchMariaDbConfig;

pub(crate) const MARIADB: &str = "mariadb";
pub(super) const MARIADB_PID: &str = "mariadbd.pid";

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
        let run_as = if crate::kinds::postgres::pitr::running_as_root() {
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
pub(super) async fn client_sql(client: &Path, socket: &Path, sql: &str) -> Result<(), String> {
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
pub(crate) fn kill_mariadbd(dir: &Path) {
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
