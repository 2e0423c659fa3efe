//! The command line: argument parsing and output only. Each subcommand has
//! its own file; the work happens in the library modules.

mod backup;
mod binlog;
mod daemon;
mod drill;
mod keygen;
mod list;
mod pitr;
mod policy;
mod prune;
pub(crate) mod restore;
pub(crate) mod restore_kube;
pub(crate) mod restore_mysql;
mod verify;
mod wal;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::storage::Background;

use crate::repository::Repository;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (server, storage or tool error; the message says which)
  2  invalid usage or policy (the message names the file and line)
  3  integrity problem: an object is corrupt or a restored table's row count differs from the inventory
  4  not found: a backup or object is missing, or the WAL archive cannot reach the recovery target
  5  refused: the restore target is not empty (see --clean), or another lifeboat holds the source's lock
  6  wrong key: the identity cannot decrypt the backup
  7  partly restored: a Kubernetes restore finished, but the server rejected some objects (the table names them)
  255  wal-fetch only: a failure other than 'not archived', so PostgreSQL stops recovery
  130/143  interrupted by SIGINT/SIGTERM (cleaned up: nothing half-written is listed)

Logs go to stderr (RUST_LOG=debug for more), results to stdout.";

/// Backups you can trust during an incident: PostgreSQL and MySQL/MariaDB
/// dumps, base backups with a continuous WAL or binlog archive for
/// point-in-time recovery, and Kubernetes configuration exports; streamed,
/// compressed, age-encrypted, verified.
#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Log format on stderr: text for people, json for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LIFEBOAT_LOG_FORMAT")]
    log_format: LogFormat,
    /// Only log warnings and errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an age identity (private key) and print its recipient
    /// (public key) for the policy's encryption.recipients.
    Keygen(keygen::Args),
    /// Back up every source of a policy (or the ones named with --source).
    Backup(backup::Args),
    /// List the complete backups in a policy's repository.
    List(list::Args),
    /// Check stored backups: sizes and hashes without a key; with
    /// --read-data --identity, decrypt and check the plaintext too.
    Verify(verify::Args),
    /// Restore a backup: a PostgreSQL or MySQL database, a point in time,
    /// or Kubernetes objects. Shows the plan first; --dry-run stops there.
    Restore(Box<restore::Args>),
    /// Apply the policy's retention: delete old backups, the WAL and
    /// binlogs no kept backup needs, and leftovers of crashed runs.
    Prune(prune::Args),
    /// Prove a backup restores: restore it into a throwaway server, check
    /// row counts, hashes and the policy's checks, measure RTO and RPO,
    /// report, and remove the scratch server.
    Drill(drill::Args),
    /// Archive one WAL file (PostgreSQL's archive_command).
    WalPush(wal::PushArgs),
    /// Fetch one WAL file from the archive (PostgreSQL's restore_command).
    WalFetch(wal::FetchArgs),
    /// Check the WAL archive: gaps, timelines, and what point-in-time
    /// recovery can reach from each base backup.
    WalVerify(wal::VerifyArgs),
    /// Archive a MySQL/MariaDB server's binlogs continuously (runs until
    /// stopped).
    BinlogArchive(binlog::ArchiveArgs),
    /// Check the binlog archive: files, gaps, and what each dump can
    /// recover to.
    BinlogVerify(binlog::VerifyArgs),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Run as a daemon: every policy of a folder on its schedule, binlog
    /// archivers, /metrics, /healthz and /readyz.
    Run(daemon::RunArgs),
    /// Show each source's newest backup, last attempt, archive lag and the
    /// next scheduled run.
    Status(daemon::StatusArgs),
    /// Work with the local catalog (backup index and run history).
    #[command(subcommand)]
    Catalog(daemon::CatalogCommand),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if let Command::Run(args) = cli.command {
        // The daemon handles its signals itself (SIGHUP reloads; SIGTERM
        // lets running backups finish until a deadline).
        let result = runtime.block_on(daemon::run(args));
        runtime.shutdown_timeout(std::time::Duration::from_secs(10));
        return match result {
            Ok(code) => code,
            Err(err) => {
                eprintln!("error: {}", render(&err));
                ExitCode::from(exit_code(&err))
            }
        };
    }
    // Fired on SIGINT/SIGTERM; the commands with cleanup to do watch it.
    let cancel = CancellationToken::new();
    // Aborts of uploads dropped midway, awaited before the process exits.
    let background = Background::default();
    let result = runtime.block_on(async {
        let work = async {
            match cli.command {
                Command::Keygen(a) => keygen::run(a).await,
                Command::Backup(a) => backup::run(a, &cancel, &background).await,
                Command::List(a) => list::run(a).await,
                Command::Verify(a) => verify::run(a).await,
                Command::Restore(a) => restore::run(*a, &cancel).await,
                Command::Prune(a) => prune::run(a, &cancel).await,
                Command::Drill(a) => drill::run(a, &cancel).await,
                Command::Policy(c) => policy::run(c).await,
                Command::WalPush(a) => wal::push(a, &background).await,
                Command::WalFetch(a) => wal::fetch(a).await,
                Command::WalVerify(a) => wal::verify(a).await,
                Command::BinlogArchive(a) => binlog::archive(a, &cancel, &background).await,
                Command::BinlogVerify(a) => binlog::verify(a).await,
                Command::Status(a) => daemon::status(a).await,
                Command::Catalog(c) => daemon::catalog(c).await,
                Command::Run(_) => unreachable!("handled above"),
            }
        };
        // On SIGINT/SIGTERM running work is asked to stop and given time
        // to clean up (a backup deletes what it wrote); then it is dropped,
        // which kills child processes (pg_restore's transaction rolls back),
        // removes scratch files and aborts multipart uploads.
        let mut work = Box::pin(work);
        let interrupted = tokio::select! {
            r = &mut work => return r,
            signal = shutdown_signal() => signal,
        };
        tracing::warn!("{interrupted} received: stopping (a second signal exits at once)");
        cancel.cancel();
        let finished = tokio::select! {
            r = tokio::time::timeout(std::time::Duration::from_secs(30), &mut work) => r.ok(),
            second = shutdown_signal() => {
                eprintln!("error: {second} again: exiting without cleanup");
                std::process::exit(if second == "SIGINT" { 130 } else { 143 });
            }
        };
        drop(work);
        background.finish(std::time::Duration::from_secs(10)).await;
        match finished {
            // It finished within the grace period: its own outcome stands.
            Some(Ok(code)) => Ok(code),
            Some(Err(e)) => Err(e.context(Interrupted(interrupted))),
            None => Err(Interrupted(interrupted).into()),
        }
    });
    // Blocking pipeline threads finish once their child and channel close.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", render(&err));
            ExitCode::from(exit_code(&err))
        }
    }
}

