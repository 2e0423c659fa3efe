//! The object store: [`State`] with its objects keyed by (group, plural,
//! namespace, name), the global resourceVersion counter, the types in
//! service, admission of objects about to be stored, the server-filled
//! metadata, deletion with its cascades (namespaces, CRDs) and the seeding
//! of test objects.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::crd::*;
use super::errors::*;
use super::http::*;
use super::objects::*;
use super::types::*;
use super::util::*;
use super::{admission, seed, Fault};

/// (group, plural, namespace ("" when cluster-scoped), name). Objects are
/// stored independently of the version they were written with.
pub(super) type Key = (String, String, String, String);

pub(super) fn obj_key(rt: &ResourceType, ns: Option<&str>, name: &str) -> Key {
    let ns = if rt.namespaced { ns.unwrap_or("") } else { "" };
    (
        rt.group.clone(),
        rt.plural.clone(),
        ns.to_string(),
        name.to_string(),
    )
}

pub(super) fn namespace_key(ns: &str) -> Key {
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

pub(super) struct State {
    pub(super) port: u16,
    pub(super) token: String,
    pub(super) builtin: Vec<ResourceType>,
    /// Types registered by stored CRDs (derived from them).
    pub(super) custom: Vec<ResourceType>,
    /// Stored objects, each with apiVersion and kind set.
    pub(super) objects: BTreeMap<Key, Value>,
    /// The global resourceVersion counter.
    pub(super) rv: u64,
    pub(super) faults: Vec<Fault>,
    /// Requests without credentials act as an authorized anonymous user
    /// (a server with anonymous auth on and RBAC allowing it): kubectl
    /// sends no bearer token over plain HTTP.
    pub(super) anonymous: bool,
    /// Added to every answer: a network round trip to a real cluster.
    pub(super) latency: Duration,
    pub(super) requests: Vec<String>,
    /// CRDs created through the API that are not Established yet.
    pub(super) pending_crds: HashMap<String, Instant>,
    /// Deleted namespaces still Terminating, with when they were deleted.
    pub(super) terminating: HashMap<String, Instant>,
    /// How long a deleted namespace stays Terminating.
    pub(super) termination: Duration,
    /// Namespaces deleted through the API or [`KubeServer::delete_namespace`],
    /// as they were just before.
    pub(super) deleted_namespaces: Vec<Value>,
    /// The request asked for `fieldValidation=Strict`.
    pub(super) strict: bool,
}

/// How long a deleted namespace stays Terminating by default (a real
/// cluster takes seconds to minutes; long enough for a client to see it).
const NAMESPACE_TERMINATION: Duration = Duration::from_millis(300);

/// The namespaces every cluster has.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-node-lease", "kube-public", "kube-system"];

impl State {
    pub(super) fn new(port: u16, token: String) -> State {
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

    pub(super) fn add_system_namespaces(&mut self) {
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
    pub(super) fn admit(
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

    pub(super) fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    pub(super) fn types(&self) -> impl Iterator<Item = &ResourceType> + '_ {
        self.builtin.iter().chain(self.custom.iter())
    }

    pub(super) fn find_type(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<ResourceType> {
        self.types()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    pub(super) fn type_for(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        let (group, version) = split_api_version(api_version);
        self.types()
            .find(|t| t.group == group && t.version == version && t.kind == kind)
            .cloned()
    }

    /// Objects of one type in key order (namespace, name), optionally only
    /// in one namespace, optionally starting after a (namespace, name).
    pub(super) fn scan(
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
    pub(super) fn tick(&mut self) {
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

    pub(super) fn rebuild_custom_types(&mut self) {
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

    /// Deletes a namespace as the namespace controller does: what is in it
    /// goes at once, the namespace stays Terminating for `termination`.
    pub(super) fn delete_namespace(&mut self, name: &str) {
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
    pub(super) fn remove_object(&mut self, key: &Key) {
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
    pub(super) fn fill_server_fields(
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
    pub(super) fn insert_obj(&mut self, mut obj: Value, manager: &str) -> Value {
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
    pub(super) fn namespace_children(&mut self, ns: &str, age_secs: i64) -> usize {
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

    pub(super) fn seed_put(&mut self, count: &mut usize, manager: &str, obj: Value) -> Value {
        *count += 1;
        self.insert_obj(obj, manager)
    }

    pub(super) fn exists(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> bool {
        self.type_for(api_version, kind)
            .is_some_and(|rt| self.objects.contains_key(&obj_key(&rt, ns, name)))
    }

    pub(super) fn seed_bulk(&mut self, ns: &str, n: usize) {
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
    pub(super) fn seed_realistic(&mut self, ns: &str) -> usize {
        seed::seed_realistic(self, ns)
    }
}

const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";
