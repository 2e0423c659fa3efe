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
//! What is dropped, and why, is in [`clean`]; FORMAT.md §12 documents the
//! layout.

pub mod yaml;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::policy::{KubernetesSource, Namespaces};

/// Errors talking to a Kubernetes API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot load the Kubernetes client configuration ({what}): {detail}. Pass a kubeconfig (policy `kubeconfig:` or --kubeconfig) or run inside a Pod with a service account")]
    Config { what: String, detail: String },
    #[error("cannot reach the Kubernetes API server at {server}: {detail}. Check the kubeconfig's server address and that the cluster is up")]
    Unreachable { server: String, detail: String },
    #[error("the Kubernetes API server at {server} rejected the credentials (401 Unauthorized) while trying to {action}: the token or certificate in the kubeconfig (context {context}) is wrong or expired")]
    Unauthorized {
        server: String,
        context: String,
        action: String,
    },
    #[error("the Kubernetes API server at {} refused to {} {} {} (403 Forbidden: {}). Grant the identity lifeboat runs as: apiGroups: [\"{}\"], resources: [\"{}\"], verbs: [\"{}\"]{}", .0.server, .0.verb, .0.resource, .0.scope, .0.message, .0.group, .0.resource, .0.verb, .0.hint)]
    Forbidden(Box<Denied>),
    #[error("the Kubernetes API server at {server} answered {code} to {action}: {message}")]
    Api {
        server: String,
        action: String,
        code: u16,
        message: String,
    },
    #[error("namespace '{namespace}' named in the policy does not exist on {server}; fix `namespaces:` in the policy or create it")]
    NoSuchNamespace { namespace: String, server: String },
    #[error("the policy selects no namespaces on {server} ({what}); check `namespaces:`, `namespace_selector:` and `exclude_namespaces:`")]
    NoNamespaces { server: String, what: String },
    #[error("cannot read the answer of {server} to {action}: {detail}")]
    BadResponse {
        server: String,
        action: String,
        detail: String,
    },
    #[error("the export stream stopped before all objects were written (the upload failed; see the error above)")]
    SinkClosed,
    #[error("{server} cannot list the resources of {detail}; objects of that group would be missing from the backup. Repair the API service (kubectl get apiservices), or if the group holds no configuration leave it out with `exclude_resources: [\"*.{group}\"]` in the policy")]
    GroupUnavailable {
        server: String,
        group: String,
        detail: String,
    },
    #[error("cannot get credentials for {server} (context {context}): {detail}. Check the kubeconfig's user entry (token, client certificate, or exec plugin)")]
    Credentials {
        server: String,
        context: String,
        detail: String,
    },
}

impl crate::outcome::Classify for KubeError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Config { .. }
            | Self::Unreachable { .. }
            | Self::Unauthorized { .. }
            | Self::Forbidden(_)
            | Self::Api { .. }
            | Self::NoSuchNamespace { .. }
            | Self::NoNamespaces { .. }
            | Self::BadResponse { .. }
            | Self::SinkClosed
            | Self::GroupUnavailable { .. }
            | Self::Credentials { .. } => Outcome::Failure,
        }
    }
}

impl KubeError {
    /// True for 401 and 403: a permission problem, not a transient one.
    pub fn is_permission(&self) -> bool {
        matches!(
            self,
            KubeError::Unauthorized { .. } | KubeError::Forbidden(_)
        )
    }
}

/// A request the server refused (403), and what to grant.
#[derive(Debug)]
pub struct Denied {
    pub server: String,
    pub verb: String,
    pub resource: String,
    pub group: String,
    pub scope: String,
    pub message: String,
    pub hint: String,
}

/// Where to connect: overrides of the policy's kubeconfig and context.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

impl ConnectOptions {
    pub fn from_source(src: &KubernetesSource) -> Self {
        ConnectOptions {
            kubeconfig: src.kubeconfig.clone(),
            context: src.context.clone(),
        }
    }
}

