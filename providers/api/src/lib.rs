//! Keelson's provider contract (DESIGN.md, "Contracts").
//!
//! A provider **type** has a [`Renderer`]: a pure function from an [`App`] to the resources it
//! wants, with no credentials and no network, so `keelson plan` shows real objects in CI. A provider
//! **instance** (a key of `providers:` in the daemon config) is a [`Provider`] that observes,
//! applies and deletes those resources and reports their health, per resource id; it may also be a
//! [`TrafficRouter`] and a [`MetricsSource`]. Every error has an [`ErrorClass`] that decides
//! whether the engine retries, fails the rollout or reports a conflict.
//!
//! Exactly-once is the engine's job (intent before the call, observe before any re-apply);
//! providers converge by content, and the [`IdempotencyKey`] is passed through for APIs with client
//! tokens. [`registry`] builds instances from typed settings without a `match` on type names;
//! [`conformance`] is the battery every provider must pass.
#![forbid(unsafe_code)]

pub mod clock;
pub mod conformance;
pub mod deadline;
mod error;
pub mod registry;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use keelson_manifest::app::Gate;
use keelson_manifest::{App, AppName, CommitId, Digest};
use serde::{Deserialize, Serialize};

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, ErrorClass, Result};
pub use registry::{
    BuildEnv, ClusterBinding, ClusterBindings, Factories, Instance, Instances, ProviderFactory, Role, Settings,
};

/// The name of a provider instance: a key of `providers:` in the daemon config (`sim` by default).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceName(String);

impl InstanceName {
    /// Wraps a name as it is (config validation checks its form).
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for InstanceName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for InstanceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for InstanceName {
    fn from(name: &str) -> Self {
        Self(name.to_owned())
    }
}

impl From<String> for InstanceName {
    fn from(name: String) -> Self {
        Self(name)
    }
}

impl PartialEq<&str> for InstanceName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// What a provider can do. A cluster role needs one of these from the instance bound to it, and an
/// app whose strategy needs a role its cluster lacks fails validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Capability {
    /// Runs workloads: render, observe, apply, delete.
    Workloads,
    /// Changes the number of replicas of a workload in place.
    Scale,
    /// Shifts traffic between variants ([`TrafficRouter`]).
    TrafficSplit,
    /// Answers metric gates ([`MetricsSource`]).
    Metrics,
    /// Reports the health of resources.
    Health,
    /// Can check an apply without carrying it out.
    DryRun,
    /// Provides (spot) capacity.
    Capacity,
    /// Allocates GPUs to workloads.
    GpuAllocation,
}

impl Capability {
    /// The name used in config, messages and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Workloads => "workloads",
            Capability::Scale => "scale",
            Capability::TrafficSplit => "trafficSplit",
            Capability::Metrics => "metrics",
            Capability::Health => "health",
            Capability::DryRun => "dryRun",
            Capability::Capacity => "capacity",
            Capability::GpuAllocation => "gpuAllocation",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One valid and one invalid spec of a kind, offered by the provider for the conformance suite
/// (external plugins return them from `describe`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KindExample {
    /// A spec the provider must accept.
    pub valid: serde_json::Value,
    /// A spec the provider must reject with [`Error::InvalidSpec`].
    pub invalid: serde_json::Value,
}

/// One resource kind a provider manages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KindDescriptor {
    /// API version such as `apps/v1` or `sim.keelson.dev/v1`.
    pub api_version: String,
    /// Kind such as `Deployment`.
    pub kind: String,
    /// False for cluster-scoped kinds, whose ids have no namespace.
    pub namespaced: bool,
    /// Example specs for the conformance suite.
    pub example: KindExample,
}

impl KindDescriptor {
    /// `apiVersion/kind`, for messages.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.api_version, self.kind)
    }
}

/// Who a provider instance is and what it manages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderDescriptor {
    /// The instance (a key of `providers:`).
    pub instance: InstanceName,
    /// Provider type, e.g. `sim`, `kubernetes`, `plugin`.
    #[serde(rename = "type")]
    pub provider_type: String,
    /// Version of the provider's implementation.
    pub version: String,
    /// Kinds it manages, with examples.
    pub kinds: Vec<KindDescriptor>,
    /// What it can do.
    pub capabilities: Vec<Capability>,
}

impl ProviderDescriptor {
    /// The kind with this `(apiVersion, kind)`, if the provider manages it.
    pub fn kind(&self, api_version: &str, kind: &str) -> Option<&KindDescriptor> {
        self.kinds.iter().find(|k| k.api_version == api_version && k.kind == kind)
    }

    /// True when the provider declares `capability`.
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}

