//! What the daemon runs: scheduled backups and drills of a policy, the
//! archive lag probe, and the supervised binlog archivers; each recorded in
//! the catalog and the metrics.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tracing::Instrument;

use super::schedule::{self, Trigger};
use super::Ctx;
use crate::catalog::{Catalog, RunEnd};
use crate::policy::Policy;
use crate::repository::Repository;

/// One scheduled run of a policy: every source, one after the other.
pub(super) async fn run_policy(
    policy: &Policy,
    repo: &Repository,
    ctx: &Ctx,
    trigger: Trigger,
    slot: chrono::DateTime<Utc>,
) {
    let (shared, catalog) = (&ctx.shared, &ctx.catalog);
    tracing::info!(trigger = trigger.as_str(), slot = %slot, sources = policy.sources.len(), "scheduled run started");
    for source in &policy.sources {
        if ctx.cancel.is_cancelled() {
            return;
        }
        let (p, s) = (policy.name.as_str(), source.name.as_str());
        let span = tracing::info_span!("backup", source = %s);
        async {
            let started = ctx.cfg.clock.now();
            let run_id = run_started(catalog, p, s, "backup", trigger, started).await;
            let result = crate::backup::backup_source(
                policy,
                source,
                repo,
                source.default_backup_kind(),
                &ctx.cancel,
            )
            .await;
            let finished = ctx.cfg.clock.now();
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
            run_finished(catalog, run_id, finished, end).await;
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
pub(super) async fn drill_schedule(
    policy: Arc<Policy>,
    repo: Repository,
    ctx: Ctx,
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
        ctx.cfg.clock.as_ref(),
        move |t| p.next_drill(t),
        last_start,
        ctx.cfg.missed_run_window,
        stop,
        |_| {},
        |trigger, slot| drill_policy(&policy, &repo, &ctx, trigger, slot),
    )
    .await;
}

/// One scheduled drill of every PostgreSQL source of a policy.
async fn drill_policy(
    policy: &Policy,
    repo: &Repository,
    ctx: &Ctx,
    trigger: Trigger,
    slot: chrono::DateTime<Utc>,
) {
    let (shared, catalog) = (&ctx.shared, &ctx.catalog);
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
        cancel: ctx.cancel.clone(),
    };
    for source in &policy.sources {
        if ctx.cancel.is_cancelled() {
            return;
        }
        let (p, s) = (policy.name.as_str(), source.name.as_str());
        let span = tracing::info_span!("drill", source = %s);
        async {
            let started = ctx.cfg.clock.now();
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
            run_finished(catalog, run_id, ctx.cfg.clock.now(), end).await;
        }
        .instrument(span)
        .await;
    }
}

/// Measures archive lag of every source with an archive, every `interval`.
pub(super) async fn probe_loop(policy: Arc<Policy>, repo: Repository, ctx: Ctx) {
    let shared = &ctx.shared;
    loop {
        for source in &policy.sources {
            let now = ctx.cfg.clock.now();
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
            _ = tokio::time::sleep(ctx.cfg.probe_interval) => {}
            _ = ctx.cancel.cancelled() => return,
        }
    }
}

/// How long archivers get, once shutdown is requested, to store the file
/// in progress.
pub(super) const HELPER_STOP: Duration = Duration::from_secs(30);

/// Keeps a source's continuous archiver (its kind's, e.g. MySQL binlogs)
/// running: restarted with backoff (1 s doubling to 5 min, reset after 10
/// min of health) when it stops.
pub(super) async fn supervise_archive(
    policy: Arc<Policy>,
    source_name: String,
    archive: &'static str,
    repo: Repository,
    ctx: Ctx,
) {
    let shared = &ctx.shared;
    let (p, s) = (policy.name.as_str(), source_name.as_str());
    let mut backoff = Duration::from_secs(1);
    let mut restarted = false;
    loop {
        let began = std::time::Instant::now();
        let result = async {
            let source = policy.source(s)?;
            let run = crate::kinds::ArchiveRun {
                repo: &repo,
                policy: &policy,
                source_name: s,
                cancel: ctx.cancel.clone(),
                started: Box::new(move || {
                    shared.metrics.archiver(p, s, archive, true, restarted);
                    tracing::info!(source = %s, "{archive} archiver started");
                }),
            };
            source
                .kind()
                .imp()
                .archive_continuously(run)
                .await
                .map_err(anyhow::Error::from)
        }
        .await;
        if ctx.cancel.is_cancelled() {
            return;
        }
        shared.metrics.archiver(p, s, archive, false, false);
        match result {
            Ok(()) => tracing::warn!(source = %s, "{archive} archiver stopped"),
            Err(e) => {
                tracing::error!(source = %s, error = format!("{e:#}"), retry_in = ?backoff, "{archive} archiver failed; restarting")
            }
        }
        if began.elapsed() > Duration::from_secs(600) {
            backoff = Duration::from_secs(1);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = ctx.cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(300));
        restarted = true;
    }
}
