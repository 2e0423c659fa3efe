//! `lifeboat wal-push`, `wal-fetch` and `wal-verify`: PostgreSQL's
//! archive_command, its restore_command, and a check of the archive.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::{Outcome, UsageError};
use crate::kinds::postgres::wal::archive::{self, Pushed};
use crate::kinds::postgres::wal::end::WalEnd;
use crate::kinds::postgres::wal::reach::{Gap, Reach, TimelineInfo, WalIndex};
use crate::kinds::postgres::wal::{Lsn, DEFAULT_SEGMENT_SIZE};
use crate::pipeline::EncodeSettings;
use crate::policy::{Policy, Source, SourceKind};
use crate::progress::human_bytes;
use crate::repository::Repository;

/// The exit status that makes PostgreSQL stop recovery instead of taking a
/// failed fetch for the end of the archive (anything above 125 does).
const FETCH_FATAL: u8 = 255;

#[derive(Debug, clap::Args)]
#[command(after_help = "In postgresql.conf of the protected server:\n  \
archive_mode = on\n  \
archive_command = 'lifeboat wal-push --policy /etc/lifeboat/app.yaml %p'\n\n\
Exits 0 only once the file is durably stored. Pushing a file that is already archived with the\n\
same content succeeds (PostgreSQL retries); the same name with different content is refused.")]
pub struct PushArgs {
    #[command(flatten)]
    policy: super::PolicyArgs,
    /// The PostgreSQL source (needed when the policy has several).
    #[arg(long)]
    source: Option<String>,
    /// The file to archive: PostgreSQL's %p.
    path: PathBuf,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "As restore_command (lifeboat restore --to-datadir writes it for you):\n  \
restore_command = 'lifeboat wal-fetch --policy /etc/lifeboat/app.yaml --identity /etc/lifeboat/key %f %p'\n\n\
Exit 0: fetched. Exit 1, silently: the archive does not have the file (the normal end of recovery).\n\
Exit 255: any other failure (storage unreachable, corrupt object, wrong key): PostgreSQL stops recovery\n\
instead of ending it early, so nothing is promoted with changes missing."
)]
pub struct FetchArgs {
    #[command(flatten)]
    policy: super::PolicyArgs,
    /// The PostgreSQL source (needed when the policy has several).
    #[arg(long)]
    source: Option<String>,
    /// The age identity file (private key).
    #[arg(long, env = "LIFEBOAT_IDENTITY")]
    identity: Option<PathBuf>,
    /// Segments to fetch ahead in parallel, kept in pg_wal/.lifeboat-prefetch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=64))]
    prefetch: u32,
    /// The file PostgreSQL asks for: %f.
    name: String,
    /// Where to put it: %p.
    dest: PathBuf,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Shows the archived timelines, any gaps in the WAL sequence, and for each base backup\n\
the earliest and latest point a point-in-time restore can reach. Exit 4 when a gap or an\n\
unrestorable base backup is found. Without a key it reads the object names only: the end it shows\n\
is then a segment. With --identity it also decodes the last segments before each window's end and\n\
reads them with pg_waldump: the newest archived transaction (time and LSN) and the last whole\n\
record, which is what a restore can reach (--until at or after that time restores everything)."
)]
pub struct VerifyArgs {
    #[command(flatten)]
    policy: super::PolicyArgs,
    /// The PostgreSQL source (needed when the policy has several).
    #[arg(long)]
    source: Option<String>,
    /// The age identity file: read the exact end of the archive (the
    /// newest archived transaction), not only the segment names.
    #[arg(long, env = "LIFEBOAT_IDENTITY")]
    identity: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The PostgreSQL source named, or the only one.
fn pg_source<'a>(policy: &'a Policy, name: Option<&str>) -> anyhow::Result<&'a Source> {
    if let Some(n) = name {
        let s = policy.source(n)?;
        if !matches!(s.kind(), SourceKind::Postgres(_)) {
            return Err(UsageError(format!(
                "source '{n}' is not a PostgreSQL source; WAL archiving is for PostgreSQL"
            ))
            .into());
        }
        return Ok(s);
    }
    let pg: Vec<&Source> = policy
        .sources
        .iter()
        .filter(|s| matches!(s.kind(), SourceKind::Postgres(_)))
        .collect();
    match pg.as_slice() {
        [one] => Ok(one),
        [] => Err(UsageError(format!("policy '{}' has no PostgreSQL source", policy.name)).into()),
        many => Err(UsageError(format!(
            "policy '{}' has several PostgreSQL sources ({}); pass --source",
            policy.name,
            many.iter()
                .map(|s| s.name.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
    }
}

/// Opens the repository without the healthcheck round trip: these commands
/// run once per segment and their own requests name any failure.
async fn open_fast(
    policy: &Policy,
    create: bool,
    background: &crate::storage::Background,
) -> anyhow::Result<Repository> {
    let store = crate::storage::open(&policy.repository, background).await?;
    let repo = Repository::new(Arc::clone(&store));
    repo.open(create).await?;
    Ok(repo)
}

pub async fn push(
    args: PushArgs,
    background: &crate::storage::Background,
) -> anyhow::Result<ExitCode> {
    let began = Instant::now();
    let policy = args.policy.load()?;
    let source = pg_source(&policy, args.source.as_deref())?;
    let settings = EncodeSettings {
        compression: policy.compression,
        recipients: Arc::new(policy.encryption.all_recipients()?),
        // A 16 MiB segment: one thread, beside PostgreSQL's other work.
        workers: 1,
    };
    let repo = open_fast(&policy, true, background).await?;
    let pushed = archive::push(
        repo.store().as_ref(),
        policy.name.as_str(),
        source.name.as_str(),
        &settings,
        &args.path,
    )
    .await
    .map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "wal-push of {} for source '{}' failed; PostgreSQL keeps the file and retries",
            args.path.display(),
            source.name
        ))
    })?;
    let ms = began.elapsed().as_millis();
    match pushed {
        Pushed::Stored { key, encoded } => tracing::info!(
            file = %args.path.display(),
            key = %key,
            plaintext = %human_bytes(encoded.plaintext.size),
            stored = %human_bytes(encoded.stored.size),
            ms,
            "archived"
        ),
        Pushed::AlreadyArchived { key } => tracing::info!(
            file = %args.path.display(),
            key = %key,
            ms,
            "already archived with the same content"
        ),
    }
    Ok(Outcome::Ok.into())
}

