//! The engine, in the shape of kube-runtime's controller: a work queue keyed by app, a pool of
//! workers each running `reconcile(app) -> Action` (at most one per app at a time), one ledger
//! writer that group-commits the events of concurrent reconciles, and a reflector that folds every
//! writer's entries into the one fleet view the engine, the API and the recorder read.
//!
//! One app's digest goes through each stage once: [`load`] reads a commit into a desired state and
//! enqueues the apps it changed (plus their dependents), [`reconcile`] decides per app
//! (`keelson_core::decide`), [`admit`] asks policy, [`rollout`] plans, records the intent and calls
//! the provider, [`progress`] watches health, [`prune`] deletes what left git, [`recover`] settles
//! what a crash interrupted. Nothing here ticks: every app asks to be looked at again through the
//! [`Action`] its reconcile returns.

mod admit;
mod backoff;
mod drift;
mod load;
mod progress;
mod prune;
pub mod queue;
mod reconcile;
mod recover;
mod reflector;
mod rollout;
mod source_retry;
pub mod state;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use keelson_core::Event;
use keelson_core::event::Recorded;
use keelson_core::ledger::Transition;
use keelson_manifest::{App, DesiredState, LoadedApp};
use keelson_provider_api::{Clock, ErrorClass, IdempotencyKey, Outcome, ResourceId};
use tokio::sync::{Notify, mpsc, watch};

use crate::ledger::{Ledger, LedgerEntry};
use crate::metrics::Metrics;
use crate::policy::{PolicySet, Verdict};
use crate::providers::Providers;
use crate::source::GitRepo;
use backoff::Backoff;
use queue::{AllShards, WorkQueue};
use state::Fleet;
use writer::{Journal, Pending, Writer};

pub use keelson_core::short;
pub use queue::Action;

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
    /// Reconciles running at once (`concurrency:` in config).
    pub concurrency: usize,
    /// How often the reflector looks for entries other writers appended.
    pub reflect_interval: Duration,
    /// How often every app is observed again for drift (`drift.interval`), plus up to a tenth.
    pub drift_interval: Duration,
    /// `drift.schedule`: every app is also observed at each of these times (UTC).
    pub drift_schedule: Option<croner::Cron>,
    /// `drift.ignoreDifferences`: JSON pointers never counted as drift, by resource kind.
    pub ignore_by_kind: BTreeMap<String, Vec<String>>,
    /// `pruneGuard.maxPercent`: the largest share of the fleet one commit may delete.
    pub prune_max_percent: u32,
    /// `--dry-run`: plans are recorded (marked as dry runs); no provider apply or delete is called.
    pub dry_run: bool,
    /// How long a shutdown waits for the reconciles in flight (`--shutdown-timeout`); a provider
    /// call still unanswered then is abandoned, its intent left open for the next start to settle.
    pub shutdown_timeout: Duration,
}

