//! `lifeboat restore`

use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::Outcome;
use crate::kinds::postgres::restore::{self as postgres, Options, Plan, TargetState};
use crate::kinds::postgres::source::PgConn;
use crate::progress::human_bytes;
use crate::repository::BackupSelector;

#[derive(Debug, clap::Args)]
#[command(after_help = "Example (incident):\n  \
lifeboat restore --policy app.yaml --source main-db --identity lifeboat.key \\\n      \
--to postgres://postgres@10.0.0.9:5432/shop_restored --dry-run\n\n\
The target's password comes from PGPASSWORD (a password inside --to works but shows in `ps`).\n\
With --jobs 1 (default) the dump streams into pg_restore in one transaction: all or nothing.\n\
With --jobs N the dump is first decoded into --scratch-dir (needs its plaintext size in free space).\n\
After the restore, every table's row count is compared with the inventory taken at backup time.\n\n\
Point-in-time recovery (base backups + the WAL archive):\n  \
lifeboat restore --policy app.yaml --source main-db --identity lifeboat.key \\\n      \
--to-datadir /var/lib/postgresql/restore --until '2026-11-21 14:03:00+00' --start --port 5433\n  \
(also --until latest, --until latest-reachable, --until-lsn 0/5000060, --until-xid N, --until-name NAME)\n\
PostgreSQL --until TIME keeps every transaction committed at or before TIME (microseconds). A time\n\
at or after the newest archived commit restores everything archived and says so; a target behind\n\
a hole in the archive is refused (exit 4) with the target that restores everything before it.\n\
MySQL/MariaDB: --to mysql://root@host:3307/ loads the newest dump before the target, then replays the\n\
archived binlogs (--until TIME, --until-position binlog.000005:1234, --until-gtid 0-1-42, --until latest,\n\
--until latest-reachable). MySQL --until TIME is a whole second: every event stamped before it is\n\
replayed (binlog events carry whole seconds; a fraction is refused).\n\
The newest base backup consistent before the target is unpacked and checked with pg_verifybackup;\n\
recovery fetches WAL with `lifeboat wal-fetch`. Run it as the data directory's owner (postgres).\n\n\
Kubernetes (a `kubernetes` source): objects are applied with server-side apply in dependency order:\n  \
lifeboat restore --policy app.yaml --source cluster-config --identity lifeboat.key \\\n      \
--namespace-map prod:drill-2026-11 [--include deployments,configmaps] [--exclude secrets] [--dry-run]\n  \
lifeboat restore ... --to-dir ./export     # plain YAML files and apply.sh, for kubectl\n\
Without --namespace-map or --namespace, every namespace and the cluster-scoped objects are restored\n\
into their original names. Existing objects are left alone unless --overwrite. A table lists every\n\
object: created, unchanged, skipped (why) or FAILED (the server's message); exit 7 if any failed.\n\
A copy (--namespace-map) is made harmless unless --live, in the cluster and in --to-dir alike: no\n\
replicas, suspended Jobs, ClusterIP Services, no Ingresses/routes/autoscalers/bare Pods, budgets that\n\
allow every eviction. A target namespace that exists and holds objects is refused (exit 5, before\n\
anything is written) unless --into-existing; a namespace being deleted is refused always. In an\n\
existing namespace, objects that would select pods the restore does not make are skipped.\n\n\
A `command` source: the backup is piped into the source's restore command, run in a new or empty\n\
folder; a command that exits before reading all of it, or a damaged object, fails the restore:\n  \
lifeboat restore --policy app.yaml --source files --identity lifeboat.key --to-dir ./restored")]
pub struct Args {
    // Fields are read by the dump restore here and by `super::pitr`.
    #[command(flatten)]
    pub(crate) policy: super::PolicyArgs,
    /// The source whose backup to restore.
    #[arg(long)]
    pub(crate) source: String,
    /// Backup id (see `lifeboat list`) or `latest`.
    #[arg(long, default_value = "latest")]
    pub(crate) backup: BackupSelector,
    /// The age identity file (private key).
    #[arg(long)]
    pub(crate) identity: Option<PathBuf>,
    /// Target: postgres://user@host:port/dbname. Without a database name,
    /// the original name is used.
    #[arg(long, conflicts_with_all = ["to_datadir", "to_dir"])]
    pub(crate) to: Option<String>,
    /// Point-in-time recovery: unpack a base backup into this new (or
    /// empty) data directory and set it up to replay the WAL archive.
    #[arg(long, value_name = "DIR")]
    pub(crate) to_datadir: Option<PathBuf>,
    /// Recover to this time ('2026-11-21 14:03:00+00', RFC 3339), `latest`
    /// (the default: every archived change; refused when the archive has a
    /// hole) or `latest-reachable` (everything before the first hole).
    #[arg(long, group = "until_target")]
    pub(crate) until: Option<String>,
    /// MySQL/MariaDB: recover up to this binlog position (binlog.000005:1234;
    /// the event starting there is not applied).
    #[arg(long, group = "until_target", value_name = "FILE:POS")]
    pub(crate) until_position: Option<String>,
    /// MySQL/MariaDB: recover up to and including this GTID (MariaDB 0-1-42).
    #[arg(long, group = "until_target")]
    pub(crate) until_gtid: Option<String>,
    /// With --to-datadir: recover up to this WAL position (e.g. 0/5000060).
    #[arg(long, requires = "to_datadir", group = "until_target")]
    pub(crate) until_lsn: Option<String>,
    /// With --to-datadir: recover up to this transaction id's commit.
    #[arg(long, requires = "to_datadir", group = "until_target")]
    pub(crate) until_xid: Option<u64>,
    /// With --to-datadir: recover to a restore point (pg_create_restore_point).
    #[arg(long, requires = "to_datadir", group = "until_target")]
    pub(crate) until_name: Option<String>,
    /// With --to-datadir: start the server, wait until recovery has
    /// finished and it has promoted, and report the point reached.
    #[arg(long, requires = "to_datadir")]
    pub(crate) start: bool,
    /// With --to-datadir: the port the restored server listens on
    /// (written to postgresql.auto.conf).
    #[arg(long, requires = "to_datadir")]
    pub(crate) port: Option<u16>,
    /// With --to-datadir: turn WAL archiving off in the restored server
    /// (archive_mode = off). By default it keeps the original's settings
    /// and, once promoted, archives a new timeline into the same source,
    /// which later `--until latest` restores then follow: use this for
    /// copies and drills that must not do that.
    #[arg(long, requires = "to_datadir")]
    pub(crate) no_archive: bool,
    /// With --start: how long recovery may take.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub(crate) timeout: std::time::Duration,
    /// Which database of the backup (needed when it holds several).
    #[arg(long)]
    pub(crate) database: Option<String>,
    /// pg_restore parallel jobs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) jobs: u32,
    /// Replace objects that exist in a non-empty target (pg_restore --clean --if-exists).
    #[arg(long)]
    pub(crate) clean: bool,
    /// Also restore roles and tablespaces (pg_dumpall --globals-only) first.
    #[arg(long)]
    pub(crate) globals: bool,
    /// Do not restore ownership and privileges (for a target without the original roles).
    #[arg(long)]
    pub(crate) no_owner: bool,
    /// Folder for the decoded dump when --jobs > 1.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub(crate) scratch_dir: PathBuf,
    /// Show the plan and stop.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print the plan and the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,

