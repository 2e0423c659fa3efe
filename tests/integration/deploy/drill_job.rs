//! The monthly drill CronJob: it alone mounts the identity, and its rights
//! reach only scratch namespaces.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use lifeboat::policy::Policy;

use super::workloads::check_hardened;
use super::{flag, mount_of, name, one, render, secret_names, Rendered, DAEMON, DRILL};

/// The drill CronJob: locked down like the backup side, never retried
/// (a failed drill is a finding), never overlapping; it alone mounts the
/// identity, at the path its `--identity` names; its scratch folder is an
/// emptyDir; its account has no token and no role; the policy file it
/// drills is in the ConfigMap and has a PostgreSQL source to drill.
// Stays long: one rendered drill CronJob, each of its rules checked on it.
#[test]
fn deploy_drill_job_mounts_the_identity_and_may_write_only_scratch_namespaces() {
    let drill = render(DRILL);
    let daemon = render(DAEMON);
    let cj: CronJob = one(&drill, "CronJob", "lifeboat-drill");
    let spec = cj.spec.expect("CronJob lifeboat-drill: no spec");
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert!(spec.starting_deadline_seconds.is_some_and(|s| s > 0));
    let job = spec.job_template.spec.expect("no job spec");
    assert_eq!(job.backoff_limit, Some(0), "a failed drill is not retried");
    assert!(job.active_deadline_seconds.is_some());
    let pod = job.template.spec.expect("no pod spec");
    check_hardened("CronJob lifeboat-drill", &pod);
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("lifeboat-drill"),
        "not the export account, which can read every Secret"
    );
    // Kubernetes drills need the API, and only for scratch namespaces.
    assert_eq!(pod.automount_service_account_token, Some(true));
    check_drill_rbac(&drill, &daemon);

    let c = &pod.containers[0];
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("drill"), "{args:?}");
    let identity = flag(&args, "--identity").unwrap_or_else(|| panic!("no --identity in {args:?}"));
    let mounted = mount_of(&pod, "secret", "secretName", "lifeboat-identity")
        .expect("the Secret lifeboat-identity is not mounted");
    assert_eq!(
        mounted.join("identity.txt"),
        Path::new(identity),
        "--identity names the mounted key"
    );
    let identity_volume = pod
        .volumes
        .iter()
        .flatten()
        .find_map(|v| {
            v.secret
                .as_ref()
                .filter(|s| s.secret_name.as_deref() == Some("lifeboat-identity"))
        })
        .unwrap();
    assert_eq!(identity_volume.default_mode, Some(0o400));
    let json = serde_json::to_value(&pod).unwrap();
    let mut secrets = BTreeSet::new();
    secret_names(&json, &mut secrets);
    assert!(
        !secrets.contains("lifeboat-db"),
        "a drill never connects to the source: {secrets:?}"
    );

    let scratch =
        flag(&args, "--scratch-dir").unwrap_or_else(|| panic!("no --scratch-dir in {args:?}"));
    let m = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == scratch)
        .unwrap_or_else(|| panic!("nothing mounted at {scratch}"));
    let v = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == m.name)
        .unwrap();
    assert!(v.empty_dir.is_some(), "the scratch folder is an emptyDir");

    let policy_path = PathBuf::from(flag(&args, "--policy").expect("no --policy"));
    let cm: ConfigMap = one(&daemon, "ConfigMap", "lifeboat-policies");
    let file = policy_path.file_name().unwrap().to_str().unwrap();
    let text = cm
        .data
        .unwrap_or_default()
        .get(file)
        .cloned()
        .unwrap_or_else(|| panic!("the ConfigMap has no {file}"));
    assert_eq!(
        mount_of(&pod, "configMap", "name", "lifeboat-policies").map(|d| d.join(file)),
        Some(policy_path.clone())
    );
    let policy = Policy::parse(&text, &policy_path).unwrap();
    assert!(
        policy
            .sources
            .iter()
            .any(|s| matches!(s.kind(), lifeboat::policy::SourceKind::Postgres(_))),
        "the drilled policy has a PostgreSQL source"
    );
    assert!(
        !policy.drill.checks.is_empty(),
        "the example policy shows a drill check"
    );
    let k = &policy.drill.kubernetes;
    assert_eq!(
        k.account(),
        Some(("lifeboat", "lifeboat-drill")),
        "scratch namespaces bind the role to the drill pod's account"
    );
    let scratch: ClusterRole = one(&drill, "ClusterRole", k.cluster_role());
    assert!(scratch.rules.is_some());
}

