//! The Kubernetes deployment files of `deploy/`, as `kubectl kustomize`
//! renders them: every object parses into its Kubernetes type (and every
//! field survives the round trip, so nothing is misspelled), the workloads
//! keep the design's security rules (non-root, read-only, the age identity
//! never near the backup side, read-only RBAC), the example policy parses
//! and matches the pods' mounts, the alerts and the dashboard use only
//! metrics lifeboat exports, and kubectl accepts every object (client-side
//! dry run against the in-process API server of `kube_server/`).
//!
//! The same kubectl is used as in CI (Debian's, whose built-in kustomize is
//! v2.0.3): the files use only what that old kustomize knows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PodSpec, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use lifeboat::policy::{Policy, SecretRef};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::kube_server::KubeServer;

/// Daemon mode (the default).
const DAEMON: &str = "deploy";
/// CronJob mode.
const CRONJOB: &str = "deploy/cronjob";
/// The Secret templates (never applied with the other two).
const SECRETS: &str = "deploy/secrets";
/// The monthly restore drill, applied beside either mode.
const DRILL: &str = "deploy/drill";

/// The Secrets the backup side mounts; `lifeboat-identity` is not one.
const BACKUP_SECRETS: [&str; 3] = ["lifeboat-db", "lifeboat-recipients", "lifeboat-s3"];

/// One rendered kustomization.
struct Rendered {
    dir: &'static str,
    /// The YAML stream `kubectl kustomize` printed.
    text: String,
    /// Its documents.
    objects: Vec<Value>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

fn kubectl() -> PathBuf {
    which("kubectl").expect("kubectl is installed by scripts/install-deps.sh (kubernetes-client)")
}

/// `kubectl kustomize REPO/dir`, split into its documents.
fn render(dir: &'static str) -> Rendered {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(repo().join(dir))
        .env("HOME", home.path())
        .output()
        .unwrap_or_else(|e| panic!("kubectl kustomize {dir}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("kubectl kustomize prints UTF-8");
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc)
            .unwrap_or_else(|e| panic!("{dir}: a rendered document does not parse: {e}\n{text}"));
        if !v.is_null() {
            objects.push(v);
        }
    }
    assert!(!objects.is_empty(), "{dir} renders no object");
    Rendered { dir, text, objects }
}

fn kind_name(o: &Value) -> (String, String) {
    (
        o["kind"].as_str().unwrap_or("?").to_string(),
        o["metadata"]["name"].as_str().unwrap_or("?").to_string(),
    )
}

fn name(o: &Value) -> String {
    let (kind, name) = kind_name(o);
    format!("{kind} {name}")
}

/// Parses `o` as `T`, then serializes it back and compares: a field
/// k8s-openapi does not know (a misspelling that kubectl would refuse, or a
/// server would drop) or a value of the wrong type shows as a difference.
fn typed<T: DeserializeOwned + Serialize>(o: &Value) -> T {
    let t: T = serde_json::from_value(o.clone()).unwrap_or_else(|e| {
        panic!(
            "{} does not parse as {}: {e}",
            name(o),
            std::any::type_name::<T>()
        )
    });
    let back = serde_json::to_value(&t).unwrap();
    let mut diffs = Vec::new();
    diff("", o, &back, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{}: fields that do not survive a round trip through {} (misspelled, or of the wrong type):\n{}",
        name(o),
        std::any::type_name::<T>(),
        diffs.join("\n")
    );
    t
}

fn diff(path: &str, written: &Value, parsed: &Value, out: &mut Vec<String>) {
    match (written, parsed) {
        (Value::Object(w), Value::Object(p)) => {
            for (k, v) in w {
                let at = format!("{path}.{k}");
                match p.get(k) {
                    Some(x) => diff(&at, v, x, out),
                    None => out.push(format!("{at}: unknown, dropped ({v})")),
                }
            }
            for (k, x) in p {
                if !w.contains_key(k) {
                    out.push(format!("{path}.{k}: added ({x})"));
                }
            }
        }
        (Value::Array(w), Value::Array(p)) if w.len() == p.len() => {
            for (i, (v, x)) in w.iter().zip(p).enumerate() {
                diff(&format!("{path}[{i}]"), v, x, out);
            }
        }
        // A quantity written as a number (`cpu: 2`) is read as "2".
        (Value::Number(n), Value::String(s)) if n.to_string() == *s => {}
        _ if written != parsed => out.push(format!("{path}: {written} became {parsed}")),
        _ => {}
    }
}

/// The one object of `kind` named `name`, typed.
fn one<T: DeserializeOwned + Serialize>(r: &Rendered, kind: &str, name: &str) -> T {
    let o = r
        .objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{}: no {kind} {name}", r.dir));
    typed(o)
}

/// The rules of a PrometheusRule.
fn rules(o: &Value) -> Vec<&Value> {
    o["spec"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect()
}

/// Every `lifeboat_[a-z_]+` in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "lifeboat_";
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(PREFIX) {
        let tail = &rest[i + PREFIX.len()..];
        let n = tail
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
            .count();
        if n > 0 {
            names.insert(format!("{PREFIX}{}", &tail[..n]));
        }
        rest = &tail[n..];
    }
    names
}

/// A Prometheus duration: `5m`, `26h`, `1h30m`.
fn is_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        match ["ms", "y", "w", "d", "h", "m", "s"]
            .iter()
            .find(|u| rest.starts_with(**u))
        {
            Some(unit) => rest = &rest[unit.len()..],
            None => return false,
        }
    }
    true
}

