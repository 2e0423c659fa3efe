//! MySQL and MariaDB sources: everything lifeboat knows about them.

pub mod backup;
pub mod binlog;
pub mod config;
pub mod drill;
pub mod restore;
pub mod scratch;
pub mod source;
pub mod status;

use std::path::PathBuf;

use config::MysqlSource;

use crate::kinds::{BoxFuture, Kind, ManifestKind, StatusQuery};
use crate::policy::SecretRef;

impl Kind for MysqlSource {
    fn name(&self) -> &'static str {
        "mysql"
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

    fn default_backup(&self) -> crate::backup::BackupKind {
        crate::backup::BackupKind::Dump
    }

    fn backup<'a>(
        &'a self,
        run: &'a mut crate::backup::Run<'_>,
        kind: crate::backup::BackupKind,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Result<crate::repository::Manifest, crate::backup::BackupError>> {
        Box::pin(async move {
            match kind {
                crate::backup::BackupKind::Dump => {
                    backup::backup_mysql(run, self, started_at).await
                }
                crate::backup::BackupKind::Base => {
                    Err(crate::backup::BackupError::KindNotSupported {
                        kind: "base",
                        source_name: run.source.name.to_string(),
                    })
                }
            }
        })
    }

    fn drilled(&self, _kind: Option<crate::drill::Kind>) -> Vec<ManifestKind> {
        vec![ManifestKind::MysqlDump]
    }

    fn drill<'a>(
        &'a self,
        drill: &'a crate::drill::Drill<'a>,
        checks: &'a mut crate::drill::Checks,
    ) -> BoxFuture<'a, Result<crate::drill::Restored, crate::drill::DrillError>> {
        Box::pin(drill.mysql(self, checks))
    }

    fn restore<'a>(
        &'a self,
        args: crate::cli::restore::Args,
        policy: &'a crate::policy::Policy,
        _cancel: &'a tokio_util::sync::CancellationToken,
    ) -> crate::kinds::LocalBoxFuture<'a, anyhow::Result<std::process::ExitCode>> {
        Box::pin(async move {
            crate::cli::restore::refuse_datadir(&args)?;
            args.database_target()?;
            crate::cli::restore_mysql::run(args, policy, self).await
        })
    }

    fn continuous_archive(&self) -> Option<&'static str> {
        self.archive_binlogs.then_some("binlog")
    }

    fn archive_continuously<'a>(
        &'a self,
        run: crate::kinds::ArchiveRun<'a>,
    ) -> BoxFuture<'a, Result<(), crate::kinds::Failure>> {
        Box::pin(binlog::archive_continuously(self, run))
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
        Box::pin(status::recoverable_end(query, listing, identities))
    }
}
