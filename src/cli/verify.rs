//! `lifeboat verify`

use std::path::PathBuf;
use std::process::ExitCode;

use super::Outcome;
use crate::repository::BackupSelector;
use crate::verify::Status;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Without a key, verify downloads every object and checks its stored size and sha256.\n\
With --read-data --identity FILE, it also decrypts and decompresses and checks the plaintext sha256."
)]
pub struct Args {
    #[command(flatten)]
    policy: super::PolicyArgs,
    /// Only this source.
    #[arg(long)]
    source: Option<String>,
    /// Only this backup id, or `latest` (needs --source when the policy has several).
    #[arg(long)]
    backup: Option<BackupSelector>,
    /// Decrypt and decompress every artifact and check plaintext hashes.
    #[arg(long, requires = "identity")]
    read_data: bool,
    /// The age identity file (only with --read-data).
    #[arg(long, requires = "read_data")]
    identity: Option<PathBuf>,
    /// Print one JSON record per object.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let policy = args.policy.load()?;
    if let Some(s) = &args.source {
        policy.source(s)?;
    }
    let repo = super::open(&policy, false).await?;
    let identities = if args.read_data {
        Some(super::identities(&args.identity, "verify --read-data")?)
    } else {
        None
    };
    let mut unreadable = Vec::new();
    let manifests = match &args.backup {
        Some(sel) => {
            let source = match (&args.source, policy.sources.as_slice()) {
                (Some(s), _) => policy.source(s)?.name.to_string(),
                (None, [only]) => only.name.to_string(),
                (None, _) => {
                    return Err(super::UsageError(
                        "--backup needs --source when the policy has several sources".into(),
                    )
                    .into())
                }
            };
            vec![repo.find_backup(policy.name.as_str(), &source, sel).await?]
        }
        None => {
            let listing = repo
                .list_backups(policy.name.as_str(), args.source.as_deref())
                .await?;
            unreadable = listing.unreadable;
            listing.backups
        }
    };
    if manifests.is_empty() && unreadable.is_empty() {
        eprintln!(
            "error: no backups to verify for policy '{}' in {}",
            policy.name,
            repo.describe()
        );
        return Ok(Outcome::NotFound.into());
    }
    let mut reports = crate::verify::verify(&repo, &manifests, identities).await;
    // A manifest that cannot be read is damage too.
    for u in unreadable {
        reports.push(crate::verify::ObjectReport {
            backup: String::new(),
            source: String::new(),
            artifact: "manifest".into(),
            key: u.key,
            status: Status::Corrupt,
            detail: Some(u.error),
        });
    }
    if args.json {
        super::print_json(&reports);
    } else {
        for r in &reports {
            let status = match r.status {
                Status::Ok => "ok",
                Status::Missing => "MISSING",
                Status::Corrupt => "CORRUPT",
                Status::WrongKey => "WRONG KEY",
                Status::Error => "ERROR",
            };
            match &r.detail {
                Some(d) => println!("{status:<9} {}  {d}", r.key),
                None => println!("{status:<9} {}", r.key),
            }
        }
    }
    let bad: Vec<_> = reports.iter().filter(|r| r.status != Status::Ok).collect();
    let mode = if args.read_data {
        "stored and plaintext"
    } else {
        "stored"
    };
    if bad.is_empty() {
        eprintln!(
            "verified {} objects of {} backups ({mode} sizes and sha256): all ok",
            reports.len(),
            manifests.len()
        );
        return Ok(Outcome::Ok.into());
    }
    eprintln!(
        "verify found {} problem(s) in {} objects; first: {}",
        bad.len(),
        reports.len(),
        bad[0].detail.as_deref().unwrap_or("")
    );
    Ok(match bad[0].status {
        Status::Missing => Outcome::NotFound,
        Status::Corrupt => Outcome::Integrity,
        Status::WrongKey => Outcome::WrongKey,
        _ => Outcome::Failure,
    }
    .into())
}
