//! The built-in simulated fleet: the default provider of `keelson up`.
//!
//! State lives in the sim's own SQLite file (`.keelson/sim.db`), never in the daemon's database, so
//! an intent and its effect are separate transactions exactly as with a real cluster. Like a real
//! API it converges by content and keeps no record of idempotency keys, so the engine's
//! exactly-once machinery (intent first, observe before a re-apply) is what a replay relies on.
//! Workloads converge over `rollout_time` as measured by an injected [`Clock`]; traffic weights
//! and per-variant metrics make it a [`TrafficRouter`] and a [`MetricsSource`]; [`Faults`] make
//! calls fail, hang, slow down, degrade a variant, or let a live object drift.
#![forbid(unsafe_code)]

mod factory;
mod faults;
mod render;
mod spec;
mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use keelson_manifest::app::Gate;
use keelson_provider_api::{
    AppRef, Capability, Clock, DesiredResource, Error, ErrorClass, Health, IdempotencyKey, InstanceName,
    KindDescriptor, KindExample, MetricsSource, Observed, Outcome, Provider, ProviderDescriptor, ResourceId, Result,
    TrafficRouter, Variant, Weight,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::SqlitePool;

pub use factory::{SimFactory, SimSettings};
pub use faults::{DriftFault, Faults};
pub use render::{SimRenderer, render};
pub use spec::{API_VERSION, NODE_POOL, ROUTE, WORKLOAD};

use faults::set_pointer;
use spec::Kind;
use store::StoredResource;

/// What every sim instance can do.
pub const CAPABILITIES: [Capability; 7] = [
    Capability::Workloads,
    Capability::Scale,
    Capability::Health,
    Capability::TrafficSplit,
    Capability::Metrics,
    Capability::Capacity,
    Capability::DryRun,
];

/// How a sim instance behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Time for a workload to converge after an apply; ready replicas grow linearly over it.
    pub rollout_time: Duration,
    /// Faults to inject from the start.
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self { rollout_time: Duration::from_millis(1500), faults: Faults::default() }
    }
}

/// A sim call that a fault can slow down, hang or make unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Operation {
    /// [`Provider::observe`].
    Observe,
    /// [`Provider::apply`].
    Apply,
    /// [`Provider::delete`].
    Delete,
    /// [`Provider::health`].
    Health,
    /// [`TrafficRouter::set_weights`].
    SetWeights,
    /// [`TrafficRouter::weights`].
    Weights,
    /// [`MetricsSource::query`].
    Query,
}

/// Metrics a variant reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VariantMetrics {
    /// Share of requests answered without error, in percent.
    pub success_rate: f64,
    /// 99th percentile latency in milliseconds.
    pub latency_p99_ms: f64,
}

impl VariantMetrics {
    /// What a working variant reports.
    pub const HEALTHY: VariantMetrics = VariantMetrics { success_rate: 99.95, latency_p99_ms: 85.0 };
}

/// The simulated fleet, one instance per provider name bound to `type: sim`.
#[derive(Debug)]
pub struct SimProvider {
    descriptor: ProviderDescriptor,
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
    rollout_time: Duration,
    faults: Mutex<Faults>,
    /// Drift faults already carried out (resource, pointer): each happens once per process.
    drifted: Mutex<BTreeSet<(String, String)>>,
}

