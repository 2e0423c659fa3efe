//! The workloads of both modes: non-root, read-only, limited, never near
//! the age identity; the daemon's Service and ServiceMonitor; read-only RBAC.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Container, PodSpec, Service};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde_json::{json, Value};

use super::{flag, one, render, secret_names, BACKUP_SECRETS, CRONJOB, DAEMON};

/// The rules both workloads follow.
fn check_pod(what: &str, pod: &PodSpec) {
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("lifeboat"),
        "{what}: serviceAccountName"
    );
    assert_eq!(
        pod.automount_service_account_token,
        Some(true),
        "{what}: Kubernetes sources export with the pod's token"
    );
    check_hardened(what, pod);
    for c in &pod.containers {
        assert!(
            !c.args.iter().flatten().any(|a| a.starts_with("--identity")),
            "{what}, container {}: the backup side never gets an identity",
            c.name
        );
    }
    // The age identity decrypts every backup: the backup side never sees it.
    let json = serde_json::to_value(pod).unwrap();
    assert!(
        !json.to_string().contains("lifeboat-identity"),
        "{what} refers to the Secret lifeboat-identity: only restore and drill jobs may"
    );
    let mut secrets = BTreeSet::new();
    secret_names(&json, &mut secrets);
    let expected: BTreeSet<String> = BACKUP_SECRETS.map(String::from).into();
    assert_eq!(secrets, expected, "{what}: the Secrets it refers to");
    let db = pod
        .volumes
        .iter()
        .flatten()
        .find_map(|v| {
            v.secret
                .as_ref()
                .filter(|s| s.secret_name.as_deref() == Some("lifeboat-db"))
        })
        .unwrap_or_else(|| panic!("{what}: the Secret lifeboat-db is not mounted"));
    assert_eq!(db.default_mode, Some(0o400), "{what}: lifeboat-db mode");
}

/// Non-root, read-only root file system, no privileges, limited, /tmp an
/// emptyDir, Secrets and ConfigMaps mounted read-only.
pub(super) fn check_hardened(what: &str, pod: &PodSpec) {
    let sc = pod
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no pod securityContext"));
    assert_eq!(sc.run_as_non_root, Some(true), "{what}: runAsNonRoot");
    assert!(sc.run_as_user.is_some_and(|u| u != 0), "{what}: runAsUser");
    assert!(
        sc.run_as_group.is_some_and(|g| g != 0),
        "{what}: runAsGroup"
    );
    assert!(sc.fs_group.is_some(), "{what}: fsGroup");
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "{what}: seccompProfile"
    );
    assert!(
        pod.host_network != Some(true) && pod.host_pid != Some(true),
        "{what}: host namespaces"
    );
    let volumes: BTreeMap<&str, Value> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), serde_json::to_value(v).unwrap()))
        .collect();
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        check_container(what, c, &volumes);
    }
}

/// The rules of `check_hardened` for one of the pod's containers, whose
/// volumes are `volumes` (by name, as JSON).
fn check_container(what: &str, c: &Container, volumes: &BTreeMap<&str, Value>) {
    let who = format!("{what}, container {}", c.name);
    let csc = c
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{who}: no securityContext"));
    assert_eq!(
        csc.allow_privilege_escalation,
        Some(false),
        "{who}: allowPrivilegeEscalation"
    );
    assert_eq!(
        csc.read_only_root_filesystem,
        Some(true),
        "{who}: readOnlyRootFilesystem"
    );
    assert!(csc.privileged != Some(true), "{who}: privileged");
    let caps = csc.capabilities.clone().unwrap_or_default();
    assert!(
        caps.drop.iter().flatten().any(|d| d.as_str() == "ALL"),
        "{who}: capabilities.drop [ALL]"
    );
    assert!(
        caps.add.is_none_or(|a| a.is_empty()),
        "{who}: capabilities.add"
    );
    let resources = c
        .resources
        .clone()
        .unwrap_or_else(|| panic!("{who}: no resources"));
    let requests = resources.requests.unwrap_or_default();
    let limits = resources.limits.unwrap_or_default();
    for r in ["cpu", "memory"] {
        assert!(requests.contains_key(r), "{who}: no {r} request");
        assert!(limits.contains_key(r), "{who}: no {r} limit");
    }
    let image = c.image.as_deref().unwrap_or("");
    let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
    assert!(
        !tag.is_empty() && tag != "latest" && !tag.contains('/'),
        "{who}: image {image:?} is not pinned to a tag"
    );
    // The root file system is read-only: /tmp is a writable emptyDir
    // and TMPDIR says so.
    let tmp = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/tmp")
        .unwrap_or_else(|| panic!("{who}: nothing mounted at /tmp"));
    assert!(
        volumes
            .get(tmp.name.as_str())
            .is_some_and(|v| v.get("emptyDir").is_some()),
        "{who}: /tmp is not an emptyDir"
    );
    assert_eq!(
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == "TMPDIR")
            .and_then(|e| e.value.as_deref()),
        Some("/tmp"),
        "{who}: TMPDIR"
    );
    for m in c.volume_mounts.iter().flatten() {
        let v = volumes
            .get(m.name.as_str())
            .unwrap_or_else(|| panic!("{who}: mounts {}, which is no volume", m.name));
        if v.get("secret").is_some() || v.get("configMap").is_some() {
            assert_eq!(
                m.read_only,
                Some(true),
                "{who}: {} is mounted writable",
                m.name
            );
        }
    }
}

