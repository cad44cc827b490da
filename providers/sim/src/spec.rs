//! The kinds the sim manages and the rules their specs must follow.
//!
//! The sim validates like a real API server would, so that the conformance suite's invalid-spec check
//! means something and a bad render fails in `plan` rather than half-way through a rollout.

use serde_json::{Map, Value};

/// API version of every kind the sim manages.
pub const API_VERSION: &str = "sim.keelson.dev/v1";
/// A set of replicas of one image (one variant of an app).
pub const WORKLOAD: &str = "Workload";
/// How an app is reached from outside.
pub const ROUTE: &str = "Route";
/// Spot capacity an app asked for (cluster-scoped, like a SPOT node pool).
pub const NODE_POOL: &str = "NodePool";

/// One of the kinds the sim manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Workload,
    Route,
    NodePool,
}

impl Kind {
    /// The kind named by an `(apiVersion, kind)` pair, if the sim manages it.
    pub(crate) fn parse(api_version: &str, kind: &str) -> Option<Kind> {
        match (api_version, kind) {
            (API_VERSION, WORKLOAD) => Some(Kind::Workload),
            (API_VERSION, ROUTE) => Some(Kind::Route),
            (API_VERSION, NODE_POOL) => Some(Kind::NodePool),
            _ => None,
        }
    }

    /// False for cluster-scoped kinds, whose ids carry no namespace.
    pub(crate) fn namespaced(self) -> bool {
        !matches!(self, Kind::NodePool)
    }

    /// Problems with where `id` says the object lives: a namespace exactly when the kind has one,
    /// and non-empty names.
    pub(crate) fn scope_problems(self, id: &keelson_provider_api::ResourceId) -> Vec<String> {
        let mut problems = vec![];
        match (&id.namespace, self.namespaced()) {
            (None, true) => problems.push(format!("{} is namespaced: the id needs a namespace", id.kind)),
            (Some(ns), false) => {
                problems.push(format!("{} is cluster-scoped: the id must not have a namespace (got {ns:?})", id.kind))
            }
            (Some(ns), true) if ns.is_empty() => problems.push("namespace must not be empty".to_owned()),
            _ => {}
        }
        if id.name.is_empty() {
            problems.push("name must not be empty".to_owned());
        }
        problems
    }

    /// Every problem with `spec` for this kind; empty when it is valid.
    pub(crate) fn problems(self, spec: &Value) -> Vec<String> {
        let Some(fields) = spec.as_object() else {
            return vec![format!("spec must be an object, got {}", type_name(spec))];
        };
        match self {
            Kind::Workload => workload_problems(fields),
            Kind::Route => route_problems(fields),
            Kind::NodePool => node_pool_problems(fields),
        }
    }
}

fn workload_problems(fields: &Map<String, Value>) -> Vec<String> {
    let mut problems = unknown_fields(fields, &["image", "replicas", "resources", "variant", "weight"]);
    match fields.get("image") {
        Some(Value::String(image)) if !image.trim().is_empty() => {}
        Some(other) => problems.push(format!("image must be a non-empty string, got {other}")),
        None => problems.push("image is required".to_owned()),
    }
    match fields.get("replicas") {
        Some(n) if n.as_u64().is_some_and(|n| u32::try_from(n).is_ok()) => {}
        Some(other) => problems.push(format!("replicas must be a non-negative integer, got {other}")),
        None => problems.push("replicas is required".to_owned()),
    }
    if let Some(resources) = fields.get("resources")
        && !resources.is_object()
    {
        problems.push(format!("resources must be an object, got {}", type_name(resources)));
    }
    if let Some(variant) = fields.get("variant")
        && !matches!(variant.as_str(), Some("stable" | "canary" | "blue" | "green"))
    {
        problems.push(format!("variant must be one of stable, canary, blue, green; got {variant}"));
    }
    if let Some(weight) = fields.get("weight")
        && weight.as_u64().is_none_or(|w| w > 100)
    {
        problems.push(format!("weight must be an integer from 0 to 100, got {weight}"));
    }
    problems
}

fn route_problems(fields: &Map<String, Value>) -> Vec<String> {
    let mut problems = unknown_fields(fields, &["service", "expose"]);
    match fields.get("service") {
        Some(Value::String(service)) if !service.is_empty() => {}
        Some(other) => problems.push(format!("service must be a non-empty string, got {other}")),
        None => problems.push("service is required".to_owned()),
    }
    match fields.get("expose") {
        Some(Value::Object(expose)) => {
            if let Some(port) = expose.get("port")
                && !port.as_u64().is_some_and(|p| (1..=65535).contains(&p))
            {
                problems.push(format!("expose.port must be an integer from 1 to 65535, got {port}"));
            }
        }
        Some(other) => problems.push(format!("expose must be an object, got {}", type_name(other))),
        None => problems.push("expose is required".to_owned()),
    }
    problems
}