impl SimProvider {
    /// Opens the sim database at `path` (created with its tables if missing) for instance `instance`.
    pub async fn open(path: &Path, instance: &str, clock: Arc<dyn Clock>, config: SimConfig) -> Result<SimProvider> {
        let name = InstanceName::new(instance);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| Error::unavailable(&name, format!("cannot create {}: {e}", parent.display())))?;
        }
        let pool = store::open(path)
            .await
            .map_err(|e| Error::unavailable(&name, format!("cannot open {}: {e}", path.display())))?;
        Ok(SimProvider {
            descriptor: descriptor(name),
            pool,
            clock,
            rollout_time: config.rollout_time,
            faults: Mutex::new(config.faults),
            drifted: Mutex::default(),
        })
    }

    /// Replaces the injected faults; calls already running keep the old ones.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Sets the field at JSON `pointer` of a live object to `value`, as if someone edited it by hand.
    ///
    /// The stamped digest and the rollout progress stay as they were, just as a manual edit leaves
    /// an annotation alone: only a diff of the managed fields reveals the drift.
    pub async fn drift(&self, id: &ResourceId, pointer: &str, value: Value) -> Result<()> {
        self.kind_of(id)?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.storage(e))?;
        let Some(mut stored) = store::get(&mut tx, id).await.map_err(|e| self.storage(e))? else {
            return Err(self.failed(format!("cannot drift {id}: it does not exist")));
        };
        set_pointer(&mut stored.spec, pointer, value)
            .map_err(|message| self.failed(format!("cannot drift {id} at {pointer:?}: {message}")))?;
        store::put(&mut tx, id, &stored).await.map_err(|e| self.storage(e))?;
        tx.commit().await.map_err(|e| self.storage(e))
    }

    /// Closes the database; later calls fail with a transient error.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn name(&self) -> &InstanceName {
        &self.descriptor.instance
    }

    fn faults(&self) -> Faults {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies the operation-wide faults: a hang never returns, a slow call waits, an unavailable
    /// one fails. `after_effect` says whether the delay comes after the call's effect (apply, delete).
    async fn enter(&self, operation: Operation) -> Result<()> {
        let faults = self.faults();
        if faults.hang.contains(&operation) {
            std::future::pending::<()>().await;
        }
        if faults.unavailable.contains(&operation) {
            return Err(Error::unavailable(self.name(), format!("injected fault: {operation:?} is unavailable")));
        }
        if !matches!(operation, Operation::Apply | Operation::Delete)
            && let Some(delay) = faults.slow.get(&operation)
        {
            tokio::time::sleep(*delay).await;
        }
        Ok(())
    }

    async fn delay_after_effect(&self, operation: Operation) {
        if let Some(delay) = self.faults().slow.get(&operation) {
            tokio::time::sleep(*delay).await;
        }
    }

    fn now_micros(&self) -> i64 {
        i64::try_from(self.clock.now().unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
    }

    /// The sim kind of `id`, checking that it is this instance's and not forbidden.
    fn kind_of(&self, id: &ResourceId) -> Result<Kind> {
        if id.instance != *self.name() {
            return Err(Error::Failed {
                instance: self.name().clone(),
                message: format!(
                    "resource {id} belongs to provider instance {:?}, not {:?}",
                    id.instance.as_str(),
                    self.name().as_str()
                ),
                class: ErrorClass::Terminal,
            });
        }
        let kind = Kind::parse(&id.api_version, &id.kind).ok_or_else(|| Error::UnknownKind {
            instance: self.name().clone(),
            api_version: id.api_version.clone(),
            kind: id.kind.clone(),
        })?;
        if self.faults().forbidden.contains(&id.name) {
            return Err(Error::Forbidden {
                instance: self.name().clone(),
                resource: id.to_string(),
                message: "injected fault: this provider may not touch it".into(),
            });
        }
        Ok(kind)
    }

    fn failed(&self, message: String) -> Error {
        Error::Failed { instance: self.name().clone(), message, class: ErrorClass::Terminal }
    }

    fn storage(&self, source: sqlx::Error) -> Error {
        Error::unavailable(self.name(), format!("storage: {source}"))
    }

    /// Carries out the drift faults on `id` that are due and not yet done.
    async fn drift_if_due(&self, id: &ResourceId) -> Result<()> {
        let due: Vec<DriftFault> = {
            let done = self.drifted.lock().unwrap_or_else(|e| e.into_inner());
            let faults = self.faults();
            faults
                .drift
                .into_iter()
                .filter(|f| f.name == id.name && !done.contains(&(id.to_string(), f.pointer.clone())))
                .collect()
        };
        if due.is_empty() {
            return Ok(());
        }
        let stored = {
            let mut conn = self.pool.acquire().await.map_err(|e| self.storage(e))?;
            store::get(&mut conn, id).await.map_err(|e| self.storage(e))?
        };
        let Some(stored) = stored else { return Ok(()) };
        let since = u128::try_from(self.now_micros().saturating_sub(stored.rollout_from)).unwrap_or(0);
        for fault in due.into_iter().filter(|f| since >= f.after.as_micros()) {
            self.drift(id, fault.spec_pointer(), fault.value.clone()).await?;
            self.drifted.lock().unwrap_or_else(|e| e.into_inner()).insert((id.to_string(), fault.pointer.clone()));
        }
        Ok(())
    }

    async fn observe_one(&self, id: &ResourceId) -> Result<Option<Observed>> {
        self.kind_of(id)?;
        self.drift_if_due(id).await?;
        let mut conn = self.pool.acquire().await.map_err(|e| self.storage(e))?;
        let stored = store::get(&mut conn, id).await.map_err(|e| self.storage(e))?;
        Ok(stored.map(|s| Observed { id: id.clone(), digest: Some(s.digest.into()), spec: s.spec }))
    }

    async fn health_one(&self, id: &ResourceId) -> Result<Health> {
        let kind = self.kind_of(id)?;
        self.drift_if_due(id).await?;
        let mut conn = self.pool.acquire().await.map_err(|e| self.storage(e))?;
        let Some(stored) = store::get(&mut conn, id).await.map_err(|e| self.storage(e))? else {
            return Ok(Health::Missing);
        };
        if kind != Kind::Workload {
            return Ok(Health::Healthy);
        }
        // A drift can put anything in `replicas`; the live object is then unhealthy, not an error.
        let Some(desired) = stored.spec.get("replicas").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok())
        else {
            return Ok(Health::Degraded { message: format!("{id} has no valid replica count") });
        };
        let elapsed = u128::try_from(self.now_micros().saturating_sub(stored.rollout_from)).unwrap_or(0);
        let total = self.rollout_time.as_micros();
        if desired == 0 || elapsed >= total {
            return Ok(Health::Healthy);
        }
        // elapsed < total, so ready < desired and fits in u32.
        let ready = u32::try_from(u128::from(desired) * elapsed / total).unwrap_or(desired);
        Ok(Health::Progressing { ready, desired, message: format!("{id}: {ready} of {desired} replicas ready") })
    }
}

