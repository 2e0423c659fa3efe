//! Kubernetes drills: an export restored into scratch namespaces
//! `lifeboat-drill-<drill id>` (one per exported namespace: `-2`, `-3`, ...
//! after the first) with the harmless-copy rules of the Kubernetes restore,
//! checked, and deleted.
//!
//! Scratch namespaces carry the label `app.kubernetes.io/managed-by:
//! lifeboat-drill`, the drill id, and an owner annotation (host, pid and
//! process start). The next drill against the same cluster deletes those
//! whose drill is gone: made on this host by a process that no longer
//! runs, or made elsewhere more than a day ago.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::drill::scratch::{self, Leftover};
use crate::kube::{Cluster, Discovery, KubeError, ResourceType};
use crate::policy::ScratchKubernetesConfig;

/// The label that marks scratch namespaces.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = crate::kinds::kubernetes::restore::DRILL_MANAGED_BY;
const DRILL_LABEL: &str = "lifeboat.dev/drill";
const OWNER_ANNOTATION: &str = "lifeboat.dev/drill-owner";
const SOURCE_ANNOTATION: &str = "lifeboat.dev/drill-source-namespace";

/// Why a scratch namespace step failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeDrillError {
    #[error("the API server does not list the {0} type")]
    NoType(&'static str),
    #[error("cannot create scratch namespace {namespace}: {source}")]
    Create {
        namespace: String,
        #[source]
        source: Box<KubeError>,
    },
    #[error("cannot bind ClusterRole {role} in scratch namespace {namespace}: {source}; the drill's account needs `bind` on that role and `create` on rolebindings (deploy/drill/rbac.yaml)")]
    Bind {
        role: String,
        namespace: String,
        #[source]
        source: Box<KubeError>,
    },
    #[error("cannot delete {}", failed.iter().map(|(ns, e)| format!("namespace {ns}: {e}")).collect::<Vec<_>>().join("; "))]
    Delete { failed: Vec<(String, KubeError)> },
    #[error("the API server knows no kind '{0}'")]
    UnknownKind(String),
    #[error("{0} is cluster-scoped; drills restore only into namespaces")]
    ClusterScoped(String),
    #[error("cannot list {kind} in {namespace}: {source}")]
    List {
        kind: String,
        namespace: String,
        #[source]
        source: Box<KubeError>,
    },
}

impl crate::outcome::Classify for KubeDrillError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::NoType(_)
            | Self::Create { .. }
            | Self::Bind { .. }
            | Self::Delete { .. }
            | Self::UnknownKind(_)
            | Self::ClusterScoped(_)
            | Self::List { .. } => Outcome::Failure,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Owner {
    host: String,
    pid: u32,
    process_start: u64,
}

/// Runs `work` on a blocking thread of this runtime until it ends or
/// `cancel` fires (None). For futures rustc cannot prove `Send` for
/// every lifetime (stream combinators holding references:
/// rust-lang/rust#102211), which the daemon's spawned drills cannot hold.
/// A panic in `work` comes back as its message, so that the caller can
/// still delete what it made.
pub async fn on_blocking_thread<T, F, Fut>(
    cancel: &tokio_util::sync::CancellationToken,
    work: F,
) -> Result<Option<T>, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    let cancel = cancel.clone();
    let joined = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            tokio::select! {
                r = work() => Some(r),
                _ = cancel.cancelled() => None,
            }
        })
    })
    .await;
    match joined {
        Ok(r) => Ok(r),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            Err(payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into()))
        }
        Err(e) => Err(format!("the task was cancelled: {e}")),
    }
}

/// Source namespace → scratch namespace.
pub fn scratch_names(id: &str, sources: &[String]) -> BTreeMap<String, String> {
    let base = format!("{}{}", scratch::PREFIX, id.to_ascii_lowercase());
    sources
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let name = if i == 0 {
                base.clone()
            } else {
                format!("{base}-{}", i + 1)
            };
            (ns.clone(), name)
        })
        .collect()
}