fn check_prometheus_rule(dir: &str, o: &Value) {
    let what = format!("{dir}: {}", name(o));
    assert_eq!(o["apiVersion"], "monitoring.coreos.com/v1", "{what}");
    let groups = o["spec"]["groups"].as_array().cloned().unwrap_or_default();
    assert!(!groups.is_empty(), "{what}: no spec.groups");
    let mut alerts = BTreeSet::new();
    for g in &groups {
        assert!(
            g["name"].as_str().is_some_and(|n| !n.is_empty()),
            "{what}: a group without a name"
        );
        let rules = g["rules"].as_array().cloned().unwrap_or_default();
        assert!(
            !rules.is_empty(),
            "{what}: group {} has no rules",
            g["name"]
        );
        for rule in &rules {
            let alert = rule["alert"]
                .as_str()
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| panic!("{what}: a rule without `alert`: {rule}"));
            assert!(alerts.insert(alert.to_string()), "{what}: {alert} twice");
            for key in rule.as_object().unwrap().keys() {
                assert!(
                    [
                        "alert",
                        "expr",
                        "for",
                        "keep_firing_for",
                        "labels",
                        "annotations"
                    ]
                    .contains(&key.as_str()),
                    "{what}: {alert} has an unknown field `{key}`"
                );
            }
            assert!(
                rule["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{what}: {alert} has no expr"
            );
            if let Some(f) = rule.get("for") {
                assert!(
                    f.as_str().is_some_and(is_duration),
                    "{what}: {alert}: `for: {f}` is not a Prometheus duration"
                );
            }
            let severity = rule["labels"]["severity"].as_str().unwrap_or("");
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{what}: {alert}: labels.severity is {:?}",
                rule["labels"]["severity"]
            );
            for key in ["summary", "description"] {
                assert!(
                    rule["annotations"][key]
                        .as_str()
                        .is_some_and(|s| !s.trim().is_empty()),
                    "{what}: {alert} has no annotations.{key}"
                );
            }
            let runbook = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
            assert!(
                runbook.starts_with(
                    "https://github.com/lifeboat-dev/lifeboat/blob/main/docs/RUNBOOK.md#"
                ),
                "{what}: {alert}: runbook_url {runbook:?} does not point into docs/RUNBOOK.md"
            );
        }
    }
}

/// Every object of each mode and of the templates parses into its
/// Kubernetes type (every field surviving the round trip), carries the
/// app label and the namespace, and each mode has exactly what it should.
#[test]
fn deploy_renders_and_every_object_parses_into_its_kubernetes_type() {
    let base = [
        ("Namespace", "lifeboat"),
        ("ServiceAccount", "lifeboat"),
        ("ClusterRole", "lifeboat-export"),
        ("ClusterRoleBinding", "lifeboat-export"),
        ("ConfigMap", "lifeboat-policies"),
    ];
    let with_base = |more: &[(&'static str, &'static str)]| {
        let mut list = base.to_vec();
        list.extend_from_slice(more);
        list
    };
    let expected = [
        (
            DAEMON,
            with_base(&[
                ("Deployment", "lifeboat"),
                ("Service", "lifeboat-metrics"),
                ("ServiceMonitor", "lifeboat"),
                ("PrometheusRule", "lifeboat"),
                ("ConfigMap", "lifeboat-dashboard"),
            ]),
        ),
        (
            CRONJOB,
            with_base(&[
                ("CronJob", "lifeboat-backup"),
                ("PrometheusRule", "lifeboat-cronjob"),
            ]),
        ),
        (
            DRILL,
            vec![
                ("ServiceAccount", "lifeboat-drill"),
                ("ClusterRole", "lifeboat-drill"),
                ("ClusterRole", "lifeboat-drill-scratch"),
                ("ClusterRoleBinding", "lifeboat-drill"),
                ("ValidatingAdmissionPolicy", "lifeboat-drill-scratch-only"),
                (
                    "ValidatingAdmissionPolicyBinding",
                    "lifeboat-drill-scratch-only",
                ),
                ("CronJob", "lifeboat-drill"),
                ("PrometheusRule", "lifeboat-drill"),
            ],
        ),
        (
            SECRETS,
            vec![
                ("Secret", "lifeboat-s3"),
                ("Secret", "lifeboat-recipients"),
                ("Secret", "lifeboat-db"),
                ("Secret", "lifeboat-identity"),
            ],
        ),
    ];
    for (dir, objects) in expected {
        let r = render(dir);
        let found: BTreeSet<(String, String)> = r.objects.iter().map(kind_name).collect();
        assert_eq!(found.len(), r.objects.len(), "{dir}: an object twice");
        let objects: BTreeSet<(String, String)> = objects
            .iter()
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .collect();
        assert_eq!(found, objects, "{dir}: the objects rendered");
        for o in &r.objects {
            let what = format!("{dir}: {}", name(o));
            assert_eq!(
                o["metadata"]["labels"]["app.kubernetes.io/name"], "lifeboat",
                "{what}: label app.kubernetes.io/name"
            );
            let cluster_scoped = [
                "Namespace",
                "ClusterRole",
                "ClusterRoleBinding",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
            ]
            .contains(&o["kind"].as_str().unwrap_or(""));
            if !cluster_scoped {
                assert_eq!(o["metadata"]["namespace"], "lifeboat", "{what}: namespace");
            }
            match o["kind"].as_str().unwrap_or("") {
                "Namespace" => {
                    typed::<Namespace>(o);
                }
                "ServiceAccount" => {
                    typed::<ServiceAccount>(o);
                }
                "ClusterRole" => {
                    typed::<ClusterRole>(o);
                }
                "ClusterRoleBinding" => {
                    typed::<ClusterRoleBinding>(o);
                }
                "ValidatingAdmissionPolicy" => {
                    typed::<ValidatingAdmissionPolicy>(o);
                }
                "ValidatingAdmissionPolicyBinding" => {
                    typed::<ValidatingAdmissionPolicyBinding>(o);
                }
                "ConfigMap" => {
                    typed::<ConfigMap>(o);
                }
                "Secret" => {
                    typed::<Secret>(o);
                }
                "Deployment" => {
                    typed::<Deployment>(o);
                }
                "Service" => {
                    typed::<Service>(o);
                }
                "CronJob" => {
                    typed::<CronJob>(o);
                }
                "PrometheusRule" => check_prometheus_rule(dir, o),
                "ServiceMonitor" => {
                    assert_eq!(o["apiVersion"], "monitoring.coreos.com/v1", "{what}");
                }
                other => panic!("{what}: kind {other} is new to this test; parse it here"),
            }
        }
    }
}

