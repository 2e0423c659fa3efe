//! What kube-apiserver does to an object between decoding a request and
//! storing it, where lifeboat or kubectl can notice: decoding into the
//! real Kubernetes types (the `k8s-openapi` structs), with the apiserver's
//! answers for bodies that do not decode (400 BadRequest, "cannot be
//! handled as a ...") or lack required fields (422 Invalid, with the field
//! paths); strict field validation (`fieldValidation=Strict`: unknown
//! fields are a 400); `stringData` merged into a Secret's `data`; and the
//! common defaults (workload strategies and history limits, pod
//! template fields, probe timings, ports' protocol).
//!
//! `k8s-openapi` decodes leniently (a missing required field becomes its
//! default), but it encodes required fields always and optional ones only
//! when set. So the decoded object encoded again shows both kinds of
//! mistake against what was sent: a field it dropped is unknown, a field
//! it added is a required one that was missing.
//!
//! Custom resources and kinds the table below does not list are stored as
//! sent.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// Why an object is refused.
#[derive(Debug)]
pub struct Refusal {
    /// 400 (the body does not decode, or an unknown field under Strict)
    /// or 422 (a required field is missing, an invalid value).
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// (field path, cause reason, message) for 422.
    pub causes: Vec<(String, &'static str, String)>,
}

fn decode_as<T: DeserializeOwned + Serialize>(
    obj: &Value,
    kind: &str,
    version: &str,
    strict: bool,
) -> Result<(), Refusal> {
    let decoded: Result<T, _> = serde_path_to_error::deserialize(obj.clone());
    let typed = match decoded {
        Ok(t) => t,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            return Err(Refusal {
                code: 400,
                reason: "BadRequest",
                message: format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: {path}: {inner}"
                ),
                causes: Vec::new(),
            });
        }
    };
    // Writes to an object validate its spec, not its status (the server
    // owns that, through the status subresource).
    let mut back = serde_json::to_value(&typed).expect("a decoded object encodes");
    let mut sent = obj.clone();
    for v in [&mut back, &mut sent] {
        if let Some(m) = v.as_object_mut() {
            m.remove("status");
        }
    }
    let (obj, back) = (&sent, &back);
    let mut missing = Vec::new();
    added_fields(obj, back, "", &mut missing);
    if !missing.is_empty() {
        return Err(Refusal {
            code: 422,
            reason: "Invalid",
            message: String::new(),
            causes: missing
                .into_iter()
                .map(|f| (f, "FieldValueRequired", "Required value".to_string()))
                .collect(),
        });
    }
    if strict {
        let mut unknown = Vec::new();
        unknown_fields(obj, back, "", &mut unknown);
        if !unknown.is_empty() {
            let list = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Refusal {
                code: 400,
                reason: "BadRequest",
                message: format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {list}"
                ),
                causes: Vec::new(),
            });
        }
    }
    Ok(())
}