/// The Namespace type as the server describes it.
pub fn namespace_type(discovery: &Discovery) -> Result<ResourceType, KubeDrillError> {
    discovery
        .find("v1", "Namespace")
        .cloned()
        .ok_or(KubeDrillError::NoType("Namespace"))
}

/// Turns the restore plan's Namespace objects (the backup's, with the
/// labels and annotations a copy keeps) into the scratch namespaces' own:
/// the drill's label, id, owner and source namespace added on top. The
/// restore then finds each namespace holding what the backup has.
/// Returns the scratch namespaces to create, by name.
pub fn scratch_namespaces(
    plan: &mut crate::kinds::kubernetes::restore::Plan,
    id: &str,
) -> BTreeMap<String, Value> {
    // A namespace whose Namespace object the export lacks gets a bare one.
    for (from, to) in plan.namespaces.clone() {
        let planned = plan
            .objects
            .iter()
            .any(|p| p.api_version == "v1" && p.kind == "Namespace" && p.name == to);
        if !planned {
            plan.objects.insert(
                0,
                crate::kinds::kubernetes::restore::Planned {
                    stage: crate::kinds::kubernetes::restore::Stage::Namespaces,
                    source_namespace: Some(from),
                    namespace: Some(to.clone()),
                    api_version: "v1".into(),
                    kind: "Namespace".into(),
                    name: to.clone(),
                    skip: None,
                    changes: Vec::new(),
                    obj: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": to}}),
                },
            );
        }
    }
    let me = std::process::id();
    let owner = serde_json::to_string(&Owner {
        host: crate::lock::hostname(),
        pid: me,
        process_start: scratch::process_start(me).unwrap_or(0),
    })
    .expect("owner serializes");
    let mut out = BTreeMap::new();
    for p in plan
        .objects
        .iter_mut()
        .filter(|p| p.api_version == "v1" && p.kind == "Namespace")
    {
        let from = p.source_namespace.clone().unwrap_or_default();
        let meta = p
            .obj
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
        if let Some(meta) = meta.and_then(Value::as_object_mut) {
            for (field, marks) in [
                (
                    "labels",
                    json!({MANAGED_BY: MANAGED_BY_VALUE, DRILL_LABEL: id.to_ascii_lowercase()}),
                ),
                (
                    "annotations",
                    json!({OWNER_ANNOTATION: owner, SOURCE_ANNOTATION: from}),
                ),
            ] {
                let map = meta.entry(field).or_insert_with(|| json!({}));
                if let (Some(map), Some(marks)) = (map.as_object_mut(), marks.as_object()) {
                    for (k, v) in marks {
                        map.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        out.insert(p.name.clone(), p.obj.clone());
    }
    out
}

/// Creates the scratch namespaces (from [`scratch_namespaces`]) and binds
/// `cfg`'s ClusterRole in each to the drill's account.
pub async fn create(
    cluster: &Cluster,
    discovery: &Discovery,
    ns_type: &ResourceType,
    namespaces: &BTreeMap<String, Value>,
    cfg: &ScratchKubernetesConfig,
) -> Result<(), KubeDrillError> {
    for (name, obj) in namespaces {
        cluster
            .apply(ns_type, None, name, obj, false)
            .await
            .map_err(|e| KubeDrillError::Create {
                namespace: name.clone(),
                source: Box::new(e),
            })?;
        if let Some((sa_ns, sa_name)) = cfg.account() {
            let rb_type = discovery
                .find("rbac.authorization.k8s.io/v1", "RoleBinding")
                .ok_or(KubeDrillError::NoType("RoleBinding"))?;
            let binding = json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": MANAGED_BY_VALUE, "namespace": name,
                             "labels": {MANAGED_BY: MANAGED_BY_VALUE}},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": cfg.cluster_role()},
                "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": sa_ns}],
            });
            cluster
                .apply(rb_type, Some(name), MANAGED_BY_VALUE, &binding, false)
                .await
                .map_err(|e| KubeDrillError::Bind {
                    role: cfg.cluster_role().to_string(),
                    namespace: name.clone(),
                    source: Box::new(e),
                })?;
        }
    }
    Ok(())
}

