use super::harmless::make_harmless;
use super::*;
use crate::repository::Manifest;
use serde_json::{json, Value};

fn manifest() -> Manifest {
    serde_json::from_value(json!({
        "format": 1, "id": "20261123T000000Z-abcd", "policy": "p", "source": "s",
        "kind": "kubernetes-export", "started_at": "2026-11-23T00:00:00Z", "finished_at": "2026-11-23T00:00:01Z",
        "server_version": "Kubernetes v1.32.0", "tool_version": "lifeboat", "dump_tool_version": "x",
        "artifacts": []
    }))
    .unwrap()
}

fn exported(obj: Value) -> Exported {
    Exported {
        path: String::new(),
        obj,
    }
}

// Stays long: one copy's plan, each copy rule checked on it and on its --to-dir output.
#[test]
fn mapping_rewrites_namespaces_and_references_and_makes_a_harmless_copy() {
    let objects = vec![
        exported(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod",
                "labels": {"team": "shop", "pod-security.kubernetes.io/enforce": "restricted",
                           "app.kubernetes.io/managed-by": "Helm", "lifeboat.dev/drill": "x"},
                "annotations": {"owner": "shop@example.com", "openshift.io/sa.scc.uid-range": "1000/10000"}}}),
        ),
        exported(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "prod"}, "spec": {"replicas": 3}}),
        ),
        exported(
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", "namespace": "prod"},
                "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}}),
        ),
        exported(
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web", "namespace": "prod"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 5}}),
        ),
        exported(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "rb", "namespace": "prod"},
            "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "prod"}, {"kind": "ServiceAccount", "name": "m", "namespace": "monitoring"}]}),
        ),
        exported(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "prod"}}),
        ),
        exported(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb", "namespace": "prod"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30080}], "externalTrafficPolicy": "Local"}}),
        ),
        exported(
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "prod"}, "spec": {"schedule": "* * * * *"}}),
        ),
        exported(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})),
        exported(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}}),
        ),
        exported(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "cr"}}),
        ),
    ];
    let opts = Options {
        namespace_map: parse_mapping(&["prod:drill".into()]).unwrap(),
        ..Default::default()
    };
    let plan = plan(&manifest(), objects, &opts).unwrap();
    assert_eq!(plan.not_selected, 3, "other namespace and the cluster role");
    let by_kind = |k: &str| plan.objects.iter().find(|p| p.kind == k).unwrap();
    assert_eq!(plan.objects[0].kind, "Namespace");
    assert_eq!(
        by_kind("Namespace").obj,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "drill",
            "labels": {"team": "shop", "pod-security.kubernetes.io/enforce": "restricted"},
            "annotations": {"owner": "shop@example.com", RESTORED_FROM_ANNOTATION: "20261123T000000Z-abcd"}}})
    );
    assert_eq!(
        by_kind("Namespace").changes,
        ["not copied to the copy's namespace: app.kubernetes.io/managed-by, lifeboat.dev/drill, openshift.io/sa.scc.uid-range"]
    );
    let pdb = by_kind("PodDisruptionBudget");
    assert_eq!(
        pdb.obj.pointer("/spec"),
        Some(&json!({"minAvailable": 0, "selector": {"matchLabels": {"app": "web"}}}))
    );
    assert_eq!(
        pdb.changes,
        ["minAvailable 2 -> minAvailable 0 (the copy's pods may always be evicted)"]
    );
    assert_eq!(
        by_kind("HorizontalPodAutoscaler")
            .skip
            .as_ref()
            .unwrap()
            .reason,
        SkipReason::HarmlessCopy
    );

    // --to-dir writes exactly what the plan applies, says what changed
    // and why the rest is left out, and its apply.sh guards the copy.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    write_dir(&plan, &out, false).unwrap();
    let deployment: Value = yaml_serde::from_str(
        &std::fs::read_to_string(out.join("drill/apps-v1-Deployment/web.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(deployment.pointer("/spec/replicas"), Some(&json!(0)));
    assert!(!out.join("drill/networking.k8s.io-v1-Ingress").exists());
    let plan_txt = std::fs::read_to_string(out.join("plan.txt")).unwrap();
    assert!(
        plan_txt.contains("changed  drill/Deployment web: replicas 3 -> 0"),
        "{plan_txt}"
    );
    assert!(
        plan_txt.contains("skipped  drill/Ingress web: an Ingress would route live traffic"),
        "{plan_txt}"
    );
    let script = std::fs::read_to_string(out.join("apply.sh")).unwrap();
    assert!(
        script.contains("kubectl get namespace drill $conn -o name --ignore-not-found"),
        "{script}"
    );
    assert!(
        script.contains("*\" drill \"*) echo \"apply.sh: namespace drill exists; left as it is\""),
        "{script}"
    );
    let out2 = dir.path().join("export2");
    write_dir(&plan, &out2, true).unwrap();
    assert!(std::fs::read_to_string(out2.join("apply.sh"))
        .unwrap()
        .contains("LIFEBOAT_INTO_EXISTING=${LIFEBOAT_INTO_EXISTING:-1}"));
    let d = by_kind("Deployment");
    assert_eq!(d.obj.pointer("/metadata/namespace"), Some(&json!("drill")));
    assert_eq!(d.obj.pointer("/spec/replicas"), Some(&json!(0)));
    assert_eq!(
        d.obj
            .pointer("/metadata/annotations/lifeboat.dev~1harmless-copy"),
        Some(&json!("replicas 3 -> 0"))
    );
    let rb = by_kind("RoleBinding");
    assert_eq!(
        rb.obj.pointer("/subjects/0/namespace"),
        Some(&json!("drill"))
    );
    assert_eq!(
        rb.obj.pointer("/subjects/1/namespace"),
        Some(&json!("monitoring"))
    );
    assert!(by_kind("Ingress").skip.is_some());
    let svc = by_kind("Service");
    assert_eq!(
        svc.obj.pointer("/spec"),
        Some(&json!({"type": "ClusterIP", "ports": [{"port": 80}]}))
    );
    assert_eq!(
        by_kind("CronJob").obj.pointer("/spec/suspend"),
        Some(&json!(true))
    );
    // Stages: Namespace, Service, RBAC, workloads, rest.
    let stages: Vec<Stage> = plan.objects.iter().map(|p| p.stage).collect();
    let mut sorted = stages.clone();
    sorted.sort();
    assert_eq!(stages, sorted);
}

#[test]
fn same_namespace_restores_as_is_and_live_keeps_everything() {
    let objects = || {
        vec![
            exported(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}}),
            ),
            exported(
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "prod"}, "spec": {"replicas": 3}}),
            ),
        ]
    };
    let plan1 = plan(&manifest(), objects(), &Options::default()).unwrap();
    assert_eq!(
        plan1.objects[1].obj.pointer("/spec/replicas"),
        Some(&json!(3))
    );
    let opts = Options {
        namespace_map: parse_mapping(&["prod:copy".into()]).unwrap(),
        live: true,
        ..Default::default()
    };
    let plan2 = plan(&manifest(), objects(), &opts).unwrap();
    assert_eq!(
        plan2.objects[1].obj.pointer("/spec/replicas"),
        Some(&json!(3))
    );
    assert_eq!(
        plan2.objects[1].obj.pointer("/metadata/namespace"),
        Some(&json!("copy"))
    );
}

