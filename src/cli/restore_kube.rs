//! `lifeboat restore` of a Kubernetes source.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::restore::Args;
use super::{Outcome, UsageError};
use crate::kinds::kubernetes::config::KubernetesSource;
use crate::kinds::kubernetes::restore::{self as kr, Options, Plan, Report};
use crate::kube::{Cluster, ConnectOptions};
use crate::policy::Policy;

fn refuse_database_flags(args: &Args) -> Result<(), UsageError> {
    let db_flags = [
        ("--to", args.to.is_some()),
        ("--to-datadir", args.to_datadir.is_some()),
        ("--until", args.until.is_some()),
        ("--database", args.database.is_some()),
        ("--clean", args.clean),
        ("--globals", args.globals),
    ];
    if let Some((flag, _)) = db_flags.iter().find(|(_, set)| *set) {
        return Err(UsageError(format!(
            "{flag} is for database sources; source '{}' is a Kubernetes cluster (see --namespace-map, --to-dir)",
            args.source
        )));
    }
    Ok(())
}

fn print_plan(plan: &Plan, backup: &str, target: &str) {
    println!("Restore plan");
    println!("  backup      {backup}");
    println!("  target      {target}");
    for (from, to) in &plan.namespaces {
        if from == to {
            println!("  namespace   {from}");
        } else {
            println!("  namespace   {from} -> {to}");
        }
    }
    let (skips, changed) = plan_counts(plan);
    let skipped: usize = skips.values().sum();
    println!(
        "  objects     {} to apply ({} changed by the harmless-copy rules or the mapping), {} not selected",
        plan.objects.len() - skipped,
        changed,
        plan.not_selected
    );
    if skipped > 0 {
        println!("  left out    {}", kr::describe_skips(&skips));
    }
}

/// Skipped objects per reason, and how many applied objects the rules
/// changed.
fn plan_counts(plan: &Plan) -> (std::collections::BTreeMap<kr::SkipReason, usize>, usize) {
    let mut skips = std::collections::BTreeMap::new();
    let mut changed = 0;
    for p in &plan.objects {
        match &p.skip {
            Some(s) => *skips.entry(s.reason).or_default() += 1,
            None if !p.changes.is_empty() => changed += 1,
            None => {}
        }
    }
    (skips, changed)
}

fn print_report(report: &Report) {
    let width = |f: &dyn Fn(&kr::ObjectResult) -> usize, min: usize| {
        report.objects.iter().map(f).max().unwrap_or(0).max(min)
    };
    let wn = width(&|o| o.namespace.as_deref().unwrap_or("-").len(), 9);
    let wk = width(&|o| o.kind.len(), 4);
    let wname = width(&|o| o.name.len(), 4).min(60);
    println!(
        "{:<wn$}  {:<wk$}  {:<wname$}  {:<12}  DETAIL",
        "NAMESPACE", "KIND", "NAME", "RESULT"
    );
    for o in &report.objects {
        println!(
            "{:<wn$}  {:<wk$}  {:<wname$}  {:<12}  {}",
            o.namespace.as_deref().unwrap_or("-"),
            o.kind,
            o.name,
            o.outcome.label(),
            o.detail
        );
    }
    use kr::Outcome as O;
    let mut parts = Vec::new();
    for outcome in [
        O::Created,
        O::Updated,
        O::WouldCreate,
        O::WouldUpdate,
        O::Unchanged,
        O::Skipped,
        O::Failed,
    ] {
        let n = report.count(outcome);
        if n > 0 {
            if outcome == O::Skipped {
                parts.push(format!(
                    "{n} skipped ({})",
                    kr::describe_skips(&report.skipped_by_reason())
                ));
            } else {
                parts.push(format!("{n} {}", outcome.label().to_lowercase()));
            }
        }
    }
    println!(
        "{} objects in {:.1}s: {}{}",
        report.objects.len(),
        report.seconds,
        parts.join(", "),
        if report.dry_run {
            " (dry run: nothing was changed)"
        } else {
            ""
        }
    );
}