/// The Secret templates hold placeholders only, and neither mode applies
/// Secrets (an apply would overwrite the real ones with the placeholders).
#[test]
fn deploy_secrets_are_templates_outside_the_modes() {
    for dir in [DAEMON, CRONJOB, DRILL] {
        let r = render(dir);
        assert!(
            !r.objects.iter().any(|o| o["kind"] == "Secret"),
            "{dir} applies a Secret: `kubectl apply -k {dir}` would overwrite the real one"
        );
    }
    let r = render(SECRETS);
    let expected: [(&str, &[&str]); 4] = [
        ("lifeboat-s3", &["access-key-id", "secret-access-key"]),
        ("lifeboat-recipients", &["recipients.txt"]),
        ("lifeboat-db", &["mysql-password", "pg-password"]),
        ("lifeboat-identity", &["identity.txt"]),
    ];
    for (secret, keys) in expected {
        let s: Secret = one(&r, "Secret", secret);
        assert_eq!(s.type_.as_deref(), Some("Opaque"), "{secret}");
        assert!(s.data.is_none(), "{secret}: a template has stringData only");
        let data = s.string_data.unwrap_or_default();
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            keys,
            "{secret}: keys"
        );
        for (key, value) in &data {
            assert!(
                value.contains("REPLACE-ME"),
                "{secret}/{key} holds a value, not a placeholder: real secrets are never committed"
            );
        }
    }
}

/// `--flag value` in an argument list.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// The names of the Secrets a pod refers to (volumes, projected volumes,
/// env, envFrom), from its JSON.
fn secret_names(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("secretName", Value::String(s)) => {
                        out.insert(s.clone());
                    }
                    ("secret" | "secretRef" | "secretKeyRef", Value::Object(r)) => {
                        if let Some(Value::String(s)) = r.get("name") {
                            out.insert(s.clone());
                        }
                    }
                    _ => {}
                }
                secret_names(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| secret_names(x, out)),
        _ => {}
    }
}

/// Where the pod's first container mounts the volume whose `source` (e.g.
/// "secret") has `key` (e.g. "secretName") equal to `name`.
fn mount_of(pod: &PodSpec, source: &str, key: &str, name: &str) -> Option<PathBuf> {
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| serde_json::to_value(v).unwrap()[source][key] == name)?;
    pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .map(|m| PathBuf::from(&m.mount_path))
}

/// The rules both workloads follow.
fn check_pod(what: &str, pod: &PodSpec) {
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("lifeboat"),
        "{what}: serviceAccountName"
    );
    assert_eq!(
        pod.automount_service_account_token,
        Some(true),
        "{what}: Kubernetes sources export with the pod's token"
    );
    check_hardened(what, pod);
    for c in &pod.containers {
        assert!(
            !c.args.iter().flatten().any(|a| a.starts_with("--identity")),
            "{what}, container {}: the backup side never gets an identity",
            c.name
        );
    }
    // The age identity decrypts every backup: the backup side never sees it.
    let json = serde_json::to_value(pod).unwrap();
    assert!(
        !json.to_string().contains("lifeboat-identity"),
        "{what} refers to the Secret lifeboat-identity: only restore and drill jobs may"
    );
    let mut secrets = BTreeSet::new();
    secret_names(&json, &mut secrets);
    let expected: BTreeSet<String> = BACKUP_SECRETS.map(String::from).into();
    assert_eq!(secrets, expected, "{what}: the Secrets it refers to");
    let db = pod
        .volumes
        .iter()
        .flatten()
        .find_map(|v| {
            v.secret
                .as_ref()
                .filter(|s| s.secret_name.as_deref() == Some("lifeboat-db"))
        })
        .unwrap_or_else(|| panic!("{what}: the Secret lifeboat-db is not mounted"));
    assert_eq!(db.default_mode, Some(0o400), "{what}: lifeboat-db mode");
}

/// Non-root, read-only root file system, no privileges, limited, /tmp an
/// emptyDir, Secrets and ConfigMaps mounted read-only.
fn check_hardened(what: &str, pod: &PodSpec) {
    let sc = pod
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no pod securityContext"));
    assert_eq!(sc.run_as_non_root, Some(true), "{what}: runAsNonRoot");
    assert!(sc.run_as_user.is_some_and(|u| u != 0), "{what}: runAsUser");
    assert!(
        sc.run_as_group.is_some_and(|g| g != 0),
        "{what}: runAsGroup"
    );
    assert!(sc.fs_group.is_some(), "{what}: fsGroup");
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "{what}: seccompProfile"
    );
    assert!(
        pod.host_network != Some(true) && pod.host_pid != Some(true),
        "{what}: host namespaces"
    );
    let volumes: BTreeMap<&str, Value> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), serde_json::to_value(v).unwrap()))
        .collect();
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        let who = format!("{what}, container {}", c.name);
        let csc = c
            .security_context
            .as_ref()
            .unwrap_or_else(|| panic!("{who}: no securityContext"));
        assert_eq!(
            csc.allow_privilege_escalation,
            Some(false),
            "{who}: allowPrivilegeEscalation"
        );
        assert_eq!(
            csc.read_only_root_filesystem,
            Some(true),
            "{who}: readOnlyRootFilesystem"
        );
        assert!(csc.privileged != Some(true), "{who}: privileged");
        let caps = csc.capabilities.clone().unwrap_or_default();
        assert!(
            caps.drop.iter().flatten().any(|d| d.as_str() == "ALL"),
            "{who}: capabilities.drop [ALL]"
        );
        assert!(
            caps.add.is_none_or(|a| a.is_empty()),
            "{who}: capabilities.add"
        );
        let resources = c
            .resources
            .clone()
            .unwrap_or_else(|| panic!("{who}: no resources"));
        let requests = resources.requests.unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        for r in ["cpu", "memory"] {
            assert!(requests.contains_key(r), "{who}: no {r} request");
            assert!(limits.contains_key(r), "{who}: no {r} limit");
        }
        let image = c.image.as_deref().unwrap_or("");
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('/'),
            "{who}: image {image:?} is not pinned to a tag"
        );
        // The root file system is read-only: /tmp is a writable emptyDir
        // and TMPDIR says so.
        let tmp = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == "/tmp")
            .unwrap_or_else(|| panic!("{who}: nothing mounted at /tmp"));
        assert!(
            volumes
                .get(tmp.name.as_str())
                .is_some_and(|v| v.get("emptyDir").is_some()),
            "{who}: /tmp is not an emptyDir"
        );
        assert_eq!(
            c.env
                .iter()
                .flatten()
                .find(|e| e.name == "TMPDIR")
                .and_then(|e| e.value.as_deref()),
            Some("/tmp"),
            "{who}: TMPDIR"
        );
        for m in c.volume_mounts.iter().flatten() {
            let v = volumes
                .get(m.name.as_str())
                .unwrap_or_else(|| panic!("{who}: mounts {}, which is no volume", m.name));
            if v.get("secret").is_some() || v.get("configMap").is_some() {
                assert_eq!(
                    m.read_only,
                    Some(true),
                    "{who}: {} is mounted writable",
                    m.name
                );
            }
        }
    }
}