fn node_pool_problems(fields: &Map<String, Value>) -> Vec<String> {
    let mut problems = unknown_fields(fields, &["serverClass", "maxBid", "onDemandFallback"]);
    match fields.get("serverClass") {
        Some(Value::String(class)) if !class.trim().is_empty() => {}
        Some(other) => problems.push(format!("serverClass must be a non-empty string, got {other}")),
        None => problems.push("serverClass is required".to_owned()),
    }
    if let Some(bid) = fields.get("maxBid") {
        let decimal = bid.as_str().is_some_and(|b| {
            let (whole, frac) = b.split_once('.').unwrap_or((b, "0"));
            !whole.is_empty() && whole.bytes().all(|c| c.is_ascii_digit()) && frac.bytes().all(|c| c.is_ascii_digit())
        });
        if !decimal {
            problems.push(format!("maxBid must be a decimal as text such as \"0.08\", got {bid}"));
        }
    }
    if let Some(fallback) = fields.get("onDemandFallback")
        && !fallback.is_boolean()
    {
        problems.push(format!("onDemandFallback must be true or false, got {fallback}"));
    }
    problems
}

/// Unknown fields are rejected so a typo in a render never passes silently as an ignored field.
fn unknown_fields(fields: &Map<String, Value>, known: &[&str]) -> Vec<String> {
    fields
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| format!("unknown field {k:?} (known: {})", known.join(", ")))
        .collect()
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_only_sim_kinds() {
        assert_eq!(Kind::parse(API_VERSION, WORKLOAD), Some(Kind::Workload));
        assert_eq!(Kind::parse(API_VERSION, ROUTE), Some(Kind::Route));
        assert_eq!(Kind::parse("apps/v1", WORKLOAD), None);
        assert_eq!(Kind::parse(API_VERSION, "Deployment"), None);
        assert_eq!(Kind::parse(API_VERSION, NODE_POOL), Some(Kind::NodePool));
    }

    #[test]
    fn node_pools_are_cluster_scoped_and_checked() {
        use keelson_provider_api::ResourceId;
        assert!(!Kind::NodePool.namespaced() && Kind::Workload.namespaced());
        let ok = json!({"serverClass": "gp.vs1.large-iad", "maxBid": "0.08", "onDemandFallback": true});
        assert!(Kind::NodePool.problems(&ok).is_empty());
        let bad = json!({"serverClass": "", "maxBid": 0.08, "onDemandFallback": "yes"});
        assert_eq!(Kind::NodePool.problems(&bad).len(), 3);
        let pool = ResourceId::cluster_scoped("sim", API_VERSION, NODE_POOL, "web");
        assert!(Kind::NodePool.scope_problems(&pool).is_empty());
        let namespaced_pool = ResourceId::namespaced("sim", API_VERSION, NODE_POOL, "team", "web");
        assert_eq!(Kind::NodePool.scope_problems(&namespaced_pool).len(), 1);
        let loose_workload = ResourceId::cluster_scoped("sim", API_VERSION, WORKLOAD, "web");
        assert_eq!(Kind::Workload.scope_problems(&loose_workload).len(), 1);
    }

    #[test]
    fn accepts_a_full_workload() {
        let spec = json!({"image": "web:1", "replicas": 0, "resources": {"cpu": "1"},
                          "variant": "canary", "weight": 10});
        assert_eq!(Kind::Workload.problems(&spec), Vec::<String>::new());
    }

    #[test]
    fn rejects_bad_workloads_with_every_problem() {
        let problems = Kind::Workload.problems(&json!({"image": "", "replicas": -1, "colour": "red"}));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("replicas must be a non-negative integer")));
        assert!(problems.iter().any(|p| p.contains("image must be a non-empty string")));
        assert!(problems.iter().any(|p| p.contains("unknown field \"colour\"")));
    }

    #[test]
    fn rejects_fractional_and_oversized_replicas() {
        for replicas in [json!(1.5), json!(u64::from(u32::MAX) + 1), json!("3")] {
            let problems = Kind::Workload.problems(&json!({"image": "web:1", "replicas": replicas}));
            assert_eq!(problems.len(), 1, "{replicas}: {problems:?}");
        }
    }

    #[test]
    fn rejects_bad_variant_weight_and_resources() {
        let spec = json!({"image": "web:1", "replicas": 1, "variant": "purple", "weight": 101,
                          "resources": "lots"});
        assert_eq!(Kind::Workload.problems(&spec).len(), 3);
    }

    #[test]
    fn requires_image_and_replicas() {
        assert_eq!(Kind::Workload.problems(&json!({})).len(), 2);
        assert_eq!(Kind::Workload.problems(&json!([])), vec!["spec must be an object, got an array"]);
    }

    #[test]
    fn validates_routes() {
        let ok = json!({"service": "web", "expose": {"port": 8080, "host": "web.example.com"}});
        assert!(Kind::Route.problems(&ok).is_empty());
        assert_eq!(Kind::Route.problems(&json!({"service": "", "expose": {"port": 0}})).len(), 2);
        assert_eq!(Kind::Route.problems(&json!({"service": "web", "expose": true})).len(), 1);
    }
}
