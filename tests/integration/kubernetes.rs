//! Kubernetes configuration exports and restores, against the in-process
//! API server of `kube_server/` (no real API server can run here).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::harness::{free_port, Lifeboat, Repo, Run};
use crate::kube_server::{Fault, KubeServer};

const SECRET_PASSWORD: &str = "s3cr3t-Pa55w0rd-do-not-leak";

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

#[test]
fn export_then_restore_into_a_scratch_namespace_makes_a_harmless_copy() {
    let server = KubeServer::start();
    server.seed_realistic("prod");
    // A policy that names namespaces by their name label, and a default
    // ServiceAccount with image pull secrets (the cluster makes its own).
    server.insert(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "from-own-namespace", "namespace": "prod"},
        "spec": {"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prod"}}},
            {"namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["prod", "monitoring"]}]}}
        ]}]}
    }));
    let mut default_sa = server
        .get("v1", "ServiceAccount", Some("prod"), "default")
        .unwrap();
    default_sa["imagePullSecrets"] = json!([{"name": "regcred"}]);
    server.insert(default_sa);
    let (lb, _repo) = setup(&server, "");
    let r = lb.run(&["backup"]);
    r.ok();
    assert!(r.stdout.contains("from namespaces prod"), "{}", r.stdout);
    let m = manifest(&lb);
    assert_eq!(m["kind"], "kubernetes-export");
    let k = &m["kubernetes"];
    assert_eq!(k["namespaces"], json!(["prod"]));
    let count = |kind: &str| -> u64 {
        k["counts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["kind"] == kind)
            .map(|c| c["count"].as_u64().unwrap())
            .sum()
    };
    let originals = server.objects_in("prod");
    let kept: Vec<&Value> = originals.iter().filter(|o| !left_out(o)).collect();
    assert_eq!(count("Pod"), 0, "owned pods are left out");
    assert_eq!(count("ReplicaSet"), 0);
    assert_eq!(count("Deployment"), 1);
    assert_eq!(
        count("BackupTarget"),
        2,
        "custom resources are found by discovery"
    );
    assert_eq!(count("CustomResourceDefinition"), 1);
    assert_eq!(
        count("ConfigMap") + count("Secret") + count("ServiceAccount"),
        kept.iter()
            .filter(|o| ["ConfigMap", "Secret", "ServiceAccount"]
                .contains(&o["kind"].as_str().unwrap()))
            .count() as u64
    );
    // Exactly what controllers and the server recreate is left out.
    let owned = |kind: &str| {
        originals
            .iter()
            .filter(|o| o["kind"] == kind && o["metadata"]["ownerReferences"].is_array())
            .count() as u64
    };
    assert_eq!(
        k["skipped"],
        json!([
            {"reason": "controller-owned", "kind": "Job", "count": 1},
            {"reason": "controller-owned", "kind": "Pod", "count": owned("Pod")},
            {"reason": "controller-owned", "kind": "ReplicaSet", "count": 1},
            {"reason": "server-owned", "kind": "ConfigMap", "count": 1},
            {"reason": "server-owned", "kind": "Secret", "count": 1},
        ])
    );
    assert!(k["types_left_out"].to_string().contains("events"));

    // Stored objects check out with and without the key.
    lb.run(&["verify"]).ok();
    lb.verify_read_data().ok();

    // Dry run first: nothing changes.
    let before = server.requests().len();
    let r = restore(&lb, &["--namespace-map", "prod:drill-2026-11", "--dry-run"]);
    r.ok();
    assert!(r.stdout.contains("would create"), "{}", r.stdout);
    assert!(server.objects_in("drill-2026-11").is_empty());
    assert!(server.requests()[before..]
        .iter()
        .all(|q| q.starts_with("GET ")));

    let r = restore(&lb, &["--namespace-map", "prod:drill-2026-11"]);
    r.ok();
    assert!(r.stdout.contains("created"), "{}", r.stdout);
    let copy = server.objects_in("drill-2026-11");
    assert!(server
        .get("v1", "Namespace", None, "drill-2026-11")
        .is_some());

    // Every kept object is there, equal to the original modulo the mapping
    // and the harmless-copy rules; nothing else came along.
    let harmless_skips = ["Ingress"];
    for o in &kept {
        let (kind, name) = kind_name(o);
        let c = find(&copy, &kind, &name);
        if harmless_skips.contains(&kind.as_str()) {
            assert!(c.is_none(), "{kind} {name} must be skipped in a copy");
            continue;
        }
        let c = c.unwrap_or_else(|| panic!("{kind} {name} missing from the copy"));
        for field in [
            "data",
            "binaryData",
            "type",
            "rules",
            "roleRef",
            "imagePullSecrets",
        ] {
            assert_eq!(o.get(field), c.get(field), "{kind} {name}: {field}");
        }
        if kind != "Job" {
            assert_eq!(
                o["metadata"]["labels"], c["metadata"]["labels"],
                "{kind} {name}: labels"
            );
        }
        match kind.as_str() {
            "Deployment" | "StatefulSet" => {
                assert_eq!(c["spec"]["replicas"], 0, "{kind} {name}");
                let mut orig = o["spec"].clone();
                orig["replicas"] = json!(0);
                strip_null_timestamps(&mut orig);
                assert_eq!(orig, c["spec"], "{kind} {name}: spec");
                assert!(c["metadata"]["annotations"]["lifeboat.dev/harmless-copy"]
                    .as_str()
                    .unwrap()
                    .contains("-> 0"));
            }
            "CronJob" => assert_eq!(c["spec"]["suspend"], true),
            "Job" => {
                assert_eq!(c["spec"]["suspend"], true);
                assert!(c["spec"]["template"]["metadata"]["labels"]
                    .get("batch.kubernetes.io/controller-uid")
                    .is_none_or(|uid| *uid
                        != o["spec"]["template"]["metadata"]["labels"]
                            ["batch.kubernetes.io/controller-uid"]));
            }
            "Service" => {
                assert_eq!(
                    o["spec"]["ports"].as_array().unwrap().len(),
                    c["spec"]["ports"].as_array().unwrap().len()
                );
                if name == "web-public" {
                    assert_eq!(c["spec"]["type"], "ClusterIP");
                    assert!(c["spec"]["ports"][0].get("nodePort").is_none());
                    assert!(c["spec"].get("externalTrafficPolicy").is_none());
                } else if name == "db" {
                    assert_eq!(c["spec"]["clusterIP"], "None");
                } else {
                    assert_ne!(
                        c["spec"]["clusterIP"], o["spec"]["clusterIP"],
                        "a new IP is allocated"
                    );
                }
            }
            "RoleBinding" => {
                let subjects = c["subjects"].as_array().unwrap();
                assert!(subjects.iter().any(|s| s["namespace"] == "drill-2026-11"));
                assert!(
                    subjects.iter().any(|s| s["namespace"] == "monitoring"),
                    "unmapped namespaces stay"
                );
            }
            "PersistentVolumeClaim" => {
                assert!(
                    c["spec"].get("volumeName").is_none(),
                    "a new volume is provisioned"
                );
                assert!(c["metadata"]["annotations"]
                    .get("pv.kubernetes.io/bind-completed")
                    .is_none());
            }
            // (from-own-namespace names its namespace: checked below)
            "BackupTarget" | "NetworkPolicy" if name != "from-own-namespace" => {
                assert_eq!(o["spec"], c["spec"], "{kind} {name}")
            }
            _ => {}
        }
    }
    for c in &copy {
        let (kind, name) = kind_name(c);
        let from_server = (kind == "ServiceAccount" && name == "default")
            || (kind == "ConfigMap" && name == "kube-root-ca.crt");
        assert!(
            from_server
                || kept
                    .iter()
                    .any(|o| kind_name(o) == (kind.clone(), name.clone())),
            "{kind} {name} is in the copy but was not exported"
        );
    }
    // The original is untouched.
    assert_eq!(
        server
            .get("apps/v1", "Deployment", Some("prod"), "web")
            .unwrap()["spec"]["replicas"],
        3
    );

    // Selectors on the name label follow the mapping; other namespaces stay.
    let np = find(&copy, "NetworkPolicy", "from-own-namespace").unwrap();
    let from = &np["spec"]["ingress"][0]["from"];
    assert_eq!(
        from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "drill-2026-11"
    );
    assert_eq!(
        from[1]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["drill-2026-11", "monitoring"])
    );
    // The copy's default ServiceAccount got the backup's pull secrets.
    let sa = find(&copy, "ServiceAccount", "default").unwrap();
    assert_eq!(sa["imagePullSecrets"], json!([{"name": "regcred"}]));

    // Again: everything exists and holds what the backup has.
    let r = restore(&lb, &["--namespace-map", "prod:drill-2026-11", "--json"]);
    r.ok();
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    for o in report["objects"].as_array().unwrap() {
        let harmless_skip = o["outcome"] == "skipped"
            && o["detail"].as_str().unwrap().contains("--live restores it");
        assert!(
            o["outcome"] == "unchanged" || harmless_skip,
            "second run: {o}"
        );
    }

    // Cluster-scoped objects are shared with the original: not rewritten,
    // not replaced, even with --overwrite.
    let r = restore(
        &lb,
        &[
            "--namespace-map",
            "prod:drill-3",
            "--cluster-resources",
            "--overwrite",
        ],
    );
    r.ok();
    let crb = server
        .get(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            None,
            "payments-viewer",
        )
        .unwrap();
    assert!(crb["subjects"].to_string().contains("\"prod\""), "{crb}");
    assert!(!crb["subjects"].to_string().contains("drill-3"), "{crb}");

    // Kinds that are not in the backup are refused, not ignored.
    restore(&lb, &["--namespace-map", "prod:x", "--exclude", "sercets"])
        .fails_with(2, &["'sercets' names no kind", "secrets"]);

    // --include and --exclude pick kinds; the Namespace always comes along.
    let r = restore(
        &lb,
        &[
            "--namespace-map",
            "prod:only-config",
            "--include",
            "configmaps,secrets",
            "--exclude",
            "secrets",
        ],
    );
    r.ok();
    let only = server.objects_in("only-config");
    assert!(find(&only, "ConfigMap", "app-settings").is_some());
    assert!(find(&only, "Secret", "db-credentials").is_none());
    assert!(find(&only, "Deployment", "web").is_none());
}

