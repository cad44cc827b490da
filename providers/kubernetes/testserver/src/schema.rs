//! The shape of objects that server-side apply merges by: which lists are associative (and by
//! which keys), which are sets, which lists, maps and structs are atomic.
//!
//! Built-in kinds carry the markers of the Kubernetes types (`+listType`, `+listMapKey`,
//! `+mapType`, `+structType`, and `patchMergeKey` where no list type is given) for the parts
//! Keelson applies; everything else is an open struct whose lists are atomic, the default of
//! structured-merge-diff. Custom resources take their markers from the CRD's
//! `openAPIV3Schema` (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-map-type`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

/// How a list merges.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    /// Replaced whole; one manager owns it.
    Atomic,
    /// Scalar items, each owned separately (`v:` elements).
    Set,
    /// Items keyed by the named fields (`k:` elements); a key field may have a default used when
    /// the item omits it (like `protocol: TCP` of ports).
    Map { keys: Vec<String>, defaults: BTreeMap<String, Value> },
}

/// The merge topology of one node of an object.
#[derive(Debug, Clone, PartialEq)]
pub enum Schema {
    /// A struct with declared fields; other keys are open struct fields (or `elem` for a map).
    Struct { fields: BTreeMap<String, Arc<Schema>>, elem: Option<Arc<Schema>>, atomic: bool },
    /// A list.
    List { list: ListType, elem: Arc<Schema> },
    /// A scalar (or anything treated as a leaf).
    Scalar,
    /// Nothing declared: objects are open structs, lists atomic (built-ins' unlisted parts).
    Open,
    /// Untyped (`x-kubernetes-preserve-unknown-fields` or no schema): every key is a map key.
    Deduced,
}

impl Schema {
    /// The schema of field or key `name` of this node.
    pub fn field(&self, name: &str) -> Arc<Schema> {
        match self {
            Schema::Struct { fields, elem, .. } => {
                fields.get(name).cloned().or_else(|| elem.clone()).unwrap_or_else(|| Arc::new(Schema::Open))
            }
            Schema::Deduced => Arc::new(Schema::Deduced),
            _ => Arc::new(Schema::Open),
        }
    }

    /// True when `name` is a declared struct field here (not a map key), which decides whether
    /// structured-merge-diff records the node itself.
    pub fn is_named_field(&self, name: &str) -> bool {
        match self {
            Schema::Struct { fields, elem, .. } => fields.contains_key(name) || elem.is_none(),
            Schema::Open => true,
            _ => false,
        }
    }

    /// True when this node is replaced whole by a merge.
    pub fn is_atomic(&self) -> bool {
        matches!(self, Schema::Struct { atomic: true, .. } | Schema::List { list: ListType::Atomic, .. })
    }

    /// How a list at this node merges (atomic unless declared otherwise).
    pub fn list_type(&self) -> (ListType, Arc<Schema>) {
        match self {
            Schema::List { list, elem } => (list.clone(), elem.clone()),
            Schema::Deduced => (ListType::Atomic, Arc::new(Schema::Deduced)),
            _ => (ListType::Atomic, Arc::new(Schema::Open)),
        }
    }
}

// ---- a small builder for the built-in tables ----

fn st<const N: usize>(fields: [(&str, Schema); N]) -> Schema {
    Schema::Struct {
        fields: fields.into_iter().map(|(k, v)| (k.to_string(), Arc::new(v))).collect(),
        elem: None,
        atomic: false,
    }
}

fn atomic_struct() -> Schema {
    Schema::Struct { fields: BTreeMap::new(), elem: None, atomic: true }
}

fn granular_map() -> Schema {
    Schema::Struct { fields: BTreeMap::new(), elem: Some(Arc::new(Schema::Scalar)), atomic: false }
}

fn atomic_map() -> Schema {
    Schema::Struct { fields: BTreeMap::new(), elem: Some(Arc::new(Schema::Scalar)), atomic: true }
}

fn list_map(keys: &[&str], elem: Schema) -> Schema {
    Schema::List {
        list: ListType::Map { keys: keys.iter().map(|k| k.to_string()).collect(), defaults: BTreeMap::new() },
        elem: Arc::new(elem),
    }
}

