//! In-process fake Kubernetes API server: a **test fixture**, not product code.
//!
//! No real API server can run where the tests run, so the Kubernetes tests
//! start this one instead. It is a plain HTTP/1.1 server on a free loopback
//! port that speaks the real Kubernetes REST API (JSON) for everything that
//! lifeboat (through the `kube` crate) and `kubectl apply --dry-run=client`
//! use:
//!
//! * legacy discovery (`/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`),
//!   `/version`; OpenAPI v3 (the index and per group/version documents with
//!   each type's PATCH operation, so kubectl validates on the server) and
//!   an empty OpenAPI v2 document;
//! * collections and objects of the built-in types lifeboat meets, plus the
//!   custom resource types registered by stored CustomResourceDefinitions;
//! * list (with `limit`/`continue`, `labelSelector`, `fieldSelector`, and the
//!   `PartialObjectMetadataList` form), get, create, server-side apply and
//!   JSON merge patch, replace, delete, delete collection, `dryRun=All`;
//! * errors as `Status` documents shaped like the real apiserver's.
//!
//! It also emulates the parts of a cluster's behaviour that matter for a
//! backup tool: server-filled metadata (uid, resourceVersion,
//! creationTimestamp, generation, managedFields), status being owned by the
//! server, namespaces getting their `default` ServiceAccount and
//! `kube-root-ca.crt` ConfigMap, the `default`, `kube-system`,
//! `kube-public` and `kube-node-lease` namespaces, CRDs becoming Established
//! only after a short delay, Service cluster IP / node port allocation (and
//! conflicts), cascading deletion of a namespace's or a CRD's objects, a
//! deleted namespace staying Terminating for a moment (creates in it
//! refused), and admission (`kube_server/admission.rs`): objects decoded
//! into the real Kubernetes types and refused with the apiserver's Status
//! (422 Invalid with field paths, 400 for bodies that do not decode and
//! for unknown fields under `fieldValidation=Strict`), `stringData` merged
//! into `data`, and the common defaults.
//!
//! Not emulated: watches, field ownership conflicts of server-side apply,
//! admission webhooks, the garbage collector (ownerReferences) and the
//! workload controllers (creating a Deployment does not create Pods).
//!
//! The server runs on its own thread with its own tokio runtime and stops
//! when the [`KubeServer`] value is dropped (also when a test panics).

#![allow(dead_code)]

mod admission;
mod openapi;
mod seed;
mod strategic;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::ops::Bound;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// Failure injection for [`KubeServer::set_fault`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Requests with `verb` ("list", "get", "create", "patch", "update",
    /// "delete", "deletecollection"; "*" for any) on `resource` (plural, e.g.
    /// "secrets"; "*" for any) are answered 403 with the real apiserver
    /// message, e.g. `secrets is forbidden: User
    /// "system:serviceaccount:backup:lifeboat" cannot list resource "secrets"
    /// in API group "" in the namespace "prod"` (`... at the cluster scope`
    /// for cluster-wide requests).
    Forbid { resource: String, verb: String },
    /// The type stays in discovery, but every request on it (list, get, ...)
    /// returns 404 "the server could not find the requested resource", like a
    /// CRD deleted between discovery and list.
    Vanish { resource: String },
    /// Creating (POST) or patching (server-side apply or merge patch) an
    /// object with this name (any kind) fails with 422 Invalid whose message
    /// is `message`.
    Reject { name: String, message: String },
    /// Discovery of this group version (`metrics.example.io/v1`) answers 503,
    /// like an aggregated API whose backing service is down.
    GroupDown { group_version: String },
}

/// A fake Kubernetes API server on `127.0.0.1:<free port>`; stops on drop.
pub struct KubeServer {
    state: Arc<Mutex<State>>,
    port: u16,
    token: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeServer {
    /// Starts an empty server (only built-in resource types, no objects) on a
    /// free loopback port.
    pub fn start() -> KubeServer {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("kube_server: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("kube_server: set_nonblocking");
        let port = listener
            .local_addr()
            .expect("kube_server: local_addr")
            .port();
        let token = format!("lifeboat-test-{}", random_hex(32));
        let state = Arc::new(Mutex::new(State::new(port, token.clone())));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("kube-server-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("kube_server: tokio runtime");
                runtime.block_on(serve(listener, shared, rx));
                // Dropping the runtime here cancels the connection tasks that
                // are still open (keep-alive connections of clients).
            })
            .expect("kube_server: spawn the server thread");
        KubeServer {
            state,
            port,
            token,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bearer token the server accepts.
    pub fn token(&self) -> String {
        self.token.clone()
    }

    /// Writes a kubeconfig (YAML) into `dir` with one cluster (server =
    /// url()), one user (token = token()), one context named "test" as
    /// current-context; returns its path (`dir/kubeconfig`).
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        self.write_kubeconfig(dir, "kubeconfig", &self.token)
    }

    /// Same, but the user's token is `token` (for 401 tests). The file is
    /// `dir/kubeconfig-token-<hash of token>`, so it never overwrites the
    /// one of [`KubeServer::kubeconfig`].
    pub fn kubeconfig_with_token(&self, dir: &Path, token: &str) -> PathBuf {
        let file = format!("kubeconfig-token-{:016x}", fnv64(token.as_bytes()));
        self.write_kubeconfig(dir, &file, token)
    }

    fn write_kubeconfig(&self, dir: &Path, file: &str, token: &str) -> PathBuf {
        // A JSON string is a valid YAML double-quoted scalar.
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: test\n  cluster:\n    server: {server}\n\
             contexts:\n\
             - name: test\n  context:\n    cluster: test\n    user: test\n\
             current-context: test\n\
             preferences: {{}}\n\
             users:\n\
             - name: test\n  user:\n    token: {token}\n",
            server = quote(&self.url()),
            token = quote(token),
        );
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("kube_server: create {}: {e}", dir.display()));
        let path = dir.join(file);
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("kube_server: write {}: {e}", path.display()));
        path
    }

    /// Stores an object as if a client had created it: server fields that
    /// are missing are filled in (uid, resourceVersion, creationTimestamp,
    /// generation for workloads, managedFields; fields already present are
    /// kept, except resourceVersion which the server always assigns) and the
    /// server's defaulting applies (Namespace phase/finalizers/label, Service
    /// cluster IP and node ports). No side effects, except that a
    /// CustomResourceDefinition registers its resource type(s), Established
    /// at once. An object with the same name is replaced. Panics if the type
    /// is unknown or the object has no name (or no namespace for a
    /// namespaced type). The namespace does not need to exist.
    pub fn insert(&self, obj: Value) {
        self.lock().insert_obj(obj, DEFAULT_MANAGER);
    }

    /// Seeds namespace `ns` with realistic objects (`kube_server/seed.yaml`).
    /// Returns how many objects it inserted. Can be called for several
    /// namespaces: the CRD and the cluster-scoped objects are only inserted
    /// once.
    pub fn seed_realistic(&self, ns: &str) -> usize {
        self.lock().seed_realistic(ns)
    }

    /// Seeds `n` ConfigMaps and Secrets (about half each) in namespace `ns`,
    /// each with three keys of ~200 bytes, for benchmarks. Creates the
    /// Namespace (with its `default` ServiceAccount and `kube-root-ca.crt`
    /// ConfigMap, like a real namespace) if it does not exist.
    pub fn seed_bulk(&self, ns: &str, n: usize) {
        self.lock().seed_bulk(ns, n);
    }

    /// The stored object, as the server would return it from GET.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let mut st = self.lock();
        st.tick();
        let rt = st.type_for(api_version, kind)?;
        let (_, version) = split_api_version(api_version);
        let key = obj_key(&rt, namespace, name);
        st.objects.get(&key).map(|o| output(&rt, version, o))
    }

    /// Deletes one object like a DELETE request would (a Namespace takes its
    /// objects along, a CRD its type and objects). Returns whether it existed.
    pub fn remove(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        let mut st = self.lock();
        let Some(rt) = st.type_for(api_version, kind) else {
            return false;
        };
        let key = obj_key(&rt, namespace, name);
        let existed = st.objects.contains_key(&key);
        st.remove_object(&key);
        existed
    }

    /// Every stored object (each with apiVersion and kind set), sorted by
    /// (apiVersion, kind, namespace, name).
    pub fn objects(&self) -> Vec<Value> {
        let mut st = self.lock();
        st.tick();
        let mut all: Vec<Value> = st.objects.values().cloned().collect();
        all.sort_by_key(sort_key);
        all
    }

    /// Objects in one namespace (the Namespace object itself not included),
    /// sorted like [`KubeServer::objects`].
    pub fn objects_in(&self, namespace: &str) -> Vec<Value> {
        let mut st = self.lock();
        st.tick();
        let mut found: Vec<Value> = st
            .objects
            .iter()
            .filter(|(k, _)| k.2 == namespace)
            .map(|(_, v)| v.clone())
            .collect();
        found.sort_by_key(sort_key);
        found
    }

    /// Deletes every object and every custom resource type registered by
    /// CRDs: the server is empty again. Faults and the request log stay.
    pub fn clear(&self) {
        let mut st = self.lock();
        st.objects.clear();
        st.custom.clear();
        st.pending_crds.clear();
        st.terminating.clear();
        st.rv += 1;
        st.add_system_namespaces();
    }

    /// Deletes a namespace like `kubectl delete namespace`: its objects go
    /// at once, it stays Terminating for a moment (see
    /// [`KubeServer::set_namespace_termination`]), then it is gone.
    pub fn delete_namespace(&self, ns: &str) {
        self.lock().delete_namespace(ns);
    }

    /// Namespaces deleted so far (through the API too), as they were just
    /// before: what a drill's scratch namespaces looked like.
    pub fn deleted_namespaces(&self) -> Vec<Value> {
        self.lock().deleted_namespaces.clone()
    }

    /// How long a namespace deleted through the API stays Terminating
    /// (default 300 ms; zero: gone at once).
    pub fn set_namespace_termination(&self, d: Duration) {
        self.lock().termination = d;
    }

    /// Adds a fault (they accumulate until [`KubeServer::clear_faults`]).
    pub fn set_fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Delays every answer by `latency` (a network round trip), for
    /// benchmarks; requests still run concurrently.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Lets requests without credentials in (kubectl sends no bearer token
    /// over plain HTTP); a wrong token is still refused.
    pub fn allow_anonymous(&self) {
        self.lock().anonymous = true;
    }

    /// "METHOD path?query" of every request received, in order (also the
    /// unauthenticated ones).
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Locks the state, also after a panic elsewhere poisoned the mutex.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn sort_key(v: &Value) -> (String, String, String, String) {
    let s = |x: Option<&Value>| x.and_then(Value::as_str).unwrap_or("").to_string();
    (
        s(v.get("apiVersion")),
        s(v.get("kind")),
        s(v.pointer("/metadata/namespace")),
        s(v.pointer("/metadata/name")),
    )
}

// ---------------------------------------------------------------------------
// HTTP glue
// ---------------------------------------------------------------------------

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<Mutex<State>>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kube_server: cannot listen: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // E.g. too many open files: do not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(Arc::clone(&state), req));
                    // hyper handles keep-alive, Content-Length and chunked bodies.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    // The request is handled synchronously under the lock (never held across
    // an await). A bug in the emulation answers 500 instead of killing the
    // connection.
    let latency = lock(&state).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let reply = {
        let mut st = lock(&state);
        match std::panic::catch_unwind(AssertUnwindSafe(|| {
            st.handle(&parts.method, &parts.uri, &parts.headers, &body)
        })) {
            Ok(reply) => reply,
            Err(_) => status_reply(
                500,
                "InternalError",
                "Internal error occurred: the test API server panicked (see stderr)",
                Some(json!({})),
            ),
        }
    };
    Ok(reply.into_response())
}

