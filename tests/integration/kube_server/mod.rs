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
//!
//! Layout: this file holds the public API ([`KubeServer`], [`Fault`]); the
//! server itself is spread by concern over `http.rs` (hyper glue, request
//! parsing), `routing.rs` (authentication, paths, verbs), `discovery.rs`,
//! `list.rs` (get, list, selectors), `writes.rs` (create, replace, update,
//! delete), `patch.rs`, `subresources.rs` (status, scale), `store.rs` (the
//! objects, resource versions, cascades, seeding), `types.rs` (the
//! built-in resource types), `crd.rs`, `services.rs` (IP and port
//! allocation), `objects.rs` (object helpers), `errors.rs` (Status
//! documents) and `util.rs`; `admission.rs`, `openapi.rs`, `seed.rs` and
//! `strategic.rs` as described above.

#![allow(dead_code)]

mod admission;
mod openapi;
mod seed;
mod strategic;

mod crd;
mod discovery;
mod errors;
mod http;
mod list;
mod objects;
mod patch;
mod routing;
mod services;
mod store;
mod subresources;
mod types;
mod util;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

// Some of these are only for `seed.rs`, which imports them from `super`.
use self::http::serve;
use self::objects::{meta_str, output, with_last_applied};
use self::store::{obj_key, State};
use self::types::{split_api_version, DEFAULT_MANAGER};
use self::util::{
    ago, ago_micro, b64, fake_hex, fake_jwt, fake_pem, fnv64, new_uid, random_hex, DAY,
};

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
