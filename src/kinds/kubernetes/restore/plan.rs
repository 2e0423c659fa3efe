//! The restore plan: which objects of the export are selected, how they
//! are rewritten for their target namespace, and in which order they are
//! applied. Pure: the same plan goes to the cluster and to `--to-dir`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::harmless::make_harmless;
use super::namespaces::{copy_namespace_metadata, release_node_ports, rewrite_namespaces};
use super::{Exported, KubeRestoreError, Options};
use crate::kube::{object_name, object_namespace, ResourceType};
use crate::repository::Manifest;

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
    check_namespaces(manifest, opts, &available, &wanted)?;
    let known = known_types(manifest, &objects);
    check_kinds(manifest, opts, &known)?;
    let mut out = Vec::new();
    let mut not_selected = 0;
    for Exported { obj, .. } in objects {
        match plan_object(obj, manifest, opts, &known, &wanted, whole) {
            Some(p) => out.push(p),
            None => not_selected += 1,
        }
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

/// Refuses a copy into a namespace that is also restored as itself, and a
/// namespace the backup does not hold.
fn check_namespaces(
    manifest: &Manifest,
    opts: &Options,
    available: &BTreeSet<String>,
    wanted: &BTreeSet<String>,
) -> Result<(), KubeRestoreError> {
    for (from, to) in &opts.namespace_map {
        if from != to && opts.namespaces.contains(to) {
            return Err(KubeRestoreError::TargetRestoredInPlace {
                namespace: to.clone(),
                from: from.clone(),
            });
        }
    }
    for ns in wanted {
        if !available.contains(ns) {
            return Err(KubeRestoreError::NoSuchNamespace {
                namespace: ns.clone(),
                backup: manifest.id.clone(),
                available: available.iter().cloned().collect::<Vec<_>>().join(", "),
            });
        }
    }
    Ok(())
}

/// Refuses an `--include` or `--exclude` that names no kind in the backup.
fn check_kinds(
    manifest: &Manifest,
    opts: &Options,
    known: &[ResourceType],
) -> Result<(), KubeRestoreError> {
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
    Ok(())
}

/// One exported object moved to its target namespace and, for a copy,
/// rewritten (node ports, the Namespace's marks, the harmless-copy rules);
/// None when the namespaces or kinds asked for leave it out.
fn plan_object(
    obj: Value,
    manifest: &Manifest,
    opts: &Options,
    known: &[ResourceType],
    wanted: &BTreeSet<String>,
    whole: bool,
) -> Option<Planned> {
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
    let rt = type_of(known, &api_version, &kind);
    let selected = match &home {
        Some(ns) => wanted.contains(ns),
        None => whole || opts.cluster_resources,
    } && (is_namespace
        || ((opts.include.is_empty() || opts.include.iter().any(|i| rt.matches(i)))
            && !opts.exclude.iter().any(|e| rt.matches(e))));
    if !selected {
        return None;
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
    Some(p)
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
