//! Restoring a Kubernetes export: into the same cluster, a fresh one, or a
//! scratch namespace.
//!
//! The export is decrypted and fully verified before anything is applied.
//! Objects are applied with server-side apply in dependency order (CRDs,
//! waiting until they are established; Namespaces; ServiceAccounts;
//! ConfigMaps; Secrets; volume claims; Services; RBAC; workloads; the
//! rest). `--namespace-map` rewrites namespaces, also where objects refer
//! to one (RoleBinding subjects). Into a namespace other than the
//! original the copy is made harmless unless `--live`: workloads at zero
//! replicas, Jobs and CronJobs suspended, node ports and load balancers
//! turned into ClusterIP Services, Ingresses, routes, autoscalers and bare
//! Pods skipped. Existing objects are left alone unless `--overwrite`.
//!
//! Layout: `export.rs` reads the export; `plan.rs` selects and orders its
//! objects, `namespaces.rs` rewrites them for mapped namespaces and
//! `harmless.rs` applies the harmless-copy rules; `target.rs` checks the
//! target namespaces; `apply.rs` applies the plan (or `to_dir.rs` writes
//! it out), `compare.rs` telling unchanged objects from changed ones; and
//! `report.rs` says what happened to each.

use std::collections::BTreeMap;
use std::path::PathBuf;

mod apply;
mod compare;
mod export;
mod harmless;
mod namespaces;
mod plan;
mod report;
mod target;
mod to_dir;
pub use apply::execute;
use compare::contained;
pub use export::{load, Exported};
pub(crate) use harmless::is_custom_group;
pub use harmless::HARMLESS_ANNOTATION;
pub use namespaces::{
    namespace_key_not_copied, parse_mapping, DRILL_MANAGED_BY, RESTORED_FROM_ANNOTATION,
};
pub use plan::{home_namespace, plan, Plan, Planned, Skip, SkipReason, Stage};
pub use report::{describe_skips, ObjectResult, Outcome, Report};
pub use target::selects;
pub use to_dir::write_dir;

use crate::kinds::kubernetes::yaml;
use crate::kube::KubeError;
use crate::pipeline::PipelineError;

#[derive(Debug, thiserror::Error)]
pub enum KubeRestoreError {
    #[error(transparent)]
    Kube(Box<KubeError>),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("backup {backup} is a {kind} backup, not a Kubernetes export; pick a backup of a `kubernetes` source")]
    WrongKind { backup: String, kind: String },
    #[error("backup {backup} has no `objects` artifact; its manifest is damaged")]
    MissingArtifact { backup: String },
    #[error("the export {key} is not a readable tar at {path}: {detail}")]
    BadExport {
        key: String,
        path: String,
        detail: String,
    },
    #[error("namespace '{namespace}' is not in backup {backup} (it holds: {available})")]
    NoSuchNamespace {
        namespace: String,
        backup: String,
        available: String,
    },
    #[error("--include/--exclude '{name}' names no kind in backup {backup}; it holds: {kinds}")]
    UnknownKind {
        name: String,
        backup: String,
        kinds: String,
    },
    #[error("--namespace-map '{0}' is not FROM:TO (e.g. prod:drill-2026-11)")]
    BadMapping(String),
    #[error("'{name}' in --namespace-map '{given}' is not a namespace name: {why}. Namespace names are DNS-1123 labels: at most 63 characters, lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. drill-2026-11)")]
    BadNamespaceName {
        name: String,
        given: String,
        why: String,
    },
    #[error("--namespace-map maps both '{a}' and '{b}' to '{to}'; each target namespace can receive one source namespace")]
    MappingCollision { a: String, b: String, to: String },
    #[error("--namespace-map maps '{from}' to both '{a}' and '{b}'; map each source namespace once (restore twice for two copies)")]
    MappingTwice { from: String, a: String, b: String },
    #[error("namespace '{namespace}' is both restored in place (--namespace) and the target of --namespace-map {from}:{namespace}; a copy cannot land in a namespace restored as itself. Pick another target name")]
    TargetRestoredInPlace { namespace: String, from: String },
    #[error("--overwrite would replace objects in namespace '{namespace}' that this backup did not make (it exists and holds {count} object(s) of its own); a copy overwrites only its own namespace. Restore into a new namespace, or leave out --overwrite")]
    OverwriteForeign { namespace: String, count: usize },
    #[error("namespace '{namespace}' exists and holds {count} object(s) of its own: {objects}. A copy of '{source_namespace}' must not land among other workloads (its Services, NetworkPolicies and budgets could select their pods). Pick a new namespace name, delete '{namespace}' first, or pass --into-existing to restore into it anyway (objects that would select pods not restored are still skipped)")]
    TargetNotEmpty {
        namespace: String,
        source_namespace: String,
        count: usize,
        objects: String,
    },
    #[error("namespace '{namespace}' is being deleted (Terminating); nothing can be created in it. Wait until `kubectl get namespace {namespace}` says NotFound, then run the restore again, or pick another name")]
    TargetTerminating { namespace: String },
    #[error("cannot tell what namespace '{namespace}' holds, so a copy into it is refused: {source}. Grant `list` on that type there (with --into-existing, only pods and workloads must be listable)")]
    TargetUnreadable {
        namespace: String,
        #[source]
        source: Box<KubeError>,
    },
    #[error("--to-dir {0} exists and is not empty; name a new or empty folder")]
    DirNotEmpty(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl crate::outcome::Classify for KubeRestoreError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::WrongKind { .. }
            | Self::BadMapping(_)
            | Self::BadNamespaceName { .. }
            | Self::MappingCollision { .. }
            | Self::MappingTwice { .. }
            | Self::TargetRestoredInPlace { .. }
            | Self::UnknownKind { .. } => Outcome::Usage,
            Self::NoSuchNamespace { .. } | Self::MissingArtifact { .. } => Outcome::NotFound,
            Self::DirNotEmpty(_)
            | Self::TargetNotEmpty { .. }
            | Self::TargetTerminating { .. }
            | Self::TargetUnreadable { .. }
            | Self::OverwriteForeign { .. } => Outcome::Refused,
            Self::BadExport { .. } => Outcome::Integrity,
            Self::Pipeline(e) => e.outcome(),
            Self::Kube(e) => e.outcome(),
            Self::Write { .. } => Outcome::Failure,
        }
    }
}

impl From<KubeError> for KubeRestoreError {
    fn from(e: KubeError) -> Self {
        KubeRestoreError::Kube(Box::new(e))
    }
}

/// What to restore and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only these source namespaces, besides the mapped ones (both empty:
    /// all).
    pub namespaces: Vec<String>,
    /// Source namespace → target namespace.
    pub namespace_map: BTreeMap<String, String>,
    /// Only these kinds (kind or plural name; empty: all).
    pub include: Vec<String>,
    /// Not these kinds.
    pub exclude: Vec<String>,
    /// Replace objects that exist and differ (server-side apply, forced).
    pub overwrite: bool,
    /// Restore a copy as is, even into another namespace.
    pub live: bool,
    /// Restore cluster-scoped objects even when restoring a subset of
    /// namespaces or into mapped ones.
    pub cluster_resources: bool,
    /// Restore a copy into a target namespace that exists and holds
    /// objects (refused otherwise). Objects that would select pods not
    /// part of the restore are still skipped.
    pub into_existing: bool,
}

#[cfg(test)]
mod tests;
