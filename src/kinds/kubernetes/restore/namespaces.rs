//! Restoring into other namespaces: `--namespace-map` parsed and checked,
//! namespace references rewritten, and what a copy cannot share with the
//! original (node ports, the Namespace's own labels and marks).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{KubeRestoreError, Planned};
use crate::kinds::kubernetes::clean::remove_node_ports;

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

/// Moves the object into its target namespace and rewrites references to
/// mapped namespaces anywhere in it (`namespace: prod` in RoleBinding
/// subjects, webhook service references, `namespaces: [prod]` in affinity
/// terms and policies).
pub(super) fn rewrite_namespaces(p: &mut Planned, map: &BTreeMap<String, String>) {
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
pub(super) fn release_node_ports(p: &mut Planned) {
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
pub(super) fn copy_namespace_metadata(p: &mut Planned, backup: &str) {
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