fn list_map_default(keys: &[&str], defaults: &[(&str, Value)], elem: Schema) -> Schema {
    Schema::List {
        list: ListType::Map {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            defaults: defaults.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        },
        elem: Arc::new(elem),
    }
}

fn set() -> Schema {
    Schema::List { list: ListType::Set, elem: Arc::new(Schema::Scalar) }
}

fn atomic_list() -> Schema {
    Schema::List { list: ListType::Atomic, elem: Arc::new(Schema::Open) }
}

fn object_meta() -> Schema {
    st([
        ("labels", granular_map()),
        ("annotations", granular_map()),
        ("finalizers", set()),
        ("ownerReferences", list_map(&["uid"], Schema::Open)),
        ("managedFields", atomic_list()),
    ])
}

fn label_selector() -> Schema {
    atomic_struct()
}

fn container() -> Schema {
    st([
        ("command", atomic_list()),
        ("args", atomic_list()),
        ("ports", list_map_default(&["containerPort", "protocol"], &[("protocol", json!("TCP"))], Schema::Open)),
        ("env", list_map(&["name"], Schema::Open)),
        ("envFrom", atomic_list()),
        ("volumeMounts", list_map(&["mountPath"], Schema::Open)),
        ("volumeDevices", list_map(&["devicePath"], Schema::Open)),
        (
            "resources",
            st([
                ("limits", granular_map()),
                ("requests", granular_map()),
                ("claims", list_map(&["name"], Schema::Open)),
            ]),
        ),
        ("resizePolicy", atomic_list()),
    ])
}

fn pod_spec() -> Schema {
    st([
        ("containers", list_map(&["name"], container())),
        ("initContainers", list_map(&["name"], container())),
        ("ephemeralContainers", list_map(&["name"], container())),
        ("volumes", list_map(&["name"], Schema::Open)),
        ("imagePullSecrets", list_map(&["name"], Schema::Open)),
        ("tolerations", atomic_list()),
        ("nodeSelector", atomic_map()),
        ("hostAliases", list_map(&["ip"], Schema::Open)),
        ("topologySpreadConstraints", list_map(&["topologyKey", "whenUnsatisfiable"], Schema::Open)),
        ("readinessGates", atomic_list()),
        ("schedulingGates", list_map(&["name"], Schema::Open)),
        ("resourceClaims", list_map(&["name"], Schema::Open)),
    ])
}

fn pod_template() -> Schema {
    st([("metadata", object_meta()), ("spec", pod_spec())])
}

fn conditions() -> Schema {
    list_map(&["type"], Schema::Open)
}

fn root(spec: Schema, status: Schema) -> Schema {
    st([("metadata", object_meta()), ("spec", spec), ("status", status)])
}

/// The schema of a built-in kind (`group`, `kind`); unknown kinds get an open struct.
pub fn builtin(group: &str, kind: &str) -> Schema {
    match (group, kind) {
        ("apps", "Deployment") => {
            root(st([("selector", label_selector()), ("template", pod_template())]), st([("conditions", conditions())]))
        }
        ("apps", "StatefulSet") => root(
            st([("selector", label_selector()), ("template", pod_template()), ("volumeClaimTemplates", atomic_list())]),
            st([("conditions", conditions())]),
        ),
        ("apps", "DaemonSet") => {
            root(st([("selector", label_selector()), ("template", pod_template())]), st([("conditions", conditions())]))
        }
        ("batch", "Job") => root(
            st([("selector", label_selector()), ("template", pod_template())]),
            st([("conditions", atomic_list())]),
        ),
        ("", "Service") => root(
            st([
                ("ports", list_map_default(&["port", "protocol"], &[("protocol", json!("TCP"))], Schema::Open)),
                ("selector", atomic_map()),
                ("clusterIPs", atomic_list()),
                ("externalIPs", atomic_list()),
                ("ipFamilies", atomic_list()),
            ]),
            st([("conditions", list_map(&["type"], Schema::Open))]),
        ),
        ("", "ConfigMap") => {
            st([("metadata", object_meta()), ("data", granular_map()), ("binaryData", granular_map())])
        }
        ("", "Secret") => st([("metadata", object_meta()), ("data", granular_map()), ("stringData", granular_map())]),
        ("", "ServiceAccount") => st([
            ("metadata", object_meta()),
            ("secrets", list_map(&["name"], Schema::Open)),
            ("imagePullSecrets", atomic_list()),
        ]),
        ("", "Namespace") => root(st([("finalizers", atomic_list())]), st([("conditions", conditions())])),
        ("networking.k8s.io", "NetworkPolicy") => root(
            st([
                ("podSelector", label_selector()),
                ("ingress", atomic_list()),
                ("egress", atomic_list()),
                ("policyTypes", atomic_list()),
            ]),
            Schema::Open,
        ),
        ("policy", "PodDisruptionBudget") => {
            root(st([("selector", label_selector())]), st([("conditions", conditions())]))
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            root(st([("metrics", atomic_list())]), st([("conditions", list_map(&["type"], Schema::Open))]))
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            root(st([("versions", atomic_list())]), st([("conditions", list_map(&["type"], Schema::Open))]))
        }
        _ => st([("metadata", object_meta())]),
    }
}