pub async fn fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let result = async {
        let policy = args.policy.load()?;
        let source = pg_source(&policy, args.source.as_deref())?;
        let identities = super::identities(&args.identity, "wal-fetch")?;
        // A fetch uploads nothing.
        let repo = open_fast(&policy, false, &Default::default()).await?;
        let found = archive::fetch(
            repo.store().as_ref(),
            policy.name.as_str(),
            source.name.as_str(),
            identities,
            &args.name,
            &args.dest,
            args.prefetch,
        )
        .await?;
        anyhow::Ok(found)
    }
    .await;
    match result {
        Ok(true) => Ok(Outcome::Ok.into()),
        // Not an error: recovery asks for files past the end of the archive.
        Ok(false) => Ok(ExitCode::from(1)),
        Err(e) => {
            eprintln!(
                "error: wal-fetch of {} failed: {e:#}; recovery stops here (exit {FETCH_FATAL}) rather than promote with changes missing. Fix the cause and start the server again: recovery resumes",
                args.name
            );
            Ok(ExitCode::from(FETCH_FATAL))
        }
    }
}

/// What `wal-verify` reports for one base backup.
#[derive(Debug, Serialize)]
struct BaseWindow {
    backup: String,
    timeline: u32,
    /// The earliest recovery point: the backup is consistent here.
    earliest_lsn: Lsn,
    earliest_time: chrono::DateTime<chrono::Utc>,
    /// False when its own WAL (start to stop segment) is not all archived.
    restorable: bool,
    reach: Reach,
    /// Read from the archived WAL with --identity.
    end: Option<WalEnd>,
}

