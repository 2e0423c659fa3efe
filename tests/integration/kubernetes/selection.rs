//! Which namespaces are backed up and restored: by name, selector or all;
//! overwrite and live restores.

use serde_json::json;

use super::{manifest, restore, setup};
use crate::kube_server::KubeServer;

// Stays long: one seeded server, each way to name namespaces and to restore them in turn.
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
