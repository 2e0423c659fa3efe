//! Throwaway MariaDB servers ([`MariaDb`]) and a policy's `sources:` item
//! for one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{free_port, run_checked, running_as_root};

/// mariadbd: Debian keeps it in /usr/sbin, which a non-root PATH lacks.
fn mariadbd_bin() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/mariadbd");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("mariadbd")
    }
}

/// A throwaway MariaDB server (mariadb-install-db + mariadbd) on a free
/// port, with binlogs in ROW format unless asked otherwise, and a root
/// account reachable over TCP with `password`.
pub struct MariaDb {
    dir: TempDir,
    child: Child,
    pub port: u16,
    pub password: String,
    args: Vec<String>,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        Self::start_with(true)
    }

    pub fn start_with(binlog: bool) -> MariaDb {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(binlog) {
                Ok(m) => return m,
                Err(e) => last = e,
            }
        }
        panic!("mariadbd did not start: {last}");
    }

    fn try_start(binlog: bool) -> Result<MariaDb, String> {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-maria-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // Each server its own tmpdir: parallel bootstraps collide in /tmp.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        if running_as_root() {
            run_checked(
                Command::new("chown")
                    .arg("-R")
                    .arg("mysql:mysql")
                    .arg(dir.path()),
                "chown mariadb dir",
            );
        }
        run_checked(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .args([
                    "--user=mysql",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ]),
            "mariadb-install-db",
        );
        let port = free_port();
        let sock = dir.path().join("sock");
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", data.display()),
            format!("--tmpdir={}", tmp.display()),
            format!("--socket={}", sock.display()),
            format!("--pid-file={}", dir.path().join("pid").display()),
            format!("--log-error={}", dir.path().join("error.log").display()),
            format!("--port={port}"),
            "--user=mysql".into(),
            "--bind-address=127.0.0.1".into(),
            "--innodb-buffer-pool-size=64M".into(),
            "--innodb-log-file-size=32M".into(),
            "--skip-name-resolve".into(),
        ];
        if binlog {
            args.push(format!("--log-bin={}", data.join("binlog").display()));
            args.extend([
                "--server-id=1".to_string(),
                "--binlog-format=ROW".to_string(),
            ]);
        }
        let child = Command::new(mariadbd_bin())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start mariadbd: {e}"))?;
        let mut m = MariaDb {
            dir,
            child,
            port,
            password: "lifeboat-maria-pw".into(),
            args,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = m.child.try_wait() {
                return Err(format!("mariadbd exited ({status}): {}", m.error_log()));
            }
            let ok = Command::new("mariadb")
                .arg("--no-defaults")
                .arg(format!("--socket={}", sock.display()))
                .args(["-uroot", "-e", "SELECT 1"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("mariadbd not ready after 60 s: {}", m.error_log()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        run_checked(
            Command::new("mariadb")
                .arg("--no-defaults")
                .arg(format!("--socket={}", sock.display()))
                .args(["-uroot", "-e"])
                .arg(format!(
                    "CREATE OR REPLACE USER 'root'@'127.0.0.1' IDENTIFIED BY '{pw}'; \
                     GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;",
                    pw = m.password
                )),
            "create the TCP root account",
        );
        Ok(m)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// A clean shutdown (SIGTERM) and a start on the same data and port.
    pub fn restart(&mut self) {
        run_checked(
            Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string()),
            "kill -TERM mariadbd",
        );
        let _ = self.child.wait();
        self.child = Command::new(mariadbd_bin())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("restart mariadbd");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Command::new("mariadb")
            .args([
                "--no-defaults",
                "-h",
                "127.0.0.1",
                "-uroot",
                "-e",
                "SELECT 1",
            ])
            .arg(format!("-P{}", self.port))
            .env("MYSQL_PWD", &self.password)
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not come back: {}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs SQL over TCP as root and returns tab-separated output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let mut cmd = Command::new("mariadb");
        cmd.arg("--no-defaults")
            .args([
                "-h",
                "127.0.0.1",
                "-uroot",
                "--batch",
                "--skip-column-names",
                "--default-character-set=utf8mb4",
            ])
            .arg(format!("-P{}", self.port))
            .env("MYSQL_PWD", &self.password);
        if !db.is_empty() {
            cmd.arg(db);
        }
        let out = run_checked(
            cmd.arg("-e").arg(sql),
            &format!("mariadb: {}", &sql[..sql.len().min(200)]),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The binlog files the server lists (`SHOW BINARY LOGS`).
    pub fn binlog_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `sources:` item for a MariaDB server, the password from TEST_MYPASSWORD.
pub fn mysql_source_yaml(m: &MariaDb, databases: &str, bin_dir: Option<&Path>) -> String {
    let mut s = format!(
        "  - name: business-db\n    mysql:\n      host: 127.0.0.1\n      port: {}\n      user: root\n      \
         password: {{ env: TEST_MYPASSWORD }}\n      databases: {databases}\n",
        m.port
    );
    if let Some(b) = bin_dir {
        s.push_str(&format!("      bin_dir: {}\n", b.display()));
    }
    s
}
