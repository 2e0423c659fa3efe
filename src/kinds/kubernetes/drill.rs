//! Kubernetes drills: an export applied into scratch namespaces.

use std::collections::BTreeMap;

use super::scratch;
use crate::drill::report;
use crate::drill::{interruptible, judge, skip_user_checks, Checks, Drill, DrillError, Restored};
use crate::kinds::kubernetes::restore as kr;
use crate::kube::{Cluster, ConnectOptions, Discovery, ResourceType};

impl Drill<'_> {
    /// A Kubernetes export: restored into scratch namespaces with the
    /// harmless-copy rules, every applied object read back, the policy's
    /// kind counts checked, the namespaces deleted. Also returns the
    /// scratch namespaces of earlier, killed drills it deleted.
    pub(crate) async fn kubernetes(
        &self,
        k: &crate::kinds::kubernetes::config::KubernetesSource,
        checks: &mut Checks,
    ) -> Result<Restored, DrillError> {
        let manifest = self.manifest;
        let skip_rest = |checks: &mut Checks, from: usize, why: &str| {
            for n in &["restore", "objects"][from..] {
                checks.skip(*n, why);
            }
            skip_user_checks(self.user_checks, checks, why);
        };
        let connected = interruptible(&self.opts.cancel, connect(k)).await?;
        let (cluster, discovery, ns_type) = match connected {
            Ok(c) => c,
            Err(e) => {
                checks.add("scratch target", false, e);
                skip_rest(checks, 0, "no scratch namespace");
                return Ok(Restored::nothing("none (the cluster cannot be reached)"));
            }
        };
        let leftovers =
            interruptible(&self.opts.cancel, scratch::sweep(&cluster, &ns_type)).await?;
        // The export is read and verified whole before anything is applied.
        let objects = match self.load_export().await? {
            Ok(o) => o,
            Err(e) => {
                checks.add(
                    "scratch target",
                    false,
                    format!("not created: the export cannot be read: {e}"),
                );
                skip_rest(checks, 0, "the export cannot be read");
                let mut r = Restored::nothing("none (the export cannot be read)");
                r.leftovers = leftovers;
                return Ok(r);
            }
        };
        let mapping = scratch_mapping(self.id, &objects);
        let names: Vec<String> = mapping.values().cloned().collect();
        let mut restored = Restored::nothing(describe_target(&mapping, &cluster));
        restored.leftovers = leftovers;
        // From here on the namespaces are deleted on every path, an
        // interruption included.
        let body = self.restore_into_scratch(&cluster, &discovery, &ns_type, &mapping, objects);
        let outcome = interruptible(&self.opts.cancel, body).await;
        let report = match outcome {
            Err(interrupted) => {
                scratch::delete_logged(&cluster, &ns_type, &names).await;
                return Err(interrupted);
            }
            Ok(Err(("interrupted", _))) => {
                scratch::delete_logged(&cluster, &ns_type, &names).await;
                return Err(DrillError::Interrupted);
            }
            Ok(Err((step, e))) => {
                if step == "scratch target" {
                    checks.add("scratch target", false, e);
                    skip_rest(checks, 0, "no scratch namespace");
                } else {
                    checks.add("scratch target", true, restored.target.clone());
                    checks.add("restore", false, e);
                    skip_rest(checks, 1, "the restore failed");
                }
                self.delete_namespaces(&cluster, &ns_type, &names, checks)
                    .await;
                return Ok(restored);
            }
            Ok(Ok(report)) => report,
        };
        checks.add("scratch target", true, restored.target.clone());
        let applied = restore_check(&report, checks);
        // Every object applied is there, read back from the server.
        let read_back =
            interruptible(&self.opts.cancel, read_back(&cluster, &discovery, &report)).await;
        let (kinds, missing) = match read_back {
            Ok(r) => r,
            Err(interrupted) => {
                scratch::delete_logged(&cluster, &ns_type, &names).await;
                return Err(interrupted);
            }
        };
        let all_there = objects_check(&kinds, &missing, checks);
        if applied && all_there {
            // An export is a listing as of its start.
            restored.usable(self.clock, manifest.started_at);
        }
        self.kubernetes_user_checks(&cluster, &discovery, &ns_type, &names, checks)
            .await?;
        self.delete_namespaces(&cluster, &ns_type, &names, checks)
            .await;
        Ok(restored)
    }

    /// Reads and verifies the whole export on a blocking thread; the
    /// outer error is an interruption, the inner one an unreadable export.
    async fn load_export(
        &self,
    ) -> Result<Result<Vec<kr::Exported>, kr::KubeRestoreError>, DrillError> {
        let (repo, m, ids) = (
            self.repo.clone(),
            self.manifest.clone(),
            self.opts.identities.clone(),
        );
        match scratch::on_blocking_thread(&self.opts.cancel, move || async move {
            kr::load(&repo, &m, ids).await
        })
        .await
        {
            Ok(loaded) => loaded.ok_or(DrillError::Interrupted),
            // Nothing made yet: a bug, reported as one.
            Err(panic) => panic!("reading the export panicked: {panic}"),
        }
    }

    /// Creates the scratch namespaces and applies the export into them.
    /// An error names the step that failed ("scratch target", "restore"
    /// or "interrupted") with its detail.
    async fn restore_into_scratch(
        &self,
        cluster: &Cluster,
        discovery: &Discovery,
        ns_type: &ResourceType,
        mapping: &BTreeMap<String, String>,
        objects: Vec<kr::Exported>,
    ) -> Result<kr::Report, (&'static str, String)> {
        let manifest = self.manifest;
        // The scratch namespaces were just made: into_existing. They
        // get the backup's labels and annotations (what a copy keeps),
        // so that admission rules keyed on them apply as in production.
        let opts = kr::Options {
            namespace_map: mapping.clone(),
            into_existing: true,
            ..Default::default()
        };
        let mut plan =
            kr::plan(manifest, objects, &opts).map_err(|e| ("restore", e.to_string()))?;
        let scratch = scratch::scratch_namespaces(&mut plan, self.id);
        scratch::create(
            cluster,
            discovery,
            ns_type,
            &scratch,
            &self.policy.drill.kubernetes,
        )
        .await
        .map_err(|e| ("scratch target", e.to_string()))?;
        let (c, id) = (cluster.clone(), manifest.id.clone());
        let report = scratch::on_blocking_thread(&self.opts.cancel, move || async move {
            kr::execute(&c, plan, &opts, false, &id).await
        })
        .await
        .map_err(|panic| {
            (
                "restore",
                format!("the restore panicked (a bug; please report it): {panic}"),
            )
        })?
        .ok_or(("interrupted", String::new()))?
        .map_err(|e| ("restore", e.to_string()))?;
        Ok(report)
    }

    /// The policy's checks: each counts objects of a kind in the scratch
    /// namespaces. On an interruption the namespaces are deleted first.
    async fn kubernetes_user_checks(
        &self,
        cluster: &Cluster,
        discovery: &Discovery,
        ns_type: &ResourceType,
        names: &[String],
        checks: &mut Checks,
    ) -> Result<(), DrillError> {
        for c in self.user_checks {
            let name = format!("check: {}", c.name);
            let kind = c.kind.as_deref().unwrap_or("");
            let counted = interruptible(
                &self.opts.cancel,
                scratch::count_kind(cluster, discovery, kind, names),
            )
            .await;
            let counted = match counted {
                Ok(r) => r,
                Err(interrupted) => {
                    scratch::delete_logged(cluster, ns_type, names).await;
                    return Err(interrupted);
                }
            };
            let (passed, detail) = match counted {
                Ok(n) => judge(c, Some(Some(n.to_string()))),
                Err(e) => (false, e.to_string()),
            };
            checks.add(name, passed, format!("{kind}: {detail}"));
        }
        Ok(())
    }

    pub(crate) async fn delete_namespaces(
        &self,
        cluster: &crate::kube::Cluster,
        ns_type: &crate::kube::ResourceType,
        names: &[String],
        checks: &mut Checks,
    ) {
        let deleted = scratch::delete(cluster, ns_type, names).await;
        checks.add(
            "scratch removed",
            deleted.is_ok(),
            match deleted {
                Ok(()) => format!(
                    "namespaces {} deleted (the cluster removes what is in them)",
                    names.join(", ")
                ),
                Err(e) => format!(
                    "{e}; delete them by hand (`kubectl delete namespace -l {}={}`)",
                    scratch::MANAGED_BY,
                    scratch::MANAGED_BY_VALUE
                ),
            },
        );
    }
}

