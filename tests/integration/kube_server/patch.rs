//! PATCH: server-side apply (which also creates a missing object), JSON
//! merge patch and strategic merge patch (`strategic.rs`).

use hyper::header::CONTENT_TYPE;
use serde_json::{json, Value};

use super::errors::*;
use super::http::*;
use super::objects::*;
use super::routing::*;
use super::store::*;
use super::strategic;
use super::types::*;

impl State {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn patch(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        ctx: &Ctx,
    ) -> Res {
        let content_type = ctx
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        // Custom resources take no strategic merge patch (no merge keys).
        let strategic =
            content_type == "application/strategic-merge-patch+json" && rt.crd.is_none();
        let apply = match content_type.as_str() {
            "application/apply-patch+yaml" => true,
            "application/merge-patch+json" => false,
            _ if strategic => false,
            _ => return Err(unsupported_media_type()),
        };
        // An apply patch is YAML or JSON; a merge patch is JSON.
        let mut patch = parse_body(ctx.body, apply)?;
        let manager = match field_manager(ctx) {
            Some(m) => m.to_string(),
            None if apply => {
                return Err(bad_request(
                    "fieldManager: Required value: is required for apply patch",
                ))
            }
            None => DEFAULT_MANAGER.to_string(),
        };
        if apply {
            set_type_meta(&mut patch, rt, version, true)?;
        }
        if let Some(n) = meta_str(&patch, "name") {
            if !n.is_empty() && n != name {
                return Err(bad_request(&format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        if rt.namespaced {
            if let Some(body_ns) = meta_str(&patch, "namespace") {
                if !body_ns.is_empty() && Some(body_ns.as_str()) != ns {
                    return Err(bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        }
        if let Some(message) = self.rejection(name) {
            return Err(rejected(rt, name, &message));
        }
        let dry = dry_run(ctx);
        let operation = if apply { "Apply" } else { "Update" };
        let key = obj_key(rt, ns, name);
        let Some(existing) = self.objects.get(&key).cloned() else {
            if !apply || sub.is_some() {
                return Err(not_found(rt, name));
            }
            // Server-side apply creates a missing object (201). A
            // resourceVersion in the applied configuration does not matter then.
            let m = meta_mut(&mut patch);
            m.remove("resourceVersion");
            m.insert("name".into(), json!(name));
            let created = self.create(rt, version, ns, patch, &manager, operation, dry)?;
            return Ok(Reply::created(created));
        };
        // A resourceVersion in the patch is a precondition.
        if let Some(rv) = meta_str(&patch, "resourceVersion") {
            if !rv.is_empty() && Some(rv) != meta_str(&existing, "resourceVersion") {
                return Err(conflict(rt, name));
            }
        }
        strip_server_metadata(&mut patch);
        let mut merged = existing.clone();
        if strategic {
            strategic::apply(&mut merged, &patch);
        } else {
            merge_patch(&mut merged, &patch);
        }
        let updated = self.update(
            rt, version, &key, &existing, merged, &manager, operation, sub, dry,
        )?;
        Ok(Reply::ok(updated))
    }
}

/// Metadata a client cannot set through a patch.
fn strip_server_metadata(patch: &mut Value) {
    let m = meta_mut(patch);
    for k in [
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "generation",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
    ] {
        m.remove(k);
    }
}

/// JSON merge patch (RFC 7386): maps merge recursively, `null` deletes, lists
/// and scalars replace. Also used for server-side apply (without field
/// ownership).
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}
