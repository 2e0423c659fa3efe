//! `lifeboat drill`

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::daemon::CatalogArg;
use super::Outcome;
use crate::drill::{self, report, DrillReport, Pick};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "A drill proves a backup restores: it restores it into a throwaway server in a\n\
folder under the scratch dir (or scratch namespaces), the way an incident restore would, and\n\
checks it.\n\
A PostgreSQL dump: a new cluster (initdb, pg_ctl on a free 127.0.0.1 port), roles, then every\n\
  database;
 every table's row count is compared with the inventory taken at backup time.\n\
A PostgreSQL base backup: unpacked and checked with pg_verifybackup; the WAL archived after it is fetched\n\
  and checked, replayed to the newest archived point (a hole in the archive fails the drill,\n\
  which goes on to the point before it), the server promoted (socket only, no TCP), then\n\
  pg_amcheck (tables and B-tree indexes) where installed.\n\
A MySQL/MariaDB dump: a new server (mariadb-install-db, mariadbd), the dump loaded and compared\n\
  with its inventory, then the archived binlogs replayed to the newest archived event.\n\
A Kubernetes export: scratch namespaces lifeboat-drill-<id> on the source's cluster, the export\n\
  restored into them with the harmless-copy rules, every object read back, then deleted.\n\
All: the policy's `drill.checks` (SQL with an expected value, e.g. orders of the last day > 0;\n\
for Kubernetes, a count of objects of a kind);\n\
every object's stored and plaintext sha256, read whole; the recovery point against\n\
`drill.max_rpo`, if set.\n\
It measures RTO (start to usable restored target) and RPO (age of the restored data), removes the\n\
scratch cluster (also on failure and on SIGINT/SIGTERM; a drill killed with SIGKILL leaves it to\n\
the next drill, which removes it), and stores the report in the repository as JSON, Markdown and\n\
HTML (drills/<policy>/<source>/<id>.*) and in the catalog.\n\n\
The first line of output is the verdict and names the first failing check.\n\
Exit codes: 0 all checks passed; 3 a check failed; 1 the scratch target could not start (or\n\
another error); 4 no such backup; 143/130 interrupted.\n\
Run as root, scratch servers run as `drill.postgres.run_as` (default postgres) and\n\
`drill.mariadb.run_as` (default mysql).\n\n\
Examples:\n  lifeboat drill --policy app.yaml --identity lifeboat.key\n  \
lifeboat drill --policy app.yaml --source main-db --backup random --identity lifeboat.key --report drill.md\n  \
lifeboat drill --policy app.yaml --source main-db --kind base --identity lifeboat.key\n  \
lifeboat drill --policy app.yaml --source cluster-config --identity lifeboat.key\n  \
lifeboat drill --policy app.yaml --list"
)]
pub struct Args {
    #[command(flatten)]
    policy: super::PolicyArgs,
    /// Drill only this source. Default: every source of the policy.
    #[arg(long)]
    source: Option<String>,
    /// Backup id, `latest` or `random` (any retained backup of the kind).
    #[arg(long, default_value = "latest")]
    backup: Pick,
    /// PostgreSQL sources: drill only this kind of backup (default: the
    /// newest, or a random one, of either). With --backup ID, it must be
    /// that backup's kind.
    #[arg(long, value_enum)]
    kind: Option<drill::Kind>,
    /// The age identity file (private key).
    #[arg(long, required_unless_present = "list")]
    identity: Option<PathBuf>,
    /// Also write the report here: Markdown, or HTML/JSON by the
    /// file's extension (.html, .json).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Folder for scratch clusters (default: the policy's
    /// drill.scratch_dir, else the system temp folder).
    #[arg(long, value_name = "DIR")]
    scratch_dir: Option<PathBuf>,
    /// Show the history of drills (from the repository) instead.
    #[arg(long, conflicts_with_all = ["backup", "kind", "identity", "report", "scratch_dir"])]
    list: bool,
    /// Print the reports (or the history) as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    catalog: CatalogArg,
}