/// A response: status code and JSON body.
struct Reply {
    code: u16,
    body: Value,
    /// A body that is not JSON, with its content type.
    raw: Option<(&'static str, Vec<u8>)>,
}

type Res = Result<Reply, Reply>;

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply {
            code: 200,
            body,
            raw: None,
        }
    }

    fn created(body: Value) -> Reply {
        Reply {
            code: 201,
            body,
            raw: None,
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let (content_type, body) = match self.raw {
            Some((ct, bytes)) => (ct, bytes),
            None => (
                "application/json",
                serde_json::to_vec(&self.body).unwrap_or_default(),
            ),
        };
        let len = body.len();
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Response::builder()
            .status(status)
            // Always plain JSON: kubectl asks for aggregated discovery first
            // and falls back to the legacy documents when it gets these.
            .header(CONTENT_TYPE, content_type)
            .header("content-length", len.to_string())
            .header("cache-control", "no-cache, private")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }
}

// ---------------------------------------------------------------------------
// Resource types
// ---------------------------------------------------------------------------

const CRD_GROUP: &str = "apiextensions.k8s.io";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const DEFAULT_MANAGER: &str = "kubectl-client-side-apply";
const FORBIDDEN_USER: &str = "system:serviceaccount:backup:lifeboat";
/// How long a new CRD takes to become Established.
const CRD_ESTABLISH_DELAY: Duration = Duration::from_millis(300);

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
const CRD_VERBS: &[&str] = &[
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

/// Order of the built-in groups in `/apis` (as a real server lists them;
/// clients such as kubectl prefer earlier groups for ambiguous kinds).
const BUILTIN_GROUP_ORDER: &[&str] = &[
    "apps",
    "events.k8s.io",
    "autoscaling",
    "batch",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "apiextensions.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
];

/// A resource type at one group/version, as discovery reports it.
#[derive(Clone, Debug)]
struct ResourceType {
    /// "" for the core group.
    group: String,
    version: String,
    plural: String,
    singular: String,
    kind: String,
    namespaced: bool,
    verbs: Vec<String>,
    short_names: Vec<String>,
    categories: Vec<String>,
    subresources: Vec<SubResource>,
    /// Name of the CRD that registered this type (custom resources only).
    crd: Option<String>,
}

#[derive(Clone, Debug)]
struct SubResource {
    name: String,
    kind: String,
    /// Set when the subresource's kind lives in another group/version
    /// (e.g. `deployments/scale` is `autoscaling/v1` `Scale`).
    group_version: Option<(String, String)>,
    verbs: Vec<String>,
}

fn to_strings(v: &[&str]) -> Vec<String> {
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

    fn status(self) -> Self {
        let kind = self.kind.clone();
        self.sub("status", &kind, STATUS_VERBS)
    }

    fn scale(self) -> Self {
        self.sub_in("scale", "Scale", "autoscaling", "v1", STATUS_VERBS)
    }

    fn has_status(&self) -> bool {
        self.subresources.iter().any(|s| s.name == "status")
    }

    /// Whether the server maintains `metadata.generation` for this type (the
    /// real one does for workloads, networking objects, CRDs and custom
    /// resources; not for Pods, Services, ConfigMaps, ...).
    fn has_generation(&self) -> bool {
        self.crd.is_some()
            || matches!(
                self.group.as_str(),
                "apps" | "batch" | "networking.k8s.io" | "apiextensions.k8s.io" | "policy"
            )
    }

    /// "configmaps", "deployments.apps": how error messages name the resource.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// "Service", "Deployment.apps": how Invalid messages name the kind.
    fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// The built-in types this server knows, with names, verbs, short names and
/// subresources as a Kubernetes 1.32 server reports them.
fn builtin_types() -> Vec<ResourceType> {
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

/// The resource types a stored CRD registers: one per served version.
fn crd_types(crd: &Value) -> Vec<ResourceType> {
    let s = |p: &str| {
        crd.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let strings = |p: &str| -> Vec<String> {
        crd.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (group, plural, kind) = (
        s("/spec/group"),
        s("/spec/names/plural"),
        s("/spec/names/kind"),
    );
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let singular = match s("/spec/names/singular") {
        x if x.is_empty() => kind.to_lowercase(),
        x => x,
    };
    let namespaced = s("/spec/scope") != "Cluster";
    let crd_name = s("/metadata/name");
    let mut out = Vec::new();
    for v in crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let Some(version) = v.get("name").and_then(Value::as_str) else {
            continue;
        };
        let mut t = ResourceType {
            group: group.clone(),
            version: version.to_string(),
            plural: plural.clone(),
            singular: singular.clone(),
            kind: kind.clone(),
            namespaced,
            verbs: to_strings(CRD_VERBS),
            short_names: strings("/spec/names/shortNames"),
            categories: strings("/spec/names/categories"),
            subresources: Vec::new(),
            crd: Some(crd_name.clone()),
        };
        if v.pointer("/subresources/status").is_some() {
            t = t.status();
        }
        if v.pointer("/subresources/scale").is_some() {
            t = t.scale();
        }
        out.push(t);
    }
    out
}

/// Sort key of Kubernetes version priority: GA before beta before alpha,
/// higher numbers first, anything else last (alphabetically).
fn version_sort_key(v: &str) -> (u8, Reverse<u64>, Reverse<u64>, String) {
    let fallback = (3, Reverse(0), Reverse(0), v.to_string());
    let Some(rest) = v.strip_prefix('v') else {
        return fallback;
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let Ok(major) = digits.parse::<u64>() else {
        return fallback;
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (0, Reverse(major), Reverse(0), String::new());
    }
    for (class, word) in [(1u8, "beta"), (2u8, "alpha")] {
        if let Some(num) = tail.strip_prefix(word) {
            if let Ok(minor) = num.parse::<u64>() {
                return (class, Reverse(major), Reverse(minor), String::new());
            }
        }
    }
    fallback
}

fn gv(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

// ---------------------------------------------------------------------------
// Server state and request routing
// ---------------------------------------------------------------------------

/// (group, plural, namespace ("" when cluster-scoped), name). Objects are
/// stored independently of the version they were written with.
type Key = (String, String, String, String);

fn obj_key(rt: &ResourceType, ns: Option<&str>, name: &str) -> Key {
    let ns = if rt.namespaced { ns.unwrap_or("") } else { "" };
    (
        rt.group.clone(),
        rt.plural.clone(),
        ns.to_string(),
        name.to_string(),
    )
}

fn namespace_key(ns: &str) -> Key {
    (
        String::new(),
        "namespaces".to_string(),
        String::new(),
        ns.to_string(),
    )
}

fn crd_key(name: &str) -> Key {
    (
        CRD_GROUP.to_string(),
        "customresourcedefinitions".to_string(),
        String::new(),
        name.to_string(),
    )
}

struct State {
    port: u16,
    token: String,
    builtin: Vec<ResourceType>,
    /// Types registered by stored CRDs (derived from them).
    custom: Vec<ResourceType>,
    /// Stored objects, each with apiVersion and kind set.
    objects: BTreeMap<Key, Value>,
    /// The global resourceVersion counter.
    rv: u64,
    faults: Vec<Fault>,
    /// Requests without credentials act as an authorized anonymous user
    /// (a server with anonymous auth on and RBAC allowing it): kubectl
    /// sends no bearer token over plain HTTP.
    anonymous: bool,
    /// Added to every answer: a network round trip to a real cluster.
    latency: Duration,
    requests: Vec<String>,
    /// CRDs created through the API that are not Established yet.
    pending_crds: HashMap<String, Instant>,
    /// Deleted namespaces still Terminating, with when they were deleted.
    terminating: HashMap<String, Instant>,
    /// How long a deleted namespace stays Terminating.
    termination: Duration,
    /// Namespaces deleted through the API or [`KubeServer::delete_namespace`],
    /// as they were just before.
    deleted_namespaces: Vec<Value>,
    /// The request asked for `fieldValidation=Strict`.
    strict: bool,
}

/// How long a deleted namespace stays Terminating by default (a real
/// cluster takes seconds to minutes; long enough for a client to see it).
const NAMESPACE_TERMINATION: Duration = Duration::from_millis(300);

/// The namespaces every cluster has.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-node-lease", "kube-public", "kube-system"];

/// What a handler needs to know about the request.
struct Ctx<'a> {
    method: &'a Method,
    q: &'a Query,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

impl State {
    fn new(port: u16, token: String) -> State {
        let mut st = State {
            port,
            token,
            builtin: builtin_types(),
            custom: Vec::new(),
            objects: BTreeMap::new(),
            rv: 100,
            faults: Vec::new(),
            anonymous: false,
            latency: Duration::ZERO,
            requests: Vec::new(),
            pending_crds: HashMap::new(),
            terminating: HashMap::new(),
            termination: NAMESPACE_TERMINATION,
            deleted_namespaces: Vec::new(),
            strict: false,
        };
        st.add_system_namespaces();
        st
    }

    fn add_system_namespaces(&mut self) {
        for ns in SYSTEM_NAMESPACES {
            self.insert_obj(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                "kube-apiserver",
            );
            self.namespace_children(ns, 30 * DAY);
        }
    }

    /// Defaults, `stringData`, and the checks of the real types, for an
    /// object about to be stored.
    fn admit(
        &self,
        rt: &ResourceType,
        version: &str,
        name: &str,
        obj: &mut Value,
    ) -> Result<(), Reply> {
        if rt.crd.is_some() {
            return Ok(());
        }
        if rt.group.is_empty() && rt.kind == "Secret" {
            admission::merge_string_data(obj);
        }
        admission::defaults(&rt.group, &rt.kind, obj);
        admission::validate(&rt.group, version, &rt.kind, obj, self.strict).map_err(|r| {
            if r.causes.is_empty() {
                return status_reply(r.code, r.reason, &r.message, Some(json!({})));
            }
            let each: Vec<String> = r
                .causes
                .iter()
                .map(|(field, _, detail)| format!("{field}: {detail}"))
                .collect();
            let message = format!(
                "{} \"{name}\" is invalid: {}",
                rt.qualified_kind(),
                if each.len() == 1 {
                    each[0].clone()
                } else {
                    format!("[{}]", each.join(", "))
                }
            );
            let mut d = details(rt, Some(name), &rt.kind);
            d["causes"] = Value::Array(
                r.causes
                    .iter()
                    .map(|(field, reason, detail)| json!({"reason": reason, "message": detail, "field": field}))
                    .collect(),
            );
            status_reply(r.code, r.reason, &message, Some(d))
        })
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn types(&self) -> impl Iterator<Item = &ResourceType> + '_ {
        self.builtin.iter().chain(self.custom.iter())
    }

    fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    fn type_for(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        let (group, version) = split_api_version(api_version);
        self.types()
            .find(|t| t.group == group && t.version == version && t.kind == kind)
            .cloned()
    }

    /// Objects of one type in key order (namespace, name), optionally only
    /// in one namespace, optionally starting after a (namespace, name).
    fn scan(
        &self,
        group: &str,
        plural: &str,
        ns: Option<&str>,
        after: Option<(String, String)>,
    ) -> impl Iterator<Item = (&Key, &Value)> + '_ {
        let g = group.to_string();
        let p = plural.to_string();
        let n = ns.map(str::to_string);
        let lower = match after {
            Some((ans, aname)) => Bound::Excluded((g.clone(), p.clone(), ans, aname)),
            None => Bound::Included((
                g.clone(),
                p.clone(),
                n.clone().unwrap_or_default(),
                String::new(),
            )),
        };
        self.objects
            .range((lower, Bound::Unbounded))
            .take_while(move |(k, _)| k.0 == g && k.1 == p && n.as_ref().is_none_or(|n| &k.2 == n))
    }

    /// Lets CRDs whose establishing delay has passed become Established (the
    /// real apiextensions controllers do this asynchronously).
    fn tick(&mut self) {
        let gone: Vec<String> = self
            .terminating
            .iter()
            .filter(|(_, at)| at.elapsed() >= self.termination)
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in gone {
            self.terminating.remove(&ns);
            self.remove_object(&namespace_key(&ns));
        }
        if self.pending_crds.is_empty() {
            return;
        }
        let due: Vec<String> = self
            .pending_crds
            .iter()
            .filter(|(_, created)| created.elapsed() >= CRD_ESTABLISH_DELAY)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            self.pending_crds.remove(&name);
            let key = crd_key(&name);
            if let Some(mut crd) = self.objects.get(&key).cloned() {
                let status = crd_established_status(&crd);
                set_or_remove(&mut crd, "status", Some(status));
                let rv = self.next_rv();
                meta_mut(&mut crd).insert("resourceVersion".into(), json!(rv));
                self.objects.insert(key, crd);
            }
        }
    }

    fn rebuild_custom_types(&mut self) {
        let mut custom: Vec<ResourceType> = self
            .scan(CRD_GROUP, "customresourcedefinitions", None, None)
            .flat_map(|(_, crd)| crd_types(crd))
            .collect();
        // A CRD cannot take over a built-in resource.
        let builtin = &self.builtin;
        custom.retain(|t| {
            !builtin
                .iter()
                .any(|b| b.group == t.group && b.plural == t.plural)
        });
        self.custom = custom;
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        match headers.get(AUTHORIZATION) {
            None => self.anonymous,
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| t.trim() == self.token),
        }
    }

    fn handle(&mut self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Reply {
        let path = uri.path();
        let raw_query = uri.query().unwrap_or("");
        self.requests.push(if raw_query.is_empty() {
            format!("{method} {path}")
        } else {
            format!("{method} {path}?{raw_query}")
        });
        if !self.authorized(headers) {
            return status_reply(401, "Unauthorized", "Unauthorized", None);
        }
        self.tick();
        let q = Query::parse(raw_query);
        self.strict = q.get("fieldValidation") == Some("Strict");
        let owned: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| pct_decode(s, false))
            .collect();
        let segs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let ctx = Ctx {
            method,
            q: &q,
            headers,
            body,
        };
        match self.route(&segs, &ctx) {
            Ok(reply) | Err(reply) => reply,
        }
    }

    fn route(&mut self, segs: &[&str], ctx: &Ctx) -> Res {
        match segs {
            ["version"] => {
                require_get(ctx)?;
                Ok(Reply::ok(version_info()))
            }
            ["api"] => {
                require_get(ctx)?;
                Ok(Reply::ok(self.api_versions()))
            }
            ["apis"] => {
                require_get(ctx)?;
                Ok(Reply::ok(self.api_group_list()))
            }
            ["apis", group] => {
                require_get(ctx)?;
                self.api_group(group)
            }
            ["api", version, rest @ ..] => self.route_group_version("", version, rest, ctx),
            ["apis", group, version, rest @ ..] => {
                self.route_group_version(group, version, rest, ctx)
            }
            // kubectl reads OpenAPI v2 as protobuf only when v3 cannot
            // answer (and for `kind: List` files): an empty document, which
            // has no schemas, so kubectl validates nothing on its side.
            ["openapi", "v2"] => {
                require_get(ctx)?;
                Ok(Reply {
                    code: 200,
                    body: Value::Null,
                    raw: Some((
                        "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
                        Vec::new(),
                    )),
                })
            }
            ["openapi", "v3"] => {
                require_get(ctx)?;
                Ok(Reply::ok(openapi::index(&self.group_versions())))
            }
            ["openapi", "v3", rest @ ..] => {
                require_get(ctx)?;
                let (group, version) = match rest {
                    ["api", version] => ("", *version),
                    ["apis", group, version] => (*group, *version),
                    _ => return Err(page_not_found()),
                };
                let types: Vec<openapi::Served> = self
                    .types()
                    .filter(|t| t.group == group && t.version == version)
                    .map(|t| openapi::Served {
                        group: &t.group,
                        version: &t.version,
                        kind: &t.kind,
                        plural: &t.plural,
                        namespaced: t.namespaced,
                        patchable: t.verbs.iter().any(|v| v == "patch"),
                    })
                    .collect();
                if types.is_empty() {
                    return Err(page_not_found());
                }
                Ok(Reply::ok(openapi::group_version(&types)))
            }
            _ => Err(page_not_found()),
        }
    }

    fn route_group_version(&mut self, group: &str, version: &str, rest: &[&str], ctx: &Ctx) -> Res {
        if !self
            .types()
            .any(|t| t.group == group && t.version == version)
        {
            return Err(page_not_found());
        }
        if rest.is_empty() {
            require_get(ctx)?;
            let this = gv(group, version);
            if self
                .faults
                .iter()
                .any(|f| matches!(f, Fault::GroupDown { group_version } if *group_version == this))
            {
                return Err(status_reply(
                    503,
                    "ServiceUnavailable",
                    &format!("the server is currently unable to handle the request ({this})"),
                    None,
                ));
            }
            return Ok(Reply::ok(self.resource_list(group, version)));
        }
        // `namespaces/{ns}/{plural}[/{name}[/{sub}]]` when {plural} is a
        // namespaced type of this group/version; otherwise
        // `{plural}[/{name}[/{sub}]]` (which includes the Namespace resource
        // itself: `/api/v1/namespaces/{name}[/status]`).
        let namespaced_form = rest[0] == "namespaces"
            && rest.len() >= 3
            && self
                .find_type(group, version, rest[2])
                .is_some_and(|t| t.namespaced);
        let (ns, plural, name, sub) = if namespaced_form {
            if rest.len() > 5 {
                return Err(page_not_found());
            }
            (
                Some(rest[1]),
                rest[2],
                rest.get(3).copied(),
                rest.get(4).copied(),
            )
        } else {
            if rest.len() > 3 {
                return Err(page_not_found());
            }
            (None, rest[0], rest.get(1).copied(), rest.get(2).copied())
        };
        let rt = self
            .find_type(group, version, plural)
            .ok_or_else(page_not_found)?;
        // Single objects of namespaced types only exist under a namespace.
        if rt.namespaced && ns.is_none() && name.is_some() {
            return Err(page_not_found());
        }
        if let Some(s) = sub {
            if !rt.subresources.iter().any(|x| x.name == s) {
                return Err(page_not_found());
            }
        }
        self.resource_request(&rt, version, ns, name, sub, ctx)
    }

    fn resource_request(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: Option<&str>,
        sub: Option<&str>,
        ctx: &Ctx,
    ) -> Res {
        // The apiextensions-apiserver serves a custom resource only once its
        // CRD's names are accepted; before that the request falls through to
        // a plain 404.
        if let Some(crd) = &rt.crd {
            if self.pending_crds.contains_key(crd) {
                return Err(page_not_found());
            }
        }
        if self
            .faults
            .iter()
            .any(|f| matches!(f, Fault::Vanish { resource } if *resource == rt.plural))
        {
            return Err(page_not_found());
        }
        let method = ctx.method;
        let verb = if name.is_none() {
            if *method == Method::GET {
                "list"
            } else if *method == Method::POST {
                "create"
            } else if *method == Method::DELETE {
                "deletecollection"
            } else {
                return Err(method_not_allowed());
            }
        } else if *method == Method::GET {
            "get"
        } else if *method == Method::PUT {
            "update"
        } else if *method == Method::PATCH {
            "patch"
        } else if *method == Method::DELETE {
            "delete"
        } else {
            return Err(method_not_allowed());
        };
        if verb == "list" && matches!(ctx.q.get("watch"), Some("true") | Some("1")) {
            return Err(status_reply(
                405,
                "MethodNotAllowed",
                "watch is not supported by this test API server",
                Some(json!({})),
            ));
        }
        let allowed = match sub {
            Some(s) => rt
                .subresources
                .iter()
                .find(|x| x.name == s)
                .is_some_and(|x| x.verbs.iter().any(|v| v == verb)),
            None => rt.verbs.iter().any(|v| v == verb),
        };
        if !allowed {
            return Err(method_not_allowed());
        }
        // The status and scale subresources are emulated (logs, exec, ...
        // are not).
        if sub.is_some() && sub != Some("status") && sub != Some("scale") {
            return Err(page_not_found());
        }
        // There is no create / delete collection across all namespaces.
        if rt.namespaced && ns.is_none() && matches!(verb, "create" | "deletecollection") {
            return Err(method_not_allowed());
        }
        if self.is_forbidden(rt, verb) {
            return Err(forbidden(rt, verb, sub, ns, name));
        }
        let name = name.unwrap_or_default();
        if sub == Some("scale") {
            return self.scale(rt, version, ns, name, verb, ctx);
        }
        match verb {
            "list" => self.list(rt, version, ns, ctx),
            "create" if rt.plural == "bindings" => Ok(Reply::created(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Success", "code": 201
            }))),
            "create" => self.post(rt, version, ns, ctx),
            "deletecollection" => self.delete_collection(rt, version, ns, ctx),
            "get" => self.get_object(rt, version, ns, name, ctx),
            "update" => self.put(rt, version, ns, name, sub, ctx),
            "patch" => self.patch(rt, version, ns, name, sub, ctx),
            _ => self.delete_object(rt, version, ns, name, ctx),
        }
    }

    /// The `scale` subresource of a workload: an autoscaling/v1 Scale
    /// (`kubectl scale`, autoscalers). A write sets `spec.replicas`.
    fn scale(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: &str,
        verb: &str,
        ctx: &Ctx,
    ) -> Res {
        let key = obj_key(rt, ns, name);
        let existing = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| not_found(rt, name))?;
        if verb == "get" {
            return Ok(Reply::ok(scale_of(&existing)));
        }
        let body = parse_body(ctx.body, false)?;
        let replicas = match body.pointer("/spec/replicas") {
            None => existing
                .pointer("/spec/replicas")
                .cloned()
                .unwrap_or(json!(1)),
            Some(r) if r.as_i64().is_some_and(|n| n >= 0) => r.clone(),
            Some(r) => {
                return Err(invalid(
                    rt,
                    name,
                    "spec.replicas",
                    "FieldValueInvalid",
                    &format!("Invalid value: {r}: must be greater than or equal to 0"),
                ))
            }
        };
        let mut new = existing.clone();
        new["spec"]["replicas"] = replicas;
        let manager = field_manager(ctx).unwrap_or(DEFAULT_MANAGER).to_string();
        let updated = self.update(
            rt,
            version,
            &key,
            &existing,
            new,
            &manager,
            "Update",
            None,
            dry_run(ctx),
        )?;
        Ok(Reply::ok(scale_of(&updated)))
    }

    fn is_forbidden(&self, rt: &ResourceType, verb: &str) -> bool {
        self.faults.iter().any(|f| match f {
            Fault::Forbid { resource, verb: v } => {
                (resource == &rt.plural || resource == "*") && (v == verb || v == "*")
            }
            _ => false,
        })
    }

    fn rejection(&self, name: &str) -> Option<String> {
        self.faults.iter().find_map(|f| match f {
            Fault::Reject { name: n, message } if n == name => Some(message.clone()),
            _ => None,
        })
    }

    // --- discovery ---------------------------------------------------------

    fn api_versions(&self) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{}", self.port)}
            ]
        })
    }

    /// Non-core groups with their versions, highest priority version first.
    fn group_versions(&self) -> Vec<(String, Vec<String>)> {
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for t in self.types().filter(|t| !t.group.is_empty()) {
            map.entry(t.group.clone())
                .or_default()
                .insert(t.version.clone());
        }
        let sorted = |vs: BTreeSet<String>| {
            let mut vs: Vec<String> = vs.into_iter().collect();
            vs.sort_by_key(|v| version_sort_key(v));
            vs
        };
        let mut out = Vec::new();
        for g in BUILTIN_GROUP_ORDER {
            if let Some(vs) = map.remove(*g) {
                out.push((g.to_string(), sorted(vs)));
            }
        }
        // Groups of custom resources come after the built-in ones.
        for (g, vs) in map {
            out.push((g, sorted(vs)));
        }
        out
    }

    fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .group_versions()
            .iter()
            .map(|(g, vs)| group_json(g, vs))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    fn api_group(&self, group: &str) -> Res {
        let (name, versions) = self
            .group_versions()
            .into_iter()
            .find(|(g, _)| g == group)
            .ok_or_else(page_not_found)?;
        let mut body = group_json(&name, &versions);
        body["kind"] = json!("APIGroup");
        body["apiVersion"] = json!("v1");
        Ok(Reply::ok(body))
    }

    fn resource_list(&self, group: &str, version: &str) -> Value {
        let mut resources = Vec::new();
        for t in self
            .types()
            .filter(|t| t.group == group && t.version == version)
        {
            let mut entry = json!({
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": t.verbs,
            });
            if !t.short_names.is_empty() {
                entry["shortNames"] = json!(t.short_names);
            }
            if !t.categories.is_empty() {
                entry["categories"] = json!(t.categories);
            }
            resources.push(entry);
            // Subresources are listed as "plural/sub" with an empty singular name.
            for s in &t.subresources {
                let mut entry = json!({
                    "name": format!("{}/{}", t.plural, s.name),
                    "singularName": "",
                    "namespaced": t.namespaced,
                    "kind": s.kind,
                    "verbs": s.verbs,
                });
                if let Some((sg, sv)) = &s.group_version {
                    entry["group"] = json!(sg);
                    entry["version"] = json!(sv);
                }
                resources.push(entry);
            }
        }
        resources.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv(group, version),
            "resources": resources,
        })
    }

    // --- reads -------------------------------------------------------------

    fn get_object(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: &str,
        ctx: &Ctx,
    ) -> Res {
        let key = obj_key(rt, ns, name);
        let obj = self.objects.get(&key).ok_or_else(|| not_found(rt, name))?;
        let out = output(rt, version, obj);
        if accept_as(ctx.headers).as_deref() == Some("PartialObjectMetadata") {
            return Ok(Reply::ok(partial_metadata(&out)));
        }
        Ok(Reply::ok(out))
    }

    fn list(&self, rt: &ResourceType, version: &str, ns: Option<&str>, ctx: &Ctx) -> Res {
        let selectors = Selectors::from_query(ctx.q)?;
        let limit = match ctx.q.get("limit") {
            None | Some("") => 0,
            Some(l) => match l.parse::<i64>() {
                Ok(n) if n > 0 => n as usize,
                Ok(_) => 0,
                Err(_) => return Err(bad_request(&format!("invalid limit: {l:?}"))),
            },
        };
        // The continue token is opaque to clients: the hex-encoded
        // "namespace/name" of the last item of the previous page.
        let after = match ctx.q.get("continue") {
            None | Some("") => None,
            Some(token) => Some(
                decode_continue(token)
                    .ok_or_else(|| bad_request(&format!("continue key is not valid: {token:?}")))?,
            ),
        };
        let ns_filter = if rt.namespaced { ns } else { None };
        let mut items = Vec::new();
        let mut last: Option<(String, String)> = None;
        let mut remaining = 0usize;
        for (k, v) in self.scan(&rt.group, &rt.plural, ns_filter, after) {
            if !selectors.matches(v) {
                continue;
            }
            if limit == 0 || items.len() < limit {
                items.push(list_item(v));
                last = Some((k.2.clone(), k.3.clone()));
            } else {
                remaining += 1;
            }
        }
        let mut meta = Map::new();
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        if remaining > 0 {
            if let Some((last_ns, last_name)) = &last {
                meta.insert(
                    "continue".into(),
                    json!(encode_continue(last_ns, last_name)),
                );
                meta.insert("remainingItemCount".into(), json!(remaining));
            }
        }
        let body = if accept_as(ctx.headers).as_deref() == Some("PartialObjectMetadataList") {
            let items: Vec<Value> = items.iter().map(partial_metadata).collect();
            json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": items,
            })
        } else {
            json!({
                "kind": format!("{}List", rt.kind),
                "apiVersion": gv(&rt.group, version),
                "metadata": meta,
                "items": items,
            })
        };
        Ok(Reply::ok(body))
    }

    // --- writes ------------------------------------------------------------

    fn post(&mut self, rt: &ResourceType, version: &str, ns: Option<&str>, ctx: &Ctx) -> Res {
        let obj = parse_body(ctx.body, false)?;
        let manager = field_manager(ctx).unwrap_or(DEFAULT_MANAGER).to_string();
        let created = self.create(rt, version, ns, obj, &manager, "Update", dry_run(ctx))?;
        Ok(Reply::created(created))
    }

    /// Creates an object (POST, or server-side apply of a missing object)
    /// with the checks and the defaulting of the real apiserver.
    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        mut obj: Value,
        manager: &str,
        operation: &str,
        dry_run: bool,
    ) -> Result<Value, Reply> {
        set_type_meta(&mut obj, rt, version, operation == "Apply")?;
        // Name: explicit, or generated from generateName (5 random
        // characters, like the real server).
        let name = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
            Some(n) => n,
            None => match meta_str(&obj, "generateName").filter(|g| !g.is_empty()) {
                Some(prefix) => format!("{prefix}{}", random_suffix(5)),
                None => {
                    return Err(invalid(
                        rt,
                        "",
                        "metadata.name",
                        "FieldValueRequired",
                        "Required value: name or generateName is required",
                    ))
                }
            },
        };
        // The namespace of the URL wins; the body may only repeat it.
        let namespace = if rt.namespaced {
            let path_ns = ns.unwrap_or("");
            if let Some(body_ns) = meta_str(&obj, "namespace") {
                if !body_ns.is_empty() && body_ns != path_ns {
                    return Err(bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
            Some(path_ns.to_string())
        } else {
            None
        };
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), json!(name));
            match &namespace {
                Some(n) => {
                    m.insert("namespace".into(), json!(n));
                }
                None => {
                    m.remove("namespace");
                }
            }
        }
        // Admission (NamespaceLifecycle): the namespace must exist, and
        // not be on its way out.
        if let Some(n) = &namespace {
            if !self.objects.contains_key(&namespace_key(n)) {
                return Err(namespace_not_found(n));
            }
            if self.terminating.contains_key(n) {
                return Err(namespace_terminating(rt, &name, n));
            }
        }
        // Validation.
        if let Some(message) = self.rejection(&name) {
            return Err(rejected(rt, &name, &message));
        }
        self.admit(rt, version, &name, &mut obj)?;
        let key = obj_key(rt, namespace.as_deref(), &name);
        // PrepareForCreate: the status of a new object is the server's.
        if rt.has_status() {
            reset_status(rt, &mut obj);
        }
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "namespaces") => namespace_defaults(&mut obj, &name),
            ("", "services") => self.service_defaults(&mut obj, None, true, rt, &key)?,
            (CRD_GROUP, "customresourcedefinitions") => {
                crd_defaults(&mut obj);
                validate_crd(&obj, rt, &name)?;
            }
            _ => {}
        }
        // The storage layer refuses objects that already carry a
        // resourceVersion (answered as an internal error, code 500).
        if meta_str(&obj, "resourceVersion").is_some_and(|v| !v.is_empty()) {
            return Err(status_reply(
                500,
                "",
                "resourceVersion should not be set on objects to be created",
                Some(json!({})),
            ));
        }
        if self.objects.contains_key(&key) {
            return Err(already_exists(rt, &name));
        }
        self.fill_server_fields(rt, &mut obj, version, manager, operation, false, dry_run);
        if !dry_run {
            self.objects.insert(key, obj.clone());
            match (rt.group.as_str(), rt.plural.as_str()) {
                // What the controllers create in every new namespace.
                ("", "namespaces") => {
                    self.namespace_children(&name, 0);
                }
                // The type is served (and listed in discovery) at once, but
                // Established only after CRD_ESTABLISH_DELAY.
                (CRD_GROUP, "customresourcedefinitions") => {
                    self.pending_crds.insert(name.clone(), Instant::now());
                    self.rebuild_custom_types();
                }
                _ => {}
            }
        }
        Ok(output(rt, version, &obj))
    }

    #[allow(clippy::too_many_arguments)]
    fn patch(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        ctx: &Ctx,
    ) -> Res {
        let content_type = ctx
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        // Custom resources take no strategic merge patch (no merge keys).
        let strategic =
            content_type == "application/strategic-merge-patch+json" && rt.crd.is_none();
        let apply = match content_type.as_str() {
            "application/apply-patch+yaml" => true,
            "application/merge-patch+json" => false,
            _ if strategic => false,
            _ => return Err(unsupported_media_type()),
        };
        // An apply patch is YAML or JSON; a merge patch is JSON.
        let mut patch = parse_body(ctx.body, apply)?;
        let manager = match field_manager(ctx) {
            Some(m) => m.to_string(),
            None if apply => {
                return Err(bad_request(
                    "fieldManager: Required value: is required for apply patch",
                ))
            }
            None => DEFAULT_MANAGER.to_string(),
        };
        if apply {
            set_type_meta(&mut patch, rt, version, true)?;
        }
        if let Some(n) = meta_str(&patch, "name") {
            if !n.is_empty() && n != name {
                return Err(bad_request(&format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        if rt.namespaced {
            if let Some(body_ns) = meta_str(&patch, "namespace") {
                if !body_ns.is_empty() && Some(body_ns.as_str()) != ns {
                    return Err(bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        }
        if let Some(message) = self.rejection(name) {
            return Err(rejected(rt, name, &message));
        }
        let dry = dry_run(ctx);
        let operation = if apply { "Apply" } else { "Update" };
        let key = obj_key(rt, ns, name);
        let Some(existing) = self.objects.get(&key).cloned() else {
            if !apply || sub.is_some() {
                return Err(not_found(rt, name));
            }
            // Server-side apply creates a missing object (201). A
            // resourceVersion in the applied configuration does not matter then.
            let m = meta_mut(&mut patch);
            m.remove("resourceVersion");
            m.insert("name".into(), json!(name));
            let created = self.create(rt, version, ns, patch, &manager, operation, dry)?;
            return Ok(Reply::created(created));
        };
        // A resourceVersion in the patch is a precondition.
        if let Some(rv) = meta_str(&patch, "resourceVersion") {
            if !rv.is_empty() && Some(rv) != meta_str(&existing, "resourceVersion") {
                return Err(conflict(rt, name));
            }
        }
        strip_server_metadata(&mut patch);
        let mut merged = existing.clone();
        if strategic {
            strategic::apply(&mut merged, &patch);
        } else {
            merge_patch(&mut merged, &patch);
        }
        let updated = self.update(
            rt, version, &key, &existing, merged, &manager, operation, sub, dry,
        )?;
        Ok(Reply::ok(updated))
    }

    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        ctx: &Ctx,
    ) -> Res {
        let mut body = parse_body(ctx.body, false)?;
        set_type_meta(&mut body, rt, version, false)?;
        if let Some(n) = meta_str(&body, "name") {
            if !n.is_empty() && n != name {
                return Err(bad_request(&format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        if rt.namespaced {
            if let Some(body_ns) = meta_str(&body, "namespace") {
                if !body_ns.is_empty() && Some(body_ns.as_str()) != ns {
                    return Err(bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        }
        let key = obj_key(rt, ns, name);
        let existing = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| not_found(rt, name))?;
        // Optimistic concurrency: a resourceVersion must be the current one;
        // without one the update is unconditional.
        if let Some(rv) = meta_str(&body, "resourceVersion") {
            if !rv.is_empty() && Some(rv) != meta_str(&existing, "resourceVersion") {
                return Err(conflict(rt, name));
            }
        }
        let manager = field_manager(ctx).unwrap_or(DEFAULT_MANAGER).to_string();
        let updated = self.update(
            rt,
            version,
            &key,
            &existing,
            body,
            &manager,
            "Update",
            sub,
            dry_run(ctx),
        )?;
        Ok(Reply::ok(updated))
    }

    /// Stores `new` as the next state of `existing` (after a replace or a
    /// patch), keeping what the server owns.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        rt: &ResourceType,
        version: &str,
        key: &Key,
        existing: &Value,
        mut new: Value,
        manager: &str,
        operation: &str,
        sub: Option<&str>,
        dry_run: bool,
    ) -> Result<Value, Reply> {
        let name = key.3.clone();
        if sub == Some("status") {
            // The status subresource changes only .status.
            let status = new.get("status").cloned();
            new = existing.clone();
            set_or_remove(&mut new, "status", status);
        } else if rt.has_status() {
            // Writes to the main resource ignore .status.
            set_or_remove(&mut new, "status", existing.get("status").cloned());
        }
        // Server-owned metadata survives every update.
        {
            let old_meta = existing
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let m = meta_mut(&mut new);
            for k in [
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "managedFields",
                "name",
                "namespace",
                "resourceVersion",
            ] {
                match old_meta.get(k) {
                    Some(v) => {
                        m.insert(k.into(), v.clone());
                    }
                    None => {
                        m.remove(k);
                    }
                }
            }
        }
        if let Some(m) = new.as_object_mut() {
            m.insert("apiVersion".into(), json!(gv(&rt.group, version)));
            m.insert("kind".into(), json!(rt.kind));
        }
        if sub.is_none() {
            self.admit(rt, version, &name, &mut new)?;
        }
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "services") => self.service_defaults(&mut new, Some(existing), true, rt, key)?,
            ("", "namespaces") => namespace_defaults(&mut new, &name),
            (CRD_GROUP, "customresourcedefinitions") => {
                crd_defaults(&mut new);
                validate_crd(&new, rt, &name)?;
            }
            _ => {}
        }
        // metadata.generation counts changes of the desired state.
        if rt.has_generation() && new.get("spec") != existing.get("spec") {
            let generation = existing
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            meta_mut(&mut new).insert("generation".into(), json!(generation));
        }
        add_managed_fields_entry(
            &mut new,
            managed_entry(manager, operation, &gv(&rt.group, version), sub),
        );
        if dry_run {
            return Ok(output(rt, version, &new));
        }
        let rv = self.next_rv();
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv));
        self.objects.insert(key.clone(), new.clone());
        if rt.group == CRD_GROUP && rt.plural == "customresourcedefinitions" {
            self.rebuild_custom_types();
        }
        Ok(output(rt, version, &new))
    }

    fn delete_object(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        name: &str,
        ctx: &Ctx,
    ) -> Res {
        let key = obj_key(rt, ns, name);
        let existing = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| not_found(rt, name))?;
        let dry = dry_run(ctx) || body_dry_run(ctx.body);
        let mut out = output(rt, version, &existing);
        let namespace = rt.group.is_empty() && rt.plural == "namespaces";
        if namespace {
            // A deleted namespace stays Terminating while the namespace
            // controller deletes what is in it (here: at once), then goes.
            if existing.pointer("/metadata/deletionTimestamp").is_none() {
                meta_mut(&mut out).insert("deletionTimestamp".into(), json!(now_ts()));
            }
            set_or_remove(&mut out, "status", Some(json!({"phase": "Terminating"})));
        }
        if dry {
            return Ok(Reply::ok(out));
        }
        if namespace {
            self.delete_namespace(name);
        } else {
            self.remove_object(&key);
        }
        Ok(Reply::ok(out))
    }

    fn delete_collection(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        ctx: &Ctx,
    ) -> Res {
        let selectors = Selectors::from_query(ctx.q)?;
        let dry = dry_run(ctx) || body_dry_run(ctx.body);
        let ns_filter = if rt.namespaced { ns } else { None };
        let victims: Vec<(Key, Value)> = self
            .scan(&rt.group, &rt.plural, ns_filter, None)
            .filter(|(_, v)| selectors.matches(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut items = Vec::new();
        for (k, v) in victims {
            items.push(list_item(&v));
            if !dry {
                self.remove_object(&k);
            }
        }
        Ok(Reply::ok(json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": gv(&rt.group, version),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        })))
    }

    /// Deletes a namespace as the namespace controller does: what is in it
    /// goes at once, the namespace stays Terminating for `termination`.
    fn delete_namespace(&mut self, name: &str) {
        let key = namespace_key(name);
        let Some(existing) = self.objects.get(&key).cloned() else {
            return;
        };
        if self.terminating.contains_key(name) {
            return;
        }
        self.deleted_namespaces.push(existing.clone());
        if self.termination.is_zero() {
            self.remove_object(&key);
            return;
        }
        self.terminating.insert(name.to_string(), Instant::now());
        self.objects.retain(|k, _| k.2 != name);
        let mut stored = existing;
        meta_mut(&mut stored).insert("deletionTimestamp".into(), json!(now_ts()));
        set_or_remove(&mut stored, "status", Some(json!({"phase": "Terminating"})));
        self.rv += 1;
        meta_mut(&mut stored).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.objects.insert(key, stored);
    }

    /// Removes an object, with the cascades of a real cluster: a Namespace
    /// takes everything in it along, a CRD its type and its objects.
    fn remove_object(&mut self, key: &Key) {
        let Some(removed) = self.objects.remove(key) else {
            return;
        };
        self.rv += 1;
        if key.0.is_empty() && key.1 == "namespaces" {
            let ns = key.3.clone();
            self.objects.retain(|k, _| k.2 != ns);
        } else if key.0 == CRD_GROUP && key.1 == "customresourcedefinitions" {
            let s = |p: &str| {
                removed
                    .pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let (group, plural) = (s("/spec/group"), s("/spec/names/plural"));
            let builtin = self
                .builtin
                .iter()
                .any(|b| b.group == group && b.plural == plural);
            if !builtin {
                self.objects.retain(|k, _| !(k.0 == group && k.1 == plural));
            }
            self.pending_crds.remove(&key.3);
            self.rebuild_custom_types();
        }
    }

    /// Fills the metadata the server owns. With `keep`, fields the object
    /// already has stay (used by `insert()`, to seed realistic objects).
    #[allow(clippy::too_many_arguments)]
    fn fill_server_fields(
        &mut self,
        rt: &ResourceType,
        obj: &mut Value,
        version: &str,
        manager: &str,
        operation: &str,
        keep: bool,
        dry_run: bool,
    ) {
        let gen_applies = rt.has_generation() && (obj.get("spec").is_some() || rt.crd.is_some());
        let rv = if dry_run { None } else { Some(self.next_rv()) };
        let entry = managed_entry(manager, operation, &gv(&rt.group, version), None);
        fn missing(m: &Map<String, Value>, k: &str) -> bool {
            m.get(k).is_none_or(Value::is_null)
        }
        let m = meta_mut(obj);
        if !keep || missing(m, "uid") {
            m.insert("uid".into(), json!(new_uid()));
        }
        if !keep || missing(m, "creationTimestamp") {
            m.insert("creationTimestamp".into(), json!(now_ts()));
        }
        match rv {
            Some(rv) => {
                m.insert("resourceVersion".into(), json!(rv));
            }
            None => {
                m.remove("resourceVersion");
            }
        }
        if gen_applies {
            if !keep || missing(m, "generation") {
                m.insert("generation".into(), json!(1));
            }
        } else if !keep {
            m.remove("generation");
        }
        if !keep || missing(m, "managedFields") {
            m.insert("managedFields".into(), json!([entry]));
        }
        if !keep {
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("selfLink");
        }
    }

    /// `insert()`: store an object as if created, filling missing server
    /// fields; no admission checks. Returns the stored object.
    fn insert_obj(&mut self, mut obj: Value, manager: &str) -> Value {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let rt = self.type_for(&api_version, &kind).unwrap_or_else(|| {
            panic!("KubeServer::insert: unknown resource type apiVersion={api_version:?} kind={kind:?}")
        });
        let name = meta_str(&obj, "name")
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| panic!("KubeServer::insert: {kind} without metadata.name"));
        let ns = if rt.namespaced {
            Some(
                meta_str(&obj, "namespace")
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| {
                        panic!("KubeServer::insert: namespaced {kind} {name:?} without metadata.namespace")
                    }),
            )
        } else {
            meta_mut(&mut obj).remove("namespace");
            None
        };
        let key = obj_key(&rt, ns.as_deref(), &name);
        let (_, version) = split_api_version(&api_version);
        let version = version.to_string();
        // Seeds are held to what the real server accepts.
        if let Err(r) = self.admit(&rt, &version, &name, &mut obj) {
            panic!(
                "KubeServer::insert: the server would refuse {kind} {name}: {}",
                r.body
            );
        }
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "namespaces") => namespace_defaults(&mut obj, &name),
            ("", "services") => {
                let _ = self.service_defaults(&mut obj, None, false, &rt, &key);
            }
            (CRD_GROUP, "customresourcedefinitions") => {
                crd_defaults(&mut obj);
                if !crd_is_established(&obj) {
                    let status = crd_established_status(&obj);
                    set_or_remove(&mut obj, "status", Some(status));
                }
            }
            _ => {}
        }
        self.fill_server_fields(&rt, &mut obj, &version, manager, "Update", true, false);
        self.objects.insert(key, obj.clone());
        if rt.group == CRD_GROUP && rt.plural == "customresourcedefinitions" {
            self.pending_crds.remove(&name);
            self.rebuild_custom_types();
        }
        obj
    }

    /// What the controllers create in a new namespace: the `default`
    /// ServiceAccount and the `kube-root-ca.crt` ConfigMap. Returns the count.
    fn namespace_children(&mut self, ns: &str, age_secs: i64) -> usize {
        let created = ago(age_secs);
        self.insert_obj(
            json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": ns, "creationTimestamp": created}
            }),
            "kube-controller-manager",
        );
        self.insert_obj(
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {
                    "name": "kube-root-ca.crt", "namespace": ns, "creationTimestamp": created,
                    "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}
                },
                "data": {"ca.crt": fake_pem("CERTIFICATE", "kubernetes-cluster-ca")}
            }),
            "kube-controller-manager",
        );
        2
    }

    // --- Services ------------------------------------------------------------

    fn used_cluster_ips(&self, except: &Key) -> HashSet<String> {
        let mut used = HashSet::new();
        for (k, svc) in self.scan("", "services", None, None) {
            if k == except {
                continue;
            }
            if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
                used.insert(ip.to_string());
            }
            for ip in svc
                .pointer("/spec/clusterIPs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(ip) = ip.as_str() {
                    used.insert(ip.to_string());
                }
            }
        }
        used.remove("None");
        used.remove("");
        used
    }

    fn used_node_ports(&self, except: &Key) -> HashSet<i64> {
        let mut used = HashSet::new();
        for (k, svc) in self.scan("", "services", None, None) {
            if k == except {
                continue;
            }
            for p in svc
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
                    used.insert(np);
                }
            }
            if let Some(np) = svc
                .pointer("/spec/healthCheckNodePort")
                .and_then(Value::as_i64)
            {
                used.insert(np);
            }
        }
        used
    }

    /// A free cluster IP right now (for seeding).
    fn free_cluster_ip(&self) -> String {
        alloc_cluster_ip(&self.used_cluster_ips(&namespace_key("")))
    }

    /// A free node port right now, other than `also_taken` (for seeding).
    fn free_node_port(&self, also_taken: &[i64]) -> i64 {
        let mut used = self.used_node_ports(&namespace_key(""));
        used.extend(also_taken.iter().copied());
        alloc_node_port(&used)
    }

    /// The Service registry's defaulting and allocation: cluster IP (unless
    /// headless or ExternalName), node ports for NodePort/LoadBalancer,
    /// health check node port for `externalTrafficPolicy: Local` load
    /// balancers. With `check`, requested IPs and ports must be in range and
    /// free (422 otherwise); the cluster IP never changes once set.
    fn service_defaults(
        &self,
        obj: &mut Value,
        existing: Option<&Value>,
        check: bool,
        rt: &ResourceType,
        key: &Key,
    ) -> Result<(), Reply> {
        let name = key.3.as_str();
        let used_ips = self.used_cluster_ips(key);
        let mut used_ports = self.used_node_ports(key);
        let old_spec = existing
            .and_then(|e| e.get("spec"))
            .cloned()
            .unwrap_or_else(|| json!({}));
        let root = obj
            .as_object_mut()
            .ok_or_else(|| bad_request("the request body must be a JSON object"))?;
        let spec = root.entry("spec").or_insert_with(|| json!({}));
        if spec.is_null() {
            *spec = json!({});
        }
        let Some(spec) = spec.as_object_mut() else {
            return Err(bad_request("spec must be an object"));
        };
        let svc_type = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        spec.insert("type".into(), json!(svc_type));
        if svc_type != "ExternalName" {
            let old_ip = old_spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            let given = spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            let ip = match (old_ip, given) {
                (Some(old), Some(new)) if old != new => {
                    return Err(invalid(
                        rt,
                        name,
                        "spec.clusterIPs[0]",
                        "FieldValueInvalid",
                        &format!("Invalid value: []string{{\"{new}\"}}: may not change once set"),
                    ))
                }
                (Some(old), _) => old,
                (None, None) => alloc_cluster_ip(&used_ips),
                (None, Some(ip)) => {
                    if check && ip != "None" {
                        check_cluster_ip(rt, name, &ip, &used_ips)?;
                    }
                    ip
                }
            };
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
            spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
            spec.entry("ipFamilyPolicy")
                .or_insert_with(|| json!("SingleStack"));
            spec.entry("internalTrafficPolicy")
                .or_insert_with(|| json!("Cluster"));
        }
        spec.entry("sessionAffinity")
            .or_insert_with(|| json!("None"));
        let node_ports = svc_type == "NodePort" || svc_type == "LoadBalancer";
        if node_ports {
            spec.entry("externalTrafficPolicy")
                .or_insert_with(|| json!("Cluster"));
        }
        if svc_type == "LoadBalancer" {
            spec.entry("allocateLoadBalancerNodePorts")
                .or_insert_with(|| json!(true));
        }
        // (port, nodePort) pairs the Service had: kept across updates.
        let old_ports: Vec<(i64, i64)> = old_spec
            .get("ports")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| Some((p.get("port")?.as_i64()?, p.get("nodePort")?.as_i64()?)))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for (i, p) in ports.iter_mut().enumerate() {
                let Some(p) = p.as_object_mut() else {
                    continue;
                };
                p.entry("protocol").or_insert_with(|| json!("TCP"));
                if !p.contains_key("targetPort") {
                    if let Some(port) = p.get("port").cloned() {
                        p.insert("targetPort".into(), port);
                    }
                }
                if !node_ports {
                    continue;
                }
                let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                match p
                    .get("nodePort")
                    .and_then(Value::as_i64)
                    .filter(|n| *n != 0)
                {
                    Some(np) => {
                        let kept = old_ports.iter().any(|(_, o)| *o == np);
                        if check && !kept {
                            check_node_port(rt, name, i, np, &used_ports)?;
                        }
                        used_ports.insert(np);
                    }
                    None => {
                        let np = old_ports
                            .iter()
                            .find(|(op, _)| *op == port)
                            .map(|(_, np)| *np)
                            .unwrap_or_else(|| alloc_node_port(&used_ports));
                        used_ports.insert(np);
                        p.insert("nodePort".into(), json!(np));
                    }
                }
            }
        }
        let local_lb = svc_type == "LoadBalancer"
            && spec.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local");
        if local_lb
            && spec
                .get("healthCheckNodePort")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0
        {
            let np = old_spec
                .get("healthCheckNodePort")
                .and_then(Value::as_i64)
                .unwrap_or_else(|| alloc_node_port(&used_ports));
            spec.insert("healthCheckNodePort".into(), json!(np));
        }
        Ok(())
    }

    // --- seeds ---------------------------------------------------------------

    fn seed_put(&mut self, count: &mut usize, manager: &str, obj: Value) -> Value {
        *count += 1;
        self.insert_obj(obj, manager)
    }

    fn exists(&self, api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> bool {
        self.type_for(api_version, kind)
            .is_some_and(|rt| self.objects.contains_key(&obj_key(&rt, ns, name)))
    }

    fn seed_bulk(&mut self, ns: &str, n: usize) {
        if !self.objects.contains_key(&namespace_key(ns)) {
            self.insert_obj(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                DEFAULT_MANAGER,
            );
            self.namespace_children(ns, 0);
        }
        for i in 0..n {
            let obj = if i % 2 == 0 {
                json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {
                        "name": format!("bulk-config-{i:05}"), "namespace": ns,
                        "labels": {"lifeboat-test/bulk": "true"}
                    },
                    "data": {
                        "a.txt": random_text(200),
                        "b.txt": random_text(200),
                        "c.txt": random_text(200)
                    }
                })
            } else {
                json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {
                        "name": format!("bulk-secret-{i:05}"), "namespace": ns,
                        "labels": {"lifeboat-test/bulk": "true"}
                    },
                    "type": "Opaque",
                    "data": {
                        "a.txt": b64(random_text(200).as_bytes()),
                        "b.txt": b64(random_text(200).as_bytes()),
                        "c.txt": b64(random_text(200).as_bytes())
                    }
                })
            };
            self.insert_obj(obj, DEFAULT_MANAGER);
        }
    }

    /// See [`KubeServer::seed_realistic`]: the objects of `seed.yaml`,
    /// shaped like `kubectl get -o yaml` output of a real cluster, with its
    /// placeholders expanded (`seed.rs`).
    fn seed_realistic(&mut self, ns: &str) -> usize {
        seed::seed_realistic(self, ns)
    }
}

