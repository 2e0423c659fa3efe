//! Applying a plan to a cluster: stage by stage, each object with
//! server-side apply unless it exists (left alone, or replaced with
//! `--overwrite`), CRDs waited for until established.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::{
    contained, target, KubeRestoreError, ObjectResult, Options, Outcome, Plan, Planned, Report,
    SkipReason, Stage,
};
use crate::kube::{object_name, Cluster, Discovery, KubeError, ResourceType};

/// How many objects are applied at once within a stage.
const PARALLEL: usize = 16;
/// How long a restored CRD may take to become established.
const CRD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Applies the plan, stage by stage. A permission or connection problem
/// that affects everything stops the restore; an object the server
/// rejects is reported and the rest go on.
pub async fn execute(
    cluster: &Cluster,
    plan: Plan,
    opts: &Options,
    dry_run: bool,
    backup: &str,
) -> Result<Report, KubeRestoreError> {
    let started = std::time::Instant::now();
    let mut discovery = cluster.discover().await?;
    let mut plan = plan;
    target::check(cluster, &discovery, &mut plan, opts, backup).await?;
    let mut results: Vec<ObjectResult> = Vec::with_capacity(plan.objects.len());
    let total = plan.objects.len();
    // The types the plan's own CRDs define (for a dry run, which does not
    // create them).
    let planned_types: BTreeSet<(String, String)> = plan
        .objects
        .iter()
        .filter(|p| p.stage == Stage::CustomResourceDefinitions && p.skip.is_none())
        .flat_map(|p| crd_types(&p.obj))
        .collect();
    let planned_ref = &planned_types;
    let mut stages: BTreeMap<Stage, Vec<Planned>> = BTreeMap::new();
    for p in plan.objects {
        stages.entry(p.stage).or_default().push(p);
    }
    for (stage, objects) in stages {
        use futures::StreamExt;
        let discovery_ref = &discovery;
        let existing = list_existing(cluster, &discovery, &objects).await?;
        let existing_ref = &existing;
        let mut done: Vec<(usize, ObjectResult)> =
            futures::stream::iter(objects.iter().enumerate())
                .map(|(i, p)| async move {
                    let known = existing_ref.get(&(
                        p.api_version.clone(),
                        p.kind.clone(),
                        p.namespace.clone(),
                    ));
                    (
                        i,
                        apply_one(cluster, discovery_ref, p, known, planned_ref, opts, dry_run)
                            .await,
                    )
                })
                .buffer_unordered(PARALLEL)
                .map(|(i, r)| r.map(|r| (i, r)))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()?;
        done.sort_by_key(|(i, _)| *i);
        let mut stage_results: Vec<ObjectResult> = done.into_iter().map(|(_, r)| r).collect();
        if stage == Stage::CustomResourceDefinitions && !dry_run {
            wait_established(cluster, &discovery, &mut stage_results).await?;
            // The new types are served now: look again.
            discovery = cluster.discover().await?;
        }
        let failed = stage_results
            .iter()
            .filter(|r| r.outcome == Outcome::Failed)
            .count();
        tracing::info!(stage = ?stage, objects = stage_results.len(), failed, done = results.len() + stage_results.len(), total, "stage restored");
        results.extend(stage_results);
    }
    Ok(Report {
        backup: backup.to_string(),
        server: cluster.server.clone(),
        dry_run,
        objects: results,
        not_selected: plan.not_selected,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// (apiVersion, kind) of every version a CRD serves.
fn crd_types(crd: &Value) -> Vec<(String, String)> {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = crd
        .pointer("/spec/names/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|versions| {
            versions
                .iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .map(|v| (format!("{group}/{v}"), kind.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The objects that exist on the target, per type and namespace
/// of a stage: one list per collection instead of one GET per object.
type Existing = HashMap<(String, String, Option<String>), HashMap<String, Value>>;

/// Lists the target's collections a stage writes to. A collection that
/// cannot be listed (the identity may get but not list) is left out:
/// its objects are looked up one by one.
async fn list_existing(
    cluster: &Cluster,
    discovery: &Discovery,
    objects: &[Planned],
) -> Result<Existing, KubeRestoreError> {
    let mut out = Existing::new();
    let mut collections: BTreeSet<(String, String, Option<String>)> = BTreeSet::new();
    for p in objects.iter().filter(|p| p.skip.is_none()) {
        collections.insert((p.api_version.clone(), p.kind.clone(), p.namespace.clone()));
    }
    for (api_version, kind, namespace) in collections {
        let Some(rt) = discovery.find(&api_version, &kind) else {
            continue;
        };
        if !rt.supports("list") {
            continue;
        }
        let ns = if rt.namespaced {
            namespace.as_deref()
        } else {
            None
        };
        let mut found = HashMap::new();
        let listed = cluster
            .list(rt, ns, None, |obj| {
                found.insert(object_name(&obj).to_string(), obj);
                Ok(())
            })
            .await;
        match listed {
            Ok(()) => {
                out.insert((api_version, kind, namespace), found);
            }
            Err(e @ (KubeError::Unreachable { .. } | KubeError::Unauthorized { .. })) => {
                return Err(e.into())
            }
            Err(e) => {
                tracing::debug!(resource = %rt.group_resource(), error = %e, "cannot list; looking objects up one by one");
            }
        }
    }
    Ok(out)
}

async fn apply_one(
    cluster: &Cluster,
    discovery: &Discovery,
    p: &Planned,
    known: Option<&HashMap<String, Value>>,
    planned_types: &BTreeSet<(String, String)>,
    opts: &Options,
    dry_run: bool,
) -> Result<ObjectResult, KubeRestoreError> {
    let mut result = ObjectResult {
        namespace: p.namespace.clone(),
        api_version: p.api_version.clone(),
        kind: p.kind.clone(),
        name: p.name.clone(),
        outcome: Outcome::Skipped,
        reason: None,
        detail: p.changes.join("; "),
    };
    if let Some(skip) = &p.skip {
        result.reason = Some(skip.reason);
        result.detail = skip.detail.clone();
        return Ok(result);
    }
    let Some(rt) = discovery.find(&p.api_version, &p.kind) else {
        if dry_run && planned_types.contains(&(p.api_version.clone(), p.kind.clone())) {
            result.outcome = Outcome::WouldCreate;
            result.detail = "its CustomResourceDefinition is restored first".into();
            return Ok(result);
        }
        result.outcome = Outcome::Failed;
        result.detail = format!(
            "the server has no resource type {} {}: install its CustomResourceDefinition first (restoring the backup's CRDs needs --cluster-resources when restoring part of it)",
            p.api_version, p.kind
        );
        return Ok(result);
    };
    let outcome = reconcile(cluster, rt, p, known, opts, dry_run, &mut result.detail).await;
    match outcome {
        Ok((o, skip)) => {
            result.outcome = o;
            if let Some((reason, detail)) = skip {
                result.reason = Some(reason);
                result.detail = detail;
            }
        }
        // Everything else would fail the same way: stop.
        Err(e @ (KubeError::Unreachable { .. } | KubeError::Unauthorized { .. })) => {
            return Err(e.into())
        }
        Err(KubeError::Api { code, message, .. }) => {
            result.outcome = Outcome::Failed;
            result.detail = format!("{code}: {message}");
        }
        Err(e) => {
            result.outcome = Outcome::Failed;
            result.detail = e.to_string();
        }
    }
    Ok(result)
}

/// What the target holds of `p` decides what happens to it: left alone
/// when it holds the same, skipped or replaced when it differs, created
/// when it is missing. `detail` notes an object the cluster made itself.
async fn reconcile(
    cluster: &Cluster,
    rt: &ResourceType,
    p: &Planned,
    known: Option<&HashMap<String, Value>>,
    opts: &Options,
    dry_run: bool,
    detail: &mut String,
) -> Result<(Outcome, Option<(SkipReason, String)>), KubeError> {
    let namespace = if rt.namespaced {
        p.namespace.as_deref()
    } else {
        None
    };
    let existing = match known {
        Some(objects) => objects.get(&p.name).cloned(),
        None => cluster.get(rt, namespace, &p.name).await?,
    };
    // The cluster makes every namespace's `default` ServiceAccount
    // itself, before the restore gets to it: what the backup adds to it
    // (image pull secrets) is applied on top.
    let server_made = p.api_version == "v1" && p.kind == "ServiceAccount" && p.name == "default";
    // A copy into other namespaces shares cluster-scoped objects with
    // the original and never replaces them.
    let shared = p.namespace.is_none() && !opts.namespace_map.is_empty();
    Ok(match existing {
        Some(have) if contained(&p.obj, &have) => (Outcome::Unchanged, None),
        Some(_) if shared => (
            Outcome::Skipped,
            Some((SkipReason::SharedClusterScoped, "cluster-scoped, exists and differs; a restore into mapped namespaces leaves it alone".to_string())),
        ),
        Some(_) if !opts.overwrite && !server_made => (
            Outcome::Skipped,
            Some((SkipReason::ExistsAndDiffers, "exists and differs; left alone (--overwrite replaces it)".to_string())),
        ),
        Some(_) if dry_run => (Outcome::WouldUpdate, None),
        Some(_) => {
            let applied = cluster.apply(rt, namespace, &p.name, &p.obj, true).await?;
            if !server_made {
                // Apply sets the backup's fields but keeps keys other
                // managers own: remove the data keys the backup lacks.
                remove_extra_keys(cluster, rt, namespace, &p.name, &p.obj, &applied).await?;
            }
            if server_made {
                *detail = "made by the cluster; the backup's fields applied on top".into();
            }
            (Outcome::Updated, None)
        }
        None if dry_run => (Outcome::WouldCreate, None),
        None => {
            cluster.apply(rt, namespace, &p.name, &p.obj, true).await?;
            (Outcome::Created, None)
        }
    })
}

/// After an overwrite: data keys of a ConfigMap or Secret that are not in
/// the backup are removed (JSON merge patch with nulls).
async fn remove_extra_keys(
    cluster: &Cluster,
    rt: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    want: &Value,
    applied: &Value,
) -> Result<(), KubeError> {
    let mut patch = serde_json::Map::new();
    for field in ["data", "binaryData", "stringData"] {
        let Some(have) = applied.get(field).and_then(Value::as_object) else {
            continue;
        };
        let keep = want.get(field).and_then(Value::as_object);
        let extra: serde_json::Map<String, Value> = have
            .keys()
            .filter(|k| !keep.is_some_and(|m| m.contains_key(*k)))
            .map(|k| (k.clone(), Value::Null))
            .collect();
        if !extra.is_empty() {
            patch.insert(field.to_string(), Value::Object(extra));
        }
    }
    if patch.is_empty() {
        return Ok(());
    }
    cluster
        .merge_patch(rt, namespace, name, &Value::Object(patch))
        .await
        .map(|_| ())
}

/// Waits until every CRD just applied reports `Established`; one that
/// does not in time is marked failed.
async fn wait_established(
    cluster: &Cluster,
    discovery: &Discovery,
    results: &mut [ObjectResult],
) -> Result<(), KubeRestoreError> {
    let Some(rt) = discovery.find("apiextensions.k8s.io/v1", "CustomResourceDefinition") else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + CRD_TIMEOUT;
    for r in results.iter_mut() {
        if !matches!(r.outcome, Outcome::Created | Outcome::Updated) {
            continue;
        }
        loop {
            let crd = cluster.get(rt, None, &r.name).await?;
            let established = crd
                .as_ref()
                .and_then(|c| c.pointer("/status/conditions"))
                .and_then(Value::as_array)
                .is_some_and(|conds| {
                    conds.iter().any(|c| {
                        c.get("type").and_then(Value::as_str) == Some("Established")
                            && c.get("status").and_then(Value::as_str) == Some("True")
                    })
                });
            if established {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                r.outcome = Outcome::Failed;
                r.detail = format!(
                    "not established after {} s; its custom resources cannot be restored",
                    CRD_TIMEOUT.as_secs()
                );
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
