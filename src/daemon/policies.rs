//! The policies the daemon runs: starting one (its schedule, drill
//! schedule, lag probe and binlog archivers), reloading the folder, and
//! opening a policy's repository until it works.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::jobs::{drill_schedule, probe_loop, run_policy, supervise_archive};
use super::{load_folder, schedule, Ctx, Shared};
use crate::policy::{Policy, PolicyError};
use crate::repository::Repository;

/// One running policy.
pub(super) struct Running {
    pub(super) path: PathBuf,
    pub(super) text: String,
    pub(super) stop: watch::Sender<bool>,
    /// The schedule loop: ends after its job in progress once stopped.
    pub(super) schedule: JoinHandle<()>,
    /// Archivers and probes: aborted when the policy stops.
    pub(super) helpers: Vec<JoinHandle<()>>,
}

/// Logs the policy files that do not load and lists them in `/readyz`.
pub(super) fn report_bad(shared: &Shared, bad: &[PolicyError]) {
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

/// Loads the folder again: new and changed policies start (a changed one
/// once its run in progress ends), removed ones stop, and a file that broke
/// keeps its last good version running.
pub(super) fn reload(running: &mut BTreeMap<String, Running>, ctx: &Ctx) {
    let shared = &ctx.shared;
    let (good, bad) = match load_folder(&ctx.cfg.policies) {
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
                let (n, r) = start_policy(path, policy, text, previous, ctx);
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

/// Starts a policy's schedule (after `previous`, the schedule of the
/// version it replaces, has ended), its drill schedule, lag probe and
/// binlog archivers.
pub(super) fn start_policy(
    path: PathBuf,
    policy: Policy,
    text: String,
    previous: Option<JoinHandle<()>>,
    ctx: &Ctx,
) -> (String, Running) {
    let name = policy.name.to_string();
    let policy = Arc::new(policy);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (repo_tx, repo_rx) = watch::channel::<Option<Repository>>(None);
    let span = tracing::info_span!("policy", policy = %name);
    let schedule = {
        let policy = Arc::clone(&policy);
        let ctx = ctx.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(
            async move {
                if let Some(prev) = previous {
                    let _ = prev.await;
                }
                let shared = &ctx.shared;
                let Some(repo) = open_repository(&policy, &ctx, &mut stop).await else {
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
                let from_catalog = ctx
                    .catalog
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
                    ctx.cfg.clock.as_ref(),
                    move |t| p.next_run(t),
                    last_start,
                    ctx.cfg.missed_run_window,
                    stop,
                    |next| shared.metrics.next_run(policy.name.as_str(), next),
                    |trigger, slot| run_policy(&policy, &repo, &ctx, trigger, slot),
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
        let ctx = ctx.clone();
        let mut repo_rx = repo_rx.clone();
        helpers.push(tokio::spawn(
            async move {
                let Ok(repo) = repo_rx.wait_for(|r| r.is_some()).await.map(|r| r.clone()) else {
                    return;
                };
                let repo = repo.expect("waited for Some");
                probe_loop(policy, repo, ctx).await
            }
            .instrument(span.clone()),
        ));
    }
    if policy.drill.schedule.is_some() {
        let policy = Arc::clone(&policy);
        let ctx = ctx.clone();
        let stop = stop_rx.clone();
        let mut repo_rx = repo_rx.clone();
        helpers.push(tokio::spawn(
            async move {
                let Ok(repo) = repo_rx.wait_for(|r| r.is_some()).await.map(|r| r.clone()) else {
                    return;
                };
                let repo = repo.expect("waited for Some");
                drill_schedule(policy, repo, ctx, stop).await
            }
            .instrument(span.clone()),
        ));
    }
    for source in &policy.sources {
        let Some(archive) = source.kind().imp().continuous_archive() else {
            continue;
        };
        let policy = Arc::clone(&policy);
        let ctx = ctx.clone();
        let source_name = source.name.to_string();
        let mut repo_rx = repo_rx.clone();
        helpers.push(tokio::spawn(
            async move {
                let Ok(repo) = repo_rx.wait_for(|r| r.is_some()).await.map(|r| r.clone()) else {
                    return;
                };
                let repo = repo.expect("waited for Some");
                supervise_archive(policy, source_name, archive, repo, ctx).await
            }
            .instrument(span.clone()),
        ));
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
pub(super) async fn open_repository(
    policy: &Policy,
    ctx: &Ctx,
    stop: &mut watch::Receiver<bool>,
) -> Option<Repository> {
    let shared = &ctx.shared;
    let key = format!("policy {}", policy.name);
    loop {
        let attempt = async {
            let store = crate::storage::open(&policy.repository, &ctx.background)
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