/// The schema of a custom resource from its CRD version's `openAPIV3Schema` (`None` → untyped).
pub fn from_openapi(schema: Option<&Value>) -> Schema {
    let Some(s) = schema else {
        return st([("metadata", object_meta()), ("spec", Schema::Deduced), ("status", Schema::Deduced)]);
    };
    let mut out = convert(s);
    if !matches!(out, Schema::Struct { .. }) {
        out = Schema::Struct { fields: BTreeMap::new(), elem: Some(Arc::new(Schema::Deduced)), atomic: false };
    }
    if let Schema::Struct { fields, .. } = &mut out {
        fields.insert("metadata".into(), Arc::new(object_meta()));
        fields.entry("apiVersion".into()).or_insert_with(|| Arc::new(Schema::Scalar));
        fields.entry("kind".into()).or_insert_with(|| Arc::new(Schema::Scalar));
    }
    out
}

fn convert(s: &Value) -> Schema {
    if s.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
        && s.get("properties").is_none()
    {
        return Schema::Deduced;
    }
    if s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        return Schema::Scalar;
    }
    match s.get("type").and_then(Value::as_str) {
        Some("object") => {
            let atomic = s.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
            let fields = s
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.iter().map(|(k, v)| (k.clone(), Arc::new(convert(v)))).collect())
                .unwrap_or_default();
            let elem = match s.get("additionalProperties") {
                Some(Value::Object(ap)) => Some(Arc::new(convert(&Value::Object(ap.clone())))),
                Some(Value::Bool(true)) => Some(Arc::new(Schema::Deduced)),
                _ => None,
            };
            let preserve = s.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
            let elem = if elem.is_none() && preserve { Some(Arc::new(Schema::Deduced)) } else { elem };
            Schema::Struct { fields, elem, atomic }
        }
        Some("array") => {
            let elem = Arc::new(s.get("items").map(convert).unwrap_or(Schema::Open));
            let list = match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => ListType::Set,
                Some("map") => {
                    let keys = s
                        .get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|ks| ks.iter().filter_map(|k| k.as_str().map(str::to_string)).collect())
                        .unwrap_or_default();
                    let defaults = match s.get("items").and_then(|i| i.get("properties")).and_then(Value::as_object) {
                        Some(props) => {
                            props.iter().filter_map(|(k, p)| p.get("default").map(|d| (k.clone(), d.clone()))).collect()
                        }
                        None => BTreeMap::new(),
                    };
                    ListType::Map { keys, defaults }
                }
                _ => ListType::Atomic,
            };
            Schema::List { list, elem }
        }
        Some(_) => Schema::Scalar,
        None => Schema::Open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_markers_become_list_and_map_types() {
        let s = from_openapi(Some(&json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {
                "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                          "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "plain": {"type": "array", "items": {"type": "string"}},
                "sel": {"type": "object", "x-kubernetes-map-type": "atomic"}
            }}}
        })));
        let spec = s.field("spec");
        assert!(matches!(spec.field("items").list_type().0, ListType::Map { ref keys, .. } if keys == &["name"]));
        assert_eq!(spec.field("tags").list_type().0, ListType::Set);
        assert!(spec.field("plain").is_atomic());
        assert!(spec.field("sel").is_atomic());
    }
}
