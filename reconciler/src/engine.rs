//! The engine: turns snapshots of git into rollouts. One task owns all decisions; every transition
//! is appended to the ledger (intent before any provider call, outcome after) and then shown to the API.

pub mod decide;
mod source_retry;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use keelson_manifest::{CommitId, DesiredState, Digest, LoadedApp, Loader};
use keelson_provider_api::{
    DesiredResource, ErrorClass, Health, IdempotencyKey, Outcome, RenderCtx, ResourceId, Variant,
};
use serde_json::json;
use tokio::sync::{Notify, mpsc, watch};

use crate::crash::{crash_point, point};
use crate::ledger::{Ledger, LedgerEntry, NewEntry, RolloutRef};
use crate::metrics::Metrics;
use crate::policy::{ChangeCtx, PolicySet, Verdict, VerdictKind, blocked_by};
use crate::providers::Providers;
use crate::source::{GitRepo, Snapshot};
use decide::{Decision, decide};
use state::{AppStatus, Fleet, Phase, Progress, ResourceStatus};

/// Who the ledger names as the actor of the daemon's own transitions.
pub const ACTOR: &str = "keelson";

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
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
    started: HashMap<String, Instant>,
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

/// When an app that failed with a transient error may be tried again.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    attempts: u32,
    until: Instant,
}