/// Identity of one managed resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceId {
    /// The provider instance that holds it.
    pub instance: InstanceName,
    /// API version of its kind.
    pub api_version: String,
    /// Its kind.
    pub kind: String,
    /// Its namespace; `None` for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "namespace")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

/// Ledgers written before cluster-scoped ids existed wrote `""` for "no namespace".
fn namespace<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|n| !n.is_empty()))
}

impl ResourceId {
    /// A namespaced id.
    pub fn namespaced(
        instance: impl Into<InstanceName>,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        Self {
            instance: instance.into(),
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        }
    }

    /// A cluster-scoped id.
    pub fn cluster_scoped(instance: impl Into<InstanceName>, api_version: &str, kind: &str, name: &str) -> Self {
        Self {
            instance: instance.into(),
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: None,
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ResourceId {
    /// `instance:Kind/namespace/name`, or `instance:Kind/name` when cluster-scoped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}:{}/{}/{}", self.instance, self.kind, ns, self.name),
            None => write!(f, "{}:{}/{}", self.instance, self.kind, self.name),
        }
    }
}

/// The app that owns a resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// The owning app.
    pub app: AppName,
}

/// Which copy of an app a render is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The running version.
    #[default]
    Stable,
    /// The new version under a canary rollout.
    Canary,
    /// One side of a blue-green rollout.
    Blue,
    /// The other side of a blue-green rollout.
    Green,
}

impl Variant {
    /// Every variant.
    pub const ALL: [Variant; 4] = [Variant::Stable, Variant::Canary, Variant::Blue, Variant::Green];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Stable => "stable",
            Variant::Canary => "canary",
            Variant::Blue => "blue",
            Variant::Green => "green",
        }
    }

    /// The suffix renderers put on the names of this variant's objects (`""` for stable).
    pub fn suffix(self) -> &'static str {
        match self {
            Variant::Stable => "",
            Variant::Canary => "-canary",
            Variant::Blue => "-blue",
            Variant::Green => "-green",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Context of one render: where, which revision, which variant and its traffic weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderCtx {
    /// The instance the resources will live in (their ids name it).
    pub instance: InstanceName,
    /// The desired commit.
    pub revision: CommitId,
    /// The app's content digest; providers stamp it on what they apply so `observe` can report it.
    pub digest: Digest,
    /// Which copy of the app.
    pub variant: Variant,
    /// Share of traffic this variant is meant to get, 0–100.
    pub weight: u8,
}

/// A resource as the desired state wants it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredResource {
    /// Where it lives.
    pub id: ResourceId,
    /// The app it belongs to.
    pub owner: Owner,
    /// The app digest this resource was rendered from.
    pub digest: Digest,
    /// The managed fields, as JSON.
    pub spec: serde_json::Value,
}

/// A resource as a provider sees it: only the fields Keelson manages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Which resource.
    pub id: ResourceId,
    /// The app digest stamped on it when it was last applied.
    pub digest: Option<Digest>,
    /// The managed fields as they are live.
    pub spec: serde_json::Value,
}

/// Key of one side-effecting call: (app, rollout, step, resource). Providers whose APIs take
/// client tokens pass it on; the rest may ignore it and converge by content.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// The app.
    pub app: AppName,
    /// Ledger seq of the entry that started the rollout.
    pub rollout: i64,
    /// Step of the rollout.
    pub step: u32,
    /// The resource (its [`ResourceId`] display) or other target of the call.
    pub resource: String,
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}/{}", self.app, self.rollout, self.step, self.resource)
    }
}

/// What a side-effecting call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The resource was created.
    Created,
    /// The resource was changed.
    Updated,
    /// The resource already matched; nothing was done.
    Unchanged,
    /// The resource was deleted.
    Deleted,
    /// Delete of a resource that does not exist.
    NotFound,
    /// The API recognised the idempotency key (a client token) and did nothing again.
    Replayed,
}

impl Outcome {
    /// The stable label of the ledger and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Deleted => "deleted",
            Outcome::NotFound => "not_found",
            Outcome::Replayed => "replayed",
        }
    }
}

/// Health of one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum Health {
    /// Converging: `ready` of `desired` units are up.
    Progressing {
        /// Units up.
        ready: u32,
        /// Units wanted.
        desired: u32,
        /// For people.
        message: String,
    },
    /// Everything wanted is up.
    Healthy,
    /// Up but not working as wanted.
    Degraded {
        /// Why.
        message: String,
    },
    /// The resource does not exist.
    Missing,
}

/// The app whose traffic a router shifts or whose metrics a source reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppRef {
    /// The app.
    pub app: AppName,
    /// Its team (`metadata.team`), which providers map to a namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

