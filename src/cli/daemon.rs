//! `lifeboat run`, `lifeboat status` and `lifeboat catalog`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Outcome;
use crate::catalog::Catalog;
use crate::clock::SystemClock;
use crate::daemon::Signal;
use crate::progress::human_bytes;

/// The catalog file: `--catalog`, `LIFEBOAT_CATALOG`, or the default.
#[derive(Debug, Clone, clap::Args)]
pub struct CatalogArg {
    /// The local catalog (SQLite): the backup index and the history of
    /// runs. Default: $XDG_STATE_HOME/lifeboat/catalog.db or
    /// ~/.local/state/lifeboat/catalog.db. The repository stays the
    /// source of truth: `lifeboat catalog rebuild` recreates it.
    #[arg(long = "catalog", env = "LIFEBOAT_CATALOG", value_name = "PATH")]
    pub path: Option<PathBuf>,
}

impl CatalogArg {
    pub fn path(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(crate::catalog::default_path)
    }
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Runs until SIGTERM or SIGINT:\n\
  - every policy file (*.yaml, *.yml) of --policies on its `schedule` (CronJob syntax, in its\n\
    `timezone`): each source backed up, then the retention applied; a policy's runs never\n\
    overlap, a slot that comes while a run is going is skipped;\n\
  - a slot missed while the daemon was down runs once at start if it is at most\n\
    --missed-run-window old;\n\
  - binlog archivers for MySQL sources with `archive_binlogs: true`, restarted when they stop;\n\
  - archive lag measured every --probe-interval.\n\
A policy file that does not load is reported and the others run (--strict: refuse to start).\n\
SIGHUP reloads the folder. On SIGTERM no new run starts; running backups get\n\
--shutdown-deadline to finish, then are stopped cleanly (nothing half-listed, uploads aborted);\n\
the exit status is 0.\n\n\
Example:\n  lifeboat run --policies /etc/lifeboat/policies --listen 0.0.0.0:9187")]
pub struct RunArgs {
    /// The folder of policy files.
    #[arg(long, env = "LIFEBOAT_POLICIES", value_name = "DIR")]
    policies: PathBuf,
    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(long, env = "LIFEBOAT_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    catalog: CatalogArg,
    /// Refuse to start if any policy file does not load.
    #[arg(long)]
    strict: bool,
    /// Run a slot missed during downtime once at start if it is at most
    /// this old (0 turns catching up off).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    missed_run_window: std::time::Duration,
    /// After SIGTERM, how long running backups may take to finish before
    /// they are stopped. Keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    shutdown_deadline: std::time::Duration,
    /// How often WAL/binlog archive lag is measured.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    probe_interval: std::time::Duration,
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let cfg = crate::daemon::Config {
        policies: args.policies,
        catalog: args.catalog.path(),
        strict: args.strict,
        missed_run_window: args.missed_run_window,
        shutdown_deadline: args.shutdown_deadline,
        probe_interval: args.probe_interval,
        clock: Arc::new(SystemClock),
    };
    let listener = match args.listen {
        Some(addr) => Some(crate::daemon::bind(addr).await?),
        None => None,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(forward_signals(tx));
    let shared = crate::daemon::Shared::new(chrono::Utc::now());
    crate::daemon::run(cfg, shared, listener, rx).await?;
    Ok(Outcome::Ok.into())
}

/// SIGHUP reloads, SIGTERM and SIGINT stop; forwarded until the daemon is
/// gone. A signal that cannot be watched is never sent.
async fn forward_signals(tx: mpsc::UnboundedSender<Signal>) {
    use tokio::signal::unix::{signal, SignalKind};
    let watch = |kind: SignalKind, name: &str| {
        signal(kind)
            .map_err(|e| tracing::error!(signal = name, error = %e, "cannot watch the signal"))
            .ok()
    };
    async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
        match s.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let mut hup = watch(SignalKind::hangup(), "SIGHUP");
    let mut term = watch(SignalKind::terminate(), "SIGTERM");
    let mut int = watch(SignalKind::interrupt(), "SIGINT");
    loop {
        let s = tokio::select! {
            _ = next(&mut hup) => Signal::Reload,
            _ = next(&mut term) => Signal::Stop("SIGTERM"),
            _ = next(&mut int) => Signal::Stop("SIGINT"),
        };
        if tx.send(s).is_err() {
            return;
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "For each source: the newest backup and its age, the last attempt and its outcome\n\
(from the catalog), the WAL or binlog archive's lag (the server is asked for its position), and\n\
when the schedule fires next. Needs no key; with --identity it also reads the archived WAL and\n\
binlogs and shows what a point-in-time restore of the newest backup can reach (the newest archived\n\
transaction), as `wal-verify --identity` and `binlog-verify --identity` do."
)]
pub struct StatusArgs {
    #[command(flatten)]
    policy: super::PolicyArgs,
    #[command(flatten)]
    catalog: CatalogArg,
    /// Do not connect to the database servers (archive lag is then not measured).
    #[arg(long)]
    no_probe: bool,
    /// The age identity file: also show the newest point a restore can
    /// reach, read from the archived WAL and binlogs.
    #[arg(long, env = "LIFEBOAT_IDENTITY")]
    identity: Option<PathBuf>,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let policy = args.policy.load()?;
    let repo = super::open(&policy, false).await?;
    let path = args.catalog.path();
    let catalog = if path.exists() {
        match Catalog::open(&path).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "the catalog cannot be opened; the last attempts are not shown");
                None
            }
        }
    } else {
        None
    };
    let now = chrono::Utc::now();
    let mut st =
        crate::status::policy_status(&repo, &policy, catalog.as_ref(), now, !args.no_probe).await?;
    if args.identity.is_some() {
        let ids = super::identities(&args.identity, "status")?;
        for (s, source) in st.sources.iter_mut().zip(&policy.sources) {
            if let Some(a) = s.archive.as_mut() {
                a.recoverable_end =
                    crate::status::recoverable_end(&repo, &policy, source, &ids).await;
            }
        }
    }
    if args.json {
        super::print_json(&st);
        return Ok(Outcome::Ok.into());
    }
    println!("Policy {} ({})", st.policy, st.repository);
    match (&st.schedule, st.next_run) {
        (Some(s), Some(n)) => println!(
            "Schedule: {s}; next run {} (in {})",
            n.format("%Y-%m-%d %H:%M:%S UTC"),
            age(n - now)
        ),
        (Some(s), None) => println!("Schedule: {s}; never fires again"),
        _ => println!("Schedule: none (backups run only when started by hand or a CronJob)"),
    }
    for s in &st.sources {
        println!("{} ({})", s.source, s.kind);
        match &s.newest_backup {
            Some(b) => println!(
                "  newest backup  {}  {}  {} ago  {} stored  ({} backups)",
                b.id,
                b.kind,
                age(chrono::Duration::seconds(b.age_seconds)),
                human_bytes(b.stored_bytes),
                s.backups
            ),
            None => println!("  newest backup  none"),
        }
        if let Some(r) = &s.last_attempt {
            println!(
                "  last attempt   {}  {} ({}){}",
                r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                r.outcome,
                r.trigger,
                r.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
        if let Some(a) = &s.archive {
            let lag = match (a.lag_seconds, a.lag_segments) {
                (Some(secs), Some(n)) => format!(
                    "lag {} ({n} {} waiting)",
                    if secs.is_finite() {
                        age(chrono::Duration::milliseconds((secs * 1000.0) as i64))
                    } else {
                        "unbounded (nothing archived yet)".into()
                    },
                    if a.kind == "wal" { "segments" } else { "files" }
                ),
                _ => format!(
                    "lag unknown{}",
                    a.server_error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            };
            println!(
                "  {} archive    {} files, newest {} {}; {lag}",
                a.kind,
                a.files,
                a.newest.as_deref().unwrap_or("none"),
                a.newest_at
                    .map(|t| format!("stored {} ago", age(now - t)))
                    .unwrap_or_default()
            );
            if let Some(e) = &a.recoverable_end {
                match &e.error {
                    Some(err) => println!("  recoverable    unknown ({}): {err}", e.backup),
                    None => println!(
                        "  recoverable    from {} to {} (newest archived transaction), ends at {}{}",
                        e.backup,
                        e.newest_transaction
                            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string())
                            .unwrap_or_else(|| "none".into()),
                        e.position,
                        e.hole
                            .as_deref()
                            .map(|h| format!("; stopped by missing {h}"))
                            .unwrap_or_default()
                    ),
                }
            }
        }
    }
    for u in &st.unreadable {
        eprintln!("error: {}", u.error);
    }
    Ok(if st.unreadable.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Integrity
    }
    .into())
}

fn age(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

#[derive(Debug, clap::Subcommand)]
pub enum CatalogCommand {
    /// Recreate the catalog's backup index of a policy from the
    /// repository's manifests (the run history is kept).
    Rebuild(RebuildArgs),
    /// Show the history of runs (backups and prunes).
    Runs(RunsArgs),
}

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    policy: super::PolicyArgs,
    #[command(flatten)]
    catalog: CatalogArg,
}

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    #[command(flatten)]
    policy: super::PolicyArgs,
    #[arg(long)]
    source: Option<String>,
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    #[command(flatten)]
    catalog: CatalogArg,
    #[arg(long)]
    json: bool,
}

pub async fn catalog(cmd: CatalogCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CatalogCommand::Rebuild(args) => {
            let policy = args.policy.load()?;
            let repo = super::open(&policy, false).await?;
            let catalog = Catalog::open(&args.catalog.path()).await?;
            let (n, unreadable) = catalog.rebuild(&repo, policy.name.as_str()).await?;
            println!(
                "catalog {}: {n} backups of policy '{}' indexed from {}",
                catalog.path().display(),
                policy.name,
                repo.describe()
            );
            for u in &unreadable {
                eprintln!("error: not indexed: {}", u.error);
            }
            Ok(if unreadable.is_empty() {
                Outcome::Ok
            } else {
                Outcome::Integrity
            }
            .into())
        }
        CatalogCommand::Runs(args) => {
            let policy = args.policy.load()?;
            let catalog = Catalog::open(&args.catalog.path()).await?;
            let runs = catalog
                .runs(
                    policy.name.as_str(),
                    args.source.as_deref(),
                    None,
                    args.limit,
                )
                .await?;
            if args.json {
                super::print_json(&runs);
            } else {
                for r in &runs {
                    println!(
                        "{}  {:<8} {:<12} {:<7} {:<11} {}{}",
                        r.started_at.format("%Y-%m-%d %H:%M:%S"),
                        r.trigger,
                        r.source,
                        r.operation,
                        r.outcome,
                        r.backup_id.as_deref().unwrap_or(""),
                        r.error
                            .as_deref()
                            .map(|e| format!("  {e}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(Outcome::Ok.into())
        }
    }
}
