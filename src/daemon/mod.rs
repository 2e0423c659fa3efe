//! `lifeboat run`: the daemon. Runs every policy of a folder on its
//! schedule, keeps the binlog archivers of the sources that ask for one
//! running under supervision, probes archive lag, runs restore drills on
//! a policy's `drill.schedule` (and shows the newest stored drill report of
//! each PostgreSQL source in the metrics, whoever ran it), and serves
//! `/metrics`, `/healthz` and `/readyz`.
//!
//! - Policies: every `*.yaml`/`*.yml` file of the folder. A file that does
//!   not load is reported (log, `lifeboat_policy_load_errors`, `/readyz`)
//!   and the others run; `--strict` refuses to start instead. SIGHUP
//!   reloads the folder: changed policies are restarted once their run in
//!   progress ends, a file that broke keeps its last good version running.
//! - Each policy's backups run one at a time ([`schedule`]); two daemons
//!   (or a CronJob beside one) are kept apart by the sources' locks.
//! - SIGTERM/SIGINT: nothing new starts; running backups get
//!   `--shutdown-deadline` to finish, then are asked to stop (their
//!   uploads aborted, what they wrote deleted: nothing half-listed, no
//!   multipart upload left); binlog archivers store the file in progress
//!   as a partial copy; the daemon exits 0.

pub mod http;
pub mod schedule;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::catalog::{Catalog, CatalogError, RunEnd};
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyError, SourceKind};
use crate::repository::Repository;
use schedule::{SystemClock, Trigger};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot read the policies folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no policy files (*.yaml, *.yml) in {path}; put at least one there (`lifeboat policy check FILE` checks one)")]
    NoPolicies { path: PathBuf },
    #[error("--strict: {count} policy file(s) do not load, the first: {first}")]
    Strict { count: usize, first: PolicyError },
    #[error("two policy files define the policy '{name}' ({a} and {b}); policy names must be unique, they are part of every object key")]
    DuplicateName {
        name: String,
        a: PathBuf,
        b: PathBuf,
    },
    #[error("cannot listen on {addr} for /metrics: {source}; pass another --listen address")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl crate::outcome::Classify for DaemonError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Strict { .. } | Self::NoPolicies { .. } | Self::DuplicateName { .. } => {
                Outcome::Usage
            }
            Self::Catalog(e) => e.outcome(),
            Self::Folder { .. } | Self::Listen { .. } => Outcome::Failure,
        }
    }
}

/// The daemon's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub policies: PathBuf,
    pub listen: Option<SocketAddr>,
    pub catalog: PathBuf,
    pub strict: bool,
    /// A slot missed during downtime runs once at start if it is at most
    /// this old.
    pub missed_run_window: Duration,
    /// How long running backups may take to finish after SIGTERM.
    pub shutdown_deadline: Duration,
    /// How often archive lag is measured.
    pub probe_interval: Duration,
}

/// State shared with the HTTP endpoints.
pub struct Shared {
    pub metrics: Metrics,
    /// Why the daemon is not ready (empty: ready).
    problems: Mutex<BTreeMap<String, String>>,
}

impl Shared {
    fn problem(&self, key: &str, message: Option<String>) {
        let mut p = self.problems.lock().expect("problems lock");
        match message {
            Some(m) => {
                p.insert(key.to_string(), m);
            }
            None => {
                p.remove(key);
            }
        }
    }

    /// Why the daemon is not ready; empty when it is.
    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .expect("problems lock")
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect()
    }
}

/// A policy file that loads: its path, its text, the policy.
pub type Loaded = (PathBuf, String, Policy);

