//! A realistic platform (`tests/fixtures/platform/`: three namespaces of
//! Deployments, a StatefulSet, Services of every type, Ingress, HPA, PDBs,
//! NetworkPolicies, CronJob, quotas, RBAC) applied with kubectl and its
//! default validation, backed up, one namespace deleted and restored in
//! place, and compared with `kubectl get -o json` field by field.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Lifeboat, Repo};
use crate::kube_server::KubeServer;

const KINDS: &str = "namespaces,deployments,statefulsets,services,configmaps,secrets,serviceaccounts,roles,rolebindings,persistentvolumeclaims,poddisruptionbudgets,horizontalpodautoscalers,networkpolicies,ingresses,cronjobs,resourcequotas,limitranges";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/platform")
}

struct Kubectl {
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .output()
            .expect("kubectl is installed by scripts/install-deps.sh")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every object of the fixture's kinds in `ns`, without what the server
    /// owns, by (kind, name).
    fn snapshot(&self, ns: &str) -> Vec<((String, String), Value)> {
        let list: Value =
            serde_json::from_str(&self.ok(&["get", KINDS, "-n", ns, "-o", "json"])).unwrap();
        let mut out: Vec<((String, String), Value)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            // kubectl get namespaces -n X lists all namespaces.
            .filter(|o| o["kind"] != "Namespace" || o["metadata"]["name"] == ns)
            // Made by the cluster per namespace, with fresh contents.
            .filter(|o| !(o["kind"] == "ConfigMap" && o["metadata"]["name"] == "kube-root-ca.crt"))
            .map(|o| {
                let mut o = o.clone();
                strip_server_fields(&mut o);
                (
                    (
                        o["kind"].as_str().unwrap().to_string(),
                        o["metadata"]["name"].as_str().unwrap().to_string(),
                    ),
                    o,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Removes what the server owns: identity, versions, timestamps, field
/// managers, status, allocated addresses, and kubectl's own annotation.
fn strip_server_fields(o: &mut Value) {
    let obj = o.as_object_mut().unwrap();
    obj.remove("status");
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
        ] {
            meta.remove(f);
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
            if a.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    if obj.get("kind").and_then(Value::as_str) == Some("Service") {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
        }
    }
}

#[test]
fn a_realistic_platform_applied_with_kubectl_comes_back_field_by_field() {
    let server = KubeServer::start();
    server.allow_anonymous();
    let repo = tempfile::tempdir().unwrap();
    let lb = Lifeboat::with_source(Repo::Local(repo.path().join("repo")), "", &[]);
    let kubectl = Kubectl {
        kubeconfig: server.kubeconfig(lb.dir.path()),
        home: lb.dir.path().to_path_buf(),
    };
    // kubectl with its default (strict) validation: the server's OpenAPI
    // sends it to server-side field validation.
    let applied = kubectl.ok(&["apply", "-f", fixtures().to_str().unwrap()]);
    assert_eq!(
        applied.lines().filter(|l| l.ends_with(" created")).count(),
        43,
        "{applied}"
    );
    let before = kubectl.snapshot("payments");
    assert!(before.len() >= 17, "{before:#?}");

    // An invalid object is refused by the server as kube-apiserver would.
    let bad = lb.dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: no-selector, namespace: shop}\nspec:\n  template:\n    metadata: {labels: {app: x}}\n    spec: {containers: [{name: x, image: x:1}]}\n",
    )
    .unwrap();
    let out = kubectl.run(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("The Deployment \"no-selector\" is invalid: spec.selector: Required value"),
        "{out:?}"
    );
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo, namespace: shop}\ndta: {a: b}\n",
    )
    .unwrap();
    let out = kubectl.run(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field \"dta\""),
        "{out:?}"
    );

    let policy = std::fs::read_to_string(&lb.policy).unwrap();
    std::fs::write(
        &lb.policy,
        policy
            + &format!(
                "  - name: platform\n    kubernetes:\n      kubeconfig: {}\n      context: test\n      namespaces: [shop, payments, monitoring]\n      cluster_resources: [ClusterRole, ClusterRoleBinding]\n",
                kubectl.kubeconfig.display()
            ),
    )
    .unwrap();
    lb.run(&["backup"]).ok();

    // The namespace is lost. While it is being deleted a restore is
    // refused, and the advice it gives holds.
    server.set_namespace_termination(Duration::from_secs(3600));
    kubectl.ok(&["delete", "namespace", "payments", "--wait=false"]);
    let identity = lb.identity.display().to_string();
    let restore = [
        "restore",
        "--source",
        "platform",
        "--identity",
        identity.as_str(),
        "--namespace",
        "payments",
    ];
    lb.run(&restore).fails_with(
        5,
        &[
            "namespace 'payments' is being deleted",
            "kubectl get namespace payments",
        ],
    );
    server.set_namespace_termination(Duration::ZERO);
    let out = kubectl.run(&["get", "namespace", "payments"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{out:?}"
    );

    lb.run(&restore).ok();
    let after = kubectl.snapshot("payments");
    let names =
        |s: &[((String, String), Value)]| s.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(names(&after), names(&before));
    for ((k, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(b, a, "{k:?} differs after the restore");
    }

    // The team's pipeline applies its manifests again on the restored
    // namespace (kubectl's client-side apply: strategic merge patches):
    // nothing changes.
    let again = kubectl.ok(&["apply", "-f", fixtures().to_str().unwrap()]);
    assert!(
        again
            .lines()
            .all(|l| l.ends_with(" unchanged") || l.ends_with(" configured")),
        "{again}"
    );
    assert_eq!(kubectl.snapshot("payments"), before);
    // And scales a workload through the scale subresource.
    kubectl.ok(&["scale", "deployment/api", "-n", "payments", "--replicas=5"]);
    assert_eq!(
        server
            .get("apps/v1", "Deployment", Some("payments"), "api")
            .unwrap()["spec"]["replicas"],
        5
    );
}