// ---------------------------------------------------------------------------
// Object helpers
// ---------------------------------------------------------------------------

/// The object as returned by GET/create/update: apiVersion of the request.
fn output(rt: &ResourceType, version: &str, obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(m) = out.as_object_mut() {
        m.insert("apiVersion".into(), json!(gv(&rt.group, version)));
        m.insert("kind".into(), json!(rt.kind));
    }
    out
}

/// A workload's autoscaling/v1 Scale.
fn scale_of(obj: &Value) -> Value {
    let meta = |k: &str| {
        obj.pointer(&format!("/metadata/{k}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta("name"), "namespace": meta("namespace"), "uid": meta("uid"),
            "resourceVersion": meta("resourceVersion"), "creationTimestamp": meta("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// Items of a real list response carry neither apiVersion nor kind.
fn list_item(obj: &Value) -> Value {
    let mut item = obj.clone();
    if let Some(m) = item.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    item
}

fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The metadata map of an object, created if missing.
fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let root = obj.as_object_mut().expect("made an object above");
    let m = root.entry("metadata").or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    m.as_object_mut().expect("made an object above")
}

/// A map inside metadata (labels, annotations), created if missing.
fn meta_map_mut<'a>(obj: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    let m = meta_mut(obj);
    let e = m.entry(field).or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    e.as_object_mut().expect("made an object above")
}

fn meta_str(obj: &Value, key: &str) -> Option<String> {
    obj.get("metadata")?.get(key)?.as_str().map(String::from)
}

fn set_or_remove(obj: &mut Value, key: &str, value: Option<Value>) {
    if let Some(m) = obj.as_object_mut() {
        match value {
            Some(v) => {
                m.insert(key.into(), v);
            }
            None => {
                m.remove(key);
            }
        }
    }
}

/// Checks and sets apiVersion/kind of a request body. Server-side apply
/// requires both to be present and right; POST/PUT may leave them out.
fn set_type_meta(
    obj: &mut Value,
    rt: &ResourceType,
    version: &str,
    apply: bool,
) -> Result<(), Reply> {
    let expected = gv(&rt.group, version);
    let m = obj
        .as_object_mut()
        .ok_or_else(|| bad_request("the request body must be a JSON object"))?;
    let api_version = m
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = m
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if apply {
        if api_version != expected {
            return Err(bad_request(&format!(
                "Incorrect version specified in apply patch. Specified patch version: {api_version}, expected: {expected}"
            )));
        }
        if kind != rt.kind {
            return Err(bad_request(&format!(
                "Incorrect kind specified in apply patch. Specified patch kind: {kind}, expected: {}",
                rt.kind
            )));
        }
    } else {
        if !api_version.is_empty() && api_version != expected {
            return Err(bad_request(&format!(
                "the API version in the data ({api_version}) does not match the expected API version ({expected})"
            )));
        }
        if !kind.is_empty() && kind != rt.kind {
            return Err(bad_request(&format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                rt.kind
            )));
        }
    }
    m.insert("apiVersion".into(), json!(expected));
    m.insert("kind".into(), json!(rt.kind));
    Ok(())
}

/// Metadata a client cannot set through a patch.
fn strip_server_metadata(patch: &mut Value) {
    let m = meta_mut(patch);
    for k in [
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "generation",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
    ] {
        m.remove(k);
    }
}

/// JSON merge patch (RFC 7386): maps merge recursively, `null` deletes, lists
/// and scalars replace. Also used for server-side apply (without field
/// ownership).
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn managed_entry(manager: &str, operation: &str, api_version: &str, sub: Option<&str>) -> Value {
    let mut entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now_ts(),
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {}},
    });
    if let Some(s) = sub {
        entry["subresource"] = json!(s);
    }
    entry
}

