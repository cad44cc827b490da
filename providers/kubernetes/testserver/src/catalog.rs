//! The resource types the server serves: the built-in kinds Keelson's providers use and the
//! custom resources of established CRDs, with what discovery says about each.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::schema::{self, Schema};

/// When `metadata.generation` moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// The kind has no generation.
    None,
    /// Bumped when `spec` changes.
    Spec,
    /// Bumped when anything but `metadata` and `status` changes (custom resources).
    AllButMetadataAndStatus,
}

/// One served resource type at one version.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group (`""` for core).
    pub group: String,
    /// Version (`v1`).
    pub version: String,
    /// Kind (`Deployment`).
    pub kind: String,
    /// Resource name (`deployments`).
    pub plural: String,
    /// Singular resource name (`deployment`).
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Has a `status` subresource.
    pub status: bool,
    /// How generation moves.
    pub generation: Generation,
    /// Merge topology for server-side apply.
    pub schema: Arc<Schema>,
    /// Built in (list items carry no `kind`/`apiVersion`) or a custom resource (they do).
    pub builtin: bool,
}

/// The verbs every served resource supports.
pub const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

impl ResourceType {
    /// `apps/v1`, or `v1` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `deployments.apps`, or `configmaps` for core (how messages name the resource).
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// The storage key of objects of this type (all versions of a CRD share it).
    pub fn key(&self) -> (String, String) {
        (self.group.clone(), self.plural.clone())
    }