/// Both workloads are non-root, read-only, limited, and never see the age
/// identity; the daemon is a single Recreate replica whose grace period
/// covers its shutdown deadline; the CronJob never overlaps and gives up;
/// the Service and ServiceMonitor reach the daemon; RBAC only reads.
// Stays long: one pass over both rendered modes: daemon, Service, CronJob and RBAC side by side.
#[test]
fn deploy_workloads_are_locked_down_and_never_see_the_identity() {
    let daemon = render(DAEMON);
    let cron = render(CRONJOB);

    // Daemon mode.
    let d: Deployment = one(&daemon, "Deployment", "lifeboat");
    let spec = d.spec.expect("Deployment lifeboat: no spec");
    assert_eq!(
        spec.replicas,
        Some(1),
        "one daemon: two would run the same schedules and archivers"
    );
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate"),
        "the old daemon stops before the new one starts"
    );
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/component")
            .map(String::as_str),
        Some("daemon")
    );
    let selects = |selector: &BTreeMap<String, String>| {
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    assert!(
        selects(&spec.selector.match_labels.clone().unwrap_or_default()),
        "the Deployment's selector matches its pods"
    );
    let pod = spec
        .template
        .spec
        .expect("Deployment lifeboat: no pod spec");
    check_pod("Deployment lifeboat", &pod);
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    assert!(
        flag(&args, "--listen").is_some_and(|l| l.ends_with(":9187")),
        "{args:?}"
    );
    let deadline = flag(&args, "--shutdown-deadline")
        .and_then(|d| d.strip_suffix('s'))
        .and_then(|d| d.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("no --shutdown-deadline Ns in {args:?}"));
    let grace = pod.termination_grace_period_seconds.unwrap_or(30);
    // The daemon needs the deadline plus up to 60 s (aborting backups), 30 s
    // (archivers' last partial) and 10 s (S3 aborts) after SIGTERM.
    assert!(
        grace >= deadline + 100,
        "terminationGracePeriodSeconds {grace} must cover --shutdown-deadline {deadline}s + 100 s, or the kubelet kills running uploads"
    );
    let catalog = flag(&args, "--catalog").map(PathBuf::from);
    let catalog_dir = catalog.as_deref().and_then(Path::parent);
    assert!(
        catalog_dir.is_some_and(|dir| c
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| Path::new(&m.mount_path) == dir)),
        "the catalog's folder is a volume (the root file system is read-only): {args:?}"
    );
    for (probe, path) in [
        (&c.liveness_probe, "/healthz"),
        (&c.readiness_probe, "/readyz"),
    ] {
        let http = probe.as_ref().and_then(|p| p.http_get.as_ref());
        assert_eq!(
            http.and_then(|h| h.path.as_deref()),
            Some(path),
            "daemon probe {path}"
        );
    }
    let metrics_port = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("the daemon's container port `metrics`");
    assert_eq!(metrics_port.container_port, 9187);

    let svc: Service = one(&daemon, "Service", "lifeboat-metrics");
    let svc_spec = svc.spec.expect("Service lifeboat-metrics: no spec");
    assert!(
        selects(&svc_spec.selector.clone().unwrap_or_default()),
        "Service lifeboat-metrics selects the daemon's pods"
    );
    assert_eq!(
        svc_spec.publish_not_ready_addresses,
        Some(true),
        "the metrics are scraped while /readyz fails (a broken policy is an alert, not a down daemon)"
    );
    let port = svc_spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("Service lifeboat-metrics: port `metrics`");
    assert_eq!(port.port, 9187);
    assert_eq!(
        serde_json::to_value(&port.target_port).unwrap(),
        json!("metrics"),
        "the Service targets the container port by name"
    );
    let monitor = daemon
        .objects
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .unwrap();
    let svc_labels = svc.metadata.labels.unwrap_or_default();
    let wanted: BTreeMap<String, String> =
        serde_json::from_value(monitor["spec"]["selector"]["matchLabels"].clone())
            .expect("ServiceMonitor: spec.selector.matchLabels");
    assert!(
        !wanted.is_empty() && wanted.iter().all(|(k, v)| svc_labels.get(k) == Some(v)),
        "the ServiceMonitor selects Service lifeboat-metrics"
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");

    // CronJob mode.
    let cj: CronJob = one(&cron, "CronJob", "lifeboat-backup");
    let cj = cj.spec.expect("CronJob lifeboat-backup: no spec");
    assert_eq!(
        cj.concurrency_policy.as_deref(),
        Some("Forbid"),
        "two backups of one policy never run at once"
    );
    assert!(
        cj.starting_deadline_seconds.is_some_and(|s| s > 0),
        "startingDeadlineSeconds: a missed run is not started hours late"
    );
    assert!(cj.successful_jobs_history_limit.is_some());
    assert!(cj.failed_jobs_history_limit.is_some_and(|n| n > 0));
    let job = cj
        .job_template
        .spec
        .expect("CronJob lifeboat-backup: no jobTemplate.spec");
    assert!(job.backoff_limit.is_some(), "backoffLimit");
    assert!(
        job.active_deadline_seconds.is_some_and(|s| s > 0),
        "activeDeadlineSeconds: a hung backup is stopped"
    );
    let pod = job
        .template
        .spec
        .expect("CronJob lifeboat-backup: no pod spec");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    check_pod("CronJob lifeboat-backup", &pod);
    let args = pod.containers[0].args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("backup"), "{args:?}");
    assert!(flag(&args, "--policy").is_some(), "{args:?}");

    // Never both modes in one apply.
    assert!(!daemon.objects.iter().any(|o| o["kind"] == "CronJob"));
    assert!(!cron.objects.iter().any(|o| o["kind"] == "Deployment"));

    // RBAC: read only, bound to the service account.
    for r in [&daemon, &cron] {
        let role: ClusterRole = one(r, "ClusterRole", "lifeboat-export");
        let rules = role.rules.unwrap_or_default();
        assert!(!rules.is_empty(), "{}: lifeboat-export has no rules", r.dir);
        for rule in &rules {
            for verb in &rule.verbs {
                assert!(
                    ["get", "list", "watch"].contains(&verb.as_str()),
                    "{}: ClusterRole lifeboat-export may {verb}: exports only read; restores and drills get their own roles",
                    r.dir
                );
            }
        }
        assert!(
            rules.iter().any(|rule| rule
                .non_resource_urls
                .iter()
                .flatten()
                .any(|u| u.as_str() == "/apis/*")),
            "{}: discovery (nonResourceURLs /apis/*) is allowed",
            r.dir
        );
        let binding: ClusterRoleBinding = one(r, "ClusterRoleBinding", "lifeboat-export");
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        assert_eq!(binding.role_ref.name, "lifeboat-export");
        let subjects = binding.subjects.unwrap_or_default();
        assert!(
            subjects.iter().any(|s| s.kind == "ServiceAccount"
                && s.name == "lifeboat"
                && s.namespace.as_deref() == Some("lifeboat")),
            "{}: the binding names the service account lifeboat/lifeboat",
            r.dir
        );
        assert_eq!(subjects.len(), 1, "{}: only lifeboat is bound", r.dir);
    }
}
