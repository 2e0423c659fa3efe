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

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

mod apply;
mod harmless;
mod target;
mod to_dir;
pub use apply::execute;
pub(crate) use harmless::is_custom_group;
use harmless::make_harmless;
pub use harmless::HARMLESS_ANNOTATION;
pub use target::selects;
pub use to_dir::write_dir;

use crate::keys::Identities;
use crate::pipeline::{self, PipelineError};
use crate::repository::{Manifest, Repository};
use crate::source::kubernetes::{
    object_name, object_namespace, remove_node_ports, yaml, KubeError, ResourceType,
};

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

/// Parses `FROM:TO` pairs.
pub fn parse_mapping(pairs: &[String]) -> Result<BTreeMap<String, String>, KubeRestoreError> {
    let mut map = BTreeMap::new();
    let mut targets: BTreeMap<String, String> = BTreeMap::new();
    for p in pairs {
        let (from, to) = p
            .split_once(':')
            .ok_or_else(|| KubeRestoreError::BadMapping(p.clone()))?;
        for name in [from, to] {
            namespace_name_problem(name).map_or(Ok(()), |why| {
                Err(KubeRestoreError::BadNamespaceName {
                    name: name.to_string(),
                    given: p.clone(),
                    why,
                })
            })?;
        }
        if let Some(a) = targets.insert(to.to_string(), from.to_string()) {
            if a != from {
                return Err(KubeRestoreError::MappingCollision {
                    a,
                    b: from.to_string(),
                    to: to.to_string(),
                });
            }
        }
        if let Some(a) = map.insert(from.to_string(), to.to_string()) {
            if a != to {
                return Err(KubeRestoreError::MappingTwice {
                    from: from.to_string(),
                    a,
                    b: to.to_string(),
                });
            }
        }
    }
    Ok(map)
}

/// What makes `s` no DNS label (RFC 1123), as namespace names must be.
fn namespace_name_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("it is empty".into());
    }
    if s.len() > 63 {
        return Some(format!("it has {} characters", s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!("it contains '{c}'"));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("it starts or ends with '-'".into());
    }
    None
}

/// One object read from an export.
#[derive(Debug, Clone)]
pub struct Exported {
    pub path: String,
    pub obj: Value,
}

/// Decrypts and verifies the export, then reads its objects. Nothing is
/// returned unless every byte checked out.
pub async fn load(
    repo: &Repository,
    manifest: &Manifest,
    identities: Arc<Identities>,
) -> Result<Vec<Exported>, KubeRestoreError> {
    if manifest.kind != crate::repository::ManifestKind::KubernetesExport {
        return Err(KubeRestoreError::WrongKind {
            backup: manifest.id.clone(),
            kind: manifest.kind.to_string(),
        });
    }
    let artifact =
        manifest
            .artifact("objects")
            .ok_or_else(|| KubeRestoreError::MissingArtifact {
                backup: manifest.id.clone(),
            })?;
    let bytes =
        pipeline::decode_to_vec(repo.store().as_ref(), &artifact.expected(), identities).await?;
    let key = artifact.key.clone();
    tokio::task::spawn_blocking(move || read_tar(&bytes, &key))
        .await
        .map_err(|e| KubeRestoreError::BadExport {
            key: artifact.key.clone(),
            path: "-".into(),
            detail: e.to_string(),
        })?
}

fn read_tar(bytes: &[u8], key: &str) -> Result<Vec<Exported>, KubeRestoreError> {
    use std::io::Read;
    let bad = |path: &str, detail: String| KubeRestoreError::BadExport {
        key: key.to_string(),
        path: path.to_string(),
        detail,
    };
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().map_err(|e| bad("-", e.to_string()))? {
        let mut entry = entry.map_err(|e| bad("-", e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| bad("-", e.to_string()))?
            .to_string_lossy()
            .into_owned();
        if !path.ends_with(".yaml") {
            continue;
        }
        let mut text = String::new();
        entry
            .read_to_string(&mut text)
            .map_err(|e| bad(&path, e.to_string()))?;
        let obj: Value = serde_yaml::from_str(&text).map_err(|e| bad(&path, e.to_string()))?;
        out.push(Exported { path, obj });
    }
    Ok(out)
}

/// Restore order: what others depend on first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    CustomResourceDefinitions,
    Namespaces,
    ServiceAccounts,
    ConfigMaps,
    Secrets,
    Storage,
    Services,
    Rbac,
    Workloads,
    Rest,
}

