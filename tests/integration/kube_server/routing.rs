//! Request routing: authentication, the path split into discovery, OpenAPI
//! and resource requests, the verb of a resource request and its checks
//! (served type, allowed verb and subresource, injected faults), then the
//! handler of that verb.

use hyper::header::AUTHORIZATION;
use hyper::{HeaderMap, Method, Uri};
use serde_json::{json, Value};

use super::discovery::*;
use super::errors::*;
use super::http::*;
use super::store::*;
use super::types::*;
use super::{openapi, Fault};

/// What a handler needs to know about the request.
pub(super) struct Ctx<'a> {
    pub(super) method: &'a Method,
    pub(super) q: &'a Query,
    pub(super) headers: &'a HeaderMap,
    pub(super) body: &'a [u8],
}

impl State {
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

    pub(super) fn handle(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Reply {
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

    fn is_forbidden(&self, rt: &ResourceType, verb: &str) -> bool {
        self.faults.iter().any(|f| match f {
            Fault::Forbid { resource, verb: v } => {
                (resource == &rt.plural || resource == "*") && (v == verb || v == "*")
            }
            _ => false,
        })
    }

    pub(super) fn rejection(&self, name: &str) -> Option<String> {
        self.faults.iter().find_map(|f| match f {
            Fault::Reject { name: n, message } if n == name => Some(message.clone()),
            _ => None,
        })
    }
}

fn require_get(ctx: &Ctx) -> Result<(), Reply> {
    if *ctx.method == Method::GET {
        Ok(())
    } else {
        Err(method_not_allowed())
    }
}

pub(super) fn field_manager<'a>(ctx: &'a Ctx) -> Option<&'a str> {
    ctx.q.get("fieldManager").filter(|m| !m.is_empty())
}

pub(super) fn dry_run(ctx: &Ctx) -> bool {
    ctx.q.get("dryRun") == Some("All")
}