/// The policy files of a folder: the ones that load, and the errors.
pub fn load_folder(dir: &Path) -> Result<(Vec<Loaded>, Vec<PolicyError>), DaemonError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DaemonError::Folder {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            // Kubernetes mounts ConfigMaps with `..data` links and dot folders.
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    let mut good: Vec<Loaded> = Vec::new();
    let mut bad = Vec::new();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(source) => {
                bad.push(PolicyError::Read { path, source });
                continue;
            }
        };
        match Policy::parse(&text, &path) {
            Ok(p) => {
                if let Some((other, _, _)) = good.iter().find(|(_, _, g)| g.name == p.name) {
                    return Err(DaemonError::DuplicateName {
                        name: p.name.to_string(),
                        a: other.clone(),
                        b: path,
                    });
                }
                good.push((path, text, p))
            }
            Err(e) => bad.push(e),
        }
    }
    Ok((good, bad))
}

/// One running policy.
struct Running {
    path: PathBuf,
    text: String,
    stop: watch::Sender<bool>,
    /// The schedule loop: ends after its job in progress once stopped.
    schedule: JoinHandle<()>,
    /// Archivers and probes: aborted when the policy stops.
    helpers: Vec<JoinHandle<()>>,
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(cfg: Config) -> Result<(), DaemonError> {
    let started = Utc::now();
    let shared = Arc::new(Shared {
        metrics: Metrics::new(started),
        problems: Mutex::new(BTreeMap::new()),
    });
    let catalog = Catalog::open(&cfg.catalog).await?;
    let dangling = catalog.close_dangling_runs(started).await?;
    if dangling > 0 {
        tracing::warn!(
            runs = dangling,
            "runs of a previous process never finished; marked interrupted in the catalog"
        );
    }
    let (good, bad) = load_folder(&cfg.policies)?;
    if cfg.strict && !bad.is_empty() {
        let count = bad.len();
        return Err(DaemonError::Strict {
            count,
            first: bad.into_iter().next().expect("one error"),
        });
    }
    if good.is_empty() && bad.is_empty() {
        return Err(DaemonError::NoPolicies {
            path: cfg.policies.clone(),
        });
    }
    report_bad(&shared, &bad);

    if let Some(addr) = cfg.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Listen { addr, source })?;
        let local = listener.local_addr().unwrap_or(addr);
        tracing::info!(address = %local, "serving /metrics, /healthz and /readyz");
        tokio::spawn(http::serve(listener, Arc::clone(&shared)));
    }

    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    for (path, text, policy) in good {
        tracing::info!(policy = %policy.name, file = %path.display(), schedule = policy.schedule.as_ref().map(|s| s.expression.as_str()).unwrap_or("none"), drill_schedule = policy.drill.schedule.as_ref().map(|s| s.expression.as_str()).unwrap_or("none"), "policy loaded");
        let r = start_policy(path, policy, text, None, &cfg, &shared, &catalog);
        running.insert(r.0, r.1);
    }
    tracing::info!(
        policies = running.len(),
        broken = bad.len(),
        "lifeboat daemon running"
    );

    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    let stop_signal = loop {
        tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending::<()>().await } } => {
                tracing::info!("SIGHUP: reloading the policies folder");
                reload(&mut running, &cfg, &shared, &catalog);
            }
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => break "SIGTERM",
            _ = tokio::signal::ctrl_c() => break "SIGINT",
        }
    };
    tracing::info!(signal = stop_signal, deadline = ?cfg.shutdown_deadline, "stopping: no new runs; running backups may finish until the deadline");
    // Archivers keep running while backups finish: they stop (storing the
    // file in progress as a partial copy) once shutdown is requested below.
    let mut schedules = Vec::new();
    let mut helpers = Vec::new();
    for (_, r) in running {
        let _ = r.stop.send(true);
        schedules.push(r.schedule);
        helpers.extend(r.helpers);
    }
    let all = futures::future::join_all(schedules);
    tokio::pin!(all);
    let second = async {
        let mut term = signal(SignalKind::terminate()).ok();
        tokio::select! {
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    tokio::pin!(second);
    let finished = tokio::select! {
        _ = &mut all => true,
        _ = tokio::time::sleep(cfg.shutdown_deadline) => false,
        _ = &mut second => false,
    };
    if !finished {
        tracing::warn!("shutdown deadline reached: stopping the running backups (their uploads are aborted and what they wrote is deleted)");
        crate::shutdown::request();
        if tokio::time::timeout(Duration::from_secs(60), &mut all)
            .await
            .is_err()
        {
            tracing::error!("backups did not stop within 60 s of being asked; exiting anyway (their objects are unlisted and removed by the next prune)");
        }
    }
    crate::shutdown::request();
    let aborts: Vec<_> = helpers.iter().map(|h| h.abort_handle()).collect();
    if tokio::time::timeout(HELPER_STOP, futures::future::join_all(helpers))
        .await
        .is_err()
    {
        tracing::warn!(
            "archivers did not stop within {HELPER_STOP:?}; stopping them (the next archiver resumes from the last stored file)"
        );
        for a in aborts {
            a.abort();
        }
    }
    crate::storage::s3::finish_background_aborts(Duration::from_secs(10)).await;
    tracing::info!("lifeboat daemon stopped");
    Ok(())
}

fn report_bad(shared: &Shared, bad: &[PolicyError]) {
    for e in bad {
        tracing::error!(error = %e, "policy file does not load; the other policies run");
    }
    shared.metrics.policy_load_errors(bad.len());
    let mut problems = shared.problems.lock().expect("problems lock");
    problems.retain(|k, _| !k.starts_with("policy file"));
    for (i, e) in bad.iter().enumerate() {
        problems.insert(format!("policy file {i}"), e.to_string());
    }
}

fn reload(
    running: &mut BTreeMap<String, Running>,
    cfg: &Config,
    shared: &Arc<Shared>,
    catalog: &Catalog,
) {
    let (good, bad) = match load_folder(&cfg.policies) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "reload failed; the policies loaded before keep running");
            return;
        }
    };
    report_bad(shared, &bad);
    let broken_files: Vec<PathBuf> = bad
        .iter()
        .filter_map(|e| match e {
            PolicyError::Read { path, .. }
            | PolicyError::Syntax { path, .. }
            | PolicyError::Invalid { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    let mut keep: BTreeMap<String, Running> = BTreeMap::new();
    for (path, text, policy) in good {
        let name = policy.name.to_string();
        match running.remove(&name) {
            Some(r) if r.text == text => {
                keep.insert(name, r);
            }
            old => {
                let previous = old.map(|r| {
                    tracing::info!(policy = %name, "policy changed; restarting it after its run in progress");
                    let _ = r.stop.send(true);
                    for h in r.helpers {
                        h.abort();
                    }
                    r.schedule
                });
                if previous.is_none() {
                    tracing::info!(policy = %name, file = %path.display(), "policy added");
                }
                let (n, r) = start_policy(path, policy, text, previous, cfg, shared, catalog);
                keep.insert(n, r);
            }
        }
    }
    // Policies whose file broke keep their last good version; the others
    // are gone.
    for (name, r) in std::mem::take(running) {
        if broken_files.contains(&r.path) {
            tracing::warn!(policy = %name, "a policy file does not load any more; the policy's last good version keeps running until the file is fixed or removed");
            keep.insert(name, r);
            continue;
        }
        tracing::info!(policy = %name, "policy removed; stopping it after its run in progress");
        let _ = r.stop.send(true);
        for h in r.helpers {
            h.abort();
        }
        shared.metrics.forget_policy(&name);
        shared.problem(&format!("policy {name}"), None);
    }
    *running = keep;
}

fn start_policy(
    path: PathBuf,
    policy: Policy,
    text: String,
    previous: Option<JoinHandle<()>>,
    cfg: &Config,
    shared: &Arc<Shared>,
    catalog: &Catalog,
) -> (String, Running) {
    let name = policy.name.to_string();
    let policy = Arc::new(policy);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (repo_tx, repo_rx) = watch::channel::<Option<Repository>>(None);
    let span = tracing::info_span!("policy", policy = %name);
    let schedule = {
        let policy = Arc::clone(&policy);
        let shared = Arc::clone(shared);
        let catalog = catalog.clone();
        let cfg = cfg.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(
            async move {
                if let Some(prev) = previous {
                    let _ = prev.await;
                }
                let Some(repo) = open_repository(&policy, &shared, &mut stop).await else {
                    return;
                };
                let _ = repo_tx.send(Some(repo.clone()));
                let listing = repo.list_backups(policy.name.as_str(), None).await.ok();
                for source in &policy.sources {
                    let newest = listing.as_ref().and_then(|l| {
                        l.backups
                            .iter()
                            .rev()
                            .find(|m| m.source == source.name.as_str())
                            .map(|m| (m.started_at, m.stored_size(), m.plaintext_size()))
                    });
                    shared
                        .metrics
                        .source_known(policy.name.as_str(), source.name.as_str(), newest);
                }
                if policy.schedule.is_none() {
                    tracing::info!("no schedule: the daemon runs this policy's archivers only");
                    shared.metrics.next_run(policy.name.as_str(), None);
                    let _ = stop.wait_for(|s| *s).await;
                    return;
                }
                // The last start the missed-run rule compares with: the
                // catalog's last scheduled run, or the newest backup.
                let from_catalog = catalog
                    .last_scheduled_start(policy.name.as_str())
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "cannot read the catalog");
                        None
                    });
                let from_repo = listing
                    .as_ref()
                    .and_then(|l| l.backups.iter().map(|m| m.started_at).max());
                let last_start = from_catalog.max(from_repo);
                let p = Arc::clone(&policy);
                schedule::run_schedule(
                    &SystemClock,
                    move |t| p.next_run(t),
                    last_start,
                    cfg.missed_run_window,
                    stop,
                    |next| shared.metrics.next_run(policy.name.as_str(), next),
                    |trigger, slot| {
                        run_policy(
                            Arc::clone(&policy),
                            repo.clone(),
                            Arc::clone(&shared),
                            catalog.clone(),
                            trigger,
                            slot,
                        )
                    },
                )
                .await;
            }
            .instrument(span.clone()),
        )
    };
    let mut helpers = Vec::new();
    // Archivers and the lag probe start once the repository is open.
    {
        let policy = Arc::clone(&policy);
        let shared = Arc::clone(shared);
        let interval = cfg.probe_interval;
        let mut repo_rx = repo_rx.clone();
        helpers.push(tokio::spawn(
            async move {
                let Ok(repo) = repo_rx.wait_for(|r| r.is_some()).await.map(|r| r.clone()) else {
                    return;
                };
                let repo = repo.expect("waited for Some");
                probe_loop(policy, repo, shared, interval).await
            }
            .instrument(span.clone()),
        ));
    }
    if policy.drill.schedule.is_some() {
        let policy = Arc::clone(&policy);
        let shared = Arc::clone(shared);
        let catalog = catalog.clone();
        let window = cfg.missed_run_window;
        let stop = stop_rx.clone();
        let mut repo_rx = repo_rx.clone();
        helpers.push(tokio::spawn(
            async move {
                let Ok(repo) = repo_rx.wait_for(|r| r.is_some()).await.map(|r| r.clone()) else {
                    return;
                };
                let repo = repo.expect("waited for Some");
                drill_schedule(policy, repo, shared, catalog, window, stop).await
            }
            .instrument(span.clone()),
        ));
    }
    for source in &policy.sources {
        if let SourceKind::Mysql(my) = source.kind() {
            if !my.archive_binlogs {
                continue;
            }
            let policy = Arc::clone(&policy);
            let shared = Arc::clone(shared);
            let source_name = source.name.to_string();
            let mut repo_rx = repo_rx.clone();
            helpers.push(tokio::spawn(
                async move {
                    let Ok(repo) = repo_rx.wait_for(|r| r.is_some()).await.map(|r| r.clone())
                    else {
                        return;
                    };
                    let repo = repo.expect("waited for Some");
                    supervise_binlog(policy, source_name, repo, shared).await
                }
                .instrument(span.clone()),
            ));
        }
    }
    (
        name,
        Running {
            path,
            text,
            stop: stop_tx,
            schedule,
            helpers,
        },
    )
}