    /// Kubernetes: restore namespace FROM into TO (repeatable, or
    /// comma-separated). Only mapped namespaces are restored, unless
    /// --namespace names more. A copy in another namespace is made
    /// harmless unless --live.
    #[arg(
        long,
        value_name = "FROM:TO",
        value_delimiter = ',',
        help_heading = "Kubernetes"
    )]
    pub(crate) namespace_map: Vec<String>,
    /// Kubernetes: restore only these namespaces of the backup.
    #[arg(
        long,
        value_name = "NS",
        value_delimiter = ',',
        help_heading = "Kubernetes"
    )]
    pub(crate) namespace: Vec<String>,
    /// Kubernetes: restore only these kinds (kind or plural name:
    /// deployments,configmaps).
    #[arg(
        long,
        value_name = "KINDS",
        value_delimiter = ',',
        help_heading = "Kubernetes"
    )]
    pub(crate) include: Vec<String>,
    /// Kubernetes: do not restore these kinds (secrets).
    #[arg(
        long,
        value_name = "KINDS",
        value_delimiter = ',',
        help_heading = "Kubernetes"
    )]
    pub(crate) exclude: Vec<String>,
    /// Kubernetes: replace objects that exist and differ (server-side
    /// apply, taking over fields). Default: leave them alone.
    #[arg(long, help_heading = "Kubernetes")]
    pub(crate) overwrite: bool,
    /// Kubernetes: restore a copy in another namespace as is (replicas,
    /// CronJobs, load balancers, Ingresses), not made harmless.
    #[arg(long, help_heading = "Kubernetes")]
    pub(crate) live: bool,
    /// Kubernetes: restore a copy into a target namespace that exists and
    /// holds objects (refused otherwise, exit 5). Objects that would
    /// select its pods (Services, NetworkPolicies, budgets, autoscalers)
    /// are still skipped.
    #[arg(long, help_heading = "Kubernetes")]
    pub(crate) into_existing: bool,
    /// Kubernetes: also restore cluster-scoped objects (CRDs, ClusterRoles...)
    /// when restoring some namespaces or into mapped ones.
    #[arg(long, help_heading = "Kubernetes")]
    pub(crate) cluster_resources: bool,
    /// Kubernetes: write the decrypted objects as YAML files into this new
    /// folder (with apply.sh for kubectl) instead of applying them. Command
    /// sources: the new or empty folder the restore command runs in.
    #[arg(long, value_name = "DIR", help_heading = "Kubernetes")]
    pub(crate) to_dir: Option<PathBuf>,
    /// Kubernetes: kubeconfig of the target cluster (default: the
    /// source's).
    #[arg(long, help_heading = "Kubernetes")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Kubernetes: kubeconfig context of the target cluster (default: the
    /// source's, then the current one).
    #[arg(long, help_heading = "Kubernetes")]
    pub(crate) context: Option<String>,
}