/// Deletes the scratch namespaces (the cluster deletes what is in them).
pub async fn delete(
    cluster: &Cluster,
    ns_type: &ResourceType,
    names: &[String],
) -> Result<(), KubeDrillError> {
    let mut failed = Vec::new();
    for name in names {
        if let Err(e) = cluster.delete(ns_type, None, name).await {
            failed.push((name.clone(), e));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(KubeDrillError::Delete { failed })
    }
}

/// [`delete`] on an interrupted drill: a failure is logged (the next
/// drill deletes what is left).
pub async fn delete_logged(cluster: &Cluster, ns_type: &ResourceType, names: &[String]) {
    if let Err(e) = delete(cluster, ns_type, names).await {
        tracing::error!(error = %e, "cannot delete the scratch namespaces; the next drill deletes them");
    }
}

/// Deletes scratch namespaces whose drill is gone.
pub async fn sweep(cluster: &Cluster, ns_type: &ResourceType) -> Vec<Leftover> {
    let mut found: Vec<Value> = Vec::new();
    let selector = format!("{MANAGED_BY}={MANAGED_BY_VALUE}");
    let listed = cluster
        .list(ns_type, None, Some(&selector), |ns| {
            found.push(ns);
            Ok(())
        })
        .await;
    if let Err(e) = listed {
        tracing::warn!(error = %e, "cannot look for scratch namespaces of earlier drills");
        return Vec::new();
    }
    let host = crate::lock::hostname();
    let mut out = Vec::new();
    for ns in found {
        let meta = &ns["metadata"];
        let name = meta["name"].as_str().unwrap_or("").to_string();
        if name.is_empty() || ns["status"]["phase"] == "Terminating" {
            continue;
        }
        let owner: Option<Owner> = meta["annotations"][OWNER_ANNOTATION]
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok());
        let created = meta["creationTimestamp"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let old =
            created.is_some_and(|c| Utc::now() - c > chrono::Duration::hours(scratch::STALE_HOURS));
        let gone = match &owner {
            Some(o) if o.host == host => !scratch::alive(o.pid, o.process_start),
            _ => old,
        };
        if !gone {
            continue;
        }
        let outcome = match cluster.delete(ns_type, None, &name).await {
            Ok(()) => "removed".to_string(),
            Err(e) => format!("cannot remove: {e}"),
        };
        tracing::warn!(namespace = %name, %outcome, "scratch namespace left by an earlier drill");
        out.push(Leftover {
            path: format!("namespace/{name}").into(),
            drill: meta["labels"][DRILL_LABEL].as_str().map(str::to_string),
            outcome,
        });
    }
    out
}

/// How many objects of `kind` (a kind or its plural) are in `namespaces`.
pub async fn count_kind(
    cluster: &Cluster,
    discovery: &Discovery,
    kind: &str,
    namespaces: &[String],
) -> Result<usize, KubeDrillError> {
    let rt = discovery
        .preferred()
        .find(|t| t.matches(kind))
        .cloned()
        .ok_or_else(|| KubeDrillError::UnknownKind(kind.to_string()))?;
    if !rt.namespaced {
        return Err(KubeDrillError::ClusterScoped(rt.kind));
    }
    let mut n = 0usize;
    for ns in namespaces {
        cluster
            .list(&rt, Some(ns), None, |_| {
                n += 1;
                Ok(())
            })
            .await
            .map_err(|e| KubeDrillError::List {
                kind: rt.kind.clone(),
                namespace: ns.clone(),
                source: Box::new(e),
            })?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_namespace_names_are_dns_labels_from_the_drill_id() {
        let m = scratch_names(
            "20261204T051500Z-0c62",
            &["prod".to_string(), "monitoring".to_string()],
        );
        assert_eq!(m["prod"], "lifeboat-drill-20261204t051500z-0c62");
        assert_eq!(m["monitoring"], "lifeboat-drill-20261204t051500z-0c62-2");
        for name in m.values() {
            assert!(name.len() <= 63);
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        }
    }
}
