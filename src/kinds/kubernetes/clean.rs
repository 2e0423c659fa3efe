//! What an export leaves out and strips: resources never exported (events, leases, tokens...), objects a controller recreates, and server-set fields, so a restore applies cleanly.

use serde_json::Value;

use crate::kube::ResourceType;

/// Resource types never exported, and why.
pub(super) const NEVER_EXPORTED: &[(&str, &str, &str)] = &[
    ("", "events", "events are history, not configuration"),
    (
        "events.k8s.io",
        "events",
        "events are history, not configuration",
    ),
    (
        "",
        "endpoints",
        "the endpoints controller recreates them from Services",
    ),
    (
        "discovery.k8s.io",
        "endpointslices",
        "the endpoint slice controller recreates them from Services",
    ),
    (
        "coordination.k8s.io",
        "leases",
        "leader-election and heartbeat state, recreated by their owners",
    ),
    (
        "apps",
        "controllerrevisions",
        "StatefulSet and DaemonSet history, recreated by their controllers",
    ),
    (
        "metrics.k8s.io",
        "*",
        "live resource usage, not configuration",
    ),
    ("", "componentstatuses", "live health, not configuration"),
    ("", "nodes", "nodes register themselves"),
    (
        "",
        "persistentvolumes",
        "volumes belong to the storage system; their claims are exported",
    ),
    (
        "storage.k8s.io",
        "volumeattachments",
        "live attachment state",
    ),
    (
        "storage.k8s.io",
        "csinodes",
        "registered by each node's CSI driver",
    ),
    (
        "certificates.k8s.io",
        "certificatesigningrequests",
        "one-off requests, not configuration",
    ),
];

/// Why a type is never exported, if it is not.
pub fn never_exported(rt: &ResourceType) -> Option<&'static str> {
    NEVER_EXPORTED
        .iter()
        .find(|(g, p, _)| *g == rt.group && (*p == "*" || *p == rt.plural))
        .map(|(_, _, why)| *why)
}

/// Kinds whose controllers recreate what they own.
pub(super) const RECREATING_OWNERS: &[&str] = &[
    "ReplicaSet",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ReplicationController",
];

pub(super) const DROPPED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.kubernetes.io/selected-node",
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
    "kubernetes.io/service-account.uid",
    "endpoints.kubernetes.io/last-change-trigger-time",
];

/// Labels the Job controller generates from the Job's uid.
pub(super) const JOB_GENERATED_LABELS: &[&str] = &[
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
];

/// Why an object is not exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// A controller recreates it from its owner (a Pod of a ReplicaSet).
    ControllerOwned { owner_kind: String, owner: String },
    /// The server or a built-in controller makes it (service-account
    /// tokens, the root CA ConfigMap).
    ServerOwned(&'static str),
}

impl Skip {
    /// A short key for counting.
    pub fn key(&self) -> &'static str {
        match self {
            Skip::ControllerOwned { .. } => "controller-owned",
            Skip::ServerOwned(_) => "server-owned",
        }
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::ControllerOwned { owner_kind, owner } => {
                write!(
                    f,
                    "owned by {owner_kind} {owner}, whose controller recreates it"
                )
            }
            Skip::ServerOwned(why) => f.write_str(why),
        }
    }
}

/// Removes what the server owns from an exported object, so that what is
/// kept applies cleanly to a fresh cluster; or says why the object is not
/// exported at all.
///
/// Dropped everywhere: `status`, and in `metadata` the uid,
/// resourceVersion, generation, creationTimestamp, managedFields,
/// selfLink, deletion fields, ownerReferences (they name uids of the old
/// cluster, and the garbage collector deletes objects whose owner uid does
/// not exist), finalizers (their controllers add them again) and
/// annotations written by controllers (last-applied, revision, volume
/// binding). Per kind: a Service's allocated cluster IPs and health-check
/// port, a Namespace's spec and generated name label, a claim's bound
/// volume, a Job's generated selector, a Pod's node, a ServiceAccount's
/// token secrets.
pub fn clean(obj: &mut Value, kind: &str) -> Result<(), Skip> {
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    if let Some(skip) = recreated_by_controller(&meta) {
        return Err(skip);
    }
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if let Some(skip) = made_by_server(obj, kind, name) {
        return Err(skip);
    }

    let Some(map) = obj.as_object_mut() else {
        return Ok(());
    };
    map.remove("status");
    strip_metadata(map, kind);
    let generated_selector = strip_spec(map, kind);
    if generated_selector {
        // The Job's own copies of the generated labels.
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            remove_keys(meta, "labels", JOB_GENERATED_LABELS);
        }
    }
    if kind == "ServiceAccount" {
        drop_token_secrets(map, name);
    }
    drop_null_timestamps(obj);
    Ok(())
}

