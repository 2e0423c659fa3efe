//! What is already in the target namespaces, checked before anything is
//! written: a namespace being deleted is refused; a copy (a namespace
//! mapped to another name) is refused a target that holds objects of its
//! own unless `--into-existing`; and in a copy's target, objects that
//! would select pods that are not part of the restore (Services,
//! NetworkPolicies, PodDisruptionBudgets, autoscalers, and workloads that
//! would adopt bare Pods) are skipped.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::{KubeRestoreError, Options, Plan, Planned, Skip, SkipReason, RESTORED_FROM_ANNOTATION};
use crate::kinds::kubernetes::clean::{clean, never_exported};
use crate::kube::{object_name, Cluster, Discovery, KubeError, ResourceType};

/// How many of a non-empty namespace's objects the refusal names.
const SHOWN: usize = 12;

/// One object found in a target namespace.
#[derive(Debug, Clone)]
pub struct Found {
    pub kind: String,
    pub name: String,
    pub obj: Value,
}

impl Found {
    fn controller(&self) -> Option<(String, String)> {
        self.obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)?
            .iter()
            .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
            .map(|o| {
                (
                    o.get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    o.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                )
            })
    }
}

/// Kinds whose pods carry their template's labels.
const WORKLOADS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
];

/// Checks every target namespace of `plan` and marks the objects that
/// must not be created. Reads only.
pub async fn check(
    cluster: &Cluster,
    discovery: &Discovery,
    plan: &mut Plan,
    opts: &Options,
    backup: &str,
) -> Result<(), KubeRestoreError> {
    let Some(ns_type) = discovery.find("v1", "Namespace") else {
        return Ok(());
    };
    for (from, to) in plan.namespaces.clone() {
        let Some(ns) = cluster.get(ns_type, None, &to).await? else {
            continue;
        };
        let terminating = ns.pointer("/metadata/deletionTimestamp").is_some()
            || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
        if terminating {
            return Err(KubeRestoreError::TargetTerminating { namespace: to });
        }
        if from == to {
            // In place: the objects there are the original's own.
            continue;
        }
        let found = contents(cluster, discovery, &to, opts.into_existing).await?;
        let same_backup = ns
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(RESTORED_FROM_ANNOTATION))
            .and_then(Value::as_str)
            == Some(backup);
        let foreign: Vec<&Found> = found.iter().filter(|f| counts_as_content(f)).collect();
        if !foreign.is_empty() && opts.overwrite && !same_backup {
            return Err(KubeRestoreError::OverwriteForeign {
                namespace: to,
                count: foreign.len(),
            });
        }
        if !foreign.is_empty() && !opts.into_existing && !same_backup {
            let mut by_kind: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for f in &foreign {
                by_kind.entry(&f.kind).or_default().push(&f.name);
            }
            let mut shown: Vec<String> = foreign
                .iter()
                .take(SHOWN)
                .map(|f| format!("{} {}", f.kind, f.name))
                .collect();
            if foreign.len() > SHOWN {
                shown.push(format!("and {} more", foreign.len() - SHOWN));
            }
            return Err(KubeRestoreError::TargetNotEmpty {
                namespace: to,
                source_namespace: from,
                count: foreign.len(),
                objects: shown.join(", "),
            });
        }
        mark_selecting(plan, &to, &found);
    }
    Ok(())
}

