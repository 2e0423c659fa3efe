//! The one place that lists the source kinds, and the trait through which
//! the shared machinery (backup, restore, drill, status, policy loading)
//! reaches them.
//!
//! A kind is one line in [`kinds!`] below: the key of its policy block, its
//! variant, its configuration type (which implements [`Kind`]) and the
//! manifest kinds its backups are stored as. The macro makes the policy's
//! [`Source`] (one optional block per kind), [`SourceKind`] and
//! [`ManifestKind`] from that list, so nothing else names every kind: the
//! compiler asks a new kind for each method of [`Kind`], and nothing more.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::backup::{BackupError, BackupKind, Run};
use crate::drill::{Checks, Drill, DrillError, Restored};
use crate::policy::Policy;
use crate::repository::{Manifest, Repository, RepositoryError};

use super::{ManifestKind, Source};

/// A boxed future, as the trait's async methods return (the trait is used
/// as `dyn Kind`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A boxed future that need not be `Send`: the CLI's restore runs on the
/// thread that awaits it.
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// What one kind of source does; implemented by its configuration type
/// (the policy's block for it).
pub trait Kind: Send + Sync {
    /// The key of the policy block (`postgres`), also the kind's name in
    /// `lifeboat status`.
    fn name(&self) -> &'static str;

    /// Checks the block beyond what its types say (`Err` is the message,
    /// without the source's name: the caller adds it).
    fn validate(&self) -> Result<(), String>;

    /// Makes the block's relative paths absolute (relative to the policy
    /// file's folder), through `abs`.
    fn resolve_paths(&mut self, abs: &mut dyn FnMut(&mut PathBuf));

    /// Checks one of the policy's `drill.checks` entries for a source of
    /// this kind (`Err` is the message, naming what to give instead).
    fn validate_drill_check(&self, check: &crate::policy::DrillCheck) -> Result<(), String>;

    /// What `lifeboat backup` takes without `--kind`.
    fn default_backup(&self) -> BackupKind;

    /// Takes one backup of `kind`: writes its artifacts through `run` and
    /// returns the manifest, which the caller stores (the commit point) or,
    /// on failure, deletes what was written. A kind that has no such backup
    /// refuses it with [`BackupError::KindNotSupported`].
    fn backup<'a>(
        &'a self,
        run: &'a mut Run<'_>,
        kind: BackupKind,
        started_at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Manifest, BackupError>>;

    /// The manifest kinds a drill of this source picks from (`--kind`
    /// narrows them).
    fn drilled(&self, kind: Option<crate::drill::Kind>) -> Vec<ManifestKind>;

    /// Restores the drill's backup into a scratch target, adds its checks
    /// (the policy's own too) and removes the target again.
    fn drill<'a>(
        &'a self,
        drill: &'a Drill<'a>,
        checks: &'a mut Checks,
    ) -> BoxFuture<'a, Result<Restored, DrillError>>;

    /// `lifeboat restore --source NAME` of a source of this kind: the CLI's
    /// arguments as given, the outcome as the exit code.
    fn restore<'a>(
        &'a self,
        args: crate::cli::restore::Args,
        policy: &'a Policy,
        cancel: &'a CancellationToken,
    ) -> LocalBoxFuture<'a, anyhow::Result<ExitCode>>;

    /// The name of the continuous archive `lifeboat run` keeps running for
    /// this source (`binlog`), if the source asks for one; `None` when the
    /// archive is fed from elsewhere (PostgreSQL's `archive_command`) or
    /// there is none.
    fn continuous_archive(&self) -> Option<&'static str>;

    /// Runs that archiver until it stops or `run.cancel` fires; the daemon
    /// restarts it with backoff.
    fn archive_continuously<'a>(
        &'a self,
        run: ArchiveRun<'a>,
    ) -> BoxFuture<'a, Result<(), Failure>>;

    /// The continuous archive of the source (WAL, binlogs), if it has one,
    /// for `lifeboat status`.
    fn archive_status<'a>(
        &'a self,
        query: StatusQuery<'a>,
    ) -> BoxFuture<'a, Result<Option<crate::status::ArchiveStatus>, RepositoryError>>;

    /// The newest point the archive can restore to, read from the newest
    /// backup it starts from; `None` for a kind without an archive.
    fn recoverable_end<'a>(
        &'a self,
        query: StatusQuery<'a>,
        listing: &'a [Manifest],
        identities: &'a std::sync::Arc<crate::keys::Identities>,
    ) -> BoxFuture<'a, Option<crate::status::RecoverableEnd>>;
}

