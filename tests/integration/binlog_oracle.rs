//! A randomized oracle for MySQL/MariaDB point-in-time recovery.
//!
//! A load generator commits transactions one at a time and records, for
//! each, its GTID and a hash of the table after it. The commit times are
//! the server's own: the time stamped on each transaction's Xid event in
//! the binlog (read from the server's files with mariadb-binlog), which is
//! what `--until` compares with. Restores to seeded random whole seconds
//! and to the edges (a commit's own second, the second after it, just
//! after a dump started, the newest event, past it, far future, a
//! fraction of a second) are compared with the history; a gap matrix
//! removes files, data objects and the file in progress from the archive
//! and checks that every target restores exactly or is refused naming the
//! file, and that the advice printed restores exactly too.
//!
//! `LIFEBOAT_ORACLE_SEED=N` repeats a run; `LIFEBOAT_ORACLE_TARGETS=N`
//! (default 3) sets how many random instants are tried.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use mysql_async::prelude::Queryable;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::{mysql_source_yaml, Lifeboat, MariaDb, Repo, Run};
use crate::pitr_oracle::{random_targets, seed};

#[derive(Debug, Clone)]
struct Commit {
    gtid: String,
    /// Filled from the server's binlog: the Xid event's time and file.
    at: Option<DateTime<Utc>>,
    file: String,
    state: String,
}

#[derive(Debug, Default)]
struct History {
    initial: String,
    commits: Vec<Commit>,
}

impl History {
    /// What `--until t` must restore: every transaction whose commit is
    /// stamped before `t` (binlog times are whole seconds).
    fn at(&self, t: DateTime<Utc>) -> &str {
        self.commits
            .iter()
            .rev()
            .find(|c| c.at.expect("stamped") < t)
            .map_or(&self.initial, |c| &c.state)
    }

    /// The table after the last commit in a file before `file`.
    fn before_file(&self, file: &str) -> &str {
        self.commits
            .iter()
            .rev()
            .find(|c| c.file.as_str() < file)
            .map_or(&self.initial, |c| &c.state)
    }

    fn in_file(&self, file: &str) -> Vec<&Commit> {
        self.commits.iter().filter(|c| c.file == file).collect()
    }

    fn last(&self) -> &Commit {
        self.commits.last().expect("commits")
    }
}

const STATE_SQL: &str = "SELECT CONCAT(COUNT(*), ':', COALESCE(MD5(GROUP_CONCAT(CONCAT_WS(',', id, amount, note) ORDER BY id SEPARATOR ';')), '')) FROM shop.orders";

struct Generator {
    rt: tokio::runtime::Runtime,
    conn: mysql_async::Conn,
    rng: StdRng,
}

