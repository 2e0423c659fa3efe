//! The daemon in-process: policies folder, reload, a scheduled slot and a
//! stop that cancels a running backup, driven through [`run`]'s signal
//! channel with an injected clock. Backups here use Kubernetes sources
//! (a missing kubeconfig, an API server that never answers), so no
//! database server is needed; the real backups run in the integration
//! tests.

use std::io::Read;
use std::net::TcpListener as StdListener;
use std::path::Path;
use std::time::Instant;

use chrono::TimeZone;
use tokio::task::JoinHandle;

use super::*;
use crate::clock::{SystemClock, TokioClock};

const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

fn policy(name: &str, dir: &Path, schedule: &str, kubeconfig: &Path) -> String {
    format!(
        "name: {name}\nrepository:\n  url: {repo}\nencryption:\n  recipients: [{RECIPIENT}]\n{schedule}sources:\n  - name: cluster\n    kubernetes:\n      kubeconfig: {kc}\n      namespaces: [prod]\n",
        repo = dir.join("repo").display(),
        kc = kubeconfig.display(),
    )
}

struct Daemon {
    dir: tempfile::TempDir,
    /// The daemon's catalog, opened (created) before the daemon starts.
    catalog: Catalog,
    shared: Arc<Shared>,
    signals: mpsc::UnboundedSender<Signal>,
    task: JoinHandle<Result<(), DaemonError>>,
}

impl Daemon {
    /// Starts the daemon on `dir`'s `policies` folder.
    async fn start(dir: tempfile::TempDir, clock: Arc<dyn Clock>, window: Duration) -> Daemon {
        let catalog = Catalog::open(&dir.path().join("catalog.db")).await.unwrap();
        let cfg = Config {
            policies: dir.path().join("policies"),
            catalog: dir.path().join("catalog.db"),
            strict: false,
            missed_run_window: window,
            shutdown_deadline: Duration::ZERO,
            probe_interval: Duration::from_secs(3600),
            clock,
        };
        let shared = Shared::new(Utc::now());
        let (signals, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(cfg, Arc::clone(&shared), None, rx));
        Daemon {
            dir,
            catalog,
            shared,
            signals,
            task,
        }
    }

    /// Stops it; it must end, cleanly, within 30 s.
    async fn stop(self) -> tempfile::TempDir {
        self.signals.send(Signal::Stop("test")).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the daemon stops")
            .expect("the daemon task does not panic")
            .expect("the daemon stops cleanly");
        self.dir
    }

    async fn runs(&self, policy: &str) -> Vec<crate::catalog::RunRecord> {
        self.catalog.runs(policy, None, None, 100).await.unwrap()
    }
}

/// A folder with `policies/` and a kubeconfig that does not exist.
fn folder() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let missing = dir.path().join("no-such-kubeconfig");
    (dir, missing)
}

/// Polls `what` every 50 ms for up to 20 s.
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let began = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(began.elapsed() < Duration::from_secs(20), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_empty_folder_and_duplicate_names_are_refused() {
    let (dir, kc) = folder();
    let d = Daemon::start(dir, Arc::new(SystemClock), Duration::ZERO).await;
    let e = d.task.await.unwrap().unwrap_err();
    assert!(matches!(e, DaemonError::NoPolicies { .. }), "{e}");

    let (dir, kc2) = folder();
    for f in ["a.yaml", "b.yml"] {
        std::fs::write(
            dir.path().join("policies").join(f),
            policy("same", dir.path(), "", &kc2),
        )
        .unwrap();
    }
    let d = Daemon::start(dir, Arc::new(SystemClock), Duration::ZERO).await;
    let e = d.task.await.unwrap().unwrap_err();
    assert!(
        e.to_string().contains("'same'") && e.to_string().contains("unique"),
        "{e}"
    );
    let _ = kc;
}

#[tokio::test]
async fn a_broken_file_is_reported_and_a_reload_starts_it_once_fixed() {
    let (dir, kc) = folder();
    let policies = dir.path().join("policies");
    std::fs::write(
        policies.join("good.yaml"),
        policy("good", dir.path(), "", &kc),
    )
    .unwrap();
    std::fs::write(policies.join("later.yaml"), "name: later\nrepository: [\n").unwrap();
    let d = Daemon::start(dir, Arc::new(SystemClock), Duration::ZERO).await;
    let problems = eventually("the broken file is reported", async || {
        let p = d.shared.problems();
        (!p.is_empty()).then_some(p)
    })
    .await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("later.yaml"), "{problems:?}");

    // Fixed, then SIGHUP: the problem is gone and the new policy runs.
    std::fs::write(
        policies.join("later.yaml"),
        policy("later", d.dir.path(), "", &kc),
    )
    .unwrap();
    d.signals.send(Signal::Reload).unwrap();
    eventually("the reload clears the problem", async || {
        d.shared.problems().is_empty().then_some(())
    })
    .await;
    eventually("the new policy shows in the metrics", async || {
        d.shared
            .metrics
            .render()
            .contains("policy=\"later\"")
            .then_some(())
    })
    .await;
    d.stop().await;
}

