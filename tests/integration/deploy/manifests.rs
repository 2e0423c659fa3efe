//! What each kustomization renders: every object parses into its type and
//! each mode has exactly its objects; the Secrets are templates only.

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};

use super::monitoring::check_prometheus_rule;
use super::{kind_name, name, one, render, typed, CRONJOB, DAEMON, DRILL, SECRETS};

/// Every object of each mode and of the templates parses into its
/// Kubernetes type (every field surviving the round trip), carries the
/// app label and the namespace, and each mode has exactly what it should.
// Stays long: the expected objects of every kustomization, checked in one table and one loop.
#[test]
fn deploy_renders_and_every_object_parses_into_its_kubernetes_type() {
    let base = [
        ("Namespace", "lifeboat"),
        ("ServiceAccount", "lifeboat"),
        ("ClusterRole", "lifeboat-export"),
        ("ClusterRoleBinding", "lifeboat-export"),
        ("ConfigMap", "lifeboat-policies"),
    ];
    let with_base = |more: &[(&'static str, &'static str)]| {
        let mut list = base.to_vec();
        list.extend_from_slice(more);
        list
    };
    let expected = [
        (
            DAEMON,
            with_base(&[
                ("Deployment", "lifeboat"),
                ("Service", "lifeboat-metrics"),
                ("ServiceMonitor", "lifeboat"),
                ("PrometheusRule", "lifeboat"),
                ("ConfigMap", "lifeboat-dashboard"),
            ]),
        ),
        (
            CRONJOB,
            with_base(&[
                ("CronJob", "lifeboat-backup"),
                ("PrometheusRule", "lifeboat-cronjob"),
            ]),
        ),
        (
            DRILL,
            vec![
                ("ServiceAccount", "lifeboat-drill"),
                ("ClusterRole", "lifeboat-drill"),
                ("ClusterRole", "lifeboat-drill-scratch"),
                ("ClusterRoleBinding", "lifeboat-drill"),
                ("ValidatingAdmissionPolicy", "lifeboat-drill-scratch-only"),
                (
                    "ValidatingAdmissionPolicyBinding",
                    "lifeboat-drill-scratch-only",
                ),
                ("CronJob", "lifeboat-drill"),
                ("PrometheusRule", "lifeboat-drill"),
            ],
        ),
        (
            SECRETS,
            vec![
                ("Secret", "lifeboat-s3"),
                ("Secret", "lifeboat-recipients"),
                ("Secret", "lifeboat-db"),
                ("Secret", "lifeboat-identity"),
            ],
        ),
    ];
    for (dir, objects) in expected {
        let r = render(dir);
        let found: BTreeSet<(String, String)> = r.objects.iter().map(kind_name).collect();
        assert_eq!(found.len(), r.objects.len(), "{dir}: an object twice");
        let objects: BTreeSet<(String, String)> = objects
            .iter()
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .collect();
        assert_eq!(found, objects, "{dir}: the objects rendered");
        for o in &r.objects {
            let what = format!("{dir}: {}", name(o));
            assert_eq!(
                o["metadata"]["labels"]["app.kubernetes.io/name"], "lifeboat",
                "{what}: label app.kubernetes.io/name"
            );
            let cluster_scoped = [
                "Namespace",
                "ClusterRole",
                "ClusterRoleBinding",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
            ]
            .contains(&o["kind"].as_str().unwrap_or(""));
            if !cluster_scoped {
                assert_eq!(o["metadata"]["namespace"], "lifeboat", "{what}: namespace");
            }
            match o["kind"].as_str().unwrap_or("") {
                "Namespace" => {
                    typed::<Namespace>(o);
                }
                "ServiceAccount" => {
                    typed::<ServiceAccount>(o);
                }
                "ClusterRole" => {
                    typed::<ClusterRole>(o);
                }
                "ClusterRoleBinding" => {
                    typed::<ClusterRoleBinding>(o);
                }
                "ValidatingAdmissionPolicy" => {
                    typed::<ValidatingAdmissionPolicy>(o);
                }
                "ValidatingAdmissionPolicyBinding" => {
                    typed::<ValidatingAdmissionPolicyBinding>(o);
                }
                "ConfigMap" => {
                    typed::<ConfigMap>(o);
                }
                "Secret" => {
                    typed::<Secret>(o);
                }
                "Deployment" => {
                    typed::<Deployment>(o);
                }
                "Service" => {
                    typed::<Service>(o);
                }
                "CronJob" => {
                    typed::<CronJob>(o);
                }
                "PrometheusRule" => check_prometheus_rule(dir, o),
                "ServiceMonitor" => {
                    assert_eq!(o["apiVersion"], "monitoring.coreos.com/v1", "{what}");
                }
                other => panic!("{what}: kind {other} is new to this test; parse it here"),
            }
        }
    }
}

/// The Secret templates hold placeholders only, and neither mode applies
/// Secrets (an apply would overwrite the real ones with the placeholders).
#[test]
fn deploy_secrets_are_templates_outside_the_modes() {
    for dir in [DAEMON, CRONJOB, DRILL] {
        let r = render(dir);
        assert!(
            !r.objects.iter().any(|o| o["kind"] == "Secret"),
            "{dir} applies a Secret: `kubectl apply -k {dir}` would overwrite the real one"
        );
    }
    let r = render(SECRETS);
    let expected: [(&str, &[&str]); 4] = [
        ("lifeboat-s3", &["access-key-id", "secret-access-key"]),
        ("lifeboat-recipients", &["recipients.txt"]),
        ("lifeboat-db", &["mysql-password", "pg-password"]),
        ("lifeboat-identity", &["identity.txt"]),
    ];
    for (secret, keys) in expected {
        let s: Secret = one(&r, "Secret", secret);
        assert_eq!(s.type_.as_deref(), Some("Opaque"), "{secret}");
        assert!(s.data.is_none(), "{secret}: a template has stringData only");
        let data = s.string_data.unwrap_or_default();
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            keys,
            "{secret}: keys"
        );
        for (key, value) in &data {
            assert!(
                value.contains("REPLACE-ME"),
                "{secret}/{key} holds a value, not a placeholder: real secrets are never committed"
            );
        }
    }
}
