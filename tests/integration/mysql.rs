//! MySQL/MariaDB dump backups against a MariaDB the harness starts itself
//! (log_bin, server_id, binlog_format=ROW) and Garage.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lifeboat::keys::Identities;
use lifeboat::repository::Manifest;

use crate::harness::{mysql_source_yaml, Garage, Lifeboat, MariaDb, Repo};

/// Two databases: foreign keys, a blob column, unicode, a trigger, a view,
/// a stored procedure, and a MyISAM table.
pub(crate) fn fixture(m: &MariaDb) {
    m.sql(
        "",
        "CREATE DATABASE shop CHARACTER SET utf8mb4; CREATE DATABASE crm CHARACTER SET utf8mb4",
    );
    m.sql(
        "shop",
        "CREATE TABLE customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL) ENGINE=InnoDB;
         CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL, amount DECIMAL(10,2),
           note TEXT, photo BLOB, FOREIGN KEY (customer_id) REFERENCES customers(id)) ENGINE=InnoDB;
         CREATE TABLE audit (id INT PRIMARY KEY AUTO_INCREMENT, order_id INT NOT NULL) ENGINE=InnoDB;
         CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit (order_id) VALUES (NEW.id);
         CREATE VIEW big_orders AS SELECT id, amount FROM orders WHERE amount > 100;
         CREATE PROCEDURE add_customer(IN n VARCHAR(100)) INSERT INTO customers (name) VALUES (n);
         INSERT INTO customers (name) VALUES ('Zoë'), ('Jürgen'), ('李雷'), ('🚀 rocket');
         INSERT INTO orders (customer_id, amount, note, photo)
           SELECT 1 + seq % 4, seq * 1.5, CONCAT('order ', seq), UNHEX(MD5(seq)) FROM seq_1_to_5000;",
    );
    m.sql(
        "crm",
        "CREATE TABLE contacts (id INT PRIMARY KEY, email VARCHAR(200)) ENGINE=InnoDB;
         INSERT INTO contacts SELECT seq, CONCAT('c', seq, '@example.com') FROM seq_1_to_300;
         CREATE TABLE legacy (id INT PRIMARY KEY) ENGINE=MyISAM;
         INSERT INTO legacy SELECT seq FROM seq_1_to_10;",
    );
}

pub(crate) fn lifeboat_for(
    repo: Repo<'_>,
    m: &MariaDb,
    bin_dir: Option<&std::path::Path>,
) -> Lifeboat {
    Lifeboat::with_source(
        repo,
        &mysql_source_yaml(m, "[shop, crm]", bin_dir),
        &[("TEST_MYPASSWORD", &m.password)],
    )
}

fn manifest_of(run: &crate::harness::Run) -> Manifest {
    let v: Vec<Manifest> = serde_json::from_str(&run.stdout).expect("backup --json");
    v.into_iter().next().expect("one backup")
}

/// Decrypts one artifact of a backup stored in Garage.
fn artifact(garage: &Garage, prefix: &str, lb: &Lifeboat, m: &Manifest, name: &str) -> Vec<u8> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ids = Arc::new(Identities::load(&lb.identity).unwrap());
    rt.block_on(async {
        let store = garage.store(prefix).await;
        let exp = m.artifact(name).expect(name).expected();
        lifeboat::pipeline::decode_to_vec(&store, &exp, ids)
            .await
            .unwrap()
    })
}

