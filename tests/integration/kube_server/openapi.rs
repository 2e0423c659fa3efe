//! The OpenAPI v3 documents kubectl reads, generated from the server's
//! own table of types (built-in and CRD-registered), never written per
//! kind.
//!
//! kubectl (1.27+) fetches `/openapi/v3`, then the document of the
//! object's group/version, and looks for the PATCH operation whose
//! `x-kubernetes-group-version-kind` is the object's kind: when it takes
//! the `fieldValidation` query parameter, kubectl leaves validation to
//! the server (`fieldValidation=Strict` on every write) instead of
//! validating against OpenAPI v2 schemas itself. For custom resources it
//! checks the Namespace PATCH operation in `api/v1` instead. No component
//! schemas are served and the operations do not offer strategic merge
//! patch, so kubectl's client-side apply falls back to its compiled-in
//! types, as it does against servers without schemas.

use serde_json::{json, Map, Value};

/// One served resource type.
pub struct Served<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    pub plural: &'a str,
    pub namespaced: bool,
    pub patchable: bool,
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A stable hash of a document name, as the real server's `?hash=`.
fn hash(s: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

/// `/openapi/v3`: one entry per group/version (`groups` without core).
pub fn index(groups: &[(String, Vec<String>)]) -> Value {
    let mut paths = Map::new();
    let mut add = |group: &str, version: &str| {
        let p = gv_path(group, version);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&p))}),
        );
    };
    add("", "v1");
    for (g, versions) in groups {
        for v in versions {
            add(g, v);
        }
    }
    json!({ "paths": paths })
}

/// `/openapi/v3/apis/GROUP/VERSION`: the object paths of every type, with
/// their PATCH operation.
pub fn group_version(types: &[Served]) -> Value {
    let mut paths = Map::new();
    for t in types.iter().filter(|t| t.patchable) {
        let base = format!("/{}", gv_path(t.group, t.version));
        let path = if t.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{base}/{}/{{name}}", t.plural)
        };
        let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        paths.insert(
            path,
            json!({
                "patch": {
                    "operationId": format!("patch{}", t.kind),
                    "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation"), {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}],
                    "requestBody": {"content": {
                        "application/apply-patch+yaml": {"schema": {}},
                        "application/merge-patch+json": {"schema": {}}
                    }, "required": true},
                    "responses": {"200": {"description": "OK"}, "201": {"description": "Created"}},
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": {"group": t.group, "version": t.version, "kind": t.kind}
                }
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}}
    })
}
