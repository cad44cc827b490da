//! The built-in simulated fleet: the default provider of `keelson up`.
//!
//! State lives in the sim's own SQLite file (`.keelson/sim.db`), never in the daemon's database, so
//! an intent and its effect are separate transactions exactly as with a real cluster. Workloads
//! converge over `rollout_time` as measured by an injected [`Clock`], and [`Faults`] make calls fail,
//! slow down, or let a live object drift.

mod render;
mod spec;
mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use keelson_manifest::App;
use serde_json::{Value, json};
use sqlx::SqlitePool;

pub use spec::{API_VERSION, ROUTE, WORKLOAD};

use crate::conformance::{Examples, KindExample};
use crate::{
    Capability, Clock, DesiredResource, Error, Health, IdempotencyKey, Observed, Outcome, Owner, Provider,
    ProviderDescriptor, RenderCtx, ResourceId, Result,
};
use spec::Kind;
use store::StoredResource;

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

/// A provider call that a fault can slow down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// [`Provider::observe`].
    Observe,
    /// [`Provider::list`].
    List,
    /// [`Provider::apply`].
    Apply,
    /// [`Provider::delete`].
    Delete,
    /// [`Provider::health`].
    Health,
}

/// Faults injected into a sim by tests or config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Resource names whose apply fails with [`Error::Failed`] before any effect.
    pub fail_apply: BTreeSet<String>,
    /// Resource names whose delete fails with [`Error::Failed`] before any effect.
    pub fail_delete: BTreeSet<String>,
    /// Extra latency per operation. For apply and delete it comes after the effect is stored, like a
    /// response lost on a slow network, so a caller that times out must rely on replay safety.
    pub slow: BTreeMap<Operation, Duration>,
}

impl Faults {
    /// Makes every apply of resources named `name` fail.
    pub fn fail_apply(mut self, name: impl Into<String>) -> Self {
        self.fail_apply.insert(name.into());
        self
    }

    /// Makes every delete of resources named `name` fail.
    pub fn fail_delete(mut self, name: impl Into<String>) -> Self {
        self.fail_delete.insert(name.into());
        self
    }

    /// Makes every `operation` take at least `delay` longer.
    pub fn slow(mut self, operation: Operation, delay: Duration) -> Self {
        self.slow.insert(operation, delay);
        self
    }
}

/// The simulated fleet, one instance per provider name bound to `type: sim`.
#[derive(Debug)]
pub struct SimProvider {
    instance: String,
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
    rollout_time: Duration,
    faults: Mutex<Faults>,
}