#[derive(Debug, Serialize)]
struct Report {
    policy: String,
    source: String,
    files: usize,
    timelines: Vec<TimelineInfo>,
    gaps: Vec<Gap>,
    base_backups: Vec<BaseWindow>,
    unrecognized: Vec<String>,
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let policy = args.policy.load()?;
    let source = pg_source(&policy, args.source.as_deref())?;
    let repo = super::open(&policy, false).await?;
    let (pname, sname) = (policy.name.as_str(), source.name.as_str());
    let listing = repo.list_backups(pname, Some(sname)).await?;
    let bases: Vec<_> = listing
        .backups
        .iter()
        .filter(|m| m.physical.is_some())
        .collect();
    let segment_size = bases
        .last()
        .and_then(|m| m.physical.as_ref())
        .map_or(DEFAULT_SEGMENT_SIZE, |p| p.wal_segment_size);
    let wal = archive::list(repo.store().as_ref(), pname, sname).await?;
    let index = WalIndex::new(&wal.files, segment_size);
    let identities = match &args.identity {
        Some(_) => Some(super::identities(&args.identity, "wal-verify")?),
        None => None,
    };
    let bin_dir = match source.kind() {
        SourceKind::Postgres(p) => p.bin_dir.clone(),
        _ => None,
    };
    let mut report = Report {
        policy: pname.to_string(),
        source: sname.to_string(),
        files: wal.files.len(),
        timelines: index.timeline_info(),
        gaps: index.gaps(),
        base_backups: bases
            .iter()
            .map(|m| {
                let p = m.physical.as_ref().expect("filtered");
                let reach = index.reach(p.timeline, p.start_lsn);
                BaseWindow {
                    backup: m.id.clone(),
                    timeline: p.timeline,
                    earliest_lsn: p.stop_lsn,
                    earliest_time: m.finished_at,
                    restorable: reach.end_lsn > p.stop_lsn,
                    reach,
                    end: None,
                }
            })
            .collect(),
        unrecognized: wal.unrecognized,
    };
    if let Some(ids) = &identities {
        // Windows that end in the same segment share their end.
        let mut seen: Vec<WalEnd> = Vec::new();
        for (b, m) in report.base_backups.iter_mut().zip(&bases) {
            let Some(last) = b.reach.last_segment.clone().filter(|_| b.restorable) else {
                continue;
            };
            if let Some(e) = seen.iter().find(|e| e.segment == last) {
                b.end = Some(e.clone());
                continue;
            }
            let major = crate::kinds::postgres::pitr::server_major(&m.server_version);
            let tools =
                crate::kinds::postgres::pitr::waldump_tools(bin_dir.as_deref(), major).await?;
            let p = m.physical.as_ref().expect("filtered");
            let end = crate::kinds::postgres::wal::end::find(
                repo.store().as_ref(),
                &wal.files,
                &b.reach,
                p.start_lsn,
                p.wal_segment_size,
                ids,
                &tools,
            )
            .await?;
            seen.push(end.clone());
            b.end = Some(end);
        }
    }
    let healthy = report.gaps.is_empty() && report.base_backups.iter().all(|b| b.restorable);
    if args.json {
        super::print_json(&report);
    } else {
        print_report(&report);
    }
    Ok(if healthy {
        Outcome::Ok
    } else {
        Outcome::NotFound
    }
    .into())
}

fn print_report(r: &Report) {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "?".into())
    };
    println!(
        "WAL archive of {}/{}: {} files",
        r.policy, r.source, r.files
    );
    println!("Timelines");
    for t in &r.timelines {
        println!(
            "  {:>3}  {} .. {}  {} segments{}{}{}",
            t.timeline,
            t.first_segment.as_deref().unwrap_or("-"),
            t.last_segment.as_deref().unwrap_or("-"),
            t.segments,
            t.parent
                .map(|p| format!(", branched from timeline {p}"))
                .unwrap_or_default(),
            if t.has_history_file {
                ", history file"
            } else {
                ""
            },
            if t.has_partial {
                ", partial last segment"
            } else {
                ""
            },
        );
    }
    if r.gaps.is_empty() {
        println!("Gaps: none");
    } else {
        println!("Gaps");
        for g in &r.gaps {
            println!(
                "  timeline {}: {} missing segment(s): {} .. {}",
                g.timeline, g.count, g.first_missing, g.last_missing
            );
        }
    }
    println!("Point-in-time recovery windows");
    if r.base_backups.is_empty() {
        println!("  no base backups: take one with `lifeboat backup --kind base`");
    }
    for b in &r.base_backups {
        if !b.restorable {
            println!(
                "  {}  NOT RESTORABLE: its own WAL is incomplete (missing {})",
                b.backup,
                b.reach
                    .gap_at
                    .as_deref()
                    .unwrap_or("the segments after its start")
            );
            continue;
        }
        let to = match &b.end {
            Some(e) => format!(
                "to {} (last whole record at LSN {}, timeline {})",
                match &e.newest_xact {
                    Some(x) => format!(
                        "{} (newest archived {} at LSN {})",
                        x.time.format("%Y-%m-%d %H:%M:%S%.6f UTC"),
                        if x.aborted { "rollback" } else { "commit" },
                        x.lsn
                    ),
                    None => e.describe_newest(),
                },
                e.last_record,
                e.timeline
            ),
            None => format!(
                "to segment {} (LSN {}, timeline {}; stored {}; pass --identity for the newest archived transaction)",
                b.reach.last_segment.as_deref().unwrap_or("?"),
                b.reach.end_lsn,
                b.reach.timeline,
                time(b.reach.last_archived_at),
            ),
        };
        println!(
            "  {}  from {} (LSN {})  {}{}",
            b.backup,
            b.earliest_time.format("%Y-%m-%d %H:%M:%S UTC"),
            b.earliest_lsn,
            to,
            b.reach
                .gap_at
                .as_deref()
                .map(|g| format!("  stopped by missing {g}"))
                .unwrap_or_default()
        );
    }
    for k in &r.unrecognized {
        println!("  note: {k} is not an archived WAL file");
    }
}