impl EngineSettings {
    /// Defaults for the settings that have them (drift every 5 minutes, the guard at 50 %).
    pub fn new(branch: String, path: String, progress_deadline: Duration, concurrency: usize) -> Self {
        EngineSettings {
            branch,
            path,
            progress_deadline,
            concurrency,
            reflect_interval: Duration::from_secs(1),
            drift_interval: DEFAULT_DRIFT_INTERVAL,
            drift_schedule: None,
            ignore_by_kind: BTreeMap::new(),
            prune_max_percent: DEFAULT_PRUNE_MAX_PERCENT,
            dry_run: false,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// `drift.interval` unless configured.
pub const DEFAULT_DRIFT_INTERVAL: Duration = Duration::from_secs(300);
/// `pruneGuard.maxPercent` unless configured.
pub const DEFAULT_PRUNE_MAX_PERCENT: u32 = 50;

/// A commit as the engine acts on it: the desired state and the policies of that commit.
#[derive(Default)]
pub struct Desired {
    /// The commit.
    pub commit: Option<String>,
    /// What git wants.
    pub state: DesiredState,
    /// Its policies, compiled once.
    pub policies: Arc<PolicySet>,
    /// Errors in its policy documents: every rollout is held (fail closed).
    pub policy_errors: Vec<String>,
    /// The reason of a `Keelson-Freeze-Override` trailer on the commit.
    pub freeze_override: Option<String>,
    /// The commit carries `Keelson-Allow-Prune: true`: the prune guard lets it through.
    pub allow_prune: bool,
    /// Apps that depend on each app (reversed `dependsOn`).
    pub dependents: HashMap<String, Vec<String>>,
    /// Quota verdicts by app (quotas weigh the whole commit).
    pub quotas: HashMap<String, Vec<Verdict>>,
}

/// The apps as their last rollouts started, by (app, commit): read from git once each.
type PreviousApps = Arc<Mutex<HashMap<(String, String), Option<Arc<App>>>>>;

impl Desired {
    /// The apps whose `dependsOn` names `app`.
    pub fn dependents_of(&self, app: &str) -> &[String] {
        self.dependents.get(app).map(Vec::as_slice).unwrap_or_default()
    }

    /// True when the commit has no apps at all: more often a broken `source.path` than a wish,
    /// so nothing is pruned (the prune guard).
    pub fn is_empty(&self) -> bool {
        self.state.apps.is_empty() && self.state.invalid_apps.is_empty()
    }
}

/// What every reconcile shares.
pub struct Ctx {
    repo: GitRepo,
    ledger: Ledger,
    providers: Providers,
    settings: EngineSettings,
    fleet: Arc<RwLock<Fleet>>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    desired: RwLock<Arc<Desired>>,
    queue: Arc<WorkQueue>,
    journal: Arc<Journal>,
    writer: Writer,
    /// Apps whose last rollout failed with a transient error: not retried before the time given.
    backoff: Mutex<HashMap<String, Backoff>>,
    /// Apps whose last reconcile failed outright (see [`Ctx::error_policy`]).
    errors: Mutex<HashMap<String, Backoff>>,
    /// Apps a `Keelson-Retry` trailer asked to retry, not yet retried.
    retry: Mutex<BTreeSet<String>>,
    /// When rollouts without a recorded deadline (older ledgers) were first seen in flight.
    seen_in_flight: Mutex<HashMap<String, time::OffsetDateTime>>,
    /// The app files at commits already read for the policy's `previous` input.
    previous: PreviousApps,
    /// How long each converging app waits before its next health check (grows while it waits).
    polls: Mutex<HashMap<String, Duration>>,
}

/// The reconcile engine: the source loop and the workers over one [`Ctx`].
pub struct Engine {
    ctx: Arc<Ctx>,
    loader: Arc<Mutex<load::RepoLoader>>,
    /// Backoff of a source that could not be read.
    source_retry: source_retry::SourceRetry,
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
        let queue = Arc::new(WorkQueue::new(Arc::new(AllShards)));
        let journal = Arc::new(Journal::new(ledger.clone(), fleet.clone(), metrics.clone(), recorder, queue.clone()));
        let writer = Writer::start(journal.clone());
        let ctx = Ctx {
            repo,
            ledger,
            providers,
            settings,
            fleet,
            metrics,
            clock,
            desired: RwLock::new(Arc::new(Desired::default())),
            queue,
            journal,
            writer,
            backoff: Mutex::default(),
            errors: Mutex::default(),
            retry: Mutex::default(),
            seen_in_flight: Mutex::default(),
            previous: PreviousApps::default(),
            polls: Mutex::default(),
        };
        Engine { ctx: Arc::new(ctx), loader: Arc::default(), source_retry: source_retry::SourceRetry::default() }
    }

    /// The context every reconcile shares, for reads from outside (a live diff for the API).
    pub fn ctx(&self) -> Arc<Ctx> {
        self.ctx.clone()
    }

    /// Runs until `shutdown` turns true: resumes from the ledger, then reconciles what each commit
    /// changes and what asks to be looked at again.
    pub async fn run(mut self, mut refs: mpsc::Receiver<()>, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        self.ctx.resume().await?;
        self.sync_source().await;
        let workers: Vec<_> = (0..self.ctx.settings.concurrency.max(1))
            .map(|_| {
                let ctx = self.ctx.clone();
                tokio::spawn(async move { ctx.work().await })
            })
            .collect();
        let reflector = tokio::spawn(reflector::run(
            self.ctx.journal.clone(),
            self.ctx.settings.reflect_interval,
            shutdown.clone(),
        ));
        loop {
            let retry_at = self.source_retry.next_attempt();
            let scan_in = self.ctx.settings.drift_schedule.as_ref().and_then(|c| drift::until_next(c, self.ctx.now()));
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                moved = refs.recv() => {
                    if moved.is_none() { break; }
                    while refs.try_recv().is_ok() {}
                    self.sync_source().await;
                }
                _ = source_retry::sleep_until(retry_at) => self.sync_source().await,
                _ = async {
                    match scan_in {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::info!("drift schedule: observing every app");
                    self.ctx.enqueue_everything();
                }
            }
            if *shutdown.borrow() {
                break;
            }
        }
        tracing::info!("engine stopped taking new work; finishing the reconciles in flight");
        self.ctx.queue.close();
        let aborts: Vec<_> = workers.iter().map(|w| w.abort_handle()).collect();
        let finished = futures_util::future::join_all(workers);
        if tokio::time::timeout(self.ctx.settings.shutdown_timeout, finished).await.is_err() {
            // An intent is durable before every provider call, so what is abandoned here is
            // settled by observing the provider at the next start.
            let in_flight = self.ctx.queue.in_flight();
            tracing::warn!(
                apps = in_flight.join(", "),
                "reconciles still in flight at the shutdown deadline are abandoned; their open intents are settled at the next start"
            );
            for abort in aborts {
                abort.abort();
            }
        }
        let _ = reflector.await;
        tracing::info!("engine stopped");
        Ok(())
    }
}

impl Ctx {
    /// What is live for `app` against what git wants, observed now (no transition is recorded);
    /// `None` when git does not want the app or it cannot be observed.
    pub async fn live_diff(&self, app: &str) -> Option<Vec<keelson_core::fleet::ResourceDrift>> {
        let desired = self.desired();
        let wanted = desired.state.apps.get(app)?;
        let status = self.status_of(app)?;
        self.live_drift(wanted, &status).await
    }

    /// The commit the engine acts on.
    fn desired(&self) -> Arc<Desired> {
        self.desired.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One worker: takes apps from the queue until it closes.
    async fn work(&self) {
        while let Some(app) = self.queue.next().await {
            let started = std::time::Instant::now();
            let outcome = self.reconcile(&app).await;
            self.metrics.reconciled(outcome.is_ok(), started.elapsed());
            let action = match outcome {
                Ok(action) => {
                    self.reconciled(&app);
                    action
                }
                Err(e) => self.error_policy(&app, &e),
            };
            self.queue.done(&app, action);
        }
    }

    /// Every app git wants and every app the fleet knows, once (a cold start).
    fn enqueue_everything(&self) {
        let desired = self.desired();
        let known: Vec<String> = self.fleet.read().unwrap_or_else(|e| e.into_inner()).apps.keys().cloned().collect();
        for app in desired.state.apps.keys().chain(desired.state.invalid_apps.iter()).chain(known.iter()) {
            self.queue.enqueue(app);
        }
    }

    /// Appends the entry recording `event` for `transition` (durable once this returns) and
    /// folds it into the fleet.
    async fn record(&self, transition: Transition<'_>, event: Event) -> Result<LedgerEntry> {
        let entry = transition.record(ACTOR, &event);
        let pending = Pending { entry, event, from: transition.from, to: transition.to };
        let mut stored = self.writer.append(vec![pending]).await.context("appending to the audit ledger")?;
        Ok(stored.pop().expect("one entry per pending entry"))
    }

    /// Now, by the engine's clock.
    fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// The app's status as the fleet has it now.
    fn status_of(&self, app: &str) -> Option<keelson_core::AppStatus> {
        self.fleet.read().unwrap_or_else(|e| e.into_inner()).apps.get(app).cloned()
    }

    /// Deletes one resource through the instance that holds it.
    async fn delete_resource(&self, id: &ResourceId, key: &IdempotencyKey) -> Result<Outcome> {
        let bound = self.providers.instances.get(&id.instance)?;
        let started = std::time::Instant::now();
        let outcome = bound.provider.delete(id, key).await;
        let label = outcome.as_ref().map(|o| o.label()).map_err(|e| (e.kind_label(), e.class().as_str()));
        self.metrics.provider_call(id.instance.as_str(), "delete", label, started.elapsed());
        Ok(outcome?)
    }

    /// False while the ledger is known to be swapped: nothing can be recorded, so nothing is done
    /// (no provider is called, not even to check health, whose outcome could not be recorded).
    fn ledger_accepts_work(&self) -> bool {
        !matches!(self.ledger.write_state(), crate::ledger::WriteState::Replaced { .. })
    }
}

fn key(app: &str, rollout: i64, step: u32, resource: &str) -> IdempotencyKey {
    IdempotencyKey { app: app.into(), rollout, step, resource: resource.to_owned() }
}

/// Outcomes by resource, as the ledger records them.
fn recorded(outcomes: Vec<(String, Outcome)>) -> BTreeMap<String, Recorded> {
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
    app.app.spec.sync.as_ref().is_some_and(|s| s.prune == Some(true))
}

/// `spec.sync.selfHeal`: true unless written false.
fn app_self_heals(app: &App) -> bool {
    app.spec.sync.as_ref().is_none_or(|s| s.self_heal)
}

/// Now as the ledger writes times (RFC 3339 UTC, microseconds): one precision everywhere.
pub fn now_rfc3339() -> String {
    keelson_core::ledger::format_at(time::OffsetDateTime::now_utc())
}