#[test]
fn include_exclude_and_unknown_namespaces() {
    let objects = || {
        vec![
            exported(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}}),
            ),
            exported(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "prod"}}),
            ),
            exported(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "prod"}}),
            ),
        ]
    };
    let opts = Options {
        exclude: vec!["secrets".into()],
        ..Default::default()
    };
    let p = plan(&manifest(), objects(), &opts).unwrap();
    assert_eq!(p.objects.len(), 2);
    let opts = Options {
        include: vec!["Secret".into()],
        ..Default::default()
    };
    let p = plan(&manifest(), objects(), &opts).unwrap();
    assert_eq!(
        p.objects
            .iter()
            .map(|o| o.kind.as_str())
            .collect::<Vec<_>>(),
        ["Namespace", "Secret"]
    );
    let opts = Options {
        namespaces: vec!["nope".into()],
        ..Default::default()
    };
    assert!(matches!(
        plan(&manifest(), objects(), &opts),
        Err(KubeRestoreError::NoSuchNamespace { .. })
    ));
    assert!(parse_mapping(&["prod".into()]).is_err());
    assert!(parse_mapping(&["a:x".into(), "b:x".into()]).is_err());
    assert!(matches!(
        parse_mapping(&["prod:a".into(), "prod:b".into()]),
        Err(KubeRestoreError::MappingTwice { .. })
    ));
    let opts = Options {
        namespaces: vec!["prod".into()],
        namespace_map: parse_mapping(&["other:prod".into()]).unwrap(),
        ..Default::default()
    };
    assert!(matches!(
        plan(&manifest(), objects(), &opts),
        Err(KubeRestoreError::TargetRestoredInPlace { .. })
    ));
    // Custom workloads and scalers are left out of a copy.
    let mut rollout = Planned {
        stage: Stage::Rest,
        source_namespace: Some("prod".into()),
        namespace: Some("copy".into()),
        api_version: "argoproj.io/v1alpha1".into(),
        kind: "Rollout".into(),
        name: "web".into(),
        skip: None,
        changes: Vec::new(),
        obj: json!({"spec": {"replicas": 3}}),
    };
    make_harmless(&mut rollout);
    assert!(rollout.skip.unwrap().detail.contains("spec.replicas"));
    // A bad name is named, with the rule.
    let long = "a".repeat(64);
    for (bad, why) in [
        ("Scratch_Bad", "it contains 'S'"),
        ("a.b", "it contains '.'"),
        (long.as_str(), "it has 64 characters"),
        ("-x", "starts or ends with '-'"),
    ] {
        let e = parse_mapping(&[format!("prod:{bad}")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("'{bad}' in --namespace-map 'prod:{bad}'"))
                && e.contains(why)
                && e.contains("DNS-1123"),
            "{e}"
        );
    }
}

#[test]
fn containment_ignores_server_additions() {
    let want = json!({"metadata": {"name": "a"}, "data": {"k": "v"}, "spec": {"replicas": 1}});
    let have = json!({"metadata": {"name": "a", "uid": "u"}, "data": {"k": "v"}, "spec": {"replicas": 1.0, "x": 1}, "status": {}});
    assert!(contained(&want, &have));
    assert!(!contained(&json!({"data": {"k": "w"}}), &have));
}