/// Replaces the entry of the same manager/operation/subresource, or appends.
fn add_managed_fields_entry(obj: &mut Value, entry: Value) {
    let m = meta_mut(obj);
    let list = m.entry("managedFields").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let list = list.as_array_mut().expect("made an array above");
    let same = |e: &Value| {
        e.get("manager") == entry.get("manager")
            && e.get("operation") == entry.get("operation")
            && e.get("subresource") == entry.get("subresource")
    };
    list.retain(|e| !same(e));
    list.push(entry);
}

/// PrepareForCreate of the real registries: clients do not set status.
fn reset_status(rt: &ResourceType, obj: &mut Value) {
    let status = match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => Some(json!({"phase": "Pending"})),
        ("", "namespaces") => Some(json!({"phase": "Active"})),
        ("", "services") => Some(json!({"loadBalancer": {}})),
        ("", "persistentvolumeclaims") => Some(json!({"phase": "Pending"})),
        (CRD_GROUP, "customresourcedefinitions") => Some(crd_initial_status(obj)),
        // Custom resources with a status subresource lose .status on create.
        _ if rt.crd.is_some() => None,
        _ => Some(json!({})),
    };
    set_or_remove(obj, "status", status);
}

/// Namespace defaulting: finalizer, phase, and the immutable name label.
fn namespace_defaults(obj: &mut Value, name: &str) {
    if let Some(root) = obj.as_object_mut() {
        let spec = root.entry("spec").or_insert_with(|| json!({}));
        if let Some(spec) = spec.as_object_mut() {
            spec.entry("finalizers")
                .or_insert_with(|| json!(["kubernetes"]));
        }
        let status = root.entry("status").or_insert_with(|| json!({}));
        if let Some(status) = status.as_object_mut() {
            status.entry("phase").or_insert_with(|| json!("Active"));
        }
    }
    meta_map_mut(obj, "labels").insert("kubernetes.io/metadata.name".into(), json!(name));
}