/// Fields of `sent` that the typed object did not keep (nulls aside).
fn unknown_fields(sent: &Value, kept: &Value, at: &str, out: &mut Vec<String>) {
    match (sent, kept) {
        (Value::Object(s), Value::Object(k)) => {
            for (key, v) in s {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match k.get(key) {
                    Some(kv) => unknown_fields(v, kv, &path, out),
                    None if v.is_null() => {}
                    // Maps of free keys (labels, data) are kept whole, so a
                    // missing key here is a field the type lacks.
                    None => out.push(path),
                }
            }
        }
        (Value::Array(s), Value::Array(k)) => {
            for (i, (a, b)) in s.iter().zip(k).enumerate() {
                unknown_fields(a, b, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Fields the typed object has that `sent` lacks (or has as null): the
/// required ones, which the lenient decoding filled with defaults.
fn added_fields(sent: &Value, kept: &Value, at: &str, out: &mut Vec<String>) {
    match (sent, kept) {
        (Value::Object(s), Value::Object(k)) => {
            for (key, v) in k {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match s.get(key) {
                    Some(sv) if !sv.is_null() => added_fields(sv, v, &path, out),
                    _ => out.push(path),
                }
            }
        }
        (Value::Array(s), Value::Array(k)) => {
            for (i, (a, b)) in s.iter().zip(k).enumerate() {
                added_fields(a, b, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Decodes `obj` into its Kubernetes type, if the table knows it.
pub fn validate(
    group: &str,
    version: &str,
    kind: &str,
    obj: &Value,
    strict: bool,
) -> Result<(), Refusal> {
    use k8s_openapi::api;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    macro_rules! table {
        ($( ($g:literal, $v:literal, $k:literal) => $t:ty ),* $(,)?) => {
            match (group, version, kind) {
                $( ($g, $v, $k) => decode_as::<$t>(obj, kind, version, strict), )*
                _ => Ok(()),
            }
        };
    }
    table! {
        ("", "v1", "ConfigMap") => api::core::v1::ConfigMap,
        ("", "v1", "Secret") => api::core::v1::Secret,
        ("", "v1", "Service") => api::core::v1::Service,
        ("", "v1", "ServiceAccount") => api::core::v1::ServiceAccount,
        ("", "v1", "Namespace") => api::core::v1::Namespace,
        ("", "v1", "PersistentVolumeClaim") => api::core::v1::PersistentVolumeClaim,
        ("", "v1", "Pod") => api::core::v1::Pod,
        ("", "v1", "LimitRange") => api::core::v1::LimitRange,
        ("", "v1", "ResourceQuota") => api::core::v1::ResourceQuota,
        ("", "v1", "Endpoints") => api::core::v1::Endpoints,
        ("apps", "v1", "Deployment") => api::apps::v1::Deployment,
        ("apps", "v1", "StatefulSet") => api::apps::v1::StatefulSet,
        ("apps", "v1", "DaemonSet") => api::apps::v1::DaemonSet,
        ("apps", "v1", "ReplicaSet") => api::apps::v1::ReplicaSet,
        ("batch", "v1", "Job") => api::batch::v1::Job,
        ("batch", "v1", "CronJob") => api::batch::v1::CronJob,
        ("networking.k8s.io", "v1", "Ingress") => api::networking::v1::Ingress,
        ("networking.k8s.io", "v1", "NetworkPolicy") => api::networking::v1::NetworkPolicy,
        ("autoscaling", "v2", "HorizontalPodAutoscaler") => api::autoscaling::v2::HorizontalPodAutoscaler,
        ("policy", "v1", "PodDisruptionBudget") => api::policy::v1::PodDisruptionBudget,
        ("rbac.authorization.k8s.io", "v1", "Role") => api::rbac::v1::Role,
        ("rbac.authorization.k8s.io", "v1", "RoleBinding") => api::rbac::v1::RoleBinding,
        ("rbac.authorization.k8s.io", "v1", "ClusterRole") => api::rbac::v1::ClusterRole,
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => api::rbac::v1::ClusterRoleBinding,
        ("storage.k8s.io", "v1", "StorageClass") => api::storage::v1::StorageClass,
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition") => apiext::CustomResourceDefinition,
    }?;
    semantic(group, kind, obj)
}

/// Rules the types cannot express that lifeboat's restores meet.
fn semantic(group: &str, kind: &str, obj: &Value) -> Result<(), Refusal> {
    let invalid = |field: &str, reason: &'static str, detail: String| Refusal {
        code: 422,
        reason: "Invalid",
        message: String::new(),
        causes: vec![(field.to_string(), reason, detail)],
    };
    match (group, kind) {
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            let selector = obj
                .pointer("/spec/selector")
                .cloned()
                .unwrap_or(Value::Null);
            let labels = obj
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let empty = selector.as_object().is_none_or(|s| {
                s.values().all(|v| {
                    v.as_object().is_some_and(Map::is_empty)
                        || v.as_array().is_some_and(Vec::is_empty)
                })
            });
            if empty {
                return Err(invalid(
                    "spec.selector",
                    "FieldValueInvalid",
                    "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment".into(),
                ));
            }
            let matches = selector
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(|ml| ml.iter().all(|(k, v)| labels.get(k) == Some(v)));
            if !matches {
                return Err(invalid(
                    "spec.template.metadata.labels",
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {}: `selector` does not match template `labels`",
                        Value::Object(labels)
                    ),
                ));
            }
        }
        ("", "Service") => {
            let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
            let ty = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
            if ty != "ExternalName" && !headless && ports.is_none_or(Vec::is_empty) {
                return Err(invalid(
                    "spec.ports",
                    "FieldValueRequired",
                    "Required value".into(),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Secret `stringData` merged into `data` (base64), as the apiserver
/// does on every write; `stringData` is never stored.
pub fn merge_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let Some(Value::Object(plain)) = map.remove("stringData") else {
        return;
    };
    let data = map.entry("data").or_insert_with(|| json!({}));
    if data.is_null() {
        *data = json!({});
    }
    if let Some(data) = data.as_object_mut() {
        for (k, v) in plain {
            let text = v.as_str().unwrap_or_default().to_string();
            data.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(text.as_bytes())),
            );
        }
    }
}

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

fn obj_at<'a>(v: &'a mut Value, path: &str) -> Option<&'a mut Map<String, Value>> {
    v.pointer_mut(path).and_then(Value::as_object_mut)
}

/// The defaults kube-apiserver fills in for the kinds lifeboat exports.
pub fn defaults(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Secret") => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "type", json!("Opaque"));
            }
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = obj_at(obj, "/spec") {
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
        }
        ("", "Pod") => {
            if let Some(spec) = obj_at(obj, "/spec") {
                pod_spec_defaults(spec, "Always");
            }
        }
        ("apps", "Deployment") => {
            if let Some(spec) = obj_at(obj, "/spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                set_default(
                    spec,
                    "strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
                );
            }
            template_defaults(obj, "/spec/template/spec", "Always");
        }
        ("apps", "StatefulSet") => {
            if let Some(spec) = obj_at(obj, "/spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                );
                set_default(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
            }
            template_defaults(obj, "/spec/template/spec", "Always");
        }
        ("apps", "DaemonSet") => {
            if let Some(spec) = obj_at(obj, "/spec") {
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                );
            }
            template_defaults(obj, "/spec/template/spec", "Always");
        }
        ("apps", "ReplicaSet") => {
            if let Some(spec) = obj_at(obj, "/spec") {
                set_default(spec, "replicas", json!(1));
            }
            template_defaults(obj, "/spec/template/spec", "Always");
        }
        ("batch", "Job") => {
            if let Some(spec) = obj_at(obj, "/spec") {
                job_spec_defaults(spec);
            }
            template_defaults(obj, "/spec/template/spec", "Never");
        }
        ("batch", "CronJob") => {
            if let Some(spec) = obj_at(obj, "/spec") {
                set_default(spec, "concurrencyPolicy", json!("Allow"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "successfulJobsHistoryLimit", json!(3));
                set_default(spec, "failedJobsHistoryLimit", json!(1));
            }
            if let Some(spec) = obj_at(obj, "/spec/jobTemplate/spec") {
                job_spec_defaults(spec);
            }
            template_defaults(obj, "/spec/jobTemplate/spec/template/spec", "Never");
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            if let Some(spec) = obj_at(obj, "/spec") {
                if spec.get("policyTypes").is_none_or(Value::is_null) {
                    let mut types = vec![json!("Ingress")];
                    if spec.get("egress").is_some_and(|e| !e.is_null()) {
                        types.push(json!("Egress"));
                    }
                    spec.insert("policyTypes".into(), Value::Array(types));
                }
                for rules in ["ingress", "egress"] {
                    for rule in spec
                        .get_mut(rules)
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        port_protocols(rule.get_mut("ports"));
                    }
                }
            }
        }
        ("", "Service") => {
            if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(p, "protocol", json!("TCP"));
                    if let Some(port) = p.get("port").cloned() {
                        set_default(p, "targetPort", port);
                    }
                }
            }
        }
        _ => {}
    }
}

fn job_spec_defaults(spec: &mut Map<String, Value>) {
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    if !spec.contains_key("completions") && !spec.contains_key("parallelism") {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
}

fn port_protocols(ports: Option<&mut Value>) {
    for p in ports
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        set_default(p, "protocol", json!("TCP"));
    }
}

fn template_defaults(obj: &mut Value, path: &str, restart: &str) {
    if let Some(spec) = obj_at(obj, path) {
        pod_spec_defaults(spec, restart);
    }
}

fn pod_spec_defaults(spec: &mut Map<String, Value>, restart: &str) {
    set_default(spec, "restartPolicy", json!(restart));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            container_defaults(c);
        }
    }
}

fn container_defaults(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    let tag = image.rsplit('/').next().unwrap_or("");
    let latest = !image.contains('@') && (tag.ends_with(":latest") || !tag.contains(':'));
    set_default(
        c,
        "imagePullPolicy",
        json!(if latest { "Always" } else { "IfNotPresent" }),
    );
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    port_protocols(c.get_mut("ports"));
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                set_default(h, "scheme", json!("HTTP"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    // benches/kubernetes.rs includes this server too, without a test
    // harness: there the tests are dropped and the import is unused.
    #[allow(unused_imports)]
    use super::*;

    #[test]
    fn the_real_types_refuse_what_the_apiserver_refuses() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let e = validate("apps", "v1", "Deployment", &d, false).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.causes,
            [(
                "spec.selector".to_string(),
                "FieldValueRequired",
                "Required value".to_string()
            )]
        );
        let mut nameless = d.clone();
        nameless["spec"]["selector"] = json!({"matchLabels": {"app": "web"}});
        nameless["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("name");
        let e = validate("apps", "v1", "Deployment", &nameless, false).unwrap_err();
        assert_eq!(e.causes[0].0, "spec.template.spec.containers[0].name");
        let mut ok = nameless.clone();
        ok["spec"]["template"]["spec"]["containers"][0]["name"] = json!("c");
        validate("apps", "v1", "Deployment", &ok, true).unwrap();
        let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "not base64!"}});
        let e = validate("", "v1", "Secret", &s, false).unwrap_err();
        assert_eq!(e.code, 400, "{}", e.message);
        assert!(
            e.message
                .contains("Secret in version \"v1\" cannot be handled as a Secret"),
            "{}",
            e.message
        );
        let np = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "n"},
            "spec": {"podSelector": {}, "egress": [{"to": {}}]}});
        assert_eq!(
            validate("networking.k8s.io", "v1", "NetworkPolicy", &np, false)
                .unwrap_err()
                .code,
            400
        );
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}, "dta": {}});
        assert!(validate("", "v1", "ConfigMap", &cm, false).is_ok());
        let e = validate("", "v1", "ConfigMap", &cm, true).unwrap_err();
        assert_eq!(
            e.message,
            "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"dta\""
        );
    }

    #[test]
    fn string_data_becomes_data() {
        let mut s = json!({"data": {"a": "YQ=="}, "stringData": {"b": "b"}});
        merge_string_data(&mut s);
        assert_eq!(s, json!({"data": {"a": "YQ==", "b": "Yg=="}}));
    }
}
