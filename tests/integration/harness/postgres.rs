//! Throwaway PostgreSQL clusters ([`PgCluster`]), table locks held by an
//! open transaction ([`TableLock`]), restored data directories
//! ([`RestoredDir`]) and the helpers around them: the server binaries, the
//! `postgres` system user, a policy's `sources:` item.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use super::{free_port, run_checked, running_as_root};

/// The newest PostgreSQL server bin folder (Debian layout), or PATH.
pub fn pg_bin() -> PathBuf {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    for v in versions.iter().rev() {
        let dir = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    PathBuf::new()
}

/// A command run as the cluster's owner.
fn as_pg_owner(program: &Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A throwaway PostgreSQL cluster with password authentication.
pub struct PgCluster {
    dir: TempDir,
    pub port: u16,
    pub password: String,
    pub bin: PathBuf,
    stopped: bool,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        Self::start_with_password("lifeboat-test-pw")
    }

    pub fn start_with_password(password: &str) -> PgCluster {
        Self::start_with(password, "")
    }

    /// A cluster whose postgresql.conf ends with `extra_conf` (WAL
    /// archiving settings for point-in-time tests).
    pub fn start_with(password: &str, extra_conf: &str) -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-pg-")
            .tempdir()
            .unwrap();
        if running_as_root() {
            run_checked(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(dir.path()),
                "chown cluster dir",
            );
        }
        let bin = pg_bin();
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).unwrap();
        if running_as_root() {
            run_checked(
                Command::new("chown").arg("postgres").arg(&pwfile),
                "chown pwfile",
            );
        }
        let data = dir.path().join("data");
        run_checked(
            as_pg_owner(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "scram-sha-256",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ])
                .arg(format!("--pwfile={}", pwfile.display())),
            "initdb",
        );
        std::fs::remove_file(&pwfile).unwrap();
        if !extra_conf.is_empty() {
            let conf = data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).unwrap();
            text.push('\n');
            text.push_str(extra_conf);
            text.push('\n');
            std::fs::write(&conf, text).unwrap();
        }
        let port = free_port();
        let mut cluster = PgCluster {
            dir,
            port,
            password: password.to_string(),
            bin,
            stopped: true,
        };
        cluster.start_server();
        cluster
    }

    /// Starts the server; a port taken between choosing and binding it (by
    /// a test running in parallel) is retried with another port.
    fn start_server(&mut self) {
        for attempt in 1..=3 {
            match self.try_start_server() {
                Ok(()) => return,
                Err(e) if attempt < 3 => {
                    eprintln!("pg_ctl start on port {} failed, retrying: {e}", self.port);
                    self.port = free_port();
                }
                Err(e) => panic!("pg_ctl start failed: {e}\n{}", self.log()),
            }
        }
    }

    fn try_start_server(&mut self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        let out = as_pg_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-o")
            .arg(opts)
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        self.stopped = false;
        Ok(())
    }

    /// Stops the server at once, like a crash (`pg_ctl stop -m immediate`).
    pub fn kill(&mut self) {
        if !self.stopped {
            let _ = as_pg_owner(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.stopped = true;
        }
    }

    /// Stops the server cleanly (a shutdown checkpoint, and the archiver
    /// gets to push what is ready).
    pub fn stop(&mut self) {
        if !self.stopped {
            run_checked(
                as_pg_owner(&self.bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(self.dir.path().join("data"))
                    .args(["-m", "fast", "-w", "stop"]),
                "pg_ctl stop",
            );
            self.stopped = true;
        }
    }

    /// Runs SQL against another server (a restored copy) with this
    /// cluster's password.
    pub fn psql_at(&self, port: u16, db: &str, sql: &str) -> String {
        let out = run_checked(
            self.client_cmd("psql", db)
                .env("PGPORT", port.to_string())
                .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]),
            &format!("psql on port {port} {db}: {}", &sql[..sql.len().min(200)]),
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Runs a client program (pgbench) against this cluster.
    pub fn client(&self, program: &str, db: &str, args: &[&str]) -> String {
        let out = run_checked(
            self.client_cmd(program, db).args(args),
            &format!("{program} {}", args.join(" ")),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn client_cmd(&self, program: &str, db: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.env("PGPASSWORD", &self.password)
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", db);
        c
    }

    /// Runs SQL with psql (stop on first error) and returns unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = run_checked(
            self.client_cmd("psql", db).args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ]),
            &format!("psql on {db}: {}", &sql[..sql.len().min(200)]),
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Runs an SQL file with psql.
    pub fn psql_file(&self, db: &str, file: &Path) {
        run_checked(
            self.client_cmd("psql", db)
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
                .arg(file),
            &format!("psql -f {}", file.display()),
        );
    }

    /// A schema-only dump, for comparing structure.
    pub fn schema_dump(&self, db: &str) -> String {
        let out = run_checked(
            self.client_cmd("pg_dump", db)
                .args(["--schema-only", "--no-owner"]),
            "pg_dump --schema-only",
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            // Newer minor releases print a random per-dump key here.
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Per-table checksums (md5 of all rows in a stable order) and one for
    /// the large objects: two databases with equal sums hold equal data.
    pub fn checksums(&self, db: &str) -> Vec<(String, String)> {
        let tables = self.psql(
            db,
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' \
             AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname !~ '^pg_' ORDER BY 1",
        );
        let mut out = Vec::new();
        for t in tables.lines() {
            let sum = self.psql(
                db,
                &format!("SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '') FROM {t} x"),
            );
            out.push((t.to_string(), sum));
        }
        let lo = self.psql(
            db,
            "SELECT count(*) || ':' || coalesce(md5(string_agg(oid::text || md5(lo_get(oid)), ',' ORDER BY oid)), '') FROM pg_largeobject_metadata",
        );
        out.push(("large objects".into(), lo));
        out
    }

    /// The server log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

/// A table held in ACCESS EXCLUSIVE mode by an open transaction (a
/// migration), until dropped.
pub struct TableLock {
    holder: Child,
    sql: Option<std::process::ChildStdin>,
}

impl PgCluster {
    /// Locks `table` of `db` in ACCESS EXCLUSIVE mode and returns once the
    /// lock is granted.
    pub fn lock_table(&self, db: &str, table: &str) -> TableLock {
        use std::io::Write;
        let mut holder = self
            .client_cmd("psql", db)
            .args(["-X", "-q"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut sql = holder.stdin.take().unwrap();
        writeln!(sql, "BEGIN;\nLOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;").unwrap();
        sql.flush().unwrap();
        let granted = format!(
            "SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass \
             AND mode = 'AccessExclusiveLock' AND granted"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.psql(db, &granted) != "1" {
            assert!(
                std::time::Instant::now() < deadline,
                "the lock on {table} was never granted"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        TableLock {
            holder,
            sql: Some(sql),
        }
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        // End of input: psql exits and the transaction rolls back.
        drop(self.sql.take());
        let _ = self.holder.wait();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A data directory a test restored into, and the server lifeboat may have
/// started there: stopped and removed when dropped.
pub struct RestoredDir {
    pub path: PathBuf,
    _parent: TempDir,
}

impl RestoredDir {
    /// A not-yet-existing data directory path in a folder the postgres
    /// user owns.
    pub fn new() -> RestoredDir {
        let parent = tempfile::Builder::new()
            .prefix("lifeboat-restored-")
            .tempdir()
            .unwrap();
        chown_to_postgres(parent.path());
        RestoredDir {
            path: parent.path().join("data"),
            _parent: parent,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path.join("lifeboat-recovery.log")).unwrap_or_default()
    }

    /// Stops the server (a clean shutdown, so it archives what is ready).
    pub fn stop(&self) {
        if self.path.join("postmaster.pid").exists() {
            let _ = as_pg_owner(&pg_bin().join("pg_ctl"))
                .arg("-D")
                .arg(&self.path)
                .args(["-m", "fast", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for RestoredDir {
    fn drop(&mut self) {
        if self.path.join("postmaster.pid").exists() {
            let _ = as_pg_owner(&pg_bin().join("pg_ctl"))
                .arg("-D")
                .arg(&self.path)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Gives a folder tree to the postgres user (tests run as root; the server,
/// its archive_command and lifeboat restore --start run as postgres).
pub fn chown_to_postgres(path: &Path) {
    if running_as_root() {
        run_checked(
            Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(path),
            "chown -R postgres",
        );
    }
}

/// A `sources:` item for a PostgreSQL cluster.
pub fn pg_source_yaml(pg: &PgCluster, databases: &str, bin_dir: Option<&Path>) -> String {
    let mut s = format!(
        "  - name: main-db\n    postgres:\n      host: 127.0.0.1\n      port: {}\n      user: postgres\n      \
         password: {{ env: TEST_PGPASSWORD }}\n      databases: {databases}\n",
        pg.port
    );
    if let Some(b) = bin_dir {
        s.push_str(&format!("      bin_dir: {}\n", b.display()));
    }
    s
}