fn strip_null_timestamps(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("creationTimestamp") == Some(&Value::Null) {
                m.remove("creationTimestamp");
            }
            m.values_mut().for_each(strip_null_timestamps);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_null_timestamps),
        _ => {}
    }
}

#[test]
fn restore_into_the_original_names_on_an_empty_cluster_recreates_everything() {
    let source = KubeServer::start();
    source.seed_realistic("prod");
    let (lb, _repo) = setup(&source, "");
    lb.run(&["backup"]).ok();

    let target = KubeServer::start();
    let target_config = target.kubeconfig(&lb.dir.path().join("target"));
    let cfg = target_config.display().to_string();
    // A dry run on the empty cluster: the custom resources would follow
    // their CRD, nothing fails and nothing is written.
    let fresh = target.objects();
    let r = restore(&lb, &["--kubeconfig", &cfg, "--dry-run"]);
    r.ok();
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains("BackupTarget") && l.contains("would create")),
        "{}",
        r.stdout
    );
    assert_eq!(target.objects(), fresh, "a dry run writes nothing");
    let r = restore(&lb, &["--kubeconfig", &cfg]);
    r.ok();
    // The CRD came first and was waited for: its custom resources exist.
    assert!(
        target
            .get("example.com/v1", "BackupTarget", Some("prod"), "nightly")
            .is_some(),
        "{}",
        r.stdout
    );
    assert!(target
        .get(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            "backuptargets.example.com"
        )
        .is_some());
    for (api, kind, name) in [
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "payments-viewer",
        ),
        ("storage.k8s.io/v1", "StorageClass", "fast"),
    ] {
        assert!(target.get(api, kind, None, name).is_some(), "{kind} {name}");
    }
    let originals = source.objects_in("prod");
    let restored = target.objects_in("prod");
    for o in originals.iter().filter(|o| !left_out(o)) {
        let (kind, name) = kind_name(o);
        let c =
            find(&restored, &kind, &name).unwrap_or_else(|| panic!("{kind} {name} not restored"));
        for field in ["data", "type", "rules", "roleRef", "subjects"] {
            assert_eq!(o.get(field), c.get(field), "{kind} {name}: {field}");
        }
        if [
            "Deployment",
            "CronJob",
            "NetworkPolicy",
            "BackupTarget",
            "Ingress",
        ]
        .contains(&kind.as_str())
        {
            let mut spec = o["spec"].clone();
            strip_null_timestamps(&mut spec);
            assert_eq!(spec, c["spec"], "{kind} {name}: restored as is");
        }
    }
    assert_eq!(
        target
            .get("apps/v1", "Deployment", Some("prod"), "web")
            .unwrap()["spec"]["replicas"],
        3,
        "into the original namespace nothing is made harmless"
    );
    // A second run finds everything as the backup has it.
    let r = restore(&lb, &["--kubeconfig", &cfg, "--json"]);
    r.ok();
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    for o in report["objects"].as_array().unwrap() {
        assert_eq!(o["outcome"], "unchanged", "second run: {o}");
    }
}