/// Opens the policy's repository, retrying every minute until it works
/// or the policy is stopped; meanwhile `/readyz` says why not.
async fn open_repository(
    policy: &Policy,
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
) -> Option<Repository> {
    let key = format!("policy {}", policy.name);
    loop {
        let attempt = async {
            let store = crate::storage::open(&policy.repository)
                .await
                .map_err(|e| e.to_string())?;
            store.healthcheck(true).await.map_err(|e| e.to_string())?;
            let repo = Repository::new(store);
            repo.open(true).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(repo)
        };
        match attempt.await {
            Ok(repo) => {
                shared.problem(&key, None);
                return Some(repo);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot open the repository; retrying in 60 s");
                shared.problem(&key, Some(format!("repository: {e}")));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stop.wait_for(|s| *s) => return None,
        }
    }
}

/// One scheduled run of a policy: every source, one after the other.
async fn run_policy(
    policy: Arc<Policy>,
    repo: Repository,
    shared: Arc<Shared>,
    catalog: Catalog,
    trigger: Trigger,
    slot: chrono::DateTime<Utc>,
) {
    tracing::info!(trigger = trigger.as_str(), slot = %slot, sources = policy.sources.len(), "scheduled run started");
    for source in &policy.sources {
        if crate::shutdown::is_requested() {
            return;
        }
        let (p, s) = (policy.name.as_str(), source.name.as_str());
        let span = tracing::info_span!("backup", source = %s);
        async {
            let started = Utc::now();
            let run_id = run_started(&catalog, p, s, "backup", trigger, started).await;
            let result =
                crate::backup::backup_source(&policy, source, &repo, source.default_backup_kind())
                    .await;
            let finished = Utc::now();
            let end = match &result {
                Ok(f) => {
                    let m = &f.manifest;
                    tracing::info!(backup = %m.id, stored_bytes = m.stored_size(), read_bytes = m.plaintext_size(), seconds = (finished - started).num_milliseconds() as f64 / 1000.0, "backup complete");
                    shared.metrics.backup_attempt(p, s, started, finished, Some(m));
                    if let Err(e) = catalog.record_backup(m).await {
                        tracing::warn!(error = %e, "cannot record the backup in the catalog");
                    }
                    match &f.prune {
                        Some(Ok((plan, done))) => {
                            shared.metrics.retention(p, s, Some(done));
                            let gone: Vec<String> = plan
                                .backups
                                .iter()
                                .filter(|b| !b.keep)
                                .map(|b| b.id.clone())
                                .collect();
                            if !gone.is_empty() {
                                tracing::info!(deleted = gone.len(), "retention deleted older backups");
                            }
                            if let Err(e) = catalog.forget_backups(p, s, &gone).await {
                                tracing::warn!(error = %e, "cannot update the catalog");
                            }
                        }
                        Some(Err(_)) => shared.metrics.retention(p, s, None),
                        None => {}
                    }
                    RunEnd {
                        outcome: "success",
                        stored_bytes: Some(m.stored_size()),
                        read_bytes: Some(m.plaintext_size()),
                        backup_id: Some(&m.id),
                        error: None,
                    }
                }
                Err(e) => {
                    let interrupted = matches!(e, crate::backup::BackupError::Interrupted);
                    tracing::error!(error = %e, "backup failed; nothing was listed");
                    shared.metrics.backup_attempt(p, s, started, finished, None);
                    RunEnd {
                        outcome: if interrupted { "interrupted" } else { "failure" },
                        error: Some(e.to_string()),
                        ..Default::default()
                    }
                }
            };
            run_finished(&catalog, run_id, finished, end).await;
        }
        .instrument(span)
        .await;
    }
}

/// Records a run's start in the catalog; a catalog that cannot be written
/// is logged and does not stop the run.
async fn run_started(
    catalog: &Catalog,
    policy: &str,
    source: &str,
    operation: &str,
    trigger: Trigger,
    started: chrono::DateTime<Utc>,
) -> Option<i64> {
    catalog
        .start_run(policy, source, operation, trigger.as_str(), started)
        .await
        .map_err(|e| tracing::warn!(error = %e, "cannot record the run in the catalog"))
        .ok()
}

/// Records the end of a run [`run_started`] recorded.
async fn run_finished(
    catalog: &Catalog,
    run: Option<i64>,
    at: chrono::DateTime<Utc>,
    end: RunEnd<'_>,
) {
    if let Some(id) = run {
        if let Err(e) = catalog.finish_run(id, at, end).await {
            tracing::warn!(error = %e, "cannot record the run's end in the catalog");
        }
    }
}

/// Runs the policy's drills on `drill.schedule`: every PostgreSQL source,
/// one after the other, each report stored in the repository and the
/// catalog and shown in the metrics. Stops with the policy; on shutdown a
/// running drill stops and removes its scratch cluster.
async fn drill_schedule(
    policy: Arc<Policy>,
    repo: Repository,
    shared: Arc<Shared>,
    catalog: Catalog,
    window: Duration,
    stop: watch::Receiver<bool>,
) {
    let last_start = match crate::drill::history(&repo, policy.name.as_str(), None).await {
        Ok((reports, _)) => reports.iter().map(|r| r.started_at).max(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the drill history; a missed drill is not caught up");
            None
        }
    };
    let p = Arc::clone(&policy);
    schedule::run_schedule(
        &SystemClock,
        move |t| p.next_drill(t),
        last_start,
        window,
        stop,
        |_| {},
        |trigger, slot| drill_policy(&policy, &repo, &shared, &catalog, trigger, slot),
    )
    .await;
}

/// One scheduled drill of every PostgreSQL source of a policy.
async fn drill_policy(
    policy: &Policy,
    repo: &Repository,
    shared: &Shared,
    catalog: &Catalog,
    trigger: Trigger,
    slot: chrono::DateTime<Utc>,
) {
    tracing::info!(trigger = trigger.as_str(), slot = %slot, "scheduled drill started");
    let Some(path) = policy.drill.identity.as_deref() else {
        return;
    };
    let identities = match crate::keys::Identities::load(path) {
        Ok(i) => Arc::new(i),
        Err(e) => {
            tracing::error!(error = %e, "the drill identity cannot be loaded; no drill ran");
            return;
        }
    };
    let opts = crate::drill::Options {
        pick: crate::drill::Pick::Latest,
        kind: None,
        identities,
        scratch_dir: policy
            .drill
            .scratch_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir),
    };
    for source in &policy.sources {
        if crate::shutdown::is_requested() {
            return;
        }
        let (p, s) = (policy.name.as_str(), source.name.as_str());
        let span = tracing::info_span!("drill", source = %s);
        async {
            let started = Utc::now();
            let run_id = run_started(catalog, p, s, "drill", trigger, started).await;
            let result = crate::drill::drill_source(repo, policy, s, &opts).await;
            let end = match &result {
                Ok(r) => {
                    if r.passed {
                        tracing::info!(drill = %r.id, backup = %r.backup, rto_seconds = ?r.rto_seconds, rpo_seconds = ?r.rpo_seconds, "drill passed");
                    } else {
                        tracing::error!(drill = %r.id, backup = %r.backup, first_failure = r.first_failure.as_deref().unwrap_or(""), "drill FAILED");
                    }
                    if let Err(e) = crate::drill::store(repo, r).await {
                        tracing::error!(error = %e, "the drill report could not be stored in the repository");
                    }
                    if let Err(e) = catalog.record_drill(r).await {
                        tracing::warn!(error = %e, "cannot record the drill in the catalog");
                    }
                    shared.metrics.drill(p, s, r);
                    RunEnd {
                        outcome: if r.passed { "success" } else { "failure" },
                        read_bytes: Some(r.bytes_read),
                        backup_id: Some(&r.backup),
                        error: r.first_failure.clone(),
                        ..Default::default()
                    }
                }
                Err(e) => {
                    let interrupted = matches!(e, crate::drill::DrillError::Interrupted);
                    tracing::error!(error = %e, "the drill could not run");
                    RunEnd {
                        outcome: if interrupted { "interrupted" } else { "failure" },
                        error: Some(e.to_string()),
                        ..Default::default()
                    }
                }
            };
            run_finished(catalog, run_id, Utc::now(), end).await;
        }
        .instrument(span)
        .await;
    }
}