#[test]
fn a_mariadb_dump_is_consistent_with_its_inventory_and_binlog_position() {
    let garage = Garage::start();
    let m = MariaDb::start();
    fixture(&m);
    let lb = lifeboat_for(Repo::Garage(&garage, "maria"), &m, None);
    let before: String = m.sql("", "SHOW MASTER STATUS");
    let file_before = before.split('\t').next().unwrap().to_string();

    // Writes go on during the backup: each commit adds an order and, by the
    // trigger, an audit row.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let (port, pw) = (m.port, m.password.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let ok = Command::new("mariadb")
                    .args(["--no-defaults", "-h", "127.0.0.1", "-uroot", "shop", "-e"])
                    .arg("INSERT INTO orders (customer_id, amount, note) SELECT 2, 9.99, 'during' FROM seq_1_to_20")
                    .arg(format!("-P{port}"))
                    .env("MYSQL_PWD", &pw)
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                assert!(ok, "the concurrent writer failed");
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let run = lb.run(&["backup", "--source", "business-db", "--json"]);
    stop.store(true, Ordering::Relaxed);
    let commits = writer.join().unwrap();
    run.ok();
    assert!(commits > 0);
    let manifest = manifest_of(&run);
    assert_eq!(manifest.kind.as_str(), "mysql-dump");
    assert!(
        manifest.server_version.contains("MariaDB"),
        "{}",
        manifest.server_version
    );
    let binlog = manifest
        .binlog
        .clone()
        .expect("binlog coordinates recorded");
    assert!(binlog.position > 0);
    assert!(!binlog.gtid.is_empty(), "{binlog:?}");
    assert!(
        binlog.file > file_before,
        "FLUSH BINARY LOGS rotated from {file_before} to {}",
        binlog.file
    );
    let names: Vec<&str> = manifest.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["dump", "inventory/shop", "inventory/crm"]);
    lb.verify_read_data().ok();

    // The dump holds everything, and the server's own client loads it.
    let dump = artifact(&garage, "maria", &lb, &manifest, "dump");
    let text = String::from_utf8_lossy(&dump);
    for needle in [
        "TRIGGER orders_audit AFTER INSERT",
        "PROCEDURE `add_customer`",
        "VIEW `big_orders`",
        "Zoë",
        "CHANGE MASTER TO",
    ] {
        assert!(text.contains(needle), "dump lacks {needle}");
    }
    let copy = MariaDb::start();
    let to = format!("mysql://root@127.0.0.1:{}/", copy.port);
    let identity = lb.identity.display().to_string();
    let restore = |extra: &[&str], key: &str| {
        let mut args = vec![
            "restore",
            "--source",
            "business-db",
            "--identity",
            key,
            "--to",
            &to,
        ];
        args.extend_from_slice(extra);
        lb.run_env(&args, &[("MYSQL_PWD", &copy.password)])
    };
    let other = lb.dir.path().join("other.key");
    lb.run(&["keygen", "--out", &other.display().to_string()])
        .ok();
    restore(&[], &other.display().to_string()).fails_with(6, &["can decrypt"]);
    assert_eq!(
        copy.sql("", "SHOW DATABASES LIKE 'shop'"),
        "",
        "a failed restore touched the target"
    );
    let dry = restore(&["--dry-run"], &identity);
    dry.ok();
    assert!(
        dry.stdout.contains("binlog     consistent at"),
        "{}",
        dry.stdout
    );
    let r = restore(&[], &identity);
    r.ok();
    assert!(r.stdout.contains("all match the backup"), "{}", r.stdout);
    restore(&[], &identity).fails_with(
        5,
        &["already has database(s) with tables: shop, crm", "--clean"],
    );
    restore(&["--clean"], &identity).ok();

    // The inventory was counted at the dump's own consistency point: the
    // loaded copy has exactly its counts, although writes went on.
    for db in ["shop", "crm"] {
        let inv: serde_json::Value = serde_json::from_slice(&artifact(
            &garage,
            "maria",
            &lb,
            &manifest,
            &format!("inventory/{db}"),
        ))
        .unwrap();
        assert_eq!(inv["binlog"]["file"], binlog.file.as_str());
        for t in inv["tables"].as_array().unwrap() {
            let table = t["table"].as_str().unwrap();
            let rows = t["rows"].as_u64().unwrap();
            let loaded: u64 = copy
                .sql(db, &format!("SELECT COUNT(*) FROM `{table}`"))
                .parse()
                .unwrap();
            assert_eq!(loaded, rows, "{db}.{table}");
        }
    }
    let orders: u64 = copy
        .sql("shop", "SELECT COUNT(*) FROM orders")
        .parse()
        .unwrap();
    let audit: u64 = copy
        .sql("shop", "SELECT COUNT(*) FROM audit")
        .parse()
        .unwrap();
    assert_eq!(orders, audit, "a half-applied transaction was dumped");
    assert!(orders >= 5000);
}