impl Backoff {
    /// 1 s after the first failure, doubling to at most 5 minutes.
    fn after(previous: Option<Backoff>, now: Instant) -> Backoff {
        let attempts = previous.map_or(1, |b| b.attempts.saturating_add(1));
        let delay = Duration::from_secs(1u64 << attempts.saturating_sub(1).min(9)).min(Duration::from_secs(300));
        Backoff { attempts, until: now + delay }
    }
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
    ) -> Self {
        Self {
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

    /// Rebuilds the fleet from the ledger and settles intents a crash left open.
    async fn resume(&mut self) -> Result<()> {
        let mut fleet = Fleet::default();
        let mut after = 0;
        loop {
            let batch = self.ledger.entries_after(after, 10_000).await?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            fleet.replay(batch);
        }
        if after > 0 {
            self.metrics.ledger_head.set(after);
        }
        let now = Instant::now();
        for status in fleet.apps.values() {
            if status.phase == Phase::Progressing {
                self.started.insert(status.name.clone(), now);
            }
        }
        {
            let mut shared = self.fleet.write().unwrap_or_else(|e| e.into_inner());
            shared.apps = fleet.apps;
        }
        for intent in self.ledger.open_intents().await? {
            self.settle_open_intent(intent).await?;
        }
        Ok(())
    }

    /// An intent without an outcome: the daemon stopped between the two. Observe the provider and
    /// record what really happened; only what is not yet as the intent wanted is carried out again.
    async fn settle_open_intent(&mut self, intent: LedgerEntry) -> Result<()> {
        let detail = intent.detail_json();
        let app = intent.app.clone();
        let instance = detail.get("instance").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let op = detail.get("op").and_then(|v| v.as_str()).unwrap_or("apply").to_owned();
        tracing::warn!(app, seq = intent.seq, op, "found an open intent from an interrupted run; settling it");
        let rollout = intent.rollout.unwrap_or(intent.seq);
        let step = detail.get("step").and_then(|v| v.as_u64()).unwrap_or(1) as u32;
        let inventory = {
            let fleet = self.fleet.read().unwrap_or_else(|e| e.into_inner());
            fleet.apps.get(&app).map(|s| s.inventory.clone()).unwrap_or_default()
        };
        let result: Result<Vec<(String, Outcome)>> = async {
            let mut outcomes = Vec::new();
            if op == "delete" {
                // The ids the intent named (older ledgers did not name them: the recorded inventory).
                let ids: Vec<ResourceId> = match detail.get("resources") {
                    Some(ids) => {
                        serde_json::from_value(ids.clone()).context("intent detail has unreadable resources")?
                    }
                    None => inventory,
                };
                for id in ids {
                    let o = self.delete_resource(&id, &key(&app, rollout, step, &id.to_string())).await?;
                    outcomes.push((id.to_string(), o));
                }
                return Ok(outcomes);
            }
            let resources: Vec<DesiredResource> =
                serde_json::from_value(detail.get("resources").cloned().unwrap_or_default())
                    .context("intent detail has no resources")?;
            let bound = self.providers.instances.get(&instance)?;
            let ids: Vec<ResourceId> = resources.iter().map(|r| r.id.clone()).collect();
            let observed = bound.provider.observe(&ids).await;
            for (r, (_, live)) in resources.iter().zip(observed) {
                let done = match live {
                    Ok(Some(o)) => o.digest.as_ref() == Some(&r.digest) && o.spec == r.spec,
                    Ok(None) => false,
                    Err(e) => return Err(anyhow::Error::new(e).context(format!("observing {}", r.id))),
                };
                let outcome = if done {
                    Outcome::Replayed
                } else {
                    bound.provider.apply(r, &key(&app, rollout, step, &r.id.to_string())).await?
                };
                outcomes.push((r.id.to_string(), outcome));
            }
            let stale: Vec<ResourceId> = match detail.get("prune") {
                Some(ids) => serde_json::from_value(ids.clone()).context("intent detail has unreadable prune ids")?,
                None => Vec::new(),
            };
            for id in stale {
                let o = self.delete_resource(&id, &key(&app, rollout, step, &id.to_string())).await?;
                outcomes.push((id.to_string(), o));
            }
            Ok(outcomes)
        }
        .await;
        let base = NewEntry {
            app: app.clone(),
            desired_commit: intent.desired_commit.clone(),
            desired_digest: intent.desired_digest.clone(),
            rollout: Some(RolloutRef::Seq(rollout)),
            from_state: "Progressing".into(),
            to_state: String::new(),
            action: String::new(),
            actor: ACTOR.into(),
            detail: json!({}),
        };
        let entry = match result {
            Ok(outcomes) => NewEntry {
                to_state: if op == "delete" { "Deleted".into() } else { "Progressing".into() },
                action: if op == "delete" { "deleted".into() } else { "applied".into() },
                detail: json!({"intentSeq": intent.seq, "recovered": true, "instance": instance, "outcomes": outcome_map(&outcomes),
                    "step": step, "of": detail.get("of").cloned().unwrap_or(json!(1))}),
                ..base
            },
            Err(e) => NewEntry {
                to_state: "Failed".into(),
                action: "failed".into(),
                detail: json!({"intentSeq": intent.seq, "recovered": true, "instance": instance, "reason": "RecoveryFailed",
                    "message": format!("{e:#}"), "class": error_class(&e)}),
                ..base
            },
        };
        if entry.to_state == "Progressing" {
            self.started.insert(app.clone(), Instant::now());
        }
        self.append(entry).await?;
        Ok(())
    }

    /// Deletes one resource through the instance that holds it.
    async fn delete_resource(&self, id: &ResourceId, key: &IdempotencyKey) -> Result<Outcome> {
        let bound = self.providers.instances.get(&id.instance)?;
        let outcome = bound.provider.delete(id, key).await;
        self.metrics.provider_call("delete", outcome.as_ref().map_or_else(|e| e.kind_label(), |o| o.label()));
        Ok(outcome?)
    }

    /// The tracked ref may have moved: load the new commit (if any) and reconcile.
    async fn on_ref_moved(&mut self) -> Result<()> {
        let repo = self.repo.clone();
        let branch = self.settings.branch.clone();
        let Some(head) = tokio::task::spawn_blocking(move || repo.branch_head(&branch)).await?? else {
            tracing::warn!(branch = self.settings.branch, "tracked branch does not exist; waiting for a commit");
            let kept = self.commit.as_deref().map_or("nothing has been applied yet".to_owned(), |c| {
                format!("the apps are kept as commit {} left them; nothing is applied or pruned", short(c))
            });
            let warning = format!("the tracked branch `{}` does not exist (deleted?); {kept}", self.settings.branch);
            self.fleet.write().unwrap_or_else(|e| e.into_inner()).source.warnings = vec![warning];
            return Ok(());
        };
        if self.commit.as_deref() == Some(head.as_str()) {
            return Ok(());
        }
        let started = Instant::now();
        let (snapshot, outcome, policies, policy_diagnostics) = {
            let repo = self.repo.clone();
            let loader = self.loader.clone();
            let path = self.settings.path.clone();
            let head = head.clone();
            tokio::task::spawn_blocking(move || -> Result<_> {
                let snapshot = repo.snapshot(&head, &path)?;
                let local = repo.local();
                let outcome = {
                    let mut loader = loader.lock().unwrap_or_else(|e| e.into_inner());
                    loader.load(&snapshot.files, &mut |f| crate::source::read_blob(&local, &f.blob_id))
                };
                let (policies, policy_diagnostics) =
                    crate::plan::compile_policies(&outcome.desired, &snapshot.files, &local);
                Ok((snapshot, outcome, policies, policy_diagnostics))
            })
            .await??
        };
        let mut all_diagnostics = outcome.diagnostics.clone();
        all_diagnostics.extend(policy_diagnostics);
        let diagnostics: Vec<String> = all_diagnostics.iter().map(|d| d.to_string()).collect();
        let not_built: Vec<String> = all_diagnostics
            .iter()
            .filter(|d| d.rule == keelson_manifest::not_built::RULE)
            .map(|d| d.to_string())
            .collect();
        let errors = all_diagnostics.iter().filter(|d| d.is_error()).count();
        // A policy file with errors drops out of the desired state; holding every rollout keeps a
        // broken guardrail from silently disappearing.
        self.policy_errors = outcome
            .diagnostics
            .iter()
            .filter(|d| d.is_error() && d.file.starts_with("policies/"))
            .map(|d| d.to_string())
            .collect();
        self.policies = Arc::new(policies);
        self.freeze_override =
            crate::source::trailer_values(&snapshot.message, "Keelson-Freeze-Override").into_iter().next();
        for d in &all_diagnostics {
            tracing::warn!(commit = %head, "{d}");
        }
        tracing::info!(
            commit = %head, summary = snapshot.summary, apps = outcome.desired.apps.len(), errors,
            elapsed_ms = started.elapsed().as_millis() as u64, "loaded commit"
        );
        self.metrics.source_commits.inc();
        self.metrics.manifest_errors.set(errors as i64);
        self.retry.extend(snapshot.retry_apps.iter().cloned());
        self.desired = outcome.desired;
        self.commit = Some(head.clone());
        let had_apps = !self.fleet.read().unwrap_or_else(|e| e.into_inner()).apps.is_empty();
        // The commit is loaded whatever the pass does; a failed pass is retried on the next tick.
        if let Err(e) = self.reconcile(&snapshot).await {
            tracing::error!(commit = %head, error = format!("{e:#}"), "reconcile pass failed; will retry");
        }
        let mut warnings = Vec::new();
        if self.desired.apps.is_empty() && self.desired.invalid_apps.is_empty() {
            warnings.push(if had_apps {
                format!(
                    "commit {} has no apps at all (is source.path `{}` right?); the prune guard kept every \
                     running app",
                    short(&head),
                    self.settings.path
                )
            } else {
                format!(
                    "commit {} has no apps (no apps/<name>/deploy.yaml under `{}`)",
                    short(&head),
                    self.settings.path
                )
            });
        }
        let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
        fleet.source.warnings = warnings;
        fleet.source.commit = Some(head);
        fleet.source.diagnostics = diagnostics;
        fleet.source.not_built = not_built;
        fleet.source.last_sync = Some(now_rfc3339());
        fleet.source.ready = true;
        Ok(())
    }

    /// Periodic work: check in-flight rollouts, then start rollouts that were waiting.
    async fn on_tick(&mut self) -> Result<()> {
        if !self.ledger_accepts_work() {
            return Ok(());
        }
        let progressing: Vec<AppStatus> = self
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
        let counts = self.fleet.read().unwrap_or_else(|e| e.into_inner()).counts();
        self.metrics.set_app_counts(counts.iter().map(|(k, v)| (*k, *v)));
        result
    }

    async fn reconcile_desired(&mut self, desired: &DesiredState, snapshot: &Snapshot) -> Result<()> {
        let mut quota_verdicts: HashMap<String, Vec<Verdict>> = HashMap::new();
        for (app, verdict) in self.policies.quotas(desired) {
            quota_verdicts.entry(app).or_default().push(verdict);
        }
        // Apps whose change must be tried again on a later pass (waiting, frozen, or an error).
        let mut deferred = 0;
        let pass_started = Instant::now();
        let mut acted = false;
        for name in dependency_order(desired) {
            if acted && pass_started.elapsed() >= self.settings.pass_budget {
                // The apps after this one are looked at again on the next tick.
                deferred += 1;
                tracing::debug!(
                    budget_ms = self.settings.pass_budget.as_millis() as u64,
                    "pass budget spent; continuing on the next tick"
                );
                break;
            }
            let app = &desired.apps[&name];
            let (status, deps) = {
                let fleet = self.fleet.read().unwrap_or_else(|e| e.into_inner());
                (fleet.apps.get(&name).cloned(), dependencies_ready(app, desired, &fleet))
            };
            let retry = self.retry.contains(&name);
            match decide(app, status.as_ref(), retry, deps) {
                Decision::Nothing => {
                    if status.as_ref().is_some_and(|s| s.wanted_digest.is_some()) {
                        // What waited is no longer wanted (say, reverted to what runs).
                        let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
                        if let Some(s) = fleet.apps.get_mut(&name) {
                            s.clear_wait();
                        }
                    }
                }
                Decision::Wait { reason, message } => {
                    deferred += 1;
                    let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
                    let s = fleet.apps.entry(name.clone()).or_insert_with(|| AppStatus::pending(&name));
                    s.wait_for(&snapshot.commit, &app.digest, reason, message);
                }
                Decision::Suspend => {
                    acted = true;
                    let from = status.as_ref().map_or(Phase::Pending, |s| s.phase);
                    self.append(NewEntry {
                        app: name.clone(),
                        desired_commit: snapshot.commit.clone(),
                        desired_digest: app.digest.clone(),
                        rollout: None,
                        from_state: from.to_string(),
                        to_state: Phase::Suspended.to_string(),
                        action: "suspend".into(),
                        actor: ACTOR.into(),
                        detail: json!({"reason": "Suspended", "message": "spec.suspend is true; the app is left as it is"}),
                    })
                    .await?;
                }
                Decision::StartRollout if !retry && policy_blocked_at(status.as_ref(), app, &snapshot.commit) => {
                    // A policy denial changes only with a new commit: evaluating it again (up to
                    // its time limit per rule, every tick) would starve the rest of the fleet.
                }
                Decision::StartRollout => {
                    if let Some(wait) =
                        self.backoff.get(&name).map(|b| b.until.saturating_duration_since(Instant::now()))
                        && !wait.is_zero()
                        && status.as_ref().is_some_and(|s| s.phase == Phase::Failed)
                    {
                        // A transient failure: tried again once its backoff has passed.
                        deferred += 1;
                        continue;
                    }
                    acted = true;
                    let from = status.as_ref().map_or(Phase::Pending, |s| s.phase);
                    let problems = self.providers.placement_problems(&app.app);
                    if !problems.is_empty() {
                        let unchanged = status.as_ref().is_some_and(|s| {
                            s.phase == Phase::Blocked && s.reason == "MissingRole" && s.desired_digest == app.digest
                        });
                        if !unchanged {
                            let message = problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; ");
                            tracing::warn!(app = name, "rollout refused: {message}");
                            self.append(NewEntry {
                                app: name.clone(),
                                desired_commit: snapshot.commit.clone(),
                                desired_digest: app.digest.clone(),
                                rollout: None,
                                from_state: from.to_string(),
                                to_state: Phase::Blocked.to_string(),
                                action: "block".into(),
                                actor: ACTOR.into(),
                                detail: json!({"reason": "MissingRole",
                                    "message": format!("{message}; the running version is kept"), "problems": problems}),
                            })
                            .await?;
                        }
                        continue;
                    }
                    let verdicts = self.admit(app, snapshot, quota_verdicts.remove(&name).unwrap_or_default()).await;
                    if let Some(block) = blocked_by(&verdicts) {
                        // A freeze closes by itself; a denial needs a new commit.
                        deferred += usize::from(block == crate::policy::Block::Freeze);
                        let unchanged = status.as_ref().is_some_and(|s| {
                            s.phase == Phase::Blocked && s.reason == block.reason() && s.desired_digest == app.digest
                        });
                        if !unchanged {
                            self.block(app, from, snapshot, block.reason(), &verdicts).await?;
                        }
                        continue;
                    }
                    self.retry.remove(&name);
                    // One app's trouble must not stop the others; it is retried on the next pass.
                    if let Err(e) = self.rollout(app, from, snapshot, &verdicts).await {
                        deferred += 1;
                        tracing::error!(app = name, error = format!("{e:#}"), "rollout could not be carried out");
                    } else if self.backoff.contains_key(&name) {
                        // Failed transiently (or still recovering from it): the ticks must go on
                        // until it is retried, even when nothing else in the fleet is moving.
                        deferred += 1;
                    }
                }
            }
        }
        self.deferred = deferred;
        for name in &desired.invalid_apps {
            let status = self.fleet.read().unwrap_or_else(|e| e.into_inner()).apps.get(name).cloned();
            if status.as_ref().is_some_and(|s| s.phase == Phase::Blocked && s.reason == "InvalidManifest") {
                continue;
            }
            let from = status.as_ref().map_or(Phase::Pending, |s| s.phase);
            // The loader says why, from this commit (the fleet's diagnostics are the last commit's).
            let message = match desired.held.get(name) {
                Some(why) => format!("{why}; the running version is kept"),
                None => format!(
                    "apps/{name}/deploy.yaml has errors; the running version is kept. Run `keelson validate` for details"
                ),
            };
            self.append(NewEntry {
                app: name.clone(),
                desired_commit: snapshot.commit.clone(),
                desired_digest: status.as_ref().map(|s| s.desired_digest.clone()).unwrap_or_default(),
                rollout: None,
                from_state: from.to_string(),
                to_state: Phase::Blocked.to_string(),
                action: "block".into(),
                actor: ACTOR.into(),
                detail: json!({"reason": "InvalidManifest", "message": message}),
            })
            .await?;
        }
        let gone: Vec<AppStatus> = {
            let fleet = self.fleet.read().unwrap_or_else(|e| e.into_inner());
            fleet
                .apps
                .values()
                .filter(|s| !desired.apps.contains_key(&s.name) && !desired.invalid_apps.contains(&s.name))
                .cloned()
                .collect()
        };
        if !gone.is_empty() && desired.apps.is_empty() && desired.invalid_apps.is_empty() {
            // A commit that removes every app is far more often a broken `source.path` than a wish.
            tracing::warn!(apps = gone.len(), "commit has no apps at all; refusing to prune every app (prune guard)");
            return Ok(());
        }
        for status in gone {
            if let Err(e) = self.prune(&status, snapshot).await {
                self.deferred += 1;
                tracing::error!(app = status.name, error = format!("{e:#}"), "prune could not be carried out");
            }
        }
        Ok(())
    }

    /// Starts a rollout of `app` (direct strategy: one step applying every resource).
    async fn rollout(&mut self, app: &LoadedApp, from: Phase, snapshot: &Snapshot, verdicts: &[Verdict]) -> Result<()> {
        let name = app.app.metadata.name.clone();
        self.previous.insert(name.clone(), app.app.clone());
        let instance = match self.providers.workloads(&app.app.spec.placement.cluster) {
            Ok(i) => i,
            Err(message) => {
                return self.fail_before_start(app, from, snapshot, "NoProvider", message, ErrorClass::Terminal).await;
            }
        };
        let bound = self.providers.instances.get(&instance)?.clone();
        let ctx = RenderCtx {
            instance: instance.clone(),
            revision: CommitId::new(snapshot.commit.clone()),
            digest: Digest::new(app.digest.clone()),
            variant: Variant::Stable,
            weight: 100,
        };
        let resources = match bound.renderer.render(&app.app, &ctx).await {
            Ok(r) => r,
            Err(e) => {
                // A plugin that is down or restarting renders again later; a bad render is quarantined.
                return self.fail_before_start(app, from, snapshot, "RenderFailed", e.to_string(), e.class()).await;
            }
        };
        let ids: Vec<ResourceId> = resources.iter().map(|r| r.id.clone()).collect();
        // What the app applied before but no longer renders: deleted after the applies if it prunes.
        let stale: Vec<ResourceId> = if app_prunes(app) {
            let fleet = self.fleet.read().unwrap_or_else(|e| e.into_inner());
            let inventory = fleet.apps.get(&name).map(|s| s.inventory.as_slice()).unwrap_or_default();
            inventory.iter().filter(|id| !ids.contains(id)).cloned().collect()
        } else {
            Vec::new()
        };
        let observed = bound.provider.observe(&ids).await;
        let changes = crate::plan::resource_changes(&resources, &observed, &stale);
        let plan = self
            .append(NewEntry {
                app: name.clone(),
                desired_commit: snapshot.commit.clone(),
                desired_digest: app.digest.clone(),
                rollout: Some(RolloutRef::StartsHere),
                from_state: from.to_string(),
                to_state: Phase::Planned.to_string(),
                action: "plan".into(),
                actor: ACTOR.into(),
                detail: json!({"instance": instance, "strategy": "direct", "steps": 1, "changes": changes, "verdicts": verdicts,
                    "message": format!("rolling out {} from {}", short(&app.digest), short(&snapshot.commit))}),
            })
            .await?;
        let rollout = plan.seq;
        let (step, of) = (1u32, 1u32);
        let mut intent_detail = json!({"key": format!("{name}/{rollout}/{step}"), "op": "apply", "instance": instance,
            "step": step, "of": of, "resources": resources});
        if !stale.is_empty() {
            intent_detail["prune"] = json!(stale);
        }
        let intent = self
            .append(NewEntry {
                app: name.clone(),
                desired_commit: snapshot.commit.clone(),
                desired_digest: app.digest.clone(),
                rollout: Some(RolloutRef::Seq(rollout)),
                from_state: Phase::Planned.to_string(),
                to_state: Phase::Progressing.to_string(),
                action: "intent".into(),
                actor: ACTOR.into(),
                detail: intent_detail,
            })
            .await?;
        crash_point(point::AFTER_INTENT);
        self.started.insert(name.clone(), Instant::now());
        let mut outcomes = Vec::new();
        let mut failure: Option<(String, ErrorClass)> = None;
        for r in &resources {
            let k = key(&name, rollout, step, &r.id.to_string());
            match bound.provider.apply(r, &k).await {
                Ok(o) => {
                    self.metrics.provider_call("apply", o.label());
                    outcomes.push((r.id.to_string(), o));
                }
                Err(e) => {
                    self.metrics.provider_call("apply", e.kind_label());
                    failure = Some((format!("{}: {e}", r.id), e.class()));
                    break;
                }
            }
        }
        if failure.is_none() {
            for id in &stale {
                match self.delete_resource(id, &key(&name, rollout, step, &id.to_string())).await {
                    Ok(o) => outcomes.push((id.to_string(), o)),
                    Err(e) => {
                        failure = Some((format!("{id}: {e:#}"), error_class(&e)));
                        break;
                    }
                }
            }
        }
        crash_point(point::AFTER_PROVIDER_CALL);
        let base = NewEntry {
            app: name.clone(),
            desired_commit: snapshot.commit.clone(),
            desired_digest: app.digest.clone(),
            rollout: Some(RolloutRef::Seq(rollout)),
            from_state: Phase::Progressing.to_string(),
            to_state: String::new(),
            action: String::new(),
            actor: ACTOR.into(),
            detail: json!({}),
        };
        let entry = match failure {
            None => NewEntry {
                to_state: Phase::Progressing.to_string(),
                action: "applied".into(),
                detail: json!({"intentSeq": intent.seq, "instance": instance, "step": step, "of": of,
                    "outcomes": outcome_map(&outcomes)}),
                ..base
            },
            Some((message, class)) => {
                if class == ErrorClass::Transient {
                    let next = Backoff::after(self.backoff.get(&name).copied(), Instant::now());
                    self.backoff.insert(name.clone(), next);
                }
                let message = match class {
                    ErrorClass::Transient => format!("{message}; retrying after a backoff"),
                    ErrorClass::Conflict => format!(
                        "{message}; another writer owns these fields: resolve it, then push a new commit or `Keelson-Retry: {name}`"
                    ),
                    ErrorClass::Terminal => message,
                };
                NewEntry {
                    to_state: Phase::Failed.to_string(),
                    action: "failed".into(),
                    detail: json!({"intentSeq": intent.seq, "instance": instance, "reason": "ApplyFailed", "message": message,
                        "class": class, "outcomes": outcome_map(&outcomes)}),
                    ..base
                }
            }
        };
        self.append(entry).await?;
        Ok(())
    }

    /// Every policy verdict about rolling out `app` now.
    async fn admit(&self, app: &LoadedApp, snapshot: &Snapshot, quota: Vec<Verdict>) -> Vec<Verdict> {
        let name = app.app.metadata.name.clone();
        tracing::debug!(app = name, "evaluating policies");
        // Rego may take up to its limit per rule: off the async executor, so the API, the
        // recorder and shutdown keep running meanwhile.
        let (policies, app_owned) = (Arc::clone(&self.policies), app.clone());
        let (previous, commit) = (self.previous.get(&name).cloned(), snapshot.commit.clone());
        let freeze_override = self.freeze_override.clone();
        let evaluated = tokio::task::spawn_blocking(move || {
            let ctx = ChangeCtx {
                previous: previous.as_ref(),
                commit: &commit,
                now: time::OffsetDateTime::now_utc(),
                freeze_override: freeze_override.as_deref(),
            };
            policies.evaluate(&app_owned, &ctx)
        })
        .await;
        let mut verdicts = evaluated.unwrap_or_else(|e| {
            vec![Verdict {
                policy: "(policy engine)".into(),
                rule: "evaluate".into(),
                kind: VerdictKind::Rule,
                message: format!("policy evaluation failed ({e}), so the change is held"),
                blocking: true,
                file: String::new(),
                line: 1,
                col: 1,
            }]
        });
        verdicts.extend(quota);
        verdicts.extend(self.policy_errors.iter().map(|problem| Verdict {
            policy: "(policy files)".into(),
            rule: "valid".into(),
            kind: VerdictKind::Rule,
            message: format!("a policy file has errors, so every change is held until it is fixed: {problem}"),
            blocking: true,
            file: problem.split(':').next().unwrap_or_default().to_owned(),
            line: 1,
            col: 1,
        }));
        verdicts
    }

    /// Records that policy (or a freeze window) holds `app`'s change; the running version is kept.
    async fn block(
        &mut self,
        app: &LoadedApp,
        from: Phase,
        snapshot: &Snapshot,
        reason: &str,
        verdicts: &[Verdict],
    ) -> Result<()> {
        let blocking: Vec<String> =
            verdicts.iter().filter(|v| v.blocking).map(|v| format!("{}/{}: {}", v.policy, v.rule, v.message)).collect();
        tracing::warn!(app = app.app.metadata.name, reason, "change held by policy: {}", blocking.join("; "));
        self.append(NewEntry {
            app: app.app.metadata.name.clone(),
            desired_commit: snapshot.commit.clone(),
            desired_digest: app.digest.clone(),
            rollout: None,
            from_state: from.to_string(),
            to_state: Phase::Blocked.to_string(),
            action: "block".into(),
            actor: ACTOR.into(),
            detail: json!({"reason": reason, "message": format!("{}; the running version is kept", blocking.join("; ")),
                "verdicts": verdicts}),
        })
        .await?;
        Ok(())
    }

    /// Records a rollout that could not start (no provider, render error): Failed, and
    /// quarantined unless the error is transient (then retried after a backoff).
    async fn fail_before_start(
        &mut self,
        app: &LoadedApp,
        from: Phase,
        snapshot: &Snapshot,
        reason: &str,
        message: String,
        class: ErrorClass,
    ) -> Result<()> {
        tracing::error!(app = app.app.metadata.name, reason, message, "rollout cannot start");
        let message = if class == ErrorClass::Transient {
            let name = app.app.metadata.name.clone();
            let next = Backoff::after(self.backoff.get(&name).copied(), Instant::now());
            self.backoff.insert(name, next);
            format!("{message}; retrying after a backoff")
        } else {
            message
        };
        self.append(NewEntry {
            app: app.app.metadata.name.clone(),
            desired_commit: snapshot.commit.clone(),
            desired_digest: app.digest.clone(),
            rollout: None,
            from_state: from.to_string(),
            to_state: Phase::Failed.to_string(),
            action: "failed".into(),
            actor: ACTOR.into(),
            detail: json!({"reason": reason, "message": message, "class": class}),
        })
        .await?;
        Ok(())
    }

    /// The app left git: delete everything it applied (its recorded inventory, never a scan).
    async fn prune(&mut self, status: &AppStatus, snapshot: &Snapshot) -> Result<()> {
        let name = status.name.clone();
        let instance = status.instance.clone();
        let ids = status.inventory.clone();
        let plan = self
            .append(NewEntry {
                app: name.clone(),
                desired_commit: snapshot.commit.clone(),
                desired_digest: String::new(),
                rollout: Some(RolloutRef::StartsHere),
                from_state: status.phase.to_string(),
                to_state: Phase::Planned.to_string(),
                action: "plan".into(),
                actor: ACTOR.into(),
                detail: json!({"instance": instance, "op": "delete",
                    "changes": ids.iter().map(|id| json!({"resource": id.to_string(), "change": "delete"})).collect::<Vec<_>>(),
                    "message": format!("{name} was removed from git at {}", short(&snapshot.commit))}),
            })
            .await?;
        let rollout = plan.seq;
        let intent = self
            .append(NewEntry {
                app: name.clone(),
                desired_commit: snapshot.commit.clone(),
                desired_digest: String::new(),
                rollout: Some(RolloutRef::Seq(rollout)),
                from_state: Phase::Planned.to_string(),
                to_state: Phase::Progressing.to_string(),
                action: "intent".into(),
                actor: ACTOR.into(),
                detail: json!({"key": format!("{name}/{rollout}/1"), "op": "delete", "instance": instance, "step": 1, "of": 1,
                    "resources": ids}),
            })
            .await?;
        crash_point(point::AFTER_INTENT);
        let result: Result<Vec<(String, Outcome)>> = async {
            let mut outcomes = Vec::new();
            // An app never rolled out (e.g. invalid from the start) has an empty inventory.
            for id in &ids {
                let o = self.delete_resource(id, &key(&name, rollout, 1, &id.to_string())).await?;
                outcomes.push((id.to_string(), o));
            }
            Ok(outcomes)
        }
        .await;
        crash_point(point::AFTER_PROVIDER_CALL);
        let (to, action, detail) = match result {
            Ok(outcomes) => (
                Phase::Deleted,
                "deleted",
                json!({"intentSeq": intent.seq, "instance": instance, "outcomes": outcome_map(&outcomes)}),
            ),
            Err(e) => (
                Phase::Failed,
                "failed",
                json!({"intentSeq": intent.seq, "instance": instance, "reason": "DeleteFailed", "message": format!("{e:#}"),
                    "class": error_class(&e)}),
            ),
        };
        self.append(NewEntry {
            app: name,
            desired_commit: snapshot.commit.clone(),
            desired_digest: String::new(),
            rollout: Some(RolloutRef::Seq(rollout)),
            from_state: Phase::Progressing.to_string(),
            to_state: to.to_string(),
            action: action.into(),
            actor: ACTOR.into(),
            detail,
        })
        .await?;
        Ok(())
    }

    /// Observes an in-flight rollout; records Healthy when every resource is, Failed past the deadline.
    async fn check_progress(&mut self, status: &AppStatus) -> Result<()> {
        let ids = status.inventory.clone();
        let mut by_instance: BTreeMap<&str, Vec<ResourceId>> = BTreeMap::new();
        for id in &ids {
            by_instance.entry(id.instance.as_str()).or_default().push(id.clone());
        }
        let mut resources = Vec::with_capacity(ids.len());
        let (mut ready, mut desired, mut all_healthy) = (0u32, 0u32, true);
        let mut observed_digest = None;
        for (instance, ids) in by_instance {
            let bound = self.providers.instances.get(instance)?;
            for (id, health) in bound.provider.health(&ids).await {
                let health = match health {
                    Ok(h) => h,
                    Err(e) => {
                        // One resource that cannot be read keeps the app from Healthy, nothing more.
                        tracing::warn!(app = status.name, resource = %id, error = %e, "health check failed");
                        all_healthy = false;
                        continue;
                    }
                };
                match &health {
                    Health::Healthy => {}
                    Health::Progressing { ready: r, desired: d, .. } => {
                        ready += r;
                        desired += d;
                        all_healthy = false;
                    }
                    Health::Degraded { .. } | Health::Missing => all_healthy = false,
                }
                resources.push(ResourceStatus { id, health });
            }
            if observed_digest.is_none() {
                observed_digest = bound
                    .provider
                    .observe(&ids)
                    .await
                    .into_iter()
                    .find_map(|(_, o)| o.ok().flatten().and_then(|o| o.digest))
                    .map(Digest::into_string);
            }
        }
        let current = observed_digest.as_deref() == Some(status.desired_digest.as_str());
        {
            let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = fleet.apps.get_mut(&status.name) {
                s.resources = resources;
                s.observed_digest.clone_from(&observed_digest);
                if let Some(p) = s.progress.as_mut() {
                    p.ready = ready;
                    p.desired = desired;
                } else {
                    s.progress = Some(Progress { step: 1, of: 1, ready, desired });
                }
            }
        }
        let base = NewEntry {
            app: status.name.clone(),
            desired_commit: status.desired_commit.clone(),
            desired_digest: status.desired_digest.clone(),
            rollout: status.rollout.map(RolloutRef::Seq),
            from_state: Phase::Progressing.to_string(),
            to_state: String::new(),
            action: String::new(),
            actor: ACTOR.into(),
            detail: json!({}),
        };
        if all_healthy && current && !ids.is_empty() {
            self.started.remove(&status.name);
            self.backoff.remove(&status.name);
            self.append(NewEntry {
                to_state: Phase::Healthy.to_string(),
                action: "healthy".into(),
                detail: json!({"observedDigest": observed_digest, "resources": ids.len()}),
                ..base
            })
            .await?;
        } else if self.started.get(&status.name).is_some_and(|t| t.elapsed() > self.settings.progress_deadline) {
            self.started.remove(&status.name);
            self.append(NewEntry {
                to_state: Phase::Failed.to_string(),
                action: "failed".into(),
                detail: json!({"reason": "ProgressDeadlineExceeded",
                    "message": format!("not healthy after {:?} ({ready} of {desired} ready)", self.settings.progress_deadline)}),
                ..base
            })
            .await?;
        }
        Ok(())
    }

    /// Appends one entry, folds it into the fleet, counts it and wakes the status recorder.
    async fn append(&self, entry: NewEntry) -> Result<LedgerEntry> {
        let e = self.ledger.append(entry).await.context("appending to the audit ledger")?;
        crash_point(point::AFTER_LEDGER_APPEND);
        tracing::info!(app = e.app, seq = e.seq, from = e.from_state, to = e.to_state, action = e.action, "transition");
        self.metrics.transition(&e.to_state, e.seq);
        {
            let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
            fleet.replay([e.clone()]);
        }
        self.recorder.notify_one();
        Ok(e)
    }
}

fn key(app: &str, rollout: i64, step: u32, resource: &str) -> IdempotencyKey {
    IdempotencyKey { app: app.into(), rollout, step, resource: resource.to_owned() }
}

fn outcome_map(outcomes: &[(String, Outcome)]) -> serde_json::Value {
    serde_json::Value::Object(outcomes.iter().map(|(id, o)| (id.clone(), json!(o.label()))).collect())
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

/// Apps in an order where every app comes after what it depends on (Kahn's algorithm, ties by name).
pub fn dependency_order(desired: &DesiredState) -> Vec<String> {
    let mut waiting_on: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, app) in &desired.apps {
        let deps: BTreeSet<&str> =
            app.app.spec.depends_on.iter().map(String::as_str).filter(|d| desired.apps.contains_key(*d)).collect();
        waiting_on.insert(name, deps.len());
        for d in deps {
            dependents.entry(d).or_default().push(name);
        }
    }
    let mut ready: BTreeSet<&str> = waiting_on.iter().filter(|(_, n)| **n == 0).map(|(k, _)| *k).collect();
    let mut order = Vec::with_capacity(desired.apps.len());
    while let Some(name) = ready.pop_first() {
        order.push(name.to_owned());
        waiting_on.remove(name);
        for d in dependents.get(name).into_iter().flatten() {
            if let Some(n) = waiting_on.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    ready.insert(d);
                }
            }
        }
    }
    // Whatever is left sits on a cycle (the loader reports it); keep going in name order rather than stall.
    order.extend(waiting_on.into_keys().map(str::to_owned));
    order
}

