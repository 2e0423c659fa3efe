//! kubectl accepts every rendered object (a client-side dry run against the
//! in-process API server).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{kubectl, name, render, CRONJOB, DAEMON, DRILL, SECRETS};
use crate::kube_server::KubeServer;

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
