//! Resource types: the built-in types this server serves, with their verbs,
//! short names and subresources as discovery reports them, and the
//! group/version helpers.

use std::time::Duration;

pub(super) const CRD_GROUP: &str = "apiextensions.k8s.io";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
pub(super) const DEFAULT_MANAGER: &str = "kubectl-client-side-apply";
pub(super) const FORBIDDEN_USER: &str = "system:serviceaccount:backup:lifeboat";
/// How long a new CRD takes to become Established.
pub(super) const CRD_ESTABLISH_DELAY: Duration = Duration::from_millis(300);

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// The verbs the apiextensions-apiserver reports for custom resources.
pub(super) const CRD_VERBS: &[&str] = &[
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "create",
    "update",
    "watch",
];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

/// A resource type at one group/version, as discovery reports it.
#[derive(Clone, Debug)]
pub(super) struct ResourceType {
    /// "" for the core group.
    pub(super) group: String,
    pub(super) version: String,
    pub(super) plural: String,
    pub(super) singular: String,
    pub(super) kind: String,
    pub(super) namespaced: bool,
    pub(super) verbs: Vec<String>,
    pub(super) short_names: Vec<String>,
    pub(super) categories: Vec<String>,
    pub(super) subresources: Vec<SubResource>,
    /// Name of the CRD that registered this type (custom resources only).
    pub(super) crd: Option<String>,
}

#[derive(Clone, Debug)]
pub(super) struct SubResource {
    pub(super) name: String,
    pub(super) kind: String,
    /// Set when the subresource's kind lives in another group/version
    /// (e.g. `deployments/scale` is `autoscaling/v1` `Scale`).
    pub(super) group_version: Option<(String, String)>,
    pub(super) verbs: Vec<String>,
}

pub(super) fn to_strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn res(
    group: &str,
    version: &str,
    plural: &str,
    singular: &str,
    kind: &str,
    namespaced: bool,
) -> ResourceType {
    ResourceType {
        group: group.to_string(),
        version: version.to_string(),
        plural: plural.to_string(),
        singular: singular.to_string(),
        kind: kind.to_string(),
        namespaced,
        verbs: to_strings(ALL_VERBS),
        short_names: Vec::new(),
        categories: Vec::new(),
        subresources: Vec::new(),
        crd: None,
    }
}

impl ResourceType {
    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = to_strings(names);
        self
    }

    fn cats(mut self, categories: &[&str]) -> Self {
        self.categories = to_strings(categories);
        self
    }

    fn with_verbs(mut self, verbs: &[&str]) -> Self {
        self.verbs = to_strings(verbs);
        self
    }

    fn sub(mut self, name: &str, kind: &str, verbs: &[&str]) -> Self {
        self.subresources.push(SubResource {
            name: name.to_string(),
            kind: kind.to_string(),
            group_version: None,
            verbs: to_strings(verbs),
        });
        self
    }

    fn sub_in(
        mut self,
        name: &str,
        kind: &str,
        group: &str,
        version: &str,
        verbs: &[&str],
    ) -> Self {
        self.subresources.push(SubResource {
            name: name.to_string(),
            kind: kind.to_string(),
            group_version: Some((group.to_string(), version.to_string())),
            verbs: to_strings(verbs),
        });
        self
    }

    pub(super) fn status(self) -> Self {
        let kind = self.kind.clone();
        self.sub("status", &kind, STATUS_VERBS)
    }

    pub(super) fn scale(self) -> Self {
        self.sub_in("scale", "Scale", "autoscaling", "v1", STATUS_VERBS)
    }

    pub(super) fn has_status(&self) -> bool {
        self.subresources.iter().any(|s| s.name == "status")
    }

    /// Whether the server maintains `metadata.generation` for this type (the
    /// real one does for workloads, networking objects, CRDs and custom
    /// resources; not for Pods, Services, ConfigMaps, ...).
    pub(super) fn has_generation(&self) -> bool {
        self.crd.is_some()
            || matches!(
                self.group.as_str(),
                "apps" | "batch" | "networking.k8s.io" | "apiextensions.k8s.io" | "policy"
            )
    }

    /// "configmaps", "deployments.apps": how error messages name the resource.
    pub(super) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// "Service", "Deployment.apps": how Invalid messages name the kind.
    pub(super) fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

// Long: one declarative table of every built-in type; split, it would be
// harder to check against a real server's discovery.

