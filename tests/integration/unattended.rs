//! Unattended operation: prune against a real archive on Garage, and the
//! daemon (`lifeboat run`) with its schedules, metrics, catalog, reload
//! and graceful stop.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Timelike;

use crate::harness::{free_port, Garage, Lifeboat, PgCluster, Repo, RestoredDir};
use crate::pitr::{archiving, contents, load, restore, switch_and_wait};

fn list(lb: &Lifeboat) -> Vec<serde_json::Value> {
    let r = lb.run(&["list", "--json"]);
    r.ok();
    serde_json::from_str::<serde_json::Value>(&r.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn ids_of_kind(backups: &[serde_json::Value], kind: &str) -> Vec<String> {
    backups
        .iter()
        .filter(|m| m["kind"] == kind)
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn append_to_policy(lb: &Lifeboat, text: &str) {
    let mut policy = std::fs::read_to_string(&lb.policy).unwrap();
    policy.push_str(text);
    std::fs::write(&lb.policy, policy).unwrap();
}

/// Starts a multipart upload and leaves it unfinished, as a killed
/// process would.
fn leave_unfinished_upload(
    rt: &tokio::runtime::Runtime,
    store: &lifeboat::storage::S3Store,
    key: &str,
) {
    use lifeboat::storage::ObjectStore;
    rt.block_on(async {
        let mut w = store.create(key).await.unwrap();
        // More than one part (8 MiB): the multipart upload starts.
        for _ in 0..9 {
            w.write(bytes::Bytes::from(vec![7u8; 1 << 20]))
                .await
                .unwrap();
        }
        // Let the part upload start, then vanish without finishing or
        // aborting (the writer's own drop would abort it).
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::mem::forget(w);
    });
}

#[test]
fn prune_keeps_what_the_rules_keep_and_pitr_still_reaches_every_kept_backup() {
    let garage = Garage::start();
    let (pg, lb) = archiving(Repo::Garage(&garage, "prune"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(garage.store("prune"));

    // Three base backups and a dump, WAL archived all along.
    for _ in 0..3 {
        load(&pg, 5_000);
        switch_and_wait(&pg, pg.port, Duration::from_secs(60));
        lb.run(&["backup", "--source", "main-db", "--kind", "base"])
            .ok();
    }
    lb.run(&["backup", "--source", "main-db"]).ok();
    load(&pg, 5_000);
    let latest = contents(&pg, pg.port);
    switch_and_wait(&pg, pg.port, Duration::from_secs(60));
    let before = list(&lb);
    let bases = ids_of_kind(&before, "postgres-base");
    let dumps = ids_of_kind(&before, "postgres-dump");
    assert_eq!((bases.len(), dumps.len()), (3, 1));
    let second_start = before
        .iter()
        .find(|m| m["id"] == bases[1].as_str())
        .unwrap()["physical"]["start_segment"]
        .as_str()
        .unwrap()
        .to_string();

    // Leftovers of crashed runs: an old backup that never got its
    // manifest, a fresh one (maybe in progress), an unfinished upload.
    use lifeboat::storage::ObjectStore;
    rt.block_on(async {
        store
            .put(
                "data/test/main-db/20200101T000000Z-dead/db-app.pgdump.zst.age",
                bytes::Bytes::from_static(b"x"),
            )
            .await
            .unwrap();
        let fresh = lifeboat::repository::new_backup_id(chrono::Utc::now());
        store
            .put(
                &format!("data/test/main-db/{fresh}/globals.sql.zst.age"),
                bytes::Bytes::from_static(b"y"),
            )
            .await
            .unwrap();
    });
    leave_unfinished_upload(
        &rt,
        &store,
        "data/test/main-db/20200101T000000Z-beef/big.zst.age",
    );
    assert_eq!(rt.block_on(store.list_pending_uploads()).unwrap().len(), 1);

    append_to_policy(&lb, "retention:\n  keep_last: 2\n");
    let objects_before = rt.block_on(store.list("")).unwrap();

    // Dry run: the plan, and nothing deleted.
    let dry = lb.run(&["prune", "--dry-run", "--json"]);
    dry.ok();
    let plans: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    let plan = &plans[0]["plan"];
    let decided: BTreeMap<String, bool> = plan["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_string(),
                b["keep"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(!decided[&bases[0]], "{plan}");
    assert!(
        decided[&bases[1]] && decided[&bases[2]] && decided[&dumps[0]],
        "{plan}"
    );
    let doomed = |what: &str| -> Vec<String> {
        plan["objects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["what"] == what)
            .map(|o| o["key"].as_str().unwrap().to_string())
            .collect()
    };
    let wal_doomed = doomed("wal");
    assert!(!wal_doomed.is_empty(), "{plan}");
    for key in &wal_doomed {
        let name = key.split('/').nth(3).unwrap();
        assert!(
            name[8..24] < second_start[8..24],
            "{name} is needed by {second_start}"
        );
    }
    // Unlisted data is kept while its id or its objects are younger than
    // the grace period (the old id's object was just written).
    assert!(doomed("orphan").is_empty(), "{plan}");
    assert_eq!(
        plan["notes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n.as_str().unwrap().contains("has no manifest"))
            .count(),
        2,
        "{plan}"
    );
    assert!(
        plan["uploads"].as_array().unwrap().is_empty(),
        "fresh upload kept: {plan}"
    );
    assert!(plans[0]["deleted"].is_null());
    assert_eq!(
        rt.block_on(store.list("")).unwrap(),
        objects_before,
        "a dry run deletes nothing"
    );
    let human = lb.run(&["prune", "--dry-run"]);
    human.ok();
    assert!(
        human.stdout.contains("DELETE") && human.stdout.contains(&bases[0]),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("newest backup: always kept"),
        "{}",
        human.stdout
    );

    // The real prune, with no grace: the leftovers go too.
    let r = lb.run(&["prune", "--grace", "0s"]);
    r.ok();
    let after = list(&lb);
    let mut kept: Vec<String> = after
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    kept.sort();
    let mut expected = vec![bases[1].clone(), bases[2].clone(), dumps[0].clone()];
    expected.sort();
    assert_eq!(kept, expected);
    let objects = rt.block_on(store.list("")).unwrap();
    let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    assert!(!keys.iter().any(|k| k.contains(&bases[0])), "{keys:?}");
    assert!(
        !keys.iter().any(|k| k.starts_with("data/test/main-db/") && {
            let id = k.split('/').nth(3).unwrap();
            !expected.iter().any(|e| e == id)
        }),
        "only kept backups have data: {keys:?}"
    );
    for key in keys.iter().filter(|k| k.starts_with("wal/")) {
        let name = key.split('/').nth(3).unwrap();
        if !name.ends_with(".history") {
            assert!(name[8..24] >= second_start[8..24], "{name} should be gone");
        }
    }
    for key in &wal_doomed {
        assert!(!keys.contains(&key.as_str()), "{key} deleted");
    }
    assert!(
        rt.block_on(store.list_pending_uploads())
            .unwrap()
            .is_empty(),
        "upload aborted"
    );

    // Point-in-time recovery still works from each kept base backup.
    for id in [&bases[1], &bases[2]] {
        let d = RestoredDir::new();
        let port = free_port();
        restore(
            &lb,
            &d,
            &[
                "--backup",
                id,
                "--until",
                "latest",
                "--start",
                "--port",
                &port.to_string(),
                "--no-archive",
            ],
        )
        .ok();
        assert_eq!(contents(&pg, port), latest, "from {id}: {}", d.log());
        d.stop();
    }

    // A backup applies the retention by itself.
    let b = lb.run(&["backup", "--source", "main-db", "--kind", "base"]);
    b.ok();
    assert!(
        b.stdout.contains("retention: 1 older backups deleted"),
        "{}",
        b.stdout
    );
    let bases_now = ids_of_kind(&list(&lb), "postgres-base");
    assert_eq!(bases_now.len(), 2);
    assert!(bases_now.contains(&bases[2]) && !bases_now.contains(&bases[1]));

    // Archive lag, as status (and the daemon's metrics) measure it:
    // nothing waits once the switched segment is archived...
    load(&pg, 1_000);
    switch_and_wait(&pg, pg.port, Duration::from_secs(60));
    let wal_status = |lb: &Lifeboat| -> serde_json::Value {
        let st = lb.run(&["status", "--json"]);
        st.ok();
        serde_json::from_str::<serde_json::Value>(&st.stdout).unwrap()["sources"][0]["archive"]
            .clone()
    };
    let a = wal_status(&lb);
    assert_eq!(a["kind"], "wal", "{a}");
    assert_eq!(a["lag_segments"], 0, "{a}");
    assert_eq!(a["lag_seconds"], 0.0, "{a}");
    // ...and two finished segments wait while archiving fails.
    pg.psql(
        "postgres",
        "ALTER SYSTEM SET archive_command = '/bin/false'",
    );
    pg.psql("postgres", "SELECT pg_reload_conf()");
    for _ in 0..2 {
        load(&pg, 1_000);
        pg.psql("postgres", "SELECT pg_switch_wal()");
    }
    let a = wal_status(&lb);
    assert_eq!(a["lag_segments"], 2, "{a}");
    assert!(a["lag_seconds"].as_f64().unwrap() > 0.0, "{a}");
}

#[test]
fn prune_refuses_a_policy_without_retention_and_a_retention_that_keeps_nothing() {
    let pg = PgCluster::start();
    let repo = tempfile::tempdir().unwrap();
    let lb = Lifeboat::new(Repo::Local(repo.path().join("repo")), &pg, "[app]");
    lb.run(&["prune"])
        .fails_with(2, &["no retention section", "keep_daily"]);
    append_to_policy(&lb, "retention:\n  keep_last: 0\n");
    lb.run(&["prune"]).fails_with(2, &["retention"]);
}

/// A GET on the daemon's HTTP port: (status, body).
pub(crate) fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Parses the Prometheus text format strictly: every sample's metric has
/// HELP and TYPE lines first; returns `name{labels}` → value.
pub(crate) fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut typed = std::collections::BTreeSet::new();
    let mut helped = std::collections::BTreeSet::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut f = rest.split(' ');
            let name = f.next().unwrap().to_string();
            assert!(matches!(f.next(), Some("gauge" | "counter")), "{line}");
            typed.insert(name);
        } else if !line.is_empty() {
            let (series, value) = line.rsplit_once(' ').expect(line);
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "metric name {name}"
            );
            assert!(
                typed.contains(name) && helped.contains(name),
                "{name} lacks HELP/TYPE"
            );
            if let Some(labels) = series.strip_prefix(name).and_then(|l| l.strip_prefix('{')) {
                let labels = labels.strip_suffix('}').expect(line);
                for pair in labels.split(',') {
                    let (k, v) = pair.split_once('=').expect(line);
                    assert!(k.chars().all(|c| c.is_ascii_lowercase()), "{line}");
                    assert!(v.starts_with('"') && v.ends_with('"'), "{line}");
                }
            }
            out.insert(series.to_string(), value.parse::<f64>().expect(line));
        }
    }
    out
}

pub(crate) fn spawn_daemon(
    lb: &Lifeboat,
    policies: &Path,
    port: u16,
    extra: &[&str],
    log: &Path,
) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    cmd.arg("run")
        .arg("--policies")
        .arg(policies)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--log-format", "json", "--probe-interval", "1s"])
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("PGPASSWORD");
    for (k, v) in &lb.env {
        cmd.env(k, v);
    }
    let f = std::fs::File::create(log).unwrap();
    cmd.stdout(Stdio::null()).stderr(f).spawn().unwrap()
}

/// Polls until `ok` holds for the daemon's metrics.
pub(crate) fn wait_for_metrics(
    port: u16,
    log: &Path,
    what: &str,
    ok: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            drop(s.flush());
            let (status, body) = http_get(port, "/metrics");
            assert_eq!(status, 200);
            let m = parse_metrics(&body);
            if ok(&m) {
                return m;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened; daemon log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

pub(crate) fn wait_exit(
    child: &mut Child,
    limit: Duration,
) -> (std::process::ExitStatus, Duration) {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, t.elapsed());
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("the daemon did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A policies folder holding the test policy with a schedule whose slot
/// is this very minute (so the missed-run rule runs it once at start, and
/// it fires next in 24 h).
fn policies_folder(lb: &Lifeboat, extra: &str) -> (PathBuf, chrono::DateTime<chrono::Utc>) {
    let now = chrono::Utc::now();
    let slot = now.with_second(0).unwrap().with_nanosecond(0).unwrap();
    let dir = lb.dir.path().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = std::fs::read_to_string(&lb.policy).unwrap();
    text.push_str(&format!(
        "schedule: \"{} {} * * *\"\ntimezone: UTC\n{extra}",
        slot.minute(),
        slot.hour()
    ));
    std::fs::write(dir.join("app.yaml"), text).unwrap();
    (dir, slot)
}

#[test]
fn daemon_runs_the_schedule_serves_metrics_keeps_a_catalog_and_reports_a_broken_policy() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
    );
    let repo = tempfile::tempdir().unwrap();
    let lb = Lifeboat::new(Repo::Local(repo.path().join("repo")), &pg, "[app]");
    let (policies, slot) = policies_folder(&lb, "retention:\n  keep_last: 3\n");
    // A broken file beside it: reported, the others run.
    std::fs::write(
        policies.join("broken.yaml"),
        std::fs::read_to_string(policies.join("app.yaml"))
            .unwrap()
            .replace("name: test", "name: other")
            .replace(
                &format!("schedule: \"{} {} * * *\"", slot.minute(), slot.hour()),
                "schedule: \"61 * * * *\"",
            ),
    )
    .unwrap();
    let log = lb.dir.path().join("daemon.log");

    // --strict refuses to start, naming the file and the field.
    let strict_port = free_port();
    let mut strict = spawn_daemon(&lb, &policies, strict_port, &["--strict"], &log);
    let (status, _) = wait_exit(&mut strict, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(
        text.contains("broken.yaml") && text.contains("schedule"),
        "{text}"
    );

    let port = free_port();
    let mut daemon = spawn_daemon(&lb, &policies, port, &["--missed-run-window", "1h"], &log);
    let m = wait_for_metrics(port, &log, "the catch-up backup", |m| {
        m.get("lifeboat_backup_last_attempt_success{policy=\"test\",source=\"main-db\"}")
            == Some(&1.0)
            && m.contains_key(
                "lifeboat_retention_last_run_success{policy=\"test\",source=\"main-db\"}",
            )
    });
    let (h, _) = http_get(port, "/healthz");
    assert_eq!(h, 200);
    let (r, body) = http_get(port, "/readyz");
    assert_eq!(r, 503, "a broken policy file makes the daemon not ready");
    assert!(body.contains("broken.yaml"), "{body}");

    let backups = list(&lb);
    assert_eq!(backups.len(), 1, "one catch-up run, no burst");
    let b = &backups[0];
    let started: chrono::DateTime<chrono::Utc> = b["started_at"].as_str().unwrap().parse().unwrap();
    let stored: u64 = b["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["stored"]["size"].as_u64().unwrap())
        .sum();
    let read: u64 = b["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["plaintext"]["size"].as_u64().unwrap())
        .sum();
    let s = "{policy=\"test\",source=\"main-db\"}";
    let get = |name: &str| {
        m.get(&format!("{name}{s}"))
            .copied()
            .unwrap_or_else(|| panic!("{name} missing: {m:?}"))
    };
    assert!(
        (get("lifeboat_backup_last_success_timestamp_seconds")
            - started.timestamp_millis() as f64 / 1000.0)
            .abs()
            < 0.002
    );
    assert_eq!(get("lifeboat_backup_stored_bytes"), stored as f64);
    assert_eq!(get("lifeboat_backup_read_bytes"), read as f64);
    assert!(get("lifeboat_backup_duration_seconds") > 0.0);
    assert!(get("lifeboat_backup_last_attempt_timestamp_seconds") >= slot.timestamp() as f64);
    assert_eq!(
        m["lifeboat_backup_runs_total{policy=\"test\",source=\"main-db\",outcome=\"success\"}"],
        1.0
    );
    assert_eq!(
        m["lifeboat_backup_runs_total{policy=\"test\",source=\"main-db\",outcome=\"failure\"}"],
        0.0
    );
    assert_eq!(get("lifeboat_retention_last_run_success"), 1.0);
    assert_eq!(get("lifeboat_retention_deleted_backups_total"), 0.0);
    assert_eq!(
        m["lifeboat_next_run_timestamp_seconds{policy=\"test\"}"],
        (slot + chrono::Duration::days(1)).timestamp() as f64
    );
    assert_eq!(m["lifeboat_policy_load_errors"], 1.0);
    assert_eq!(
        m[&format!(
            "lifeboat_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )],
        1.0
    );
    let json_lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        json_lines.iter().any(|l| l["message"] == "backup complete"
            && l["backup"] == b["id"]
            && l["span"]["source"] == "main-db"),
        "JSON log lines name the backup and source"
    );

    // SIGHUP after fixing the broken file: it loads, the daemon is ready.
    std::fs::write(
        policies.join("broken.yaml"),
        std::fs::read_to_string(policies.join("broken.yaml"))
            .unwrap()
            .replace("schedule: \"61 * * * *\"", "schedule: \"0 3 1 1 *\""),
    )
    .unwrap();
    signal(&daemon, "-HUP");
    wait_for_metrics(port, &log, "the reload", |m| {
        m.get("lifeboat_policy_load_errors") == Some(&0.0)
            && m.contains_key("lifeboat_next_run_timestamp_seconds{policy=\"other\"}")
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(port, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "{}", http_get(port, "/readyz").1);
        std::thread::sleep(Duration::from_millis(200));
    }

    signal(&daemon, "-TERM");
    let (status, _) = wait_exit(&mut daemon, Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );

    // The catalog recorded the run; rebuilt from the repository it
    // indexes the same backup.
    let runs = lb.run(&["catalog", "runs", "--json"]);
    runs.ok();
    let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["trigger"], "catch-up");
    assert_eq!(runs[0]["outcome"], "success");
    assert_eq!(runs[0]["backup_id"], b["id"]);
    assert_eq!(runs[0]["stored_bytes"], stored);
    let catalog = lb
        .env
        .iter()
        .find(|(k, _)| k == "LIFEBOAT_CATALOG")
        .unwrap()
        .1
        .clone();
    std::fs::remove_file(&catalog).unwrap();
    let r = lb.run(&["catalog", "rebuild"]);
    r.ok();
    assert!(
        r.stdout.contains("1 backups of policy 'test'"),
        "{}",
        r.stdout
    );

    let st = lb.run(&["status", "--json"]);
    st.ok();
    let st: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(st["sources"][0]["newest_backup"]["id"], b["id"]);
    assert_eq!(st["sources"][0]["backups"], 1);
    let human = lb.run(&["status"]);
    human.ok();
    assert!(
        human.stdout.contains("newest backup") && human.stdout.contains(b["id"].as_str().unwrap()),
        "{}",
        human.stdout
    );
}

#[test]
fn daemon_sigterm_during_a_large_backup_exits_cleanly_leaving_nothing() {
    let pg = PgCluster::start();
    let garage = Garage::start();
    pg.psql("postgres", "CREATE DATABASE app");
    // Random data compresses badly, so the dump needs many parts.
    pg.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(random()::text) AS v \
         FROM generate_series(1, 3000000) g",
    );
    let lb = Lifeboat::new(Repo::Garage(&garage, "daemon-term"), &pg, "[app]");
    let (policies, _) = policies_folder(&lb, "");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(garage.store("daemon-term"));
    let log = lb.dir.path().join("daemon.log");
    let port = free_port();
    let mut daemon = spawn_daemon(&lb, &policies, port, &["--shutdown-deadline", "1s"], &log);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending = rt.block_on(store.list_pending_uploads()).unwrap();
        if pending.iter().any(|u| u.key.contains("db-app.pgdump")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no upload started:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&daemon, "-TERM");
    let (status, took) = wait_exit(&mut daemon, Duration::from_secs(90));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("shutdown deadline reached"), "{text}");
    eprintln!("daemon stopped {took:?} after SIGTERM (deadline 1 s)");
    rt.block_on(async {
        use lifeboat::storage::ObjectStore;
        assert!(
            store.list_pending_uploads().await.unwrap().is_empty(),
            "multipart upload aborted"
        );
        let keys: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert!(
            keys.iter()
                .all(|k| !k.starts_with("manifests/") && !k.starts_with("data/")),
            "nothing half-listed or left: {keys:?}"
        );
    });
    let runs = lb.run(&["catalog", "runs", "--json"]);
    runs.ok();
    let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(runs[0]["outcome"], "interrupted", "{runs}");
}