/// The scratch namespace of each namespace the export's objects live in.
fn scratch_mapping(id: &str, objects: &[kr::Exported]) -> BTreeMap<String, String> {
    let sources: Vec<String> = objects
        .iter()
        .filter_map(|e| kr::home_namespace(&e.obj).map(str::to_string))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    scratch::scratch_names(id, &sources)
}

/// The drill's target: each scratch namespace with the namespace it
/// stands for, on which cluster.
fn describe_target(mapping: &BTreeMap<String, String>, cluster: &Cluster) -> String {
    format!(
        "scratch namespaces {} on {} (context {})",
        mapping
            .iter()
            .map(|(from, to)| format!("{to} (from {from})"))
            .collect::<Vec<_>>()
            .join(", "),
        cluster.server,
        cluster.context
    )
}

/// Connects to the source's cluster and discovers its types, the
/// Namespace type among them.
async fn connect(
    k: &crate::kinds::kubernetes::config::KubernetesSource,
) -> Result<(Cluster, Discovery, ResourceType), String> {
    let cluster = Cluster::connect(&ConnectOptions::from_source(k))
        .await
        .map_err(|e| e.to_string())?;
    let discovery = cluster.discover().await.map_err(|e| e.to_string())?;
    let ns_type = scratch::namespace_type(&discovery).map_err(|e| e.to_string())?;
    Ok((cluster, discovery, ns_type))
}