impl Args {
    /// A database restore's `--to`: Kubernetes flags are refused, `--to`
    /// is required.
    pub(crate) fn database_target(&self) -> Result<&str, super::UsageError> {
        if let Some(flag) = self.kubernetes_flags().first() {
            return Err(super::UsageError(format!(
                "{flag} is for Kubernetes sources; source '{}' is a database",
                self.source
            )));
        }
        self.to.as_deref().ok_or_else(|| {
            super::UsageError(
                "say where to restore: --to postgres://user@host:port/db (or mysql://...), or --to-datadir DIR for point-in-time recovery".into(),
            )
        })
    }

    /// The flags given other than the ones every restore takes (--policy,
    /// --source, --backup, --identity, --dry-run, --json) and `allowed`,
    /// for a kind to refuse those that do not apply to it.
    pub(crate) fn flags_given_besides(&self, allowed: &[&str]) -> Vec<&'static str> {
        let mut given: Vec<&'static str> = [
            ("--to", self.to.is_some()),
            ("--to-datadir", self.to_datadir.is_some()),
            ("--until", self.until.is_some()),
            ("--until-position", self.until_position.is_some()),
            ("--until-gtid", self.until_gtid.is_some()),
            ("--until-lsn", self.until_lsn.is_some()),
            ("--until-xid", self.until_xid.is_some()),
            ("--until-name", self.until_name.is_some()),
            ("--start", self.start),
            ("--port", self.port.is_some()),
            ("--no-archive", self.no_archive),
            ("--database", self.database.is_some()),
            ("--jobs", self.jobs != 1),
            ("--clean", self.clean),
            ("--globals", self.globals),
            ("--no-owner", self.no_owner),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(f, _)| f)
        .collect();
        given.extend(self.kubernetes_flags());
        given.retain(|f| !allowed.contains(f));
        given
    }

    /// The Kubernetes-only flags given, for refusing them elsewhere.
    pub(crate) fn kubernetes_flags(&self) -> Vec<&'static str> {
        [
            ("--namespace-map", !self.namespace_map.is_empty()),
            ("--namespace", !self.namespace.is_empty()),
            ("--include", !self.include.is_empty()),
            ("--exclude", !self.exclude.is_empty()),
            ("--overwrite", self.overwrite),
            ("--live", self.live),
            ("--into-existing", self.into_existing),
            ("--cluster-resources", self.cluster_resources),
            ("--to-dir", self.to_dir.is_some()),
            ("--kubeconfig", self.kubeconfig.is_some()),
            ("--context", self.context.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(f, _)| f)
        .collect()
    }
}