/// The skip for an object whose controlling owner is a kind that
/// recreates what it owns (a Pod of a ReplicaSet).
fn recreated_by_controller(meta: &Value) -> Option<Skip> {
    let owners = meta.get("ownerReferences").and_then(Value::as_array)?;
    for o in owners {
        let controller = o
            .get("controller")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let owner_kind = o.get("kind").and_then(Value::as_str).unwrap_or("");
        if controller && RECREATING_OWNERS.contains(&owner_kind) {
            return Some(Skip::ControllerOwned {
                owner_kind: owner_kind.to_string(),
                owner: o
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            });
        }
    }
    None
}

/// The skip for an object the server or a built-in controller makes
/// (service-account tokens, the root CA ConfigMap).
fn made_by_server(obj: &Value, kind: &str, name: &str) -> Option<Skip> {
    match kind {
        "Secret"
            if obj.get("type").and_then(Value::as_str)
                == Some("kubernetes.io/service-account-token") =>
        {
            Some(Skip::ServerOwned(
                "a service-account token; the cluster issues new tokens",
            ))
        }
        "ConfigMap" if name == "kube-root-ca.crt" => Some(Skip::ServerOwned(
            "the cluster's root CA, published into every namespace by a controller",
        )),
        _ => None,
    }
}

/// Drops the server-set `metadata` fields and controller annotations (and a
/// Namespace's generated name label).
fn strip_metadata(map: &mut serde_json::Map<String, Value>, kind: &str) {
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "ownerReferences",
            "finalizers",
            "generateName",
        ] {
            meta.remove(field);
        }
        remove_keys(meta, "annotations", DROPPED_ANNOTATIONS);
        if kind == "Namespace" {
            remove_keys(meta, "labels", &["kubernetes.io/metadata.name"]);
        }
    }
}

/// Drops the per-kind server-set parts of `spec`; true when a Job's
/// generated selector was removed (its labels on the Job go too).
fn strip_spec(map: &mut serde_json::Map<String, Value>, kind: &str) -> bool {
    let mut generated_selector = false;
    let spec = map.get_mut("spec").and_then(Value::as_object_mut);
    match (kind, spec) {
        ("Namespace", _) => {
            map.remove("spec");
        }
        ("Service", Some(spec)) => {
            let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
            if !headless {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
            spec.remove("healthCheckNodePort");
            let cluster_ip = spec
                .get("type")
                .and_then(Value::as_str)
                .is_none_or(|t| t == "ClusterIP");
            if cluster_ip {
                remove_node_ports(spec);
            }
        }
        ("PersistentVolumeClaim", Some(spec)) => {
            spec.remove("volumeName");
        }
        ("Pod", Some(spec)) => {
            spec.remove("nodeName");
        }
        ("Job", Some(spec))
            if spec.get("manualSelector").and_then(Value::as_bool) != Some(true) =>
        {
            generated_selector = true;
            spec.remove("selector");
            if let Some(tmeta) = spec
                .get_mut("template")
                .and_then(|t| t.get_mut("metadata"))
                .and_then(Value::as_object_mut)
            {
                remove_keys(tmeta, "labels", JOB_GENERATED_LABELS);
            }
        }
        _ => {}
    }
    generated_selector
}

/// A ServiceAccount's `<name>-token-*` secrets are made by the server.
fn drop_token_secrets(map: &mut serde_json::Map<String, Value>, name: &str) {
    let prefix = format!("{name}-token-");
    if let Some(secrets) = map.get_mut("secrets").and_then(Value::as_array_mut) {
        secrets.retain(|s| {
            !s.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.starts_with(&prefix))
        });
        if secrets.is_empty() {
            map.remove("secrets");
        }
    }
}

/// Removes `keys` from the map under `field`, and the field once empty.
pub(super) fn remove_keys(map: &mut serde_json::Map<String, Value>, field: &str, keys: &[&str]) {
    if let Some(inner) = map.get_mut(field).and_then(Value::as_object_mut) {
        for k in keys {
            inner.remove(*k);
        }
        if inner.is_empty() {
            map.remove(field);
        }
    }
}

/// A ClusterIP Service cannot carry node ports.
pub(crate) fn remove_node_ports(spec: &mut serde_json::Map<String, Value>) {
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            if let Some(p) = p.as_object_mut() {
                p.remove("nodePort");
            }
        }
    }
}

/// Pod templates carry `creationTimestamp: null`; it means nothing.
pub(super) fn drop_null_timestamps(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("creationTimestamp") == Some(&Value::Null) {
                map.remove("creationTimestamp");
            }
            for (_, inner) in map.iter_mut() {
                drop_null_timestamps(inner);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null_timestamps),
        _ => {}
    }
}
