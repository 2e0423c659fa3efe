//! `lifeboat binlog-archive` and `lifeboat binlog-verify`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;

use super::{Outcome, UsageError};
use crate::binlog::{self, Archiver, BinlogReport};
use crate::pipeline::EncodeSettings;
use crate::policy::{MysqlSource, Policy, Source, SourceKind};
use crate::source::mysql::{BinlogPoint, MyConn};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Runs until SIGINT/SIGTERM. Streams the server's binlogs with its own mariadb-binlog\n\
(or mysqlbinlog) over the replication protocol into the repository: each file as soon as the\n\
server rotates, and the file in progress every --interval. After a restart it resumes at the\n\
first file not yet stored whole. The user needs REPLICATION SLAVE and REPLICATION CLIENT.\n\n\
Example:\n  lifeboat binlog-archive --policy app.yaml --source business-db --interval 10s"
)]
pub struct ArchiveArgs {
    #[arg(long, env = "LIFEBOAT_POLICY")]
    policy: PathBuf,
    /// The MySQL/MariaDB source (needed when the policy has several).
    #[arg(long)]
    source: Option<String>,
    /// How often the binlog file in progress is stored: the most recent
    /// changes a lost server can take with it.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Lists the archived binlog files, gaps between them, and for each dump the range a\n\
point-in-time restore can reach. Exit 4 when there is a gap. Needs no key."
)]
pub struct VerifyArgs {
    #[arg(long, env = "LIFEBOAT_POLICY")]
    policy: PathBuf,
    #[arg(long)]
    source: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn my_source<'a>(
    policy: &'a Policy,
    name: Option<&str>,
) -> anyhow::Result<(&'a Source, &'a MysqlSource)> {
    let candidates: Vec<&Source> = match name {
        Some(n) => vec![policy.source(n)?],
        None => policy
            .sources
            .iter()
            .filter(|s| matches!(s.kind(), SourceKind::Mysql(_)))
            .collect(),
    };
    match candidates.as_slice() {
        [one] => match one.kind() {
            SourceKind::Mysql(my) => Ok((one, my)),
            _ => Err(UsageError(format!(
                "source '{}' is not a MySQL/MariaDB source; binlogs are MySQL's",
                one.name
            ))
            .into()),
        },
        [] => Err(UsageError(format!(
            "policy '{}' has no MySQL/MariaDB source",
            policy.name
        ))
        .into()),
        _ => Err(UsageError(format!(
            "policy '{}' has several MySQL/MariaDB sources; pass --source",
            policy.name
        ))
        .into()),
    }
}

pub async fn archive(args: ArchiveArgs) -> anyhow::Result<ExitCode> {
    let policy = Policy::load(&args.policy)?;
    let (source, my) = my_source(&policy, args.source.as_deref())?;
    let recipients = policy.encryption.all_recipients()?;
    let repo = super::open(&policy, true).await?;
    let archiver = Archiver {
        repo: &repo,
        policy: policy.name.to_string(),
        source: source.name.to_string(),
        conn: MyConn::from_source(my)?,
        bin_dir: my.bin_dir.clone(),
        settings: EncodeSettings {
            compression: policy.compression,
            recipients: Arc::new(recipients.clone()),
        },
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        interval: args.interval,
        scanned: Default::default(),
    };
    archiver.run().await?;
    Ok(Outcome::Ok.into())
}

/// What a dump can recover to with the archive.
#[derive(Debug, Serialize)]
struct DumpWindow {
    backup: String,
    from: Option<BinlogPoint>,
    /// The last archived file the replay can reach without a gap, and
    /// whether it is stored whole.
    to_file: Option<String>,
    to_complete: bool,
    to_archived_at: Option<chrono::DateTime<chrono::Utc>>,
    gap_at: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    archive: BinlogReport,
    dumps: Vec<DumpWindow>,
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let policy = Policy::load(&args.policy)?;
    let (source, _) = my_source(&policy, args.source.as_deref())?;
    let repo = super::open(&policy, false).await?;
    let (pname, sname) = (policy.name.as_str(), source.name.as_str());
    let state = binlog::load_state(&repo, pname, sname).await?;
    let archive = binlog::report(&state);
    let listing = repo.list_backups(pname, Some(sname)).await?;
    let dumps = listing
        .backups
        .iter()
        .filter(|m| m.kind == "mysql-dump")
        .map(|m| {
            let from = m.binlog.clone();
            let start = from.as_ref().map(|b| binlog::file_order(&b.file));
            let after: Vec<_> = archive
                .files
                .iter()
                .filter(|f| {
                    start
                        .as_ref()
                        .is_some_and(|s| &binlog::file_order(&f.file) >= s)
                })
                .collect();
            let gap_at = archive
                .gaps
                .iter()
                .find(|g| start.as_ref().is_some_and(|s| &binlog::file_order(g) > s))
                .cloned();
            let reachable: Vec<_> = after
                .iter()
                .take_while(|f| {
                    gap_at
                        .as_ref()
                        .is_none_or(|g| binlog::file_order(&f.file) < binlog::file_order(g))
                })
                .collect();
            let last = reachable.last();
            DumpWindow {
                backup: m.id.clone(),
                from,
                to_file: last.map(|f| f.file.clone()),
                to_complete: last.is_some_and(|f| f.complete),
                to_archived_at: last.map(|f| f.archived_at),
                gap_at,
            }
        })
        .collect();
    let report = Report { archive, dumps };
    let healthy = report.archive.gaps.is_empty();
    if args.json {
        super::print_json(&report);
    } else {
        println!(
            "Binlog archive of {pname}/{sname}: {} files",
            report.archive.files.len()
        );
        for f in &report.archive.files {
            println!(
                "  {}  {:>12} bytes  {}  archived {}",
                f.file,
                f.bytes,
                if f.complete {
                    "complete"
                } else {
                    "in progress (partial copy)"
                },
                f.archived_at.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        if report.archive.gaps.is_empty() {
            println!("Gaps: none");
        } else {
            println!("Gaps: {}", report.archive.gaps.join(", "));
        }
        println!("Point-in-time recovery windows");
        for d in &report.dumps {
            match &d.from {
                None => println!(
                    "  {}  none: the server had no binlog at dump time",
                    d.backup
                ),
                Some(b) => println!(
                    "  {}  from {}:{}  to {} ({}){}",
                    d.backup,
                    b.file,
                    b.position,
                    d.to_file.as_deref().unwrap_or("(nothing archived yet)"),
                    d.to_archived_at
                        .map(|t| format!("archived {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                        .unwrap_or_default(),
                    d.gap_at
                        .as_deref()
                        .map(|g| format!("  stopped by missing {g}"))
                        .unwrap_or_default()
                ),
            }
        }
    }
    Ok(if healthy {
        Outcome::Ok
    } else {
        Outcome::NotFound
    }
    .into())
}
