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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

mod target;
pub use target::selects;

use crate::keys::Identities;
use crate::pipeline::{self, PipelineError};
use crate::repository::{Manifest, Repository};
use crate::source::kubernetes::{
    object_name, object_namespace, remove_node_ports, yaml, Cluster, Discovery, KubeError,
    ResourceType,
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
    if manifest.kind != "kubernetes-export" {
        return Err(KubeRestoreError::WrongKind {
            backup: manifest.id.clone(),
            kind: manifest.kind.clone(),
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

/// Annotation recording what the harmless-copy rules changed.
pub const HARMLESS_ANNOTATION: &str = "lifeboat.dev/harmless-copy";

/// The API groups Kubernetes itself serves; any other is a CRD's (some of
/// those end in `.k8s.io` too: the vertical autoscaler, Gateway API,
/// volume snapshots).
const BUILTIN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "metrics.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// Whether an API group is a custom one (a CRD's).
pub(crate) fn is_custom_group(group: &str) -> bool {
    !BUILTIN_GROUPS.contains(&group)
}

/// Makes a copy in another namespace unable to take traffic or do work.
fn make_harmless(p: &mut Planned) {
    let group = p.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    // Custom workloads and scalers (Argo Rollouts, KEDA ScaledObjects and
    // ScaledJobs, Knative Services...): lifeboat cannot know how to make
    // them idle, so a copy leaves them out.
    if is_custom_group(group) {
        let spec = p.obj.get("spec");
        let runs = ["replicas", "template", "scaleTargetRef", "jobTargetRef"]
            .iter()
            .find(|f| spec.and_then(|s| s.get(**f)).is_some());
        if let Some(field) = runs {
            p.skip = Some(Skip {
                reason: SkipReason::HarmlessCopy,
                detail: format!(
                    "a custom resource with spec.{field} could run or scale workloads in the copy; --live restores it"
                ),
            });
            return;
        }
    }
    let skip = |why: &str| {
        Some(Skip {
            reason: SkipReason::HarmlessCopy,
            detail: format!("{why}; --live restores it"),
        })
    };
    match (group, p.kind.as_str()) {
        ("networking.k8s.io" | "extensions", "Ingress") => {
            p.skip = skip("an Ingress would route live traffic to the copy");
            return;
        }
        ("gateway.networking.k8s.io", kind) if kind.ends_with("Route") => {
            p.skip = skip("a route would send live traffic to the copy");
            return;
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            p.skip = skip("an autoscaler would scale the copy's workloads up");
            return;
        }
        ("", "Pod") => {
            p.skip = skip("a bare Pod would run");
            return;
        }
        _ => {}
    }
    let Some(spec) = p.obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let mut change = None;
    match (group, p.kind.as_str()) {
        ("apps", "Deployment" | "StatefulSet" | "ReplicaSet") | ("", "ReplicationController") => {
            let was = spec.get("replicas").and_then(Value::as_i64).unwrap_or(1);
            if was != 0 {
                spec.insert("replicas".into(), 0.into());
                change = Some(format!("replicas {was} -> 0"));
            }
        }
        ("apps", "DaemonSet") => {
            if let Some(pod) = spec
                .get_mut("template")
                .and_then(|t| t.get_mut("spec"))
                .and_then(Value::as_object_mut)
            {
                let selector = pod
                    .entry("nodeSelector")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(sel) = selector.as_object_mut() {
                    sel.insert(HARMLESS_ANNOTATION.into(), "true".into());
                }
                change = Some(format!(
                    "node selector {HARMLESS_ANNOTATION}=true (runs on no node)"
                ));
            }
        }
        ("policy", "PodDisruptionBudget") => {
            // The copy runs no pods: a budget could only block draining
            // nodes if some appeared. It stays, allowing every eviction.
            let was = ["minAvailable", "maxUnavailable"]
                .iter()
                .find_map(|f| spec.get(*f).map(|v| format!("{f} {}", plain(v))));
            if spec.get("minAvailable") != Some(&Value::from(0))
                || spec.contains_key("maxUnavailable")
            {
                spec.remove("maxUnavailable");
                spec.insert("minAvailable".into(), 0.into());
                change = Some(format!(
                    "{} -> minAvailable 0 (the copy's pods may always be evicted)",
                    was.unwrap_or_else(|| "no budget".into())
                ));
            }
        }
        ("batch", "CronJob" | "Job")
            if spec.get("suspend").and_then(Value::as_bool) != Some(true) =>
        {
            spec.insert("suspend".into(), true.into());
            change = Some("suspended".to_string());
        }
        ("", "Service") => {
            let ty = spec
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP")
                .to_string();
            let claims_ips = spec.get("externalIPs").is_some();
            if ty == "NodePort" || ty == "LoadBalancer" || claims_ips {
                spec.insert("type".into(), "ClusterIP".into());
                for field in [
                    "externalIPs",
                    "loadBalancerIP",
                    "loadBalancerSourceRanges",
                    "loadBalancerClass",
                    "externalTrafficPolicy",
                    "allocateLoadBalancerNodePorts",
                    "healthCheckNodePort",
                ] {
                    spec.remove(field);
                }
                remove_node_ports(spec);
                change = Some(format!("type {ty} -> ClusterIP"));
            }
        }
        _ => {}
    }
    if let Some(change) = change {
        if let Some(meta) = p.obj.get_mut("metadata").and_then(Value::as_object_mut) {
            let annotations = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(a) = annotations.as_object_mut() {
                a.insert(HARMLESS_ANNOTATION.into(), Value::String(change.clone()));
            }
        }
        p.changes.push(change);
    }
}

/// A JSON scalar as written in YAML (`2`, `50%`).
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
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

/// How many objects are applied at once within a stage.
const PARALLEL: usize = 16;
/// How long a restored CRD may take to become established.
const CRD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Applies the plan, stage by stage. A permission or connection problem
/// that affects everything stops the restore; an object the server
/// rejects is reported and the rest go on.
pub async fn execute(
    cluster: &Cluster,
    plan: Plan,
    opts: &Options,
    dry_run: bool,
    backup: &str,
) -> Result<Report, KubeRestoreError> {
    let started = std::time::Instant::now();
    let mut discovery = cluster.discover().await?;
    let mut plan = plan;
    target::check(cluster, &discovery, &mut plan, opts, backup).await?;
    let mut results: Vec<ObjectResult> = Vec::with_capacity(plan.objects.len());
    let total = plan.objects.len();
    // The types the plan's own CRDs define (for a dry run, which does not
    // create them).
    let planned_types: BTreeSet<(String, String)> = plan
        .objects
        .iter()
        .filter(|p| p.stage == Stage::CustomResourceDefinitions && p.skip.is_none())
        .flat_map(|p| crd_types(&p.obj))
        .collect();
    let planned_ref = &planned_types;
    let mut stages: BTreeMap<Stage, Vec<Planned>> = BTreeMap::new();
    for p in plan.objects {
        stages.entry(p.stage).or_default().push(p);
    }
    for (stage, objects) in stages {
        use futures::StreamExt;
        let discovery_ref = &discovery;
        let existing = list_existing(cluster, &discovery, &objects).await?;
        let existing_ref = &existing;
        let mut done: Vec<(usize, ObjectResult)> =
            futures::stream::iter(objects.iter().enumerate())
                .map(|(i, p)| async move {
                    let known = existing_ref.get(&(
                        p.api_version.clone(),
                        p.kind.clone(),
                        p.namespace.clone(),
                    ));
                    (
                        i,
                        apply_one(cluster, discovery_ref, p, known, planned_ref, opts, dry_run)
                            .await,
                    )
                })
                .buffer_unordered(PARALLEL)
                .map(|(i, r)| r.map(|r| (i, r)))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()?;
        done.sort_by_key(|(i, _)| *i);
        let mut stage_results: Vec<ObjectResult> = done.into_iter().map(|(_, r)| r).collect();
        if stage == Stage::CustomResourceDefinitions && !dry_run {
            wait_established(cluster, &discovery, &mut stage_results).await?;
            // The new types are served now: look again.
            discovery = cluster.discover().await?;
        }
        let failed = stage_results
            .iter()
            .filter(|r| r.outcome == Outcome::Failed)
            .count();
        tracing::info!(stage = ?stage, objects = stage_results.len(), failed, done = results.len() + stage_results.len(), total, "stage restored");
        results.extend(stage_results);
    }
    Ok(Report {
        backup: backup.to_string(),
        server: cluster.server.clone(),
        dry_run,
        objects: results,
        not_selected: plan.not_selected,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// (apiVersion, kind) of every version a CRD serves.
fn crd_types(crd: &Value) -> Vec<(String, String)> {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = crd
        .pointer("/spec/names/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|versions| {
            versions
                .iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .map(|v| (format!("{group}/{v}"), kind.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The objects that exist on the target, per type and namespace
/// of a stage: one list per collection instead of one GET per object.
type Existing = HashMap<(String, String, Option<String>), HashMap<String, Value>>;

/// Lists the target's collections a stage writes to. A collection that
/// cannot be listed (the identity may get but not list) is left out:
/// its objects are looked up one by one.
async fn list_existing(
    cluster: &Cluster,
    discovery: &Discovery,
    objects: &[Planned],
) -> Result<Existing, KubeRestoreError> {
    let mut out = Existing::new();
    let mut collections: BTreeSet<(String, String, Option<String>)> = BTreeSet::new();
    for p in objects.iter().filter(|p| p.skip.is_none()) {
        collections.insert((p.api_version.clone(), p.kind.clone(), p.namespace.clone()));
    }
    for (api_version, kind, namespace) in collections {
        let Some(rt) = discovery.find(&api_version, &kind) else {
            continue;
        };
        if !rt.supports("list") {
            continue;
        }
        let ns = if rt.namespaced {
            namespace.as_deref()
        } else {
            None
        };
        let mut found = HashMap::new();
        let listed = cluster
            .list(rt, ns, None, |obj| {
                found.insert(object_name(&obj).to_string(), obj);
                Ok(())
            })
            .await;
        match listed {
            Ok(()) => {
                out.insert((api_version, kind, namespace), found);
            }
            Err(e @ (KubeError::Unreachable { .. } | KubeError::Unauthorized { .. })) => {
                return Err(e.into())
            }
            Err(e) => {
                tracing::debug!(resource = %rt.group_resource(), error = %e, "cannot list; looking objects up one by one");
            }
        }
    }
    Ok(out)
}

async fn apply_one(
    cluster: &Cluster,
    discovery: &Discovery,
    p: &Planned,
    known: Option<&HashMap<String, Value>>,
    planned_types: &BTreeSet<(String, String)>,
    opts: &Options,
    dry_run: bool,
) -> Result<ObjectResult, KubeRestoreError> {
    let mut result = ObjectResult {
        namespace: p.namespace.clone(),
        api_version: p.api_version.clone(),
        kind: p.kind.clone(),
        name: p.name.clone(),
        outcome: Outcome::Skipped,
        reason: None,
        detail: p.changes.join("; "),
    };
    if let Some(skip) = &p.skip {
        result.reason = Some(skip.reason);
        result.detail = skip.detail.clone();
        return Ok(result);
    }
    let Some(rt) = discovery.find(&p.api_version, &p.kind) else {
        if dry_run && planned_types.contains(&(p.api_version.clone(), p.kind.clone())) {
            result.outcome = Outcome::WouldCreate;
            result.detail = "its CustomResourceDefinition is restored first".into();
            return Ok(result);
        }
        result.outcome = Outcome::Failed;
        result.detail = format!(
            "the server has no resource type {} {}: install its CustomResourceDefinition first (restoring the backup's CRDs needs --cluster-resources when restoring part of it)",
            p.api_version, p.kind
        );
        return Ok(result);
    };
    let namespace = if rt.namespaced {
        p.namespace.as_deref()
    } else {
        None
    };
    let outcome = async {
        let existing = match known {
            Some(objects) => objects.get(&p.name).cloned(),
            None => cluster.get(rt, namespace, &p.name).await?,
        };
        // The cluster makes every namespace's `default` ServiceAccount
        // itself, before the restore gets to it: what the backup adds to it
        // (image pull secrets) is applied on top.
        let server_made = p.api_version == "v1" && p.kind == "ServiceAccount" && p.name == "default";
        // A copy into other namespaces shares cluster-scoped objects with
        // the original and never replaces them.
        let shared = p.namespace.is_none() && !opts.namespace_map.is_empty();
        Ok::<_, KubeError>(match existing {
            Some(have) if contained(&p.obj, &have) => (Outcome::Unchanged, None),
            Some(_) if shared => (
                Outcome::Skipped,
                Some((SkipReason::SharedClusterScoped, "cluster-scoped, exists and differs; a restore into mapped namespaces leaves it alone".to_string())),
            ),
            Some(_) if !opts.overwrite && !server_made => (
                Outcome::Skipped,
                Some((SkipReason::ExistsAndDiffers, "exists and differs; left alone (--overwrite replaces it)".to_string())),
            ),
            Some(_) if dry_run => (Outcome::WouldUpdate, None),
            Some(_) => {
                let applied = cluster.apply(rt, namespace, &p.name, &p.obj, true).await?;
                if !server_made {
                    // Apply sets the backup's fields but keeps keys other
                    // managers own: remove the data keys the backup lacks.
                    remove_extra_keys(cluster, rt, namespace, &p.name, &p.obj, &applied).await?;
                }
                if server_made {
                    result.detail = "made by the cluster; the backup's fields applied on top".into();
                }
                (Outcome::Updated, None)
            }
            None if dry_run => (Outcome::WouldCreate, None),
            None => {
                cluster.apply(rt, namespace, &p.name, &p.obj, true).await?;
                (Outcome::Created, None)
            }
        })
    }
    .await;
    match outcome {
        Ok((o, skip)) => {
            result.outcome = o;
            if let Some((reason, detail)) = skip {
                result.reason = Some(reason);
                result.detail = detail;
            }
        }
        // Everything else would fail the same way: stop.
        Err(e @ (KubeError::Unreachable { .. } | KubeError::Unauthorized { .. })) => {
            return Err(e.into())
        }
        Err(KubeError::Api { code, message, .. }) => {
            result.outcome = Outcome::Failed;
            result.detail = format!("{code}: {message}");
        }
        Err(e) => {
            result.outcome = Outcome::Failed;
            result.detail = e.to_string();
        }
    }
    Ok(result)
}

/// After an overwrite: data keys of a ConfigMap or Secret that are not in
/// the backup are removed (JSON merge patch with nulls).
async fn remove_extra_keys(
    cluster: &Cluster,
    rt: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    want: &Value,
    applied: &Value,
) -> Result<(), KubeError> {
    let mut patch = serde_json::Map::new();
    for field in ["data", "binaryData", "stringData"] {
        let Some(have) = applied.get(field).and_then(Value::as_object) else {
            continue;
        };
        let keep = want.get(field).and_then(Value::as_object);
        let extra: serde_json::Map<String, Value> = have
            .keys()
            .filter(|k| !keep.is_some_and(|m| m.contains_key(*k)))
            .map(|k| (k.clone(), Value::Null))
            .collect();
        if !extra.is_empty() {
            patch.insert(field.to_string(), Value::Object(extra));
        }
    }
    if patch.is_empty() {
        return Ok(());
    }
    cluster
        .merge_patch(rt, namespace, name, &Value::Object(patch))
        .await
        .map(|_| ())
}

/// Waits until every CRD just applied reports `Established`; one that
/// does not in time is marked failed.
async fn wait_established(
    cluster: &Cluster,
    discovery: &Discovery,
    results: &mut [ObjectResult],
) -> Result<(), KubeRestoreError> {
    let Some(rt) = discovery.find("apiextensions.k8s.io/v1", "CustomResourceDefinition") else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + CRD_TIMEOUT;
    for r in results.iter_mut() {
        if !matches!(r.outcome, Outcome::Created | Outcome::Updated) {
            continue;
        }
        loop {
            let crd = cluster.get(rt, None, &r.name).await?;
            let established = crd
                .as_ref()
                .and_then(|c| c.pointer("/status/conditions"))
                .and_then(Value::as_array)
                .is_some_and(|conds| {
                    conds.iter().any(|c| {
                        c.get("type").and_then(Value::as_str) == Some("Established")
                            && c.get("status").and_then(Value::as_str) == Some("True")
                    })
                });
            if established {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                r.outcome = Outcome::Failed;
                r.detail = format!(
                    "not established after {} s; its custom resources cannot be restored",
                    CRD_TIMEOUT.as_secs()
                );
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// The start of `apply.sh`: every flag goes to `kubectl apply`; `kubectl
/// wait` (for CustomResourceDefinitions) gets only the flags that choose
/// the cluster, and none of it runs in a dry run, which creates no
/// definition to wait for. POSIX sh: the flags are kept one a line.
const APPLY_SH_HEAD: &str = r#"#!/bin/sh
# Applies this export with kubectl in dependency order (written by lifeboat restore --to-dir).
# Usage: sh apply.sh [kubectl apply flags, e.g. --context prod --dry-run=server]
set -e
cd "$(dirname "$0")"
nl='
'
dry=
conn=
value_of=
existing=
for a in "$@"; do
  if [ -n "$value_of" ]; then conn="$conn$nl$a"; value_of=; continue; fi
  case "$a" in
    --dry-run|--dry-run=*) [ "$a" = "--dry-run=none" ] || dry=1 ;;
    --context=*|--kubeconfig=*|--cluster=*|--user=*|--server=*|--token=*|--as=*|--as-group=*|--certificate-authority=*|--client-certificate=*|--client-key=*|--insecure-skip-tls-verify|--insecure-skip-tls-verify=*|--request-timeout=*|--tls-server-name=*)
      conn="$conn$nl$a" ;;
    --context|--kubeconfig|--cluster|--user|--server|-s|--token|--as|--as-group|--certificate-authority|--client-certificate|--client-key|--request-timeout|--tls-server-name)
      conn="$conn$nl$a"; value_of=1 ;;
  esac
done
"#;

const APPLY_SH_WAIT_CRDS: &str = r#"if [ -z "$dry" ]; then
  (IFS=$nl; set -f; kubectl wait $conn --for condition=established --timeout=60s -f _cluster/apiextensions.k8s.io-v1-CustomResourceDefinition/)
fi
"#;

/// apply.sh's guard for a copy's target namespace (`@NS@`): like the
/// restore into the cluster, it refuses a namespace that exists (it cannot
/// tell what a namespace holds, so it is stricter: any existing one).
/// With `LIFEBOAT_INTO_EXISTING`, an existing namespace is left as it is
/// (the copy's Namespace file is not applied onto it) and nothing is
/// checked: apply.sh cannot see which pods its objects would select.
const APPLY_SH_GUARD: &str = r#"found=$(IFS=$nl; set -f; kubectl get namespace @NS@ $conn -o name --ignore-not-found)
if [ -n "$found" ]; then
  if [ -z "$LIFEBOAT_INTO_EXISTING" ]; then
    echo "apply.sh: namespace @NS@ exists; this copy of @FROM@ must not land among other workloads. Pick a new name (lifeboat restore --namespace-map @FROM@:NEW --to-dir ...), delete it, or run with LIFEBOAT_INTO_EXISTING=1 to apply anyway: then its Namespace is left as it is, and nothing checks which of its pods the copy's Services, policies and budgets select (lifeboat restore --into-existing does)" >&2
    exit 5
  fi
  existing="$existing @NS@"
fi
"#;

/// One line per object for `DIR/plan.txt`: what is written, what the
/// rules changed, what is left out and why.
fn plan_lines(plan: &Plan) -> String {
    let mut out = String::from(
        "# lifeboat restore --to-dir: every selected object, and what the restore did to it\n",
    );
    for (from, to) in &plan.namespaces {
        if from != to {
            out.push_str(&format!("# namespace {from} -> {to}\n"));
        }
    }
    for p in &plan.objects {
        let what = format!(
            "{}/{} {}",
            p.namespace.as_deref().unwrap_or("-"),
            p.kind,
            p.name
        );
        match &p.skip {
            Some(skip) => out.push_str(&format!(
                "skipped  {what}: {} ({})\n",
                skip.detail,
                skip.reason.label()
            )),
            None if p.changes.is_empty() => out.push_str(&format!("as is    {what}\n")),
            None => out.push_str(&format!("changed  {what}: {}\n", p.changes.join("; "))),
        }
    }
    out
}

/// Writes the objects the plan applies as plain YAML files
/// (`DIR/namespace/group-version-Kind/name.yaml`), `DIR/plan.txt` (every
/// object, what the rules changed or why it is left out) and
/// `DIR/apply.sh`, which applies them with kubectl in dependency order
/// and, for a copy, refuses a target namespace that exists (unless
/// `into_existing`). Files are 0600 and folders 0700: Secrets are in
/// plaintext there.
pub fn write_dir(plan: &Plan, dir: &Path, into_existing: bool) -> Result<usize, KubeRestoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let write_err = |path: &Path, source: std::io::Error| KubeRestoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| write_err(dir, e))?;
        if entries.next().is_some() {
            return Err(KubeRestoreError::DirNotEmpty(dir.to_path_buf()));
        }
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder.create(dir).map_err(|e| write_err(dir, e))?;
    let mut written = 0;
    // Folders in the order kubectl should apply them.
    let mut order: Vec<(Stage, String)> = Vec::new();
    for p in plan.objects.iter().filter(|p| p.skip.is_none()) {
        let rel = crate::source::kubernetes::entry_path(
            p.namespace.as_deref().filter(|_| p.kind != "Namespace"),
            &p.api_version,
            &p.kind,
            &p.name,
        );
        let path = dir.join(&rel);
        let folder = path.parent().expect("entry paths have a folder");
        builder.create(folder).map_err(|e| write_err(folder, e))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| write_err(&path, e))?;
        use std::io::Write;
        file.write_all(yaml::to_yaml(&p.obj).as_bytes())
            .map_err(|e| write_err(&path, e))?;
        written += 1;
        let folder_rel = rel
            .rsplit_once('/')
            .map(|(f, _)| f.to_string())
            .unwrap_or_default();
        if !order.iter().any(|(_, f)| *f == folder_rel) {
            order.push((p.stage, folder_rel));
        }
    }
    order.sort();
    let mut script = String::from(APPLY_SH_HEAD);
    if into_existing {
        // Asked for when the folder was written.
        script.push_str("LIFEBOAT_INTO_EXISTING=${LIFEBOAT_INTO_EXISTING:-1}\n");
    }
    for (from, to) in plan.namespaces.iter().filter(|(f, t)| f != t) {
        script.push_str(&APPLY_SH_GUARD.replace("@NS@", to).replace("@FROM@", from));
    }
    let mut crds_done = false;
    for (stage, folder) in &order {
        if *stage > Stage::CustomResourceDefinitions && !crds_done {
            crds_done = true;
            if order[0].0 == Stage::CustomResourceDefinitions {
                script.push_str(APPLY_SH_WAIT_CRDS);
            }
        }
        if *stage == Stage::Namespaces {
            // One by one: a namespace that exists is not changed.
            for p in plan
                .objects
                .iter()
                .filter(|p| p.skip.is_none() && p.stage == Stage::Namespaces)
            {
                let file =
                    crate::source::kubernetes::entry_path(None, &p.api_version, &p.kind, &p.name);
                if file.rsplit_once('/').map(|(f, _)| f) != Some(folder.as_str()) {
                    continue;
                }
                script.push_str(&format!(
                    "case \" $existing \" in *\" {} \"*) echo \"apply.sh: namespace {} exists; left as it is\" ;; *) kubectl apply \"$@\" --server-side -f '{file}' ;; esac\n",
                    p.name, p.name
                ));
            }
            continue;
        }
        script.push_str(&format!(
            "kubectl apply \"$@\" --server-side -f '{folder}/'\n"
        ));
    }
    let script_path = dir.join("apply.sh");
    std::fs::write(&script_path, script).map_err(|e| write_err(&script_path, e))?;
    let plan_path = dir.join("plan.txt");
    std::fs::write(&plan_path, plan_lines(plan)).map_err(|e| write_err(&plan_path, e))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest() -> Manifest {
        serde_json::from_value(json!({
            "format": 1, "id": "20261123T000000Z-abcd", "policy": "p", "source": "s",
            "kind": "kubernetes-export", "started_at": "2026-11-23T00:00:00Z", "finished_at": "2026-11-23T00:00:01Z",
            "server_version": "Kubernetes v1.32.0", "tool_version": "lifeboat", "dump_tool_version": "x",
            "artifacts": []
        }))
        .unwrap()
    }

    fn exported(obj: Value) -> Exported {
        Exported {
            path: String::new(),
            obj,
        }
    }

    /// Runs apply.sh's flag handling with a kubectl that logs its arguments.
    #[test]
    fn apply_sh_gives_wait_the_cluster_flags_only_and_skips_it_in_a_dry_run() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let log = dir.path().join("log");
        let fake = bin.join("kubectl");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nprintf '%s|' \"$@\" >> '{}'\necho >> '{}'\n",
                log.display(),
                log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.path().join("apply.sh");
        std::fs::write(
            &script,
            format!(
                "{APPLY_SH_HEAD}{APPLY_SH_WAIT_CRDS}kubectl apply \"$@\" --server-side -f 'x/'\n"
            ),
        )
        .unwrap();
        let run = |args: &[&str]| {
            let _ = std::fs::remove_file(&log);
            let st = std::process::Command::new("sh")
                .arg(&script)
                .args(args)
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .status()
                .unwrap();
            assert!(st.success(), "{args:?}");
            std::fs::read_to_string(&log).unwrap()
        };
        let out = run(&[
            "--context",
            "my prod",
            "--validate=false",
            "--kubeconfig=/k c",
        ]);
        assert_eq!(
            out,
            "wait|--context|my prod|--kubeconfig=/k c|--for|condition=established|--timeout=60s|-f|_cluster/apiextensions.k8s.io-v1-CustomResourceDefinition/|\n\
             apply|--context|my prod|--validate=false|--kubeconfig=/k c|--server-side|-f|x/|\n"
        );
        let out = run(&["--dry-run=server", "--context=c"]);
        assert_eq!(
            out,
            "apply|--dry-run=server|--context=c|--server-side|-f|x/|\n"
        );
    }

    #[test]
    fn mapping_rewrites_namespaces_and_references_and_makes_a_harmless_copy() {
        let objects = vec![
            exported(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod",
                    "labels": {"team": "shop", "pod-security.kubernetes.io/enforce": "restricted",
                               "app.kubernetes.io/managed-by": "Helm", "lifeboat.dev/drill": "x"},
                    "annotations": {"owner": "shop@example.com", "openshift.io/sa.scc.uid-range": "1000/10000"}}}),
            ),
            exported(
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "prod"}, "spec": {"replicas": 3}}),
            ),
            exported(
                json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", "namespace": "prod"},
                    "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}}),
            ),
            exported(
                json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web", "namespace": "prod"},
                    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 5}}),
            ),
            exported(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "rb", "namespace": "prod"},
                "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "prod"}, {"kind": "ServiceAccount", "name": "m", "namespace": "monitoring"}]}),
            ),
            exported(
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "prod"}}),
            ),
            exported(
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb", "namespace": "prod"},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080}], "externalTrafficPolicy": "Local"}}),
            ),
            exported(
                json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "prod"}, "spec": {"schedule": "* * * * *"}}),
            ),
            exported(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}),
            ),
            exported(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}}),
            ),
            exported(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "cr"}}),
            ),
        ];
        let opts = Options {
            namespace_map: parse_mapping(&["prod:drill".into()]).unwrap(),
            ..Default::default()
        };
        let plan = plan(&manifest(), objects, &opts).unwrap();
        assert_eq!(plan.not_selected, 3, "other namespace and the cluster role");
        let by_kind = |k: &str| plan.objects.iter().find(|p| p.kind == k).unwrap();
        assert_eq!(plan.objects[0].kind, "Namespace");
        assert_eq!(
            by_kind("Namespace").obj,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "drill",
                "labels": {"team": "shop", "pod-security.kubernetes.io/enforce": "restricted"},
                "annotations": {"owner": "shop@example.com", RESTORED_FROM_ANNOTATION: "20261123T000000Z-abcd"}}})
        );
        assert_eq!(
            by_kind("Namespace").changes,
            ["not copied to the copy's namespace: app.kubernetes.io/managed-by, lifeboat.dev/drill, openshift.io/sa.scc.uid-range"]
        );
        let pdb = by_kind("PodDisruptionBudget");
        assert_eq!(
            pdb.obj.pointer("/spec"),
            Some(&json!({"minAvailable": 0, "selector": {"matchLabels": {"app": "web"}}}))
        );
        assert_eq!(
            pdb.changes,
            ["minAvailable 2 -> minAvailable 0 (the copy's pods may always be evicted)"]
        );
        assert_eq!(
            by_kind("HorizontalPodAutoscaler")
                .skip
                .as_ref()
                .unwrap()
                .reason,
            SkipReason::HarmlessCopy
        );

        // --to-dir writes exactly what the plan applies, says what changed
        // and why the rest is left out, and its apply.sh guards the copy.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("export");
        write_dir(&plan, &out, false).unwrap();
        let deployment: Value = serde_yaml::from_str(
            &std::fs::read_to_string(out.join("drill/apps-v1-Deployment/web.yaml")).unwrap(),
        )
        .unwrap();
        assert_eq!(deployment.pointer("/spec/replicas"), Some(&json!(0)));
        assert!(!out.join("drill/networking.k8s.io-v1-Ingress").exists());
        let plan_txt = std::fs::read_to_string(out.join("plan.txt")).unwrap();
        assert!(
            plan_txt.contains("changed  drill/Deployment web: replicas 3 -> 0"),
            "{plan_txt}"
        );
        assert!(
            plan_txt.contains("skipped  drill/Ingress web: an Ingress would route live traffic"),
            "{plan_txt}"
        );
        let script = std::fs::read_to_string(out.join("apply.sh")).unwrap();
        assert!(
            script.contains("kubectl get namespace drill $conn -o name --ignore-not-found"),
            "{script}"
        );
        assert!(
            script.contains(
                "*\" drill \"*) echo \"apply.sh: namespace drill exists; left as it is\""
            ),
            "{script}"
        );
        let out2 = dir.path().join("export2");
        write_dir(&plan, &out2, true).unwrap();
        assert!(std::fs::read_to_string(out2.join("apply.sh"))
            .unwrap()
            .contains("LIFEBOAT_INTO_EXISTING=${LIFEBOAT_INTO_EXISTING:-1}"));
        let d = by_kind("Deployment");
        assert_eq!(d.obj.pointer("/metadata/namespace"), Some(&json!("drill")));
        assert_eq!(d.obj.pointer("/spec/replicas"), Some(&json!(0)));
        assert_eq!(
            d.obj
                .pointer("/metadata/annotations/lifeboat.dev~1harmless-copy"),
            Some(&json!("replicas 3 -> 0"))
        );
        let rb = by_kind("RoleBinding");
        assert_eq!(
            rb.obj.pointer("/subjects/0/namespace"),
            Some(&json!("drill"))
        );
        assert_eq!(
            rb.obj.pointer("/subjects/1/namespace"),
            Some(&json!("monitoring"))
        );
        assert!(by_kind("Ingress").skip.is_some());
        let svc = by_kind("Service");
        assert_eq!(
            svc.obj.pointer("/spec"),
            Some(&json!({"type": "ClusterIP", "ports": [{"port": 80}]}))
        );
        assert_eq!(
            by_kind("CronJob").obj.pointer("/spec/suspend"),
            Some(&json!(true))
        );
        // Stages: Namespace, Service, RBAC, workloads, rest.
        let stages: Vec<Stage> = plan.objects.iter().map(|p| p.stage).collect();
        let mut sorted = stages.clone();
        sorted.sort();
        assert_eq!(stages, sorted);
    }

    #[test]
    fn same_namespace_restores_as_is_and_live_keeps_everything() {
        let objects = || {
            vec![
                exported(
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}}),
                ),
                exported(
                    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "prod"}, "spec": {"replicas": 3}}),
                ),
            ]
        };
        let plan1 = plan(&manifest(), objects(), &Options::default()).unwrap();
        assert_eq!(
            plan1.objects[1].obj.pointer("/spec/replicas"),
            Some(&json!(3))
        );
        let opts = Options {
            namespace_map: parse_mapping(&["prod:copy".into()]).unwrap(),
            live: true,
            ..Default::default()
        };
        let plan2 = plan(&manifest(), objects(), &opts).unwrap();
        assert_eq!(
            plan2.objects[1].obj.pointer("/spec/replicas"),
            Some(&json!(3))
        );
        assert_eq!(
            plan2.objects[1].obj.pointer("/metadata/namespace"),
            Some(&json!("copy"))
        );
    }

    #[test]
    fn include_exclude_and_unknown_namespaces() {
        let objects = || {
            vec![
                exported(
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}}),
                ),
                exported(
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "prod"}}),
                ),
                exported(
                    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "prod"}}),
                ),
            ]
        };
        let opts = Options {
            exclude: vec!["secrets".into()],
            ..Default::default()
        };
        let p = plan(&manifest(), objects(), &opts).unwrap();
        assert_eq!(p.objects.len(), 2);
        let opts = Options {
            include: vec!["Secret".into()],
            ..Default::default()
        };
        let p = plan(&manifest(), objects(), &opts).unwrap();
        assert_eq!(
            p.objects
                .iter()
                .map(|o| o.kind.as_str())
                .collect::<Vec<_>>(),
            ["Namespace", "Secret"]
        );
        let opts = Options {
            namespaces: vec!["nope".into()],
            ..Default::default()
        };
        assert!(matches!(
            plan(&manifest(), objects(), &opts),
            Err(KubeRestoreError::NoSuchNamespace { .. })
        ));
        assert!(parse_mapping(&["prod".into()]).is_err());
        assert!(parse_mapping(&["a:x".into(), "b:x".into()]).is_err());
        assert!(matches!(
            parse_mapping(&["prod:a".into(), "prod:b".into()]),
            Err(KubeRestoreError::MappingTwice { .. })
        ));
        let opts = Options {
            namespaces: vec!["prod".into()],
            namespace_map: parse_mapping(&["other:prod".into()]).unwrap(),
            ..Default::default()
        };
        assert!(matches!(
            plan(&manifest(), objects(), &opts),
            Err(KubeRestoreError::TargetRestoredInPlace { .. })
        ));
        // Custom workloads and scalers are left out of a copy.
        let mut rollout = Planned {
            stage: Stage::Rest,
            source_namespace: Some("prod".into()),
            namespace: Some("copy".into()),
            api_version: "argoproj.io/v1alpha1".into(),
            kind: "Rollout".into(),
            name: "web".into(),
            skip: None,
            changes: Vec::new(),
            obj: json!({"spec": {"replicas": 3}}),
        };
        make_harmless(&mut rollout);
        assert!(rollout.skip.unwrap().detail.contains("spec.replicas"));
        // A bad name is named, with the rule.
        let long = "a".repeat(64);
        for (bad, why) in [
            ("Scratch_Bad", "it contains 'S'"),
            ("a.b", "it contains '.'"),
            (long.as_str(), "it has 64 characters"),
            ("-x", "starts or ends with '-'"),
        ] {
            let e = parse_mapping(&[format!("prod:{bad}")])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("'{bad}' in --namespace-map 'prod:{bad}'"))
                    && e.contains(why)
                    && e.contains("DNS-1123"),
                "{e}"
            );
        }
    }

    #[test]
    fn containment_ignores_server_additions() {
        let want = json!({"metadata": {"name": "a"}, "data": {"k": "v"}, "spec": {"replicas": 1}});
        let have = json!({"metadata": {"name": "a", "uid": "u"}, "data": {"k": "v"}, "spec": {"replicas": 1.0, "x": 1}, "status": {}});
        assert!(contained(&want, &have));
        assert!(!contained(&json!({"data": {"k": "w"}}), &have));
    }
}