impl Stage {
    pub fn of(api_version: &str, kind: &str) -> Stage {
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        match (group, kind) {
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                Stage::CustomResourceDefinitions
            }
            ("", "Namespace") => Stage::Namespaces,
            ("", "ServiceAccount") => Stage::ServiceAccounts,
            ("", "ConfigMap") => Stage::ConfigMaps,
            ("", "Secret") => Stage::Secrets,
            ("", "PersistentVolumeClaim" | "LimitRange" | "ResourceQuota")
            | ("storage.k8s.io", "StorageClass") => Stage::Storage,
            ("", "Service") => Stage::Services,
            ("rbac.authorization.k8s.io", _) => Stage::Rbac,
            ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
            | ("batch", "Job" | "CronJob")
            | ("", "Pod" | "ReplicationController") => Stage::Workloads,
            _ => Stage::Rest,
        }
    }
}

/// One object the restore will handle.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub stage: Stage,
    /// Namespace in the backup, and where it goes (None: cluster-scoped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Why it is not applied, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip: Option<Skip>,
    /// What the restore changed (the harmless-copy rules, references).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    #[serde(skip)]
    pub obj: Value,
}

/// Why an object is not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// The harmless-copy rules leave it out of a copy (`--live` keeps it).
    HarmlessCopy,
    /// In a copy's target namespace it would select pods that are not
    /// part of the restore.
    SelectsOtherPods,
    /// It exists on the target and differs (`--overwrite` replaces it).
    ExistsAndDiffers,
    /// Cluster-scoped, exists and differs: a copy shares it with the
    /// original and never replaces it.
    SharedClusterScoped,
}

impl SkipReason {
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::HarmlessCopy => "harmless-copy rules",
            SkipReason::SelectsOtherPods => "would select pods not restored",
            SkipReason::ExistsAndDiffers => "exists and differs",
            SkipReason::SharedClusterScoped => "shared cluster-scoped object",
        }
    }
}

/// An object left out, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skip {
    pub reason: SkipReason,
    pub detail: String,
}

/// The objects selected, transformed and ordered; and how many were not
/// selected.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub objects: Vec<Planned>,
    pub not_selected: usize,
    /// Source namespaces restored, with their targets.
    pub namespaces: BTreeMap<String, String>,
}

/// The plural resource names recorded in the manifest, for matching
/// --include/--exclude without a server.
fn known_types(manifest: &Manifest, objects: &[Exported]) -> Vec<ResourceType> {
    let mut out: Vec<ResourceType> = Vec::new();
    let counted = manifest.kubernetes.iter().flat_map(|k| &k.counts).map(|c| {
        (
            c.api_version.as_str(),
            c.kind.as_str(),
            Some(c.resource.as_str()),
        )
    });
    // Kinds in the export the manifest does not count (it always should).
    let exported = objects.iter().map(|e| {
        let field = |f: &str| e.obj.get(f).and_then(Value::as_str).unwrap_or("");
        (field("apiVersion"), field("kind"), None)
    });
    for (api_version, kind, plural) in counted.chain(exported) {
        if !out
            .iter()
            .any(|t| t.kind == kind && t.api_version() == api_version)
        {
            out.push(described_type(api_version, kind, plural));
        }
    }
    out
}

/// A type known only by its apiVersion, kind and (if recorded) plural;
/// without one the plural is guessed (`ConfigMap` → `configmaps`).
fn described_type(api_version: &str, kind: &str, plural: Option<&str>) -> ResourceType {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.to_string()),
    };
    ResourceType {
        group,
        version,
        kind: kind.to_string(),
        plural: plural
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}s", kind.to_ascii_lowercase())),
        singular: kind.to_ascii_lowercase(),
        namespaced: true,
        verbs: Vec::new(),
        short_names: Vec::new(),
        preferred: true,
    }
}