/// The built-in types this server knows, with names, verbs, short names and
/// subresources as a Kubernetes 1.32 server reports them.
pub(super) fn builtin_types() -> Vec<ResourceType> {
    let proxy_verbs: &[&str] = &["create", "delete", "get", "patch", "update"];
    vec![
        // core/v1
        res("", "v1", "bindings", "binding", "Binding", true).with_verbs(&["create"]),
        res("", "v1", "configmaps", "configmap", "ConfigMap", true).short(&["cm"]),
        res("", "v1", "endpoints", "endpoints", "Endpoints", true).short(&["ep"]),
        res("", "v1", "events", "event", "Event", true).short(&["ev"]),
        res("", "v1", "namespaces", "namespace", "Namespace", false)
            .with_verbs(&[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ])
            .short(&["ns"])
            .sub("finalize", "Namespace", &["update"])
            .status(),
        res(
            "",
            "v1",
            "persistentvolumeclaims",
            "persistentvolumeclaim",
            "PersistentVolumeClaim",
            true,
        )
        .short(&["pvc"])
        .status(),
        res("", "v1", "pods", "pod", "Pod", true)
            .short(&["po"])
            .cats(&["all"])
            .sub("attach", "PodAttachOptions", &["create", "get"])
            .sub_in("eviction", "Eviction", "policy", "v1", &["create"])
            .sub("exec", "PodExecOptions", &["create", "get"])
            .sub("log", "Pod", &["get"])
            .sub("portforward", "PodPortForwardOptions", &["create", "get"])
            .sub("proxy", "PodProxyOptions", proxy_verbs)
            .status(),
        res("", "v1", "limitranges", "limitrange", "LimitRange", true).short(&["limits"]),
        res(
            "",
            "v1",
            "resourcequotas",
            "resourcequota",
            "ResourceQuota",
            true,
        )
        .short(&["quota"])
        .status(),
        res("", "v1", "secrets", "secret", "Secret", true),
        res(
            "",
            "v1",
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            true,
        )
        .short(&["sa"])
        .sub_in(
            "token",
            "TokenRequest",
            "authentication.k8s.io",
            "v1",
            &["create"],
        ),
        res("", "v1", "services", "service", "Service", true)
            .short(&["svc"])
            .cats(&["all"])
            .sub("proxy", "ServiceProxyOptions", proxy_verbs)
            .status(),
        // apps/v1
        res(
            "apps",
            "v1",
            "controllerrevisions",
            "controllerrevision",
            "ControllerRevision",
            true,
        ),
        res("apps", "v1", "daemonsets", "daemonset", "DaemonSet", true)
            .short(&["ds"])
            .cats(&["all"])
            .status(),
        res(
            "apps",
            "v1",
            "deployments",
            "deployment",
            "Deployment",
            true,
        )
        .short(&["deploy"])
        .cats(&["all"])
        .scale()
        .status(),
        res(
            "apps",
            "v1",
            "replicasets",
            "replicaset",
            "ReplicaSet",
            true,
        )
        .short(&["rs"])
        .cats(&["all"])
        .scale()
        .status(),
        res(
            "apps",
            "v1",
            "statefulsets",
            "statefulset",
            "StatefulSet",
            true,
        )
        .short(&["sts"])
        .cats(&["all"])
        .scale()
        .status(),
        // batch/v1
        res("batch", "v1", "cronjobs", "cronjob", "CronJob", true)
            .short(&["cj"])
            .cats(&["all"])
            .status(),
        res("batch", "v1", "jobs", "job", "Job", true)
            .cats(&["all"])
            .status(),
        // rbac.authorization.k8s.io/v1
        res(
            RBAC_GROUP,
            "v1",
            "clusterrolebindings",
            "clusterrolebinding",
            "ClusterRoleBinding",
            false,
        ),
        res(
            RBAC_GROUP,
            "v1",
            "clusterroles",
            "clusterrole",
            "ClusterRole",
            false,
        ),
        res(
            RBAC_GROUP,
            "v1",
            "rolebindings",
            "rolebinding",
            "RoleBinding",
            true,
        ),
        res(RBAC_GROUP, "v1", "roles", "role", "Role", true),
        // admissionregistration.k8s.io/v1
        res(
            "admissionregistration.k8s.io",
            "v1",
            "validatingadmissionpolicies",
            "validatingadmissionpolicy",
            "ValidatingAdmissionPolicy",
            false,
        )
        .status(),
        res(
            "admissionregistration.k8s.io",
            "v1",
            "validatingadmissionpolicybindings",
            "validatingadmissionpolicybinding",
            "ValidatingAdmissionPolicyBinding",
            false,
        ),
        // networking.k8s.io/v1
        res(
            "networking.k8s.io",
            "v1",
            "ingresses",
            "ingress",
            "Ingress",
            true,
        )
        .short(&["ing"])
        .status(),
        res(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "networkpolicy",
            "NetworkPolicy",
            true,
        )
        .short(&["netpol"]),
        // discovery, coordination, events
        res(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "endpointslice",
            "EndpointSlice",
            true,
        ),
        res(
            "coordination.k8s.io",
            "v1",
            "leases",
            "lease",
            "Lease",
            true,
        ),
        res("events.k8s.io", "v1", "events", "event", "Event", true).short(&["ev"]),
        // autoscaling/v2
        res(
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            "horizontalpodautoscaler",
            "HorizontalPodAutoscaler",
            true,
        )
        .short(&["hpa"])
        .cats(&["all"])
        .status(),
        // policy/v1
        res(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "poddisruptionbudget",
            "PodDisruptionBudget",
            true,
        )
        .short(&["pdb"])
        .status(),
        // apiextensions.k8s.io/v1
        res(
            CRD_GROUP,
            "v1",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            false,
        )
        .short(&["crd", "crds"])
        .cats(&["api-extensions"])
        .status(),
        // storage.k8s.io/v1
        res(
            "storage.k8s.io",
            "v1",
            "storageclasses",
            "storageclass",
            "StorageClass",
            false,
        )
        .short(&["sc"]),
    ]
}

pub(super) fn gv(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

pub(super) fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}