/// Both workloads are non-root, read-only, limited, and never see the age
/// identity; the daemon is a single Recreate replica whose grace period
/// covers its shutdown deadline; the CronJob never overlaps and gives up;
/// the Service and ServiceMonitor reach the daemon; RBAC only reads.
#[test]
fn deploy_workloads_are_locked_down_and_never_see_the_identity() {
    let daemon = render(DAEMON);
    let cron = render(CRONJOB);

    // Daemon mode.
    let d: Deployment = one(&daemon, "Deployment", "lifeboat");
    let spec = d.spec.expect("Deployment lifeboat: no spec");
    assert_eq!(
        spec.replicas,
        Some(1),
        "one daemon: two would run the same schedules and archivers"
    );
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate"),
        "the old daemon stops before the new one starts"
    );
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/component")
            .map(String::as_str),
        Some("daemon")
    );
    let selects = |selector: &BTreeMap<String, String>| {
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    assert!(
        selects(&spec.selector.match_labels.clone().unwrap_or_default()),
        "the Deployment's selector matches its pods"
    );
    let pod = spec
        .template
        .spec
        .expect("Deployment lifeboat: no pod spec");
    check_pod("Deployment lifeboat", &pod);
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    assert!(
        flag(&args, "--listen").is_some_and(|l| l.ends_with(":9187")),
        "{args:?}"
    );
    let deadline = flag(&args, "--shutdown-deadline")
        .and_then(|d| d.strip_suffix('s'))
        .and_then(|d| d.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("no --shutdown-deadline Ns in {args:?}"));
    let grace = pod.termination_grace_period_seconds.unwrap_or(30);
    // The daemon needs the deadline plus up to 60 s (aborting backups), 30 s
    // (archivers' last partial) and 10 s (S3 aborts) after SIGTERM.
    assert!(
        grace >= deadline + 100,
        "terminationGracePeriodSeconds {grace} must cover --shutdown-deadline {deadline}s + 100 s, or the kubelet kills running uploads"
    );
    let catalog = flag(&args, "--catalog").map(PathBuf::from);
    let catalog_dir = catalog.as_deref().and_then(Path::parent);
    assert!(
        catalog_dir.is_some_and(|dir| c
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| Path::new(&m.mount_path) == dir)),
        "the catalog's folder is a volume (the root file system is read-only): {args:?}"
    );
    for (probe, path) in [
        (&c.liveness_probe, "/healthz"),
        (&c.readiness_probe, "/readyz"),
    ] {
        let http = probe.as_ref().and_then(|p| p.http_get.as_ref());
        assert_eq!(
            http.and_then(|h| h.path.as_deref()),
            Some(path),
            "daemon probe {path}"
        );
    }
    let metrics_port = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("the daemon's container port `metrics`");
    assert_eq!(metrics_port.container_port, 9187);

    let svc: Service = one(&daemon, "Service", "lifeboat-metrics");
    let svc_spec = svc.spec.expect("Service lifeboat-metrics: no spec");
    assert!(
        selects(&svc_spec.selector.clone().unwrap_or_default()),
        "Service lifeboat-metrics selects the daemon's pods"
    );
    assert_eq!(
        svc_spec.publish_not_ready_addresses,
        Some(true),
        "the metrics are scraped while /readyz fails (a broken policy is an alert, not a down daemon)"
    );
    let port = svc_spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("Service lifeboat-metrics: port `metrics`");
    assert_eq!(port.port, 9187);
    assert_eq!(
        serde_json::to_value(&port.target_port).unwrap(),
        json!("metrics"),
        "the Service targets the container port by name"
    );
    let monitor = daemon
        .objects
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .unwrap();
    let svc_labels = svc.metadata.labels.unwrap_or_default();
    let wanted: BTreeMap<String, String> =
        serde_json::from_value(monitor["spec"]["selector"]["matchLabels"].clone())
            .expect("ServiceMonitor: spec.selector.matchLabels");
    assert!(
        !wanted.is_empty() && wanted.iter().all(|(k, v)| svc_labels.get(k) == Some(v)),
        "the ServiceMonitor selects Service lifeboat-metrics"
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");

    // CronJob mode.
    let cj: CronJob = one(&cron, "CronJob", "lifeboat-backup");
    let cj = cj.spec.expect("CronJob lifeboat-backup: no spec");
    assert_eq!(
        cj.concurrency_policy.as_deref(),
        Some("Forbid"),
        "two backups of one policy never run at once"
    );
    assert!(
        cj.starting_deadline_seconds.is_some_and(|s| s > 0),
        "startingDeadlineSeconds: a missed run is not started hours late"
    );
    assert!(cj.successful_jobs_history_limit.is_some());
    assert!(cj.failed_jobs_history_limit.is_some_and(|n| n > 0));
    let job = cj
        .job_template
        .spec
        .expect("CronJob lifeboat-backup: no jobTemplate.spec");
    assert!(job.backoff_limit.is_some(), "backoffLimit");
    assert!(
        job.active_deadline_seconds.is_some_and(|s| s > 0),
        "activeDeadlineSeconds: a hung backup is stopped"
    );
    let pod = job
        .template
        .spec
        .expect("CronJob lifeboat-backup: no pod spec");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    check_pod("CronJob lifeboat-backup", &pod);
    let args = pod.containers[0].args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("backup"), "{args:?}");
    assert!(flag(&args, "--policy").is_some(), "{args:?}");

    // Never both modes in one apply.
    assert!(!daemon.objects.iter().any(|o| o["kind"] == "CronJob"));
    assert!(!cron.objects.iter().any(|o| o["kind"] == "Deployment"));

    // RBAC: read only, bound to the service account.
    for r in [&daemon, &cron] {
        let role: ClusterRole = one(r, "ClusterRole", "lifeboat-export");
        let rules = role.rules.unwrap_or_default();
        assert!(!rules.is_empty(), "{}: lifeboat-export has no rules", r.dir);
        for rule in &rules {
            for verb in &rule.verbs {
                assert!(
                    ["get", "list", "watch"].contains(&verb.as_str()),
                    "{}: ClusterRole lifeboat-export may {verb}: exports only read; restores and drills get their own roles",
                    r.dir
                );
            }
        }
        assert!(
            rules.iter().any(|rule| rule
                .non_resource_urls
                .iter()
                .flatten()
                .any(|u| u.as_str() == "/apis/*")),
            "{}: discovery (nonResourceURLs /apis/*) is allowed",
            r.dir
        );
        let binding: ClusterRoleBinding = one(r, "ClusterRoleBinding", "lifeboat-export");
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        assert_eq!(binding.role_ref.name, "lifeboat-export");
        let subjects = binding.subjects.unwrap_or_default();
        assert!(
            subjects.iter().any(|s| s.kind == "ServiceAccount"
                && s.name == "lifeboat"
                && s.namespace.as_deref() == Some("lifeboat")),
            "{}: the binding names the service account lifeboat/lifeboat",
            r.dir
        );
        assert_eq!(subjects.len(), 1, "{}: only lifeboat is bound", r.dir);
    }
}

