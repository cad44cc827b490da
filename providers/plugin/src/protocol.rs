//! The messages of protocol v1 as types: the methods, the answers the host reads (after they
//! passed their schema), and the plugin's errors with their class.

use std::fmt;

use keelson_provider_api::{Capability, ErrorClass, KindDescriptor};
use serde::Deserialize;
use serde_json::Value;

/// The protocol version this host speaks; `describe` must answer the same.
pub const PROTOCOL_VERSION: u32 = 1;

/// A method the host calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Who the plugin is; the first call to every process.
    Describe,
    /// App → resources (pure).
    Render,
    /// Managed fields per id.
    Observe,
    /// Create or update one resource.
    Apply,
    /// Delete one resource.
    Delete,
    /// Health per id.
    Health,
    /// Traffic weights of an app's variants (capability `trafficSplit`).
    SetWeights,
    /// The live weights (capability `trafficSplit`).
    Weights,
    /// A metric gate's value (capability `metrics`).
    Query,
}

impl Method {
    /// Every method, in the order the documentation lists them.
    pub const ALL: [Method; 9] = [
        Method::Describe,
        Method::Render,
        Method::Observe,
        Method::Apply,
        Method::Delete,
        Method::Health,
        Method::SetWeights,
        Method::Weights,
        Method::Query,
    ];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Describe => "describe",
            Method::Render => "render",
            Method::Observe => "observe",
            Method::Apply => "apply",
            Method::Delete => "delete",
            Method::Health => "health",
            Method::SetWeights => "setWeights",
            Method::Weights => "weights",
            Method::Query => "query",
        }
    }

    /// The schema file its params follow.
    pub fn params_schema(self) -> &'static str {
        match self {
            Method::Describe => "describe.params.json",
            Method::Render => "render.params.json",
            Method::Observe => "observe.params.json",
            Method::Apply => "apply.params.json",
            Method::Delete => "delete.params.json",
            Method::Health => "health.params.json",
            Method::SetWeights => "setWeights.params.json",
            Method::Weights => "weights.params.json",
            Method::Query => "query.params.json",
        }
    }

    /// The schema file its result follows.
    pub fn result_schema(self) -> &'static str {
        match self {
            Method::Describe => "describe.result.json",
            Method::Render => "render.result.json",
            Method::Observe => "observe.result.json",
            Method::Apply => "apply.result.json",
            Method::Delete => "delete.result.json",
            Method::Health => "health.result.json",
            Method::SetWeights => "setWeights.result.json",
            Method::Weights => "weights.result.json",
            Method::Query => "query.result.json",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to `describe`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Description {
    /// The protocol version the plugin speaks.
    pub protocol_version: u32,
    /// The plugin's own name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The kinds it manages, with example specs.
    pub kinds: Vec<KindDescriptor>,
    /// What it can do.
    pub capabilities: Vec<Capability>,
}

/// An error a plugin answered with (a JSON-RPC error object).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PluginError {
    /// The JSON-RPC code.
    pub code: i64,
    /// What the plugin said.
    pub message: String,
    /// Class and reason; absent for plain JSON-RPC errors (method not found, bad params).
    #[serde(default)]
    pub data: Option<ErrorData>,
}

/// `error.data`: what the daemon does about the error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorData {
    /// Retry, fail, or report a conflict.
    pub class: ErrorClass,
    /// The contract's error kind.
    #[serde(default)]
    pub reason: Option<Reason>,
    /// What the error is about, for messages.
    #[serde(default)]
    pub resource: Option<String>,
    /// `conflict`: who owns the fields.
    #[serde(default)]
    pub manager: Option<String>,
    /// `conflict`: the fields.
    #[serde(default)]
    pub fields: Vec<String>,
}

/// The contract's error kinds as a plugin names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reason {
    /// The spec (or app) was rejected before any side effect.
    InvalidSpec,
    /// The plugin does not manage this kind.
    UnknownKind,
    /// The backend refused (RBAC, a policy).
    Forbidden,
    /// Another writer owns the fields.
    Conflict,
    /// The backend could not be reached.
    Unavailable,
    /// Anything else.
    Failed,
}

/// JSON-RPC's "method not found".
pub const METHOD_NOT_FOUND: i64 = -32601;

/// A plugin's answer to a batch: one entry per id.
#[derive(Debug, Clone, Deserialize)]
pub struct Batch<T> {
    /// In the order asked.
    pub results: Vec<PerId<T>>,
}

/// One entry of a batch answer (the value's field name differs by method, hence `flatten`).
#[derive(Debug, Clone, Deserialize)]
pub struct PerId<T> {
    /// The id answered.
    pub id: keelson_provider_api::ResourceId,
    /// Its own error, if it failed.
    #[serde(default)]
    pub error: Option<PluginError>,
    /// The value, if it did not.
    #[serde(flatten)]
    pub value: T,
}

