//! `lifeboat restore` of a MySQL/MariaDB source.

use std::process::ExitCode;

use super::restore::Args;
use super::{Outcome, UsageError};
use crate::kinds::mysql::config::MysqlSource;
use crate::kinds::mysql::restore::{self as mysql, MyPlan, MyTarget, ReplayPlan};
use crate::policy::Policy;
use crate::progress::human_bytes;

fn until_target(args: &Args) -> Result<Option<MyTarget>, UsageError> {
    if args.until_lsn.is_some() || args.until_xid.is_some() || args.until_name.is_some() {
        return Err(UsageError(
            "--until-lsn, --until-xid and --until-name are PostgreSQL targets; for MySQL/MariaDB use --until TIME, --until-position FILE:POS or --until-gtid GTID".into(),
        ));
    }
    if let Some(p) = &args.until_position {
        let (file, pos) = p
            .rsplit_once(':')
            .and_then(|(f, n)| Some((f.to_string(), n.parse::<u64>().ok()?)))
            .ok_or_else(|| {
                UsageError(format!(
                    "--until-position '{p}' is not FILE:POSITION, e.g. binlog.000005:1234"
                ))
            })?;
        return Ok(Some(MyTarget::Position {
            file,
            position: pos,
        }));
    }
    if let Some(g) = &args.until_gtid {
        return Ok(Some(MyTarget::Gtid(g.clone())));
    }
    match args.until.as_deref() {
        None => Ok(None),
        Some("latest") => Ok(Some(MyTarget::Latest)),
        Some("latest-reachable") => Ok(Some(MyTarget::LatestReachable)),
        Some(t) => super::pitr::parse_time(t)
            .map(|t| Some(MyTarget::Time(t)))
            .map_err(UsageError),
    }
}

fn print_replay(r: &ReplayPlan) {
    println!(
        "  replay     binlogs from {}:{} through {} ({} file(s){})",
        r.from.file,
        r.from.position,
        r.files.last().map_or("-", |f| f.0.as_str()),
        r.files.len(),
        if r.files.last().is_some_and(|f| !f.1) {
            ", the last one a partial copy of the file in progress"
        } else {
            ""
        }
    );
    if let Some(e) = &r.end {
        println!(
            "  archive    ends at {}{}",
            e.describe(),
            e.exact_until()
                .map(|t| format!(
                    "; exact up to --until '{}'",
                    t.format("%Y-%m-%d %H:%M:%S+00")
                ))
                .unwrap_or_default()
        );
    }
    println!("  until      {}", r.target);
    if let Some(n) = &r.notice {
        println!("  note       {n}");
    }
    for w in &r.warnings {
        println!("  warning    {w}");
    }
}

fn print_plan(plan: &MyPlan) {
    println!("Restore plan");
    println!(
        "  backup     {} of source {} (started {})",
        plan.backup,
        plan.source,
        plan.backup_started_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    if let Some(b) = &plan.binlog {
        println!(
            "  binlog     consistent at {}:{} (GTID {})",
            b.file,
            b.position,
            if b.gtid.is_empty() { "-" } else { &b.gtid }
        );
    }
    println!(
        "  artifacts  {} ({} stored, {} plaintext)",
        plan.dump.key,
        human_bytes(plan.dump.stored.size),
        human_bytes(plan.dump.plaintext.size)
    );
    println!("  databases  {}", plan.databases.join(", "));
    println!(
        "  target     {}{}",
        plan.target,
        if plan.existing.is_empty() {
            " (none of the databases exist with tables)".to_string()
        } else {
            format!(
                " (--clean drops and replaces: {})",
                plan.existing.join(", ")
            )
        }
    );
}

pub async fn run(args: Args, policy: &Policy, my: &MysqlSource) -> anyhow::Result<ExitCode> {
    let to = args.to.as_deref().expect("checked by restore::run");
    let (target, password_in_url) =
        mysql::parse_url(to, std::env::var("MYSQL_PWD").ok()).map_err(UsageError)?;
    if password_in_url {
        tracing::warn!(
            "the --to URL contains a password, which other users can see in `ps`; prefer MYSQL_PWD"
        );
    }
    if args.database.is_some() || args.jobs > 1 || args.globals || args.no_owner {
        return Err(UsageError(
            "--database, --jobs, --globals and --no-owner are for PostgreSQL dumps; a MySQL dump restores all its databases with their users' grants as dumped".into(),
        )
        .into());
    }
    // A dry run reads the archive's end too when it is given a key.
    let identities = if args.dry_run && args.identity.is_none() {
        None
    } else {
        Some(super::identities(&args.identity, "restore")?)
    };
    let until = until_target(&args)?;
    let repo = super::open(policy, false).await?;
    let (manifest, replay) = match &until {
        Some(t) => {
            let backup = match &args.backup {
                crate::repository::BackupSelector::Latest => None,
                crate::repository::BackupSelector::Id(id) => Some(id.as_str()),
            };
            let reader = identities
                .as_ref()
                .map(|ids| mysql::EndReader { identities: ids });
            let (m, r) =
                mysql::plan_pitr(&repo, policy.name.as_str(), &args.source, t, backup, reader)
                    .await?;
            (m, Some(r))
        }
        None => (
            repo.find_backup_of_kind(
                policy.name.as_str(),
                &args.source,
                &args.backup,
                Some(crate::repository::ManifestKind::MysqlDump),
            )
            .await?,
            None,
        ),
    };
    let plan = mysql::plan(&manifest, &target, args.clean).await?;
    if args.dry_run {
        if args.json {
            super::print_json(
                &serde_json::json!({ "dry_run": true, "plan": plan, "replay": replay }),
            );
        } else {
            print_plan(&plan);
            if let Some(r) = &replay {
                print_replay(r);
            }
            println!("dry run: nothing was changed");
        }
        return Ok(Outcome::Ok.into());
    }
    if !args.json {
        print_plan(&plan);
        if let Some(r) = &replay {
            print_replay(r);
        }
    }
    let identities = identities.expect("loaded unless dry run");
    let report = mysql::execute(
        &repo,
        plan,
        &target,
        identities.clone(),
        my.bin_dir.as_deref(),
    )
    .await?;
    // The inventory is checked at the dump's own point, before the replay.
    if let Some(r) = &replay {
        if !report.inventory.passed() {
            return Err(anyhow::anyhow!(
                "the loaded dump differs from its inventory; the binlogs were not replayed"
            ));
        }
        let newest = mysql::replay(&repo, r, &target, identities, my.bin_dir.as_deref()).await?;
        if !args.json {
            println!(
                "replayed {} binlog file(s) up to {}; newest event replayed stamped {}",
                r.files.len(),
                r.target,
                newest
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_else(|| "none".into())
            );
            if let Some(n) = &r.notice {
                println!("note: {n}");
            }
        }
    }
    let inv = &report.inventory;
    if args.json {
        super::print_json(&report);
    } else {
        println!(
            "restored {} into {} in {:.1}s",
            report.plan.databases.join(", "),
            report.plan.target,
            report.seconds
        );
        super::restore::print_inventory(inv, false);
    }
    if inv.passed() {
        Ok(Outcome::Ok.into())
    } else {
        eprintln!("error: the restored databases differ from the backup's inventory");
        Ok(Outcome::Integrity.into())
    }
}
