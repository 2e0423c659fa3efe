//! The plain export is valid Kubernetes YAML: k8s-openapi, kubectl and
//! apply.sh accept it.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{kind_name, restore, setup};
use crate::kube_server::KubeServer;

/// Every exported file parses into its k8s-openapi type, and kubectl
/// accepts the folder.
// Stays long: one export, checked by k8s-openapi, kubectl and apply.sh in turn.
#[test]
fn the_plain_export_is_valid_kubernetes_yaml() {
    use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
    use k8s_openapi::api::{networking::v1 as net, rbac::v1 as rbac, storage::v1 as storage};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    let server = KubeServer::start();
    server.seed_realistic("prod");
    // Values YAML 1.1 (kubectl) would read as something else if unquoted,
    // and characters YAML readers reject or read as line breaks.
    server.insert(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "yaml-traps", "namespace": "prod"},
        "data": {
            "bool-y": "y", "bool-on": "on", "bool-NO": "NO", "octal": "0755", "sexagesimal": "12:30",
            "underscore": "1_000", "hex": "0x1F", "inf": ".inf", "float": "-.5", "plus": "+1",
            "date": "2001-12-14", "null-tilde": "~", "empty": "", "merge": "<<",
            "tab-first": "\tindented with a tab\nsecond line\n", "del": "a\u{7f}b",
            "nel": "a\u{85}b", "line-separator": "a\u{2028}b", "block-with-ls": "x\n\u{2029}\n",
            "leading-space-block": "  two spaces\nnone\n", "keep-newlines": "end\n\n\n",
        }
    }));
    let (lb, _repo) = setup(&server, "");
    lb.run(&["backup"]).ok();
    let dir = lb.dir.path().join("export");
    let d = dir.display().to_string();
    let r = restore(&lb, &["--to-dir", &d]);
    r.ok();
    assert!(
        r.stderr.contains("plaintext"),
        "warns about Secrets on disk: {}",
        r.stderr
    );
    // Not over an existing export.
    restore(&lb, &["--to-dir", &d]).fails_with(5, &["not empty"]);

    let mut files = Vec::new();
    collect_yaml(&dir, &mut files);
    assert!(files.len() >= 20, "{files:?}");
    for f in &files {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
        let text = std::fs::read_to_string(f).unwrap();
        let v: Value = yaml_serde::from_str(&text).unwrap();
        let kind = v["kind"].as_str().unwrap().to_string();
        macro_rules! parse {
            ($t:ty) => {
                yaml_serde::from_str::<$t>(&text)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
        }
        let parsed = match kind.as_str() {
            "Namespace" => parse!(core::Namespace),
            "ConfigMap" => parse!(core::ConfigMap),
            "Secret" => parse!(core::Secret),
            "ServiceAccount" => parse!(core::ServiceAccount),
            "Service" => parse!(core::Service),
            "PersistentVolumeClaim" => parse!(core::PersistentVolumeClaim),
            "Deployment" => parse!(apps::Deployment),
            "StatefulSet" => parse!(apps::StatefulSet),
            "CronJob" => parse!(batch::CronJob),
            "Job" => parse!(batch::Job),
            "Role" => parse!(rbac::Role),
            "RoleBinding" => parse!(rbac::RoleBinding),
            "ClusterRole" => parse!(rbac::ClusterRole),
            "ClusterRoleBinding" => parse!(rbac::ClusterRoleBinding),
            "Ingress" => parse!(net::Ingress),
            "NetworkPolicy" => parse!(net::NetworkPolicy),
            "StorageClass" => parse!(storage::StorageClass),
            "CustomResourceDefinition" => parse!(CustomResourceDefinition),
            _ => parse!(kube::api::DynamicObject),
        };
        parsed.unwrap_or_else(|e| panic!("{} does not parse as {kind}: {e}\n{text}", f.display()));
    }
    // The tricky ConfigMap values survive as strings.
    let cm = find_file(&files, "prod/core-v1-ConfigMap/app-settings.yaml");
    let cm: Value = yaml_serde::from_str(&std::fs::read_to_string(cm).unwrap()).unwrap();
    let original = server
        .get("v1", "ConfigMap", Some("prod"), "app-settings")
        .unwrap();
    assert_eq!(cm["data"], original["data"]);
    assert!(dir.join("apply.sh").exists());

    // kubectl (client-side dry run against the test server: it needs discovery).
    let kubectl = which("kubectl").expect("kubectl is installed by scripts/install-deps.sh");
    server.allow_anonymous();
    let kubeconfig = server.kubeconfig(&lb.dir.path().join("kubectl"));
    let out = std::process::Command::new(kubectl)
        .args(["apply", "--dry-run=client", "-R", "-f"])
        .arg(&dir)
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", lb.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl apply --dry-run=client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains("(dry run)")).count(),
        files.len(),
        "{stdout}"
    );

    // apply.sh with a server-side dry run, on an export with a CRD: every
    // folder goes through kubectl apply, the wait for the CRD is skipped,
    // and the server is left as it was.
    let before = server.objects();
    let out = std::process::Command::new("sh")
        .arg(dir.join("apply.sh"))
        .arg("--dry-run=server")
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", lb.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "apply.sh --dry-run=server failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("customresourcedefinition.apiextensions.k8s.io/backuptargets.example.com")
            && stdout.contains("(server dry run)"),
        "{stdout}"
    );
    assert_eq!(server.objects(), before, "a dry run changes nothing");

    // What kubectl decodes (YAML 1.1, into the typed objects) is what the
    // cluster had: every ConfigMap's and Secret's data, key by key.
    let out = std::process::Command::new(which("kubectl").unwrap())
        .args(["create", "--dry-run=client", "-o", "json", "-R", "-f"])
        .arg(&dir)
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", lb.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl create -o json: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut decoded = Vec::new();
    for doc in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
        let doc = doc.unwrap();
        match doc["items"].as_array() {
            Some(items) if doc["kind"] == "List" => decoded.extend(items.iter().cloned()),
            _ => decoded.push(doc),
        }
    }
    let mut compared = 0;
    for o in decoded
        .iter()
        .filter(|o| o["kind"] == "ConfigMap" || o["kind"] == "Secret")
    {
        let (kind, name) = kind_name(o);
        let original = server.get("v1", &kind, Some("prod"), &name).unwrap();
        assert_eq!(
            o["data"], original["data"],
            "{kind} {name} as kubectl reads it"
        );
        compared += 1;
    }
    assert_eq!(
        compared, 5,
        "app-settings, nginx-conf, yaml-traps, db-credentials, tls-cert"
    );
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect_yaml(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
    out.sort();
}

fn find_file<'a>(files: &'a [PathBuf], suffix: &str) -> &'a PathBuf {
    files
        .iter()
        .find(|f| f.to_string_lossy().ends_with(suffix))
        .unwrap_or_else(|| panic!("no {suffix} in {files:?}"))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}
