//! The objects of [`KubeServer::seed_realistic`](super::KubeServer::seed_realistic):
//! `seed.yaml`, with its placeholders expanded.
//!
//! `seed.yaml` holds one object per YAML document, shaped like `kubectl get
//! -o yaml` output of a real cluster. The documents are inserted in file
//! order, as [`KubeServer::insert`](super::KubeServer::insert) does (so the
//! server fills what they leave out and admission must accept them).
//!
//! A document may have a top-level `x-seed` mapping, removed before the
//! object is inserted:
//!
//! * `manager`: the field manager of the object's managedFields entry
//!   (default `kubectl-client-side-apply`, as `kubectl apply` leaves it);
//! * `once: true`: the object is skipped if it already exists (the CRD and
//!   the cluster-scoped objects, when several namespaces are seeded).
//!
//! String values (and keys) may contain placeholders, `${NAME}` or
//! `${NAME:ARGS}`, each optionally followed by `|b64`:
//!
//! * `${ns}`: the namespace being seeded;
//! * `${ago:DURATION}`, `${ago_micro:DURATION}`: now minus DURATION, as an
//!   RFC 3339 UTC time with seconds (Time) or microseconds (MicroTime).
//!   DURATION is a sum of terms like `30d`, `2h`, `5m`, `40s`, the terms
//!   after the first each preceded by `+` or `-` (`10d-40s`);
//! * `${uid:KEY}`: a random uid, the same for the same KEY within one
//!   seeding (an ownerReference names its owner's `${uid:KEY}`);
//! * `${pod_ip:N}`: address N of the namespace's pod network,
//!   `10.244.<net>.<10 + N>`, `<net>` derived from the namespace name;
//! * `${cluster_ip:KEY}`: a Service cluster IP free in the server, the same
//!   for the same KEY within one seeding;
//! * `${node_port:KEY}`: a free node port, the same for the same KEY within
//!   one seeding; a number when the placeholder is the whole string;
//! * `${hex:LEN:SEED}`, `${pem:LABEL:SEED}`: deterministic fake hex digits
//!   and PEM blocks (the same SEED gives the same value); SEED is the rest
//!   of ARGS, `:` included;
//! * `${jwt:SERVICEACCOUNT}`: a fake token of that ServiceAccount of the
//!   namespace;
//! * `|b64`: the value base64-encoded (Secret `data`);
//! * `${last_applied}`, only as the whole value of the
//!   `kubectl.kubernetes.io/last-applied-configuration` annotation: what
//!   `kubectl apply` writes there for this object.
//!
//! ARGS may contain placeholders (`${hex:64:${pod_ip:0}/web}`) but neither
//! `|` nor `}`. `$${` stands for a literal `${`; any other `$` is literal.
//! An unknown placeholder, a missing or bad argument and an unterminated
//! placeholder panic, naming the document.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    ago, ago_micro, b64, fake_hex, fake_jwt, fake_pem, fnv64, meta_str, new_uid, with_last_applied,
    State, DAY, DEFAULT_MANAGER,
};

const SEED_YAML: &str = include_str!("seed.yaml");

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// See [`KubeServer::seed_realistic`](super::KubeServer::seed_realistic).
pub(super) fn seed_realistic(state: &mut State, ns: &str) -> usize {
    let mut values = Placeholders::new(ns);
    let mut n = 0;
    for (i, doc) in yaml_serde::Deserializer::from_str(SEED_YAML).enumerate() {
        let doc = yaml_serde::Value::deserialize(doc)
            .unwrap_or_else(|e| panic!("seed.yaml: document {}: {e}", i + 1));
        let mut obj: Value = serde_json::to_value(doc)
            .unwrap_or_else(|e| panic!("seed.yaml: document {}: {e}", i + 1));
        let what = format!(
            "seed.yaml: document {} ({} {})",
            i + 1,
            obj.get("kind").and_then(Value::as_str).unwrap_or("?"),
            meta_str(&obj, "name").unwrap_or_default()
        );
        let Some(root) = obj.as_object_mut() else {
            panic!("{what}: not a mapping");
        };
        let (manager, once) = seed_options(root.remove("x-seed"), &what);
        let last_applied = take_last_applied_marker(&mut obj);
        let mut obj = values.value(state, obj, &what);
        if last_applied {
            obj = with_last_applied(obj);
        }
        if once {
            let field = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
            let namespace = meta_str(&obj, "namespace");
            let name = meta_str(&obj, "name").unwrap_or_default();
            if state.exists(
                field("apiVersion"),
                field("kind"),
                namespace.as_deref(),
                &name,
            ) {
                continue;
            }
        }
        state.seed_put(&mut n, &manager, obj);
    }
    n
}

