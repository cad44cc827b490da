//! The fields one manager owns, cut out of a live object by its `managedFields` entry
//! (`fieldsV1`: `f:<name>` for struct and map fields, `k:{…}` for list items by key, `v:<json>`
//! for set items, `i:<n>` for positions, `.` for the node itself).
//!
//! This is what makes `observe` report only what Keelson applied: a defaulted `protocol`, a
//! server-set `clusterIP` or a label another tool added are owned by someone else and never
//! appear, so they never look like drift.

use serde_json::{Map, Value};

/// The `fieldsV1` of `manager`'s Apply entry in `object`'s `managedFields`, if it has one.
pub fn applied_by<'a>(object: &'a Value, manager: &str) -> Option<&'a Value> {
    object.pointer("/metadata/managedFields")?.as_array()?.iter().find_map(|entry| {
        let is_apply = entry.get("operation").and_then(Value::as_str) == Some("Apply");
        let is_manager = entry.get("manager").and_then(Value::as_str) == Some(manager);
        (is_apply && is_manager && entry.get("subresource").is_none()).then(|| entry.get("fieldsV1")).flatten()
    })
}

/// The parts of `live` that `fields` names; `None` when none of them is present.
pub fn project(live: &Value, fields: &Value) -> Option<Value> {
    let Some(set) = fields.as_object() else { return Some(live.clone()) };
    let children: Vec<(&String, &Value)> = set.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if children.is_empty() {
        // A leaf: the value as it is (a scalar, an atomic list or map, or an empty struct).
        return Some(live.clone());
    }
    match live {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, child) in children {
                if let Some(name) = key.strip_prefix("f:")
                    && let Some(value) = map.get(name)
                    && let Some(projected) = project(value, child)
                {
                    out.insert(name.to_owned(), projected);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => {
            // Keep the live order: that is the order a re-apply of the same list produces.
            let mut out = Vec::new();
            for item in items {
                let owned = children.iter().find(|(key, _)| item_matches(item, key, items));
                if let Some((_, child)) = owned
                    && let Some(projected) = project(item, child)
                {
                    out.push(projected);
                }
            }
            Some(Value::Array(out))
        }
        _ => Some(live.clone()),
    }
}

fn item_matches(item: &Value, key: &str, items: &[Value]) -> bool {
    if let Some(k) = key.strip_prefix("k:") {
        let Ok(Value::Object(wanted)) = serde_json::from_str::<Value>(k) else { return false };
        return wanted.iter().all(|(field, value)| item.get(field) == Some(value));
    }
    if let Some(v) = key.strip_prefix("v:") {
        return serde_json::from_str::<Value>(v).is_ok_and(|wanted| &wanted == item);
    }
    if let Some(i) = key.strip_prefix("i:") {
        return i.parse::<usize>().ok().and_then(|i| items.get(i)).is_some_and(|at| std::ptr::eq(at, item));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_owned_fields_are_kept_with_list_items_by_key() {
        let live = json!({
            "metadata": {"name": "web", "labels": {"app": "web", "other": "x"}, "uid": "u"},
            "spec": {
                "replicas": 3,
                "revisionHistoryLimit": 10,
                "template": {"spec": {"containers": [
                    {"name": "sidecar", "image": "envoy"},
                    {"name": "web", "image": "nginx", "imagePullPolicy": "Always",
                     "ports": [{"containerPort": 80, "protocol": "TCP"}]}
                ]}}
            }
        });
        let fields = json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}
                }}}
            }
        });
        assert_eq!(
            project(&live, &fields).unwrap(),
            json!({
                "metadata": {"labels": {"app": "web"}},
                "spec": {"replicas": 3, "template": {"spec": {"containers": [
                    {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}
                ]}}}
            })
        );
    }

    #[test]
    fn sets_positions_and_atomic_leaves() {
        let live = json!({"finalizers": ["a", "b"], "args": ["x", "y"], "tolerations": [{"key": "k"}]});
        let fields = json!({"f:finalizers": {"v:\"b\"": {}}, "f:args": {"i:1": {}}, "f:tolerations": {}});
        assert_eq!(
            project(&live, &fields).unwrap(),
            json!({"finalizers": ["b"], "args": ["y"], "tolerations": [{"key": "k"}]})
        );
    }

    #[test]
    fn the_apply_entry_of_the_manager_is_found() {
        let object = json!({"metadata": {"managedFields": [
            {"manager": "keelson", "operation": "Update", "fieldsV1": {"f:x": {}}},
            {"manager": "keelson", "operation": "Apply", "fieldsV1": {"f:y": {}}},
            {"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:z": {}}}
        ]}});
        assert_eq!(applied_by(&object, "keelson"), Some(&json!({"f:y": {}})));
        assert_eq!(applied_by(&object, "helm"), None);
    }
}
