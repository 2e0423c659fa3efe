//! Kubernetes configuration exports.
//!
//! A backup of a `kubernetes` source lists every resource type the API
//! server offers (discovery, so a new CRD is included without a policy
//! change) in the namespaces the policy selects, drops what the server and
//! controllers own, and writes one YAML file per object into a tar stream:
//! `namespace/group-version-Kind/name.yaml` (`core` for the core group,
//! `_cluster/...` for cluster-scoped objects). The tar goes through the
//! usual pipeline, so Secrets are only ever stored encrypted.
//!
//! What is dropped, and why, is in [`clean`](super::clean); FORMAT.md §12
//! documents the layout.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use super::clean::{clean, never_exported, NEVER_EXPORTED};
use super::config::{KubernetesSource, Namespaces};
use super::yaml;
use crate::kube::{object_name, object_namespace, Cluster, Discovery, KubeError, ResourceType};

/// The path of an object inside the export:
/// `namespace/group-version-Kind/name.yaml`, `_cluster/...` for
/// cluster-scoped objects (a Namespace goes under its own name).
pub fn entry_path(namespace: Option<&str>, api_version: &str, kind: &str, name: &str) -> String {
    let gv = match api_version.split_once('/') {
        Some((g, v)) => format!("{g}-{v}"),
        None => format!("core-{api_version}"),
    };
    let dir = match (kind, namespace) {
        ("Namespace", _) if api_version == "v1" => name,
        (_, Some(ns)) => ns,
        (_, None) => CLUSTER_DIR,
    };
    format!("{dir}/{gv}-{kind}/{name}.yaml")
}

/// The folder of cluster-scoped objects (no namespace can be named so).
pub const CLUSTER_DIR: &str = "_cluster";

/// One file of the export.
#[derive(Debug)]
pub struct ExportFile {
    pub path: String,
    pub yaml: Vec<u8>,
}

/// What an export holds: counts only, never contents (it is stored in
/// the manifest, which is not encrypted).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KubeExport {
    /// The API server's URL and the context used.
    pub server: String,
    pub context: String,
    /// The namespaces exported.
    pub namespaces: Vec<String>,
    /// Objects exported, by namespace (empty for cluster-scoped) and kind.
    pub counts: Vec<KindCount>,
    /// Objects left out, by reason and kind.
    #[serde(default)]
    pub skipped: Vec<SkipCount>,
    /// Resource types left out by rule or by the policy, with the reason.
    #[serde(default)]
    pub types_left_out: Vec<String>,
    /// Types that were discovered but gone when listed (a CRD deleted
    /// meanwhile), and group versions whose discovery failed.
    #[serde(default)]
    pub types_vanished: Vec<String>,
    #[serde(default)]
    pub groups_unavailable: Vec<String>,
}

