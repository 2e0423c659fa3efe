//! Reads: get and list (paging with `limit`/`continue`, the
//! `PartialObjectMetadata` forms), and the label and field selectors of
//! list and delete-collection requests.

use serde_json::{json, Map, Value};

use super::errors::*;
use super::http::*;
use super::objects::*;
use super::routing::*;
use super::store::*;
use super::types::*;

impl State {
    pub(super) fn get_object(
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

    pub(super) fn list(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: Option<&str>,
        ctx: &Ctx,
    ) -> Res {
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
}

/// Items of a real list response carry neither apiVersion nor kind.
pub(super) fn list_item(obj: &Value) -> Value {
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
pub(super) struct Selectors {
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Selectors {
    pub(super) fn from_query(q: &Query) -> Result<Selectors, Reply> {
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

    pub(super) fn matches(&self, obj: &Value) -> bool {
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
