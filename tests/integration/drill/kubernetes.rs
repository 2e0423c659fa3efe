//! Drills of Kubernetes exports into scratch namespaces.

use super::{check_line, drill, set_drill};
use crate::harness::{Lifeboat, Repo};

// Stays long: one seeded cluster: a drill's namespaces, rights and cleanup followed end to end.
#[test]
fn a_kubernetes_drill_restores_into_scratch_namespaces_and_deletes_them() {
    use crate::kube_server::KubeServer;
    use serde_json::{json, Value};
    let server = KubeServer::start();
    server.seed_realistic("prod");
    // Admission rules keyed on namespace labels must see the drill's
    // namespace as they see production's.
    let mut ns = server.get("v1", "Namespace", None, "prod").unwrap();
    ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = json!("restricted");
    ns["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
    ns["metadata"]["annotations"] = json!({"owner": "payments@example.com"});
    server.insert(ns);
    let repo = tempfile::tempdir().unwrap();
    let lb = Lifeboat::with_source(Repo::Local(repo.path().join("repo")), "", &[]);
    let kubeconfig = server.kubeconfig(lb.dir.path());
    let policy = std::fs::read_to_string(&lb.policy).unwrap();
    std::fs::write(
        &lb.policy,
        policy
            + &format!(
                "  - name: cluster-config\n    kubernetes:\n      kubeconfig: {}\n      context: test\n      namespaces: [prod]\n",
                kubeconfig.display()
            ),
    )
    .unwrap();
    lb.run(&["backup"]).ok();
    let deployments = server
        .objects_in("prod")
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .count();
    assert!(deployments > 0);
    let set_check = |expect: String| {
        set_drill(
            &lb,
            &format!(
                "  kubernetes:\n    service_account: lifeboat/lifeboat-drill\n  checks:\n    - name: deployments\n      source: cluster-config\n      kind: Deployment\n      expect: {expect}\n"
            ),
        )
    };
    set_check(format!("== {deployments}"));
    // What a drill killed on this host left: its owner's pid is a process
    // with another start time now.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let left = "lifeboat-drill-20200101t000000z-dead";
    server.insert(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {
            "name": left,
            "labels": {"app.kubernetes.io/managed-by": "lifeboat-drill"},
            "annotations": {"lifeboat.dev/drill-owner":
                format!("{{\"host\":\"{host}\",\"pid\":1,\"process_start\":999999999}}")}
        }
    }));
    server.clear_requests();

    let r = drill(&lb, &["--source", "cluster-config"]);
    r.ok();
    eprintln!("{}", r.stdout);
    let first = r.stdout.lines().next().unwrap_or("");
    assert!(
        first.starts_with("drill PASSED:"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    for name in [
        "scratch target",
        "restore",
        "objects",
        "check: deployments",
        "scratch removed",
        "object hashes",
    ] {
        assert!(check_line(&r, name).contains("ok"), "{name}:\n{}", r.stdout);
    }
    // Skips are counted per reason: the Ingress by the harmless-copy
    // rules, and nothing else (the scratch namespace holds what the
    // backup's Namespace has, so it is not "exists and differs").
    assert!(
        check_line(&r, "restore").contains("1 skipped (1 harmless-copy rules)"),
        "{}",
        r.stdout
    );
    let scratch: Vec<Value> = server
        .deleted_namespaces()
        .into_iter()
        .filter(|n| {
            n["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("lifeboat-drill-")
                && n["metadata"]["name"] != left
        })
        .collect();
    assert_eq!(scratch.len(), 1, "{scratch:?}");
    let labels = &scratch[0]["metadata"]["labels"];
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels["team"], "payments");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "lifeboat-drill");
    assert_eq!(
        scratch[0]["metadata"]["annotations"]["owner"],
        "payments@example.com"
    );
    assert!(
        r.stdout.contains(&format!("namespace/{left} (removed)")),
        "{}",
        r.stdout
    );
    // Objects went into the scratch namespace only, and it is gone.
    let requests = server.requests();
    let writes: Vec<&String> = requests.iter().filter(|q| !q.starts_with("GET")).collect();
    assert!(!writes.is_empty());
    // The drill's account gets the scratch role before anything is restored.
    let bound = writes
        .iter()
        .position(|w| w.contains("/rolebindings/lifeboat-drill"))
        .unwrap_or_else(|| panic!("no RoleBinding for the drill account: {writes:?}"));
    let first_object = writes
        .iter()
        .position(|w| w.contains("/configmaps/") || w.contains("/deployments/"))
        .unwrap();
    assert!(bound < first_object, "{writes:?}");
    for w in &writes {
        assert!(
            w.contains("/namespaces/lifeboat-drill-"),
            "a write outside the scratch namespaces: {w}"
        );
    }
    let scratch_left: Vec<String> = server
        .objects()
        .iter()
        // Deleted: gone, or Terminating for a moment as on a real cluster.
        .filter(|o| o["kind"] == "Namespace" && o["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .filter(|n| n.starts_with("lifeboat-drill-"))
        .collect();
    assert!(scratch_left.is_empty(), "{scratch_left:?}");
    assert_eq!(
        server
            .objects_in("prod")
            .iter()
            .filter(|o| o["kind"] == "Deployment")
            .count(),
        deployments,
        "the source namespace is untouched"
    );

    // A check that does not hold fails the drill; nothing stays either.
    set_check(format!("== {}", deployments + 1));
    let r = drill(&lb, &["--source", "cluster-config"]);
    r.fails_with(3, &[]);
    let first = r.stdout.lines().next().unwrap_or("");
    assert!(
        first.starts_with("drill FAILED: check: deployments: Deployment: got"),
        "{}",
        r.stdout
    );
    assert!(server
        .objects()
        .iter()
        .filter(|o| o["kind"] == "Namespace" && o["metadata"]["deletionTimestamp"].is_null())
        .all(|o| !o["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .starts_with("lifeboat-drill-")));
}