/// Everything in `namespace` of every listable namespaced type, except
/// types that are never configuration (events, endpoints, leases). A type
/// that cannot be listed refuses the copy, unless `into_existing` (the
/// caller accepts the namespace as it is) and it is not one whose objects
/// the selector rules need (pods and workloads): then it is logged.
async fn contents(
    cluster: &Cluster,
    discovery: &Discovery,
    namespace: &str,
    into_existing: bool,
) -> Result<Vec<Found>, KubeRestoreError> {
    let mut out = Vec::new();
    let types: Vec<&ResourceType> = discovery
        .preferred()
        .filter(|t| t.namespaced && t.supports("list") && never_exported(t).is_none())
        .collect();
    for rt in types {
        let listed = cluster
            .list(rt, Some(namespace), None, |obj| {
                out.push(Found {
                    kind: rt.kind.clone(),
                    name: object_name(&obj).to_string(),
                    obj,
                });
                Ok(())
            })
            .await;
        match listed {
            Ok(()) => {}
            // A type that vanished between discovery and list holds nothing.
            Err(KubeError::Api { code: 404, .. }) => {}
            Err(e)
                if into_existing && rt.kind != "Pod" && !WORKLOADS.contains(&rt.kind.as_str()) =>
            {
                tracing::warn!(namespace, resource = %rt.group_resource(), error = %e, "cannot list; restoring into the existing namespace without looking at these");
            }
            Err(e) => {
                return Err(KubeRestoreError::TargetUnreadable {
                    namespace: namespace.to_string(),
                    source: Box::new(e),
                })
            }
        }
    }
    Ok(out)
}

/// Whether an object makes its namespace "not empty": not what the
/// cluster puts into every namespace (the `default` ServiceAccount, the
/// root CA ConfigMap, token Secrets), not what a controller recreates
/// from an owner that is listed itself, not a drill's own binding.
fn counts_as_content(f: &Found) -> bool {
    if f.kind == "ServiceAccount" && f.name == "default" {
        return false;
    }
    if f.obj
        .pointer("/metadata/labels/app.kubernetes.io~1managed-by")
        .and_then(Value::as_str)
        == Some(super::DRILL_MANAGED_BY)
    {
        return false;
    }
    let mut copy = f.obj.clone();
    clean(&mut copy, &f.kind).is_ok()
}

/// Marks the planned objects in `namespace` that would select pods there
/// that the restore does not make.
fn mark_selecting(plan: &mut Plan, namespace: &str, found: &[Found]) {
    // The restore's own: what it plans there, unless an object of that
    // kind and name exists and differs (then it is someone else's, which
    // the restore leaves alone); and what those own.
    let mut ours: BTreeSet<(String, String)> = plan
        .objects
        .iter()
        .filter(|p| p.namespace.as_deref() == Some(namespace) && p.kind != "Namespace")
        .filter(|p| {
            found
                .iter()
                .find(|f| f.kind == p.kind && f.name == p.name)
                .is_none_or(|f| super::contained(&p.obj, &f.obj))
        })
        .map(|p| (p.kind.clone(), p.name.clone()))
        .collect();
    loop {
        let before = ours.len();
        for f in found {
            if let Some(owner) = f.controller() {
                if ours.contains(&owner) {
                    ours.insert((f.kind.clone(), f.name.clone()));
                }
            }
        }
        if ours.len() == before {
            break;
        }
    }
    let theirs = |f: &&Found| !ours.contains(&(f.kind.clone(), f.name.clone()));
    // Label sets of pods that are not the restore's: running ones, and
    // the templates of workloads that make them.
    let mut other_pods: Vec<(String, Map<String, Value>, bool)> = Vec::new();
    for f in found.iter().filter(theirs) {
        if f.kind == "Pod" {
            let orphan = f.controller().is_none();
            other_pods.push((
                format!("Pod {}", f.name),
                labels_at(&f.obj, "/metadata/labels"),
                orphan,
            ));
        } else if f.kind == "ReplicaSet" && f.controller().is_none() {
            // A Deployment adopts ReplicaSets without a controller (left
            // by `kubectl delete deploy --cascade=orphan`) and scales them.
            other_pods.push((
                format!("ReplicaSet {}", f.name),
                labels_at(&f.obj, "/metadata/labels"),
                true,
            ));
            other_pods.push((
                format!("the pods of ReplicaSet {}", f.name),
                labels_at(&f.obj, "/spec/template/metadata/labels"),
                false,
            ));
        } else if WORKLOADS.contains(&f.kind.as_str()) {
            let path = if f.kind == "CronJob" {
                "/spec/jobTemplate/spec/template/metadata/labels"
            } else {
                "/spec/template/metadata/labels"
            };
            other_pods.push((
                format!("the pods of {} {}", f.kind, f.name),
                labels_at(&f.obj, path),
                false,
            ));
        }
    }
    let existing_theirs: BTreeSet<(String, String)> = found
        .iter()
        .filter(theirs)
        .map(|f| (f.kind.clone(), f.name.clone()))
        .collect();
    for p in plan
        .objects
        .iter_mut()
        .filter(|p| p.namespace.as_deref() == Some(namespace) && p.skip.is_none())
    {
        if let Some(detail) = selects_other(p, &other_pods, &existing_theirs) {
            p.skip = Some(Skip {
                reason: SkipReason::SelectsOtherPods,
                detail,
            });
        }
    }
}