impl KubeExport {
    pub fn objects(&self) -> u64 {
        self.counts.iter().map(|c| c.count).sum()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KindCount {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub api_version: String,
    pub kind: String,
    /// The plural resource name (`deployments`), for --include/--exclude.
    pub resource: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SkipCount {
    pub reason: String,
    pub kind: String,
    pub count: u64,
}

/// The namespaces a source selects, sorted.
async fn select_namespaces(
    cluster: &Cluster,
    src: &KubernetesSource,
    discovery: &Discovery,
) -> Result<Vec<Value>, KubeError> {
    let ns_type =
        discovery
            .find("v1", "Namespace")
            .cloned()
            .ok_or_else(|| KubeError::BadResponse {
                server: cluster.server.clone(),
                action: "discover the API".into(),
                detail: "the server does not list the v1 Namespace resource".into(),
            })?;
    let mut out = Vec::new();
    match (&src.namespaces, &src.namespace_selector) {
        (Some(Namespaces::List(names)), _) => {
            for name in names {
                match cluster.get(&ns_type, None, name).await? {
                    Some(ns) => out.push(ns),
                    None => {
                        return Err(KubeError::NoSuchNamespace {
                            namespace: name.clone(),
                            server: cluster.server.clone(),
                        })
                    }
                }
            }
        }
        (_, selector) => {
            let excluded = src.excluded_namespaces();
            cluster
                .list(&ns_type, None, selector.as_deref(), |ns| {
                    if !excluded.iter().any(|e| e == object_name(&ns)) {
                        out.push(ns);
                    }
                    Ok(())
                })
                .await?;
            if out.is_empty() {
                return Err(KubeError::NoNamespaces {
                    server: cluster.server.clone(),
                    what: match selector {
                        Some(s) => format!("namespace_selector '{s}'"),
                        None => "namespaces: all".into(),
                    },
                });
            }
        }
    }
    out.sort_by(|a, b| object_name(a).cmp(object_name(b)));
    Ok(out)
}

/// Exports the source's objects into `sink`, one file per object, and
/// returns what was exported. Fails on the first permission or server
/// problem: a partial export is not a backup.
pub async fn export(
    cluster: &Cluster,
    src: &KubernetesSource,
    sink: mpsc::Sender<ExportFile>,
) -> Result<KubeExport, KubeError> {
    let discovery = cluster.discover().await?;
    let namespaces = select_namespaces(cluster, src, &discovery).await?;
    let names: Vec<String> = namespaces
        .iter()
        .map(|n| object_name(n).to_string())
        .collect();
    tracing::info!(server = %cluster.server, namespaces = %names.join(","), types = discovery.preferred().count(), "exporting");

    let groups_unavailable = unavailable_groups(cluster, src, &discovery)?;
    let mut summary = KubeExport {
        server: cluster.server.clone(),
        context: cluster.context.clone(),
        namespaces: names.clone(),
        groups_unavailable,
        ..Default::default()
    };
    let mut tally = Tally::default();

    // The Namespace objects themselves come first.
    for mut ns in namespaces {
        clean(&mut ns, "Namespace").ok();
        *tally
            .counts
            .entry((
                String::new(),
                "v1".into(),
                "Namespace".into(),
                "namespaces".into(),
            ))
            .or_default() += 1;
        send(&sink, &ns).await?;
    }

    let mut types: Vec<&ResourceType> = discovery
        .preferred()
        .filter(|t| t.supports("list"))
        .collect();
    types.sort_by(|a, b| (&a.group, &a.kind).cmp(&(&b.group, &b.kind)));
    for rt in types {
        export_type(cluster, src, rt, &names, &sink, &mut summary, &mut tally).await?;
    }
    tally.into_summary(&mut summary);
    Ok(summary)
}

/// The group versions whose discovery failed, as warnings; an error if
/// one may hold configuration. A group whose discovery failed may hold
/// configuration: its objects would silently be missing. Only groups that
/// never hold any, or that the policy leaves out, are passed over.
fn unavailable_groups(
    cluster: &Cluster,
    src: &KubernetesSource,
    discovery: &Discovery,
) -> Result<Vec<String>, KubeError> {
    let mut groups_unavailable = Vec::new();
    for (group, detail) in &discovery.unavailable {
        let never = NEVER_EXPORTED
            .iter()
            .any(|(g, p, _)| g == group && *p == "*");
        let excluded = src
            .exclude_resources
            .iter()
            .any(|e| e.strip_prefix("*.") == Some(group.as_str()));
        if !never && !excluded {
            return Err(KubeError::GroupUnavailable {
                server: cluster.server.clone(),
                group: group.clone(),
                detail: detail.clone(),
            });
        }
        tracing::warn!(detail = %detail, "API group version unavailable; it holds no configuration to export");
        groups_unavailable.push(detail.clone());
    }
    Ok(groups_unavailable)
}

/// Objects exported and skipped so far, keyed for the summary's sorted counts.
#[derive(Default)]
struct Tally {
    /// (namespace, apiVersion, kind, plural) to count.
    counts: BTreeMap<(String, String, String, String), u64>,
    /// (reason, kind) to count.
    skipped: BTreeMap<(String, String), u64>,
}

impl Tally {
    /// Moves the counts into the summary.
    fn into_summary(self, summary: &mut KubeExport) {
        summary.counts = self
            .counts
            .into_iter()
            .map(
                |((namespace, api_version, kind, resource), count)| KindCount {
                    namespace,
                    api_version,
                    kind,
                    resource,
                    count,
                },
            )
            .collect();
        summary.skipped = self
            .skipped
            .into_iter()
            .map(|((reason, kind), count)| SkipCount {
                reason,
                kind,
                count,
            })
            .collect();
    }
}

/// Exports one resource type: left out by rule or by the policy (noted in
/// the summary), or listed in each selected namespace (or cluster-wide)
/// and its objects cleaned, counted and sent.
async fn export_type(
    cluster: &Cluster,
    src: &KubernetesSource,
    rt: &ResourceType,
    names: &[String],
    sink: &mpsc::Sender<ExportFile>,
    summary: &mut KubeExport,
    tally: &mut Tally,
) -> Result<(), KubeError> {
    if rt.group.is_empty() && rt.plural == "namespaces" {
        return Ok(());
    }
    if let Some(why) = never_exported(rt) {
        summary
            .types_left_out
            .push(format!("{}: {why}", rt.group_resource()));
        return Ok(());
    }
    if src
        .exclude_resources
        .iter()
        .any(|e| rt.matches(e) || e.strip_prefix("*.") == Some(rt.group.as_str()))
    {
        summary
            .types_left_out
            .push(format!("{}: excluded by the policy", rt.group_resource()));
        return Ok(());
    }
    let scopes: Vec<Option<&str>> = if rt.namespaced {
        names.iter().map(|n| Some(n.as_str())).collect()
    } else if src.cluster_resources.iter().any(|c| rt.matches(c)) {
        vec![None]
    } else {
        return Ok(());
    };
    for scope in scopes {
        let mut batch: Vec<Value> = Vec::new();
        let listed = cluster
            .list(rt, scope, None, |obj| {
                batch.push(obj);
                Ok(())
            })
            .await;
        match listed {
            Ok(()) => {}
            Err(KubeError::Api { code: 404, .. }) => {
                tracing::warn!(resource = %rt.group_resource(), "resource type disappeared after discovery (its CRD was deleted?); not included");
                summary.types_vanished.push(rt.group_resource());
                break;
            }
            Err(e) => return Err(e),
        }
        for mut obj in batch {
            match clean(&mut obj, &rt.kind) {
                Ok(()) => {
                    *tally
                        .counts
                        .entry((
                            scope.unwrap_or("").to_string(),
                            rt.api_version(),
                            rt.kind.clone(),
                            rt.plural.clone(),
                        ))
                        .or_default() += 1;
                    send(sink, &obj).await?;
                }
                Err(skip) => {
                    tracing::debug!(kind = %rt.kind, name = %object_name(&obj), reason = %skip, "not exported");
                    *tally
                        .skipped
                        .entry((skip.key().to_string(), rt.kind.clone()))
                        .or_default() += 1;
                }
            }
        }
    }
    Ok(())
}

async fn send(sink: &mpsc::Sender<ExportFile>, obj: &Value) -> Result<(), KubeError> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let path = entry_path(object_namespace(obj), api_version, kind, object_name(obj));
    let file = ExportFile {
        path,
        yaml: yaml::to_yaml(obj).into_bytes(),
    };
    sink.send(file).await.map_err(|_| KubeError::SinkClosed)
}

/// Writes export files into a tar stream (runs on a blocking thread).
/// Files are 0600: the tar holds Secrets.
pub fn write_tar<W: std::io::Write>(
    mut files: mpsc::Receiver<ExportFile>,
    out: W,
    mtime: u64,
) -> std::io::Result<W> {
    let mut builder = tar::Builder::new(out);
    while let Some(f) = files.blocking_recv() {
        let mut header = tar::Header::new_gnu();
        header.set_size(f.yaml.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, &f.path, f.yaml.as_slice())?;
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::kubernetes::clean::Skip;
    use serde_json::json;

    #[test]
    fn paths() {
        assert_eq!(
            entry_path(Some("prod"), "apps/v1", "Deployment", "web"),
            "prod/apps-v1-Deployment/web.yaml"
        );
        assert_eq!(
            entry_path(Some("prod"), "v1", "ConfigMap", "x"),
            "prod/core-v1-ConfigMap/x.yaml"
        );
        assert_eq!(
            entry_path(None, "v1", "Namespace", "prod"),
            "prod/core-v1-Namespace/prod.yaml"
        );
        assert_eq!(
            entry_path(
                None,
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                "system:x"
            ),
            "_cluster/rbac.authorization.k8s.io-v1-ClusterRole/system:x.yaml"
        );
    }

    #[test]
    fn owned_pods_and_tokens_are_skipped() {
        let mut pod = json!({"kind": "Pod", "metadata": {"name": "web-1", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-6d4", "uid": "u", "controller": true}]}});
        assert!(matches!(
            clean(&mut pod, "Pod"),
            Err(Skip::ControllerOwned { .. })
        ));
        let mut token = json!({"kind": "Secret", "type": "kubernetes.io/service-account-token", "metadata": {"name": "t"}});
        assert!(matches!(
            clean(&mut token, "Secret"),
            Err(Skip::ServerOwned(_))
        ));
        // Owned by something else: kept, without the reference.
        let mut cert = json!({"kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "c", "ownerReferences": [
            {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "name": "c", "uid": "u", "controller": true}]}});
        clean(&mut cert, "Secret").unwrap();
        assert!(cert.pointer("/metadata/ownerReferences").is_none());
    }

    #[test]
    fn server_fields_are_dropped() {
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "uid": "1", "resourceVersion": "5", "creationTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{}], "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"], "ports": [{"port": 80, "nodePort": 30001}]},
            "status": {"loadBalancer": {}}
        });
        clean(&mut svc, "Service").unwrap();
        assert_eq!(
            svc,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}})
        );
        let mut headless = json!({"kind": "Service", "metadata": {"name": "db"}, "spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        clean(&mut headless, "Service").unwrap();
        assert_eq!(headless.pointer("/spec/clusterIP"), Some(&json!("None")));
        let mut job = json!({"kind": "Job", "metadata": {"name": "m"}, "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}},
            "template": {"metadata": {"creationTimestamp": null, "labels": {"batch.kubernetes.io/controller-uid": "u", "job-name": "m", "app": "m"}}}}});
        clean(&mut job, "Job").unwrap();
        assert_eq!(
            job.pointer("/spec"),
            Some(&json!({"template": {"metadata": {"labels": {"app": "m"}}}}))
        );
    }
}
