//! Writes: create (POST), replace (PUT), the update every write ends in
//! (server-owned fields kept, generation, managedFields, resourceVersion),
//! delete and delete collection.

use std::time::Instant;

use serde_json::{json, Value};

use super::crd::*;
use super::errors::*;
use super::http::*;
use super::list::*;
use super::objects::*;
use super::routing::*;
use super::store::*;
use super::subresources::*;
use super::types::*;
use super::util::*;

impl State {
    pub(super) fn post(
        &mut self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        ctx: &Ctx,
    ) -> Res {
        let obj = parse_body(ctx.body, false)?;
        let manager = field_manager(ctx).unwrap_or(DEFAULT_MANAGER).to_string();
        let created = self.create(rt, version, ns, obj, &manager, "Update", dry_run(ctx))?;
        Ok(Reply::created(created))
    }

    /// Creates an object (POST, or server-side apply of a missing object)
    /// with the checks and the defaulting of the real apiserver.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn create(
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
        let (name, namespace) = name_and_namespace(rt, ns, &mut obj)?;
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
    pub(super) fn put(
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
    pub(super) fn update(
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

    pub(super) fn delete_object(
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

    pub(super) fn delete_collection(
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
}

/// The name of an object to create (explicit, or generated) and its
/// namespace (the URL's), both written into its metadata.
fn name_and_namespace(
    rt: &ResourceType,
    ns: Option<&str>,
    obj: &mut Value,
) -> Result<(String, Option<String>), Reply> {
    // Name: explicit, or generated from generateName (5 random
    // characters, like the real server).
    let name = match meta_str(obj, "name").filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => match meta_str(obj, "generateName").filter(|g| !g.is_empty()) {
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
        if let Some(body_ns) = meta_str(obj, "namespace") {
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
        let m = meta_mut(obj);
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
    Ok((name, namespace))
}