/// The document's `x-seed` options: (field manager, once).
fn seed_options(options: Option<Value>, what: &str) -> (String, bool) {
    let mut manager = DEFAULT_MANAGER.to_string();
    let mut once = false;
    let Some(options) = options else {
        return (manager, once);
    };
    let Value::Object(options) = options else {
        panic!("{what}: x-seed must be a mapping");
    };
    for (k, v) in options {
        match (k.as_str(), v) {
            ("manager", Value::String(m)) => manager = m,
            ("once", Value::Bool(b)) => once = b,
            (k, v) => panic!("{what}: unknown x-seed option or bad value: {k}: {v}"),
        }
    }
    (manager, once)
}

/// Removes the last-applied-configuration annotation if it is
/// `${last_applied}` (and `annotations` if that leaves it empty). Returns
/// whether it was.
fn take_last_applied_marker(obj: &mut Value) -> bool {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return false;
    };
    let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) else {
        return false;
    };
    if annotations.get(LAST_APPLIED).and_then(Value::as_str) != Some("${last_applied}") {
        return false;
    }
    annotations.remove(LAST_APPLIED);
    if annotations.is_empty() {
        meta.remove("annotations");
    }
    true
}

/// The values of one seeding's placeholders.
struct Placeholders<'a> {
    ns: &'a str,
    /// This namespace's pods get addresses in 10.244.<net>.0/24.
    net: u64,
    uids: HashMap<String, String>,
    cluster_ips: HashMap<String, String>,
    node_ports: HashMap<String, i64>,
}

/// A parsed piece of a string: literal text or a placeholder's value.
enum Piece {
    Text(String),
    Value(Value),
}

impl Piece {
    fn into_string(self) -> String {
        match self {
            Piece::Text(s) | Piece::Value(Value::String(s)) => s,
            Piece::Value(v) => v.to_string(),
        }
    }
}

impl<'a> Placeholders<'a> {
    fn new(ns: &'a str) -> Self {
        Placeholders {
            ns,
            net: 1 + fnv64(ns.as_bytes()) % 250,
            uids: HashMap::new(),
            cluster_ips: HashMap::new(),
            node_ports: HashMap::new(),
        }
    }

