//! `lifeboat prune`

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use serde::Serialize;

use super::UsageError;
use crate::progress::human_bytes;
use crate::prune::{self, What};

#[derive(Debug, clap::Args)]
#[command(after_help = "Applies the policy's `retention` to each source:\n\
  - backups the rules do not keep are deleted (manifest first, so none is ever half-listed);\n\
    the newest backup of each kind is always kept;\n\
  - WAL segments older than the oldest kept base backup, and binlog files older than the\n\
    oldest kept dump's binlog position, are deleted; nothing a kept backup needs for\n\
    point-in-time recovery goes;\n\
  - data of backups that never got a manifest (crashed runs) and unfinished uploads\n\
    older than --grace are removed.\n\
Holds each source's lock, like a backup. A backup applies the retention by itself\n\
after it succeeds; run prune to apply a changed retention or to clean up.\n\n\
Examples:\n  lifeboat prune --policy app.yaml --dry-run\n  lifeboat prune --policy app.yaml --source main-db --json")]
pub struct Args {
    #[command(flatten)]
    policy: super::PolicyArgs,
    /// Prune only this source (repeatable). Default: every source.
    #[arg(long)]
    source: Vec<String>,
    /// Show what would be deleted and why; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Unlisted data and unfinished uploads younger than this are taken
    /// for work in progress and kept.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    grace: std::time::Duration,
    /// Print the plans (and what was deleted) as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    plan: prune::Plan,
    deleted: Option<prune::Done>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn run(args: Args, cancel: &CancellationToken) -> anyhow::Result<ExitCode> {
    let policy = args.policy.load()?;
    if policy.retention.is_none() {
        return Err(UsageError(format!(
            "policy '{}' ({}) has no retention section, so there is nothing to prune by; add e.g. `retention: {{ keep_daily: 14, keep_monthly: 6 }}`",
            policy.name,
            policy.path.display()
        ))
        .into());
    }
    let sources: Vec<&crate::policy::Source> = if args.source.is_empty() {
        policy.sources.iter().collect()
    } else {
        args.source
            .iter()
            .map(|s| policy.source(s))
            .collect::<Result<_, _>>()?
    };
    let repo = super::open(&policy, !args.dry_run).await?;
    let mut reports = Vec::new();
    let mut failed: Vec<anyhow::Error> = Vec::new();
    for source in sources {
        if cancel.is_cancelled() {
            break;
        }
        let opts = prune::Options {
            dry_run: args.dry_run,
            grace: args.grace,
            now: chrono::Utc::now(),
        };
        match prune::prune_source(&repo, &policy, source, opts, cancel).await {
            Ok((plan, deleted)) => {
                if !args.json {
                    print_plan(&plan, deleted.as_ref());
                }
                reports.push(Report {
                    plan,
                    deleted,
                    error: None,
                });
            }
            Err(e) => {
                failed.push(
                    anyhow::Error::new(e).context(format!("prune of source '{}'", source.name)),
                );
            }
        }
    }
    if args.json {
        super::print_json(&reports);
    }
    super::first_failure(failed)
}

fn print_plan(plan: &prune::Plan, deleted: Option<&prune::Done>) {
    let verb = if deleted.is_some() {
        "DELETED"
    } else {
        "DELETE"
    };
    let kept = plan.backups.iter().filter(|b| b.keep).count();
    println!(
        "{}: {} backups kept, {} {}",
        plan.source,
        kept,
        plan.deleted_backups(),
        if deleted.is_some() {
            "deleted"
        } else {
            "would be deleted (dry run)"
        }
    );
    for b in &plan.backups {
        println!(
            "  {:<7}  {}  {:<17}  {}  {:>10}  {}",
            if b.keep { "keep" } else { verb },
            b.id,
            b.kind,
            b.at.format("%Y-%m-%d %H:%M"),
            human_bytes(b.stored_bytes),
            if b.keep {
                b.reasons.join("; ")
            } else {
                "no rule keeps it".to_string()
            }
        );
    }
    for (what, label) in [
        (
            What::Wal,
            "WAL files older than the oldest kept base backup",
        ),
        (
            What::Binlog,
            "binlog objects older than the oldest kept dump's binlog position",
        ),
        (What::Orphan, "objects of backups that have no manifest"),
    ] {
        let n = plan.count(what);
        if n > 0 {
            println!("  {verb} {n} {label} ({})", human_bytes(plan.bytes(what)));
        }
    }
    if !plan.uploads.is_empty() {
        println!(
            "  {verb} {} unfinished uploads: {}",
            plan.uploads.len(),
            plan.uploads
                .iter()
                .map(|u| u.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for note in &plan.notes {
        println!("  note: {note}");
    }
    if let Some(d) = deleted {
        println!(
            "  {} objects deleted, {} freed",
            d.objects.values().sum::<u64>(),
            human_bytes(d.bytes)
        );
    }
}
