//! Discovery: `/version`, `/api`, `/apis`, `/apis/{group}` and the resource
//! lists of each group/version, with the groups and versions in the order
//! a real server gives them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::errors::*;
use super::http::*;
use super::store::*;
use super::types::*;

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

impl State {
    pub(super) fn api_versions(&self) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{}", self.port)}
            ]
        })
    }

    /// Non-core groups with their versions, highest priority version first.
    pub(super) fn group_versions(&self) -> Vec<(String, Vec<String>)> {
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

    pub(super) fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .group_versions()
            .iter()
            .map(|(g, vs)| group_json(g, vs))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    pub(super) fn api_group(&self, group: &str) -> Res {
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

    pub(super) fn resource_list(&self, group: &str, version: &str) -> Value {
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

pub(super) fn version_info() -> Value {
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
