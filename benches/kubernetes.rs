//! Kubernetes export and restore of 5,000 objects (ConfigMaps and Secrets
//! of a few keys each) against the in-process API server of the tests:
//! wall time and the lifeboat process's peak RSS (GNU time's %M), median
//! of 3 runs each.
//!
//! Run: `cargo bench --bench kubernetes`. Results go in docs/BENCHMARKS.md.
//! Target: under 10 s each.

#[path = "../tests/integration/kube_server/mod.rs"]
mod kube_server;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use kube_server::KubeServer;

const OBJECTS: usize = 5_000;
const RUNS: usize = 3;
/// A round trip to a cluster in the same region; `LATENCY_MS=0` for the
/// server alone.
fn latency() -> std::time::Duration {
    let ms: u64 = std::env::var("LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    std::time::Duration::from_millis(ms)
}

/// Runs lifeboat under /usr/bin/time; returns (wall seconds, peak RSS MiB).
fn timed(dir: &Path, args: &[&str]) -> (f64, f64) {
    let time_file = dir.join("time.txt");
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&time_file)
        .arg(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("-q")
        .args(args)
        .output()
        .expect("run /usr/bin/time (Debian package `time`)");
    let wall = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "lifeboat {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let kib: f64 = std::fs::read_to_string(&time_file)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (wall, kib / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list of benchmarks
    }
    let dir = tempfile::tempdir().unwrap();
    let source = KubeServer::start();
    source.seed_bulk("bench", OBJECTS);
    source.set_latency(latency());
    let kubeconfig = source.kubeconfig(dir.path());
    let key = dir.path().join("lifeboat.key");
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("keygen")
        .arg("--out")
        .arg(&key)
        .output()
        .unwrap();
    let recipient = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "name: bench\nrepository:\n  url: {}\nencryption:\n  recipients: [{recipient}]\nsources:\n  \
             - name: cluster\n    kubernetes:\n      kubeconfig: {}\n      namespaces: [bench]\n",
            dir.path().join("repo").display(),
            kubeconfig.display()
        ),
    )
    .unwrap();
    let p = policy.display().to_string();
    let k = key.display().to_string();

    let (mut export_s, mut export_mb) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (s, mb) = timed(dir.path(), &["backup", "--policy", &p]);
        export_s.push(s);
        export_mb.push(mb);
    }
    let objects = source.objects_in("bench").len();

    // Restore into an empty cluster, as after losing one; a new server per
    // run so every object is created.
    let (mut restore_s, mut restore_mb) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        let target = KubeServer::start();
        target.set_latency(latency());
        let target_dir = dir.path().join(format!("target-{i}"));
        std::fs::create_dir_all(&target_dir).unwrap();
        let cfg = target.kubeconfig(&target_dir).display().to_string();
        let (s, mb) = timed(
            dir.path(),
            &[
                "restore",
                "--policy",
                &p,
                "--source",
                "cluster",
                "--identity",
                &k,
                "--kubeconfig",
                &cfg,
            ],
        );
        assert!(
            target.objects_in("bench").len() >= OBJECTS,
            "every object restored"
        );
        restore_s.push(s);
        restore_mb.push(mb);
    }

    println!(
        "Kubernetes export/restore of {objects} objects (in-process API server, {} ms per request), median of {RUNS}:",
        latency().as_millis()
    );
    println!("| step | wall s | peak RSS MiB | target |");
    println!("|---|---|---|---|");
    println!(
        "| export (`lifeboat backup`) | {:.2} | {:.0} | < 10 s |",
        median(export_s.clone()),
        median(export_mb.clone())
    );
    println!(
        "| restore into an empty cluster | {:.2} | {:.0} | < 10 s |",
        median(restore_s.clone()),
        median(restore_mb.clone())
    );
    println!("runs: export {export_s:.2?} s, restore {restore_s:.2?} s");
}