/// Every exported file parses into its k8s-openapi type, and kubectl
/// accepts the folder.
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
        let v: Value = serde_yaml::from_str(&text).unwrap();
        let kind = v["kind"].as_str().unwrap().to_string();
        macro_rules! parse {
            ($t:ty) => {
                serde_yaml::from_str::<$t>(&text)
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
    let cm: Value = serde_yaml::from_str(&std::fs::read_to_string(cm).unwrap()).unwrap();
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

#[test]
fn secrets_appear_in_no_log_and_nowhere_unencrypted() {
    use base64::Engine;
    let server = KubeServer::start();
    server.seed_realistic("prod");
    let (lb, repo) = setup(&server, "");
    let debug = [("RUST_LOG", "debug")];
    let mut runs = vec![lb.run_env(&["backup"], &debug)];
    runs[0].ok();
    let identity = lb.identity.display().to_string();
    runs.push(lb.run_env(
        &[
            "--log-format",
            "json",
            "restore",
            "--source",
            "cluster-config",
            "--identity",
            &identity,
            "--namespace-map",
            "prod:copy",
        ],
        &debug,
    ));
    runs[1].ok();
    runs.push(lb.run_env(&["list", "--json"], &debug));
    let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET_PASSWORD);
    for r in &runs {
        for needle in [SECRET_PASSWORD, encoded.as_str()] {
            assert!(
                !r.stdout.contains(needle),
                "{}: stdout has the secret",
                r.args
            );
            assert!(
                !r.stderr.contains(needle),
                "{}: stderr has the secret",
                r.args
            );
        }
    }
    // The restore did carry it.
    let copied = server
        .get("v1", "Secret", Some("copy"), "db-credentials")
        .unwrap();
    assert_eq!(copied["data"]["password"], encoded.as_str());
    let mut files = Vec::new();
    walk_files(repo.path(), &mut files);
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for needle in [SECRET_PASSWORD, encoded.as_str(), "db-credentials"] {
            assert!(
                !text.contains(needle),
                "{} holds '{needle}' unencrypted",
                f.display()
            );
        }
    }
}