fn init_logging(format: LogFormat, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

pub use crate::outcome::Outcome;

/// Maps an error to its exit code: 128 + the signal for an interrupted
/// run, else the outcome of the first cause that classifies itself.
fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(Interrupted(name)) = err.downcast_ref::<Interrupted>() {
        // The shell convention: 128 + signal number.
        return if *name == "SIGINT" { 130 } else { 143 };
    }
    crate::outcome::of_chain(err.chain()) as u8
}

/// The run was stopped by a signal.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {0}: uploads in progress were aborted and child processes stopped; nothing half-written is listed as a backup")]
pub struct Interrupted(&'static str);

/// Resolves with the signal's name on SIGINT or SIGTERM.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// A command-line mistake the parser cannot see (e.g. a missing identity).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl crate::outcome::Classify for UsageError {
    fn outcome(&self) -> crate::outcome::Outcome {
        crate::outcome::Outcome::Usage
    }
}

/// `--policy FILE`, flattened into every subcommand that works on one
/// policy file.
#[derive(Debug, clap::Args)]
pub(crate) struct PolicyArgs {
    /// The policy file.
    #[arg(long, env = "LIFEBOAT_POLICY")]
    pub(crate) policy: PathBuf,
}

impl PolicyArgs {
    /// Reads and validates the policy file.
    pub(crate) fn load(&self) -> Result<crate::policy::Policy, crate::policy::PolicyError> {
        crate::policy::Policy::load(&self.policy)
    }
}

/// Opens a policy's repository after the storage healthcheck; `create`
/// (for backups) makes a new repository where there is none. For commands
/// that upload nothing (read, delete, put small objects): no writer of
/// theirs is ever dropped mid-upload.
pub(crate) async fn open(
    policy: &crate::policy::Policy,
    create: bool,
) -> anyhow::Result<Repository> {
    open_in(policy, create, &Background::default()).await
}

/// [`open`] for commands that upload: the aborts of uploads dropped midway
/// (a cancelled backup) go to `background`, which `main` awaits.
pub(crate) async fn open_in(
    policy: &crate::policy::Policy,
    create: bool,
    background: &Background,
) -> anyhow::Result<Repository> {
    let store = crate::storage::open(&policy.repository, background).await?;
    store.healthcheck(create).await?;
    let repo = Repository::new(Arc::clone(&store));
    repo.open(create).await?;
    Ok(repo)
}

/// Loads an identity file named on the command line.
pub(crate) fn identities(
    path: &Option<PathBuf>,
    why: &str,
) -> anyhow::Result<Arc<crate::keys::Identities>> {
    match path {
        Some(p) => Ok(Arc::new(crate::keys::Identities::load(p)?)),
        None => Err(UsageError(format!(
            "{why} needs the age identity: pass --identity FILE (the private key from `lifeboat keygen`)"
        ))
        .into()),
    }
}

/// An error and its causes on one line, each cause once: many messages
/// already end with their cause ("cannot read identity file K: No such
/// file or directory"), which anyhow's `{:#}` would print a second time.
pub(crate) fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// Prints a value as pretty JSON on stdout.
/// The outcome of a command that works on several sources: success, or
/// the first source's error (its exit code) with the others printed.
pub(crate) fn first_failure(failed: Vec<anyhow::Error>) -> anyhow::Result<ExitCode> {
    let mut failed = failed.into_iter();
    match failed.next() {
        None => Ok(Outcome::Ok.into()),
        Some(first) => {
            for other in failed {
                eprintln!("error: {}", render(&other));
            }
            Err(first)
        }
    }
}

pub(crate) fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("output serializes")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_prints_each_cause_once() {
        let key = crate::keys::KeyError::Read {
            path: "/nonexistent/key".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let err = anyhow::Error::new(key).context("restore needs the key");
        let text = render(&err);
        assert_eq!(text.matches("entity not found").count(), 1, "{text}");
        assert!(
            text.starts_with("restore needs the key: cannot read identity file /nonexistent/key"),
            "{text}"
        );
    }
}
