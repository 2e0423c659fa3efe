//! Kubernetes: everything lifeboat knows about `kubernetes` sources (the
//! API client they share with other commands is [`crate::kube`]).
//!
//! - [`config`]: the `kubernetes:` block of a source in a policy file;
//! - [`export`]: the export, every selected object as YAML into a tar;
//! - [`clean`]: what an export leaves out and strips (events, tokens,
//!   controller-owned objects, server-set fields);
//! - [`yaml`]: the YAML emitter of exported objects;
//! - [`backup`]: the backup, the export streamed through the pipeline;
//! - [`restore`]: an export applied into a cluster or written to a folder;
//! - [`drill`]: Kubernetes drills, an export applied into scratch namespaces
//!   and checked;
//! - [`scratch`]: the scratch namespaces of drills, made, swept and deleted.

pub(crate) mod backup;
pub mod clean;
pub mod config;
pub(crate) mod drill;
pub mod export;
pub mod restore;
pub mod scratch;
pub mod yaml;

use std::path::PathBuf;

use config::{KubernetesSource, Namespaces};

use crate::kinds::{BoxFuture, Kind, ManifestKind, StatusQuery};

impl Kind for KubernetesSource {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn validate(&self) -> Result<(), String> {
        match (&self.namespaces, &self.namespace_selector) {
            (None, None) => Err("say which namespaces to export: `namespaces: [prod]`, `namespaces: all` or `namespace_selector: team=payments`".into()),
            (Some(_), Some(_)) => Err("give either `namespaces:` or `namespace_selector:`, not both".into()),
            (Some(Namespaces::List(_)), None) if self.exclude_namespaces.is_some() => Err("`exclude_namespaces:` applies to `namespaces: all` and `namespace_selector:`; with a list, just leave the namespace out".into()),
            (None, Some(sel)) if sel.trim().is_empty() => Err("namespace_selector is empty; write a label selector like `team=payments`".into()),
            (Some(_), None) | (None, Some(_)) => Ok(()),
        }
    }

    fn validate_drill_check(&self, check: &crate::policy::DrillCheck) -> Result<(), String> {
        if check.kind.as_deref().is_none_or(|k| k.trim().is_empty()) || !check.sql.is_empty() {
            return Err(format!(
                "source '{}' is a Kubernetes source: its checks count objects of a kind (`kind: Deployment`, `expect: \">= 1\"`), without `sql:`",
                check.source
            ));
        }
        Ok(())
    }

    fn resolve_paths(&mut self, abs: &mut dyn FnMut(&mut PathBuf)) {
        if let Some(p) = &mut self.kubeconfig {
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
                    backup::backup_kubernetes(run, self, started_at).await
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
        vec![ManifestKind::KubernetesExport]
    }

    fn drill<'a>(
        &'a self,
        drill: &'a crate::drill::Drill<'a>,
        checks: &'a mut crate::drill::Checks,
    ) -> BoxFuture<'a, Result<crate::drill::Restored, crate::drill::DrillError>> {
        Box::pin(drill.kubernetes(self, checks))
    }

    fn restore<'a>(
        &'a self,
        args: crate::cli::restore::Args,
        policy: &'a crate::policy::Policy,
        cancel: &'a tokio_util::sync::CancellationToken,
    ) -> crate::kinds::LocalBoxFuture<'a, anyhow::Result<std::process::ExitCode>> {
        Box::pin(async move {
            crate::cli::restore::refuse_datadir(&args)?;
            crate::cli::restore_kube::run(args, policy, self, cancel).await
        })
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
        _query: StatusQuery<'a>,
    ) -> BoxFuture<
        'a,
        Result<Option<crate::status::ArchiveStatus>, crate::repository::RepositoryError>,
    > {
        Box::pin(async { Ok(None) })
    }

    fn recoverable_end<'a>(
        &'a self,
        _query: StatusQuery<'a>,
        _listing: &'a [crate::repository::Manifest],
        _identities: &'a std::sync::Arc<crate::keys::Identities>,
    ) -> BoxFuture<'a, Option<crate::status::RecoverableEnd>> {
        Box::pin(async { None })
    }
}