fn type_of(known: &[ResourceType], api_version: &str, kind: &str) -> ResourceType {
    known
        .iter()
        .find(|t| t.kind == kind && t.api_version() == api_version)
        .cloned()
        .unwrap_or_else(|| described_type(api_version, kind, None))
}

/// Selects, rewrites and orders the objects, with the harmless-copy rules
/// for copies into other namespaces (unless `--live`). The same plan goes
/// to the cluster and to `--to-dir`.
pub fn plan(
    manifest: &Manifest,
    objects: Vec<Exported>,
    opts: &Options,
) -> Result<Plan, KubeRestoreError> {
    let available: BTreeSet<String> = objects
        .iter()
        .filter_map(|e| home_namespace(&e.obj).map(str::to_string))
        .collect();
    // The named and the mapped namespaces; all of them when none is given.
    let whole = opts.namespaces.is_empty() && opts.namespace_map.is_empty();
    let wanted: BTreeSet<String> = if whole {
        available.clone()
    } else {
        opts.namespaces
            .iter()
            .chain(opts.namespace_map.keys())
            .cloned()
            .collect()
    };
    for (from, to) in &opts.namespace_map {
        if from != to && opts.namespaces.contains(to) {
            return Err(KubeRestoreError::TargetRestoredInPlace {
                namespace: to.clone(),
                from: from.clone(),
            });
        }
    }
    for ns in &wanted {
        if !available.contains(ns) {
            return Err(KubeRestoreError::NoSuchNamespace {
                namespace: ns.clone(),
                backup: manifest.id.clone(),
                available: available.iter().cloned().collect::<Vec<_>>().join(", "),
            });
        }
    }
    let known = known_types(manifest, &objects);
    for spec in opts.include.iter().chain(&opts.exclude) {
        if !known.iter().any(|t| t.matches(spec)) {
            let mut kinds: Vec<String> = known.iter().map(|t| t.plural.clone()).collect();
            kinds.sort();
            kinds.dedup();
            return Err(KubeRestoreError::UnknownKind {
                name: spec.clone(),
                backup: manifest.id.clone(),
                kinds: kinds.join(", "),
            });
        }
    }
    let mut out = Vec::new();
    let mut not_selected = 0;
    for Exported { obj, .. } in objects {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = object_name(&obj).to_string();
        let home = home_namespace(&obj).map(str::to_string);
        let is_namespace = api_version == "v1" && kind == "Namespace";
        let rt = type_of(&known, &api_version, &kind);
        let selected = match &home {
            Some(ns) => wanted.contains(ns),
            None => whole || opts.cluster_resources,
        } && (is_namespace
            || ((opts.include.is_empty() || opts.include.iter().any(|i| rt.matches(i)))
                && !opts.exclude.iter().any(|e| rt.matches(e))));
        if !selected {
            not_selected += 1;
            continue;
        }
        let target = home.as_ref().map(|ns| {
            opts.namespace_map
                .get(ns)
                .cloned()
                .unwrap_or_else(|| ns.clone())
        });
        let mut p = Planned {
            stage: Stage::of(&api_version, &kind),
            source_namespace: home.clone(),
            namespace: target.clone(),
            name: if is_namespace {
                target.clone().unwrap_or(name)
            } else {
                name
            },
            api_version,
            kind,
            skip: None,
            changes: Vec::new(),
            obj,
        };
        rewrite_namespaces(&mut p, &opts.namespace_map);
        let copy = home.is_some() && home != target;
        if copy && p.api_version == "v1" && p.kind == "Service" {
            release_node_ports(&mut p);
        }
        if copy && is_namespace {
            copy_namespace_metadata(&mut p, &manifest.id);
        }
        if !opts.live && copy {
            make_harmless(&mut p);
        }
        out.push(p);
    }
    out.sort_by(|a, b| {
        (a.stage, &a.namespace, &a.kind, &a.name).cmp(&(b.stage, &b.namespace, &b.kind, &b.name))
    });
    let namespaces = wanted
        .iter()
        .map(|ns| {
            (
                ns.clone(),
                opts.namespace_map
                    .get(ns)
                    .cloned()
                    .unwrap_or_else(|| ns.clone()),
            )
        })
        .collect();
    Ok(Plan {
        objects: out,
        not_selected,
        namespaces,
    })
}