#[test]
fn mysql_credentials_stay_out_of_arguments_and_output() {
    let m = MariaDb::start();
    fixture(&m);
    let repo = tempfile::tempdir().unwrap();
    // A wrapper records the dump tool's arguments and its defaults file.
    let bin = tempfile::tempdir().unwrap();
    let record = bin.path().join("argv");
    let real = Command::new("sh")
        .args(["-c", "command -v mariadb-dump"])
        .output()
        .unwrap();
    let real = String::from_utf8(real.stdout).unwrap().trim().to_string();
    let wrapper = bin.path().join("mariadb-dump");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" >> {rec}\nfor a in \"$@\"; do case \"$a\" in --defaults-extra-file=*) f=${{a#--defaults-extra-file=}}; stat -c %a \"$f\" >> {rec};; esac; done\nexec {real} \"$@\"\n",
            rec = record.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let lb = lifeboat_for(Repo::Local(repo.path().join("repo")), &m, Some(bin.path()));
    let run = lb.run_env(&["backup"], &[("RUST_LOG", "debug")]);
    run.ok();
    let argv = std::fs::read_to_string(&record).unwrap();
    assert!(!argv.contains(&m.password), "password in argv: {argv}");
    assert!(argv.contains("--defaults-extra-file="), "{argv}");
    assert!(
        argv.lines().any(|l| l.trim() == "600"),
        "defaults file mode: {argv}"
    );
    let defaults = argv
        .split_whitespace()
        .find_map(|a| a.strip_prefix("--defaults-extra-file="))
        .unwrap();
    assert!(
        !std::path::Path::new(defaults).exists(),
        "the defaults file {defaults} was left behind"
    );
    assert!(!run.stderr.contains(&m.password) && !run.stdout.contains(&m.password));
    for entry in walk(&repo.path().join("repo")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&m.password),
            "password stored in {}",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn unreachable_servers_wrong_passwords_and_missing_binlogs_are_explained() {
    let m = MariaDb::start_with(false);
    fixture(&m);
    let repo = tempfile::tempdir().unwrap();
    let lb = lifeboat_for(Repo::Local(repo.path().join("repo")), &m, None);

    // No binlog: the dump works, and the log says how to enable PITR.
    let run = lb.run(&["backup", "--json"]);
    run.ok();
    assert!(run.stderr.contains("binary log is off"), "{}", run.stderr);
    assert!(run.stderr.contains("log_bin"), "{}", run.stderr);
    assert!(manifest_of(&run).binlog.is_none());

    let wrong = lb.run_env(&["backup"], &[("TEST_MYPASSWORD", "not-the-password")]);
    wrong.fails_with(1, &["127.0.0.1", "user 'root'", "Access denied"]);
    assert!(
        !wrong.stderr.contains("not-the-password"),
        "{}",
        wrong.stderr
    );

    let closed = crate::harness::free_port();
    let lb2 = Lifeboat::with_source(
        Repo::Local(repo.path().join("repo")),
        &format!(
            "  - name: business-db\n    mysql:\n      host: 127.0.0.1\n      port: {closed}\n      user: root\n"
        ),
        &[],
    );
    lb2.run(&["backup"])
        .fails_with(1, &[&format!("127.0.0.1:{closed}"), "cannot connect"]);
}

/// The archive's best copy of every binlog file, decrypted.
pub(crate) fn archived(
    garage: &Garage,
    prefix: &str,
    lb: &Lifeboat,
) -> Vec<(String, bool, Vec<u8>)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ids = Arc::new(Identities::load(&lb.identity).unwrap());
    rt.block_on(async {
        let store: Arc<dyn lifeboat::storage::ObjectStore> = Arc::new(garage.store(prefix).await);
        let repo = lifeboat::repository::Repository::new(store);
        // A running archiver replaces partial copies: a copy listed a moment
        // ago may be gone; read the state again then.
        'again: for _ in 0..20 {
            let state = lifeboat::kinds::mysql::binlog::load_state(&repo, "test", "business-db")
                .await
                .unwrap();
            let mut out = Vec::new();
            for rec in state.values() {
                match lifeboat::kinds::mysql::binlog::fetch(&repo, rec, ids.clone()).await {
                    Ok(bytes) => out.push((rec.file.clone(), rec.complete, bytes)),
                    Err(lifeboat::kinds::mysql::binlog::BinlogError::Pipeline(
                        lifeboat::pipeline::PipelineError::Storage(
                            lifeboat::storage::StorageError::NotFound { .. },
                        ),
                    )) => continue 'again,
                    Err(e) => panic!("{e}"),
                }
            }
            return out;
        }
        panic!("the archive kept changing under the reader")
    })
}

