//! Test harness: throwaway PostgreSQL clusters and Garage S3 servers on free
//! loopback ports in temp dirs, stopped on drop (also when a test panics),
//! and a runner for the lifeboat binary.

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

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

/// A single-node Garage S3 server with one key and one bucket.
pub struct Garage {
    dir: TempDir,
    child: Child,
    pub s3_port: u16,
    pub key_id: String,
    pub secret: String,
    pub bucket: String,
    config: PathBuf,
}

/// The garage binary: $GARAGE_BIN, PATH, or ~/.cargo/bin.
pub fn garage_bin() -> PathBuf {
    if let Ok(p) = std::env::var("GARAGE_BIN") {
        return p.into();
    }
    if let Ok(path) = std::env::var("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join("garage").exists() {
                return d.join("garage");
            }
        }
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cargo/bin/garage")
}

impl Garage {
    /// Starts Garage; ports taken by a parallel test are retried.
    pub fn start() -> Garage {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(g) => return g,
                Err(e) => last = e,
            }
        }
        panic!("garage did not start: {last}");
    }

    fn try_start() -> Result<Garage, String> {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-garage-")
            .tempdir()
            .unwrap();
        let rpc_port = free_port();
        let mut s3_port = free_port();
        while s3_port == rpc_port {
            s3_port = free_port();
        }
        let secret: String = (0..32).map(|_| format!("{:02x}", rand_byte())).collect();
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start garage ({}): {e}; run .ci/run or `cargo install garage --locked`",
                    garage_bin().display()
                )
            });
        let mut g = Garage {
            dir,
            child,
            s3_port,
            key_id: format!(
                "GK{}",
                (0..12)
                    .map(|_| format!("{:02x}", rand_byte()))
                    .collect::<String>()
            ),
            secret: (0..32).map(|_| format!("{:02x}", rand_byte())).collect(),
            bucket: "lifeboat-test".into(),
            config,
        };
        let node = g.wait_for_node()?;
        // Every setup step can fail if a parallel test took one of our ports
        // between `free_port` and bind; `start` then retries on new ports.
        g.try_admin(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        g.try_admin(&["layout", "apply", "--version", "1"])?;
        let (id, secret) = (g.key_id.clone(), g.secret.clone());
        g.try_admin(&["key", "import", "--yes", "-n", "test", &id, &secret])?;
        let bucket = g.bucket.clone();
        g.try_admin(&["bucket", "create", &bucket])?;
        g.try_admin(&[
            "bucket", "allow", "--read", "--write", "--owner", &bucket, "--key", "test",
        ])?;
        Ok(g)
    }

    /// The node id, once the server answers over RPC: `node id` alone reads
    /// the key from disk and succeeds before the server listens.
    fn wait_for_node(&mut self) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "garage exited ({status}): {}",
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
                ));
            }
            let out = Command::new(garage_bin())
                .arg("-c")
                .arg(&self.config)
                .args(["node", "id", "-q"])
                .output()
                .unwrap();
            if out.status.success() && self.try_admin(&["status"]).is_ok() {
                let s = String::from_utf8_lossy(&out.stdout);
                return Ok(s.trim().split('@').next().unwrap().to_string());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no node id after 30 s: {}",
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn try_admin(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .map_err(|e| format!("garage {}: cannot start: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "garage {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn admin(&self, args: &[&str]) -> String {
        let out = run_checked(
            Command::new(garage_bin())
                .arg("-c")
                .arg(&self.config)
                .args(args),
            &format!("garage {}", args.join(" ")),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn create_bucket(&self, name: &str) {
        self.admin(&["bucket", "create", name]);
        self.admin(&[
            "bucket", "allow", "--read", "--write", "--owner", name, "--key", "test",
        ]);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Stops the server (an outage); `resume` brings it back with its data
    /// on the same ports.
    pub fn pause(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn resume(&mut self) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        self.child = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("restart garage");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_err() {
            assert!(Instant::now() < deadline, "garage did not come back");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A store for direct inspection from tests.
    pub async fn store(&self, prefix: &str) -> lifeboat::storage::S3Store {
        lifeboat::storage::S3Store::connect(&lifeboat::storage::s3::S3Config {
            bucket: self.bucket.clone(),
            prefix: prefix.to_string(),
            endpoint: Some(self.endpoint()),
            region: Some("garage".into()),
            path_style: true,
            credentials: Some((
                self.key_id.clone(),
                lifeboat::policy::Secret::new(self.secret.clone()),
            )),
            part_size: 8 << 20,
            parts_in_flight: 4,
            request_timeout: Duration::from_secs(30),
            min_throughput: 1 << 20,
        })
        .await
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_byte() -> u8 {
    rand::random()
}

/// Where a test's repository lives.
pub enum Repo<'a> {
    Local(PathBuf),
    Garage(&'a Garage, &'a str),
}

/// A working folder with a key pair, a policy and the environment lifeboat
/// needs; runs the lifeboat binary.
pub struct Lifeboat {
    pub dir: TempDir,
    pub identity: PathBuf,
    pub recipient: String,
    pub policy: PathBuf,
    pub env: Vec<(String, String)>,
    /// Run lifeboat as the postgres user (see `for_postgres_user`).
    pub as_postgres: bool,
}

impl Lifeboat {
    /// A policy with one PostgreSQL source `main-db` on `pg`.
    pub fn new(repo: Repo<'_>, pg: &PgCluster, databases: &str) -> Lifeboat {
        Self::with_source(
            repo,
            &pg_source_yaml(pg, databases, None),
            &[("TEST_PGPASSWORD", &pg.password)],
        )
    }

    /// A policy with the given `sources:` items.
    pub fn with_source(repo: Repo<'_>, sources: &str, env: &[(&str, &str)]) -> Lifeboat {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-run-")
            .tempdir()
            .unwrap();
        let identity = dir.path().join("lifeboat.key");
        let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .arg("keygen")
            .arg("--out")
            .arg(&identity)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let recipient = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let mut envs: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let repo_yaml = match repo {
            Repo::Local(path) => format!("  url: {}\n", path.display()),
            Repo::Garage(g, prefix) => {
                envs.push(("TEST_S3_KEY".into(), g.key_id.clone()));
                envs.push(("TEST_S3_SECRET".into(), g.secret.clone()));
                format!(
                    "  url: s3://{}/{prefix}\n  endpoint: {}\n  region: garage\n  path_style: true\n  \
                     access_key_id: {{ env: TEST_S3_KEY }}\n  secret_access_key: {{ env: TEST_S3_SECRET }}\n",
                    g.bucket,
                    g.endpoint()
                )
            }
        };
        // The run history goes to this folder, never to the user's own catalog.
        envs.push((
            "LIFEBOAT_CATALOG".into(),
            dir.path().join("catalog.db").display().to_string(),
        ));
        let policy = dir.path().join("policy.yaml");
        std::fs::write(
            &policy,
            format!(
                "name: test\nrepository:\n{repo_yaml}encryption:\n  recipients: [{recipient}]\nsources:\n{sources}"
            ),
        )
        .unwrap();
        Lifeboat {
            dir,
            identity,
            recipient,
            policy,
            env: envs,
            as_postgres: false,
        }
    }

    /// Makes this folder usable by the postgres user: S3 credentials move
    /// from environment variables to files (a server's archive_command does
    /// not see the test's environment), and the folder is given to postgres.
    /// Runs with `as_postgres` then go through `runuser`.
    pub fn for_postgres_user(mut self) -> Lifeboat {
        let mut policy = std::fs::read_to_string(&self.policy).unwrap();
        for (var, file) in [("TEST_S3_KEY", "s3-key"), ("TEST_S3_SECRET", "s3-secret")] {
            if let Some((_, v)) = self.env.iter().find(|(k, _)| k == var) {
                let path = self.dir.path().join(file);
                std::fs::write(&path, v).unwrap();
                policy = policy.replace(
                    &format!("{{ env: {var} }}"),
                    &format!("{{ file: {} }}", path.display()),
                );
            }
        }
        std::fs::write(&self.policy, policy).unwrap();
        self.env.retain(|(k, _)| !k.starts_with("TEST_S3_"));
        chown_to_postgres(self.dir.path());
        self.as_postgres = true;
        self
    }

    /// The archive_command for this policy.
    pub fn archive_command(&self) -> String {
        format!(
            "{} wal-push --policy {} %p",
            env!("CARGO_BIN_EXE_lifeboat"),
            self.policy.display()
        )
    }

    /// Runs lifeboat with these arguments (`--policy` added when `policy`).
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Run {
        let mut cmd = if self.as_postgres && running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", env!("CARGO_BIN_EXE_lifeboat")]);
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        };
        cmd.args(args);
        if args
            .first()
            .is_some_and(|a| *a != "keygen" && *a != "policy")
        {
            cmd.arg("--policy").arg(&self.policy);
        }
        cmd.env_remove("PGPASSWORD").env("RUST_LOG", "info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run lifeboat");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            args: args.join(" "),
        }
    }

    /// Starts lifeboat in the background (a long-running command); its
    /// output goes to files in this folder.
    pub fn spawn(&self, args: &[&str], log_name: &str) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
        cmd.args(args).arg("--policy").arg(&self.policy);
        cmd.env_remove("PGPASSWORD").env("RUST_LOG", "info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let log = std::fs::File::create(self.dir.path().join(log_name)).unwrap();
        cmd.stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn lifeboat")
    }

    pub fn log(&self, log_name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(log_name)).unwrap_or_default()
    }

    /// `lifeboat restore` of source `main-db` into database `db` on `pg`,
    /// with this folder's identity and the cluster's password.
    pub fn restore(&self, pg: &PgCluster, db: &str, extra: &[&str]) -> Run {
        let identity = self.identity.display().to_string();
        let url = pg.url(db);
        let mut args = vec![
            "restore",
            "--source",
            "main-db",
            "--identity",
            &identity,
            "--to",
            &url,
        ];
        args.extend_from_slice(extra);
        self.run_env(&args, &[("PGPASSWORD", &pg.password)])
    }

    /// `lifeboat verify --read-data` with this folder's identity.
    pub fn verify_read_data(&self) -> Run {
        let identity = self.identity.display().to_string();
        self.run(&["verify", "--read-data", "--identity", &identity])
    }

    /// The ids of listed backups.
    pub fn backup_ids(&self) -> Vec<String> {
        let r = self.run(&["list", "--json"]);
        r.ok();
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
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

/// The outcome of one lifeboat run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub args: String,
}

impl Run {
    /// Asserts success and returns self.
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "lifeboat {} failed:\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        self
    }

    /// Asserts this exit code and that stderr contains every fragment.
    pub fn fails_with(&self, code: i32, fragments: &[&str]) -> &Self {
        assert_eq!(
            self.code, code,
            "lifeboat {}: expected exit {code}\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        let all = format!("{}{}", self.stdout, self.stderr);
        for f in fragments {
            assert!(
                all.contains(f),
                "lifeboat {}: expected '{f}' in output:\n{all}",
                self.args
            );
        }
        self
    }
}

/// The repository's rich test schema: several schemas, many tables,
/// indexes, sequences, views, functions, triggers, enums, partitions,
/// binary data, unicode and large objects.
pub fn rich_fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/integration/fixtures/rich.sql")
}

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