/// The keys of a Secret template.
fn secret_keys(secrets: &Rendered, name: &str) -> BTreeSet<String> {
    let s: Secret = one(secrets, "Secret", name);
    s.string_data.unwrap_or_default().into_keys().collect()
}

/// The example policy of the ConfigMap parses, and what it names exists in
/// both pods: password files in the mounted lifeboat-db Secret, the
/// recipients file in the mounted lifeboat-recipients Secret, the S3
/// variables from lifeboat-s3; the daemon reads the policies' folder, the
/// CronJob one of its files, on the policy's schedule.
#[test]
fn deploy_policy_parses_and_matches_the_pods() {
    let daemon = render(DAEMON);
    let cron = render(CRONJOB);
    let secrets = render(SECRETS);
    let cm: ConfigMap = one(&daemon, "ConfigMap", "lifeboat-policies");
    let files = cm.data.unwrap_or_default();
    assert!(
        !files.is_empty(),
        "ConfigMap lifeboat-policies holds no policy"
    );

    let d: Deployment = one(&daemon, "Deployment", "lifeboat");
    let daemon_pod = d.spec.unwrap().template.spec.unwrap();
    let cj: CronJob = one(&cron, "CronJob", "lifeboat-backup");
    let cron_spec = cj.spec.unwrap();
    let cron_pod = cron_spec
        .job_template
        .spec
        .clone()
        .unwrap()
        .template
        .spec
        .unwrap();

    for (file, text) in &files {
        assert!(file.ends_with(".yaml"), "policy file {file}");
        let policy = Policy::parse(text, Path::new(file))
            .unwrap_or_else(|e| panic!("deploy/base/policies.yaml: {file} does not parse: {e}"));
        for (what, pod) in [("Deployment", &daemon_pod), ("CronJob", &cron_pod)] {
            let container = &pod.containers[0];
            // Password files: keys of lifeboat-db, in its mount.
            let db_mount = mount_of(pod, "secret", "secretName", "lifeboat-db")
                .unwrap_or_else(|| panic!("{what}: lifeboat-db is not mounted"));
            let db_keys = secret_keys(&secrets, "lifeboat-db");
            let mut passwords = 0;
            for source in &policy.sources {
                let password = source
                    .postgres
                    .as_ref()
                    .and_then(|p| p.password.clone())
                    .or_else(|| source.mysql.as_ref().and_then(|m| m.password.clone()));
                match password {
                    Some(SecretRef::File(p)) => {
                        passwords += 1;
                        assert_eq!(
                            p.parent(),
                            Some(db_mount.as_path()),
                            "{file}: source {} reads {}, outside the mount of lifeboat-db in the {what}",
                            source.name.as_str(),
                            p.display()
                        );
                        let key = p.file_name().unwrap().to_string_lossy().to_string();
                        assert!(
                            db_keys.contains(&key),
                            "{file}: source {} reads {key}, which lifeboat-db (deploy/secrets/db.yaml) does not have",
                            source.name.as_str()
                        );
                    }
                    Some(SecretRef::Env(v)) => panic!(
                        "{file}: source {} takes its password from ${v}; in the cluster it comes from the mounted Secret",
                        source.name.as_str()
                    ),
                    None => {}
                }
            }
            assert!(passwords >= 2, "{file}: the example shows password files");

            // Recipients: a key of lifeboat-recipients, in its mount.
            let recipients = policy
                .encryption
                .recipients_file
                .as_ref()
                .unwrap_or_else(|| panic!("{file}: encryption.recipients_file"));
            assert_eq!(
                recipients.parent().map(Path::to_path_buf),
                mount_of(pod, "secret", "secretName", "lifeboat-recipients"),
                "{file}: the recipients file is in the mount of lifeboat-recipients ({what})"
            );
            let key = recipients
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            assert!(secret_keys(&secrets, "lifeboat-recipients").contains(&key));

            // S3 credentials: environment variables from lifeboat-s3.
            let s3_keys = secret_keys(&secrets, "lifeboat-s3");
            for secret in [
                &policy.repository.access_key_id,
                &policy.repository.secret_access_key,
            ] {
                let Some(SecretRef::Env(var)) = secret else {
                    panic!("{file}: the S3 credentials come from the environment in the example");
                };
                let env = container
                    .env
                    .iter()
                    .flatten()
                    .find(|e| e.name == *var)
                    .unwrap_or_else(|| panic!("{what}: ${var} is not set"));
                let from = serde_json::to_value(&env.value_from).unwrap();
                assert_eq!(
                    from["secretKeyRef"]["name"], "lifeboat-s3",
                    "{what}: ${var}"
                );
                assert!(
                    from["secretKeyRef"]["key"]
                        .as_str()
                        .is_some_and(|k| s3_keys.contains(k)),
                    "{what}: ${var} names a key lifeboat-s3 does not have"
                );
            }
        }
    }

    // The daemon reads the ConfigMap's folder.
    let policies = mount_of(&daemon_pod, "configMap", "name", "lifeboat-policies")
        .expect("Deployment: lifeboat-policies is not mounted");
    let args = daemon_pod.containers[0].args.clone().unwrap_or_default();
    assert_eq!(
        flag(&args, "--policies").map(PathBuf::from),
        Some(policies),
        "the daemon reads the mounted policies"
    );

    // The CronJob runs one of its files, on that policy's schedule.
    let policies = mount_of(&cron_pod, "configMap", "name", "lifeboat-policies")
        .expect("CronJob: lifeboat-policies is not mounted");
    let args = cron_pod.containers[0].args.clone().unwrap_or_default();
    let policy = PathBuf::from(flag(&args, "--policy").expect("CronJob: --policy"));
    assert_eq!(policy.parent(), Some(policies.as_path()), "{args:?}");
    let file = policy.file_name().unwrap().to_string_lossy().to_string();
    let text = files
        .get(&file)
        .unwrap_or_else(|| panic!("the CronJob runs {file}, which the ConfigMap does not hold"));
    let raw: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    assert_eq!(
        raw["schedule"].as_str(),
        Some(cron_spec.schedule.as_str()),
        "the CronJob runs on the policy's schedule"
    );
    assert_eq!(
        raw["timezone"].as_str(),
        cron_spec.time_zone.as_deref(),
        "the CronJob reads its schedule in the policy's time zone"
    );
}