/// The server's binlog files and sizes (`SHOW BINARY LOGS`).
pub(crate) fn server_binlogs(m: &MariaDb) -> Vec<(String, u64)> {
    m.sql("", "SHOW BINARY LOGS")
        .lines()
        .map(|l| {
            let mut f = l.split('\t');
            (
                f.next().unwrap().to_string(),
                f.next().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

pub(crate) fn writes(m: &MariaDb, n: u32) {
    for _ in 0..n {
        m.sql(
            "shop",
            "INSERT INTO orders (customer_id, amount, note, photo) SELECT 3, seq, REPEAT('x', 200), UNHEX(MD5(seq)) FROM seq_1_to_200",
        );
    }
}

/// Waits until the archive holds every server file whole except the
/// newest, and the newest up to its current size.
pub(crate) fn wait_archived(garage: &Garage, prefix: &str, lb: &Lifeboat, m: &MariaDb, log: &str) {
    let want = server_binlogs(m);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let have = archived(garage, prefix, lb);
        let done = want.iter().enumerate().all(|(i, (f, size))| {
            have.iter().any(|(hf, complete, bytes)| {
                hf == f && bytes.len() as u64 >= *size && (*complete || i + 1 == want.len())
            })
        });
        if done {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "binlogs not archived after 60 s; server has {want:?}, archive has {:?}\n{}",
            have.iter()
                .map(|(f, c, b)| (f.clone(), *c, b.len()))
                .collect::<Vec<_>>(),
            lb.log(log)
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

#[test]
fn binlogs_are_archived_byte_for_byte_through_kills_restarts_and_rotations() {
    let garage = Garage::start();
    let mut m = MariaDb::start();
    fixture(&m);
    let mut lb = lifeboat_for(Repo::Garage(&garage, "binlog"), &m, None);
    // A temp folder of its own, to see the spool.
    let tmp = lb.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    lb.env.push(("TMPDIR".into(), tmp.display().to_string()));
    let spools = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("lifeboat-binlog-")
            })
            .collect()
    };
    // Processes whose command line writes into `spool`.
    let writers = |spool: &std::path::Path| -> usize {
        let marker = format!("--result-file={}/", spool.display());
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == marker.as_bytes()))
            })
            .count()
    };
    let args = [
        "binlog-archive",
        "--source",
        "business-db",
        "--interval",
        "1s",
    ];
    let mut archiver = lb.spawn(&args, "archiver-1.log");

    writes(&m, 5);
    m.sql("", "FLUSH BINARY LOGS");
    writes(&m, 5);
    m.sql("", "FLUSH BINARY LOGS");
    writes(&m, 5);
    wait_archived(&garage, "binlog", &lb, &m, "archiver-1.log");

    // The plaintext spool is private: the folder 0700, its files 0600.
    use std::os::unix::fs::PermissionsExt;
    let first = spools();
    assert_eq!(first.len(), 1, "{first:?}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&first[0]), 0o700);
    for f in std::fs::read_dir(&first[0]).unwrap() {
        let f = f.unwrap().path();
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }

    // SIGKILL mid-stream: its mariadb-binlog dies with it (the kernel's
    // parent-death signal), not only when the next archiver sweeps.
    archiver.kill().unwrap();
    archiver.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while writers(&first[0]) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "mariadb-binlog outlived the killed archiver"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Writes and a rotation while it is down.
    writes(&m, 5);
    m.sql("", "FLUSH BINARY LOGS");
    writes(&m, 3);
    let mut archiver = lb.spawn(&args, "archiver-2.log");
    wait_archived(&garage, "binlog", &lb, &m, "archiver-2.log");
    // The next archiver removed the killed one's spool and stopped the
    // mariadb-binlog still writing into it.
    assert!(!first[0].exists(), "the killed archiver's spool is gone");
    assert_eq!(writers(&first[0]), 0, "its mariadb-binlog is stopped");
    assert!(
        lb.log("archiver-2.log")
            .contains("removed the binlog spool of an archiver that was killed"),
        "{}",
        lb.log("archiver-2.log")
    );

    // The server restarts: the stream drops and is resumed.
    m.restart();
    writes(&m, 5);
    m.sql("", "FLUSH BINARY LOGS");
    writes(&m, 2);
    wait_archived(&garage, "binlog", &lb, &m, "archiver-2.log");

    // SIGTERM: a clean stop, exit 0.
    Command::new("kill")
        .arg("-TERM")
        .arg(archiver.id().to_string())
        .status()
        .unwrap();
    let status = archiver.wait().unwrap();
    assert!(
        status.success(),
        "archiver exit {status}: {}",
        lb.log("archiver-2.log")
    );
    assert!(spools().is_empty(), "a clean stop leaves no spool");

    // Byte for byte: complete files equal the server's, the file in
    // progress is a prefix of it.
    let have = archived(&garage, "binlog", &lb);
    let server = server_binlogs(&m);
    assert!(server.len() >= 6, "{server:?}");
    for (file, _) in &server {
        let (_, complete, bytes) = have
            .iter()
            .find(|(f, _, _)| f == file)
            .unwrap_or_else(|| panic!("{file} not archived"));
        let mut on_disk = std::fs::read(m.binlog_dir().join(file)).unwrap();
        if !*complete {
            // The server marks its open file "in use" in the first event's
            // flags (LOG_EVENT_BINLOG_IN_USE_F, byte 21) and clears the
            // mark on rotation; the stream already carries it cleared, so
            // the archived copy equals the file as the server will close it.
            on_disk[21] &= !1;
        }
        if *complete {
            assert!(bytes == &on_disk, "{file} differs from the server's file");
        } else {
            let first_diff = bytes.iter().zip(&on_disk).position(|(a, b)| a != b);
            assert!(
                on_disk.starts_with(bytes),
                "{file}: the partial copy ({} bytes) is not a prefix of the server's file ({} bytes); first difference at {first_diff:?}",
                bytes.len(),
                on_disk.len()
            );
        }
    }
    let v = lb.run(&["binlog-verify", "--source", "business-db"]);
    v.ok();
    assert!(v.stdout.contains("Gaps: none"), "{}", v.stdout);
}