fn crd_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !kind.is_empty() {
            names
                .entry("singular")
                .or_insert_with(|| json!(kind.to_lowercase()));
            names
                .entry("listKind")
                .or_insert_with(|| json!(format!("{kind}List")));
        }
    }
    spec.entry("conversion")
        .or_insert_with(|| json!({"strategy": "None"}));
}

/// The checks of the CRD validation that clients run into.
fn validate_crd(obj: &Value, rt: &ResourceType, name: &str) -> Result<(), Reply> {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (group, plural, kind, scope) = (
        s("/spec/group"),
        s("/spec/names/plural"),
        s("/spec/names/kind"),
        s("/spec/scope"),
    );
    for (field, value) in [
        ("spec.group", &group),
        ("spec.names.plural", &plural),
        ("spec.names.kind", &kind),
    ] {
        if value.is_empty() {
            return Err(invalid(
                rt,
                name,
                field,
                "FieldValueRequired",
                "Required value",
            ));
        }
    }
    if scope != "Namespaced" && scope != "Cluster" {
        return Err(invalid(
            rt,
            name,
            "spec.scope",
            "FieldValueNotSupported",
            &format!(
                "Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""
            ),
        ));
    }
    if name != format!("{plural}.{group}") {
        return Err(invalid(
            rt,
            name,
            "metadata.name",
            "FieldValueInvalid",
            &format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let versions = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if storage != 1 {
        return Err(invalid(
            rt,
            name,
            "spec.versions",
            "FieldValueInvalid",
            "Invalid value: must have exactly one version marked as storage version",
        ));
    }
    Ok(())
}

fn crd_stored_versions(crd: &Value) -> Vec<String> {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").and_then(Value::as_str).map(String::from))
        .collect()
}

/// Status of a CRD right after creation: names not accepted yet, no
/// conditions.
fn crd_initial_status(crd: &Value) -> Value {
    json!({
        "acceptedNames": {"kind": "", "plural": ""},
        "conditions": [],
        "storedVersions": crd_stored_versions(crd),
    })
}

fn crd_established_status(crd: &Value) -> Value {
    let now = now_ts();
    json!({
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({})),
        "conditions": [
            {
                "type": "NamesAccepted", "status": "True", "lastTransitionTime": now,
                "reason": "NoConflicts", "message": "no conflicts found"
            },
            {
                "type": "Established", "status": "True", "lastTransitionTime": now,
                "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"
            }
        ],
        "storedVersions": crd_stored_versions(crd),
    })
}

fn crd_is_established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Established")
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
}

fn alloc_cluster_ip(used: &HashSet<String>) -> String {
    let mut rng = rand::thread_rng();
    loop {
        let ip = format!(
            "10.96.{}.{}",
            rng.gen_range(0..=255u32),
            rng.gen_range(1..=254u32)
        );
        // 10.96.0.1 is the kubernetes Service, 10.96.0.10 the cluster DNS.
        if ip != "10.96.0.1" && ip != "10.96.0.10" && !used.contains(&ip) {
            return ip;
        }
    }
}

fn alloc_node_port(used: &HashSet<i64>) -> i64 {
    let mut rng = rand::thread_rng();
    loop {
        let port = rng.gen_range(30000..=32767i64);
        if !used.contains(&port) {
            return port;
        }
    }
}

/// The service IP allocator's checks (service CIDR 10.96.0.0/12).
fn check_cluster_ip(
    rt: &ResourceType,
    name: &str,
    ip: &str,
    used: &HashSet<String>,
) -> Result<(), Reply> {
    let Ok(addr) = ip.parse::<Ipv4Addr>() else {
        return Err(invalid(
            rt,
            name,
            "spec.clusterIPs[0]",
            "FieldValueInvalid",
            &format!("Invalid value: \"{ip}\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
        ));
    };
    if u32::from(addr) & 0xFFF0_0000 != 0x0A60_0000 {
        return Err(invalid(
            rt,
            name,
            "spec.clusterIPs",
            "FieldValueInvalid",
            &format!(
                "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
            ),
        ));
    }
    if used.contains(ip) {
        return Err(invalid(
            rt,
            name,
            "spec.clusterIPs",
            "FieldValueInvalid",
            &format!("Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"),
        ));
    }
    Ok(())
}

fn check_node_port(
    rt: &ResourceType,
    name: &str,
    index: usize,
    port: i64,
    used: &HashSet<i64>,
) -> Result<(), Reply> {
    let field = format!("spec.ports[{index}].nodePort");
    if !(30000..=32767).contains(&port) {
        return Err(invalid(
            rt,
            name,
            &field,
            "FieldValueInvalid",
            &format!(
                "Invalid value: {port}: provided port is not in the valid range. The range of valid ports is 30000-32767"
            ),
        ));
    }
    if used.contains(&port) {
        return Err(invalid(
            rt,
            name,
            &field,
            "FieldValueInvalid",
            &format!("Invalid value: {port}: provided port is already allocated"),
        ));
    }
    Ok(())
}

/// Adds `kubectl.kubernetes.io/last-applied-configuration` as `kubectl
/// apply` does (the applied configuration as compact JSON plus a newline).
fn with_last_applied(mut obj: Value) -> Value {
    let mut applied = Map::new();
    for k in ["apiVersion", "kind"] {
        if let Some(v) = obj.get(k) {
            applied.insert(k.into(), v.clone());
        }
    }
    let mut meta = Map::new();
    for k in ["name", "namespace", "labels"] {
        if let Some(v) = obj.get("metadata").and_then(|m| m.get(k)) {
            meta.insert(k.into(), v.clone());
        }
    }
    applied.insert("metadata".into(), Value::Object(meta));
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                applied.insert(k.clone(), v.clone());
            }
        }
    }
    let text = format!("{}\n", Value::Object(applied));
    meta_map_mut(&mut obj, "annotations").insert(
        "kubectl.kubernetes.io/last-applied-configuration".into(),
        json!(text),
    );
    obj
}