/// Alerts and dashboard use only metrics lifeboat exports; the dashboard's
/// ConfigMap holds deploy/grafana-dashboard.json; deploy/README.md lists
/// every alert.
#[test]
fn deploy_alerts_and_dashboard_use_only_exported_metrics() {
    // The lib's own list: what the daemon can export.
    let known: BTreeSet<&str> = lifeboat::metrics::names().collect();
    let daemon = render(DAEMON);
    let cron = render(CRONJOB);
    let drill = render(DRILL);
    let mut alerts = Vec::new();
    for r in [&daemon, &cron, &drill] {
        for o in r.objects.iter().filter(|o| o["kind"] == "PrometheusRule") {
            for rule in rules(o) {
                let alert = rule["alert"].as_str().unwrap_or("?").to_string();
                let used = metric_names(rule["expr"].as_str().unwrap_or(""));
                for m in &used {
                    assert!(
                        known.contains(m.as_str()),
                        "{}: alert {alert} uses {m}, which lifeboat does not export",
                        r.dir
                    );
                }
                // The daemon's alerts are on lifeboat's own metrics, except
                // the one for a daemon that is not scraped at all.
                if r.dir == DAEMON && alert != "LifeboatDaemonDown" {
                    assert!(
                        !used.is_empty(),
                        "{}: alert {alert} uses no lifeboat metric",
                        r.dir
                    );
                }
                alerts.push(alert);
            }
        }
    }
    assert!(alerts.len() >= 10, "{alerts:?}");

    let path = repo().join("deploy/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let in_dashboard = metric_names(&text);
    for m in &in_dashboard {
        assert!(
            known.contains(m.as_str()),
            "deploy/grafana-dashboard.json uses {m}, which lifeboat does not export"
        );
    }
    assert!(
        in_dashboard.len() >= 15,
        "the dashboard charts lifeboat's metrics: {in_dashboard:?}"
    );
    let dashboard: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("deploy/grafana-dashboard.json is not JSON: {e}"));
    assert_eq!(dashboard["uid"], "lifeboat");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("the dashboard has no variable ${name}"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    assert!(
        variable("policy")["definition"].as_str().is_some_and(
            |q| q.contains("label_values(lifeboat_backup_last_success_timestamp_seconds")
        ),
        "$policy comes from the backups' label"
    );
    let mut panels: Vec<Value> = dashboard["panels"].as_array().cloned().unwrap_or_default();
    let mut charted = 0;
    while let Some(p) = panels.pop() {
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner.iter().cloned());
        }
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in &targets {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "panel {}: queries go to the chosen data source",
                p["title"]
            );
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "panel {}: a query without expr",
                p["title"]
            );
        }
        charted += 1;
    }
    assert!(charted >= 15, "{charted} panels");

    // The ConfigMap for Grafana's sidecar holds the same dashboard.
    let cm: ConfigMap = one(&daemon, "ConfigMap", "lifeboat-dashboard");
    assert_eq!(
        cm.metadata
            .labels
            .unwrap_or_default()
            .get("grafana_dashboard")
            .map(String::as_str),
        Some("1"),
        "the sidecar finds dashboards by label grafana_dashboard=1"
    );
    let held = cm
        .data
        .unwrap_or_default()
        .get("lifeboat.json")
        .cloned()
        .expect("ConfigMap lifeboat-dashboard: lifeboat.json");
    let held: Value = serde_json::from_str(&held)
        .unwrap_or_else(|e| panic!("ConfigMap lifeboat-dashboard: lifeboat.json is not JSON: {e}"));
    assert!(
        held == dashboard,
        "deploy/dashboard.yaml and deploy/grafana-dashboard.json differ; regenerate the ConfigMap (the command is in deploy/dashboard.yaml)"
    );

    // The README's alert table is complete.
    let readme = std::fs::read_to_string(repo().join("deploy/README.md")).unwrap();
    for alert in &alerts {
        assert!(
            readme.contains(alert.as_str()),
            "deploy/README.md does not list the alert {alert}"
        );
    }
}

