//! A single-node Garage S3 server ([`Garage`]) for the tests that need an
//! S3 repository, and where its binary is found.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{free_port, run_checked};

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
