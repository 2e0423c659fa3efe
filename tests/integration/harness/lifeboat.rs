//! The lifeboat CLI driver: a working folder with keys and a policy
//! ([`Lifeboat`]) over a repository ([`Repo`]), and the outcome of one run
//! ([`Run`]).

use std::path::PathBuf;
use std::process::{Child, Command};

use tempfile::TempDir;

use super::{chown_to_postgres, pg_source_yaml, running_as_root, Garage, PgCluster};

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
