//! Keelson provider contracts, the provider registry, and the built-in providers.
//!
//! The reconciler talks to the world only through [`Provider`]: it renders an [`App`] into
//! [`DesiredResource`]s (no credentials, no network I/O), observes them, applies and deletes them
//! under an [`IdempotencyKey`], and asks for their [`Health`].
#![forbid(unsafe_code)]

pub mod clock;
pub mod conformance;
pub mod registry;
pub mod sim;

use std::fmt;

use async_trait::async_trait;
use keelson_manifest::App;
use serde::{Deserialize, Serialize};

pub use clock::{Clock, ManualClock, SystemClock};
pub use registry::Registry;

/// Errors a provider reports to the reconciler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The provider does not manage this kind of resource.
    #[error("provider {provider}: unknown resource kind {api_version}/{kind}")]
    UnknownKind { provider: String, api_version: String, kind: String },
    /// The resource spec was rejected before any side effect.
    #[error("provider {provider}: invalid spec for {resource}: {message}")]
    InvalidSpec { provider: String, resource: String, message: String },
    /// The provider call failed (possibly an injected fault); it may be retried.
    #[error("provider {provider}: {message}")]
    Failed { provider: String, message: String },
    /// No provider instance is bound to this name.
    #[error("no provider instance named {0:?}; bind one in the daemon config under `providers:`")]
    NoSuchInstance(String),
    /// The provider's own storage failed.
    #[error("provider {provider}: storage: {source}")]
    Storage {
        provider: String,
        #[source]
        source: sqlx::Error,
    },
}

impl Error {
    /// A short, stable label for metrics (never the message).
    pub fn kind_label(&self) -> &'static str {
        match self {
            Error::UnknownKind { .. } => "unknown_kind",
            Error::InvalidSpec { .. } => "invalid_spec",
            Error::Failed { .. } => "failed",
            Error::NoSuchInstance(_) => "no_such_instance",
            Error::Storage { .. } => "storage",
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a provider can do; an app whose strategy needs a capability its cluster lacks fails validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Capability {
    Workloads,
    Scale,
    TrafficSplit,
    Metrics,
    Health,
    DryRun,
    Capacity,
    GpuAllocation,
}

/// Who a provider is and what it manages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderDescriptor {
    /// Provider type, e.g. `sim`, `kubernetes`.
    #[serde(rename = "type")]
    pub provider_type: String,
    pub version: String,
    /// `(apiVersion, kind)` pairs this provider manages.
    pub kinds: Vec<(String, String)>,
    pub capabilities: Vec<Capability>,
}

/// Identity of one managed resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceId {
    /// The provider instance that owns it (a key of `providers:` in config, or `sim`).
    pub instance: String,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}/{}", self.instance, self.kind, self.namespace, self.name)
    }
}

/// The app that owns a set of resources (for `list`, i.e. prune).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pub app: String,
}

/// Which copy of an app a render is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    #[default]
    Stable,
    Canary,
    Blue,
    Green,
}

/// Context of one render: which revision, which variant and its traffic weight.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenderCtx {
    /// The desired commit (full hex id).
    pub revision: String,
    /// The app's content digest; providers stamp it on what they apply so `observe` can report it.
    pub digest: String,
    pub variant: Variant,
    pub weight: u8,
}

/// A resource as the desired state wants it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredResource {
    pub id: ResourceId,
    pub owner: Owner,
    /// The app digest this resource was rendered from.
    pub digest: String,
    /// The managed fields, as JSON.
    pub spec: serde_json::Value,
}

/// A resource as a provider sees it: only the fields Keelson manages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    pub id: ResourceId,
    /// The app digest stamped on the resource when it was last applied.
    pub digest: Option<String>,
    pub spec: serde_json::Value,
}

/// Key that makes a provider call safe to replay: (app, rollout id, step, resource).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey {
    pub app: String,
    /// Ledger seq of the intent that started the rollout.
    pub rollout: i64,
    pub step: u32,
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
    /// This idempotency key was already carried out; nothing was done again.
    Replayed,
}

/// Health of one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum Health {
    /// Converging: `ready` of `desired` units are up.
    Progressing {
        ready: u32,
        desired: u32,
        message: String,
    },
    Healthy,
    Degraded {
        message: String,
    },
    /// The resource does not exist.
    Missing,
}

/// A provider of resources (a cluster, a cloud, the simulator, or an external plugin).
#[async_trait]
pub trait Provider: Send + Sync {
    /// Type, version, resource kinds and capabilities.
    fn descriptor(&self) -> ProviderDescriptor;
    /// Turns an app into resources; no credentials and no network I/O.
    async fn render(&self, app: &App, ctx: &RenderCtx) -> Result<Vec<DesiredResource>>;
    /// Reads the managed fields of these resources; missing ones are left out.
    async fn observe(&self, ids: &[ResourceId]) -> Result<Vec<Observed>>;
    /// All resources this provider holds for an owner.
    async fn list(&self, owner: &Owner) -> Result<Vec<ResourceId>>;
    /// Creates or updates a resource; replaying a key never acts twice.
    async fn apply(&self, resource: &DesiredResource, key: &IdempotencyKey) -> Result<Outcome>;
    /// Deletes a resource; replaying a key never acts twice.
    async fn delete(&self, id: &ResourceId, key: &IdempotencyKey) -> Result<Outcome>;
    /// Health of one resource.
    async fn health(&self, id: &ResourceId) -> Result<Health>;
}