#[test]
fn unreachable_and_unauthorized_servers_are_named_and_leave_nothing() {
    let server = KubeServer::start();
    server.seed_realistic("prod");
    let (lb, repo) = setup(&server, "");

    // Nothing listens there.
    let dead = lb.dir.path().join("dead");
    std::fs::create_dir_all(&dead).unwrap();
    let port = free_port();
    let text = std::fs::read_to_string(server.kubeconfig(&dead))
        .unwrap()
        .replace(&server.url(), &format!("http://127.0.0.1:{port}"));
    std::fs::write(dead.join("kubeconfig"), &text).unwrap();
    let policy = std::fs::read_to_string(&lb.policy).unwrap();
    let original = policy.clone();
    let kubeconfig_line = policy
        .lines()
        .find(|l| l.trim_start().starts_with("kubeconfig:"))
        .unwrap()
        .to_string();
    std::fs::write(
        &lb.policy,
        policy.replace(
            &kubeconfig_line,
            &format!("      kubeconfig: {}", dead.join("kubeconfig").display()),
        ),
    )
    .unwrap();
    lb.run(&["backup"]).fails_with(
        1,
        &[
            "cannot reach the Kubernetes API server",
            &format!("127.0.0.1:{port}"),
        ],
    );

    // A wrong token.
    let bad = lb.dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let bad_config = server.kubeconfig_with_token(&bad, "not-the-token");
    std::fs::write(
        &lb.policy,
        original.replace(
            &kubeconfig_line,
            &format!("      kubeconfig: {}", bad_config.display()),
        ),
    )
    .unwrap();
    lb.run(&["backup"])
        .fails_with(1, &["401", "rejected the credentials"]);

    // Nothing was stored by either failure.
    let mut files = Vec::new();
    walk_files(&repo.path().join("repo"), &mut files);
    assert!(
        files
            .iter()
            .all(|f| f.file_name().unwrap() == "lifeboat.json"),
        "{files:?}"
    );
}