/// `observe`'s value: the observed resource, or null when it does not exist.
#[derive(Debug, Clone, Deserialize)]
pub struct ObservedValue {
    /// `null` (or absent, with an error) when there is nothing.
    #[serde(default)]
    pub observed: Option<ObservedFields>,
}

/// The managed fields of a resource as a plugin reports them.
#[derive(Debug, Clone, Deserialize)]
pub struct ObservedFields {
    /// The digest stamped at the last apply.
    pub digest: Option<String>,
    /// The managed fields.
    pub spec: Value,
}

/// `health`'s value.
#[derive(Debug, Clone, Deserialize)]
pub struct HealthValue {
    /// Absent only when the entry is an error.
    #[serde(default)]
    pub health: Option<HealthFields>,
}

/// Health as a plugin reports it (`message` is optional on the wire).
#[derive(Debug, Clone, Deserialize)]
pub struct HealthFields {
    /// `healthy`, `progressing`, `degraded` or `missing`.
    pub status: HealthStatus,
    /// Units up (progressing).
    #[serde(default)]
    pub ready: u32,
    /// Units wanted (progressing).
    #[serde(default)]
    pub desired: u32,
    /// For people.
    #[serde(default)]
    pub message: String,
}

/// The statuses of [`HealthFields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HealthStatus {
    /// Everything wanted is up.
    Healthy,
    /// Converging.
    Progressing,
    /// Up but not working as wanted.
    Degraded,
    /// It does not exist.
    Missing,
}

impl From<HealthFields> for keelson_provider_api::Health {
    fn from(h: HealthFields) -> Self {
        use keelson_provider_api::Health;
        match h.status {
            HealthStatus::Healthy => Health::Healthy,
            HealthStatus::Progressing => Health::Progressing { ready: h.ready, desired: h.desired, message: h.message },
            HealthStatus::Degraded => Health::Degraded { message: h.message },
            HealthStatus::Missing => Health::Missing,
        }
    }
}

/// `apply`, `delete` and `setWeights` answer an outcome.
#[derive(Debug, Clone, Deserialize)]
pub struct OutcomeResult {
    /// What the call did.
    pub outcome: keelson_provider_api::Outcome,
}

/// `render`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct RenderResult {
    /// The resources the app wants.
    pub resources: Vec<keelson_provider_api::DesiredResource>,
}

/// `weights`' answer.
#[derive(Debug, Clone, Deserialize)]
pub struct WeightsResult {
    /// The live weights.
    pub weights: Vec<keelson_provider_api::Weight>,
}

/// `query`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct QueryResult {
    /// The metric's value.
    pub value: f64,
}

/// A provider-initiated event a plugin sent as a notification (method `event`, or any other).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderEvent {
    /// The instance whose plugin sent it.
    pub instance: keelson_provider_api::InstanceName,
    /// The notification's method (`event` for the reserved one).
    pub method: String,
    /// Its params as sent.
    pub params: Value,
}

impl ProviderEvent {
    /// `params.type` of an `event`, e.g. `preemption`.
    pub fn event_type(&self) -> Option<&str> {
        self.params.get("type").and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_match_their_schema_files() {
        for m in Method::ALL {
            assert_eq!(m.params_schema(), format!("{}.params.json", m.as_str()));
            assert_eq!(m.result_schema(), format!("{}.result.json", m.as_str()));
            assert!(crate::schema::text(m.params_schema()).is_some(), "{m}");
            assert!(crate::schema::text(m.result_schema()).is_some(), "{m}");
        }
    }

    #[test]
    fn batch_entries_read_a_value_or_an_error() {
        let batch: Batch<ObservedValue> = serde_json::from_value(serde_json::json!({"results": [
            {"id": {"instance": "dns", "apiVersion": "v1", "kind": "Record", "namespace": "web", "name": "a"},
             "observed": {"digest": "sha256:1", "spec": {"ttl": 60}}},
            {"id": {"instance": "dns", "apiVersion": "v1", "kind": "Record", "namespace": "web", "name": "b"},
             "observed": null},
            {"id": {"instance": "dns", "apiVersion": "v1", "kind": "Gadget", "namespace": "web", "name": "c"},
             "error": {"code": -32000, "message": "unknown kind", "data": {"class": "terminal", "reason": "unknownKind"}}}
        ]}))
        .unwrap();
        assert_eq!(batch.results[0].value.observed.as_ref().unwrap().digest.as_deref(), Some("sha256:1"));
        assert!(batch.results[1].value.observed.is_none() && batch.results[1].error.is_none());
        let error = batch.results[2].error.as_ref().unwrap();
        assert_eq!(error.data.as_ref().unwrap().reason, Some(Reason::UnknownKind));
    }
}