/// An error of a kind's own, carried by the shared machinery's error types
/// (`BackupError::Kind`, `DrillError::Kind`): it shows and classifies
/// itself as the error it holds.
#[derive(Debug)]
pub struct Failure(Box<dyn KindError>);

/// What a kind's error type must be: a classified error.
pub trait KindError: std::error::Error + crate::outcome::Classify + Send + Sync + 'static {}

impl<T: std::error::Error + crate::outcome::Classify + Send + Sync + 'static> KindError for T {}

impl Failure {
    pub fn new(error: impl KindError) -> Failure {
        Failure(Box::new(error))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl crate::outcome::Classify for Failure {
    fn outcome(&self) -> crate::outcome::Outcome {
        self.0.outcome()
    }
}

/// What a continuous archiver the daemon runs is given.
pub struct ArchiveRun<'a> {
    pub repo: &'a Repository,
    pub policy: &'a Policy,
    pub source_name: &'a str,
    /// Fires at the daemon's shutdown: the archiver stores what it holds
    /// and returns.
    pub cancel: CancellationToken,
    /// Called once the archiver is set up and about to run (the daemon's
    /// metrics and log).
    pub started: Box<dyn FnOnce() + Send + 'a>,
}

/// What the status methods of [`Kind`] are asked about.
#[derive(Clone, Copy)]
pub struct StatusQuery<'a> {
    pub repo: &'a Repository,
    pub policy: &'a Policy,
    pub source: &'a Source,
    pub now: DateTime<Utc>,
    /// Ask the source's server too (how far its archive lags).
    pub probe: bool,
}

/// A manifest kind's label: the one given, else its string.
macro_rules! label {
    ($string:literal) => {
        $string
    };
    ($string:literal, $label:literal) => {
        $label
    };
}

/// Makes [`Source`], [`SourceKind`] and [`ManifestKind`] from the list of
/// kinds in `kinds/mod.rs`.
macro_rules! kinds {
    ($(
        $(#[$doc:meta])*
        $field:ident: $Variant:ident($Config:ty) => [$($Manifest:ident = $string:literal $(as $label:literal)?),+ $(,)?]
    ),+ $(,)?) => {
        /// One protected system: its name and exactly one kind block.
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Source {
            /// The source's name, used on the command line (`--source`) and in keys.
            pub name: crate::policy::Name,
            $(
                $(#[$doc])*
                #[serde(default)]
                pub $field: Option<$Config>,
            )+
        }

        /// A source, by kind.
        #[derive(Debug, Clone, Copy)]
        pub enum SourceKind<'a> {
            $($Variant(&'a $Config),)+
        }

        impl Source {
            /// The keys of the kind blocks given (exactly one once loaded).
            pub fn blocks(&self) -> Vec<&'static str> {
                let mut out = Vec::new();
                $(if self.$field.is_some() { out.push(stringify!($field)); })+
                out
            }

            /// The source's kind.
            pub fn kind(&self) -> SourceKind<'_> {
                $(if let Some(c) = &self.$field {
                    return SourceKind::$Variant(c);
                })+
                unreachable!("validated at load: every source has exactly one kind block")
            }

            /// The kind's implementation, to change the block (paths).
            pub fn kind_mut(&mut self) -> Option<&mut dyn Kind> {
                $(if let Some(c) = &mut self.$field {
                    return Some(c);
                })+
                None
            }
        }

        impl<'a> SourceKind<'a> {
            /// What the shared machinery calls.
            pub fn imp(self) -> &'a dyn Kind {
                match self {
                    $(SourceKind::$Variant(c) => c,)+
                }
            }
        }

        /// The keys of every kind's policy block, for messages.
        pub const BLOCKS: &[&str] = &[$(stringify!($field)),+];

        /// What a manifest holds (its `kind`), serialised as the strings of
        /// the repository format (`docs/FORMAT.md`).
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum ManifestKind {
            $($(
                #[doc = concat!("`", $string, "`")]
                $Manifest,
            )+)+
            /// A kind this lifeboat does not know (written by a newer one):
            /// listed and kept, never restored.
            Unknown(String),
        }

        impl ManifestKind {
            pub fn as_str(&self) -> &str {
                match self {
                    $($(Self::$Manifest => $string,)+)+
                    Self::Unknown(s) => s,
                }
            }

            /// The short name `lifeboat list` shows.
            pub fn label(&self) -> &str {
                match self {
                    $($(Self::$Manifest => label!($string $(, $label)?),)+)+
                    Self::Unknown(s) => s,
                }
            }

            /// The policy block of the kind of source that writes it.
            pub fn block(&self) -> Option<&'static str> {
                match self {
                    $($(Self::$Manifest => Some(stringify!($field)),)+)+
                    Self::Unknown(_) => None,
                }
            }
        }

        impl From<String> for ManifestKind {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $($($string => Self::$Manifest,)+)+
                    _ => Self::Unknown(s),
                }
            }
        }
    };
}

