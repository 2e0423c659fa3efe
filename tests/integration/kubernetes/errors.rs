//! Servers that cannot be reached, refuse, or fail part of the way: each
//! is named, and nothing is left behind.

use serde_json::json;

use super::{manifest, restore, setup, walk_files};
use crate::harness::free_port;
use crate::kube_server::{Fault, KubeServer};

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

// Stays long: one seeded server, each fault injected and reported in turn.
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