/// One API resource type, as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceType {
    /// API group, empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The plural resource name used in URLs (`deployments`).
    pub plural: String,
    #[serde(default)]
    pub singular: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    #[serde(default)]
    pub short_names: Vec<String>,
    /// The version of its group that the server prefers for this resource
    /// (the others are alternative views of the same objects).
    #[serde(default)]
    pub preferred: bool,
}

impl ResourceType {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The collection's URL path, in a namespace or cluster-wide.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{base}/namespaces/{ns}/{}", self.plural),
            _ => format!("{base}/{}", self.plural),
        }
    }

    /// `deployments.apps`, or `configmaps` for the core group.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// Whether a name from a policy or the command line means this type:
    /// the kind, plural, singular or a short name (any case), optionally
    /// qualified with the group (`certificates.cert-manager.io`).
    pub fn matches(&self, spec: &str) -> bool {
        let spec = spec.trim().to_ascii_lowercase();
        let (name, group) = match spec.split_once('.') {
            Some((n, g)) => (n.to_string(), Some(g.to_string())),
            None => (spec.clone(), None),
        };
        if let Some(g) = group {
            if g != self.group.to_ascii_lowercase() {
                return false;
            }
        }
        name == self.kind.to_ascii_lowercase()
            || name == self.plural
            || (!self.singular.is_empty() && name == self.singular)
            || self.short_names.contains(&name)
    }
}

/// What the server offers.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Every served resource type in every version (subresources excluded).
    pub types: Vec<ResourceType>,
    /// Group versions whose resource list could not be read (an aggregated
    /// API that is down, say): (group, "group/version: reason").
    pub unavailable: Vec<(String, String)>,
}

impl Discovery {
    /// The type serving `kind` in `api_version`.
    pub fn find(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.kind == kind && t.api_version() == api_version)
    }

    /// One entry per resource: the server's preferred version of each.
    pub fn preferred(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.iter().filter(|t| t.preferred)
    }
}

/// A connection to one cluster's API server.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    /// The API server's URL, for messages.
    pub server: String,
    /// The kubeconfig context used (`in-cluster` inside a Pod).
    pub context: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("context", &self.context)
            .finish()
    }
}

const PAGE_SIZE: u32 = 500;
const FIELD_MANAGER: &str = "lifeboat";