    /// `v` with the placeholders of its strings and keys expanded.
    fn value(&mut self, st: &State, v: Value, what: &str) -> Value {
        match v {
            Value::String(s) => self.text(st, &s, what),
            Value::Array(items) => items.into_iter().map(|x| self.value(st, x, what)).collect(),
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    let k = self.text(st, &k, what);
                    let k = Piece::Value(k).into_string();
                    out.insert(k, self.value(st, x, what));
                }
                Value::Object(out)
            }
            other => other,
        }
    }

    /// One string, expanded. A placeholder that is the whole string keeps
    /// its value's type (a node port is a number).
    fn text(&mut self, st: &State, s: &str, what: &str) -> Value {
        if !s.contains('$') {
            return Value::String(s.to_string());
        }
        let mut cursor = s;
        let mut pieces = self.pieces(st, &mut cursor, false, s, what);
        if let [Piece::Value(_)] = pieces.as_slice() {
            if let Some(Piece::Value(v)) = pieces.pop() {
                return v;
            }
        }
        Value::String(pieces.into_iter().map(Piece::into_string).collect())
    }

    /// Parses `rest` up to its end or, `in_args`, up to the `|` or `}` that
    /// ends a placeholder's ARGS (left in `rest`).
    fn pieces(
        &mut self,
        st: &State,
        rest: &mut &str,
        in_args: bool,
        whole: &str,
        what: &str,
    ) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        loop {
            let stop = if in_args {
                rest.find(['$', '|', '}'])
            } else {
                rest.find('$')
            };
            let Some(i) = stop else {
                if in_args {
                    panic!("{what}: unterminated placeholder in {whole:?}");
                }
                text.push_str(rest);
                *rest = "";
                break;
            };
            text.push_str(&rest[..i]);
            *rest = &rest[i..];
            if let Some(after) = rest.strip_prefix("$${") {
                text.push_str("${");
                *rest = after;
            } else if let Some(after) = rest.strip_prefix("${") {
                *rest = after;
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                let v = self.placeholder(st, rest, whole, what);
                pieces.push(Piece::Value(v));
            } else if rest.starts_with('$') {
                text.push('$');
                *rest = &rest[1..];
            } else {
                break; // `|` or `}` after ARGS
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        pieces
    }

    /// Parses and evaluates one placeholder; `rest` starts after its `${`
    /// and is left after its `}`.
    fn placeholder(&mut self, st: &State, rest: &mut &str, whole: &str, what: &str) -> Value {
        let word = |r: &str| {
            r.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(r.len())
        };
        let end = word(rest);
        let name = &rest[..end];
        *rest = &rest[end..];
        let args = if let Some(after) = rest.strip_prefix(':') {
            *rest = after;
            let pieces = self.pieces(st, rest, true, whole, what);
            Some(
                pieces
                    .into_iter()
                    .map(Piece::into_string)
                    .collect::<String>(),
            )
        } else {
            None
        };
        let mut filters = Vec::new();
        while let Some(after) = rest.strip_prefix('|') {
            let end = word(after);
            filters.push(&after[..end]);
            *rest = &after[end..];
        }
        let Some(after) = rest.strip_prefix('}') else {
            panic!("{what}: unterminated or malformed placeholder ${{{name}...}} in {whole:?}");
        };
        *rest = after;
        let mut v = self
            .evaluate(st, name, args.as_deref())
            .unwrap_or_else(|e| panic!("{what}: {e} (in {whole:?})"));
        for f in filters {
            v = match f {
                "b64" => json!(b64(Piece::Value(v).into_string().as_bytes())),
                _ => panic!("{what}: unknown placeholder filter |{f} in {whole:?}"),
            };
        }
        v
    }

    fn evaluate(&mut self, st: &State, name: &str, args: Option<&str>) -> Result<Value, String> {
        let arg = || match args {
            Some(a) if !a.is_empty() => Ok(a),
            _ => Err(format!("placeholder ${{{name}}} needs an argument")),
        };
        let no_arg = || match args {
            None => Ok(()),
            Some(_) => Err(format!("placeholder ${{{name}}} takes no argument")),
        };
        let two_args = |what: &str| {
            arg()?
                .split_once(':')
                .ok_or_else(|| format!("placeholder ${{{name}:{what}}} needs both arguments"))
        };
        Ok(match name {
            "ns" => {
                no_arg()?;
                json!(self.ns)
            }
            "ago" => json!(ago(duration(arg()?)?)),
            "ago_micro" => json!(ago_micro(duration(arg()?)?)),
            "uid" => json!(self
                .uids
                .entry(arg()?.to_string())
                .or_insert_with(new_uid)
                .clone()),
            "pod_ip" => {
                let i: u64 = arg()?
                    .parse()
                    .map_err(|_| format!("${{pod_ip:N}}: bad N {:?}", args.unwrap_or("")))?;
                json!(format!("10.244.{}.{}", self.net, 10 + i))
            }
            "cluster_ip" => {
                let key = arg()?;
                if !self.cluster_ips.contains_key(key) {
                    // Free in the server and not given to another KEY yet.
                    let ip = loop {
                        let ip = st.free_cluster_ip();
                        if !self.cluster_ips.values().any(|taken| *taken == ip) {
                            break ip;
                        }
                    };
                    self.cluster_ips.insert(key.to_string(), ip);
                }
                json!(self.cluster_ips[key])
            }
            "node_port" => {
                let key = arg()?;
                if !self.node_ports.contains_key(key) {
                    let taken: Vec<i64> = self.node_ports.values().copied().collect();
                    self.node_ports
                        .insert(key.to_string(), st.free_node_port(&taken));
                }
                json!(self.node_ports[key])
            }
            "hex" => {
                let (len, seed) = two_args("LEN:SEED")?;
                let len: usize = len
                    .parse()
                    .map_err(|_| format!("${{hex:LEN:SEED}}: bad LEN {len:?}"))?;
                json!(fake_hex(seed, len))
            }
            "pem" => {
                let (label, seed) = two_args("LABEL:SEED")?;
                json!(fake_pem(label, seed))
            }
            "jwt" => json!(fake_jwt(self.ns, arg()?)),
            "last_applied" => {
                return Err(format!(
                    "${{last_applied}} is only allowed as the whole value of the {LAST_APPLIED} annotation"
                ))
            }
            "" => return Err("empty placeholder name".to_string()),
            _ => return Err(format!("unknown placeholder ${{{name}}}")),
        })
    }
}