fn dependencies_ready(app: &LoadedApp, desired: &DesiredState, fleet: &Fleet) -> Result<(), String> {
    for dep in &app.app.spec.depends_on {
        let Some(want) = desired.apps.get(dep) else {
            if desired.invalid_apps.contains(dep) {
                let why = desired.held.get(dep).map_or(String::new(), |w| format!(": {w}"));
                return Err(format!("waiting for {dep}: its manifest is invalid, so it is held{why}"));
            }
            return Err(format!("waiting for {dep}: it is not in the repository"));
        };
        match fleet.apps.get(dep) {
            Some(s) if s.phase == Phase::Healthy && s.desired_digest == want.digest => {}
            Some(s) => return Err(format!("waiting for {dep} to become Healthy (it is {})", s.phase)),
            None => return Err(format!("waiting for {dep} to start")),
        }
    }
    Ok(())
}

/// True when `status` says policy already blocked this digest of `app` at `commit`.
fn policy_blocked_at(status: Option<&AppStatus>, app: &LoadedApp, commit: &str) -> bool {
    status.is_some_and(|s| {
        s.phase == Phase::Blocked
            && s.reason == crate::policy::Block::Policy.reason()
            && s.desired_digest == app.digest
            && s.desired_commit == commit
    })
}

/// The first 12 characters of an id or digest, for messages.
pub fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

