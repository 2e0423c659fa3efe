//! HTTP glue: the hyper server loop, one request handled under the state
//! lock, the [`Reply`] turned into a response, and the parsing of what a
//! request carries (query string, Accept, JSON or YAML bodies).

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::errors::*;
use super::lock;
use super::store::*;

pub(super) async fn serve(
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
pub(super) struct Reply {
    pub(super) code: u16,
    pub(super) body: Value,
    /// A body that is not JSON, with its content type.
    pub(super) raw: Option<(&'static str, Vec<u8>)>,
}

pub(super) type Res = Result<Reply, Reply>;

impl Reply {
    pub(super) fn ok(body: Value) -> Reply {
        Reply {
            code: 200,
            body,
            raw: None,
        }
    }

    pub(super) fn created(body: Value) -> Reply {
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

/// A parsed query string (form encoding, `+` is a space).
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(raw: &str) -> Query {
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

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

pub(super) fn pct_decode(s: &str, plus_is_space: bool) -> String {
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

/// DeleteOptions in the body may ask for a dry run: `{"dryRun":["All"]}`.
pub(super) fn body_dry_run(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("dryRun").cloned())
        .and_then(|d| d.as_array().cloned())
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("All")))
}

/// The `as=` parameter of the first media type in Accept
/// (`PartialObjectMetadata`, `PartialObjectMetadataList`, ...).
pub(super) fn accept_as(headers: &HeaderMap) -> Option<String> {
    let accept = headers.get(ACCEPT)?.to_str().ok()?;
    let first = accept.split(',').next()?;
    first
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("as="))
        .map(String::from)
}

/// A request body as a JSON object; with `yaml`, YAML is accepted too.
pub(super) fn parse_body(body: &[u8], yaml: bool) -> Result<Value, Reply> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(json_err) => {
            if !yaml {
                return Err(bad_request(&format!(
                    "the request body is not a valid JSON object: {json_err}"
                )));
            }
            yaml_serde::from_slice(body)
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
