//! The Kubernetes API client lifeboat uses (backup, restore and drills): connecting from a kubeconfig or in-cluster, discovery of resource types, paged lists, server-side apply, and errors that say what to do.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kinds::kubernetes::config::KubernetesSource;

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

pub fn object_name(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn object_namespace(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/namespace").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

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
