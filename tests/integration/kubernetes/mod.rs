//! Kubernetes configuration exports and restores, against the in-process
//! API server of `kube_server/` (no real API server can run here).
//!
//! Layout: `roundtrip.rs` (export, then restore into a copy or the original
//! names), `export.rs` (the plain export as Kubernetes YAML), `secrets.rs`
//! (no secret in the clear), `errors.rs` (unreachable, forbidden, failing
//! servers), `selection.rs` (which namespaces, overwrite, live),
//! `locking.rs` (one backup of a source at a time); the shared helpers are
//! here.

mod errors;
mod export;
mod locking;
mod roundtrip;
mod secrets;
mod selection;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{Lifeboat, Repo, Run};
use crate::kube_server::KubeServer;

fn kube_source(kubeconfig: &Path, extra: &str) -> String {
    format!(
        "  - name: cluster-config\n    kubernetes:\n      kubeconfig: {}\n      context: test\n      \
         namespaces: [prod]\n      cluster_resources: [CustomResourceDefinition, ClusterRole, ClusterRoleBinding, StorageClass]\n{extra}",
        kubeconfig.display()
    )
}

/// A lifeboat folder whose policy exports namespace `prod` of `server`.
fn setup(server: &KubeServer, extra: &str) -> (Lifeboat, tempfile::TempDir) {
    let repo = tempfile::tempdir().unwrap();
    let lb = Lifeboat::with_source(Repo::Local(repo.path().join("repo")), "", &[]);
    let kubeconfig = server.kubeconfig(lb.dir.path());
    let policy = std::fs::read_to_string(&lb.policy).unwrap();
    std::fs::write(&lb.policy, policy + &kube_source(&kubeconfig, extra)).unwrap();
    (lb, repo)
}

/// `lifeboat restore --source cluster-config` with this folder's identity.
pub(crate) fn restore(lb: &Lifeboat, extra: &[&str]) -> Run {
    let identity = lb.identity.display().to_string();
    let mut args = vec![
        "restore",
        "--source",
        "cluster-config",
        "--identity",
        &identity,
    ];
    args.extend_from_slice(extra);
    lb.run(&args)
}

fn kind_name(o: &Value) -> (String, String) {
    (
        o["kind"].as_str().unwrap_or("").to_string(),
        o["metadata"]["name"].as_str().unwrap_or("").to_string(),
    )
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// What the export must leave out of namespace `prod` of the seed: what
/// controllers and the server recreate.
fn left_out(o: &Value) -> bool {
    let (kind, name) = kind_name(o);
    let owned = o["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r["controller"] == true
                    && ["ReplicaSet", "Deployment", "StatefulSet", "Job", "CronJob"]
                        .contains(&r["kind"].as_str().unwrap_or(""))
            })
        });
    owned
        || matches!(
            kind.as_str(),
            "Endpoints" | "EndpointSlice" | "Event" | "Lease" | "ControllerRevision"
        )
        || (kind == "Secret" && o["type"] == "kubernetes.io/service-account-token")
        || (kind == "ConfigMap" && name == "kube-root-ca.crt")
}

fn manifest(lb: &Lifeboat) -> Value {
    let r = lb.run(&["list", "--json"]);
    r.ok();
    let all: Value = serde_json::from_str(&r.stdout).unwrap();
    all.as_array().unwrap().last().expect("a backup").clone()
}

fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk_files(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}