// ---------------------------------------------------------------------------
// Status (error) documents, like the real apiserver's
// ---------------------------------------------------------------------------

fn status_reply(code: u16, reason: &str, message: &str, details: Option<Value>) -> Reply {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "code": code,
    });
    if !reason.is_empty() {
        body["reason"] = json!(reason);
    }
    if let Some(d) = details {
        body["details"] = d;
    }
    Reply {
        code,
        body,
        raw: None,
    }
}

fn details(rt: &ResourceType, name: Option<&str>, kind: &str) -> Value {
    let mut d = Map::new();
    if let Some(n) = name {
        d.insert("name".into(), json!(n));
    }
    if !rt.group.is_empty() {
        d.insert("group".into(), json!(rt.group));
    }
    d.insert("kind".into(), json!(kind));
    Value::Object(d)
}

/// 404 for paths and types the server does not serve.
fn page_not_found() -> Reply {
    status_reply(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

fn method_not_allowed() -> Reply {
    status_reply(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        Some(json!({})),
    )
}

fn unsupported_media_type() -> Reply {
    status_reply(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/apply-patch+yaml",
        Some(json!({})),
    )
}

fn bad_request(message: &str) -> Reply {
    status_reply(400, "BadRequest", message, Some(json!({})))
}

fn not_found(rt: &ResourceType, name: &str) -> Reply {
    status_reply(
        404,
        "NotFound",
        &format!("{} \"{}\" not found", rt.qualified(), name),
        Some(details(rt, Some(name), &rt.plural)),
    )
}

fn namespace_not_found(ns: &str) -> Reply {
    status_reply(
        404,
        "NotFound",
        &format!("namespaces \"{ns}\" not found"),
        Some(json!({"name": ns, "kind": "namespaces"})),
    )
}

fn already_exists(rt: &ResourceType, name: &str) -> Reply {
    status_reply(
        409,
        "AlreadyExists",
        &format!("{} \"{}\" already exists", rt.qualified(), name),
        Some(details(rt, Some(name), &rt.plural)),
    )
}

fn conflict(rt: &ResourceType, name: &str) -> Reply {
    status_reply(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
            rt.qualified(),
            name
        ),
        Some(details(rt, Some(name), &rt.plural)),
    )
}

/// 422 Invalid: `Service "web" is invalid: <field>: <detail>`.
fn invalid(rt: &ResourceType, name: &str, field: &str, cause_reason: &str, detail: &str) -> Reply {
    let message = format!(
        "{} \"{}\" is invalid: {}: {}",
        rt.qualified_kind(),
        name,
        field,
        detail
    );
    let mut d = details(rt, Some(name), &rt.kind);
    d["causes"] = json!([{"reason": cause_reason, "message": detail, "field": field}]);
    status_reply(422, "Invalid", &message, Some(d))
}

/// NamespaceLifecycle's answer to a create in a Terminating namespace.
fn namespace_terminating(rt: &ResourceType, name: &str, ns: &str) -> Reply {
    let mut d = details(rt, Some(name), &rt.plural);
    d["causes"] = json!([{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]);
    status_reply(
        403,
        "Forbidden",
        &format!(
            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            rt.qualified()
        ),
        Some(d),
    )
}

/// The Invalid status of a `Fault::Reject`: the message is the fault's.
fn rejected(rt: &ResourceType, name: &str, message: &str) -> Reply {
    let mut d = details(rt, Some(name), &rt.kind);
    d["causes"] =
        json!([{"reason": "FieldValueInvalid", "message": message, "field": "metadata.name"}]);
    status_reply(422, "Invalid", message, Some(d))
}

fn forbidden(
    rt: &ResourceType,
    verb: &str,
    sub: Option<&str>,
    ns: Option<&str>,
    name: Option<&str>,
) -> Reply {
    let resource = match sub {
        Some(s) => format!("{}/{}", rt.plural, s),
        None => rt.plural.clone(),
    };
    let subject = match name {
        Some(n) => format!("{} \"{}\"", rt.qualified(), n),
        None => rt.qualified(),
    };
    let scope = match ns {
        Some(ns) if rt.namespaced => format!("in the namespace \"{ns}\""),
        _ => "at the cluster scope".to_string(),
    };
    let message = format!(
        "{subject} is forbidden: User \"{FORBIDDEN_USER}\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
        rt.group
    );
    status_reply(
        403,
        "Forbidden",
        &message,
        Some(details(rt, name, &rt.plural)),
    )
}

fn require_get(ctx: &Ctx) -> Result<(), Reply> {
    if *ctx.method == Method::GET {
        Ok(())
    } else {
        Err(method_not_allowed())
    }
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-lifeboat-test",
        "gitCommit": "70d3cc986aa8221cd1dfb1121852688902d3bf53",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T17:57:44Z",
        "goVersion": "go1.23.3",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": vs, "preferredVersion": preferred})
}

// ---------------------------------------------------------------------------
// Request parsing
// ---------------------------------------------------------------------------

/// A parsed query string (form encoding, `+` is a space).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Query {
        Query(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (pct_decode(k, true), pct_decode(v, true))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn pct_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(if c == b'+' && plus_is_space { b' ' } else { c });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn field_manager<'a>(ctx: &'a Ctx) -> Option<&'a str> {
    ctx.q.get("fieldManager").filter(|m| !m.is_empty())
}

fn dry_run(ctx: &Ctx) -> bool {
    ctx.q.get("dryRun") == Some("All")
}

/// DeleteOptions in the body may ask for a dry run: `{"dryRun":["All"]}`.
fn body_dry_run(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("dryRun").cloned())
        .and_then(|d| d.as_array().cloned())
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("All")))
}

