//! Strategic merge patch (`application/strategic-merge-patch+json`), the
//! patch `kubectl apply` (client-side) and `kubectl patch` send for
//! built-in kinds: a JSON merge patch, except that lists with a merge key
//! (containers by name, ports by port, ...) are merged element by element,
//! and the directives `$patch` (replace, delete, merge),
//! `$setElementOrder/FIELD`, `$deleteFromPrimitiveList/FIELD` and
//! `$retainKeys` are honoured. The merge keys are those the Kubernetes
//! types declare (`patchMergeKey`) for the fields lifeboat's objects use;
//! other lists are replaced, as the apiserver does for lists without one.

use serde_json::{Map, Value};

/// The merge key of list `field`, if the Kubernetes types give it one.
/// Lists of plain values with a merge strategy (finalizers) are `Some("")`.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let has = |k: &str| {
        items
            .iter()
            .all(|i| i.get(k).is_some() || i.get("$patch").is_some())
    };
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "secrets"
        | "resourceClaims" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "ownerReferences" => Some("uid"),
        "conditions" => Some("type"),
        "finalizers" => Some(""),
        // Container ports merge by containerPort, Service ports by port.
        "ports" if has("containerPort") => Some("containerPort"),
        "ports" if has("port") => Some("port"),
        _ => None,
    }
}

/// Applies `patch` to `target`.
pub fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = Value::Object(without_directives(p));
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if k.starts_with('$') {
            if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
                if let (Some(Value::Array(list)), Value::Array(gone)) = (t.get_mut(field), v) {
                    list.retain(|x| !gone.contains(x));
                }
            }
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(_) => apply(t.entry(k.clone()).or_insert(Value::Null), v),
            Value::Array(items) => match merge_key(k, items) {
                Some(key) => {
                    let list = t.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                    if !list.is_array() {
                        *list = Value::Array(Vec::new());
                    }
                    merge_list(list.as_array_mut().expect("an array"), items, key);
                }
                None => {
                    t.insert(k.clone(), v.clone());
                }
            },
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    // Orders given for merged lists.
    for (k, v) in p {
        if let (Some(field), Value::Array(order)) = (k.strip_prefix("$setElementOrder/"), v) {
            if let Some(Value::Array(list)) = t.get_mut(field) {
                reorder(list, order);
            }
        }
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
}

fn without_directives(p: &Map<String, Value>) -> Map<String, Value> {
    p.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn merge_list(list: &mut Vec<Value>, items: &[Value], key: &str) {
    if key.is_empty() {
        // A set of plain values (finalizers): union.
        for i in items {
            if !list.contains(i) {
                list.push(i.clone());
            }
        }
        return;
    }
    for item in items {
        let Some(id) = item.get(key) else { continue };
        let at = list.iter().position(|e| e.get(key) == Some(id));
        let directive = item.get("$patch").and_then(Value::as_str);
        match (at, directive) {
            (Some(i), Some("delete")) => {
                list.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => apply(&mut list[i], item),
            (None, _) => {
                let mut fresh = Value::Null;
                apply(&mut fresh, item);
                list.push(fresh);
            }
        }
    }
}

/// Puts the elements named in `order` (by their merge key, as the
/// directive carries only that) first, in that order.
fn reorder(list: &mut Vec<Value>, order: &[Value]) {
    let key_of = |o: &Value| {
        o.as_object()
            .and_then(|m| m.iter().next())
            .map(|(k, v)| (k.clone(), v.clone()))
    };
    let mut sorted = Vec::with_capacity(list.len());
    for o in order {
        match key_of(o) {
            Some((k, v)) => {
                if let Some(i) = list.iter().position(|e| e.get(&k) == Some(&v)) {
                    sorted.push(list.remove(i));
                }
            }
            None => {
                if let Some(i) = list.iter().position(|e| e == o) {
                    sorted.push(list.remove(i));
                }
            }
        }
    }
    sorted.append(list);
    *list = sorted;
}

#[cfg(test)]
mod tests {
    // benches/kubernetes.rs includes this server too, without a test
    // harness: there the tests are dropped and the import is unused.
    #[allow(unused_imports)]
    use super::*;
    #[allow(unused_imports)]
    use serde_json::json;

    #[test]
    fn lists_with_a_merge_key_merge_by_it_and_directives_hold() {
        let mut d = json!({"spec": {"replicas": 3, "template": {"spec": {
            "containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 80}]},
                           {"name": "sidecar", "image": "s:1"}],
            "tolerations": [{"key": "a"}]}}}});
        apply(
            &mut d,
            &json!({"spec": {"replicas": null, "template": {"spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}],
                "containers": [{"name": "web", "image": "web:2"}, {"name": "gone", "$patch": "delete"}],
                "tolerations": [{"key": "b"}]}}}}),
        );
        assert_eq!(
            d,
            json!({"spec": {"template": {"spec": {
                "containers": [{"name": "sidecar", "image": "s:1"},
                               {"name": "web", "image": "web:2", "ports": [{"containerPort": 80}]}],
                "tolerations": [{"key": "b"}]}}}})
        );
        let mut m = json!({"metadata": {"finalizers": ["a"]}, "data": {"x": "1", "y": "2"}});
        apply(
            &mut m,
            &json!({"metadata": {"finalizers": ["b"]}, "data": {"$patch": "replace", "z": "3"}}),
        );
        assert_eq!(
            m,
            json!({"metadata": {"finalizers": ["a", "b"]}, "data": {"z": "3"}})
        );
    }
}