pub async fn run(args: Args, cancel: &CancellationToken) -> anyhow::Result<ExitCode> {
    let policy = args.policy.load()?;
    if let Some(s) = &args.source {
        policy.source(s)?;
    }
    let repo = super::open(&policy, false).await?;
    if args.list {
        return list(&args, &policy, &repo).await;
    }
    let sources: Vec<String> = match &args.source {
        Some(s) => vec![s.clone()],
        None => policy.sources.iter().map(|s| s.name.to_string()).collect(),
    };
    let identities = super::identities(&args.identity, "a drill")?;
    let opts = drill::Options {
        pick: args.backup.clone(),
        kind: args.kind,
        identities,
        cancel: cancel.clone(),
        // Absolute: the restored server runs from its own folder, and the
        // paths in its settings must still point here.
        scratch_dir: match &args.scratch_dir {
            Some(dir) => std::path::absolute(dir).with_context(|| {
                format!("--scratch-dir {}: cannot make it absolute", dir.display())
            })?,
            None => policy
                .drill
                .scratch_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir),
        },
    };
    let catalog = match crate::catalog::Catalog::open(&args.catalog.path()).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "the catalog cannot be opened; the drill is recorded in the repository only");
            None
        }
    };
    let mut reports = Vec::new();
    for source in &sources {
        let report = drill::drill_source(&repo, &policy, source, &opts).await?;
        match drill::store(&repo, &report).await {
            Ok(keys) => tracing::info!(report = %keys[0], "drill report stored"),
            Err(e) => {
                tracing::error!(error = %e, "the drill report could not be stored in the repository")
            }
        }
        if let Some(c) = &catalog {
            if let Err(e) = c.record_drill(&report).await {
                tracing::warn!(error = %e, "the drill could not be recorded in the catalog");
            }
        }
        reports.push(report);
    }
    if let Some(path) = &args.report {
        let body = match path.extension().and_then(|e| e.to_str()) {
            Some("html" | "htm") => {
                let history = drill::history(&repo, policy.name.as_str(), None)
                    .await
                    .map(|(h, _)| h)
                    .unwrap_or_default();
                reports
                    .iter()
                    .map(|r| {
                        let mine: Vec<DrillReport> = history
                            .iter()
                            .filter(|h| h.source == r.source)
                            .cloned()
                            .collect();
                        report::html(r, &mine)
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            Some("json") => serde_json::to_string_pretty(&reports).expect("reports serialize"),
            _ => reports
                .iter()
                .map(report::markdown)
                .collect::<Vec<_>>()
                .join("\n"),
        };
        std::fs::write(path, body)
            .map_err(|e| anyhow::anyhow!("cannot write the report to {}: {e}", path.display()))?;
    }
    let first_failed = reports.iter().find(|r| !r.passed);
    if args.json {
        super::print_json(&reports);
    } else {
        // The first line names the first failing check of any source.
        match first_failed {
            Some(r) => println!("{}", report::verdict(r)),
            None if reports.len() == 1 => println!("{}", report::verdict(&reports[0])),
            None => println!("drills PASSED for {} sources", reports.len()),
        }
        for r in &reports {
            println!();
            print_report(r);
        }
    }
    Ok(match first_failed {
        None => Outcome::Ok,
        Some(r)
            if r.failed()
                .all(|c| c.name == "scratch target" || c.name == "scratch removed") =>
        {
            Outcome::Failure
        }
        Some(_) => Outcome::Integrity,
    }
    .into())
}

fn print_report(r: &DrillReport) {
    println!(
        "{} drill {} of {}: backup {} restored into {}",
        if r.passed { "PASSED" } else { "FAILED" },
        r.id,
        r.source,
        r.backup,
        r.target
    );
    let width = r.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in &r.checks {
        let word = match c.status {
            drill::CheckStatus::Passed => "ok",
            drill::CheckStatus::Failed => "FAILED",
            drill::CheckStatus::Skipped => "skipped",
        };
        println!("  {:<width$}  {word:<7}  {}", c.name, c.detail);
    }
    let secs = |s: Option<f64>| s.map(report::human_seconds).unwrap_or_else(|| "-".into());
    println!(
        "  RTO {}  RPO {}  read {}",
        secs(r.rto_seconds),
        secs(r.rpo_seconds),
        report::human_bytes(r.bytes_read)
    );
    for l in &r.leftovers_removed {
        println!(
            "  removed the scratch target of an earlier drill: {} ({})",
            l.path.display(),
            l.outcome
        );
    }
}

async fn list(
    args: &Args,
    policy: &crate::policy::Policy,
    repo: &crate::repository::Repository,
) -> anyhow::Result<ExitCode> {
    let (reports, unreadable) =
        drill::history(repo, policy.name.as_str(), args.source.as_deref()).await?;
    if args.json {
        super::print_json(&serde_json::json!({ "drills": reports, "unreadable": unreadable }));
    } else if reports.is_empty() {
        println!("no drills of policy '{}' yet", policy.name);
    } else {
        println!(
            "{:<22} {:<16} {:<22} {:<7} {:>8} {:>8}  FIRST FAILURE",
            "DRILL", "SOURCE", "BACKUP", "RESULT", "RTO", "RPO"
        );
        let secs = |s: Option<f64>| s.map(report::human_seconds).unwrap_or_else(|| "-".into());
        for r in &reports {
            println!(
                "{:<22} {:<16} {:<22} {:<7} {:>8} {:>8}  {}",
                r.id,
                r.source,
                r.backup,
                if r.passed { "passed" } else { "FAILED" },
                secs(r.rto_seconds),
                secs(r.rpo_seconds),
                r.first_failure.as_deref().unwrap_or("")
            );
        }
    }
    for u in &unreadable {
        eprintln!("error: drill report {} cannot be read: {}", u.key, u.error);
    }
    Ok(if unreadable.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Integrity
    }
    .into())
}