impl Generator {
    fn new(m: &MariaDb, seed: u64) -> Generator {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let conn = rt.block_on(async {
            let opts = mysql_async::OptsBuilder::default()
                .ip_or_hostname("127.0.0.1")
                .tcp_port(m.port)
                .user(Some("root"))
                .db_name(Some("shop"))
                .pass(Some(m.password.clone()));
            let mut c = mysql_async::Conn::new(opts)
                .await
                .expect("connect the load generator");
            c.query_drop("SET SESSION group_concat_max_len = 1073741824")
                .await
                .unwrap();
            c
        });
        Generator {
            rt,
            conn,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn state(&mut self) -> String {
        self.rt
            .block_on(self.conn.query_first::<String, _>(STATE_SQL))
            .unwrap()
            .unwrap()
    }

    /// `count` transactions with pauses that spread them over seconds.
    fn group(&mut self, h: &mut History, count: usize) {
        for _ in 0..count {
            let op = self.rng.gen_range(0..10);
            let n = self.rng.gen_range(1..20);
            let k = self.rng.gen_range(0..1000);
            let pause = self.rng.gen_range(0..400);
            let sql = match op {
                0..=5 => format!(
                    "INSERT INTO shop.orders (amount, note) SELECT seq + {k}, MD5(seq * {k}) FROM seq_1_to_{n}"
                ),
                6..=7 => format!("UPDATE shop.orders SET amount = amount + {k} WHERE id % {n} = 0"),
                _ => format!("DELETE FROM shop.orders WHERE id % 23 = {}", k % 23),
            };
            let (gtid, state) = self.rt.block_on(async {
                let c = &mut self.conn;
                c.query_drop("START TRANSACTION").await.unwrap();
                c.query_drop(&sql).await.unwrap();
                c.query_drop("COMMIT").await.unwrap();
                let gtid: String = c.query_first("SELECT @@last_gtid").await.unwrap().unwrap();
                let state: String = c.query_first(STATE_SQL).await.unwrap().unwrap();
                (gtid, state)
            });
            h.commits.push(Commit {
                gtid,
                at: None,
                file: String::new(),
                state,
            });
            std::thread::sleep(Duration::from_millis(pause));
        }
    }
}

/// GTID → (Xid event time, file), read from the server's own binlogs.
fn commit_times(m: &MariaDb) -> HashMap<String, (DateTime<Utc>, String)> {
    let mut out = HashMap::new();
    let files: Vec<String> = m
        .sql("", "SHOW BINARY LOGS")
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    for f in files {
        let o = Command::new("mariadb-binlog")
            .env("TZ", "UTC")
            .arg(m.binlog_dir().join(&f))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        let mut gtid = None;
        let mut after_at = false;
        for line in text.lines() {
            if after_at {
                if let Some(h) = lifeboat::kinds::mysql::binlog::event_header(line.as_bytes()) {
                    if let Some(g) = h.kind.strip_prefix("GTID ") {
                        gtid = g.split_whitespace().next().map(str::to_string);
                    } else if h.kind.starts_with("Xid") {
                        if let Some(g) = gtid.take() {
                            out.insert(
                                g,
                                (DateTime::from_timestamp(h.time, 0).unwrap(), f.clone()),
                            );
                        }
                    }
                }
            }
            after_at = line.starts_with("# at ");
        }
    }
    out
}

fn until(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S+00").to_string()
}

/// The next whole second after `t` (or `t` itself when whole).
fn ceil_second(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = DateTime::from_timestamp(t.timestamp(), 0).unwrap();
    if s == t {
        s
    } else {
        s + TimeDelta::seconds(1)
    }
}

struct Setup {
    repo: tempfile::TempDir,
    m: MariaDb,
    copy: MariaDb,
    lb: Lifeboat,
    archiver: std::process::Child,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.archiver.kill();
        let _ = self.archiver.wait();
    }
}

fn setup() -> Setup {
    let repo = tempfile::Builder::new()
        .prefix("lifeboat-myoracle-repo-")
        .tempdir()
        .unwrap();
    let m = MariaDb::start();
    m.sql("", "CREATE DATABASE shop");
    m.sql(
        "shop",
        "CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, amount INT NOT NULL, note VARCHAR(64)) ENGINE=InnoDB; \
         INSERT INTO orders (amount, note) SELECT seq, MD5(seq) FROM seq_1_to_200",
    );
    let lb = Lifeboat::with_source(
        Repo::Local(repo.path().join("repo")),
        &mysql_source_yaml(&m, "[shop]", None),
        &[("TEST_MYPASSWORD", &m.password)],
    );
    let archiver = lb.spawn(
        &[
            "binlog-archive",
            "--source",
            "business-db",
            "--interval",
            "1s",
        ],
        "archiver.log",
    );
    let copy = MariaDb::start();
    Setup {
        repo,
        m,
        copy,
        lb,
        archiver,
    }
}

fn dump(lb: &Lifeboat) -> serde_json::Value {
    let r = lb.run(&["backup", "--source", "business-db", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v[0].clone()
}

/// Waits until the archive holds every server file whole but the newest,
/// and the newest up to the server's current size.
fn wait_archived(s: &Setup) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let want: Vec<(String, u64)> =
            s.m.sql("", "SHOW BINARY LOGS")
                .lines()
                .map(|l| {
                    let mut f = l.split('\t');
                    (
                        f.next().unwrap().to_string(),
                        f.next().unwrap().parse().unwrap(),
                    )
                })
                .collect();
        let v =
            s.lb.run(&["binlog-verify", "--source", "business-db", "--json"]);
        let have: serde_json::Value = serde_json::from_str(&v.stdout).unwrap_or_default();
        let files = have["files"].as_array().cloned().unwrap_or_default();
        let done = want.iter().enumerate().all(|(i, (f, size))| {
            files.iter().any(|a| {
                a["file"] == f.as_str()
                    && a["bytes"].as_u64().unwrap_or(0) >= *size
                    && (a["complete"] == true || i + 1 == want.len())
            })
        });
        if done {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "binlogs not archived after 60 s: server {want:?}, archive {files:?}\n{}",
            s.lb.log("archiver.log")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

struct Oracle<'a> {
    s: &'a Setup,
    seed: u64,
}

impl Oracle<'_> {
    fn restore(&self, args: &[&str]) -> (Run, Option<String>) {
        self.s.copy.sql("", "DROP DATABASE IF EXISTS shop");
        let identity = self.s.lb.identity.display().to_string();
        let to = format!("mysql://root@127.0.0.1:{}/", self.s.copy.port);
        let mut all = vec![
            "restore",
            "--source",
            "business-db",
            "--identity",
            &identity,
            "--to",
            &to,
        ];
        all.extend_from_slice(args);
        let r = self
            .s
            .lb
            .run_env(&all, &[("MYSQL_PWD", &self.s.copy.password)]);
        let exists = self.s.copy.sql("", "SHOW DATABASES LIKE 'shop'") == "shop";
        let state = if r.code == 0 {
            Some(self.s.copy.sql(
                "",
                &format!("SET SESSION group_concat_max_len = 1073741824; {STATE_SQL}"),
            ))
        } else {
            assert!(
                !exists,
                "seed {}: a failed restore ({args:?}) touched the target: {}",
                self.seed, r.stderr
            );
            None
        };
        (r, state)
    }

    fn exact(&self, what: &str, args: &[&str], want: &str) -> Run {
        let (r, got) = self.restore(args);
        assert_eq!(
            r.code, 0,
            "seed {}: {what}: restore {args:?} failed\n{}\n{}",
            self.seed, r.stdout, r.stderr
        );
        assert_eq!(
            got.as_deref(),
            Some(want),
            "seed {}: {what}: restore {args:?} holds different data\n{}",
            self.seed,
            r.stdout
        );
        r
    }

    fn refused(&self, what: &str, args: &[&str], code: i32, fragments: &[&str]) -> Run {
        let (r, _) = self.restore(args);
        assert_eq!(
            r.code, code,
            "seed {}: {what}: restore {args:?} was not refused with {code}\n{}\n{}",
            self.seed, r.stdout, r.stderr
        );
        for f in fragments {
            assert!(
                r.stderr.contains(f),
                "seed {}: {what}: the refusal does not say {f:?}: {}",
                self.seed,
                r.stderr
            );
        }
        r
    }
}

/// The time quoted right after `prefix` in a message: `--until 'X'` → X.
fn advised(message: &str, prefix: &str) -> DateTime<Utc> {
    let q = message
        .split(prefix)
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no {prefix:?} in: {message}"));
    DateTime::parse_from_str(&format!("{q}00"), "%Y-%m-%d %H:%M:%S%z")
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .with_timezone(&Utc)
}

fn stamp(h: &mut History, m: &MariaDb) {
    let times = commit_times(m);
    for c in &mut h.commits {
        let (at, file) = times
            .get(&c.gtid)
            .unwrap_or_else(|| panic!("GTID {} not in the server's binlogs", c.gtid));
        c.at = Some(*at);
        c.file = file.clone();
    }
}

#[test]
fn binlog_pitr_to_random_seconds_and_edges_matches_the_commit_history() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let s = setup();
    let mut gen = Generator::new(&s.m, seed);
    let mut h = History::default();
    let dump1 = dump(&s.lb);
    h.initial = gen.state();
    gen.group(&mut h, 12);
    // The second dump's file opens a second or more after the first dump
    // finished: it is "too new" for a target at that first second.
    std::thread::sleep(Duration::from_millis(1100));
    s.m.sql("", "FLUSH BINARY LOGS");
    let dump2_started = Utc::now();
    let dump2 = dump(&s.lb);
    gen.group(&mut h, 12);
    s.m.sql("", "FLUSH BINARY LOGS");
    // The newest transactions stay in the file in progress.
    gen.group(&mut h, 12);
    stamp(&mut h, &s.m);
    wait_archived(&s);
    let oracle = Oracle { s: &s, seed };
    let dump1_done: DateTime<Utc> = dump1["finished_at"].as_str().unwrap().parse().unwrap();
    let first = ceil_second(dump1_done + TimeDelta::microseconds(1));
    let newest = h.last().at.unwrap();

    for i in 0..random_targets() {
        let span = (newest - first).num_seconds().max(0);
        let t = first + TimeDelta::seconds(rng.gen_range(0..=span));
        oracle.exact(
            &format!("random target {i}"),
            &["--until", &until(t)],
            h.at(t),
        );
    }
    // A commit's own second excludes it; the next second includes it.
    // (One whose next second is still inside the archive.)
    let inside: Vec<DateTime<Utc>> = h
        .commits
        .iter()
        .filter_map(|c| c.at)
        .filter(|&t| t > first && t < newest)
        .collect();
    assert!(
        !inside.is_empty(),
        "seed {seed}: the load spans one second only"
    );
    let c = inside[rng.gen_range(0..inside.len())];
    oracle.exact("a commit's own second", &["--until", &until(c)], h.at(c));
    let next = c + TimeDelta::seconds(1);
    oracle.exact(
        "the second after a commit",
        &["--until", &until(next)],
        h.at(next),
    );
    // Just after the second dump started: that dump was still running, so
    // the first one is rolled forward.
    let t = ceil_second(dump2_started);
    oracle.exact(
        "just after a dump started",
        &["--until", &until(t)],
        h.at(t),
    );
    // The latest exact target binlog-verify shows (the newest event of the
    // file in progress, or a later housekeeping event in it): exact; a
    // second later is refused, and both pieces of advice are exact.
    let identity = s.lb.identity.display().to_string();
    let v = s.lb.run(&[
        "binlog-verify",
        "--source",
        "business-db",
        "--identity",
        &identity,
    ]);
    v.ok();
    let exact_until = advised(&v.stdout, "exact up to --until '");
    assert!(
        exact_until >= newest,
        "seed {seed}: {exact_until} < {newest}: {}",
        v.stdout
    );
    oracle.exact(
        "the newest event's second",
        &["--until", &until(newest)],
        h.at(newest),
    );
    let r = oracle.refused(
        "after the archive's end",
        &["--until", &until(exact_until + TimeDelta::seconds(1))],
        4,
        &["beyond the last archived event", "--until latest"],
    );
    assert_eq!(
        advised(&r.stderr, "; --until '"),
        exact_until,
        "seed {seed}: {}",
        r.stderr
    );
    oracle.exact(
        "the advised latest exact time",
        &["--until", &until(exact_until)],
        h.at(exact_until),
    );
    oracle.exact(
        "--until latest (the advice)",
        &["--until", "latest"],
        &h.last().state,
    );
    // GTID targets: up to and including that transaction. One from before
    // the second dump (which already holds it: the first dump is rolled
    // forward) and one from after it.
    for (name, c) in [
        (
            "a GTID before the second dump",
            &h.commits[rng.gen_range(0..12)],
        ),
        (
            "a GTID after it",
            &h.commits[rng.gen_range(12..h.commits.len())],
        ),
    ] {
        oracle.exact(name, &["--until-gtid", &c.gtid], &c.state);
    }
    // The second dump forced for targets it already holds: refused (exit
    // 2) before anything is touched, by time, by position and by GTID.
    let dump2_id = dump2["id"].as_str().unwrap().to_string();
    let early = &h.commits[rng.gen_range(0..12)];
    let early_position = format!("{}:4", early.file);
    for (name, flag, value) in [
        ("a time", "--until", until(first)),
        ("a position", "--until-position", early_position),
        ("a GTID", "--until-gtid", early.gtid.clone()),
    ] {
        oracle.refused(
            &format!("--backup {dump2_id} forced for {name} it already holds"),
            &["--backup", &dump2_id, flag, &value],
            2,
            &["is too new for"],
        );
    }
    oracle.refused(
        "several GTIDs",
        &["--until-gtid", &format!("{},{}", early.gtid, h.last().gtid)],
        2,
        &["names several GTIDs"],
    );
    // A GTID the archive does not hold (yet): refused, naming the newest.
    let last_gtid = h.last().gtid.clone();
    let (d, srv, n) = lifeboat::kinds::mysql::binlog::parse_gtid(&last_gtid).unwrap();
    oracle.refused(
        "a GTID not archived",
        &["--until-gtid", &format!("{d}-{srv}-{}", n + 5)],
        4,
        &["is not in the archive", &last_gtid],
    );
    // binlog-verify and status show the same end, read with the key.
    let shown = newest.format("%Y-%m-%d %H:%M:%S").to_string();
    for args in [
        vec![
            "binlog-verify",
            "--source",
            "business-db",
            "--identity",
            &identity,
        ],
        vec!["status", "--no-probe", "--identity", &identity],
    ] {
        let r = s.lb.run(&args);
        r.ok();
        assert!(
            r.stdout.contains(&shown),
            "seed {seed}: {} does not show the newest event {shown}:\n{}",
            args[0],
            r.stdout
        );
    }
    oracle.refused(
        "far future",
        &["--until", "2999-01-01 00:00:00+00"],
        4,
        &["beyond the last archived event"],
    );
    // A fraction of a second: refused, and both neighbours it names restore exactly.
    let frac = format!("{}.5+00", c.format("%Y-%m-%d %H:%M:%S"));
    let r = oracle.refused(
        "a fractional target",
        &["--until", &frac],
        2,
        &["whole seconds"],
    );
    for t in [c, c + TimeDelta::seconds(1)] {
        assert!(
            r.stderr.contains(&until(t)),
            "seed {seed}: {} does not suggest {}",
            r.stderr,
            until(t)
        );
        oracle.exact("a suggested whole second", &["--until", &until(t)], h.at(t));
    }
}

fn move_aside(dir: &Path, aside: &Path, name: &str) {
    std::fs::rename(dir.join(name), aside.join(name)).unwrap();
}

#[test]
fn binlog_gap_matrix_restores_exactly_or_refuses_naming_the_file() {
    let seed = seed();
    let s = setup();
    let mut gen = Generator::new(&s.m, seed);
    let mut h = History::default();
    dump(&s.lb);
    h.initial = gen.state();
    for _ in 0..4 {
        gen.group(&mut h, 5);
        // Rotation moves on a second, so the next file's commits are
        // stamped later than the one before closed.
        std::thread::sleep(Duration::from_millis(1100));
        s.m.sql("", "FLUSH BINARY LOGS");
    }
    gen.group(&mut h, 5);
    stamp(&mut h, &s.m);
    wait_archived(&s);
    let oracle = Oracle { s: &s, seed };
    let mut files: Vec<String> = h.commits.iter().map(|c| c.file.clone()).collect();
    files.dedup();
    assert_eq!(files.len(), 5, "{files:?}");
    let dir = s.repo.path().join("repo/binlog/test/business-db");
    let aside = s.repo.path().join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    let first_at = |f: &str| h.in_file(f)[0].at.unwrap();
    let last_at = |f: &str| h.in_file(f).last().unwrap().at.unwrap();

    // A whole file missing, then only its data object missing.
    let hole = files[2].clone();
    let object = std::fs::read_dir(dir.join(&hole))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".age"))
        .unwrap();
    for (case, remove, why) in [
        ("file missing", hole.clone(), "is missing from the archive"),
        (
            "data object missing",
            format!("{hole}/{object}"),
            "is recorded but its data object",
        ),
    ] {
        if remove.contains('/') {
            std::fs::create_dir_all(aside.join(&hole)).unwrap();
        }
        move_aside(&dir, &aside, &remove);
        let before = last_at(&files[1]);
        oracle.exact(
            &format!("{case}: before the hole"),
            &["--until", &until(before)],
            h.at(before),
        );
        let missing = format!("binlog file {hole} {why}");
        for (name, t) in [
            ("inside the hole", last_at(&hole) + TimeDelta::seconds(1)),
            (
                "after the hole",
                first_at(&files[3]) + TimeDelta::seconds(1),
            ),
        ] {
            let r = oracle.refused(
                &format!("{case}: {name}"),
                &["--until", &until(t)],
                4,
                &[&missing, "--until latest-reachable"],
            );
            let t = advised(&r.stderr, "or --until '");
            oracle.exact(
                &format!("{case}: {name}: the advised --until"),
                &["--until", &until(t)],
                h.at(t),
            );
        }
        oracle.refused(
            &format!("{case}: latest"),
            &["--until", "latest"],
            4,
            &[&missing],
        );
        let r = oracle.exact(
            &format!("{case}: latest-reachable"),
            &["--until", "latest-reachable"],
            h.before_file(&hole),
        );
        assert!(r.stdout.contains(&hole), "{}", r.stdout);
        let v = s.lb.run(&["binlog-verify", "--source", "business-db"]);
        assert_eq!(v.code, 4, "{case}: {v:?}");
        assert!(v.stdout.contains(&hole), "{case}: {}", v.stdout);
        std::fs::rename(aside.join(&remove), dir.join(&remove)).unwrap();
    }

    // The file in progress not archived (yet): the archive ends at the
    // last whole file, and the server moved on when that one closed.
    let current = files[4].clone();
    s.archiver_stop();
    move_aside(&dir, &aside, &current);
    let r = oracle.refused(
        "a commit only in the unarchived file",
        &[
            "--until",
            &until(first_at(&current) + TimeDelta::seconds(1)),
        ],
        4,
        &["beyond the last archived event", "is not archived yet"],
    );
    let closed = advised(&r.stderr, "; --until '");
    // Everything in the whole files, nothing of the one never archived.
    assert_eq!(h.at(closed), h.before_file(&current), "seed {seed}");
    let r = oracle.exact(
        "the advised latest exact time (when the server left the last whole file)",
        &["--until", &until(closed)],
        h.at(closed),
    );
    assert!(
        r.stdout.contains("before your target"),
        "seed {seed}: {}",
        r.stdout
    );
    oracle.exact(
        "the advised --until latest",
        &["--until", "latest"],
        h.before_file(&current),
    );
}

impl Setup {
    /// Stops the archiver so that it does not store the file in progress
    /// again while a test has moved it aside.
    fn archiver_stop(&self) {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.archiver.id().to_string())
            .status()
            .unwrap();
        for _ in 0..100 {
            if std::fs::read_to_string(format!("/proc/{}/stat", self.archiver.id()))
                .map(|s| s.contains(") Z ") || s.is_empty())
                .unwrap_or(true)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