/// Now as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(spec_extra: serde_json::Value) -> LoadedApp {
        let mut spec = json!({"image": "img:1", "placement": {"cluster": "c"}});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
            spec.extend(extra.clone());
        }
        let app =
            json!({"apiVersion": "keelson.dev/v1alpha1", "kind": "App", "metadata": {"name": "web"}, "spec": spec});
        LoadedApp {
            app: serde_json::from_value(app).expect("valid app"),
            file: "apps/web/deploy.yaml".into(),
            digest: "d".into(),
        }
    }

    /// One default (false) whether or not a `sync:` block is written.
    #[test]
    fn prune_is_off_unless_written() {
        assert!(!app_prunes(&loaded(json!({}))), "no sync block");
        assert!(!app_prunes(&loaded(json!({"sync": {"selfHeal": true}}))), "sync block without prune");
        assert!(!app_prunes(&loaded(json!({"sync": {"prune": false}}))));
        assert!(app_prunes(&loaded(json!({"sync": {"prune": true}}))));
    }

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        let now = Instant::now();
        let mut b = None;
        let mut delays = vec![];
        for _ in 0..12 {
            let next = Backoff::after(b, now);
            delays.push((next.until - now).as_secs());
            b = Some(next);
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn provider_errors_keep_their_class_through_context() {
        let e = anyhow::Error::new(keelson_provider_api::Error::unavailable(&"lab".into(), "down")).context("deleting");
        assert_eq!(error_class(&e), ErrorClass::Transient);
        assert_eq!(error_class(&anyhow::anyhow!("the ledger is gone")), ErrorClass::Terminal);
    }
}