fn labels_at(obj: &Value, path: &str) -> Map<String, Value> {
    obj.pointer(path)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Why `p` would select pods that are not the restore's, if it would.
fn selects_other(
    p: &Planned,
    other_pods: &[(String, Map<String, Value>, bool)],
    existing_theirs: &BTreeSet<(String, String)>,
) -> Option<String> {
    let group = p.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    // Every pod set it would select, named (the first few).
    let hit = |selector: &Value, orphans_only: bool| {
        let hits: Vec<&str> = other_pods
            .iter()
            .filter(|(_, _, orphan)| *orphan || !orphans_only)
            .filter(|(_, labels, _)| selects(selector, labels))
            .map(|(what, _, _)| what.as_str())
            .collect();
        match hits.len() {
            0 => None,
            1..=3 => Some(hits.join(", ")),
            n => Some(format!("{} and {} more", hits[..3].join(", "), n - 3)),
        }
    };
    let (what, verb): (String, &str) = match (group, p.kind.as_str()) {
        ("", "Service") => {
            // A Service without a selector gets its endpoints by hand.
            let sel = p
                .obj
                .pointer("/spec/selector")
                .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()))?;
            let sel = serde_json::json!({ "matchLabels": sel });
            (hit(&sel, false)?, "would send its traffic to")
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            // Without a podSelector it applies to every pod.
            let all = serde_json::json!({});
            let sel = p.obj.pointer("/spec/podSelector").unwrap_or(&all);
            (hit(sel, false)?, "would restrict the traffic of")
        }
        ("policy", "PodDisruptionBudget") => {
            let sel = p.obj.pointer("/spec/selector")?;
            (hit(sel, false)?, "would limit the evictions of")
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let kind = p.obj.pointer("/spec/scaleTargetRef/kind")?.as_str()?;
            let name = p.obj.pointer("/spec/scaleTargetRef/name")?.as_str()?;
            if !existing_theirs.contains(&(kind.to_string(), name.to_string())) {
                return None;
            }
            (format!("{kind} {name}"), "would scale")
        }
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("", "ReplicationController") => {
            let sel = p.obj.pointer("/spec/selector")?;
            let sel = if p.kind == "ReplicationController" {
                serde_json::json!({ "matchLabels": sel })
            } else {
                sel.clone()
            };
            // A controller adopts matching Pods that have no controller.
            (hit(&sel, true)?, "would adopt (and scale to its replicas)")
        }
        (group, _) if super::is_custom_group(group) => custom_selects(p, &hit, existing_theirs)?,
        _ => return None,
    };
    Some(format!(
        "in an existing namespace it {verb} {what}, which this restore does not make; --into-existing does not change this"
    ))
}

