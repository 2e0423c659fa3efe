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
//!
//! Layout: `manifests.rs` (what each kustomization renders, the Secret
//! templates), `workloads.rs` (the pods' and RBAC's rules), `policy.rs`
//! (the example policy against the pods), `monitoring.rs` (alerts and
//! dashboard), `kubectl.rs` (kubectl's dry run), `drill_job.rs` (the drill
//! CronJob and its rights); the shared helpers are here.

mod drill_job;
mod kubectl;
mod manifests;
mod monitoring;
mod policy;
mod workloads;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::PodSpec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    for doc in yaml_serde::Deserializer::from_str(&text) {
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