/// Seconds of a DURATION like `30d`, `1h`, `10d-40s`.
fn duration(spec: &str) -> Result<i64, String> {
    let bad = || format!("bad duration {spec:?} (expected e.g. 30d, 2h, 10d-40s)");
    let mut total = 0i64;
    let mut rest = spec;
    let mut first = true;
    while !rest.is_empty() || first {
        let (sign, term) = match rest.as_bytes().first() {
            Some(b'+') if !first => (1, &rest[1..]),
            Some(b'-') if !first => (-1, &rest[1..]),
            Some(_) if first => (1, rest),
            _ => return Err(bad()),
        };
        let digits = term.bytes().take_while(u8::is_ascii_digit).count();
        let number: i64 = term[..digits].parse().map_err(|_| bad())?;
        let unit = match term.as_bytes().get(digits) {
            Some(b'd') => DAY,
            Some(b'h') => 3600,
            Some(b'm') => 60,
            Some(b's') => 1,
            _ => return Err(bad()),
        };
        total += sign * number * unit;
        rest = &term[digits + 1..];
        first = false;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(st: &State, p: &mut Placeholders, s: &str) -> Value {
        p.text(st, s, "test")
    }

    #[test]
    fn placeholders_expand() {
        let st = State::new(0, String::new());
        let mut p = Placeholders::new("prod");
        let net = 1 + fnv64(b"prod") % 250;
        assert_eq!(expand(&st, &mut p, "${ns}"), json!("prod"));
        assert_eq!(expand(&st, &mut p, "a-${ns}-b"), json!("a-prod-b"));
        assert_eq!(expand(&st, &mut p, "${ns|b64}"), json!(b64(b"prod")));
        assert_eq!(expand(&st, &mut p, "$uri $${ns} $"), json!("$uri ${ns} $"));
        assert_eq!(
            expand(&st, &mut p, "${pod_ip:2}"),
            json!(format!("10.244.{net}.12"))
        );
        assert_eq!(
            expand(&st, &mut p, "${hex:8:${pod_ip:0}/web}"),
            json!(fake_hex(&format!("10.244.{net}.10/web"), 8))
        );
        assert_eq!(
            expand(&st, &mut p, "${hex:64:nginx:1.27.2}"),
            json!(fake_hex("nginx:1.27.2", 64))
        );
        let uid = expand(&st, &mut p, "${uid:a}");
        assert_eq!(expand(&st, &mut p, "${uid:a}"), uid);
        assert_ne!(expand(&st, &mut p, "${uid:b}"), uid);
        let port = expand(&st, &mut p, "${node_port:x}");
        assert!(port.is_i64(), "{port}");
        assert_eq!(
            expand(&st, &mut p, "p${node_port:x}"),
            json!(format!("p{port}"))
        );
        assert_ne!(expand(&st, &mut p, "${node_port:y}"), port);
        assert_eq!(duration("10d-40s"), Ok(10 * DAY - 40));
        assert_eq!(duration("1h+30m"), Ok(5400));
        assert!(duration("").is_err() && duration("5").is_err() && duration("-5s").is_err());
    }

    #[test]
    #[should_panic(expected = "unknown placeholder ${nope}")]
    fn unknown_placeholder_panics() {
        let st = State::new(0, String::new());
        Placeholders::new("prod").text(&st, "x ${nope:1}", "test");
    }

    #[test]
    #[should_panic(expected = "placeholder ${uid} needs an argument")]
    fn missing_argument_panics() {
        let st = State::new(0, String::new());
        Placeholders::new("prod").text(&st, "${uid}", "test");
    }

    #[test]
    #[should_panic(expected = "unterminated placeholder")]
    fn unterminated_placeholder_panics() {
        let st = State::new(0, String::new());
        Placeholders::new("prod").text(&st, "${hex:4:abc", "test");
    }
}