pub async fn run(
    args: Args,
    policy: &Policy,
    source: &KubernetesSource,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    refuse_database_flags(&args)?;
    let opts = Options {
        namespaces: args.namespace.clone(),
        namespace_map: kr::parse_mapping(&args.namespace_map)?,
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        overwrite: args.overwrite,
        live: args.live,
        cluster_resources: args.cluster_resources,
        into_existing: args.into_existing,
    };
    let identities = super::identities(&args.identity, "restore")?;
    let repo = super::open(policy, false).await?;
    let manifest = repo
        .find_backup_of_kind(
            policy.name.as_str(),
            &args.source,
            &args.backup,
            Some(crate::repository::ManifestKind::KubernetesExport),
        )
        .await?;
    tracing::info!(backup = %manifest.id, "reading and verifying the export");
    let objects = kr::load(&repo, &manifest, identities).await?;

    let plan = kr::plan(&manifest, objects, &opts)?;
    if let Some(dir) = &args.to_dir {
        let written = kr::write_dir(&plan, dir, opts.into_existing)?;
        let (skips, changed) = plan_counts(&plan);
        if args.json {
            super::print_json(&serde_json::json!({
                "backup": manifest.id,
                "dir": dir,
                "files": written,
                "changed": changed,
                "skipped": skips,
                "not_selected": plan.not_selected,
                "objects": plan.objects,
            }));
        } else {
            println!(
                "wrote {written} objects of backup {} to {} ({changed} changed by the harmless-copy rules or the mapping, {} not selected)",
                manifest.id,
                dir.display(),
                plan.not_selected
            );
            if !skips.is_empty() {
                println!("left out: {}", kr::describe_skips(&skips));
            }
            println!(
                "what changed and why: {}/plan.txt; apply with: sh {}/apply.sh [--context NAME]",
                dir.display(),
                dir.display()
            );
        }
        eprintln!(
            "warning: {} holds Secrets in plaintext (files are readable by you only); delete it when done",
            dir.display()
        );
        return Ok(Outcome::Ok.into());
    }

    let connect = ConnectOptions {
        kubeconfig: args
            .kubeconfig
            .clone()
            .or_else(|| source.kubeconfig.clone()),
        context: args.context.clone().or_else(|| {
            // Another kubeconfig means another cluster: the source's
            // context name need not exist there.
            args.kubeconfig
                .is_none()
                .then(|| source.context.clone())
                .flatten()
        }),
    };
    let cluster = Cluster::connect(&connect).await?;
    let target = format!("{} (context {})", cluster.server, cluster.context);
    if !args.json {
        print_plan(&plan, &manifest.id, &target);
    }
    let report = tokio::select! {
        r = kr::execute(&cluster, plan, &opts, args.dry_run, &manifest.id) => r.map_err(|e| {
            // A refusal comes before anything is written: it speaks for itself.
            let refused = matches!(
                e,
                kr::KubeRestoreError::TargetNotEmpty { .. }
                    | kr::KubeRestoreError::TargetTerminating { .. }
                    | kr::KubeRestoreError::TargetUnreadable { .. }
                    | kr::KubeRestoreError::OverwriteForeign { .. }
            );
            let e = anyhow::Error::new(e);
            if refused {
                e
            } else {
                e.context(
                    "the restore stopped; objects applied before this stay. Fix the cause and run the same restore again: existing objects are left alone",
                )
            }
        })?,
        _ = cancel.cancelled() => {
            return Err(anyhow::anyhow!("restore stopped: the objects applied so far stay; run the same restore again to finish (existing objects are left alone)"));
        }
    };
    if args.json {
        super::print_json(&report);
    } else {
        print_report(&report);
    }
    if report.failed() {
        let first = report
            .objects
            .iter()
            .find(|o| o.outcome == kr::Outcome::Failed)
            .expect("failed() found one");
        eprintln!(
            "error: {} of {} objects failed; the first: {} {}/{}: {}",
            report.count(kr::Outcome::Failed),
            report.objects.len(),
            first.kind,
            first.namespace.as_deref().unwrap_or("-"),
            first.name,
            first.detail
        );
        return Ok(Outcome::Partial.into());
    }
    Ok(Outcome::Ok.into())
}
