//! A randomized oracle for PostgreSQL point-in-time recovery.
//!
//! A load generator writes transactions one at a time and records, for
//! each, its commit timestamp as the server stamped it (the same value the
//! commit record carries: `track_commit_timestamp`), the WAL segment it
//! went into, and a hash of the table after it. Restores to seeded random
//! instants and to the edges (exactly a commit's timestamp, a microsecond
//! either side, just after a base backup started, after the newest commit,
//! far in the future) are then compared with what the history says the
//! table held then. A gap matrix removes segments from the archive and
//! checks that every target either restores exactly or is refused naming
//! the missing segment, and that the advice printed restores exactly too.
//!
//! `LIFEBOAT_ORACLE_SEED=N` repeats a run; `LIFEBOAT_ORACLE_TARGETS=N`
//! (default 3) sets how many random instants are tried.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::{chown_to_postgres, free_port, Lifeboat, PgCluster, Repo, RestoredDir, Run};
use crate::pitr::{archiving_with, contents, restore, switch_and_wait};

pub(crate) fn seed() -> u64 {
    let seed = std::env::var("LIFEBOAT_ORACLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("oracle seed {seed}: LIFEBOAT_ORACLE_SEED={seed} repeats this run");
    seed
}

pub(crate) fn random_targets() -> usize {
    std::env::var("LIFEBOAT_ORACLE_TARGETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// One committed transaction.
#[derive(Debug, Clone)]
struct Commit {
    at: DateTime<Utc>,
    /// The WAL segment its records went into.
    segment: String,
    /// count:md5 of the table right after it committed.
    state: String,
}

/// What the generator saw: the table before the first recorded commit,
/// then each commit in order.
#[derive(Debug, Default)]
struct History {
    initial: String,
    commits: Vec<Commit>,
}

impl History {
    /// What a restore to `t` must hold: every transaction committed at or
    /// before `t` (recovery_target_inclusive).
    fn at(&self, t: DateTime<Utc>) -> &str {
        self.commits
            .iter()
            .rev()
            .find(|c| c.at <= t)
            .map_or(&self.initial, |c| &c.state)
    }

    /// The table after the last commit in a segment before `segment`.
    fn before_segment(&self, segment: &str) -> &str {
        self.commits
            .iter()
            .rev()
            .find(|c| c.segment.as_str() < segment)
            .map_or(&self.initial, |c| &c.state)
    }

    fn in_segment(&self, segment: &str) -> Vec<&Commit> {
        self.commits
            .iter()
            .filter(|c| c.segment == segment)
            .collect()
    }

    fn last(&self) -> &Commit {
        self.commits.last().expect("commits")
    }
}

const STATE_SQL: &str = "SELECT count(*) || ':' || coalesce(md5(string_agg(id || ',' || amount || ',' || note, ';' ORDER BY id)), '') FROM orders";

fn parse_utc(s: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("not a time: {s}: {e}"))
        .and_utc()
}

fn until(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

/// Writes `count` transactions (inserts, updates, deletes of random size,
/// with random pauses) and records each; a segment switch ends the group
/// so each group lies in segments of its own.
struct Generator {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    rng: StdRng,
}

impl Generator {
    fn new(pg: &PgCluster, seed: u64) -> Generator {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(
                &format!(
                    "host=127.0.0.1 port={} user=postgres password={} dbname=app",
                    pg.port, pg.password
                ),
                tokio_postgres::NoTls,
            )
            .await
            .expect("connect the load generator");
            tokio::spawn(conn);
            client
        });
        Generator {
            rt,
            client,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn state(&self) -> String {
        self.rt.block_on(async {
            let row = self.client.query_one(STATE_SQL, &[]).await.unwrap();
            row.get::<_, String>(0)
        })
    }

    fn group(&mut self, h: &mut History, count: usize) {
        for _ in 0..count {
            let op = self.rng.gen_range(0..10);
            let n = self.rng.gen_range(1..20);
            let k = self.rng.gen_range(0..1000);
            let pause = self.rng.gen_range(0..25);
            let sql = match op {
                0..=5 => format!(
                    "INSERT INTO orders (amount, note) SELECT g + {k}, md5((g * {k})::text) FROM generate_series(1, {n}) g"
                ),
                6..=7 => format!("UPDATE orders SET amount = amount + {k} WHERE id % {n} = 0"),
                _ => format!("DELETE FROM orders WHERE id % 23 = {}", k % 23),
            };
            let c = self.rt.block_on(async {
                let c = &self.client;
                c.batch_execute("BEGIN").await.unwrap();
                c.batch_execute(&sql).await.unwrap();
                let xid: String = c
                    .query_one("SELECT txid_current()::text", &[])
                    .await
                    .unwrap()
                    .get(0);
                c.batch_execute("COMMIT").await.unwrap();
                let row = c
                    .query_one(
                        &format!(
                            "SELECT to_char(pg_xact_commit_timestamp('{xid}'::xid) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), \
                             pg_walfile_name(pg_current_wal_insert_lsn()), ({STATE_SQL})"
                        ),
                        &[],
                    )
                    .await
                    .unwrap();
                Commit {
                    at: parse_utc(&row.get::<_, String>(0)),
                    segment: row.get(1),
                    state: row.get(2),
                }
            });
            h.commits.push(c);
            std::thread::sleep(Duration::from_millis(pause));
        }
        self.rt.block_on(async {
            self.client
                .batch_execute("SELECT pg_switch_wal()")
                .await
                .unwrap()
        });
    }
}

/// A cluster archiving into a local repository, with commit timestamps.
fn setup() -> (tempfile::TempDir, PgCluster, Lifeboat) {
    let repo = tempfile::Builder::new()
        .prefix("lifeboat-oracle-repo-")
        .tempdir()
        .unwrap();
    chown_to_postgres(repo.path());
    // No autovacuum: its transactions would be the archive's newest.
    let (pg, lb) = archiving_with(
        Repo::Local(repo.path().join("repo")),
        "track_commit_timestamp = on\nautovacuum = off",
    );
    pg.psql(
        "app",
        "INSERT INTO orders (amount, note) SELECT g, md5(g::text) FROM generate_series(1, 200) g",
    );
    (repo, pg, lb)
}

fn base_backup(lb: &Lifeboat) -> serde_json::Value {
    let r = lb.run(&["backup", "--source", "main-db", "--kind", "base", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v[0].clone()
}

fn server_now(pg: &PgCluster) -> DateTime<Utc> {
    parse_utc(&pg.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    ))
}

/// Restores with `args`, starts the copy, and returns the run and, when it
/// succeeded, the table it holds.
fn restore_and_read(lb: &Lifeboat, pg: &PgCluster, args: &[&str]) -> (Run, Option<String>) {
    let dir = RestoredDir::new();
    let port = free_port();
    let port_s = port.to_string();
    let mut all = args.to_vec();
    all.extend(["--start", "--port", &port_s, "--no-archive"]);
    let r = restore(lb, &dir, &all);
    let state = (r.code == 0).then(|| contents(pg, port));
    dir.stop();
    if r.code != 0 {
        assert!(
            !dir.path.exists() || std::fs::read_dir(&dir.path).unwrap().next().is_none(),
            "a refused restore left files in {}",
            dir.path.display()
        );
    }
    (r, state)
}

/// Judges one target against the history: exact or a named refusal.
struct Oracle<'a> {
    lb: &'a Lifeboat,
    pg: &'a PgCluster,
    seed: u64,
}

impl Oracle<'_> {
    /// A restore that must succeed with exactly `want`.
    fn exact(&self, what: &str, args: &[&str], want: &str) -> Run {
        let (r, got) = restore_and_read(self.lb, self.pg, args);
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

    /// A restore that must be refused with exit 4 naming `fragments`;
    /// returns the refusal so its advice can be tried.
    fn refused(&self, what: &str, args: &[&str], fragments: &[&str]) -> Run {
        let (r, _) = restore_and_read(self.lb, self.pg, args);
        assert_eq!(
            r.code, 4,
            "seed {}: {what}: restore {args:?} was not refused\n{}\n{}",
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

/// The value after `flag` in a message, e.g. the LSN after "--until-lsn ".
fn advised<'a>(message: &'a str, flag: &str) -> &'a str {
    message
        .split(flag)
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| c.is_whitespace() || c == ')' || c == ',')
                .next()
        })
        .unwrap_or_else(|| panic!("no {flag} in: {message}"))
}

#[test]
fn pitr_to_random_instants_and_edges_matches_the_commit_history() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let (_repo, pg, lb) = setup();
    let mut gen = Generator::new(&pg, seed);
    let mut h = History::default();
    let base1 = base_backup(&lb);
    h.initial = gen.state();
    gen.group(&mut h, 25);
    let base2_started = server_now(&pg);
    base_backup(&lb);
    gen.group(&mut h, 25);
    gen.group(&mut h, 25);
    switch_and_wait(&pg, pg.port, Duration::from_secs(60));
    let oracle = Oracle {
        lb: &lb,
        pg: &pg,
        seed,
    };
    let base1_done: DateTime<Utc> = base1["finished_at"].as_str().unwrap().parse().unwrap();
    let newest = h.last().at;

    // The exact window: random instants between the first base backup and
    // the newest commit.
    for i in 0..random_targets() {
        let span = (newest - base1_done).num_microseconds().unwrap().max(1);
        let t = base1_done + TimeDelta::microseconds(rng.gen_range(1..=span));
        oracle.exact(
            &format!("random target {i}"),
            &["--until", &until(t)],
            h.at(t),
        );
    }
    // Exactly a commit's timestamp (inclusive), and a microsecond either side.
    let k = rng.gen_range(1..h.commits.len() - 1);
    let c = h.commits[k].clone();
    for (name, t) in [
        ("a commit's own timestamp", c.at),
        ("1 µs before a commit", c.at - TimeDelta::microseconds(1)),
        ("1 µs after a commit", c.at + TimeDelta::microseconds(1)),
    ] {
        oracle.exact(name, &["--until", &until(t)], h.at(t));
    }
    // Just after the second base backup started: the first one is used.
    let t = base2_started + TimeDelta::microseconds(1);
    oracle.exact(
        "just after a base backup started",
        &["--until", &until(t)],
        h.at(t),
    );
    // Exactly the newest commit's timestamp: everything archived, which is
    // exact (PostgreSQL alone would wait for a later commit and fail).
    let r = oracle.exact(
        "the newest commit's own timestamp",
        &["--until", &until(newest)],
        &h.last().state,
    );
    assert!(
        r.stdout.contains("your target is the time of"),
        "seed {seed}: {}",
        r.stdout
    );
    // After it: the archive cannot show that nothing was committed between
    // its newest commit and the target. Refused, naming that commit, and
    // the advice (--until latest) is exact.
    let shown = newest.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string();
    for (name, t) in [
        (
            "1 µs after the newest commit",
            until(newest + TimeDelta::microseconds(1)),
        ),
        ("far future", "2999-01-01 00:00:00+00".to_string()),
    ] {
        oracle.refused(
            name,
            &["--until", &t],
            &[
                "after the newest archived WAL",
                "--until latest restores",
                &shown,
            ],
        );
    }
    oracle.exact(
        "--until latest (the advice)",
        &["--until", "latest"],
        &h.last().state,
    );

    // wal-verify with the key shows the newest archived commit, to the µs.
    let identity = lb.identity.display().to_string();
    let v = lb.run(&["wal-verify", "--source", "main-db", "--identity", &identity]);
    v.ok();
    assert!(
        v.stdout.contains(&shown),
        "seed {seed}: wal-verify does not show the newest commit {shown}:\n{}",
        v.stdout
    );
    let st = lb.run(&["status", "--no-probe", "--identity", &identity]);
    st.ok();
    assert!(
        st.stdout.contains(&shown),
        "seed {seed}: status does not show the newest commit {shown}:\n{}",
        st.stdout
    );
}