/// The drill account's rights: namespaces and one bindable role, no read of
/// anything else; the role with the restore's rights is bound nowhere
/// cluster-wide; admission keeps the account's namespace and RoleBinding
/// writes to `lifeboat-drill-*`; the policy binds that role to this account.
fn check_drill_rbac(drill: &Rendered, daemon: &Rendered) {
    let account = "system:serviceaccount:lifeboat:lifeboat-drill";
    for r in [drill, daemon] {
        for o in &r.objects {
            let kind = o["kind"].as_str().unwrap_or("");
            if ["RoleBinding", "ClusterRoleBinding"].contains(&kind)
                && o["subjects"].to_string().contains("lifeboat-drill")
            {
                assert_eq!(
                    (kind, o["roleRef"]["name"].as_str().unwrap_or("")),
                    ("ClusterRoleBinding", "lifeboat-drill"),
                    "{}: the drill account gets only ClusterRole lifeboat-drill cluster-wide",
                    name(o)
                );
            }
            if kind.ends_with("Binding") {
                assert_ne!(
                    o["roleRef"]["name"], "lifeboat-drill-scratch",
                    "{}: lifeboat-drill-scratch is bound only inside scratch namespaces, by the drill",
                    name(o)
                );
            }
        }
    }
    let role: ClusterRole = one(drill, "ClusterRole", "lifeboat-drill");
    for rule in role.rules.iter().flatten() {
        let resources = rule.resources.clone().unwrap_or_default();
        let verbs = rule.verbs.clone();
        assert!(
            !resources.iter().any(|r| r == "*" || r == "secrets"),
            "ClusterRole lifeboat-drill: {rule:?} reaches beyond namespaces"
        );
        if resources.iter().any(|r| r == "clusterroles") {
            assert_eq!(
                rule.resource_names.as_deref(),
                Some(&["lifeboat-drill-scratch".to_string()][..]),
                "bind only the scratch role"
            );
            assert_eq!(verbs, vec!["bind".to_string()]);
        }
        if resources.iter().any(|r| r == "rolebindings") {
            assert!(
                !verbs.iter().any(|v| v == "list" || v == "delete"),
                "{rule:?}"
            );
        }
    }
    let vap: ValidatingAdmissionPolicy = one(
        drill,
        "ValidatingAdmissionPolicy",
        "lifeboat-drill-scratch-only",
    );
    let spec = vap.spec.expect("no spec");
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    let conditions = spec.match_conditions.unwrap_or_default();
    assert!(
        conditions.iter().any(|c| c.expression.contains(account)),
        "the policy applies to the drill account: {conditions:?}"
    );
    let rules = spec
        .match_constraints
        .and_then(|m| m.resource_rules)
        .unwrap_or_default();
    let covered: BTreeSet<String> = rules
        .iter()
        .flat_map(|r| r.resources.clone().unwrap_or_default())
        .collect();
    assert!(
        covered.contains("namespaces") && covered.contains("rolebindings"),
        "{covered:?}"
    );
    let validations = spec.validations.unwrap_or_default();
    assert!(
        validations
            .iter()
            .any(|v| v.expression.contains("startsWith('lifeboat-drill-')")),
        "{validations:?}"
    );
    let binding: ValidatingAdmissionPolicyBinding = one(
        drill,
        "ValidatingAdmissionPolicyBinding",
        "lifeboat-drill-scratch-only",
    );
    let bspec = binding.spec.expect("no spec");
    assert_eq!(
        bspec.policy_name.as_deref(),
        Some("lifeboat-drill-scratch-only")
    );
    assert_eq!(bspec.validation_actions, Some(vec!["Deny".to_string()]));
    let sa: ServiceAccount = one(drill, "ServiceAccount", "lifeboat-drill");
    assert_ne!(sa.automount_service_account_token, Some(false));
}