/// The namespace an object belongs to: its own, or for a Namespace its
/// name.
pub fn home_namespace(obj: &Value) -> Option<&str> {
    if obj.get("kind").and_then(Value::as_str) == Some("Namespace")
        && obj.get("apiVersion").and_then(Value::as_str) == Some("v1")
    {
        return Some(object_name(obj));
    }
    object_namespace(obj)
}

/// Moves the object into its target namespace and rewrites references to
/// mapped namespaces anywhere in it (`namespace: prod` in RoleBinding
/// subjects, webhook service references, `namespaces: [prod]` in affinity
/// terms and policies).
fn rewrite_namespaces(p: &mut Planned, map: &BTreeMap<String, String>) {
    let is_namespace = p.api_version == "v1" && p.kind == "Namespace";
    if let Some(meta) = p.obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if is_namespace {
            meta.insert("name".into(), Value::String(p.name.clone()));
        } else if let Some(ns) = &p.namespace {
            meta.insert("namespace".into(), Value::String(ns.clone()));
        }
    }
    // Cluster-scoped objects are shared with the original: a copy does not
    // point them at itself.
    if map.is_empty() || p.namespace.is_none() || is_namespace {
        return;
    }
    let mut rewritten = 0;
    if let Some(obj) = p.obj.as_object_mut() {
        for (key, value) in obj.iter_mut() {
            // metadata is done above; data, stringData and binaryData are
            // the user's own (a ConfigMap key may be called `namespace`).
            if !matches!(
                key.as_str(),
                "metadata" | "data" | "stringData" | "binaryData"
            ) {
                rewrite_refs(value, map, &mut rewritten);
            }
        }
    }
    if rewritten > 0 {
        p.changes.push(format!(
            "{rewritten} namespace reference{} rewritten",
            if rewritten == 1 { "" } else { "s" }
        ));
    }
}

/// The label every Namespace carries with its own name; selectors use it
/// to name namespaces (NetworkPolicy peers, affinity terms, webhooks).
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn rewrite_string(s: &mut String, map: &BTreeMap<String, String>, n: &mut usize) {
    if let Some(to) = map.get(s.as_str()) {
        *s = to.clone();
        *n += 1;
    }
}

fn rewrite_strings(items: &mut [Value], map: &BTreeMap<String, String>, n: &mut usize) {
    for item in items {
        if let Value::String(s) = item {
            rewrite_string(s, map, n);
        }
    }
}

