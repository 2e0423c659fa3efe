//! Subresources: the `status` the server owns (reset on create) and the
//! `scale` subresource of workloads.

use serde_json::{json, Value};

use super::crd::*;
use super::errors::*;
use super::http::*;
use super::objects::*;
use super::routing::*;
use super::store::*;
use super::types::*;

impl State {
    /// The `scale` subresource of a workload: an autoscaling/v1 Scale
    /// (`kubectl scale`, autoscalers). A write sets `spec.replicas`.
    pub(super) fn scale(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: &str,
        verb: &str,
        ctx: &Ctx,
    ) -> Res {
        let key = obj_key(rt, ns, name);
        let existing = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| not_found(rt, name))?;
        if verb == "get" {
            return Ok(Reply::ok(scale_of(&existing)));
        }
        let body = parse_body(ctx.body, false)?;
        let replicas = match body.pointer("/spec/replicas") {
            None => existing
                .pointer("/spec/replicas")
                .cloned()
                .unwrap_or(json!(1)),
            Some(r) if r.as_i64().is_some_and(|n| n >= 0) => r.clone(),
            Some(r) => {
                return Err(invalid(
                    rt,
                    name,
                    "spec.replicas",
                    "FieldValueInvalid",
                    &format!("Invalid value: {r}: must be greater than or equal to 0"),
                ))
            }
        };
        let mut new = existing.clone();
        new["spec"]["replicas"] = replicas;
        let manager = field_manager(ctx).unwrap_or(DEFAULT_MANAGER).to_string();
        let updated = self.update(
            rt,
            version,
            &key,
            &existing,
            new,
            &manager,
            "Update",
            None,
            dry_run(ctx),
        )?;
        Ok(Reply::ok(scale_of(&updated)))
    }
}

/// A workload's autoscaling/v1 Scale.
fn scale_of(obj: &Value) -> Value {
    let meta = |k: &str| {
        obj.pointer(&format!("/metadata/{k}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta("name"), "namespace": meta("namespace"), "uid": meta("uid"),
            "resourceVersion": meta("resourceVersion"), "creationTimestamp": meta("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// PrepareForCreate of the real registries: clients do not set status.
pub(super) fn reset_status(rt: &ResourceType, obj: &mut Value) {
    let status = match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => Some(json!({"phase": "Pending"})),
        ("", "namespaces") => Some(json!({"phase": "Active"})),
        ("", "services") => Some(json!({"loadBalancer": {}})),
        ("", "persistentvolumeclaims") => Some(json!({"phase": "Pending"})),
        (CRD_GROUP, "customresourcedefinitions") => Some(crd_initial_status(obj)),
        // Custom resources with a status subresource lose .status on create.
        _ if rt.crd.is_some() => None,
        _ => Some(json!({})),
    };
    set_or_remove(obj, "status", status);
}
