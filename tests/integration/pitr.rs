//! Point-in-time recovery against a real PostgreSQL with archive_mode on,
//! its archive_command being `lifeboat wal-push`, into Garage or a folder.

use std::time::{Duration, Instant};

use crate::harness::{
    chown_to_postgres, free_port, Garage, Lifeboat, PgCluster, Repo, RestoredDir,
};

const PASSWORD: &str = "lifeboat-test-pw";

/// A cluster archiving with `lifeboat wal-push` into `repo`, and a lifeboat
/// folder the postgres user can use.
pub(crate) fn archiving(repo: Repo<'_>) -> (PgCluster, Lifeboat) {
    archiving_with(repo, "")
}

/// The same, with more postgresql.conf settings.
pub(crate) fn archiving_with(repo: Repo<'_>, extra_conf: &str) -> (PgCluster, Lifeboat) {
    // The archive_command needs the policy, which needs the port: the
    // server starts with archiving paused (an empty command) until both exist.
    let pg = PgCluster::start_with(
        PASSWORD,
        &format!("wal_level = replica\narchive_mode = on\narchive_command = ''\n{extra_conf}"),
    );
    let lb = Lifeboat::new(repo, &pg, "[app]").for_postgres_user();
    pg.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET archive_command = '{}'",
            lb.archive_command().replace('\'', "''")
        ),
    );
    pg.psql("postgres", "SELECT pg_reload_conf()");
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE orders (id bigserial PRIMARY KEY, amount int NOT NULL, note text, \
         at timestamptz NOT NULL DEFAULT clock_timestamp())",
    );
    (pg, lb)
}

/// A local repository folder the postgres user can write.
fn local_repo() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("lifeboat-pitr-repo-")
        .tempdir()
        .unwrap();
    chown_to_postgres(dir.path());
    dir
}

/// Some write load: inserts, updates and deletes, several transactions.
pub(crate) fn load(pg: &PgCluster, rows: u32) {
    pg.psql(
        "app",
        &format!(
            "INSERT INTO orders (amount, note) SELECT g, md5(random()::text) FROM generate_series(1, {rows}) g"
        ),
    );
    pg.psql(
        "app",
        "UPDATE orders SET amount = amount + 1 WHERE id % 7 = 0",
    );
    pg.psql("app", "DELETE FROM orders WHERE id % 11 = 0");
}

/// Row count and a digest of every row of `orders` on the server at `port`.
pub(crate) fn contents(pg: &PgCluster, port: u16) -> String {
    pg.psql_at(
        port,
        "app",
        "SELECT count(*) || ':' || coalesce(md5(string_agg(id || ',' || amount || ',' || note, ';' ORDER BY id)), '') FROM orders",
    )
}