/// Measures archive lag of every source with an archive, every `interval`.
async fn probe_loop(
    policy: Arc<Policy>,
    repo: Repository,
    shared: Arc<Shared>,
    interval: Duration,
) {
    loop {
        for source in &policy.sources {
            let now = Utc::now();
            match crate::status::archive_status(&repo, &policy, source, now, true).await {
                Ok(Some(a)) => {
                    if let Some(e) = &a.server_error {
                        tracing::warn!(source = %source.name, error = %e, "cannot measure archive lag");
                    }
                    if let Some(secs) = a.lag_seconds {
                        shared.metrics.archive_lag(
                            policy.name.as_str(),
                            source.name.as_str(),
                            a.kind,
                            secs,
                            a.lag_segments,
                        );
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(source = %source.name, error = %e, "cannot read the archive")
                }
            }
            // Drills stored by this daemon, a drill CronJob or a person.
            match crate::drill::latest(&repo, policy.name.as_str(), source.name.as_str()).await {
                Ok(Some(r)) => shared
                    .metrics
                    .drill(policy.name.as_str(), source.name.as_str(), &r),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(source = %source.name, error = %e, "cannot read the newest drill report")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = crate::shutdown::requested() => return,
        }
    }
}

/// How long archivers get, once shutdown is requested, to store the file
/// in progress.
const HELPER_STOP: Duration = Duration::from_secs(30);

/// Keeps a source's binlog archiver running: restarted with backoff (1 s
/// doubling to 5 min, reset after 10 min of health) when it stops.
async fn supervise_binlog(
    policy: Arc<Policy>,
    source_name: String,
    repo: Repository,
    shared: Arc<Shared>,
) {
    let (p, s) = (policy.name.as_str(), source_name.as_str());
    let mut backoff = Duration::from_secs(1);
    let mut restarted = false;
    loop {
        let began = std::time::Instant::now();
        let result = async {
            let source = policy.source(s)?;
            let SourceKind::Mysql(my) = source.kind() else {
                unreachable!("only MySQL sources get a binlog archiver")
            };
            let recipients = policy.encryption.all_recipients()?;
            let archiver = crate::binlog::Archiver {
                repo: &repo,
                policy: p.to_string(),
                source: s.to_string(),
                conn: crate::source::mysql::MyConn::from_source(my)?,
                bin_dir: my.bin_dir.clone(),
                settings: crate::pipeline::EncodeSettings {
                    compression: policy.compression,
                    recipients: Arc::new(recipients.clone()),
                },
                recipients: recipients.iter().map(|r| r.to_string()).collect(),
                interval: my.binlog_interval.0,
                scanned: Default::default(),
            };
            shared.metrics.archiver(p, s, "binlog", true, restarted);
            tracing::info!(source = %s, "binlog archiver started");
            archiver.run().await.map_err(anyhow::Error::from)
        }
        .await;
        if crate::shutdown::is_requested() {
            return;
        }
        shared.metrics.archiver(p, s, "binlog", false, false);
        match result {
            Ok(()) => tracing::warn!(source = %s, "binlog archiver stopped"),
            Err(e) => {
                tracing::error!(source = %s, error = format!("{e:#}"), retry_in = ?backoff, "binlog archiver failed; restarting")
            }
        }
        if began.elapsed() > Duration::from_secs(600) {
            backoff = Duration::from_secs(1);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = crate::shutdown::requested() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(300));
        restarted = true;
    }
}