pub(crate) use {kinds, label};

#[cfg(test)]
mod tests {
    use super::super::{Source, BLOCKS};
    use super::ManifestKind as M;

    /// One source of each kind, as small as its block allows.
    fn one_of_each() -> Vec<Source> {
        [
            "name: a\npostgres: {}\n",
            "name: b\nmysql: {}\n",
            "name: c\nkubernetes: { namespaces: all }\n",
            "name: d\ncommand: { backup: [tar, -cf, -, /srv], restore: [tar, -xf, -] }\n",
        ]
        .iter()
        .map(|y| yaml_serde::from_str(y).unwrap())
        .collect()
    }

    #[test]
    fn each_block_is_its_kinds_name_and_every_kind_is_covered() {
        let sources = one_of_each();
        let names: Vec<&str> = sources.iter().map(|s| s.kind().imp().name()).collect();
        assert_eq!(
            names, BLOCKS,
            "a kind in the list has no source here, or names itself wrongly"
        );
        for s in &sources {
            assert_eq!(s.blocks(), vec![s.kind().imp().name()]);
            assert_eq!(s.kind().imp().validate(), Ok(()), "{}", s.name);
        }
    }

    #[test]
    fn every_manifest_kind_belongs_to_the_kind_that_drills_it() {
        for s in one_of_each() {
            let kind = s.kind().imp();
            for m in kind.drilled(None) {
                assert_eq!(m.block(), Some(kind.name()), "{m}");
                // The format's strings read back as the same kind.
                assert_eq!(M::from(m.as_str().to_string()), m);
            }
        }
    }

    #[test]
    fn manifest_strings_and_labels_are_unique() {
        let all = [
            M::PostgresDump,
            M::PostgresBase,
            M::MysqlDump,
            M::KubernetesExport,
            M::CommandOutput,
        ];
        let mut strings: Vec<&str> = all.iter().map(|m| m.as_str()).collect();
        let mut labels: Vec<&str> = all.iter().map(|m| m.label()).collect();
        strings.sort();
        strings.dedup();
        labels.sort();
        labels.dedup();
        assert_eq!((strings.len(), labels.len()), (all.len(), all.len()));
        assert_eq!(M::from("etcd-snapshot".to_string()).block(), None);
    }

    #[test]
    fn a_source_with_two_blocks_or_none_names_them() {
        let two: Source = yaml_serde::from_str("name: x\npostgres: {}\nmysql: {}\n").unwrap();
        assert_eq!(two.blocks(), vec!["postgres", "mysql"]);
        let none: Source = yaml_serde::from_str("name: y\n").unwrap();
        assert!(none.blocks().is_empty());
    }
}