fn print_plan(plan: &Plan) {
    println!("Restore plan");
    println!(
        "  backup     {} of source {} (started {})",
        plan.backup,
        plan.source,
        plan.backup_started_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    println!("  database   {}", plan.database);
    println!(
        "  artifacts  {} ({} stored, {} plaintext)",
        plan.dump.key,
        human_bytes(plan.dump.stored.size),
        human_bytes(plan.dump.plaintext.size)
    );
    println!("             {}", plan.inventory.key);
    if let Some(g) = &plan.globals {
        println!("             {}", g.key);
    }
    let state = match &plan.target_state {
        TargetState::Missing => "does not exist, will be created".to_string(),
        TargetState::Empty => "exists and is empty".to_string(),
        TargetState::NotEmpty { objects } => format!("exists with {objects} objects"),
    };
    println!("  target     {} ({state})", plan.target);
    println!("  steps");
    for (i, s) in plan.steps.iter().enumerate() {
        println!("    {}. {s}", i + 1);
    }
}

pub async fn run(args: Args, cancel: &CancellationToken) -> anyhow::Result<ExitCode> {
    let policy = args.policy.load()?;
    let source = policy.source(&args.source)?;
    source.kind().imp().restore(args, &policy, cancel).await
}

/// Refuses `--to-datadir` for a source that is not PostgreSQL.
pub(crate) fn refuse_datadir(args: &Args) -> Result<(), super::UsageError> {
    match args.to_datadir {
        Some(_) => Err(super::UsageError(format!(
            "--to-datadir restores PostgreSQL base backups; source '{}' is not a PostgreSQL source",
            args.source
        ))),
        None => Ok(()),
    }
}

/// `lifeboat restore` of a PostgreSQL source: a dump into a server
/// (`--to`), or a base backup and the WAL archive into a data directory
/// (`--to-datadir`, [`super::pitr`]).
pub(crate) async fn postgres(
    args: Args,
    policy: &crate::policy::Policy,
    pg: &crate::kinds::postgres::config::PostgresSource,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    if args.to_datadir.is_some() {
        return super::pitr::run(args).await;
    }
    let to = args.database_target()?;
    let bin_dir = pg.bin_dir.clone();
    if args.until.is_some() || args.until_position.is_some() || args.until_gtid.is_some() {
        return Err(super::UsageError(
            "point-in-time recovery of PostgreSQL restores a base backup into a data directory: add --to-datadir DIR (instead of --to); --until-position and --until-gtid are for MySQL/MariaDB".into(),
        )
        .into());
    }
    let (target, target_database, password_in_url) =
        PgConn::from_url(to).map_err(super::UsageError)?;
    if password_in_url {
        tracing::warn!("the --to URL contains a password, which other users can see in `ps`; prefer PGPASSWORD");
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
            Some(crate::repository::ManifestKind::PostgresDump),
        )
        .await?;
    if manifest.physical.is_some() {
        return Err(super::UsageError(format!(
            "backup {} is a physical base backup; restore it with --to-datadir DIR (point-in-time recovery)",
            manifest.id
        ))
        .into());
    }
    let opts = Options {
        database: args.database.clone(),
        target,
        target_database,
        jobs: args.jobs,
        clean: args.clean,
        globals: args.globals,
        no_owner: args.no_owner,
        scratch_dir: args.scratch_dir.clone(),
        bin_dir,
    };
    let plan = postgres::plan(&manifest, &opts).await?;
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
    let identities = identities.expect("loaded unless dry run");
    // On SIGINT/SIGTERM the restore is dropped at once, which kills
    // pg_restore; say what that leaves behind.
    let report = tokio::select! {
        r = postgres::execute(&repo, plan, &opts, identities) => r?,
        _ = cancel.cancelled() => {
            return Err(anyhow::anyhow!(if opts.jobs > 1 {
                "restore stopped: a parallel restore is not atomic; drop the target database and restore again"
            } else {
                "restore stopped: pg_restore's single transaction was rolled back; the target holds none of the dump"
            }));
        }
    };
    let inv = &report.inventory;
    if args.json {
        super::print_json(&report);
    } else {
        println!(
            "restored {} into {} in {:.1}s",
            report.plan.database, report.plan.target, report.seconds
        );
        if report.globals_warnings > 0 {
            println!(
                "globals: {} statements failed (usually roles that already exist; see the log)",
                report.globals_warnings
            );
        }
        print_inventory(inv, true);
    }
    if inv.passed() {
        Ok(Outcome::Ok.into())
    } else {
        eprintln!("error: the restored database differs from the backup's inventory");
        Ok(Outcome::Integrity.into())
    }
}

/// Prints the comparison with the backup's inventory (`large_objects`:
/// PostgreSQL also counts large objects).
pub(super) fn print_inventory(inv: &crate::restore::InventoryCheck, large_objects: bool) {
    if inv.passed() {
        if large_objects {
            println!(
                "inventory: {} tables, {} rows and {} large objects, all match the backup",
                inv.tables_checked, inv.rows_expected, inv.large_objects_expected
            );
        } else {
            println!(
                "inventory: {} tables and {} rows, all match the backup",
                inv.tables_checked, inv.rows_expected
            );
        }
        return;
    }
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
    if inv.large_objects_expected != inv.large_objects_found {
        println!(
            "  large objects: expected {}, found {}",
            inv.large_objects_expected, inv.large_objects_found
        );
    }
}
