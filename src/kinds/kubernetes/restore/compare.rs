//! Whether an object on the target already holds what the backup's copy
//! says: the test that tells "unchanged" from "exists and differs".

use serde_json::Value;

/// Whether every field of `want` has the same value in `have` (what the
/// server added, defaults and status, does not count).
pub(super) fn contained(want: &Value, have: &Value) -> bool {
    // A ConfigMap's or Secret's keys are the user's: an extra key on the
    // target is a difference, unlike a field the server defaulted.
    for field in ["data", "binaryData"] {
        let w = want.get(field).filter(|v| !is_empty_map(v));
        let h = have.get(field).filter(|v| !is_empty_map(v));
        if w != h {
            return false;
        }
    }
    contained_fields(want, have)
}

fn is_empty_map(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.is_empty())
}

fn contained_fields(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| contained_fields(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| contained_fields(a, b))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => want == have,
    }
}