#[test]
fn forbidden_vanished_and_rejected_are_reported() {
    let server = KubeServer::start();
    server.seed_realistic("prod");
    let (lb, _repo) = setup(&server, "");

    // 403 on listing Secrets: the message names the permission.
    server.set_fault(Fault::Forbid {
        resource: "secrets".into(),
        verb: "list".into(),
    });
    lb.run(&["backup"]).fails_with(
        1,
        &[
            "403",
            "resources: [\"secrets\"], verbs: [\"list\"]",
            "namespace prod",
            "exclude_resources",
        ],
    );
    assert!(lb.backup_ids().is_empty());
    // Leaving Secrets out is the policy's choice.
    let policy = std::fs::read_to_string(&lb.policy).unwrap();
    std::fs::write(
        &lb.policy,
        policy.clone() + "      exclude_resources: [secrets]\n",
    )
    .unwrap();
    lb.run(&["backup"]).ok();
    let m = manifest(&lb);
    assert!(m["kubernetes"]["types_left_out"]
        .to_string()
        .contains("secrets: excluded by the policy"));
    std::fs::write(&lb.policy, policy).unwrap();
    server.clear_faults();

    // A type that disappears between discovery and list is reported, not fatal.
    server.set_fault(Fault::Vanish {
        resource: "backuptargets".into(),
    });
    let r = lb.run(&["backup"]);
    r.ok();
    assert!(r.stderr.contains("disappeared"), "{}", r.stderr);
    let m = manifest(&lb);
    assert_eq!(
        m["kubernetes"]["types_vanished"],
        json!(["backuptargets.example.com"])
    );
    server.clear_faults();
    lb.run(&["backup"]).ok();

    // An API group whose discovery fails could hold configuration: fail,
    // unless the policy leaves the group out.
    server.set_fault(Fault::GroupDown {
        group_version: "example.com/v1".into(),
    });
    lb.run(&["backup"]).fails_with(
        1,
        &[
            "cannot list the resources of example.com/v1",
            "503",
            "*.example.com",
        ],
    );
    let policy = std::fs::read_to_string(&lb.policy).unwrap();
    std::fs::write(
        &lb.policy,
        policy.clone() + "      exclude_resources: [\"*.example.com\"]\n",
    )
    .unwrap();
    lb.run(&["backup"]).ok();
    assert_eq!(
        manifest(&lb)["kubernetes"]["groups_unavailable"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    std::fs::write(&lb.policy, policy).unwrap();
    server.clear_faults();
    lb.run(&["backup"]).ok();

    // The server rejects one object: it is reported, the rest are restored.
    server.set_fault(Fault::Reject {
        name: "app-settings".into(),
        message:
            "ConfigMap \"app-settings\" is invalid: data: Too long: must have at most 1048576 bytes"
                .into(),
    });
    let r = restore(&lb, &["--namespace-map", "prod:partial"]);
    r.fails_with(7, &["1 of", "app-settings", "Too long"]);
    let row = r
        .stdout
        .lines()
        .find(|l| l.contains("app-settings"))
        .unwrap_or_else(|| panic!("no row for app-settings:\n{}", r.stdout));
    assert!(row.contains("FAILED") && row.contains("Too long"), "{row}");
    assert!(server
        .get("apps/v1", "Deployment", Some("partial"), "web")
        .is_some());
    assert!(server
        .get("v1", "ConfigMap", Some("partial"), "nginx-conf")
        .is_some());
    assert!(server
        .get("v1", "ConfigMap", Some("partial"), "app-settings")
        .is_none());

    // Bad mappings and unknown namespaces are usage errors.
    restore(&lb, &["--namespace-map", "prod"]).fails_with(2, &["FROM:TO"]);
    restore(&lb, &["--namespace-map", "staging:x"])
        .fails_with(4, &["'staging' is not in backup", "prod"]);
    restore(&lb, &["--to", "postgres://x@127.0.0.1/db"])
        .fails_with(2, &["--to is for database sources"]);
}

#[test]
fn namespaces_by_selector_or_all_and_overwrite_and_live() {
    let server = KubeServer::start();
    server.seed_realistic("prod");
    server.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other", "labels": {"team": "search"}}}));
    server.insert(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "search-settings", "namespace": "other"}, "data": {"k": "v"}}));
    server.insert(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}),
    );
    server.insert(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"}, "data": {"Corefile": "."}}));
    let (lb, _repo) = setup(&server, "");
    let policy = std::fs::read_to_string(&lb.policy).unwrap();

    // By label selector.
    std::fs::write(
        &lb.policy,
        policy.replace("namespaces: [prod]", "namespace_selector: team=search"),
    )
    .unwrap();
    lb.run(&["backup"]).ok();
    assert_eq!(manifest(&lb)["kubernetes"]["namespaces"], json!(["other"]));
    // All, minus the system namespaces by default (`default` is not one).
    std::fs::write(
        &lb.policy,
        policy.replace("namespaces: [prod]", "namespaces: all"),
    )
    .unwrap();
    lb.run(&["backup"]).ok();
    assert_eq!(
        manifest(&lb)["kubernetes"]["namespaces"],
        json!(["default", "other", "prod"])
    );
    // A selector that matches nothing is an error, not an empty backup.
    std::fs::write(
        &lb.policy,
        policy.replace("namespaces: [prod]", "namespace_selector: team=nobody"),
    )
    .unwrap();
    lb.run(&["backup"])
        .fails_with(1, &["selects no namespaces", "team=nobody"]);
    // A named namespace that does not exist is an error too.
    std::fs::write(
        &lb.policy,
        policy.replace("namespaces: [prod]", "namespaces: [prod, missing]"),
    )
    .unwrap();
    lb.run(&["backup"])
        .fails_with(1, &["namespace 'missing'", "does not exist"]);
    std::fs::write(
        &lb.policy,
        policy.replace("namespaces: [prod]", "namespaces: all"),
    )
    .unwrap();

    // Restore prod into a copy, change the copy, restore again: left alone
    // unless --overwrite.
    restore(&lb, &["--namespace-map", "prod:copy"]).ok();
    let mut cm = server
        .get("v1", "ConfigMap", Some("copy"), "nginx-conf")
        .unwrap();
    cm["data"] = json!({"default.conf": "changed", "extra.conf": "added in the copy"});
    server.insert(cm);
    let r = restore(&lb, &["--namespace-map", "prod:copy"]);
    r.ok();
    let row = r.stdout.lines().find(|l| l.contains("nginx-conf")).unwrap();
    assert!(
        row.contains("skipped") && row.contains("--overwrite"),
        "{row}"
    );
    assert_eq!(
        server
            .get("v1", "ConfigMap", Some("copy"), "nginx-conf")
            .unwrap()["data"],
        json!({"default.conf": "changed", "extra.conf": "added in the copy"})
    );
    let r = restore(
        &lb,
        &[
            "--namespace-map",
            "prod:copy",
            "--overwrite",
            "--include",
            "configmaps",
        ],
    );
    r.ok();
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains("nginx-conf") && l.contains("updated")),
        "{}",
        r.stdout
    );
    assert_eq!(
        server
            .get("v1", "ConfigMap", Some("copy"), "nginx-conf")
            .unwrap()["data"],
        server
            .get("v1", "ConfigMap", Some("prod"), "nginx-conf")
            .unwrap()["data"]
    );

    // --live: a copy as is.
    restore(&lb, &["--namespace-map", "prod:live-copy", "--live"]).ok();
    let d = server
        .get("apps/v1", "Deployment", Some("live-copy"), "web")
        .unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    assert!(server
        .get("networking.k8s.io/v1", "Ingress", Some("live-copy"), "web")
        .is_some());
    // Several namespaces at once, one mapped: only those named are restored.
    restore(
        &lb,
        &["--namespace", "other", "--namespace-map", "prod:copy2"],
    )
    .ok();
    assert!(server
        .get("v1", "ConfigMap", Some("copy2"), "app-settings")
        .is_some());
    assert!(server
        .get("v1", "ConfigMap", Some("other"), "search-settings")
        .is_some());
}

