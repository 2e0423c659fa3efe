//! The harmless-copy rules: what a copy in another namespace becomes
//! unless `--live` (no replicas, suspended Jobs, ClusterIP Services, relaxed
//! budgets; Ingresses, routes, autoscalers, bare Pods and custom workloads
//! left out).

use serde_json::{Map, Value};

use super::{Planned, Skip, SkipReason};
use crate::kinds::kubernetes::clean::remove_node_ports;

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
pub(super) fn make_harmless(p: &mut Planned) {
    let group = p.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    if let Some(skip) = left_out(group, p) {
        p.skip = Some(skip);
        return;
    }
    let Some(spec) = p.obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(change) = make_idle(group, &p.kind, spec) {
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

/// What a copy leaves out, and why: objects that would take traffic,
/// scale, or run with no way to make them idle.
fn left_out(group: &str, p: &Planned) -> Option<Skip> {
    // Custom workloads and scalers (Argo Rollouts, KEDA ScaledObjects and
    // ScaledJobs, Knative Services...): lifeboat cannot know how to make
    // them idle, so a copy leaves them out.
    if is_custom_group(group) {
        let spec = p.obj.get("spec");
        let runs = ["replicas", "template", "scaleTargetRef", "jobTargetRef"]
            .iter()
            .find(|f| spec.and_then(|s| s.get(**f)).is_some());
        if let Some(field) = runs {
            return Some(Skip {
                reason: SkipReason::HarmlessCopy,
                detail: format!(
                    "a custom resource with spec.{field} could run or scale workloads in the copy; --live restores it"
                ),
            });
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
            skip("an Ingress would route live traffic to the copy")
        }
        ("gateway.networking.k8s.io", kind) if kind.ends_with("Route") => {
            skip("a route would send live traffic to the copy")
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            skip("an autoscaler would scale the copy's workloads up")
        }
        ("", "Pod") => skip("a bare Pod would run"),
        _ => None,
    }
}

/// Rewrites the spec of a kept object so it runs nothing and takes no
/// outside traffic; returns what changed, if anything did.
fn make_idle(group: &str, kind: &str, spec: &mut Map<String, Value>) -> Option<String> {
    let mut change = None;
    match (group, kind) {
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
    change
}

/// A JSON scalar as written in YAML (`2`, `50%`).
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
