//! `lifeboat list`

use std::process::ExitCode;

use super::Outcome;
use crate::progress::human_bytes;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    policy: super::PolicyArgs,
    /// Only this source's backups.
    #[arg(long)]
    source: Option<String>,
    /// Print the manifests as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let policy = args.policy.load()?;
    if let Some(s) = &args.source {
        policy.source(s)?;
    }
    let repo = super::open(&policy, false).await?;
    let listing = repo
        .list_backups(policy.name.as_str(), args.source.as_deref())
        .await?;
    let backups = &listing.backups;
    // Unreadable manifests are reported and make the exit code 3.
    let outcome = if listing.unreadable.is_empty() {
        Outcome::Ok
    } else {
        for u in &listing.unreadable {
            eprintln!("error: {}", u.error);
        }
        Outcome::Integrity
    };
    if args.json {
        super::print_json(backups);
        return Ok(outcome.into());
    }
    if backups.is_empty() {
        eprintln!(
            "no backups of policy '{}' in {}",
            policy.name,
            repo.describe()
        );
        return Ok(outcome.into());
    }
    println!(
        "{:<24} {:<16} {:<10} {:<20} {:>8} {:>10} {:>10} {:>9}",
        "ID", "SOURCE", "KIND", "STARTED (UTC)", "SECONDS", "READ", "STORED", "ARTIFACTS"
    );
    for m in backups {
        println!(
            "{:<24} {:<16} {:<10} {:<20} {:>8.1} {:>10} {:>10} {:>9}",
            m.id,
            m.source,
            m.kind.label(),
            m.started_at.format("%Y-%m-%d %H:%M:%S"),
            (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0,
            human_bytes(m.plaintext_size()),
            human_bytes(m.stored_size()),
            m.artifacts.len()
        );
    }
    Ok(outcome.into())
}