/// A CustomResourceDefinition of the Prometheus operator's group.
fn monitoring_crd(plural: &str, kind: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": kind.to_lowercase(),
            },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    })
}

/// Waits until kubectl's discovery lists `resource` (`plural.group`).
fn wait_for_type(kubeconfig: &Path, home: &Path, resource: &str) {
    let group = resource.split_once('.').map(|(_, g)| g).unwrap_or("");
    let deadline = Instant::now() + Duration::from_secs(10);
    for attempt in 0.. {
        // A fresh discovery cache each time: a cached miss would stick.
        let out = Command::new(kubectl())
            .args([
                "api-resources",
                "-o",
                "name",
                "--api-group",
                group,
                "--cache-dir",
            ])
            .arg(home.join(format!("discovery-{attempt}")))
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", home)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.lines().any(|l| l.trim() == resource) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the API server does not offer {resource} after 10 s:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// kubectl accepts every rendered object (a client-side dry run against the
/// in-process API server, which knows the Prometheus operator's types once
/// their CRDs are in); nothing is created.
#[test]
fn kubectl_accepts_the_deploy_manifests() {
    let server = KubeServer::start();
    // What a new cluster holds (its system namespaces).
    let fresh = server.objects();
    // kubectl sends no bearer token over plain HTTP.
    server.allow_anonymous();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    for (plural, kind) in [
        ("prometheusrules", "PrometheusRule"),
        ("servicemonitors", "ServiceMonitor"),
    ] {
        server.insert(monitoring_crd(plural, kind));
        wait_for_type(
            &kubeconfig,
            dir.path(),
            &format!("{plural}.monitoring.coreos.com"),
        );
    }
    for r in [
        render(DAEMON),
        render(CRONJOB),
        render(DRILL),
        render(SECRETS),
    ] {
        let file = dir.path().join(format!("{}.yaml", r.dir.replace('/', "-")));
        std::fs::write(file.as_path(), r.text.as_bytes()).unwrap();
        let out = Command::new(kubectl())
            .args(["apply", "--dry-run=client", "-f"])
            .arg(file.as_path())
            .env("KUBECONFIG", kubeconfig.as_path())
            .env("HOME", dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kubectl apply --dry-run=client -f {} ({}) failed:\n{stdout}\n{}",
            file.display(),
            r.dir,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout.lines().filter(|l| l.contains("(dry run)")).count(),
            r.objects.len(),
            "{}: one line per object:\n{stdout}",
            r.dir
        );
    }
    let created: Vec<String> = server
        .objects()
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition" && !fresh.contains(o))
        .map(name)
        .collect();
    assert!(created.is_empty(), "a dry run created {created:?}");
}

/// The drill CronJob: locked down like the backup side, never retried
/// (a failed drill is a finding), never overlapping; it alone mounts the
/// identity, at the path its `--identity` names; its scratch folder is an
/// emptyDir; its account has no token and no role; the policy file it
/// drills is in the ConfigMap and has a PostgreSQL source to drill.
#[test]
fn deploy_drill_job_mounts_the_identity_and_may_write_only_scratch_namespaces() {
    let drill = render(DRILL);
    let daemon = render(DAEMON);
    let cj: CronJob = one(&drill, "CronJob", "lifeboat-drill");
    let spec = cj.spec.expect("CronJob lifeboat-drill: no spec");
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert!(spec.starting_deadline_seconds.is_some_and(|s| s > 0));
    let job = spec.job_template.spec.expect("no job spec");
    assert_eq!(job.backoff_limit, Some(0), "a failed drill is not retried");
    assert!(job.active_deadline_seconds.is_some());
    let pod = job.template.spec.expect("no pod spec");
    check_hardened("CronJob lifeboat-drill", &pod);
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("lifeboat-drill"),
        "not the export account, which can read every Secret"
    );
    // Kubernetes drills need the API, and only for scratch namespaces.
    assert_eq!(pod.automount_service_account_token, Some(true));
    check_drill_rbac(&drill, &daemon);

    let c = &pod.containers[0];
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("drill"), "{args:?}");
    let identity = flag(&args, "--identity").unwrap_or_else(|| panic!("no --identity in {args:?}"));
    let mounted = mount_of(&pod, "secret", "secretName", "lifeboat-identity")
        .expect("the Secret lifeboat-identity is not mounted");
    assert_eq!(
        mounted.join("identity.txt"),
        Path::new(identity),
        "--identity names the mounted key"
    );
    let identity_volume = pod
        .volumes
        .iter()
        .flatten()
        .find_map(|v| {
            v.secret
                .as_ref()
                .filter(|s| s.secret_name.as_deref() == Some("lifeboat-identity"))
        })
        .unwrap();
    assert_eq!(identity_volume.default_mode, Some(0o400));
    let json = serde_json::to_value(&pod).unwrap();
    let mut secrets = BTreeSet::new();
    secret_names(&json, &mut secrets);
    assert!(
        !secrets.contains("lifeboat-db"),
        "a drill never connects to the source: {secrets:?}"
    );

    let scratch =
        flag(&args, "--scratch-dir").unwrap_or_else(|| panic!("no --scratch-dir in {args:?}"));
    let m = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == scratch)
        .unwrap_or_else(|| panic!("nothing mounted at {scratch}"));
    let v = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == m.name)
        .unwrap();
    assert!(v.empty_dir.is_some(), "the scratch folder is an emptyDir");

    let policy_path = PathBuf::from(flag(&args, "--policy").expect("no --policy"));
    let cm: ConfigMap = one(&daemon, "ConfigMap", "lifeboat-policies");
    let file = policy_path.file_name().unwrap().to_str().unwrap();
    let text = cm
        .data
        .unwrap_or_default()
        .get(file)
        .cloned()
        .unwrap_or_else(|| panic!("the ConfigMap has no {file}"));
    assert_eq!(
        mount_of(&pod, "configMap", "name", "lifeboat-policies").map(|d| d.join(file)),
        Some(policy_path.clone())
    );
    let policy = Policy::parse(&text, &policy_path).unwrap();
    assert!(
        policy
            .sources
            .iter()
            .any(|s| matches!(s.kind(), lifeboat::policy::SourceKind::Postgres(_))),
        "the drilled policy has a PostgreSQL source"
    );
    assert!(
        !policy.drill.checks.is_empty(),
        "the example policy shows a drill check"
    );
    let k = &policy.drill.kubernetes;
    assert_eq!(
        k.account(),
        Some(("lifeboat", "lifeboat-drill")),
        "scratch namespaces bind the role to the drill pod's account"
    );
    let scratch: ClusterRole = one(&drill, "ClusterRole", k.cluster_role());
    assert!(scratch.rules.is_some());
}