#[tokio::test]
async fn a_slot_runs_the_backup_on_the_injected_clock_and_records_it() {
    let (dir, kc) = folder();
    std::fs::write(
        dir.path().join("policies").join("hourly.yaml"),
        policy("hourly", dir.path(), "schedule: \"0 * * * *\"\n", &kc),
    )
    .unwrap();
    // Five seconds before a slot (time to start), on a clock that runs
    // with tokio's time.
    let slot = Utc.with_ymd_and_hms(2026, 3, 1, 1, 0, 0).unwrap();
    let clock = Arc::new(TokioClock::starting_at(slot - chrono::Duration::seconds(5)));
    let d = Daemon::start(dir, clock.clone(), Duration::ZERO).await;
    let began = Instant::now();
    let runs = loop {
        let runs = d.runs("hourly").await;
        if runs.first().is_some_and(|r| r.finished_at.is_some()) {
            break runs;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "no finished run for the slot after 20 s (clock at {}): runs {runs:?}, problems {:?}, metrics:\n{}",
            clock.now(),
            d.shared.problems(),
            d.shared.metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(runs.len(), 1, "{runs:?}");
    let r = &runs[0];
    assert_eq!(
        (r.source.as_str(), r.operation.as_str(), r.trigger.as_str()),
        ("cluster", "backup", "schedule")
    );
    assert!(
        r.started_at >= slot && r.started_at < slot + chrono::Duration::seconds(30),
        "started at {} for the slot {slot}",
        r.started_at
    );
    assert_eq!(r.outcome, "failure");
    let error = r.error.as_deref().unwrap_or_default();
    assert!(error.contains("no-such-kubeconfig"), "{error}");
    eventually("the next slot (02:00) is exported", async || {
        d.shared
            .metrics
            .render()
            .contains("lifeboat_next_run_timestamp_seconds{policy=\"hourly\"} 1772330400")
            .then_some(())
    })
    .await;
    d.stop().await;
}

/// An API server that accepts connections and never answers; counts them.
fn black_hole() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut c = conn;
            let mut buf = [0u8; 1024];
            let _ = c.set_nonblocking(true);
            let _ = c.read(&mut buf);
            held.push(c);
        }
    });
    (format!("http://{addr}"), accepted)
}

#[tokio::test]
async fn a_stop_cancels_a_running_backup_after_the_deadline_and_lets_its_lock_go() {
    let (dir, _) = folder();
    let (server, accepted) = black_hole();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("policies").join("stuck.yaml"),
        policy("stuck", dir.path(), "schedule: \"* * * * *\"\n", &kc),
    )
    .unwrap();
    // The slot a few seconds ago was missed: it runs at once.
    let d = Daemon::start(dir, Arc::new(SystemClock), Duration::from_secs(3600)).await;
    eventually("the backup reaches the API server", async || {
        (accepted.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let runs = d.runs("stuck").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].finished_at.is_none(), "still running: {runs:?}");

    // Deadline zero: the stop cancels it at once.
    let began = Instant::now();
    let dir = d.stop().await;
    eprintln!("stopped in {:?}", began.elapsed());
    let catalog = Catalog::open(&dir.path().join("catalog.db")).await.unwrap();
    let runs = catalog.runs("stuck", None, None, 10).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].outcome, "interrupted", "{runs:?}");
    assert!(runs[0].finished_at.is_some());
    // Its lock is released and nothing is listed.
    let store = crate::storage::LocalStore::new(dir.path().join("repo"));
    use crate::storage::ObjectStore;
    let locks = store.list("locks/").await.unwrap();
    assert!(locks.is_empty(), "{locks:?}");
    let manifests = store.list("manifests/").await.unwrap();
    assert!(manifests.is_empty(), "{manifests:?}");
}