/// Custom resources that act on pods by label or by name: mesh and CNI
/// policies (`selector`, `podSelector`, `endpointSelector`,
/// `workloadSelector`), monitors, vertical autoscalers and scalers
/// (`targetRef`, `scaleTargetRef`). Istio's policies without a selector
/// apply to the whole namespace.
fn custom_selects(
    p: &Planned,
    hit: &dyn Fn(&Value, bool) -> Option<String>,
    existing_theirs: &BTreeSet<(String, String)>,
) -> Option<(String, &'static str)> {
    let spec = p.obj.get("spec")?;
    for field in [
        "selector",
        "podSelector",
        "endpointSelector",
        "workloadSelector",
    ] {
        let Some(sel) = spec.get(field).filter(|v| v.is_object()) else {
            continue;
        };
        // {matchLabels, matchExpressions}, Istio's {labels: {...}}, or a
        // plain map of labels.
        let selector = if sel.get("matchLabels").is_some() || sel.get("matchExpressions").is_some()
        {
            sel.clone()
        } else if let Some(labels) = sel.get("labels") {
            serde_json::json!({ "matchLabels": labels })
        } else {
            serde_json::json!({ "matchLabels": sel })
        };
        return hit(&selector, false).map(|w| (w, "would act on"));
    }
    for field in ["targetRef", "scaleTargetRef"] {
        let Some(r) = spec.get(field) else { continue };
        let kind = r.get("kind").and_then(Value::as_str)?;
        let name = r.get("name").and_then(Value::as_str)?;
        if existing_theirs.contains(&(kind.to_string(), name.to_string())) {
            return Some((format!("{kind} {name}"), "would act on"));
        }
        return None;
    }
    let group = p.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    if group == "security.istio.io" {
        return hit(&serde_json::json!({}), false).map(|w| (w, "would apply to"));
    }
    None
}