#[test]
fn archiving_a_server_without_binlogs_says_how_to_enable_them() {
    let m = MariaDb::start_with(false);
    let repo = tempfile::tempdir().unwrap();
    let lb = lifeboat_for(Repo::Local(repo.path().join("repo")), &m, None);
    lb.run(&["binlog-archive", "--source", "business-db"])
        .fails_with(
            1,
            &[
                "binary log is off",
                "log_bin",
                "server_id",
                "binlog_format=ROW",
            ],
        );
}

pub(crate) fn shop_contents(m: &MariaDb) -> String {
    m.sql(
        "shop",
        "SELECT (SELECT COUNT(*) FROM orders), (SELECT SUM(amount) FROM orders), (SELECT MAX(id) FROM orders), \
         (SELECT COUNT(*) FROM audit), (SELECT GROUP_CONCAT(name ORDER BY id) FROM customers)",
    )
}

#[test]
fn point_in_time_restores_replay_archived_binlogs_to_a_time_and_to_the_end() {
    let garage = Garage::start();
    let m = MariaDb::start();
    fixture(&m);
    let lb = lifeboat_for(Repo::Garage(&garage, "mypitr"), &m, None);
    let archive_args = [
        "binlog-archive",
        "--source",
        "business-db",
        "--interval",
        "1s",
    ];
    let mut archiver = lb.spawn(&archive_args, "archiver.log");
    writes(&m, 3);
    lb.run(&["backup", "--source", "business-db"]).ok();
    writes(&m, 3);
    m.sql("", "FLUSH BINARY LOGS");
    m.sql("shop", "CALL add_customer('after the dump')");
    // Binlog events carry whole seconds: T sits on a second no write shares.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let t = m.sql(
        "",
        "SELECT DATE_FORMAT(UTC_TIMESTAMP(), '%Y-%m-%d %H:%i:%s+00')",
    );
    let at_t = shop_contents(&m);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    writes(&m, 3);
    m.sql(
        "shop",
        "DELETE FROM orders WHERE id % 5 = 0 AND id NOT IN (SELECT order_id FROM audit)",
    );
    m.sql(
        "shop",
        "UPDATE orders SET amount = amount * 2 WHERE id % 3 = 0",
    );
    let latest = shop_contents(&m);
    assert_ne!(at_t, latest);
    wait_archived(&garage, "mypitr", &lb, &m, "archiver.log");

    let identity = lb.identity.display().to_string();
    let restore = |copy: &MariaDb, until: &str| {
        let to = format!("mysql://root@127.0.0.1:{}/", copy.port);
        lb.run_env(
            &[
                "restore",
                "--source",
                "business-db",
                "--identity",
                &identity,
                "--to",
                &to,
                "--until",
                until,
            ],
            &[("MYSQL_PWD", &copy.password)],
        )
    };
    let copy = MariaDb::start();
    let r = restore(&copy, &t);
    r.ok();
    assert!(r.stdout.contains("replayed"), "{}", r.stdout);
    assert!(r.stdout.contains("all match the backup"), "{}", r.stdout);
    assert_eq!(shop_contents(&copy), at_t, "{}", r.stderr);

    let copy2 = MariaDb::start();
    let r = restore(&copy2, "latest");
    r.ok();
    assert_eq!(shop_contents(&copy2), latest, "{}", r.stderr);

    let copy3 = MariaDb::start();
    restore(&copy3, "2000-01-01 00:00:00+00").fails_with(4, &["no dump", "old enough"]);
    restore(&copy3, "2999-01-01 00:00:00+00").fails_with(4, &["beyond the last archived event"]);
    assert_eq!(copy3.sql("", "SHOW DATABASES LIKE 'shop'"), "");

    Command::new("kill")
        .arg("-TERM")
        .arg(archiver.id().to_string())
        .status()
        .unwrap();
    assert!(
        archiver.wait().unwrap().success(),
        "{}",
        lb.log("archiver.log")
    );
}