/// The `as=` parameter of the first media type in Accept
/// (`PartialObjectMetadata`, `PartialObjectMetadataList`, ...).
fn accept_as(headers: &HeaderMap) -> Option<String> {
    let accept = headers.get(ACCEPT)?.to_str().ok()?;
    let first = accept.split(',').next()?;
    first
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("as="))
        .map(String::from)
}

/// A request body as a JSON object; with `yaml`, YAML is accepted too.
fn parse_body(body: &[u8], yaml: bool) -> Result<Value, Reply> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(json_err) => {
            if !yaml {
                return Err(bad_request(&format!(
                    "the request body is not a valid JSON object: {json_err}"
                )));
            }
            serde_yaml::from_slice(body)
                .map_err(|e| bad_request(&format!("error decoding YAML: {e}")))?
        }
    };
    validate_shape(&value)?;
    Ok(value)
}

/// The decoding errors the real server gives for badly typed metadata.
fn validate_shape(v: &Value) -> Result<(), Reply> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad_request("the request body must be a JSON object"))?;
    match obj.get("metadata") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(m)) => {
            for k in [
                "name",
                "namespace",
                "generateName",
                "resourceVersion",
                "uid",
            ] {
                if let Some(x) = m.get(k) {
                    if !x.is_string() && !x.is_null() {
                        return Err(bad_request(&format!(
                            "json: cannot unmarshal into Go struct field ObjectMeta.metadata.{k} of type string"
                        )));
                    }
                }
            }
            for k in ["labels", "annotations"] {
                match m.get(k) {
                    None | Some(Value::Null) => {}
                    // null values are allowed: they delete keys in patches.
                    Some(Value::Object(map)) if map.values().all(|x| x.is_string() || x.is_null()) => {}
                    Some(_) => {
                        return Err(bad_request(&format!(
                            "json: cannot unmarshal into Go struct field ObjectMeta.metadata.{k} of type map[string]string"
                        )))
                    }
                }
            }
            Ok(())
        }
        Some(_) => Err(bad_request(
            "json: cannot unmarshal into Go struct field of type v1.ObjectMeta",
        )),
    }
}