impl Cluster {
    /// Loads the client configuration: an explicit kubeconfig (and
    /// context), or the usual inference (KUBECONFIG, ~/.kube/config, then
    /// the in-cluster service account).
    pub async fn connect(opts: &ConnectOptions) -> Result<Cluster, KubeError> {
        use kube::config::{KubeConfigOptions, Kubeconfig};
        let kopts = KubeConfigOptions {
            context: opts.context.clone(),
            ..Default::default()
        };
        let config_err = |what: String, e: &dyn std::error::Error| KubeError::Config {
            what,
            detail: error_chain(e),
        };
        let (config, context) = match &opts.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path)
                    .map_err(|e| config_err(format!("kubeconfig {}", path.display()), &e))?;
                let context = opts
                    .context
                    .clone()
                    .or_else(|| kc.current_context.clone())
                    .unwrap_or_default();
                let config = kube::Config::from_custom_kubeconfig(kc, &kopts)
                    .await
                    .map_err(|e| {
                        config_err(
                            format!("kubeconfig {} context '{context}'", path.display()),
                            &e,
                        )
                    })?;
                (config, context)
            }
            None if opts.context.is_some() => {
                let context = opts.context.clone().unwrap_or_default();
                let config = kube::Config::from_kubeconfig(&kopts)
                    .await
                    .map_err(|e| config_err(format!("context '{context}'"), &e))?;
                (config, context)
            }
            None => {
                let config = kube::Config::infer().await.map_err(|e| {
                    config_err("KUBECONFIG, ~/.kube/config or in-cluster".into(), &e)
                })?;
                let context = if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
                    && std::env::var_os("KUBECONFIG").is_none()
                {
                    "in-cluster".to_string()
                } else {
                    "current".to_string()
                };
                (config, context)
            }
        };
        let mut config = config;
        // No watches here: every call is a request and its answer, so an
        // API server that stops answering is given up on after a minute
        // without a byte (kube's default of 295 s is sized for watches).
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(60));
        config.write_timeout = Some(Duration::from_secs(60));
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let client = kube::Client::try_from(config).map_err(|e| KubeError::Config {
            what: format!("client for {server}"),
            detail: error_chain(&e),
        })?;
        Ok(Cluster {
            client,
            server,
            context,
        })
    }

    /// Turns a client error into one that says what to do.
    fn error(
        &self,
        action: &str,
        verb: &str,
        rt: Option<(&ResourceType, Option<&str>)>,
        err: kube::Error,
    ) -> KubeError {
        match err {
            kube::Error::Api(resp) if resp.code == 401 => KubeError::Unauthorized {
                server: self.server.clone(),
                context: self.context.clone(),
                action: action.to_string(),
            },
            kube::Error::Api(resp) if resp.code == 403 => {
                let (resource, group, scope) = match rt {
                    Some((t, Some(ns))) if t.namespaced => (
                        t.plural.clone(),
                        t.group.clone(),
                        format!("in namespace {ns}"),
                    ),
                    Some((t, _)) => (t.plural.clone(), t.group.clone(), "at cluster scope".into()),
                    None => (String::new(), String::new(), String::new()),
                };
                let hint = match rt {
                    Some((t, _)) if verb == "list" => format!(
                        ", or leave the type out with `exclude_resources: [{}]` in the policy",
                        t.group_resource()
                    ),
                    _ => String::new(),
                };
                KubeError::Forbidden(Box::new(Denied {
                    server: self.server.clone(),
                    verb: verb.to_string(),
                    resource,
                    group,
                    scope,
                    message: resp.message,
                    hint,
                }))
            }
            kube::Error::Api(resp) => KubeError::Api {
                server: self.server.clone(),
                action: action.to_string(),
                code: resp.code,
                message: resp.message,
            },
            kube::Error::Auth(e) => KubeError::Credentials {
                server: self.server.clone(),
                context: self.context.clone(),
                detail: error_chain(&e),
            },
            kube::Error::SerdeError(e) => KubeError::BadResponse {
                server: self.server.clone(),
                action: action.to_string(),
                detail: e.to_string(),
            },
            other => KubeError::Unreachable {
                server: self.server.clone(),
                detail: error_chain(&other),
            },
        }
    }

    /// Sends a request and parses the JSON answer. The body is never
    /// logged (it may be a Secret).
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: http::Request<Vec<u8>>,
        action: &str,
        verb: &str,
        rt: Option<(&ResourceType, Option<&str>)>,
    ) -> Result<T, KubeError> {
        let text = self
            .client
            .request_text(req)
            .await
            .map_err(|e| self.error(action, verb, rt, e))?;
        serde_json::from_str(&text).map_err(|e| KubeError::BadResponse {
            server: self.server.clone(),
            action: action.to_string(),
            detail: e.to_string(),
        })
    }

    /// The server's version (`v1.32.1`).
    pub async fn version(&self) -> Result<String, KubeError> {
        let info = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| self.error("read the server version", "get", None, e))?;
        Ok(info.git_version)
    }

    /// Every resource type the server offers. A group version whose list
    /// fails (an aggregated API that is down) is reported, not fatal; a
    /// failure to reach or authenticate is.
    pub async fn discover(&self) -> Result<Discovery, KubeError> {
        let mut out = Discovery::default();
        let core = self
            .client
            .list_core_api_versions()
            .await
            .map_err(|e| self.error("discover the API (GET /api)", "get", None, e))?;
        let mut groups: Vec<(String, Vec<String>)> = vec![(String::new(), core.versions)];
        let list = self
            .client
            .list_api_groups()
            .await
            .map_err(|e| self.error("discover the API (GET /apis)", "get", None, e))?;
        for g in list.groups {
            let mut versions: Vec<String> = g.versions.iter().map(|v| v.version.clone()).collect();
            if let Some(p) = &g.preferred_version {
                versions.retain(|v| *v != p.version);
                versions.insert(0, p.version.clone());
            }
            groups.push((g.name, versions));
        }
        for (group, versions) in groups {
            // A resource counts once per group: in the first (preferred)
            // version that serves it.
            let mut seen: Vec<String> = Vec::new();
            for version in versions {
                let gv = if group.is_empty() {
                    version.clone()
                } else {
                    format!("{group}/{version}")
                };
                let listed = if group.is_empty() {
                    self.client.list_core_api_resources(&version).await
                } else {
                    self.client.list_api_group_resources(&gv).await
                };
                let resources = match listed {
                    Ok(r) => r,
                    Err(e) => {
                        let err = self.error(&format!("discover {gv}"), "get", None, e);
                        if matches!(
                            err,
                            KubeError::Unauthorized { .. } | KubeError::Unreachable { .. }
                        ) {
                            return Err(err);
                        }
                        out.unavailable
                            .push((group.clone(), format!("{gv}: {err}")));
                        continue;
                    }
                };
                for r in resources.resources {
                    if r.name.contains('/') {
                        continue; // a subresource (pods/log, deployments/scale)
                    }
                    let preferred = !seen.contains(&r.name);
                    seen.push(r.name.clone());
                    out.types.push(ResourceType {
                        group: group.clone(),
                        version: version.clone(),
                        kind: r.kind,
                        plural: r.name,
                        singular: r.singular_name,
                        namespaced: r.namespaced,
                        verbs: r.verbs,
                        short_names: r.short_names.unwrap_or_default(),
                        preferred,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Lists a collection page by page, calling `each` with every item
    /// (with apiVersion and kind set; list items lack them).
    pub async fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        label_selector: Option<&str>,
        mut each: impl FnMut(Value) -> Result<(), KubeError>,
    ) -> Result<(), KubeError> {
        let path = rt.collection_path(namespace);
        let scope = namespace.map(|n| format!(" in {n}")).unwrap_or_default();
        let action = format!("list {}{scope}", rt.group_resource());
        let mut continue_token: Option<String> = None;
        loop {
            let lp = kube::api::ListParams {
                label_selector: label_selector.map(str::to_string),
                limit: Some(PAGE_SIZE),
                continue_token: continue_token.take(),
                ..Default::default()
            };
            let req =
                kube::core::Request::new(&path)
                    .list(&lp)
                    .map_err(|e| KubeError::BadResponse {
                        server: self.server.clone(),
                        action: action.clone(),
                        detail: e.to_string(),
                    })?;
            let page: ListPage = self
                .send(req, &action, "list", Some((rt, namespace)))
                .await?;
            for mut item in page.items {
                if let Some(obj) = item.as_object_mut() {
                    obj.insert("apiVersion".into(), Value::String(rt.api_version()));
                    obj.insert("kind".into(), Value::String(rt.kind.clone()));
                }
                each(item)?;
            }
            match page.metadata.continue_token {
                Some(t) if !t.is_empty() => continue_token = Some(t),
                _ => return Ok(()),
            }
        }
    }

    /// The object, or `None` if it does not exist.
    pub async fn get(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, KubeError> {
        let action = format!("get {} {name}", rt.group_resource());
        let req = kube::core::Request::new(rt.collection_path(namespace))
            .get(name, &Default::default())
            .map_err(|e| self.bad_request(&action, e))?;
        match self
            .send::<Value>(req, &action, "get", Some((rt, namespace)))
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(KubeError::Api { code: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Server-side apply of `obj` (creates it when missing). `force` takes
    /// over fields other managers own; `dry_run` changes nothing.
    pub async fn apply(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        obj: &Value,
        force: bool,
    ) -> Result<Value, KubeError> {
        let action = format!("apply {} {name}", rt.group_resource());
        let mut pp = kube::api::PatchParams::apply(FIELD_MANAGER);
        pp.force = force;
        let req = kube::core::Request::new(rt.collection_path(namespace))
            .patch(name, &pp, &kube::api::Patch::Apply(obj))
            .map_err(|e| self.bad_request(&action, e))?;
        self.send(req, &action, "patch", Some((rt, namespace)))
            .await
    }

    /// JSON merge patch (RFC 7386): `null` removes a key.
    pub async fn merge_patch(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
    ) -> Result<Value, KubeError> {
        let action = format!("patch {} {name}", rt.group_resource());
        let req = kube::core::Request::new(rt.collection_path(namespace))
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(patch),
            )
            .map_err(|e| self.bad_request(&action, e))?;
        self.send(req, &action, "patch", Some((rt, namespace)))
            .await
    }

    /// Deletes an object (a Namespace takes what is in it: the cluster
    /// removes that in the background). Gone already is not an error.
    pub async fn delete(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), KubeError> {
        let action = format!("delete {} {name}", rt.group_resource());
        let dp = kube::api::DeleteParams::background();
        let req = kube::core::Request::new(rt.collection_path(namespace))
            .delete(name, &dp)
            .map_err(|e| self.bad_request(&action, e))?;
        match self
            .send::<Value>(req, &action, "delete", Some((rt, namespace)))
            .await
        {
            Ok(_) | Err(KubeError::Api { code: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn bad_request(&self, action: &str, e: kube::core::request::Error) -> KubeError {
        KubeError::BadResponse {
            server: self.server.clone(),
            action: action.to_string(),
            detail: e.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct ListPage {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Value>,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// Resource types never exported, and why.
const NEVER_EXPORTED: &[(&str, &str, &str)] = &[
    ("", "events", "events are history, not configuration"),
    (
        "events.k8s.io",
        "events",
        "events are history, not configuration",
    ),
    (
        "",
        "endpoints",
        "the endpoints controller recreates them from Services",
    ),
    (
        "discovery.k8s.io",
        "endpointslices",
        "the endpoint slice controller recreates them from Services",
    ),
    (
        "coordination.k8s.io",
        "leases",
        "leader-election and heartbeat state, recreated by their owners",
    ),
    (
        "apps",
        "controllerrevisions",
        "StatefulSet and DaemonSet history, recreated by their controllers",
    ),
    (
        "metrics.k8s.io",
        "*",
        "live resource usage, not configuration",
    ),
    ("", "componentstatuses", "live health, not configuration"),
    ("", "nodes", "nodes register themselves"),
    (
        "",
        "persistentvolumes",
        "volumes belong to the storage system; their claims are exported",
    ),
    (
        "storage.k8s.io",
        "volumeattachments",
        "live attachment state",
    ),
    (
        "storage.k8s.io",
        "csinodes",
        "registered by each node's CSI driver",
    ),
    (
        "certificates.k8s.io",
        "certificatesigningrequests",
        "one-off requests, not configuration",
    ),
];

/// Why a type is never exported, if it is not.
pub fn never_exported(rt: &ResourceType) -> Option<&'static str> {
    NEVER_EXPORTED
        .iter()
        .find(|(g, p, _)| *g == rt.group && (*p == "*" || *p == rt.plural))
        .map(|(_, _, why)| *why)
}

/// Kinds whose controllers recreate what they own.
const RECREATING_OWNERS: &[&str] = &[
    "ReplicaSet",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ReplicationController",
];

const DROPPED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.kubernetes.io/selected-node",
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
    "kubernetes.io/service-account.uid",
    "endpoints.kubernetes.io/last-change-trigger-time",
];

/// Labels the Job controller generates from the Job's uid.
const JOB_GENERATED_LABELS: &[&str] = &[
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
];

/// Why an object is not exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// A controller recreates it from its owner (a Pod of a ReplicaSet).
    ControllerOwned { owner_kind: String, owner: String },
    /// The server or a built-in controller makes it (service-account
    /// tokens, the root CA ConfigMap).
    ServerOwned(&'static str),
}

impl Skip {
    /// A short key for counting.
    pub fn key(&self) -> &'static str {
        match self {
            Skip::ControllerOwned { .. } => "controller-owned",
            Skip::ServerOwned(_) => "server-owned",
        }
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::ControllerOwned { owner_kind, owner } => {
                write!(
                    f,
                    "owned by {owner_kind} {owner}, whose controller recreates it"
                )
            }
            Skip::ServerOwned(why) => f.write_str(why),
        }
    }
}

/// Removes what the server owns from an exported object, so that what is
/// kept applies cleanly to a fresh cluster; or says why the object is not
/// exported at all.
///
/// Dropped everywhere: `status`, and in `metadata` the uid,
/// resourceVersion, generation, creationTimestamp, managedFields,
/// selfLink, deletion fields, ownerReferences (they name uids of the old
/// cluster, and the garbage collector deletes objects whose owner uid does
/// not exist), finalizers (their controllers add them again) and
/// annotations written by controllers (last-applied, revision, volume
/// binding). Per kind: a Service's allocated cluster IPs and health-check
/// port, a Namespace's spec and generated name label, a claim's bound
/// volume, a Job's generated selector, a Pod's node, a ServiceAccount's
/// token secrets.
pub fn clean(obj: &mut Value, kind: &str) -> Result<(), Skip> {
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    if let Some(owners) = meta.get("ownerReferences").and_then(Value::as_array) {
        for o in owners {
            let controller = o
                .get("controller")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let owner_kind = o.get("kind").and_then(Value::as_str).unwrap_or("");
            if controller && RECREATING_OWNERS.contains(&owner_kind) {
                return Err(Skip::ControllerOwned {
                    owner_kind: owner_kind.to_string(),
                    owner: o
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                });
            }
        }
    }
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    match kind {
        "Secret"
            if obj.get("type").and_then(Value::as_str)
                == Some("kubernetes.io/service-account-token") =>
        {
            return Err(Skip::ServerOwned(
                "a service-account token; the cluster issues new tokens",
            ));
        }
        "ConfigMap" if name == "kube-root-ca.crt" => {
            return Err(Skip::ServerOwned(
                "the cluster's root CA, published into every namespace by a controller",
            ));
        }
        _ => {}
    }

    let Some(map) = obj.as_object_mut() else {
        return Ok(());
    };
    map.remove("status");
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "ownerReferences",
            "finalizers",
            "generateName",
        ] {
            meta.remove(field);
        }
        remove_keys(meta, "annotations", DROPPED_ANNOTATIONS);
        if kind == "Namespace" {
            remove_keys(meta, "labels", &["kubernetes.io/metadata.name"]);
        }
    }
    let mut generated_selector = false;
    let spec = map.get_mut("spec").and_then(Value::as_object_mut);
    match (kind, spec) {
        ("Namespace", _) => {
            map.remove("spec");
        }
        ("Service", Some(spec)) => {
            let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
            if !headless {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
            spec.remove("healthCheckNodePort");
            let cluster_ip = spec
                .get("type")
                .and_then(Value::as_str)
                .is_none_or(|t| t == "ClusterIP");
            if cluster_ip {
                remove_node_ports(spec);
            }
        }
        ("PersistentVolumeClaim", Some(spec)) => {
            spec.remove("volumeName");
        }
        ("Pod", Some(spec)) => {
            spec.remove("nodeName");
        }
        ("Job", Some(spec))
            if spec.get("manualSelector").and_then(Value::as_bool) != Some(true) =>
        {
            generated_selector = true;
            spec.remove("selector");
            if let Some(tmeta) = spec
                .get_mut("template")
                .and_then(|t| t.get_mut("metadata"))
                .and_then(Value::as_object_mut)
            {
                remove_keys(tmeta, "labels", JOB_GENERATED_LABELS);
            }
        }
        _ => {}
    }
    if generated_selector {
        // The Job's own copies of the generated labels.
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            remove_keys(meta, "labels", JOB_GENERATED_LABELS);
        }
    }
    if kind == "ServiceAccount" {
        let prefix = format!("{name}-token-");
        if let Some(secrets) = map.get_mut("secrets").and_then(Value::as_array_mut) {
            secrets.retain(|s| {
                !s.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.starts_with(&prefix))
            });
            if secrets.is_empty() {
                map.remove("secrets");
            }
        }
    }
    drop_null_timestamps(obj);
    Ok(())
}

/// Removes `keys` from the map under `field`, and the field once empty.
fn remove_keys(map: &mut serde_json::Map<String, Value>, field: &str, keys: &[&str]) {
    if let Some(inner) = map.get_mut(field).and_then(Value::as_object_mut) {
        for k in keys {
            inner.remove(*k);
        }
        if inner.is_empty() {
            map.remove(field);
        }
    }
}

/// A ClusterIP Service cannot carry node ports.
pub(crate) fn remove_node_ports(spec: &mut serde_json::Map<String, Value>) {
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            if let Some(p) = p.as_object_mut() {
                p.remove("nodePort");
            }
        }
    }
}

/// Pod templates carry `creationTimestamp: null`; it means nothing.
fn drop_null_timestamps(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("creationTimestamp") == Some(&Value::Null) {
                map.remove("creationTimestamp");
            }
            for (_, inner) in map.iter_mut() {
                drop_null_timestamps(inner);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null_timestamps),
        _ => {}
    }
}

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

pub fn object_name(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn object_namespace(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/namespace").and_then(Value::as_str)
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

    // A group whose discovery failed may hold configuration: its objects
    // would silently be missing. Only groups that never hold any, or that
    // the policy leaves out, are passed over.
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
    let mut summary = KubeExport {
        server: cluster.server.clone(),
        context: cluster.context.clone(),
        namespaces: names.clone(),
        groups_unavailable,
        ..Default::default()
    };
    let mut counts: BTreeMap<(String, String, String, String), u64> = BTreeMap::new();
    let mut skipped: BTreeMap<(String, String), u64> = BTreeMap::new();

    // The Namespace objects themselves come first.
    for mut ns in namespaces {
        clean(&mut ns, "Namespace").ok();
        *counts
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
        if rt.group.is_empty() && rt.plural == "namespaces" {
            continue;
        }
        if let Some(why) = never_exported(rt) {
            summary
                .types_left_out
                .push(format!("{}: {why}", rt.group_resource()));
            continue;
        }
        if src
            .exclude_resources
            .iter()
            .any(|e| rt.matches(e) || e.strip_prefix("*.") == Some(rt.group.as_str()))
        {
            summary
                .types_left_out
                .push(format!("{}: excluded by the policy", rt.group_resource()));
            continue;
        }
        let scopes: Vec<Option<&str>> = if rt.namespaced {
            names.iter().map(|n| Some(n.as_str())).collect()
        } else if src.cluster_resources.iter().any(|c| rt.matches(c)) {
            vec![None]
        } else {
            continue;
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
                        *counts
                            .entry((
                                scope.unwrap_or("").to_string(),
                                rt.api_version(),
                                rt.kind.clone(),
                                rt.plural.clone(),
                            ))
                            .or_default() += 1;
                        send(&sink, &obj).await?;
                    }
                    Err(skip) => {
                        tracing::debug!(kind = %rt.kind, name = %object_name(&obj), reason = %skip, "not exported");
                        *skipped
                            .entry((skip.key().to_string(), rt.kind.clone()))
                            .or_default() += 1;
                    }
                }
            }
        }
    }
    summary.counts = counts
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
    summary.skipped = skipped
        .into_iter()
        .map(|((reason, kind), count)| SkipCount {
            reason,
            kind,
            count,
        })
        .collect();
    Ok(summary)
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

    #[test]
    fn type_names_match() {
        let rt = ResourceType {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
            singular: "deployment".into(),
            namespaced: true,
            verbs: vec!["list".into()],
            short_names: vec!["deploy".into()],
            preferred: true,
        };
        for spec in [
            "deployments",
            "Deployment",
            "deploy",
            "deployments.apps",
            "DEPLOYMENT",
        ] {
            assert!(rt.matches(spec), "{spec}");
        }
        for spec in ["deployments.extensions", "pods", "deployment.app"] {
            assert!(!rt.matches(spec), "{spec}");
        }
    }
}
