//! `lifeboat restore --to-datadir`: point-in-time recovery.

use std::process::ExitCode;

use chrono::{DateTime, Utc};

use super::restore::Args;
use super::{Outcome, UsageError};
use crate::kinds::postgres::pitr::{self, PitrOptions, PitrPlan, Target};
use crate::kinds::postgres::wal::Lsn;
use crate::progress::human_bytes;
use crate::repository::BackupSelector;

/// Reads `--until`: `latest`, PostgreSQL's `2026-11-21 14:03:00+00`, or RFC 3339.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    Err(format!(
        "--until '{s}' is not a time with a zone: write it like '2026-11-21 14:03:00+00' or 2026-11-21T14:03:00Z, or `latest`"
    ))
}

fn target(args: &Args) -> Result<Target, UsageError> {
    if args.until_position.is_some() || args.until_gtid.is_some() {
        return Err(UsageError(
            "--until-position and --until-gtid are binlog targets for MySQL/MariaDB; for PostgreSQL use --until-lsn or --until-xid".into(),
        ));
    }
    if let Some(l) = &args.until_lsn {
        return Lsn::parse(l).map(Target::Lsn).ok_or_else(|| {
            UsageError(format!(
                "--until-lsn '{l}' is not an LSN; write it as PostgreSQL shows it, e.g. 0/5000060"
            ))
        });
    }
    if let Some(x) = args.until_xid {
        return Ok(Target::Xid(x));
    }
    if let Some(n) = &args.until_name {
        return Ok(Target::Name(n.clone()));
    }
    match args.until.as_deref() {
        None | Some("latest") => Ok(Target::Latest),
        Some("latest-reachable") => Ok(Target::LatestReachable),
        Some(t) => parse_time(t).map(Target::Time).map_err(UsageError),
    }
}

fn print_plan(plan: &PitrPlan) {
    let p = &plan.physical;
    println!("Point-in-time restore plan");
    println!(
        "  base backup  {} of source {} (consistent at {}, LSN {})",
        plan.backup,
        plan.source,
        plan.backup_finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
        p.stop_lsn
    );
    println!(
        "               {} stored, {} unpacked; PostgreSQL {}",
        human_bytes(plan.base_stored_size),
        human_bytes(plan.base_plaintext_size),
        plan.server_version.split_whitespace().nth(1).unwrap_or("?")
    );
    println!(
        "  WAL          from {} (timeline {}) to {} ({} archived){}",
        p.start_segment,
        p.timeline,
        plan.reach.last_segment.as_deref().unwrap_or("?"),
        plan.reach
            .last_archived_at
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "?".into()),
        if plan.reach.path.len() > 1 {
            format!(
                ", across timelines {}",
                plan.reach
                    .path
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" → ")
            )
        } else {
            String::new()
        }
    );
    if let Some(e) = &plan.end {
        println!(
            "  archive end  {}; last whole record at LSN {} (segment {})",
            e.describe_newest(),
            e.last_record,
            e.segment
        );
    }
    println!("  target       {}", plan.target);
    if plan.recovery != plan.target {
        println!("  recovery to  {}", plan.recovery);
    }
    if let Some(n) = &plan.notice {
        println!("  note         {n}");
    }
    println!("  data dir     {}", plan.datadir.display());
    for w in &plan.warnings {
        println!("  warning      {w}");
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let datadir = args.to_datadir.clone().expect("called with --to-datadir");
    let target = target(&args)?;
    let policy = args.policy.load()?;
    let source = policy.source(&args.source)?;
    let crate::policy::SourceKind::Postgres(pg_source) = source.kind() else {
        return Err(UsageError(format!(
            "--to-datadir restores PostgreSQL base backups; source '{}' is not a PostgreSQL source",
            source.name
        ))
        .into());
    };
    let identity = match &args.identity {
        Some(p) => Some(
            std::path::absolute(p)
                .map_err(|e| UsageError(format!("--identity {}: {e}", p.display())))?,
        ),
        None => None,
    };
    // A dry run reads the archive's end too when it is given a key.
    let identities = if args.dry_run && identity.is_none() {
        None
    } else {
        Some(super::identities(&identity, "restore")?)
    };
    if args.start && !args.dry_run && pitr::running_as_root() {
        return Err(pitr::PitrError::RunningAsRoot.into());
    }
    let repo = super::open(&policy, false).await?;
    let backup = match &args.backup {
        BackupSelector::Latest => None,
        BackupSelector::Id(id) => Some(id.as_str()),
    };
    let plan = pitr::plan(
        &repo,
        policy.name.as_str(),
        source.name.as_str(),
        target,
        backup,
        &datadir,
        identities.as_ref().map(|ids| pitr::EndReader {
            identities: ids,
            bin_dir: pg_source.bin_dir.as_deref(),
        }),
    )
    .await?;
    if args.json && args.dry_run {
        super::print_json(&serde_json::json!({ "dry_run": true, "plan": plan }));
        return Ok(Outcome::Ok.into());
    }
    if !args.json {
        print_plan(&plan);
    }
    if args.dry_run {
        pitr::check_datadir(&datadir)?;
        println!("dry run: nothing was changed");
        return Ok(Outcome::Ok.into());
    }
    let opts = PitrOptions {
        exe: std::env::current_exe()?,
        policy_file: std::path::absolute(&args.policy.policy)?,
        identity_file: identity.expect("loaded unless dry run"),
        start: args.start,
        port: args.port,
        timeout: args.timeout,
        no_archive: args.no_archive,
        bin_dir: pg_source.bin_dir.clone(),
        restore_command: None,
    };
    let report = pitr::execute(
        &plan,
        &repo,
        identities.expect("loaded unless dry run"),
        &opts,
    )
    .await?;
    if args.json {
        super::print_json(&serde_json::json!({ "plan": plan, "report": report }));
        return Ok(Outcome::Ok.into());
    }
    println!(
        "unpacked base backup {} into {}{}",
        report.backup,
        report.datadir.display(),
        if report.verified_with_pg_verifybackup {
            " (pg_verifybackup: every file matches the backup's manifest)"
        } else {
            ""
        }
    );
    if report.started {
        println!(
            "recovery finished and the server promoted in {:.1}s{}",
            report.seconds,
            report
                .port
                .map(|p| format!("; it listens on port {p}"))
                .unwrap_or_default()
        );
        if let Some(s) = &report.stopped_at {
            println!("  {s}");
        }
        if let Some(t) = &report.last_transaction_at {
            println!("  last replayed transaction committed at {t}");
        }
        if let Some(n) = &plan.notice {
            println!("  note: {n}");
        }
        if let Some(t) = report.new_timeline {
            println!("  new timeline {t}");
        }
        if let Some(l) = &report.log {
            println!("  server log: {}", l.display());
        }
    } else {
        println!(
            "recovery is configured (recovery.signal, restore_command); start the server to replay WAL:\n  pg_ctl -D {} start",
            report.datadir.display()
        );
    }
    Ok(Outcome::Ok.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_accepts_postgres_and_rfc3339_times() {
        let want: DateTime<Utc> = "2026-11-21T14:03:00Z".parse().unwrap();
        for s in [
            "2026-11-21 14:03:00+00",
            "2026-11-21 14:03:00+00:00",
            "2026-11-21T14:03:00Z",
            "2026-11-21 15:03:00+01",
            "2026-11-21T14:03:00.000+00:00",
        ] {
            assert_eq!(parse_time(s).unwrap(), want, "{s}");
        }
        assert!(parse_time("2026-11-21 14:03:00").is_err());
        assert!(parse_time("yesterday").is_err());
    }
}
