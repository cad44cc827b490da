//! The engine: turns snapshots of git into rollouts. One task owns all decisions; every transition
//! is a typed event appended to the ledger (intent before any provider call, outcome after) and
//! folded into the fleet the API reads.
//!
//! One app's digest goes through each stage once: [`load`] reads the commit into a desired state,
//! [`pass`] decides per app (`keelson_core::decide`), [`admit`] asks policy, [`rollout`] plans,
//! records the intent and calls the provider, [`progress`] watches health, [`prune`] deletes what
//! left git, and [`recover`] settles what a crash interrupted.

mod admit;
mod backoff;
mod load;
mod pass;
mod progress;
mod prune;
mod recover;
mod rollout;
mod source_retry;
pub mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use keelson_core::event::Recorded;
use keelson_core::ledger::Transition;
use keelson_core::{Event, Phase};
use keelson_manifest::{DesiredState, LoadedApp, Loader};
use keelson_provider_api::{Clock, ErrorClass, IdempotencyKey, Outcome, ResourceId};
use tokio::sync::{Notify, mpsc, watch};

use crate::crash::{crash_point, point};
use crate::ledger::{Ledger, LedgerEntry};
use crate::metrics::Metrics;
use crate::policy::PolicySet;
use crate::providers::Providers;
use crate::source::{GitRepo, Snapshot};
use backoff::Backoff;
use state::Fleet;

pub use keelson_core::short;

/// Who the ledger names as the actor of the daemon's own transitions.
pub const ACTOR: &str = "keelson";

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The tracked branch.
    pub branch: String,
    /// Sub-folder of the repository holding the state (`""` for the root).
    pub path: String,
    /// How long a rollout may stay Progressing before it fails.
    pub progress_deadline: Duration,
    /// How often in-flight rollouts are checked.
    pub tick: Duration,
    /// Longest one pass keeps starting rollouts (after its first) before it leaves the rest to
    /// the next tick, so that health checks, new commits and shutdown are not starved.
    pub pass_budget: Duration,
}

/// The reconcile engine.
pub struct Engine {
    repo: GitRepo,
    ledger: Ledger,
    providers: Providers,
    settings: EngineSettings,
    fleet: Arc<RwLock<Fleet>>,
    metrics: Arc<Metrics>,
    recorder: Arc<Notify>,
    loader: Arc<Mutex<Loader>>,
    desired: DesiredState,
    commit: Option<String>,
    /// Apps a `Keelson-Retry` trailer asked to retry, not yet retried.
    retry: BTreeSet<String>,
    /// When each in-flight rollout started (for the progress deadline).
    started: HashMap<String, time::OffsetDateTime>,
    /// The time rollout deadlines and backoffs are measured in (a manual clock in tests).
    clock: Arc<dyn Clock>,
    /// Policies of the current commit, compiled once per commit.
    policies: Arc<PolicySet>,
    /// Errors in policy documents of the current commit: every rollout is held (fail closed).
    policy_errors: Vec<String>,
    /// Reason of a `Keelson-Freeze-Override` trailer on the current commit.
    freeze_override: Option<String>,
    /// Each app as it was when its last rollout started (the `previous` of policy input).
    previous: HashMap<String, keelson_manifest::App>,
    /// Apps the last pass left to a later one; when zero and nothing is in flight, ticks do nothing.
    deferred: usize,
    /// Backoff of a source that could not be read.
    source_retry: source_retry::SourceRetry,
    /// Apps whose last rollout failed with a transient error: not retried before the time given.
    backoff: HashMap<String, Backoff>,
}

