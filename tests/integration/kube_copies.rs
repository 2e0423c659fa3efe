//! Kubernetes copies that cannot hurt production: `--to-dir` makes the
//! same harmless plan as a restore into the cluster, a copy never lands in
//! a namespace that holds other workloads unless asked, and then never
//! selects their pods; a namespace being deleted is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{Lifeboat, Repo};
use crate::kube_server::KubeServer;
use crate::kubernetes::restore;

fn setup(server: &KubeServer) -> (Lifeboat, tempfile::TempDir) {
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
    (lb, repo)
}

/// Whether every field of `want` is in `have` with the same value.
fn contained(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| contained(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| contained(a, b))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => want == have,
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
}

/// What the cluster makes in every namespace by itself.
fn server_made(o: &Value) -> bool {
    (o["kind"] == "ServiceAccount" && o["metadata"]["name"] == "default")
        || (o["kind"] == "ConfigMap" && o["metadata"]["name"] == "kube-root-ca.crt")
}

fn key(o: &Value) -> (String, String) {
    (
        o["kind"].as_str().unwrap().to_string(),
        o["metadata"]["name"].as_str().unwrap().to_string(),
    )
}

#[test]
fn to_dir_writes_exactly_what_the_same_restore_creates_in_the_cluster() {
    let server = KubeServer::start();
    server.seed_realistic("prod");
    let (lb, _repo) = setup(&server);
    lb.run(&["backup"]).ok();

    // The same restore, into the cluster and into a folder.
    restore(&lb, &["--namespace-map", "prod:copy-a"]).ok();
    let dir = lb.dir.path().join("export");
    let r = restore(
        &lb,
        &[
            "--namespace-map",
            "prod:copy-a",
            "--to-dir",
            dir.to_str().unwrap(),
        ],
    );
    r.ok();
    assert!(
        r.stdout.contains("changed by the harmless-copy rules")
            && r.stdout.contains("left out: 1 harmless-copy rules"),
        "{}",
        r.stdout
    );
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    let written: Vec<Value> = files
        .iter()
        .map(|f| yaml_serde::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
        .collect();
    // Each file is what the cluster holds, field by field...
    for w in &written {
        let (kind, name) = key(w);
        let api_version = w["apiVersion"].as_str().unwrap();
        let ns = w["metadata"]["namespace"].as_str();
        let live = server
            .get(api_version, &kind, ns, &name)
            .unwrap_or_else(|| panic!("{kind} {name} is in --to-dir but not in the cluster"));
        assert!(
            contained(w, &live),
            "{kind} {name} differs:\n--to-dir: {w}\ncluster:  {live}"
        );
        if kind == "Deployment" {
            assert_eq!(w["spec"]["replicas"], 0, "the copy is harmless on disk too");
        }
    }
    // ...and the cluster holds nothing the folder lacks.
    let in_cluster: Vec<Value> = server
        .objects_in("copy-a")
        .into_iter()
        .filter(|o| !server_made(o))
        .collect();
    let written_keys: Vec<(String, String)> = written
        .iter()
        .filter(|w| w["kind"] != "Namespace" && !server_made(w))
        .map(key)
        .collect();
    for o in &in_cluster {
        assert!(
            written_keys.contains(&key(o)),
            "{:?} was restored but not written",
            key(o)
        );
    }
    assert_eq!(in_cluster.len(), written_keys.len());
    // plan.txt says what changed and what is left out, and why.
    let plan = std::fs::read_to_string(dir.join("plan.txt")).unwrap();
    assert!(
        plan.contains("changed  copy-a/Deployment web: replicas 3 -> 0")
            && plan.contains("skipped  copy-a/Ingress web: an Ingress would route live traffic"),
        "{plan}"
    );

    // apply.sh refuses a target namespace that exists...
    let home = lb.dir.path();
    server.allow_anonymous();
    let run_apply = |dir: &Path, env: &[(&str, &str)], args: &[&str]| {
        let mut c = Command::new("sh");
        c.arg(dir.join("apply.sh"))
            .args(args)
            .env("KUBECONFIG", server.kubeconfig(home))
            .env("HOME", home);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = run_apply(&dir, &[], &[]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("namespace copy-a exists"),
        "{out:?}"
    );
    // ...unless told, and then (a server-side dry run) changes nothing.
    let out = run_apply(
        &dir,
        &[("LIFEBOAT_INTO_EXISTING", "1")],
        &["--dry-run=server"],
    );
    assert!(out.status.success(), "{out:?}");

    // Into a new namespace, kubectl (with its default validation) creates
    // exactly what lifeboat's own restore created.
    let dir_b = lb.dir.path().join("export-b");
    restore(
        &lb,
        &[
            "--namespace-map",
            "prod:copy-b",
            "--to-dir",
            dir_b.to_str().unwrap(),
        ],
    )
    .ok();
    let out = run_apply(&dir_b, &[], &[]);
    assert!(
        out.status.success(),
        "apply.sh: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let b: Vec<Value> = server
        .objects_in("copy-b")
        .into_iter()
        .filter(|o| !server_made(o))
        .collect();
    assert_eq!(b.len(), in_cluster.len());
    for o in &b {
        let a = in_cluster
            .iter()
            .find(|a| key(a) == key(o))
            .unwrap_or_else(|| panic!("{:?} only in the kubectl copy", key(o)));
        // A Job's selector and pod labels carry its own uid.
        let fields: &[&str] = if o["kind"] == "Job" {
            &["data"]
        } else {
            &["spec", "data", "stringData", "type", "rules", "roleRef"]
        };
        if o["kind"] == "Job" {
            assert_eq!(a["spec"]["suspend"], o["spec"]["suspend"]);
            assert_eq!(a["spec"]["template"]["spec"], o["spec"]["template"]["spec"]);
        }
        for field in fields {
            let (mut x, mut y) = (a.get(field).cloned(), o.get(field).cloned());
            // Allocated by the server per Service.
            for v in [&mut x, &mut y].into_iter().flatten() {
                if let Some(spec) = v.as_object_mut() {
                    spec.remove("clusterIP");
                    spec.remove("clusterIPs");
                }
            }
            assert_eq!(x, y, "{:?}: {field}", key(o));
        }
        if o["kind"] != "Job" {
            assert_eq!(
                a["metadata"]["labels"],
                o["metadata"]["labels"],
                "{:?}: labels",
                key(o)
            );
        }
    }
}

#[test]
fn a_copy_into_a_namespace_with_other_workloads_is_refused_and_never_selects_their_pods() {
    let server = KubeServer::start();
    server.seed_realistic("prod");
    let (lb, _repo) = setup(&server);
    lb.run(&["backup"]).ok();

    // Another production namespace: a live Deployment whose pods carry the
    // same labels as the backup's, and a bare debugging Pod.
    server.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "busy"}}));
    server.insert(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "storefront", "namespace": "busy"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "registry.example.com/web:2.0"}]}}}
    }));
    server.insert(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "debug-shell", "namespace": "busy", "labels": {"app": "db"}},
        "spec": {"containers": [{"name": "sh", "image": "busybox:1.36"}]}
    }));
    let before = server.objects_in("busy");
    let requests = server.requests().len();

    let r = restore(&lb, &["--namespace-map", "prod:busy"]);
    r.fails_with(
        5,
        &[
            "namespace 'busy' exists and holds 2 object(s) of its own",
            "Deployment storefront",
            "Pod debug-shell",
            "--into-existing",
        ],
    );
    assert_eq!(server.objects_in("busy"), before, "nothing was written");
    assert!(server.requests()[requests..]
        .iter()
        .all(|q| q.starts_with("GET ")));
    // A dry run says the same.
    restore(&lb, &["--namespace-map", "prod:busy", "--dry-run"]).fails_with(5, &["'busy'"]);

    // Asked for: the copy goes in, but nothing that selects the other
    // workloads' pods does.
    let r = restore(
        &lb,
        &["--namespace-map", "prod:busy", "--into-existing", "--json"],
    );
    r.ok();
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let outcome = |kind: &str, name: &str| {
        report["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == kind && o["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} not in the report"))
            .clone()
    };
    for (kind, name, what) in [
        ("Service", "web", "the pods of Deployment storefront"),
        ("Service", "web-public", "the pods of Deployment storefront"),
        ("Service", "db", "Pod debug-shell"),
        (
            "NetworkPolicy",
            "default-deny",
            "the pods of Deployment storefront",
        ),
        ("StatefulSet", "db", "Pod debug-shell"),
    ] {
        let o = outcome(kind, name);
        assert_eq!(o["outcome"], "skipped", "{o}");
        assert_eq!(o["reason"], "selects-other-pods", "{o}");
        assert!(o["detail"].as_str().unwrap().contains(what), "{o}");
        let api_version = if kind == "NetworkPolicy" {
            "networking.k8s.io/v1"
        } else if kind == "StatefulSet" {
            "apps/v1"
        } else {
            "v1"
        };
        assert!(
            server.get(api_version, kind, Some("busy"), name).is_none(),
            "{kind} {name} must not be created"
        );
    }
    // The backup's own Deployment selects app=web too, but adopts only
    // Pods without a controller: storefront's pods are not orphans.
    assert_eq!(outcome("Deployment", "web")["outcome"], "created");
    assert_eq!(
        server
            .get("apps/v1", "Deployment", Some("busy"), "storefront")
            .unwrap()["spec"]["replicas"],
        4
    );
    assert_eq!(outcome("ConfigMap", "app-settings")["outcome"], "created");

    // A fresh copy's second run finishes the first, even though the
    // namespace now holds objects: they are this backup's.
    restore(&lb, &["--namespace-map", "prod:fresh"]).ok();
    restore(&lb, &["--namespace-map", "prod:fresh"]).ok();

    // A namespace being deleted is refused, in place too.
    server.set_namespace_termination(std::time::Duration::from_secs(3600));
    server.delete_namespace("fresh");
    restore(&lb, &["--namespace-map", "prod:fresh"]).fails_with(
        5,
        &[
            "namespace 'fresh' is being deleted (Terminating)",
            "kubectl get namespace fresh",
        ],
    );
    server.delete_namespace("prod");
    restore(&lb, &[]).fails_with(5, &["namespace 'prod' is being deleted"]);
}