/// Two backups of one source at once: one runs, the other is refused and
/// told who holds the lock; a stale lock (a killed process) is taken over.
#[test]
fn two_backups_of_one_source_at_once_and_a_stale_lock() {
    let server = KubeServer::start();
    server.seed_realistic("prod");
    // Slow answers keep the first backup busy for a few seconds.
    server.set_latency(std::time::Duration::from_millis(100));
    let (lb, repo) = setup(&server, "");
    let locks = repo.path().join("repo/locks/test/cluster-config");
    let mut first = lb.spawn(&["backup"], "first.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(&locks).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no lock claim appeared: {}",
            lb.log("first.log")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = lb.run(&["backup"]);
    second.fails_with(
        5,
        &[
            "source 'cluster-config' is locked by",
            &format!("pid {}", first.id()),
            "backup since",
        ],
    );
    assert!(first.wait().unwrap().success(), "{}", lb.log("first.log"));
    assert_eq!(lb.backup_ids().len(), 1);
    assert_eq!(std::fs::read_dir(&locks).unwrap().count(), 0, "released");

    // A claim nobody renews any more (its process was killed).
    server.set_latency(std::time::Duration::ZERO);
    std::fs::write(
        locks.join("20261101T000000.000Z-0123456789abcdef.json"),
        r#"{"holder":"0123456789abcdef","host":"old-pod","pid":4242,"operation":"backup","since":"2026-11-01T00:00:00Z","renewed_at":"2026-11-01T00:00:00Z","lease_secs":60}"#,
    )
    .unwrap();
    let r = lb.run(&["backup"]);
    r.ok();
    assert!(
        r.stderr.contains("taking over a stale lock") && r.stderr.contains("old-pod"),
        "{}",
        r.stderr
    );
    assert_eq!(lb.backup_ids().len(), 2);
    assert_eq!(std::fs::read_dir(&locks).unwrap().count(), 0);
}