/// The descriptor of a sim instance, with one valid and one invalid example per kind.
fn descriptor(instance: InstanceName) -> ProviderDescriptor {
    let kind = |kind: &str, namespaced: bool, valid: Value, invalid: Value| KindDescriptor {
        api_version: API_VERSION.to_owned(),
        kind: kind.to_owned(),
        namespaced,
        example: KindExample { valid, invalid },
    };
    ProviderDescriptor {
        instance,
        provider_type: "sim".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        kinds: vec![
            kind(
                WORKLOAD,
                true,
                json!({"image": "registry.example.com/web:1.0", "replicas": 2}),
                json!({"image": "", "replicas": -1}),
            ),
            kind(
                ROUTE,
                true,
                json!({"service": "web", "expose": {"port": 8080}}),
                json!({"service": "web", "expose": {"port": "eighty"}}),
            ),
            kind(
                NODE_POOL,
                false,
                json!({"serverClass": "gp.vs1.large-iad", "maxBid": "0.08", "onDemandFallback": false}),
                json!({"serverClass": "", "maxBid": 0.08}),
            ),
        ],
        capabilities: CAPABILITIES.to_vec(),
    }
}

#[async_trait]
impl Provider for SimProvider {
    fn descriptor(&self) -> &ProviderDescriptor {
        &self.descriptor
    }

    async fn observe(&self, ids: &[ResourceId]) -> Vec<(ResourceId, Result<Option<Observed>>)> {
        if let Err(e) = self.enter(Operation::Observe).await {
            return keelson_provider_api::each_failed(ids, || e.clone());
        }
        let mut answers = Vec::with_capacity(ids.len());
        for id in ids {
            answers.push((id.clone(), self.observe_one(id).await));
        }
        answers
    }

    async fn apply(&self, resource: &DesiredResource, _key: &IdempotencyKey) -> Result<Outcome> {
        let id = &resource.id;
        self.enter(Operation::Apply).await?;
        let kind = self.kind_of(id)?;
        if self.faults().fail_apply.contains(&id.name) {
            return Err(self.failed(format!("injected fault: apply of {id} was rejected")));
        }
        let mut problems = kind.scope_problems(id);
        problems.extend(kind.problems(&resource.spec));
        if !problems.is_empty() {
            return Err(Error::InvalidSpec {
                instance: self.name().clone(),
                resource: id.to_string(),
                message: problems.join("; "),
            });
        }

        let now = self.now_micros();
        // IMMEDIATE takes the write lock up front, so two concurrent applies of one object see
        // each other's effect and only one of them creates it.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.storage(e))?;
        let existing = store::get(&mut tx, id).await.map_err(|e| self.storage(e))?;
        let outcome = match &existing {
            None => Outcome::Created,
            Some(live)
                if live.spec == resource.spec
                    && live.digest == resource.digest.as_str()
                    && live.owner == resource.owner.app.as_str() =>
            {
                Outcome::Unchanged
            }
            Some(_) => Outcome::Updated,
        };
        if outcome != Outcome::Unchanged {
            // Only a change of the spec starts a new rollout; a digest-only change is metadata.
            let rollout_from = match &existing {
                Some(live) if live.spec == resource.spec => live.rollout_from,
                _ => now,
            };
            let stored = StoredResource {
                owner: resource.owner.app.to_string(),
                digest: resource.digest.to_string(),
                spec: resource.spec.clone(),
                rollout_from,
            };
            store::put(&mut tx, id, &stored).await.map_err(|e| self.storage(e))?;
        }
        tx.commit().await.map_err(|e| self.storage(e))?;
        self.delay_after_effect(Operation::Apply).await;
        Ok(outcome)
    }