impl Engine {
    /// A new engine; call [`Engine::run`] to start it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        repo: GitRepo,
        ledger: Ledger,
        providers: Providers,
        settings: EngineSettings,
        fleet: Arc<RwLock<Fleet>>,
        metrics: Arc<Metrics>,
        recorder: Arc<Notify>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            clock,
            repo,
            ledger,
            providers,
            settings,
            fleet,
            metrics,
            recorder,
            loader: Arc::new(Mutex::new(Loader::new())),
            desired: DesiredState::default(),
            commit: None,
            retry: BTreeSet::new(),
            started: HashMap::new(),
            policies: Arc::new(PolicySet::default()),
            policy_errors: Vec::new(),
            freeze_override: None,
            previous: HashMap::new(),
            deferred: 0,
            source_retry: source_retry::SourceRetry::default(),
            backoff: HashMap::new(),
        }
    }

    /// Runs until `shutdown` turns true: resumes from the ledger, then reacts to ref moves and ticks.
    pub async fn run(mut self, mut refs: mpsc::Receiver<()>, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        self.resume().await?;
        self.sync_source().await;
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retry_at = self.source_retry.next_attempt();
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                moved = refs.recv() => {
                    if moved.is_none() { break; }
                    while refs.try_recv().is_ok() {}
                    self.sync_source().await;
                }
                _ = source_retry::sleep_until(retry_at) => self.sync_source().await,
                _ = tick.tick() => {
                    if let Err(e) = self.on_tick().await {
                        tracing::error!(error = format!("{e:#}"), "reconcile pass failed; will retry");
                    }
                }
            }
            if *shutdown.borrow() {
                break;
            }
        }
        tracing::info!("engine stopped taking new work");
        Ok(())
    }

    /// Periodic work: check in-flight rollouts, then start rollouts that were waiting.
    async fn on_tick(&mut self) -> Result<()> {
        if !self.ledger_accepts_work() {
            return Ok(());
        }
        let progressing: Vec<keelson_core::AppStatus> = self
            .fleet
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .apps
            .values()
            .filter(|a| a.phase == Phase::Progressing)
            .cloned()
            .collect();
        let idle = progressing.is_empty() && self.deferred == 0;
        for status in progressing {
            if let Err(e) = self.check_progress(&status).await {
                tracing::warn!(app = status.name, error = format!("{e:#}"), "health check failed");
            }
        }
        // Nothing in flight and nothing waiting: only a new commit can change anything.
        if idle {
            return Ok(());
        }
        if let Some(commit) = self.commit.clone() {
            let snapshot = Snapshot {
                commit,
                files: Vec::new(),
                retry_apps: BTreeSet::new(),
                summary: String::new(),
                message: String::new(),
            };
            self.reconcile(&snapshot).await?;
        }
        Ok(())
    }

    /// One pass over the desired state: start what must start, hold what is invalid, prune what left git.
    async fn reconcile(&mut self, snapshot: &Snapshot) -> Result<()> {
        if !self.ledger_accepts_work() {
            return Ok(());
        }
        self.metrics.reconciles.inc();
        let desired = std::mem::take(&mut self.desired);
        let result = self.reconcile_desired(&desired, snapshot).await;
        self.desired = desired;
        if result.is_err() {
            // A pass that stopped early (an append failed) is tried again on the next tick.
            self.deferred = self.deferred.max(1);
        }
        let counts = keelson_core::fleet::counts(&self.fleet.read().unwrap_or_else(|e| e.into_inner()).apps);
        self.metrics.set_app_counts(counts.iter().map(|(k, v)| (*k, *v)));
        result
    }

    /// Appends the entry recording `event` for `transition`, folds it into the fleet, counts it
    /// and wakes the status recorder.
    async fn record(&self, transition: Transition<'_>, event: Event) -> Result<LedgerEntry> {
        let entry = transition.record(ACTOR, &event);
        let e = self.ledger.append(entry).await.context("appending to the audit ledger")?;
        crash_point(point::AFTER_LEDGER_APPEND);
        tracing::info!(app = e.app, seq = e.seq, from = e.from_state, to = e.to_state, action = e.action, "transition");
        self.metrics.transition(&e.to_state, e.seq);
        {
            let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
            let status = fleet.apps.entry(e.app.clone()).or_insert_with(|| keelson_core::AppStatus::pending(&e.app));
            status.apply_event(&e, &event, transition.from, transition.to);
            if transition.to == Phase::Deleted {
                fleet.apps.remove(&e.app);
            }
        }
        self.recorder.notify_one();
        Ok(e)
    }

    /// Deletes one resource through the instance that holds it.
    async fn delete_resource(&self, id: &ResourceId, key: &IdempotencyKey) -> Result<Outcome> {
        let bound = self.providers.instances.get(&id.instance)?;
        let outcome = bound.provider.delete(id, key).await;
        self.metrics.provider_call("delete", outcome.as_ref().map_or_else(|e| e.kind_label(), |o| o.label()));
        Ok(outcome?)
    }

    /// Now, by the engine's clock.
    fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// The app's status as the fleet has it now.
    fn status_of(&self, app: &str) -> Option<keelson_core::AppStatus> {
        self.fleet.read().unwrap_or_else(|e| e.into_inner()).apps.get(app).cloned()
    }
}

fn key(app: &str, rollout: i64, step: u32, resource: &str) -> IdempotencyKey {
    IdempotencyKey { app: app.into(), rollout, step, resource: resource.to_owned() }
}

/// Outcomes by resource, as the ledger records them.
fn recorded(outcomes: Vec<(String, Outcome)>) -> std::collections::BTreeMap<String, Recorded> {
    outcomes.into_iter().map(|(id, o)| (id, o.into())).collect()
}

/// The class of a provider error inside `e`; anything else (the ledger, a bad intent) is terminal.
fn error_class(e: &anyhow::Error) -> ErrorClass {
    e.chain()
        .find_map(|cause| cause.downcast_ref::<keelson_provider_api::Error>())
        .map_or(ErrorClass::Terminal, keelson_provider_api::Error::class)
}

/// `spec.sync.prune`: false unless written, whether or not a `sync:` block is there (as the
/// manifest reference says).
fn app_prunes(app: &LoadedApp) -> bool {
    app.app.spec.sync.as_ref().is_some_and(|s| s.prune)
}

/// Now as the ledger writes times (RFC 3339 UTC, microseconds): one precision everywhere.
pub fn now_rfc3339() -> String {
    keelson_core::ledger::format_at(time::OffsetDateTime::now_utc())
}