/// The "restore" check from the restore's report; true when no object
/// failed.
fn restore_check(report: &kr::Report, checks: &mut Checks) -> bool {
    let count = |o: kr::Outcome| report.count(o);
    let failed: Vec<String> = report
        .objects
        .iter()
        .filter(|o| o.outcome == kr::Outcome::Failed)
        .take(5)
        .map(|o| {
            format!(
                "{} {}/{}: {}",
                o.kind,
                o.namespace.as_deref().unwrap_or("-"),
                o.name,
                o.detail
            )
        })
        .collect();
    checks.add(
        "restore",
        failed.is_empty(),
        if failed.is_empty() {
            format!(
                "{} objects created, {} updated, {} unchanged, {} skipped ({}), {} not selected (cluster-scoped) in {}",
                count(kr::Outcome::Created),
                count(kr::Outcome::Updated),
                count(kr::Outcome::Unchanged),
                count(kr::Outcome::Skipped),
                kr::describe_skips(&report.skipped_by_reason()),
                report.not_selected,
                report::human_seconds(report.seconds)
            )
        } else {
            format!("{} objects failed: {}", count(kr::Outcome::Failed), failed.join("; "))
        },
    );
    failed.is_empty()
}

/// Reads every applied object back from the server: the objects found,
/// counted per kind, and those missing.
async fn read_back(
    cluster: &Cluster,
    discovery: &Discovery,
    report: &kr::Report,
) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut missing = Vec::new();
    for o in &report.objects {
        if !matches!(
            o.outcome,
            kr::Outcome::Created | kr::Outcome::Updated | kr::Outcome::Unchanged
        ) {
            continue;
        }
        let Some(rt) = discovery.find(&o.api_version, &o.kind) else {
            missing.push(format!(
                "{} {} (type unknown to the server)",
                o.kind, o.name
            ));
            continue;
        };
        match cluster.get(rt, o.namespace.as_deref(), &o.name).await {
            Ok(Some(_)) => *kinds.entry(o.kind.clone()).or_default() += 1,
            Ok(None) => missing.push(format!(
                "{} {}/{}",
                o.kind,
                o.namespace.as_deref().unwrap_or("-"),
                o.name
            )),
            Err(e) => missing.push(format!("{} {}: {e}", o.kind, o.name)),
        }
    }
    (kinds, missing)
}

/// The "objects" check from the read-back; true when none is missing.
fn objects_check(kinds: &BTreeMap<String, usize>, missing: &[String], checks: &mut Checks) -> bool {
    let total: usize = kinds.values().sum();
    checks.add(
        "objects",
        missing.is_empty(),
        if missing.is_empty() {
            format!(
                "{total} objects read back: {}",
                kinds
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!(
                "{} missing after the restore: {}",
                missing.len(),
                missing.join("; ")
            )
        },
    );
    missing.is_empty()
}
