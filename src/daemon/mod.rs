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
mod jobs;
mod policies;
pub mod schedule;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogError};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyError};
use policies::{reload, report_bad, start_policy, Running};

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
#[derive(Clone)]
pub struct Config {
    pub policies: PathBuf,
    pub catalog: PathBuf,
    pub strict: bool,
    /// A slot missed during downtime runs once at start if it is at most
    /// this old.
    pub missed_run_window: Duration,
    /// How long running backups may take to finish after SIGTERM.
    pub shutdown_deadline: Duration,
    /// How often archive lag is measured.
    pub probe_interval: Duration,
    /// Where schedules, catalog entries and metrics read the time.
    pub clock: Arc<dyn Clock>,
}

/// What the daemon is told while it runs (the CLI maps SIGHUP, SIGTERM
/// and SIGINT to these; tests send them directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Load the policies folder again.
    Reload,
    /// Stop: nothing new starts, running backups get the shutdown deadline.
    /// A second `Stop` ends the wait at once. The name is logged.
    Stop(&'static str),
}

/// State shared with the HTTP endpoints.
pub struct Shared {
    pub metrics: Metrics,
    /// Why the daemon is not ready (empty: ready).
    problems: Mutex<BTreeMap<String, String>>,
}

impl Shared {
    /// Empty metrics for a daemon started at `started`; ready.
    pub fn new(started: DateTime<Utc>) -> Arc<Shared> {
        Arc::new(Shared {
            metrics: Metrics::new(started),
            problems: Mutex::new(BTreeMap::new()),
        })
    }

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

/// What every task of the daemon shares.
#[derive(Clone)]
struct Ctx {
    cfg: Config,
    shared: Arc<Shared>,
    catalog: Catalog,
    /// Fired when running work must stop: backups and drills are dropped
    /// and clean up, archivers store the file in progress, probes end.
    cancel: CancellationToken,
    /// Aborts of uploads dropped midway, awaited before `run` returns.
    background: crate::storage::Background,
}

/// Binds the address `/metrics`, `/healthz` and `/readyz` are served on.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen { addr, source })
}

/// Runs the daemon until `signals` brings a [`Signal::Stop`] (or closes),
/// serving the HTTP endpoints on `listener` if given.
pub async fn run(
    cfg: Config,
    shared: Arc<Shared>,
    listener: Option<TcpListener>,
    mut signals: mpsc::UnboundedReceiver<Signal>,
) -> Result<(), DaemonError> {
    let started = cfg.clock.now();
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

    let server = listener.map(|listener| {
        if let Ok(local) = listener.local_addr() {
            tracing::info!(address = %local, "serving /metrics, /healthz and /readyz");
        }
        tokio::spawn(http::serve(listener, Arc::clone(&shared)))
    });
    let ctx = Ctx {
        cfg,
        shared,
        catalog,
        cancel: CancellationToken::new(),
        background: Default::default(),
    };
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    for (path, text, policy) in good {
        tracing::info!(policy = %policy.name, file = %path.display(), schedule = policy.schedule.as_ref().map(|s| s.expression.as_str()).unwrap_or("none"), drill_schedule = policy.drill.schedule.as_ref().map(|s| s.expression.as_str()).unwrap_or("none"), "policy loaded");
        let r = start_policy(path, policy, text, None, &ctx);
        running.insert(r.0, r.1);
    }
    tracing::info!(
        policies = running.len(),
        broken = bad.len(),
        "lifeboat daemon running"
    );

    let stop_signal = loop {
        match signals.recv().await {
            Some(Signal::Reload) => {
                tracing::info!("SIGHUP: reloading the policies folder");
                reload(&mut running, &ctx);
            }
            Some(Signal::Stop(name)) => break name,
            None => break "the end of the signal channel",
        }
    };
    stop(running, &ctx, stop_signal, &mut signals).await;
    if let Some(server) = server {
        server.abort();
    }
    tracing::info!("lifeboat daemon stopped");
    Ok(())
}

/// The graceful stop: nothing new starts; running backups get the shutdown
/// deadline (cut short by a second stop signal), then are cancelled; the
/// archivers store their file in progress.
async fn stop(
    running: BTreeMap<String, Running>,
    ctx: &Ctx,
    signal: &str,
    signals: &mut mpsc::UnboundedReceiver<Signal>,
) {
    let deadline = ctx.cfg.shutdown_deadline;
    tracing::info!(signal, deadline = ?deadline, "stopping: no new runs; running backups may finish until the deadline");
    // Archivers keep running while backups finish: they stop (storing the
    // file in progress as a partial copy) once cancelled below.
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
        loop {
            match signals.recv().await {
                Some(Signal::Stop(_)) => return,
                Some(Signal::Reload) => {}
                None => std::future::pending::<()>().await,
            }
        }
    };
    let finished = tokio::select! {
        _ = &mut all => true,
        _ = tokio::time::sleep(deadline) => false,
        _ = second => false,
    };
    if !finished {
        tracing::warn!("shutdown deadline reached: stopping the running backups (their uploads are aborted and what they wrote is deleted)");
        ctx.cancel.cancel();
        if tokio::time::timeout(Duration::from_secs(60), &mut all)
            .await
            .is_err()
        {
            tracing::error!("backups did not stop within 60 s of being asked; exiting anyway (their objects are unlisted and removed by the next prune)");
        }
    }
    ctx.cancel.cancel();
    let aborts: Vec<_> = helpers.iter().map(|h| h.abort_handle()).collect();
    if tokio::time::timeout(jobs::HELPER_STOP, futures::future::join_all(helpers))
        .await
        .is_err()
    {
        tracing::warn!(
            "archivers did not stop within {:?}; stopping them (the next archiver resumes from the last stored file)",
            jobs::HELPER_STOP
        );
        for a in aborts {
            a.abort();
        }
    }
    ctx.background.finish(Duration::from_secs(10)).await;
}