#[test]
fn pitr_gap_matrix_restores_exactly_or_refuses_naming_the_segment() {
    let seed = seed();
    let (repo, pg, lb) = setup();
    let mut gen = Generator::new(&pg, seed);
    let mut h = History::default();
    base_backup(&lb);
    h.initial = gen.state();
    for _ in 0..4 {
        gen.group(&mut h, 8);
    }
    switch_and_wait(&pg, pg.port, Duration::from_secs(60));
    let oracle = Oracle {
        lb: &lb,
        pg: &pg,
        seed,
    };
    // The segments holding the groups, oldest first.
    let mut segments: Vec<String> = h.commits.iter().map(|c| c.segment.clone()).collect();
    segments.dedup();
    assert!(segments.len() >= 4, "{segments:?}");
    let wal_dir = repo.path().join("repo/wal/test/main-db");
    let aside = repo.path().join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    let first_at = |seg: &str| h.in_segment(seg)[0].at;

    // A hole in the middle.
    let hole = segments[1].clone();
    std::fs::rename(wal_dir.join(&hole), aside.join(&hole)).unwrap();
    let before = first_at(&segments[0]);
    oracle.exact(
        "before the hole",
        &["--until", &until(before)],
        h.at(before),
    );
    let missing = format!("WAL segment {hole} is missing");
    for (name, t) in [
        ("inside the hole", first_at(&hole)),
        ("after the hole", first_at(&segments[2])),
    ] {
        let r = oracle.refused(
            name,
            &["--until", &until(t)],
            &[&missing, "--until latest-reachable"],
        );
        let lsn = advised(&r.stderr, "--until-lsn ").to_string();
        oracle.exact(
            &format!("{name}: the advised --until-lsn {lsn}"),
            &["--until-lsn", &lsn],
            h.before_segment(&hole),
        );
        let backup = advised(&r.stderr, "--backup ").to_string();
        oracle.exact(
            &format!("{name}: the advised --backup {backup} --until latest-reachable"),
            &["--backup", &backup, "--until", "latest-reachable"],
            h.before_segment(&hole),
        );
    }
    oracle.refused("latest with a hole", &["--until", "latest"], &[&missing]);
    let r = oracle.exact(
        "--until latest-reachable",
        &["--until", "latest-reachable"],
        h.before_segment(&hole),
    );
    assert!(r.stdout.contains(&hole), "{}", r.stdout);
    let v = lb.run(&["wal-verify", "--source", "main-db"]);
    assert_eq!(v.code, 4, "{v:?}");
    assert!(v.stdout.contains(&hole), "{}", v.stdout);
    std::fs::rename(aside.join(&hole), wal_dir.join(&hole)).unwrap();

    // The last segment not archived (yet): the archive ends a segment early
    // (segments after it hold no commit and go aside too).
    let last = segments.last().unwrap().clone();
    let tail: Vec<String> = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 24 && n[8..] >= last[8..])
        .collect();
    for n in &tail {
        std::fs::rename(wal_dir.join(n), aside.join(n)).unwrap();
    }
    let prev = &segments[segments.len() - 2];
    let prev_last = h.in_segment(prev).last().unwrap().at;
    oracle.exact(
        "inside the archive's last segment",
        &["--until", &until(prev_last - TimeDelta::microseconds(1))],
        h.at(prev_last - TimeDelta::microseconds(1)),
    );
    // The newest archived commit's own time: everything archived, exact.
    let r = oracle.exact(
        "the newest archived commit's own time",
        &["--until", &until(prev_last)],
        h.before_segment(&last),
    );
    assert!(
        r.stdout.contains("your target is the time of"),
        "{}",
        r.stdout
    );
    // After it (the primary-died case: the segment it was writing is not
    // archived): refused, and the advice restores everything archived.
    for (name, t) in [
        (
            "1 µs after the newest archived commit",
            prev_last + TimeDelta::microseconds(1),
        ),
        ("a commit only in the unarchived segment", first_at(&last)),
    ] {
        oracle.refused(
            name,
            &["--until", &until(t)],
            &["after the newest archived WAL", "--until latest restores"],
        );
    }
    oracle.exact(
        "the advised --until latest",
        &["--until", "latest"],
        h.before_segment(&last),
    );
    for n in &tail {
        std::fs::rename(aside.join(n), wal_dir.join(n)).unwrap();
    }
}

#[test]
fn a_restored_server_that_cannot_start_is_reported_with_its_log() {
    let (_repo, pg, lb) = setup();
    base_backup(&lb);
    pg.psql(
        "app",
        "INSERT INTO orders (amount, note) VALUES (1, 'after the base backup')",
    );
    switch_and_wait(&pg, pg.port, Duration::from_secs(60));
    // The port is taken on every loopback address the copy would listen on.
    let port = free_port();
    let _v4 = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let _v6 = std::net::TcpListener::bind(("::1", port)).ok();
    let dir = RestoredDir::new();
    let began = std::time::Instant::now();
    let r = restore(
        &lb,
        &dir,
        &["--start", "--port", &port.to_string(), "--no-archive"],
    );
    eprintln!("the failed start was reported after {:?}", began.elapsed());
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("the server exited") && r.stderr.contains("FATAL"),
        "{}",
        r.stderr
    );
}