/// The drill account's rights: namespaces and one bindable role, no read of
/// anything else; the role with the restore's rights is bound nowhere
/// cluster-wide; admission keeps the account's namespace and RoleBinding
/// writes to `lifeboat-drill-*`; the policy binds that role to this account.
fn check_drill_rbac(drill: &Rendered, daemon: &Rendered) {
    let account = "system:serviceaccount:lifeboat:lifeboat-drill";
    for r in [drill, daemon] {
        for o in &r.objects {
            let kind = o["kind"].as_str().unwrap_or("");
            if ["RoleBinding", "ClusterRoleBinding"].contains(&kind)
                && o["subjects"].to_string().contains("lifeboat-drill")
            {
                assert_eq!(
                    (kind, o["roleRef"]["name"].as_str().unwrap_or("")),
                    ("ClusterRoleBinding", "lifeboat-drill"),
                    "{}: the drill account gets only ClusterRole lifeboat-drill cluster-wide",
                    name(o)
                );
            }
            if kind.ends_with("Binding") {
                assert_ne!(
                    o["roleRef"]["name"], "lifeboat-drill-scratch",
                    "{}: lifeboat-drill-scratch is bound only inside scratch namespaces, by the drill",
                    name(o)
                );
            }
        }
    }
    let role: ClusterRole = one(drill, "ClusterRole", "lifeboat-drill");
    for rule in role.rules.iter().flatten() {
        let resources = rule.resources.clone().unwrap_or_default();
        let verbs = rule.verbs.clone();
        assert!(
            !resources.iter().any(|r| r == "*" || r == "secrets"),
            "ClusterRole lifeboat-drill: {rule:?} reaches beyond namespaces"
        );
        if resources.iter().any(|r| r == "clusterroles") {
            assert_eq!(
                rule.resource_names.as_deref(),
                Some(&["lifeboat-drill-scratch".to_string()][..]),
                "bind only the scratch role"
            );
            assert_eq!(verbs, vec!["bind".to_string()]);
        }
        if resources.iter().any(|r| r == "rolebindings") {
            assert!(
                !verbs.iter().any(|v| v == "list" || v == "delete"),
                "{rule:?}"
            );
        }
    }
    let vap: ValidatingAdmissionPolicy = one(
        drill,
        "ValidatingAdmissionPolicy",
        "lifeboat-drill-scratch-only",
    );
    let spec = vap.spec.expect("no spec");
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    let conditions = spec.match_conditions.unwrap_or_default();
    assert!(
        conditions.iter().any(|c| c.expression.contains(account)),
        "the policy applies to the drill account: {conditions:?}"
    );
    let rules = spec
        .match_constraints
        .and_then(|m| m.resource_rules)
        .unwrap_or_default();
    let covered: BTreeSet<String> = rules
        .iter()
        .flat_map(|r| r.resources.clone().unwrap_or_default())
        .collect();
    assert!(
        covered.contains("namespaces") && covered.contains("rolebindings"),
        "{covered:?}"
    );
    let validations = spec.validations.unwrap_or_default();
    assert!(
        validations
            .iter()
            .any(|v| v.expression.contains("startsWith('lifeboat-drill-')")),
        "{validations:?}"
    );
    let binding: ValidatingAdmissionPolicyBinding = one(
        drill,
        "ValidatingAdmissionPolicyBinding",
        "lifeboat-drill-scratch-only",
    );
    let bspec = binding.spec.expect("no spec");
    assert_eq!(
        bspec.policy_name.as_deref(),
        Some("lifeboat-drill-scratch-only")
    );
    assert_eq!(bspec.validation_actions, Some(vec!["Deny".to_string()]));
    let sa: ServiceAccount = one(drill, "ServiceAccount", "lifeboat-drill");
    assert_ne!(sa.automount_service_account_token, Some(false));
}
