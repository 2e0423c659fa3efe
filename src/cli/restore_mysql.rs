//! `lifeboat restore` of a MySQL/MariaDB source.

use std::process::ExitCode;

use super::restore::Args;
use super::{Outcome, UsageError};
use crate::policy::{MysqlSource, Policy};
use crate::progress::human_bytes;
use crate::restore::mysql::{self, MyPlan};

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
    let to = args.to.as_deref().expect("clap requires --to");
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
    let identities = if args.dry_run {
        None
    } else {
        Some(super::identities(&args.identity, "restore")?)
    };
    let repo = super::open(policy, false).await?;
    let manifest = repo
        .find_backup_of_kind(
            policy.name.as_str(),
            &args.source,
            &args.backup,
            Some("mysql-dump"),
        )
        .await?;
    let plan = mysql::plan(&manifest, &target, args.clean).await?;
    if args.dry_run {
        if args.json {
            super::print_json(&serde_json::json!({ "dry_run": true, "plan": plan }));
        } else {
            print_plan(&plan);
            println!("dry run: nothing was changed");
        }
        return Ok(Outcome::Ok.into());
    }
    if !args.json {
        print_plan(&plan);
    }
    let report = mysql::execute(
        &repo,
        plan,
        &target,
        identities.expect("loaded unless dry run"),
        my.bin_dir.as_deref(),
    )
    .await?;
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
        if inv.passed() {
            println!(
                "inventory: {} tables and {} rows, all match the backup",
                inv.tables_checked, inv.rows_expected
            );
        } else {
            println!(
                "inventory: MISMATCH in {} of {} tables",
                inv.mismatches.len(),
                inv.tables_checked
            );
            for m in &inv.mismatches {
                match m.found {
                    Some(f) => println!("  {}: expected {} rows, found {f}", m.table, m.expected),
                    None => println!("  {}: expected {} rows, table missing", m.table, m.expected),
                }
            }
        }
    }
    if inv.passed() {
        Ok(Outcome::Ok.into())
    } else {
        eprintln!("error: the restored databases differ from the backup's inventory");
        Ok(Outcome::Integrity.into())
    }
}