impl SimProvider {
    /// Opens the sim database at `path` (created with its tables if missing) for instance `instance`.
    pub async fn open(path: &Path, instance: &str, clock: Arc<dyn Clock>, config: SimConfig) -> Result<SimProvider> {
        let storage = |source| Error::Storage { provider: instance.to_owned(), source };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(|e| storage(sqlx::Error::Io(e)))?;
        }
        let pool = store::open(path).await.map_err(storage)?;
        Ok(SimProvider {
            instance: instance.to_owned(),
            pool,
            clock,
            rollout_time: config.rollout_time,
            faults: Mutex::new(config.faults),
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

    /// One valid and one invalid spec per kind, for the conformance suite.
    pub fn examples(&self) -> Examples {
        Examples {
            instance: self.instance.clone(),
            kinds: vec![
                KindExample {
                    api_version: API_VERSION.to_owned(),
                    kind: WORKLOAD.to_owned(),
                    valid: json!({"image": "registry.example.com/web:1.0", "replicas": 2}),
                    invalid: json!({"image": "", "replicas": -1}),
                },
                KindExample {
                    api_version: API_VERSION.to_owned(),
                    kind: ROUTE.to_owned(),
                    valid: json!({"service": "web", "expose": {"port": 8080}}),
                    invalid: json!({"service": "web", "expose": {"port": "eighty"}}),
                },
            ],
        }
    }

    /// Closes the database; later calls fail with a storage error.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn faults(&self) -> Faults {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn delay(&self, operation: Operation) {
        if let Some(delay) = self.faults().slow.get(&operation) {
            tokio::time::sleep(*delay).await;
        }
    }

    fn now_micros(&self) -> i64 {
        i64::try_from(self.clock.now().unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
    }

    /// The sim kind of `id`; ids of another instance are a wiring bug in the caller, never ours.
    fn kind_of(&self, id: &ResourceId) -> Result<Kind> {
        if id.instance != self.instance {
            return Err(self.failed(format!(
                "resource {id} belongs to provider instance {:?}, not {:?}",
                id.instance, self.instance
            )));
        }
        Kind::parse(&id.api_version, &id.kind).ok_or_else(|| Error::UnknownKind {
            provider: self.instance.clone(),
            api_version: id.api_version.clone(),
            kind: format!("{} (resource {id})", id.kind),
        })
    }

    fn failed(&self, message: String) -> Error {
        Error::Failed { provider: self.instance.clone(), message }
    }

    fn storage(&self, source: sqlx::Error) -> Error {
        Error::Storage { provider: self.instance.clone(), source }
    }
}

#[async_trait]
impl Provider for SimProvider {
    fn descriptor(&self) -> ProviderDescriptor {
        ProviderDescriptor {
            provider_type: "sim".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kinds: [WORKLOAD, ROUTE].map(|k| (API_VERSION.to_owned(), k.to_owned())).into(),
            capabilities: vec![Capability::Workloads, Capability::Scale, Capability::Health],
        }
    }

    async fn render(&self, app: &App, ctx: &RenderCtx) -> Result<Vec<DesiredResource>> {
        render::render(&self.instance, app, ctx)
    }

    async fn observe(&self, ids: &[ResourceId]) -> Result<Vec<Observed>> {
        for id in ids {
            self.kind_of(id)?;
        }
        self.delay(Operation::Observe).await;
        let mut conn = self.pool.acquire().await.map_err(|e| self.storage(e))?;
        let mut observed = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(stored) = store::get(&mut conn, id).await.map_err(|e| self.storage(e))? {
                observed.push(Observed { id: id.clone(), digest: Some(stored.digest), spec: stored.spec });
            }
        }
        Ok(observed)
    }

    async fn list(&self, owner: &Owner) -> Result<Vec<ResourceId>> {
        self.delay(Operation::List).await;
        let mut conn = self.pool.acquire().await.map_err(|e| self.storage(e))?;
        store::list(&mut conn, &self.instance, &owner.app).await.map_err(|e| self.storage(e))
    }

    async fn apply(&self, resource: &DesiredResource, key: &IdempotencyKey) -> Result<Outcome> {
        let id = &resource.id;
        let kind = self.kind_of(id)?;
        if self.faults().fail_apply.contains(&id.name) {
            return Err(self.failed(format!("injected fault: apply of {id} failed")));
        }
        let mut problems = kind.problems(&resource.spec);
        if id.name.is_empty() || id.namespace.is_empty() {
            problems.push("namespace and name must not be empty".to_owned());
        }
        if !problems.is_empty() {
            return Err(Error::InvalidSpec {
                provider: self.instance.clone(),
                resource: id.to_string(),
                message: problems.join("; "),
            });
        }

        let key = key.to_string();
        let now = self.now_micros();
        // IMMEDIATE takes the write lock up front, so two concurrent replays of one key cannot
        // both see it unrecorded and both act.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.storage(e))?;
        if store::recorded_outcome(&mut tx, &self.instance, &key).await.map_err(|e| self.storage(e))?.is_some() {
            return Ok(Outcome::Replayed);
        }
        let existing = store::get(&mut tx, id).await.map_err(|e| self.storage(e))?;
        let outcome = match &existing {
            None => Outcome::Created,
            Some(live)
                if live.spec == resource.spec && live.digest == resource.digest && live.owner == resource.owner.app =>
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
                owner: resource.owner.app.clone(),
                digest: resource.digest.clone(),
                spec: resource.spec.clone(),
                rollout_from,
            };
            store::put(&mut tx, id, &stored).await.map_err(|e| self.storage(e))?;
        }
        store::record_key(&mut tx, &self.instance, &key, "apply", outcome, now).await.map_err(|e| self.storage(e))?;
        tx.commit().await.map_err(|e| self.storage(e))?;
        self.delay(Operation::Apply).await;
        Ok(outcome)
    }

    async fn delete(&self, id: &ResourceId, key: &IdempotencyKey) -> Result<Outcome> {
        self.kind_of(id)?;
        if self.faults().fail_delete.contains(&id.name) {
            return Err(self.failed(format!("injected fault: delete of {id} failed")));
        }
        let key = key.to_string();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| self.storage(e))?;
        if store::recorded_outcome(&mut tx, &self.instance, &key).await.map_err(|e| self.storage(e))?.is_some() {
            return Ok(Outcome::Replayed);
        }
        let removed = store::remove(&mut tx, id).await.map_err(|e| self.storage(e))?;
        let outcome = if removed { Outcome::Deleted } else { Outcome::NotFound };
        store::record_key(&mut tx, &self.instance, &key, "delete", outcome, self.now_micros())
            .await
            .map_err(|e| self.storage(e))?;
        tx.commit().await.map_err(|e| self.storage(e))?;
        self.delay(Operation::Delete).await;
        Ok(outcome)
    }

    async fn health(&self, id: &ResourceId) -> Result<Health> {
        let kind = self.kind_of(id)?;
        self.delay(Operation::Health).await;
        let mut conn = self.pool.acquire().await.map_err(|e| self.storage(e))?;
        let Some(stored) = store::get(&mut conn, id).await.map_err(|e| self.storage(e))? else {
            return Ok(Health::Missing);
        };
        if kind == Kind::Route {
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

/// Sets `pointer` in `doc`, adding the last segment to an existing object if it is missing.
fn set_pointer(doc: &mut Value, pointer: &str, value: Value) -> std::result::Result<(), String> {
    if let Some(target) = doc.pointer_mut(pointer) {
        *target = value;
        return Ok(());
    }
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return Err("a JSON pointer must start with '/'".to_owned());
    };
    match doc.pointer_mut(parent) {
        Some(Value::Object(fields)) => {
            fields.insert(last.replace("~1", "/").replace("~0", "~"), value);
            Ok(())
        }
        Some(_) => Err(format!("{parent:?} is not an object")),
        None => Err(format!("{parent:?} does not exist")),
    }
}
