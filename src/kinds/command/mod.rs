//! The `command` kind: any tool that writes a backup to its standard output
//! (`tar -cf - DIR`, `sqlite3 DB .dump`, `redis-cli --rdb -`, `etcdctl
//! snapshot save /dev/stdout`), restored by a command that reads it from its
//! standard input. lifeboat streams the output through the pipeline
//! (compression, age, hashes) into one artifact, and back.
//!
//! Everything the kind knows is in this folder: its policy block (here),
//! the backup (`backup.rs`), the restore into a folder (`restore.rs`) and
//! the drill (`drill.rs`). It is registered by one line in
//! `kinds/mod.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::outcome::{Classify, Outcome};
use crate::process::ProcessError;

mod backup;
mod drill;
pub(crate) mod restore;

pub use restore::{restore_into, Restored};

/// The artifact's name and kind in the manifest.
const ARTIFACT: &str = "output";
const ARTIFACT_KIND: &str = "command-output";

/// A `command:` block: the programs and their arguments, run without a
/// shell (give `[sh, -c, "..."]` for one).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSource {
    /// Writes the backup to its standard output and exits 0
    /// (`[tar, -C, /srv/data, -cf, -, .]`).
    pub backup: Vec<String>,
    /// Reads a backup from its standard input and restores it; it runs in
    /// the folder restored into (`[tar, -xf, -]`).
    pub restore: Vec<String>,
    /// A drill's check of what the restore command made: runs in the same
    /// folder afterwards; exit 0 passes (`[sqlite3, app.db, "PRAGMA
    /// integrity_check"]`).
    #[serde(default)]
    pub check: Option<Vec<String>>,
    /// The folder the backup command runs in. Default: the policy file's.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Environment for the three commands, besides lifeboat's own
    /// (`LIFEBOAT_SOURCE`, `LIFEBOAT_BACKUP_ID`, `LIFEBOAT_RESTORE_DIR`).
    /// lifeboat never logs it; still, give secrets as files the command
    /// reads.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl CommandSource {
    /// The program of a command line, for messages and `spawn`.
    fn program(argv: &[String]) -> PathBuf {
        PathBuf::from(argv.first().map(String::as_str).unwrap_or_default())
    }
}

/// Errors of the command kind.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the backup command of source '{source_name}' failed: {error}; run it by hand to see why (its output must be the backup, its exit status 0)")]
    Backup {
        source_name: String,
        error: ProcessError,
    },
    #[error("the backup command of source '{source_name}' wrote nothing to its standard output; a backup of nothing is refused. Check that the command writes the backup to stdout (e.g. `tar -cf - DIR`, not `tar -cf FILE DIR`)")]
    Empty { source_name: String },
    #[error("the restore command failed restoring backup {backup} into {dir}: {error}. What it wrote is left in {dir} for inspection; restore into a new folder after fixing the command")]
    Restore {
        backup: String,
        dir: String,
        error: ProcessError,
    },
    #[error("the restore command exited before it had read the whole of backup {backup} ({read} of {size} bytes), so {dir} holds at most part of it; a restore command must read its standard input to the end")]
    StoppedReading {
        backup: String,
        dir: String,
        read: u64,
        size: u64,
    },
    #[error("reading backup {backup} failed: {error}. {dir} holds what the restore command made of the part it got, not the backup: delete it before restoring again")]
    Incomplete {
        backup: String,
        dir: String,
        error: Box<crate::pipeline::PipelineError>,
    },
    #[error("{dir} is not empty; a restore goes into a new or empty folder so nothing of the backup mixes with what is there. Give another --to-dir")]
    NotEmpty { dir: String },
    #[error("cannot use {dir}: {error}")]
    Folder { dir: String, error: std::io::Error },
    #[error(
        "backup {backup} has no `{ARTIFACT}` artifact; it was not written by a command source"
    )]
    NoOutput { backup: String },
}

impl Classify for CommandError {
    fn outcome(&self) -> Outcome {
        match self {
            Self::Backup { .. }
            | Self::Empty { .. }
            | Self::Restore { .. }
            | Self::StoppedReading { .. }
            | Self::Folder { .. } => Outcome::Failure,
            Self::Incomplete { error, .. } => error.outcome(),
            Self::NotEmpty { .. } => Outcome::Refused,
            Self::NoOutput { .. } => Outcome::Integrity,
        }
    }
}

/// The program of a command (an empty list is refused at load).
fn validate_argv(what: &str, argv: &[String]) -> Result<(), String> {
    match argv.first() {
        None => Err(format!(
            "`command.{what}` is empty; give the program and its arguments as a list, e.g. [tar, -cf, -, /srv/data]"
        )),
        Some(p) if p.trim().is_empty() => Err(format!(
            "`command.{what}` starts with an empty program name"
        )),
        Some(_) => Ok(()),
    }
}