/// Ends the current WAL segment and waits until the archiver has pushed it.
pub(crate) fn switch_and_wait(pg: &PgCluster, port: u16, timeout: Duration) -> String {
    let segment = pg.psql_at(port, "postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = Instant::now() + timeout;
    loop {
        let row = pg.psql_at(
            port,
            "postgres",
            "SELECT coalesce(last_archived_wal, '') || ' ' || failed_count || ' ' || coalesce(last_failed_wal, '') FROM pg_stat_archiver",
        );
        let last = row.split(' ').next().unwrap_or("");
        // Same timeline: names sort by position.
        if last.len() == 24 && last[8..] >= segment[8..] && last[..8] >= segment[..8] {
            return segment;
        }
        assert!(
            Instant::now() < deadline,
            "segment {segment} not archived after {timeout:?}: pg_stat_archiver says {row}\n{}",
            pg.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn restore(lb: &Lifeboat, dir: &RestoredDir, extra: &[&str]) -> crate::harness::Run {
    let identity = lb.identity.display().to_string();
    let datadir = dir.path.display().to_string();
    let mut args = vec![
        "restore",
        "--source",
        "main-db",
        "--identity",
        &identity,
        "--to-datadir",
        &datadir,
    ];
    args.extend_from_slice(extra);
    lb.run(&args)
}

#[test]
fn pitr_to_a_time_and_to_latest_through_garage() {
    let garage = Garage::start();
    let (pg, lb) = archiving(Repo::Garage(&garage, "pitr"));
    load(&pg, 20_000);
    lb.run(&["backup", "--source", "main-db", "--kind", "base"])
        .ok();
    load(&pg, 20_000);
    // Commits before T are at least 1 s older than T, commits after it
    // at least 1 s newer: the clocks of the test and the server agree.
    std::thread::sleep(Duration::from_millis(1100));
    let t = pg.psql(
        "app",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    );
    let at_t = contents(&pg, pg.port);
    std::thread::sleep(Duration::from_millis(1100));
    load(&pg, 20_000);
    pg.psql("app", "DELETE FROM orders WHERE id < 100");
    let latest = contents(&pg, pg.port);
    assert_ne!(at_t, latest);
    switch_and_wait(&pg, pg.port, Duration::from_secs(60));

    // Latest: every committed transaction.
    let d1 = RestoredDir::new();
    let p1 = free_port();
    let r = restore(
        &lb,
        &d1,
        &[
            "--until",
            "latest",
            "--start",
            "--port",
            &p1.to_string(),
            "--no-archive",
        ],
    );
    r.ok();
    assert!(
        r.stdout.contains("Point-in-time restore plan"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("pg_verifybackup"), "{}", r.stdout);
    assert!(r.stdout.contains("promoted"), "{}", r.stdout);
    assert_eq!(contents(&pg, p1), latest, "{}", d1.log());

    // T: exactly the contents at that moment.
    let d2 = RestoredDir::new();
    let p2 = free_port();
    let r = restore(
        &lb,
        &d2,
        &[
            "--until",
            &t,
            "--start",
            "--port",
            &p2.to_string(),
            "--no-archive",
        ],
    );
    r.ok();
    assert!(r.stdout.contains("recovery stopping"), "{}", r.stdout);
    assert_eq!(contents(&pg, p2), at_t, "{}", d2.log());
}

#[test]
fn archiving_survives_a_garage_outage_without_a_gap() {
    let mut garage = Garage::start();
    let (pg, lb) = archiving(Repo::Garage(&garage, "outage"));
    load(&pg, 10_000);
    lb.run(&["backup", "--source", "main-db", "--kind", "base"])
        .ok();
    garage.pause();
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        load(&pg, 5_000);
        pg.psql("postgres", "SELECT pg_switch_wal()");
        std::thread::sleep(Duration::from_millis(500));
    }
    let failed: i64 = pg
        .psql("postgres", "SELECT failed_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    assert!(
        failed > 0,
        "archive_command never failed while Garage was down"
    );
    garage.resume();
    load(&pg, 5_000);
    let expected = contents(&pg, pg.port);
    switch_and_wait(&pg, pg.port, Duration::from_secs(180));

    let v = lb.run(&["wal-verify", "--source", "main-db"]);
    v.ok();
    assert!(v.stdout.contains("Gaps: none"), "{}", v.stdout);

    let d = RestoredDir::new();
    let port = free_port();
    restore(
        &lb,
        &d,
        &["--start", "--port", &port.to_string(), "--no-archive"],
    )
    .ok();
    assert_eq!(contents(&pg, port), expected, "{}", d.log());
}

#[test]
fn a_segment_pushed_twice_is_accepted_only_with_the_same_content() {
    let garage = Garage::start();
    let lb = Lifeboat::with_source(
        Repo::Garage(&garage, "twice"),
        "  - name: main-db\n    postgres:\n      host: 127.0.0.1\n      port: 1\n      user: postgres\n",
        &[],
    );
    let wal = lb.dir.path().join("pg_wal");
    std::fs::create_dir(&wal).unwrap();
    // 16 MiB of mixed content: compressible runs and pseudo-random bytes.
    let mut data = vec![0u8; 16 << 20];
    let mut x: u32 = 12345;
    for (i, b) in data.iter_mut().enumerate() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = if (i / 4096) % 3 == 0 {
            (x >> 24) as u8
        } else {
            (i % 251) as u8
        };
    }
    let seg = wal.join("000000010000000000000001");
    std::fs::write(&seg, &data).unwrap();
    let seg_arg = seg.display().to_string();

    let first = lb.run(&["wal-push", &seg_arg]);
    first.ok();
    assert!(first.stderr.contains("archived"), "{}", first.stderr);
    let again = lb.run(&["wal-push", &seg_arg]);
    again.ok();
    assert!(
        again
            .stderr
            .contains("already archived with the same content"),
        "{}",
        again.stderr
    );

    data[1000] ^= 0xff;
    std::fs::write(&seg, &data).unwrap();
    lb.run(&["wal-push", &seg_arg]).fails_with(
        3,
        &[
            "000000010000000000000001 is already archived with different content",
            "Nothing was overwritten",
        ],
    );

    // History, backup-label and partial files are archived too.
    for (name, body) in [
        (
            "00000002.history",
            &b"1\t0/3000000\tno recovery target specified\n"[..],
        ),
        (
            "000000010000000000000001.00000028.backup",
            &b"START WAL LOCATION: 0/1000028\n"[..],
        ),
        ("000000010000000000000002.partial", &data[..1 << 20]),
    ] {
        let p = wal.join(name);
        std::fs::write(&p, body).unwrap();
        lb.run(&["wal-push", &p.display().to_string()]).ok();
    }
    let bad = wal.join("RECOVERYXLOG");
    std::fs::write(&bad, b"x").unwrap();
    lb.run(&["wal-push", &bad.display().to_string()])
        .fails_with(2, &["not a WAL file name"]);

    // wal-fetch returns the first content, byte for byte.
    let identity = lb.identity.display().to_string();
    let out = wal.join("RECOVERYXLOG");
    let fetched = lb.run(&[
        "wal-fetch",
        "--identity",
        &identity,
        "000000010000000000000001",
        &out.display().to_string(),
    ]);
    fetched.ok();
    data[1000] ^= 0xff;
    assert!(std::fs::read(&out).unwrap() == data, "fetched bytes differ");
    let history = lb.run(&[
        "wal-fetch",
        "--identity",
        &identity,
        "00000002.history",
        &wal.join("RECOVERYHISTORY").display().to_string(),
    ]);
    history.ok();

    // Not archived: exit 1 and no noise, as PostgreSQL expects at the end.
    let missing = lb.run(&[
        "wal-fetch",
        "--identity",
        &identity,
        "000000010000000000000009",
        &out.display().to_string(),
    ]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(!missing.stderr.contains("error"), "{}", missing.stderr);

    // Any other failure must stop recovery: exit above 125.
    let other_key = lb.dir.path().join("other.key");
    lb.run(&["keygen", "--out", &other_key.display().to_string()])
        .ok();
    let wrong = lb.run(&[
        "wal-fetch",
        "--identity",
        &other_key.display().to_string(),
        "000000010000000000000001",
        &out.display().to_string(),
    ]);
    assert_eq!(wrong.code, 255, "{wrong:?}");
    assert!(
        wrong.stderr.contains("recovery stops here"),
        "{}",
        wrong.stderr
    );
}

#[test]
fn a_promoted_restore_archives_a_new_timeline_and_a_second_pitr_follows_it() {
    let repo = local_repo();
    let (pg, lb) = archiving(Repo::Local(repo.path().join("repo")));
    load(&pg, 10_000);
    lb.run(&["backup", "--source", "main-db", "--kind", "base"])
        .ok();
    load(&pg, 10_000);
    switch_and_wait(&pg, pg.port, Duration::from_secs(60));

    // First PITR keeps archiving on: once promoted it pushes timeline 2.
    let d1 = RestoredDir::new();
    let p1 = free_port();
    let r = restore(&lb, &d1, &["--start", "--port", &p1.to_string()]);
    r.ok();
    assert!(r.stdout.contains("new timeline 2"), "{}", r.stdout);
    pg.psql_at(
        p1,
        "app",
        "INSERT INTO orders (amount, note) SELECT g, 'after the branch' FROM generate_series(1, 5000) g",
    );
    let on_timeline_2 = contents(&pg, p1);
    switch_and_wait(&pg, p1, Duration::from_secs(60));
    d1.stop();

    let v = lb.run(&["wal-verify", "--source", "main-db"]);
    v.ok();
    assert!(
        v.stdout.contains("branched from timeline 1"),
        "{}",
        v.stdout
    );
    assert!(v.stdout.contains("timeline 2;"), "{}", v.stdout);
    // With the key, the end is read on the new timeline: its newest commit
    // is the insert made after the branch.
    let identity = lb.identity.display().to_string();
    let v = lb.run(&["wal-verify", "--source", "main-db", "--identity", &identity]);
    v.ok();
    assert!(
        v.stdout.contains("newest archived commit") && v.stdout.contains("timeline 2)"),
        "{}",
        v.stdout
    );

    // Second PITR: base backup of timeline 1, WAL across to timeline 2.
    let d2 = RestoredDir::new();
    let p2 = free_port();
    let r = restore(
        &lb,
        &d2,
        &["--start", "--port", &p2.to_string(), "--no-archive"],
    );
    r.ok();
    assert!(r.stdout.contains("across timelines 1 → 2"), "{}", r.stdout);
    assert!(r.stdout.contains("new timeline 3"), "{}", r.stdout);
    assert_eq!(contents(&pg, p2), on_timeline_2, "{}", d2.log());
}

#[test]
fn unreachable_targets_missing_segments_and_wrong_keys_are_refused() {
    let repo = local_repo();
    let (pg, lb) = archiving(Repo::Local(repo.path().join("repo")));
    load(&pg, 5_000);
    let backup = lb.run(&["backup", "--source", "main-db", "--kind", "base", "--json"]);
    backup.ok();
    let manifest: serde_json::Value = serde_json::from_str(&backup.stdout).unwrap();
    let stop_segment = manifest[0]["physical"]["stop_segment"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..3 {
        load(&pg, 5_000);
        switch_and_wait(&pg, pg.port, Duration::from_secs(60));
    }
    let d = RestoredDir::new();

    restore(&lb, &d, &["--until", "2000-01-01 00:00:00+00"])
        .fails_with(4, &["before the first base backup"]);
    restore(&lb, &d, &["--until", "2999-01-01 00:00:00+00"])
        .fails_with(4, &["after the newest archived WAL"]);
    restore(&lb, &d, &["--until", "yesterday"]).fails_with(2, &["is not a time"]);

    let other_key = lb.dir.path().join("other.key");
    lb.run(&["keygen", "--out", &other_key.display().to_string()])
        .ok();
    chown_to_postgres(&other_key);
    let datadir = d.path.display().to_string();
    let other = other_key.display().to_string();
    lb.run(&[
        "restore",
        "--source",
        "main-db",
        "--identity",
        &other,
        "--to-datadir",
        &datadir,
    ])
    // The plan reads the end of the WAL archive first: the wrong key is
    // named on the first object it cannot decrypt.
    .fails_with(6, &["can decrypt"]);
    assert!(
        !d.path.exists(),
        "a failed restore left {}",
        d.path.display()
    );

    // The dry run shows the plan and touches nothing.
    let dry = restore(&lb, &d, &["--dry-run"]);
    dry.ok();
    assert!(
        dry.stdout.contains("dry run: nothing was changed"),
        "{}",
        dry.stdout
    );
    assert!(!d.path.exists());

    // A non-empty target directory is refused.
    std::fs::create_dir_all(&d.path).unwrap();
    std::fs::write(d.path.join("PG_VERSION"), "15").unwrap();
    chown_to_postgres(&d.path);
    restore(&lb, &d, &["--until", "latest"]).fails_with(5, &["is not empty"]);
    std::fs::remove_dir_all(&d.path).unwrap();

    // Remove the segment after the backup's last one: a gap in the middle.
    let wal_dir = repo.path().join("repo/wal/test/main-db");
    let mut segments: Vec<String> = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 24 && n > &stop_segment)
        .collect();
    segments.sort();
    assert!(segments.len() >= 2, "{segments:?}");
    let victim = segments[0].clone();
    std::fs::remove_dir_all(wal_dir.join(&victim)).unwrap();

    let refused = restore(&lb, &d, &["--until", "latest"]);
    refused.fails_with(
        4,
        &[&format!("WAL segment {victim} is missing from the archive")],
    );
    // The LSN the message suggests is one the archive can reach.
    let hint = refused
        .stderr
        .split("--until-lsn ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == ')').next())
        .expect("the refusal suggests an --until-lsn")
        .to_string();
    restore(&lb, &d, &["--until-lsn", &hint, "--dry-run"]).ok();
    let v = lb.run(&["wal-verify", "--source", "main-db"]);
    assert_eq!(v.code, 4, "{v:?}");
    assert!(v.stdout.contains(&victim), "{}", v.stdout);

    // Restoring the dump-style way refuses a base backup.
    let latest_is_base = lb.run(&[
        "restore",
        "--source",
        "main-db",
        "--identity",
        &lb.identity.display().to_string(),
        "--to",
        &pg.url("copy"),
        "--backup",
        manifest[0]["id"].as_str().unwrap(),
    ]);
    latest_is_base.fails_with(2, &["is a physical base backup", "--to-datadir"]);
}

#[test]
fn base_backups_refuse_tablespaces_and_servers_without_archiving() {
    let repo = local_repo();
    let (pg, lb) = archiving(Repo::Local(repo.path().join("repo")));
    let space = tempfile::Builder::new()
        .prefix("lifeboat-tablespace-")
        .tempdir()
        .unwrap();
    chown_to_postgres(space.path());
    pg.psql(
        "postgres",
        &format!(
            "CREATE TABLESPACE far LOCATION '{}'",
            space.path().display()
        ),
    );
    lb.run(&["backup", "--source", "main-db", "--kind", "base"])
        .fails_with(1, &["tablespaces outside the data directory (far)"]);
    pg.psql("postgres", "DROP TABLESPACE far");
    lb.run(&["backup", "--source", "main-db", "--kind", "base"])
        .ok();

    let plain = PgCluster::start();
    let repo2 = local_repo();
    let lb2 = Lifeboat::new(Repo::Local(repo2.path().join("repo")), &plain, "[postgres]");
    lb2.run(&["backup", "--source", "main-db", "--kind", "base"])
        .fails_with(1, &["archive_mode is off", "archive_command"]);
    assert!(lb2.backup_ids().is_empty());
}
