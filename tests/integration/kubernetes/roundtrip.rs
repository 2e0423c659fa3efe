//! An export restored into a scratch namespace (a harmless copy) and into
//! the original names on an empty cluster.

use serde_json::{json, Value};

use super::{find, kind_name, left_out, manifest, restore, setup};
use crate::kube_server::KubeServer;

// Stays long: one export and its restore into a copy, every copy rule checked on the result.
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
