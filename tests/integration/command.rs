//! The `command` source kind with real tools: `tar` of a folder and
//! `sqlite3 .dump`, backed up, listed, verified, restored byte for byte,
//! drilled and pruned; and every way a command can make a restore wrong
//! refused with its cause.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Lifeboat, Repo};

/// A folder of seeded pseudo-random files (names with spaces, empty
/// files, nested folders, a binary blob) and a SQLite database.
fn fill(dir: &Path, seed: u64) {
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..40 {
        let sub = dir.join(format!("d{}/sub dir {}", i % 4, i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        let len = match i % 5 {
            0 => 0,
            1 => 1,
            _ => (next() % 200_000) as usize,
        };
        let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        std::fs::write(sub.join(format!("file {i}.bin")), body).unwrap();
    }
    let db = dir.join("app.db");
    let sql = format!(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, b BLOB); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) \
         INSERT INTO t SELECT i, 'row ' || i || ' ' || {seed} || char(10) || '\\.', randomblob(i % 50) FROM n;"
    );
    sqlite(&db, &sql);
}

fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir` with its bytes, by relative path.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// A policy with a `files` source (tar of `data`) and a `db` source
/// (`sqlite3 .dump` of `data/app.db`, restored into `restored.db`).
fn lifeboat(repo: Repo<'_>, data: &Path, extra_files: &str) -> Lifeboat {
    let data = data.display();
    let sources = format!(
        "  - name: files\n    command:\n      backup: [tar, -C, '{data}', -cf, -, .]\n      restore: [tar, -xf, -]\n      \
         check: [sh, -c, 'test \"$(sqlite3 app.db \"select count(*) from t\")\" = 500']\n{extra_files}\
         \x20 - name: db\n    command:\n      backup: [sqlite3, '{data}/app.db', .dump]\n      restore: [sqlite3, restored.db]\n      \
         check: [sqlite3, restored.db, 'PRAGMA integrity_check']\n"
    );
    Lifeboat::with_source(repo, &sources, &[])
}

fn seed() -> u64 {
    let seed = std::env::var("LIFEBOAT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0de);
    eprintln!("command tests: seed {seed} (set LIFEBOAT_TEST_SEED to repeat)");
    seed
}

#[test]
fn a_command_source_backs_up_restores_drills_and_prunes_byte_for_byte() {
    let seed = seed();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    fill(&data, seed);
    let lb = lifeboat(Repo::Local(work.path().join("repo")), &data, "");
    let mut policy = std::fs::read_to_string(&lb.policy).unwrap();
    policy.push_str(&format!(
        "retention:\n  keep_last: 2\ndrill:\n  scratch_dir: {}\n",
        work.path().join("scratch").display()
    ));
    std::fs::write(&lb.policy, policy).unwrap();
    std::fs::create_dir_all(work.path().join("scratch")).unwrap();
    let identity = lb.identity.display().to_string();

    for _ in 0..3 {
        lb.run(&["backup", "--source", "files"]).ok();
    }
    lb.run(&["backup", "--source", "db"]).ok();
    // Retention after each backup keeps the newest two.
    let list = lb.run(&["list", "--source", "files", "--json"]);
    list.ok();
    let listed: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let backups = listed.as_array().unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(backups.len(), 2, "{listed}");
    assert!(backups.iter().all(|b| b["kind"] == "command"), "{listed}");
    lb.run(&["verify", "--read-data", "--identity", &identity])
        .ok();

    let to = work.path().join("restored");
    lb.run(&[
        "restore",
        "--source",
        "files",
        "--identity",
        &identity,
        "--to-dir",
        to.to_str().unwrap(),
    ])
    .ok();
    assert!(
        tree(&data) == tree(&to),
        "seed {seed}: the restored folder differs from the original"
    );

    let to_db = work.path().join("restored-db");
    lb.run(&[
        "restore",
        "--source",
        "db",
        "--identity",
        &identity,
        "--to-dir",
        to_db.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        sqlite(&to_db.join("restored.db"), ".dump"),
        sqlite(&data.join("app.db"), ".dump"),
        "seed {seed}"
    );

    // Into a folder that is not empty: refused, and the advice works.
    lb.run(&[
        "restore",
        "--source",
        "files",
        "--identity",
        &identity,
        "--to-dir",
        to.to_str().unwrap(),
    ])
    .fails_with(5, &["is not empty", "Give another --to-dir"]);
    // Flags of other kinds are refused by name.
    lb.run(&[
        "restore",
        "--source",
        "files",
        "--identity",
        &identity,
        "--to",
        "postgres://x/y",
    ])
    .fails_with(2, &["--to does not apply", "--to-dir DIR"]);

    // Drills restore into a scratch folder, run the check there, remove it.
    let drill = lb.run(&["drill", "--identity", &identity, "--json"]);
    drill.ok();
    let reports: serde_json::Value = serde_json::from_str(&drill.stdout).unwrap();
    let reports = reports.as_array().cloned().unwrap_or_else(|| vec![reports]);
    assert_eq!(reports.len(), 2, "{drill:?}", drill = drill.stdout);
    for r in &reports {
        assert_eq!(r["passed"], true, "{r}");
        let checks = r["checks"].as_array().unwrap();
        assert!(
            checks
                .iter()
                .any(|c| c["name"] == "check command" && c["status"] == "passed"),
            "{r}"
        );
    }
    assert_eq!(
        std::fs::read_dir(work.path().join("scratch"))
            .unwrap()
            .count(),
        0,
        "the drill left its scratch folder"
    );
}

#[test]
fn a_command_that_fails_or_lies_never_yields_a_backup_or_a_restore() {
    let seed = seed();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    fill(&data, seed);
    let extra = "\x20 - name: broken\n    command:\n      backup: [sh, -c, 'echo partial; exit 3']\n      restore: [cat]\n\
                 \x20 - name: silent\n    command:\n      backup: ['true']\n      restore: [cat]\n\
                 \x20 - name: lazy\n    command:\n      backup: [tar, -C, DATA, -cf, -, .]\n      restore: [sh, -c, 'head -c 1000 > part']\n\
                 \x20 - name: deaf\n    command:\n      backup: [sh, -c, 'echo a small backup']\n      restore: [sh, -c, 'sleep 1']\n\x20 - name: fails-check\n    command:\n      backup: [tar, -C, DATA, -cf, -, .]\n      restore: [tar, -xf, -]\n      check: [sh, -c, 'echo no such table >&2; exit 1']\n"
        .replace("DATA", &data.display().to_string());
    let repo = work.path().join("repo");
    let lb = lifeboat(Repo::Local(repo.clone()), &data, &extra);
    let identity = lb.identity.display().to_string();

    // A command that exits non-zero: the backup fails, nothing is listed,
    // nothing is left in the repository's data.
    lb.run(&["backup", "--source", "broken"]).fails_with(
        1,
        &["backup command of source 'broken' failed", "run it by hand"],
    );
    // A command that writes nothing.
    lb.run(&["backup", "--source", "silent"])
        .fails_with(1, &["wrote nothing"]);
    let list = lb.run(&["list", "--json"]);
    list.ok();
    assert!(
        !list.stdout.contains("broken") && !list.stdout.contains("silent"),
        "{}",
        list.stdout
    );

    // A restore command that stops reading early and exits 0 is a failed
    // restore, not a success.
    lb.run(&["backup", "--source", "lazy"]).ok();
    let to = work.path().join("lazy-restore");
    lb.run(&[
        "restore",
        "--source",
        "lazy",
        "--identity",
        &identity,
        "--to-dir",
        to.to_str().unwrap(),
    ])
    .fails_with(
        1,
        &[
            "exited before it had read the whole of backup",
            "must read its standard input to the end",
        ],
    );

    // A backup small enough to sit in the pipe's buffer, and a command
    // that never reads it but exits 0 a second later: still a failure.
    lb.run(&["backup", "--source", "deaf"]).ok();
    let to = work.path().join("deaf-restore");
    lb.run(&[
        "restore",
        "--source",
        "deaf",
        "--identity",
        &identity,
        "--to-dir",
        to.to_str().unwrap(),
    ])
    .fails_with(
        1,
        &[
            "exited before it had read the whole of backup",
            "(0 of 15 bytes)",
        ],
    );

    // A damaged object: the restore stops with an integrity error (exit 3)
    // although `tar` would have exited 0 on what it got.
    lb.run(&["backup", "--source", "files"]).ok();
    let object = find_object(&repo, "files");
    let mut bytes = std::fs::read(&object).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&object, bytes).unwrap();
    let to = work.path().join("damaged-restore");
    let run = lb.run(&[
        "restore",
        "--source",
        "files",
        "--identity",
        &identity,
        "--to-dir",
        to.to_str().unwrap(),
    ]);
    assert_eq!(
        run.code, 3,
        "a damaged object must fail the restore: {}{}",
        run.stdout, run.stderr
    );

    // A drill whose check fails: the report fails (exit 3) and says why.
    lb.run(&["backup", "--source", "fails-check"]).ok();
    lb.run(&["drill", "--source", "fails-check", "--identity", &identity])
        .fails_with(3, &["check command", "exit status: 1"]);

    // A `drill.checks` entry (SQL) for a command source is refused at load.
    let mut policy = std::fs::read_to_string(&lb.policy).unwrap();
    policy.push_str("drill:\n  checks:\n    - name: rows\n      source: files\n      sql: select 1\n      expect: '> 0'\n");
    std::fs::write(&lb.policy, policy).unwrap();
    lb.run(&["list"])
        .fails_with(2, &["checked in drills by its own `check:` command"]);
}

/// The stored object of the newest backup of `source` in a local repository.
fn find_object(repo: &Path, source: &str) -> PathBuf {
    let mut found = Vec::new();
    let mut todo = vec![repo.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.to_string_lossy().contains(&format!("/{source}/"))
                && p.to_string_lossy().contains("/data/")
                && p.to_string_lossy().ends_with(".age")
            {
                found.push(p);
            }
        }
    }
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no object of {source} under {}", repo.display()))
}