    /// The legacy discovery entries (`APIResource`) of this type and its subresources.
    pub fn discovery(&self) -> Vec<Value> {
        let mut main = Map::new();
        main.insert("name".into(), json!(self.plural));
        main.insert("singularName".into(), json!(self.singular));
        main.insert("namespaced".into(), json!(self.namespaced));
        main.insert("kind".into(), json!(self.kind));
        main.insert("verbs".into(), json!(VERBS));
        if !self.short_names.is_empty() {
            main.insert("shortNames".into(), json!(self.short_names));
        }
        if !self.categories.is_empty() {
            main.insert("categories".into(), json!(self.categories));
        }
        let mut out = vec![Value::Object(main)];
        if self.status {
            out.push(
                json!({"name": format!("{}/status", self.plural), "singularName": "", "namespaced": self.namespaced,
                            "kind": self.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
        out
    }

    /// The aggregated discovery (v2) entry of this type.
    pub fn discovery_v2(&self) -> Value {
        let kind = json!({"group": self.group, "version": self.version, "kind": self.kind});
        let mut m = Map::new();
        m.insert("resource".into(), json!(self.plural));
        m.insert("responseKind".into(), kind.clone());
        m.insert("scope".into(), json!(if self.namespaced { "Namespaced" } else { "Cluster" }));
        m.insert("singularResource".into(), json!(self.singular));
        m.insert("verbs".into(), json!(VERBS));
        if !self.short_names.is_empty() {
            m.insert("shortNames".into(), json!(self.short_names));
        }
        if !self.categories.is_empty() {
            m.insert("categories".into(), json!(self.categories));
        }
        if self.status {
            m.insert(
                "subresources".into(),
                json!([{"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]}]),
            );
        }
        Value::Object(m)
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    all: bool,
    status: bool,
    generation: Generation,
}

const BUILTINS: &[Builtin] = &[
    b("", "v1", "Namespace", "namespaces", false, &["ns"], false, true, Generation::None),
    b("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"], false, false, Generation::None),
    b("", "v1", "Service", "services", true, &["svc"], true, true, Generation::None),
    b("", "v1", "ConfigMap", "configmaps", true, &["cm"], false, false, Generation::None),
    b("", "v1", "Secret", "secrets", true, &[], false, false, Generation::None),
    b("apps", "v1", "Deployment", "deployments", true, &["deploy"], true, true, Generation::Spec),
    b("apps", "v1", "StatefulSet", "statefulsets", true, &["sts"], true, true, Generation::Spec),
    b("apps", "v1", "DaemonSet", "daemonsets", true, &["ds"], true, true, Generation::Spec),
    b("batch", "v1", "Job", "jobs", true, &[], true, true, Generation::Spec),
    b("networking.k8s.io", "v1", "Ingress", "ingresses", true, &["ing"], false, true, Generation::Spec),
    b("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true, &["netpol"], false, false, Generation::Spec),
    b(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
        &["hpa"],
        true,
        true,
        Generation::None,
    ),
    b("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, &["pdb"], false, true, Generation::Spec),
    b(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        false,
        true,
        Generation::Spec,
    ),
    b("coordination.k8s.io", "v1", "Lease", "leases", true, &[], false, false, Generation::None),
];

#[allow(clippy::too_many_arguments)]
const fn b(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    all: bool,
    status: bool,
    generation: Generation,
) -> Builtin {
    Builtin { group, version, kind, plural, namespaced, short, all, status, generation }
}

/// Every type served, built-in first, then custom resources in the order their CRDs were
/// established.
#[derive(Debug, Clone)]
pub struct Catalog {
    types: Vec<Arc<ResourceType>>,
}

impl Default for Catalog {
    fn default() -> Self {
        let types = BUILTINS
            .iter()
            .map(|b| {
                Arc::new(ResourceType {
                    group: b.group.into(),
                    version: b.version.into(),
                    kind: b.kind.into(),
                    plural: b.plural.into(),
                    singular: b.kind.to_lowercase(),
                    namespaced: b.namespaced,
                    short_names: b.short.iter().map(|s| s.to_string()).collect(),
                    categories: if b.all { vec!["all".into()] } else { vec![] },
                    status: b.status,
                    generation: b.generation,
                    schema: Arc::new(schema::builtin(b.group, b.kind)),
                    builtin: true,
                })
            })
            .collect();
        Catalog { types }
    }
}

impl Catalog {
    /// The type served at `group`/`version` under resource name `plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types.iter().find(|t| t.group == group && t.version == version && t.plural == plural).cloned()
    }

    /// The type of `apiVersion` + `kind`.
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.types.iter().find(|t| t.api_version() == api_version && t.kind == kind).cloned()
    }

    /// All types, in discovery order.
    pub fn types(&self) -> &[Arc<ResourceType>] {
        &self.types
    }

    /// Groups (besides core) with their versions, in order of first appearance.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, vs)) => {
                    if !vs.contains(&t.version) {
                        vs.push(t.version.clone())
                    }
                }
                None => out.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        out
    }

    /// Serves (or re-serves) the versions of an established CRD.
    pub fn serve_crd(&mut self, crd: &Value) {
        let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default().to_string();
        let names = crd.pointer("/spec/names").cloned().unwrap_or_default();
        let plural = names.get("plural").and_then(Value::as_str).unwrap_or_default().to_string();
        self.unserve(&group, &plural);
        let namespaced = crd.pointer("/spec/scope").and_then(Value::as_str) != Some("Cluster");
        let strs = |k: &str| -> Vec<String> {
            names
                .get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        let kind = names.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
        for v in crd.pointer("/spec/versions").and_then(Value::as_array).into_iter().flatten() {
            if v.get("served").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            self.types.push(Arc::new(ResourceType {
                group: group.clone(),
                version: v.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                kind: kind.clone(),
                plural: plural.clone(),
                singular: names
                    .get("singular")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .unwrap_or_else(|| kind.to_lowercase()),
                namespaced,
                short_names: strs("shortNames"),
                categories: strs("categories"),
                status: v.pointer("/subresources/status").is_some(),
                generation: Generation::AllButMetadataAndStatus,
                schema: Arc::new(schema::from_openapi(v.pointer("/schema/openAPIV3Schema"))),
                builtin: false,
            }));
        }
    }

    /// Stops serving a custom resource.
    pub fn unserve(&mut self, group: &str, plural: &str) {
        self.types.retain(|t| t.builtin || !(t.group == group && t.plural == plural));
    }
}