/// Whether a Kubernetes label selector (`matchLabels`,
/// `matchExpressions`) selects `labels`. An empty selector selects
/// everything; a malformed one is taken to select everything (the safe
/// side for a check that skips).
pub fn selects(selector: &Value, labels: &Map<String, Value>) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(ml) = selector.get("matchLabels").and_then(Value::as_object) {
        if !ml.iter().all(|(k, v)| label(k) == v.as_str()) {
            return false;
        }
    }
    let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) else {
        return true;
    };
    exprs.iter().all(|e| {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => label(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => label(key).is_some(),
            "DoesNotExist" => label(key).is_none(),
            _ => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn label_selectors_follow_the_kubernetes_rules() {
        let l = labels(json!({"app": "web", "tier": "front"}));
        assert!(selects(&json!({}), &l), "empty selects everything");
        assert!(selects(&json!({"matchLabels": {"app": "web"}}), &l));
        assert!(!selects(&json!({"matchLabels": {"app": "db"}}), &l));
        assert!(!selects(
            &json!({"matchLabels": {"app": "web", "x": "y"}}),
            &l
        ));
        let expr = |op: &str, values: Value| json!({"matchExpressions": [{"key": "tier", "operator": op, "values": values}]});
        assert!(selects(&expr("In", json!(["front", "back"])), &l));
        assert!(!selects(&expr("In", json!(["back"])), &l));
        assert!(selects(&expr("NotIn", json!(["back"])), &l));
        assert!(!selects(&expr("NotIn", json!(["front"])), &l));
        assert!(selects(&expr("Exists", json!([])), &l));
        assert!(!selects(&expr("DoesNotExist", json!([])), &l));
        let no_tier = labels(json!({"app": "web"}));
        assert!(selects(&expr("NotIn", json!(["front"])), &no_tier));
        assert!(selects(&expr("DoesNotExist", json!([])), &no_tier));
    }

    fn planned(kind: &str, api_version: &str, name: &str, obj: Value) -> Planned {
        Planned {
            stage: super::super::Stage::of(api_version, kind),
            source_namespace: Some("prod".into()),
            namespace: Some("copy".into()),
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            skip: None,
            changes: Vec::new(),
            obj,
        }
    }

    fn found(kind: &str, name: &str, obj: Value) -> Found {
        Found {
            kind: kind.into(),
            name: name.into(),
            obj,
        }
    }

    // Stays long: one plan against one namespace's objects, every case judged in one scene.
    #[test]
    fn objects_selecting_pods_the_restore_does_not_make_are_skipped() {
        let mut plan = Plan {
            objects: vec![
                planned(
                    "Deployment",
                    "apps/v1",
                    "web",
                    json!({"spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}}}}),
                ),
                planned(
                    "Service",
                    "v1",
                    "web",
                    json!({"spec": {"selector": {"app": "web"}}}),
                ),
                planned(
                    "Service",
                    "v1",
                    "api",
                    json!({"spec": {"selector": {"app": "api"}}}),
                ),
                planned("Service", "v1", "external", json!({"spec": {}})),
                planned(
                    "NetworkPolicy",
                    "networking.k8s.io/v1",
                    "deny-all",
                    json!({"spec": {"podSelector": {}}}),
                ),
                planned(
                    "NetworkPolicy",
                    "networking.k8s.io/v1",
                    "db",
                    json!({"spec": {"podSelector": {"matchLabels": {"app": "db"}}}}),
                ),
                planned(
                    "PodDisruptionBudget",
                    "policy/v1",
                    "api",
                    json!({"spec": {"selector": {"matchLabels": {"app": "api"}}}}),
                ),
                planned(
                    "HorizontalPodAutoscaler",
                    "autoscaling/v2",
                    "api",
                    json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "api"}}}),
                ),
                planned(
                    "HorizontalPodAutoscaler",
                    "autoscaling/v2",
                    "web",
                    json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}}}),
                ),
                planned(
                    "Deployment",
                    "apps/v1",
                    "debug",
                    json!({"spec": {"selector": {"matchLabels": {"app": "debug"}}}}),
                ),
            ],
            not_selected: 0,
            namespaces: [("prod".to_string(), "copy".to_string())].into(),
        };
        let there = vec![
            // The restore's own Deployment exists already (it holds what
            // the backup has: a second run), with its pods.
            found(
                "Deployment",
                "web",
                json!({"metadata": {"name": "web", "uid": "u"}, "status": {"replicas": 1},
                    "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}}}}),
            ),
            found(
                "ReplicaSet",
                "web-1",
                json!({"metadata": {"name": "web-1", "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": true}]}, "spec": {"template": {"metadata": {"labels": {"app": "web"}}}}}),
            ),
            found(
                "Pod",
                "web-1-a",
                json!({"metadata": {"name": "web-1-a", "labels": {"app": "web"}, "ownerReferences": [{"kind": "ReplicaSet", "name": "web-1", "controller": true}]}}),
            ),
            // Someone else's Deployment and a bare Pod.
            found(
                "Deployment",
                "api",
                json!({"metadata": {"name": "api"}, "spec": {"template": {"metadata": {"labels": {"app": "api"}}}}}),
            ),
            found(
                "Pod",
                "debug-shell",
                json!({"metadata": {"name": "debug-shell", "labels": {"app": "debug"}}}),
            ),
        ];
        mark_selecting(&mut plan, "copy", &there);
        let skipped: Vec<&str> = plan
            .objects
            .iter()
            .filter(|p| p.skip.is_some())
            .map(|p| p.name.as_str())
            .collect();
        let kinds: Vec<String> = plan
            .objects
            .iter()
            .filter(|p| p.skip.is_some())
            .map(|p| format!("{} {}", p.kind, p.name))
            .collect();
        assert_eq!(
            kinds,
            [
                "Service api",
                "NetworkPolicy deny-all",
                "PodDisruptionBudget api",
                "HorizontalPodAutoscaler api",
                "Deployment debug"
            ],
            "{skipped:?}"
        );
        let detail = &plan.objects[2].skip.as_ref().unwrap().detail;
        assert!(detail.contains("the pods of Deployment api"), "{detail}");
        let detail = &plan.objects[9].skip.as_ref().unwrap().detail;
        assert!(
            detail.contains("adopt") && detail.contains("Pod debug-shell"),
            "{detail}"
        );
    }

    /// Findings of a review: an existing object that only shares a name
    /// with the restore's is someone else's; orphaned ReplicaSets are
    /// adopted; custom resources select pods too; a policy without a
    /// podSelector covers every pod.
    #[test]
    fn same_names_orphan_replica_sets_and_custom_resources_do_not_slip_through() {
        let web = json!({"spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}}}});
        let mut plan = Plan {
            objects: vec![
                planned("Deployment", "apps/v1", "web", web.clone()),
                planned(
                    "NetworkPolicy",
                    "networking.k8s.io/v1",
                    "no-selector",
                    json!({"spec": {}}),
                ),
                planned(
                    "Deployment",
                    "apps/v1",
                    "api",
                    json!({"spec": {"selector": {"matchLabels": {"app": "api"}}}}),
                ),
                planned(
                    "AuthorizationPolicy",
                    "security.istio.io/v1",
                    "web",
                    json!({"spec": {"selector": {"matchLabels": {"app": "web"}}}}),
                ),
                planned(
                    "AuthorizationPolicy",
                    "security.istio.io/v1",
                    "ns-wide",
                    json!({"spec": {"action": "DENY"}}),
                ),
                planned(
                    "CiliumNetworkPolicy",
                    "cilium.io/v2",
                    "c",
                    json!({"spec": {"endpointSelector": {"matchLabels": {"app": "db"}}}}),
                ),
                planned(
                    "VerticalPodAutoscaler",
                    "autoscaling.k8s.io/v1",
                    "v",
                    json!({"spec": {"targetRef": {"kind": "Deployment", "name": "web"}}}),
                ),
            ],
            not_selected: 0,
            namespaces: [("prod".to_string(), "copy".to_string())].into(),
        };
        let there = vec![
            // Staging's own `web`, live with 4 replicas: same kind and name,
            // different object.
            found(
                "Deployment",
                "web",
                json!({"metadata": {"name": "web"}, "spec": {"replicas": 4,
                "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}}}}),
            ),
            found(
                "ReplicaSet",
                "api-old",
                json!({"metadata": {"name": "api-old", "labels": {"app": "api"}},
                "spec": {"template": {"metadata": {"labels": {"app": "api"}}}}}),
            ),
        ];
        mark_selecting(&mut plan, "copy", &there);
        let skipped: Vec<String> = plan
            .objects
            .iter()
            .filter(|p| p.skip.is_some())
            .map(|p| format!("{} {}", p.kind, p.name))
            .collect();
        assert_eq!(
            skipped,
            [
                "NetworkPolicy no-selector",
                "Deployment api",
                "AuthorizationPolicy web",
                "AuthorizationPolicy ns-wide",
                "VerticalPodAutoscaler v"
            ]
        );
        assert!(plan.objects[2]
            .skip
            .as_ref()
            .unwrap()
            .detail
            .contains("ReplicaSet api-old"));
    }

    #[test]
    fn what_the_cluster_puts_in_every_namespace_is_not_content() {
        assert!(!counts_as_content(&found(
            "ServiceAccount",
            "default",
            json!({"metadata": {"name": "default"}})
        )));
        assert!(!counts_as_content(&found(
            "ConfigMap",
            "kube-root-ca.crt",
            json!({"metadata": {"name": "kube-root-ca.crt"}})
        )));
        assert!(!counts_as_content(&found(
            "Secret",
            "t",
            json!({"metadata": {"name": "t"}, "type": "kubernetes.io/service-account-token"})
        )));
        assert!(!counts_as_content(&found(
            "Pod",
            "web-1-a",
            json!({"metadata": {"name": "web-1-a", "ownerReferences": [{"kind": "ReplicaSet", "name": "web-1", "controller": true}]}})
        )));
        assert!(counts_as_content(&found(
            "Pod",
            "shell",
            json!({"metadata": {"name": "shell"}})
        )));
        assert!(counts_as_content(&found(
            "ConfigMap",
            "app",
            json!({"metadata": {"name": "app"}})
        )));
    }
}