fn encode_continue(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Option<(String, String)> {
    if token.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (ns, name) = text.split_once('/')?;
    Some((ns.to_string(), name.to_string()))
}

// --- selectors ---------------------------------------------------------------

#[derive(Debug)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl LabelReq {
    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        match self {
            LabelReq::Eq(k, v) => get(k.as_str()) == Some(v.as_str()),
            // As in Kubernetes: != and notin also match objects without the label.
            LabelReq::NotEq(k, v) => get(k.as_str()) != Some(v.as_str()),
            LabelReq::Exists(k) => get(k.as_str()).is_some(),
            LabelReq::NotExists(k) => get(k.as_str()).is_none(),
            LabelReq::In(k, vs) => {
                get(k.as_str()).is_some_and(|x| vs.iter().any(|v| v.as_str() == x))
            }
            LabelReq::NotIn(k, vs) => {
                get(k.as_str()).is_none_or(|x| !vs.iter().any(|v| v.as_str() == x))
            }
        }
    }
}

struct FieldReq {
    path: String,
    value: String,
    negate: bool,
}

/// `labelSelector` and `fieldSelector` of a list or delete-collection request.
struct Selectors {
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Selectors {
    fn from_query(q: &Query) -> Result<Selectors, Reply> {
        let labels = match q.get("labelSelector") {
            Some(s) => parse_label_selector(s).map_err(|e| bad_request(&e))?,
            None => Vec::new(),
        };
        let fields = match q.get("fieldSelector") {
            Some(s) => parse_field_selector(s).map_err(|e| bad_request(&e))?,
            None => Vec::new(),
        };
        Ok(Selectors { labels, fields })
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        self.labels.iter().all(|r| r.matches(labels))
            && self
                .fields
                .iter()
                .all(|f| (field_value(obj, &f.path) == f.value) != f.negate)
    }
}

/// Splits at commas outside parentheses (`a in (x,y),b` is two terms).
fn split_top_level(s: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                current.push(c);
            }
            ')' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            ',' if depth == 0 => terms.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    terms.push(current);
    terms
}

fn valid_label_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn valid_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Label selector terms: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
/// `k notin (a,b)`.
fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, String> {
    let mut out = Vec::new();
    for term in split_top_level(s) {
        let t = term.trim();
        if !t.is_empty() {
            out.push(parse_label_term(t)?);
        }
    }
    Ok(out)
}

fn parse_label_term(t: &str) -> Result<LabelReq, String> {
    let bad = || format!("unable to parse requirement: invalid label selector term {t:?}");
    if let Some(k) = t.strip_prefix('!') {
        let k = k.trim();
        return if valid_label_key(k) {
            Ok(LabelReq::NotExists(k.to_string()))
        } else {
            Err(bad())
        };
    }
    for (op, negate) in [(" notin ", true), (" in ", false)] {
        if let Some(i) = t.find(op) {
            let key = t[..i].trim();
            let set = t[i + op.len()..].trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(bad)?;
            let values: Vec<String> = inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            if !valid_label_key(key) || values.iter().any(|v| !valid_label_value(v)) {
                return Err(bad());
            }
            return Ok(if negate {
                LabelReq::NotIn(key.to_string(), values)
            } else {
                LabelReq::In(key.to_string(), values)
            });
        }
    }
    let (key, value, negate) = if let Some((k, v)) = t.split_once("!=") {
        (k, v, true)
    } else if let Some((k, v)) = t.split_once("==") {
        (k, v, false)
    } else if let Some((k, v)) = t.split_once('=') {
        (k, v, false)
    } else {
        return if valid_label_key(t) {
            Ok(LabelReq::Exists(t.to_string()))
        } else {
            Err(bad())
        };
    };
    let (key, value) = (key.trim(), value.trim());
    if !valid_label_key(key) || !valid_label_value(value) {
        return Err(bad());
    }
    Ok(if negate {
        LabelReq::NotEq(key.to_string(), value.to_string())
    } else {
        LabelReq::Eq(key.to_string(), value.to_string())
    })
}

/// Field selector terms `path=v`, `path==v`, `path!=v` on any dotted path
/// (`metadata.name`, `metadata.namespace`, `type`, `status.phase`, ...).
fn parse_field_selector(s: &str) -> Result<Vec<FieldReq>, String> {
    let mut out = Vec::new();
    for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (path, value, negate) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, v, false)
        } else if let Some((k, v)) = term.split_once('=') {
            (k, v, false)
        } else {
            return Err(format!(
                "invalid selector: '{s}'; can't understand '{term}'"
            ));
        };
        out.push(FieldReq {
            path: path.trim().to_string(),
            value: value.trim().to_string(),
            negate,
        });
    }
    Ok(out)
}

fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------
// Small helpers: time, ids, encodings, fake key material
// ---------------------------------------------------------------------------

const DAY: i64 = 86_400;

const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// RFC 3339 UTC with seconds, as creationTimestamp.
fn now_ts() -> String {
    ago(0)
}

fn ago(secs: i64) -> String {
    (chrono::Utc::now() - chrono::TimeDelta::seconds(secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// MicroTime, as Lease times.
fn ago_micro(secs: i64) -> String {
    (chrono::Utc::now() - chrono::TimeDelta::seconds(secs))
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// A random UUID (version 4 layout), like metadata.uid.
fn new_uid() -> String {
    let b: [u8; 16] = rand::thread_rng().gen();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let variant = ['8', '9', 'a', 'b'][(b[8] & 3) as usize];
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        variant,
        &h[17..20],
        &h[20..32]
    )
}

fn random_hex(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from_digit(rng.gen_range(0..16u32), 16).unwrap_or('0'))
        .collect()
}

/// The alphabet of generateName suffixes (no vowels, no confusable digits).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn random_suffix(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| NAME_ALPHABET[rng.gen_range(0..NAME_ALPHABET.len())] as char)
        .collect()
}

fn random_text(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
        .collect()
}

fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Deterministic pseudo-random bytes (splitmix64 seeded by `seed`).
fn pseudo_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut x = fnv64(seed.as_bytes());
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn fake_hex(seed: &str, len: usize) -> String {
    let h: String = pseudo_bytes(seed, len.div_ceil(2))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    h[..len].to_string()
}

/// Standard base64 with padding (Secret data).
fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// A PEM block with deterministic fake content (not a usable key).
fn fake_pem(label: &str, seed: &str) -> String {
    let body = b64(&pseudo_bytes(seed, 480));
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(line));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// A JWT-shaped service account token (fake signature).
fn fake_jwt(ns: &str, sa: &str) -> String {
    let url = |s: String| s.trim_end_matches('=').replace('+', "-").replace('/', "_");
    let header = url(b64(br#"{"alg":"RS256","kid":"lifeboat-test"}"#));
    let claims = json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": ns,
        "kubernetes.io/serviceaccount/secret.name": format!("{sa}-token-x7k2p"),
        "kubernetes.io/serviceaccount/service-account.name": sa,
        "sub": format!("system:serviceaccount:{ns}:{sa}")
    });
    let payload = url(b64(claims.to_string().as_bytes()));
    let signature = url(b64(&pseudo_bytes(&format!("{ns}/{sa}"), 256)));
    format!("{header}.{payload}.{signature}")
}