    async fn delete(&self, id: &ResourceId, _key: &IdempotencyKey) -> Result<Outcome> {
        self.enter(Operation::Delete).await?;
        let kind = self.kind_of(id)?;
        if self.faults().fail_delete.contains(&id.name) {
            return Err(self.failed(format!("injected fault: delete of {id} was rejected")));
        }
        let problems = kind.scope_problems(id);
        if !problems.is_empty() {
            return Err(Error::InvalidSpec {
                instance: self.name().clone(),
                resource: id.to_string(),
                message: problems.join("; "),
            });
        }
        let mut conn = self.pool.acquire().await.map_err(|e| self.storage(e))?;
        let removed = store::remove(&mut conn, id).await.map_err(|e| self.storage(e))?;
        drop(conn);
        self.delay_after_effect(Operation::Delete).await;
        Ok(if removed { Outcome::Deleted } else { Outcome::NotFound })
    }

    async fn health(&self, ids: &[ResourceId]) -> Vec<(ResourceId, Result<Health>)> {
        if let Err(e) = self.enter(Operation::Health).await {
            return keelson_provider_api::each_failed(ids, || e.clone());
        }
        let mut answers = Vec::with_capacity(ids.len());
        for id in ids {
            answers.push((id.clone(), self.health_one(id).await));
        }
        answers
    }
}

#[async_trait]
impl TrafficRouter for SimProvider {
    async fn set_weights(&self, app: &AppRef, weights: &[Weight], _key: &IdempotencyKey) -> Result<Outcome> {
        self.enter(Operation::SetWeights).await?;
        let problems = weight_problems(weights);
        if !problems.is_empty() {
            return Err(Error::InvalidSpec {
                instance: self.name().clone(),
                resource: format!("traffic weights of app {}", app.app),
                message: problems.join("; "),
            });
        }
        let mut wanted: Vec<Weight> = weights.iter().copied().filter(|w| w.percent > 0).collect();
        wanted.sort_by_key(|w| w.variant);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.storage(e))?;
        let live = store::weights(&mut tx, self.name(), &app.app).await.map_err(|e| self.storage(e))?;
        let outcome = if live.is_empty() {
            Outcome::Created
        } else if live == wanted {
            Outcome::Unchanged
        } else {
            Outcome::Updated
        };
        if outcome != Outcome::Unchanged {
            store::put_weights(&mut tx, self.name(), &app.app, &wanted).await.map_err(|e| self.storage(e))?;
        }
        tx.commit().await.map_err(|e| self.storage(e))?;
        Ok(outcome)
    }

    async fn weights(&self, app: &AppRef) -> Result<Vec<Weight>> {
        self.enter(Operation::Weights).await?;
        let mut conn = self.pool.acquire().await.map_err(|e| self.storage(e))?;
        store::weights(&mut conn, self.name(), &app.app).await.map_err(|e| self.storage(e))
    }
}

/// Every problem with a set of weights: they add up to 100, one per variant.
fn weight_problems(weights: &[Weight]) -> Vec<String> {
    let mut problems = vec![];
    let total: u32 = weights.iter().map(|w| u32::from(w.percent)).sum();
    if total != 100 {
        problems.push(format!("weights must add up to 100, they add up to {total}"));
    }
    let mut seen = BTreeSet::new();
    for w in weights {
        if !seen.insert(w.variant) {
            problems.push(format!("variant {} has more than one weight", w.variant));
        }
    }
    problems
}

#[async_trait]
impl MetricsSource for SimProvider {
    async fn query(&self, _app: &AppRef, gate: &Gate, variant: Variant, _window: Duration) -> Result<f64> {
        self.enter(Operation::Query).await?;
        let metrics = self.faults().degrade.get(&variant).copied().unwrap_or(VariantMetrics::HEALTHY);
        match gate.metric.as_str() {
            "success-rate" => Ok(metrics.success_rate),
            "error-rate" => Ok(100.0 - metrics.success_rate),
            "latency-p99" => Ok(metrics.latency_p99_ms),
            other => Err(self
                .failed(format!("unknown metric {other:?}; the sim reports success-rate, error-rate and latency-p99"))),
        }
    }
}
