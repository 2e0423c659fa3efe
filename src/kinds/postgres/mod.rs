//! PostgreSQL: everything lifeboat knows about PostgreSQL sources.
//!
//! - [`config`]: the `postgres:` block of a source in a policy file;
//! - [`source`]: connections, tool discovery, snapshots, inventories;
//! - [`backup`]: the dump backup, pg_dump of each database with its
//!   row-count inventory;
//! - [`base`]: the base backup, pg_basebackup of the whole cluster for
//!   point-in-time recovery;
//! - [`restore`]: a dump restored into a database with pg_restore;
//! - [`pitr`]: point-in-time recovery, a base backup and the archived WAL
//!   into a data directory;
//! - [`wal`]: WAL file names and LSNs, the WAL archive (`wal-push`,
//!   `wal-fetch`), what it can recover to;
//! - [`drill`]: PostgreSQL drills, dumps and base backups restored and checked;
//! - [`scratch`]: the throwaway PostgreSQL cluster of drills.

pub(crate) mod backup;
pub(crate) mod base;
pub mod config;
pub(crate) mod drill;
pub mod pitr;
pub mod restore;
pub mod scratch;
pub mod source;
pub mod status;
pub mod wal;

use std::path::PathBuf;

use config::PostgresSource;

use crate::backup::BackupKind;
use crate::kinds::{BoxFuture, Kind, ManifestKind, StatusQuery};
use crate::policy::SecretRef;

impl Kind for PostgresSource {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    fn validate_drill_check(&self, check: &crate::policy::DrillCheck) -> Result<(), String> {
        check.validate_sql()
    }

    fn resolve_paths(&mut self, abs: &mut dyn FnMut(&mut PathBuf)) {
        if let Some(SecretRef::File(p)) = &mut self.password {
            abs(p);
        }
        if let Some(p) = &mut self.bin_dir {
            abs(p);
        }
    }

    fn default_backup(&self) -> BackupKind {
        self.backup
    }

    fn backup<'a>(
        &'a self,
        run: &'a mut crate::backup::Run<'_>,
        kind: BackupKind,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Result<crate::repository::Manifest, crate::backup::BackupError>> {
        Box::pin(async move {
            match kind {
                BackupKind::Dump => backup::backup_postgres(run, self, started_at).await,
                BackupKind::Base => base::backup_postgres_base(run, self, started_at).await,
            }
        })
    }

    fn drilled(&self, kind: Option<crate::drill::Kind>) -> Vec<ManifestKind> {
        use crate::drill::Kind;
        match kind {
            Some(Kind::Dump) => vec![ManifestKind::PostgresDump],
            Some(Kind::Base) => vec![ManifestKind::PostgresBase],
            None => vec![ManifestKind::PostgresDump, ManifestKind::PostgresBase],
        }
    }

    fn drill<'a>(
        &'a self,
        drill: &'a crate::drill::Drill<'a>,
        checks: &'a mut crate::drill::Checks,
    ) -> BoxFuture<'a, Result<crate::drill::Restored, crate::drill::DrillError>> {
        Box::pin(async move {
            match &drill.manifest.kind {
                ManifestKind::PostgresDump => drill.dump(self, checks).await,
                ManifestKind::PostgresBase => drill.base(self, checks).await,
                other => Err(crate::drill::DrillError::UnsupportedBackup {
                    backup: drill.manifest.id.clone(),
                    kind: other.to_string(),
                }),
            }
        })
    }

    fn restore<'a>(
        &'a self,
        args: crate::cli::restore::Args,
        policy: &'a crate::policy::Policy,
        cancel: &'a tokio_util::sync::CancellationToken,
    ) -> crate::kinds::LocalBoxFuture<'a, anyhow::Result<std::process::ExitCode>> {
        Box::pin(crate::cli::restore::postgres(args, policy, self, cancel))
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
        query: StatusQuery<'a>,
    ) -> BoxFuture<
        'a,
        Result<Option<crate::status::ArchiveStatus>, crate::repository::RepositoryError>,
    > {
        Box::pin(status::archive_status(query, self))
    }

    fn recoverable_end<'a>(
        &'a self,
        query: StatusQuery<'a>,
        listing: &'a [crate::repository::Manifest],
        identities: &'a std::sync::Arc<crate::keys::Identities>,
    ) -> BoxFuture<'a, Option<crate::status::RecoverableEnd>> {
        Box::pin(status::recoverable_end(query, self, listing, identities))
    }
}
