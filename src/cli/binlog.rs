//! `lifeboat binlog-archive` and `lifeboat binlog-verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use serde::Serialize;

use super::{Outcome, UsageError};
use crate::kinds::mysql::binlog::{self, Archiver, BinlogReport};
use crate::kinds::mysql::config::MysqlSource;
use crate::kinds::mysql::source::{BinlogPoint, MyConn};
use crate::pipeline::EncodeSettings;
use crate::policy::{Policy, Source, SourceKind};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Runs until SIGINT/SIGTERM. Streams the server's binlogs with its own mariadb-binlog\n\
(or mysqlbinlog) over the replication protocol into the repository: each file as soon as the\n\
server rotates, and the file in progress every --interval. After a restart it resumes at the\n\
first file not yet stored whole. The user needs REPLICATION SLAVE and REPLICATION CLIENT.\n\n\
Example:\n  lifeboat binlog-archive --policy app.yaml --source business-db --interval 10s"
)]
pub struct ArchiveArgs {
    #[command(flatten)]
    policy: super::PolicyArgs,
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
    after_help = "Lists the archived binlog files, gaps between them (a missing file, or a record whose\n\
data object is gone), and for each dump the range a point-in-time restore can reach. Exit 4 when\n\
there is a gap. Without a key it reads the records only. With --identity it also reads the events\n\
of the last file each window reaches: its newest event and the latest --until that restores exactly."
)]
pub struct VerifyArgs {
    #[command(flatten)]
    policy: super::PolicyArgs,
    #[arg(long)]
    source: Option<String>,
    /// The age identity file: read the exact end of each window (its newest
    /// event), not only the records.
    #[arg(long, env = "LIFEBOAT_IDENTITY")]
    identity: Option<PathBuf>,
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

pub async fn archive(
    args: ArchiveArgs,
    cancel: &CancellationToken,
    background: &crate::storage::Background,
) -> anyhow::Result<ExitCode> {
    let policy = args.policy.load()?;
    let (source, my) = my_source(&policy, args.source.as_deref())?;
    let recipients = policy.encryption.all_recipients()?;
    let repo = super::open_in(&policy, true, background).await?;
    let archiver = Archiver {
        repo: &repo,
        policy: policy.name.to_string(),
        source: source.name.to_string(),
        conn: MyConn::from_source(my)?,
        bin_dir: my.bin_dir.clone(),
        settings: EncodeSettings {
            compression: policy.compression,
            recipients: Arc::new(recipients.clone()),
            workers: 1,
        },
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        interval: args.interval,
        scanned: Default::default(),
        cancel: cancel.clone(),
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
    /// Read from the last file's events with --identity.
    end: Option<binlog::BinlogEnd>,
}

#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    archive: BinlogReport,
    /// Files whose record is archived but whose data object is not.
    missing_objects: Vec<String>,
    dumps: Vec<DumpWindow>,
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let policy = args.policy.load()?;
    let (source, _) = my_source(&policy, args.source.as_deref())?;
    let repo = super::open(&policy, false).await?;
    let (pname, sname) = (policy.name.as_str(), source.name.as_str());
    let state = binlog::load_state(&repo, pname, sname).await?;
    let archive = binlog::report(&state);
    // A record is the commit point of its data object: both must exist.
    let keys: std::collections::HashSet<String> = repo
        .store()
        .list(&binlog::prefix(pname, sname))
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut missing_objects: Vec<String> = state
        .values()
        .filter(|r| !keys.contains(&r.key))
        .map(|r| r.file.clone())
        .collect();
    missing_objects.sort_by_key(|f| binlog::file_order(f));
    let identities = match &args.identity {
        Some(_) => Some(super::identities(&args.identity, "binlog-verify")?),
        None => None,
    };
    let listing = repo.list_backups(pname, Some(sname)).await?;
    let mut ends: Vec<binlog::BinlogEnd> = Vec::new();
    let mut dumps = Vec::new();
    for m in listing
        .backups
        .iter()
        .filter(|m| m.kind == crate::repository::ManifestKind::MysqlDump)
    {
        let mut w = DumpWindow {
            backup: m.id.clone(),
            from: m.binlog.clone(),
            to_file: None,
            to_complete: false,
            to_archived_at: None,
            gap_at: None,
            end: None,
        };
        if m.binlog.is_some() {
            match crate::kinds::mysql::restore::plan_replay(
                &repo,
                pname,
                sname,
                m,
                &crate::kinds::mysql::restore::MyTarget::LatestReachable,
                None,
            )
            .await
            {
                Ok(plan) => {
                    let last = plan.files.last().cloned();
                    w.to_file = last.as_ref().map(|f| f.0.clone());
                    w.to_complete = last.as_ref().is_some_and(|f| f.1);
                    w.to_archived_at = plan.last_archived_at();
                    w.gap_at = plan.hole.clone();
                    if let (Some(ids), Some((file, _))) = (&identities, &last) {
                        if let Some(e) = ends.iter().find(|e| &e.file == file) {
                            w.end = Some(e.clone());
                        } else if let Some(rec) = state.get(file) {
                            let e = binlog::read_end(&repo, rec, ids.clone()).await?;
                            ends.push(e.clone());
                            w.end = Some(e);
                        }
                    }
                }
                Err(crate::kinds::mysql::restore::ReplayError::Gap(g)) => {
                    w.gap_at = Some(g.missing);
                }
                Err(e) => return Err(e.into()),
            }
        }
        dumps.push(w);
    }
    let report = Report {
        archive,
        missing_objects,
        dumps,
    };
    let healthy = report.archive.gaps.is_empty()
        && report.missing_objects.is_empty()
        && report.dumps.iter().all(|d| d.gap_at.is_none());
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
        if report.archive.gaps.is_empty() && report.missing_objects.is_empty() {
            println!("Gaps: none");
        } else {
            if !report.archive.gaps.is_empty() {
                println!("Gaps: {}", report.archive.gaps.join(", "));
            }
            if !report.missing_objects.is_empty() {
                println!(
                    "Gaps: recorded but their data object is missing: {}",
                    report.missing_objects.join(", ")
                );
            }
        }
        println!("Point-in-time recovery windows");
        for d in &report.dumps {
            match &d.from {
                None => println!(
                    "  {}  none: the server had no binlog at dump time",
                    d.backup
                ),
                Some(b) => println!(
                    "  {}  from {}:{}  to {} ({}){}{}",
                    d.backup,
                    b.file,
                    b.position,
                    d.to_file.as_deref().unwrap_or("(nothing archived yet)"),
                    d.to_archived_at
                        .map(|t| format!("archived {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                        .unwrap_or_default(),
                    match &d.end {
                        Some(e) => format!(
                            "; newest event stamped {}, exact up to --until '{}'",
                            e.newest_event
                                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                                .unwrap_or_else(|| "-".into()),
                            e.exact_until()
                                .map(|t| t.format("%Y-%m-%d %H:%M:%S+00").to_string())
                                .unwrap_or_else(|| "-".into())
                        ),
                        None => String::new(),
                    },
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