fn rewrite_refs(v: &mut Value, map: &BTreeMap<String, String>, n: &mut usize) {
    match v {
        Value::Object(obj) => {
            // A selector expression on the name label:
            // {key: kubernetes.io/metadata.name, operator: In, values: [prod]}.
            if obj.get("key").and_then(Value::as_str) == Some(NAME_LABEL) {
                if let Some(Value::Array(values)) = obj.get_mut("values") {
                    rewrite_strings(values, map, n);
                }
            }
            for (key, value) in obj.iter_mut() {
                match (key.as_str(), &mut *value) {
                    ("namespace" | NAME_LABEL, Value::String(s)) => rewrite_string(s, map, n),
                    ("namespaces", Value::Array(items)) => rewrite_strings(items, map, n),
                    _ => rewrite_refs(value, map, n),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite_refs(i, map, n)),
        _ => {}
    }
}

/// A copy's Service cannot hold the original's node ports (they are
/// cluster-wide): the server assigns free ones.
fn release_node_ports(p: &mut Planned) {
    let Some(spec) = p.obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let had = spec
        .get("ports")
        .and_then(Value::as_array)
        .is_some_and(|ports| ports.iter().any(|port| port.get("nodePort").is_some()));
    if had {
        remove_node_ports(spec);
        p.changes.push("node ports reassigned by the server".into());
    }
}

/// The `app.kubernetes.io/managed-by` value of a drill's scratch
/// namespaces and of the objects the drill makes there itself.
pub const DRILL_MANAGED_BY: &str = "lifeboat-drill";

/// Annotation on a copy's Namespace: the backup it was restored from. A
/// restore of the same backup may finish an earlier, interrupted one
/// there; any other refuses a namespace that holds objects.
pub const RESTORED_FROM_ANNOTATION: &str = "lifeboat.dev/restored-from";

/// Whether a Namespace label or annotation of the backup is left off a
/// copy's Namespace: the cluster assigns it per namespace (OpenShift's
/// UID and SELinux ranges, the name label), or it is lifeboat's own
/// (a drill's or an earlier copy's marks, which would make the copy look
/// like a drill's scratch namespace).
pub fn namespace_key_not_copied(key: &str) -> bool {
    key == NAME_LABEL
        || key.starts_with("lifeboat.dev/")
        || key.starts_with("openshift.io/sa.scc.")
        || key == "app.kubernetes.io/managed-by"
}

/// A copy's Namespace: the backup's labels and annotations except the
/// ones [`namespace_key_not_copied`] names, and the restored-from mark.
fn copy_namespace_metadata(p: &mut Planned, backup: &str) {
    let mut dropped = Vec::new();
    if let Some(meta) = p.obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["labels", "annotations"] {
            if let Some(map) = meta.get_mut(field).and_then(Value::as_object_mut) {
                let keys: Vec<String> = map
                    .keys()
                    .filter(|k| namespace_key_not_copied(k))
                    .cloned()
                    .collect();
                for k in keys {
                    map.remove(&k);
                    dropped.push(k);
                }
            }
        }
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(RESTORED_FROM_ANNOTATION.into(), backup.into());
        }
    }
    if !dropped.is_empty() {
        p.changes.push(format!(
            "not copied to the copy's namespace: {}",
            dropped.join(", ")
        ));
    }
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
    Skipped,
    Failed,
    /// Dry run: would be created / replaced.
    WouldCreate,
    WouldUpdate,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "FAILED",
            Outcome::WouldCreate => "would create",
            Outcome::WouldUpdate => "would update",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub outcome: Outcome,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<SkipReason>,
    /// Why it was skipped, the server's message when it failed, or what
    /// the restore changed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub backup: String,
    pub server: String,
    pub dry_run: bool,
    pub objects: Vec<ObjectResult>,
    pub not_selected: usize,
    pub seconds: f64,
}

impl Report {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.objects.iter().filter(|o| o.outcome == outcome).count()
    }
    pub fn failed(&self) -> bool {
        self.count(Outcome::Failed) > 0
    }
    /// Skipped objects, counted per reason.
    pub fn skipped_by_reason(&self) -> BTreeMap<SkipReason, usize> {
        let mut out = BTreeMap::new();
        for r in self.objects.iter().filter_map(|o| o.reason) {
            *out.entry(r).or_default() += 1;
        }
        out
    }
}

/// "2 harmless-copy rules, 1 exists and differs" (empty: "none").
pub fn describe_skips(counts: &BTreeMap<SkipReason, usize>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(r, n)| format!("{n} {}", r.label()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether every field of `want` has the same value in `have` (what the
/// server added, defaults and status, does not count).
fn contained(want: &Value, have: &Value) -> bool {
    // A ConfigMap's or Secret's keys are the user's: an extra key on the
    // target is a difference, unlike a field the server defaulted.
    for field in ["data", "binaryData"] {
        let w = want.get(field).filter(|v| !is_empty_map(v));
        let h = have.get(field).filter(|v| !is_empty_map(v));
        if w != h {
            return false;
        }
    }
    contained_fields(want, have)
}

fn is_empty_map(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.is_empty())
}

fn contained_fields(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| contained_fields(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| contained_fields(a, b))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => want == have,
    }
}

#[cfg(test)]
mod tests;
