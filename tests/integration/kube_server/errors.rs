//! Status (error) documents, like the real apiserver's: 404, 405, 409, 415,
//! 422 Invalid with causes, 403 Forbidden with the RBAC message, ...

use serde_json::{json, Map, Value};

use super::http::*;
use super::types::*;

pub(super) fn status_reply(
    code: u16,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> Reply {
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

pub(super) fn details(rt: &ResourceType, name: Option<&str>, kind: &str) -> Value {
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
pub(super) fn page_not_found() -> Reply {
    status_reply(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

pub(super) fn method_not_allowed() -> Reply {
    status_reply(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        Some(json!({})),
    )
}

pub(super) fn unsupported_media_type() -> Reply {
    status_reply(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/apply-patch+yaml",
        Some(json!({})),
    )
}

pub(super) fn bad_request(message: &str) -> Reply {
    status_reply(400, "BadRequest", message, Some(json!({})))
}

pub(super) fn not_found(rt: &ResourceType, name: &str) -> Reply {
    status_reply(
        404,
        "NotFound",
        &format!("{} \"{}\" not found", rt.qualified(), name),
        Some(details(rt, Some(name), &rt.plural)),
    )
}

pub(super) fn namespace_not_found(ns: &str) -> Reply {
    status_reply(
        404,
        "NotFound",
        &format!("namespaces \"{ns}\" not found"),
        Some(json!({"name": ns, "kind": "namespaces"})),
    )
}

pub(super) fn already_exists(rt: &ResourceType, name: &str) -> Reply {
    status_reply(
        409,
        "AlreadyExists",
        &format!("{} \"{}\" already exists", rt.qualified(), name),
        Some(details(rt, Some(name), &rt.plural)),
    )
}

pub(super) fn conflict(rt: &ResourceType, name: &str) -> Reply {
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
pub(super) fn invalid(
    rt: &ResourceType,
    name: &str,
    field: &str,
    cause_reason: &str,
    detail: &str,
) -> Reply {
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
pub(super) fn namespace_terminating(rt: &ResourceType, name: &str, ns: &str) -> Reply {
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
pub(super) fn rejected(rt: &ResourceType, name: &str, message: &str) -> Reply {
    let mut d = details(rt, Some(name), &rt.kind);
    d["causes"] =
        json!([{"reason": "FieldValueInvalid", "message": message, "field": "metadata.name"}]);
    status_reply(422, "Invalid", message, Some(d))
}

pub(super) fn forbidden(
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
