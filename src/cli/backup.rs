//! `lifeboat backup`

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::progress::human_bytes;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  lifeboat backup --policy policies/app.yaml --source main-db\n  \
lifeboat backup --policy policies/app.yaml --source main-db --kind base\n\n\
Artifacts are written first and the manifest last: a backup that fails leaves nothing listed."
)]
pub struct Args {
    #[command(flatten)]
    policy: super::PolicyArgs,
    /// Back up only this source (repeatable). Default: every source.
    #[arg(long)]
    source: Vec<String>,
    /// What to take: `dump` (pg_dump per database, restorable anywhere) or
    /// `base` (pg_basebackup of the cluster; with the WAL archive it
    /// restores to any point in time). Default: the source's `backup:`
    /// setting, else dump.
    #[arg(long, value_enum)]
    kind: Option<crate::backup::BackupKind>,
    /// Print the manifests of the new backups as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(
    args: Args,
    cancel: &CancellationToken,
    background: &crate::storage::Background,
) -> anyhow::Result<ExitCode> {
    let policy = args.policy.load()?;
    let sources: Vec<&crate::policy::Source> = if args.source.is_empty() {
        policy.sources.iter().collect()
    } else {
        args.source
            .iter()
            .map(|s| policy.source(s))
            .collect::<Result<_, _>>()?
    };
    let repo = super::open_in(&policy, true, background).await?;
    let mut done = Vec::new();
    let mut failed: Vec<anyhow::Error> = Vec::new();
    // One failing source does not stop the others.
    for source in sources {
        if cancel.is_cancelled() {
            break;
        }
        let finished = match crate::backup::backup_source(
            &policy,
            source,
            &repo,
            args.kind.unwrap_or_else(|| source.default_backup_kind()),
            cancel,
        )
        .await
        {
            Ok(f) => f,
            Err(e) => {
                failed.push(anyhow::Error::new(e).context(format!(
                    "backup of source '{}' failed; nothing was listed",
                    source.name
                )));
                continue;
            }
        };
        let m = finished.manifest;
        let secs = (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0;
        if !args.json {
            println!(
                "{}: backup {} complete: {} artifacts, {} read, {} stored, {:.1}s",
                m.source,
                m.id,
                m.artifacts.len(),
                human_bytes(m.plaintext_size()),
                human_bytes(m.stored_size()),
                secs
            );
            if let Some(k) = &m.kubernetes {
                let skipped: u64 = k.skipped.iter().map(|s| s.count).sum();
                println!(
                    "  {} objects from namespaces {} ({} left out as controller- or server-owned)",
                    k.objects(),
                    k.namespaces.join(", "),
                    skipped
                );
            }
        }
        if !args.json {
            match &finished.prune {
                Some(Ok((_, d))) if d.backups > 0 || !d.objects.is_empty() => println!(
                    "  retention: {} older backups deleted, {} objects ({}) in all",
                    d.backups,
                    d.objects.values().sum::<u64>(),
                    human_bytes(d.bytes)
                ),
                Some(Ok((plan, _))) => println!(
                    "  retention: nothing to delete ({} backups kept)",
                    plan.backups.iter().filter(|b| b.keep).count()
                ),
                Some(Err(e)) => eprintln!(
                    "warning: {}: retention after the backup failed: {e}",
                    m.source
                ),
                None => {}
            }
        }
        done.push(m);
    }
    if args.json {
        super::print_json(&done);
    }
    super::first_failure(failed)
}