impl crate::kinds::Kind for CommandSource {
    fn name(&self) -> &'static str {
        "command"
    }

    fn validate(&self) -> Result<(), String> {
        validate_argv("backup", &self.backup)?;
        validate_argv("restore", &self.restore)?;
        if let Some(check) = &self.check {
            validate_argv("check", check)?;
        }
        Ok(())
    }

    fn validate_drill_check(&self, _check: &crate::policy::DrillCheck) -> Result<(), String> {
        Err("a command source is checked in drills by its own `check:` command (run in the restored folder); remove this entry and give the source a `check:`".into())
    }

    fn resolve_paths(&mut self, abs: &mut dyn FnMut(&mut PathBuf)) {
        abs(self.working_dir.get_or_insert_with(|| PathBuf::from(".")));
    }

    fn default_backup(&self) -> crate::backup::BackupKind {
        crate::backup::BackupKind::Dump
    }

    fn backup<'a>(
        &'a self,
        run: &'a mut crate::backup::Run<'_>,
        kind: crate::backup::BackupKind,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> crate::kinds::BoxFuture<'a, Result<crate::repository::Manifest, crate::backup::BackupError>>
    {
        Box::pin(backup::backup(self, run, kind, started_at))
    }

    fn drilled(&self, _kind: Option<crate::drill::Kind>) -> Vec<crate::repository::ManifestKind> {
        vec![crate::repository::ManifestKind::CommandOutput]
    }

    fn drill<'a>(
        &'a self,
        drill: &'a crate::drill::Drill<'a>,
        checks: &'a mut crate::drill::Checks,
    ) -> crate::kinds::BoxFuture<'a, Result<crate::drill::Restored, crate::drill::DrillError>> {
        Box::pin(drill::drill(self, drill, checks))
    }

    fn restore<'a>(
        &'a self,
        args: crate::cli::restore::Args,
        policy: &'a crate::policy::Policy,
        cancel: &'a tokio_util::sync::CancellationToken,
    ) -> crate::kinds::LocalBoxFuture<'a, anyhow::Result<std::process::ExitCode>> {
        Box::pin(restore::cli(self, args, policy, cancel))
    }

    fn continuous_archive(&self) -> Option<&'static str> {
        None
    }

    fn archive_continuously<'a>(
        &'a self,
        _run: crate::kinds::ArchiveRun<'a>,
    ) -> crate::kinds::BoxFuture<'a, Result<(), crate::kinds::Failure>> {
        Box::pin(async { Ok(()) })
    }

    fn archive_status<'a>(
        &'a self,
        _query: crate::kinds::StatusQuery<'a>,
    ) -> crate::kinds::BoxFuture<
        'a,
        Result<Option<crate::status::ArchiveStatus>, crate::repository::RepositoryError>,
    > {
        Box::pin(async { Ok(None) })
    }

    fn recoverable_end<'a>(
        &'a self,
        _query: crate::kinds::StatusQuery<'a>,
        _listing: &'a [crate::repository::Manifest],
        _identities: &'a std::sync::Arc<crate::keys::Identities>,
    ) -> crate::kinds::BoxFuture<'a, Option<crate::status::RecoverableEnd>> {
        Box::pin(async { None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Kind;

    fn source(backup: &[&str], restore: &[&str], check: Option<&[&str]>) -> CommandSource {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        CommandSource {
            backup: v(backup),
            restore: v(restore),
            check: check.map(v),
            working_dir: None,
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn empty_commands_are_refused_with_an_example() {
        let e = source(&[], &["cat"], None).validate().unwrap_err();
        assert!(
            e.contains("`command.backup` is empty") && e.contains("[tar, -cf, -, /srv/data]"),
            "{e}"
        );
        let e = source(&["tar"], &[" "], None).validate().unwrap_err();
        assert!(
            e.contains("`command.restore` starts with an empty program name"),
            "{e}"
        );
        let e = source(&["tar"], &["cat"], Some(&[]))
            .validate()
            .unwrap_err();
        assert!(e.contains("`command.check` is empty"), "{e}");
        assert_eq!(
            source(&["tar"], &["cat"], Some(&["true"])).validate(),
            Ok(())
        );
    }

    #[test]
    fn the_working_dir_defaults_to_the_policy_files_folder() {
        let mut s = source(&["tar"], &["cat"], None);
        s.resolve_paths(&mut |p| *p = std::path::Path::new("/etc/lifeboat").join(&*p));
        assert_eq!(s.working_dir, Some(PathBuf::from("/etc/lifeboat/.")));
    }

    #[test]
    fn errors_classify_refusals_apart_from_failures() {
        let not_empty = CommandError::NotEmpty { dir: "/x".into() };
        assert_eq!(not_empty.outcome(), Outcome::Refused);
        let no_output = CommandError::NoOutput { backup: "b".into() };
        assert_eq!(no_output.outcome(), Outcome::Integrity);
        let wrapped = crate::kinds::Failure::new(not_empty);
        assert_eq!(
            crate::outcome::Classify::outcome(&wrapped),
            Outcome::Refused
        );
        assert!(wrapped.to_string().contains("Give another --to-dir"));
    }
}