impl AppRef {
    /// The reference to `app`.
    pub fn of(app: &App) -> Self {
        Self { app: AppName::new(app.metadata.name.clone()), team: app.metadata.team.clone() }
    }
}

/// One variant's share of an app's traffic, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Weight {
    /// Which variant.
    pub variant: Variant,
    /// Its share, 0–100; the weights of one app add up to 100.
    pub percent: u8,
}

/// Turns an app into the resources it wants. Per provider **type**: no credentials, no cluster.
#[async_trait]
pub trait Renderer: Send + Sync {
    /// The resources `app` wants in this context, each checked the way the provider's API would
    /// check it (a bad render fails in `plan`, not half-way through a rollout).
    async fn render(&self, app: &App, ctx: &RenderCtx) -> Result<Vec<DesiredResource>>;
}

/// One provider instance: a cluster, a cloud account, the simulator, or an external plugin.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Who it is, what it manages and can do.
    fn descriptor(&self) -> &ProviderDescriptor;
    /// The managed fields of each resource, answered per id in the order asked: `Ok(None)` for
    /// one that does not exist, `Err` for one that could not be read.
    async fn observe(&self, ids: &[ResourceId]) -> Vec<(ResourceId, Result<Option<Observed>>)>;
    /// Creates or updates a resource so that it matches; converges by content.
    async fn apply(&self, resource: &DesiredResource, key: &IdempotencyKey) -> Result<Outcome>;
    /// Deletes a resource; [`Outcome::NotFound`] when it does not exist.
    async fn delete(&self, id: &ResourceId, key: &IdempotencyKey) -> Result<Outcome>;
    /// Health of each resource, per id in the order asked.
    async fn health(&self, ids: &[ResourceId]) -> Vec<(ResourceId, Result<Health>)>;
}

/// Shifts an app's traffic between variants (a mesh, or the simulator).
#[async_trait]
pub trait TrafficRouter: Send + Sync {
    /// Sets the weights of `app`'s variants; they must add up to 100. Converges by content.
    async fn set_weights(&self, app: &AppRef, weights: &[Weight], key: &IdempotencyKey) -> Result<Outcome>;
    /// The weights as they are live; empty when the app has no route yet.
    async fn weights(&self, app: &AppRef) -> Result<Vec<Weight>>;
}

/// Answers metric gates (Prometheus, or the simulator).
#[async_trait]
pub trait MetricsSource: Send + Sync {
    /// The value of `gate.metric` for one variant of `app` over the last `window`.
    async fn query(&self, app: &AppRef, gate: &Gate, variant: Variant, window: Duration) -> Result<f64>;
}

/// `(id, result)` pairs in the order of `ids`, all with the same error: for a provider that could
/// not answer a batch at all (an unreachable API).
pub fn each_failed<T>(ids: &[ResourceId], error: impl Fn() -> Error) -> Vec<(ResourceId, Result<T>)> {
    ids.iter().map(|id| (id.clone(), Err(error()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_show_namespace_only_when_they_have_one() {
        let namespaced = ResourceId::namespaced("sim", "sim.keelson.dev/v1", "Workload", "payments", "web");
        assert_eq!(namespaced.to_string(), "sim:Workload/payments/web");
        let cluster = ResourceId::cluster_scoped("sim", "sim.keelson.dev/v1", "NodePool", "gpu");
        assert_eq!(cluster.to_string(), "sim:NodePool/gpu");
    }

    #[test]
    fn cluster_scoped_ids_have_no_namespace_field_and_old_empty_namespaces_read_as_none() {
        let cluster = ResourceId::cluster_scoped("sim", "v1", "NodePool", "gpu");
        let json = serde_json::to_value(&cluster).unwrap();
        assert!(json.get("namespace").is_none(), "{json}");
        let old: ResourceId = serde_json::from_value(
            serde_json::json!({"instance": "sim", "apiVersion": "v1", "kind": "K", "namespace": "", "name": "n"}),
        )
        .unwrap();
        assert_eq!(old.namespace, None);
        let namespaced: ResourceId = serde_json::from_value(
            serde_json::json!({"instance": "sim", "apiVersion": "v1", "kind": "K", "namespace": "team", "name": "n"}),
        )
        .unwrap();
        assert_eq!(namespaced.namespace.as_deref(), Some("team"));
    }

    #[test]
    fn outcome_labels_are_stable() {
        let labels: Vec<&str> = [
            Outcome::Created,
            Outcome::Updated,
            Outcome::Unchanged,
            Outcome::Deleted,
            Outcome::NotFound,
            Outcome::Replayed,
        ]
        .map(Outcome::label)
        .into();
        assert_eq!(labels, ["created", "updated", "unchanged", "deleted", "not_found", "replayed"]);
    }
}
