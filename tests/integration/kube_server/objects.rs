//! Helpers on objects: the form a response carries, metadata access, type
//! metadata checks, managedFields entries, Namespace defaulting and
//! `kubectl apply`'s last-applied-configuration annotation.

use serde_json::{json, Map, Value};

use super::errors::*;
use super::http::*;
use super::types::*;
use super::util::*;

/// The object as returned by GET/create/update: apiVersion of the request.
pub(super) fn output(rt: &ResourceType, version: &str, obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(m) = out.as_object_mut() {
        m.insert("apiVersion".into(), json!(gv(&rt.group, version)));
        m.insert("kind".into(), json!(rt.kind));
    }
    out
}

/// The metadata map of an object, created if missing.
pub(super) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let root = obj.as_object_mut().expect("made an object above");
    let m = root.entry("metadata").or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    m.as_object_mut().expect("made an object above")
}

/// A map inside metadata (labels, annotations), created if missing.
fn meta_map_mut<'a>(obj: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    let m = meta_mut(obj);
    let e = m.entry(field).or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    e.as_object_mut().expect("made an object above")
}

pub(super) fn meta_str(obj: &Value, key: &str) -> Option<String> {
    obj.get("metadata")?.get(key)?.as_str().map(String::from)
}

pub(super) fn set_or_remove(obj: &mut Value, key: &str, value: Option<Value>) {
    if let Some(m) = obj.as_object_mut() {
        match value {
            Some(v) => {
                m.insert(key.into(), v);
            }
            None => {
                m.remove(key);
            }
        }
    }
}

/// Checks and sets apiVersion/kind of a request body. Server-side apply
/// requires both to be present and right; POST/PUT may leave them out.
pub(super) fn set_type_meta(
    obj: &mut Value,
    rt: &ResourceType,
    version: &str,
    apply: bool,
) -> Result<(), Reply> {
    let expected = gv(&rt.group, version);
    let m = obj
        .as_object_mut()
        .ok_or_else(|| bad_request("the request body must be a JSON object"))?;
    let api_version = m
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = m
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if apply {
        if api_version != expected {
            return Err(bad_request(&format!(
                "Incorrect version specified in apply patch. Specified patch version: {api_version}, expected: {expected}"
            )));
        }
        if kind != rt.kind {
            return Err(bad_request(&format!(
                "Incorrect kind specified in apply patch. Specified patch kind: {kind}, expected: {}",
                rt.kind
            )));
        }
    } else {
        if !api_version.is_empty() && api_version != expected {
            return Err(bad_request(&format!(
                "the API version in the data ({api_version}) does not match the expected API version ({expected})"
            )));
        }
        if !kind.is_empty() && kind != rt.kind {
            return Err(bad_request(&format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                rt.kind
            )));
        }
    }
    m.insert("apiVersion".into(), json!(expected));
    m.insert("kind".into(), json!(rt.kind));
    Ok(())
}

pub(super) fn managed_entry(
    manager: &str,
    operation: &str,
    api_version: &str,
    sub: Option<&str>,
) -> Value {
    let mut entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now_ts(),
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {}},
    });
    if let Some(s) = sub {
        entry["subresource"] = json!(s);
    }
    entry
}

/// Replaces the entry of the same manager/operation/subresource, or appends.
pub(super) fn add_managed_fields_entry(obj: &mut Value, entry: Value) {
    let m = meta_mut(obj);
    let list = m.entry("managedFields").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let list = list.as_array_mut().expect("made an array above");
    let same = |e: &Value| {
        e.get("manager") == entry.get("manager")
            && e.get("operation") == entry.get("operation")
            && e.get("subresource") == entry.get("subresource")
    };
    list.retain(|e| !same(e));
    list.push(entry);
}

/// Namespace defaulting: finalizer, phase, and the immutable name label.
pub(super) fn namespace_defaults(obj: &mut Value, name: &str) {
    if let Some(root) = obj.as_object_mut() {
        let spec = root.entry("spec").or_insert_with(|| json!({}));
        if let Some(spec) = spec.as_object_mut() {
            spec.entry("finalizers")
                .or_insert_with(|| json!(["kubernetes"]));
        }
        let status = root.entry("status").or_insert_with(|| json!({}));
        if let Some(status) = status.as_object_mut() {
            status.entry("phase").or_insert_with(|| json!("Active"));
        }
    }
    meta_map_mut(obj, "labels").insert("kubernetes.io/metadata.name".into(), json!(name));
}

/// Adds `kubectl.kubernetes.io/last-applied-configuration` as `kubectl
/// apply` does (the applied configuration as compact JSON plus a newline).
pub(super) fn with_last_applied(mut obj: Value) -> Value {
    let mut applied = Map::new();
    for k in ["apiVersion", "kind"] {
        if let Some(v) = obj.get(k) {
            applied.insert(k.into(), v.clone());
        }
    }
    let mut meta = Map::new();
    for k in ["name", "namespace", "labels"] {
        if let Some(v) = obj.get("metadata").and_then(|m| m.get(k)) {
            meta.insert(k.into(), v.clone());
        }
    }
    applied.insert("metadata".into(), Value::Object(meta));
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                applied.insert(k.clone(), v.clone());
            }
        }
    }
    let text = format!("{}\n", Value::Object(applied));
    meta_map_mut(&mut obj, "annotations").insert(
        "kubectl.kubernetes.io/last-applied-configuration".into(),
        json!(text),
    );
    obj
}
