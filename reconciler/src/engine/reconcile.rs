//! One reconcile of one app: the core's decision carried out, answered with the [`Action`] that
//! says when to look at the app again. Invalid apps are held, apps that left git are pruned.

use std::hash::BuildHasher;
use std::time::Duration;

use anyhow::Result;
use keelson_core::decide::{Decision, decide, dependencies_ready, policy_blocked_at, prune_guard};
use keelson_core::event::{Block, BlockReason, Suspend};
use keelson_core::ledger::Transition;
use keelson_core::{AppStatus, Event, Phase};

use keelson_manifest::LoadedApp;

use super::backoff::Backoff;
use super::drift::DriftCheck;
use super::{Action, Ctx, Desired, error_class, short};
use crate::policy::Verdict;
use keelson_core::verdict::Block as Held;

/// How often a frozen change is looked at again (freezes close by themselves).
pub(super) const FREEZE_RECHECK: Duration = Duration::from_secs(30);
/// How often a failed app's resources are observed (their health is shown as it is).
pub(super) const FAILED_OBSERVE: Duration = Duration::from_secs(30);
/// How often a reconcile is tried while the ledger cannot be written.
const LEDGER_RECHECK: Duration = Duration::from_secs(30);

impl Ctx {
    /// Reconciles `name` once.
    pub(super) async fn reconcile(&self, name: &str) -> Result<Action> {
        if !self.ledger_accepts_work() {
            return Ok(Action::requeue(LEDGER_RECHECK));
        }
        self.metrics.reconciles.inc();
        let desired = self.desired();
        let Some(commit) = desired.commit.clone() else { return Ok(Action::AwaitChange) };
        let status = self.status_of(name);
        let Some(app) = desired.state.apps.get(name) else {
            if desired.state.invalid_apps.contains(name) {
                self.hold_invalid(name, status.as_ref(), &desired, &commit).await?;
                return Ok(Action::AwaitChange);
            }
            let Some(status) = status else { return Ok(Action::AwaitChange) };
            return self.remove(&status, &desired, &commit).await;
        };
        if self.settings.dry_run
            && status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::Planned && s.reason == "DryRun" && s.desired_digest == app.digest)
        {
            // Planned once per digest; a dry run never goes further.
            return Ok(Action::AwaitChange);
        }
        let deps = if self.settings.dry_run {
            // Nothing ever becomes Healthy in a dry run: every app is planned as git wants it.
            Ok(())
        } else {
            let fleet = self.fleet.read().unwrap_or_else(|e| e.into_inner());
            dependencies_ready(app, &desired.state, &fleet.apps)
        };
        let retry = self.retry.lock().unwrap_or_else(|e| e.into_inner()).contains(name);
        let from = status.as_ref().map_or(Phase::Pending, |s| s.phase);
        let transition = |to| Transition {
            app: name,
            desired_commit: &commit,
            desired_digest: &app.digest,
            rollout: None,
            from,
            to,
        };
        match decide(app, status.as_ref(), retry, deps) {
            Decision::Nothing => {
                if status.as_ref().is_some_and(|s| s.wanted_digest.is_some()) {
                    // What waited is no longer wanted (say, reverted to what runs).
                    let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
                    if let Some(s) = fleet.apps.get_mut(name) {
                        s.clear_wait();
                    }
                }
                match status {
                    Some(s) if s.phase == Phase::Progressing => self.check_progress(&s).await,
                    Some(s) if s.phase == Phase::Failed && !s.inventory.is_empty() => {
                        self.observe_failed(&s).await;
                        Ok(Action::requeue(FAILED_OBSERVE))
                    }
                    Some(s) if matches!(s.phase, Phase::Healthy | Phase::Drifted) => {
                        match self.check_drift(app, &s).await? {
                            DriftCheck::Drifted { heal: true } => {
                                let from = self.status_of(name).map_or(s.phase, |s| s.phase);
                                self.start_rollout(name, app, from, false, &desired).await
                            }
                            _ => Ok(Action::requeue(self.drift_wait(name))),
                        }
                    }
                    Some(s) if s.phase == Phase::Suspended => {
                        self.show_suspended_drift(app, &s).await;
                        Ok(Action::requeue(self.drift_wait(name)))
                    }
                    _ => Ok(Action::AwaitChange),
                }
            }
            Decision::Wait { reason, message } => {
                let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
                let s = fleet.apps.entry(name.to_owned()).or_insert_with(|| AppStatus::pending(name));
                s.wait_for(&commit, &app.digest, reason, message);
                // Looked at again when the dependency becomes Healthy (the journal enqueues it).
                Ok(Action::AwaitChange)
            }
            Decision::Suspend => {
                let event = Event::Suspend(Suspend {
                    reason: "Suspended".into(),
                    message: "spec.suspend is true; the app is left as it is (still observed)".into(),
                });
                self.record(transition(Phase::Suspended), event).await?;
                // Still observed and reported, never acted on.
                Ok(Action::requeue(self.drift_wait(name)))
            }
            Decision::StartRollout if !retry && policy_blocked_at(status.as_ref(), app, &commit) => {
                // A policy denial changes only with a new commit or new policies.
                Ok(Action::AwaitChange)
            }
            Decision::StartRollout => self.start_rollout(name, app, from, retry, &desired).await,
        }
    }

    /// Starts a rollout of `app` from phase `from` (a change, a retry or a self-heal): policy
    /// first, then the rollout; answers when to look at the app again.
    async fn start_rollout(
        &self,
        name: &str,
        app: &LoadedApp,
        from: Phase,
        retry: bool,
        desired: &Desired,
    ) -> Result<Action> {
        let status = self.status_of(name);
        let now = self.now();
        let wait = self.backoff_of(name).map(|b| b.remaining(now)).unwrap_or_default();
        if !wait.is_zero() && from == Phase::Failed {
            // A transient failure: tried again once its backoff has passed.
            return Ok(Action::requeue(wait));
        }
        let quota: Vec<Verdict> = desired.quotas.get(name).cloned().unwrap_or_default();
        let verdicts = match self.admit_or_block(app, status.as_ref(), desired, quota).await? {
            Ok(verdicts) => verdicts,
            Err(Held::Freeze) => return Ok(Action::requeue(FREEZE_RECHECK)),
            Err(Held::Policy) => return Ok(Action::AwaitChange),
        };
        let retry_of = if retry { desired.commit.clone() } else { None };
        self.rollout(app, from, desired, &verdicts, retry_of).await?;
        self.retry.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        match self.status_of(name) {
            // Checked at once: a provider that converges immediately is Healthy in one go.
            Some(s) if s.phase == Phase::Progressing => self.check_progress(&s).await,
            Some(s) if s.phase == Phase::Failed => {
                let wait = self.backoff_of(name).map(|b| b.remaining(self.now())).unwrap_or_default();
                Ok(if wait.is_zero() { Action::AwaitChange } else { Action::requeue(wait) })
            }
            _ => Ok(Action::AwaitChange),
        }
    }

    /// An app the fleet runs that left git: pruned unless the prune guard holds the commit, its
    /// last rolled-out manifest says `sync.prune: false`, or an app that depended on it is still
    /// being pruned (dependents go first).
    async fn remove(&self, status: &AppStatus, desired: &Desired, commit: &str) -> Result<Action> {
        let name = status.name.as_str();
        let (gone, total): (Vec<AppStatus>, usize) = {
            let fleet = self.fleet.read().unwrap_or_else(|e| e.into_inner());
            let gone = fleet
                .apps
                .values()
                .filter(|s| !desired.state.apps.contains_key(&s.name) && !desired.state.invalid_apps.contains(&s.name))
                .cloned()
                .collect();
            (gone, fleet.apps.len())
        };
        let removed = gone.len();
        if let Err(message) = prune_guard(removed, total, self.settings.prune_max_percent, desired.allow_prune) {
            if status.phase == Phase::Blocked
                && status.reason == BlockReason::PruneGuard.as_str()
                && status.desired_commit == commit
            {
                return Ok(Action::AwaitChange);
            }
            tracing::warn!(app = name, commit, "{message}");
            let transition = Transition {
                app: name,
                desired_commit: commit,
                desired_digest: &status.desired_digest,
                rollout: None,
                from: status.phase,
                to: Phase::Blocked,
            };
            let event = Event::Block(Block {
                reason: BlockReason::PruneGuard,
                message: format!("{name} left git at {}, but {message}; the running version is kept", short(commit)),
                verdicts: Vec::new(),
                problems: Vec::new(),
            });
            self.record(transition, event).await?;
            return Ok(Action::AwaitChange);
        }
        let mut waiting_on = Vec::new();
        for other in gone.iter().filter(|s| s.name != name) {
            let depends =
                self.last_rolled_out(other).await.is_some_and(|a| a.spec.depends_on.iter().any(|d| d == name));
            if depends {
                waiting_on.push(other.name.clone());
            }
        }
        if !waiting_on.is_empty() {
            // Enqueued again when they are deleted.
            tracing::debug!(app = name, dependents = ?waiting_on, "prune waits for its dependents");
            return Ok(Action::AwaitChange);
        }
        if self.settings.dry_run && status.phase == Phase::Planned && status.reason == "DryRunPrune" {
            return Ok(Action::AwaitChange);
        }
        let last = self.last_rolled_out(status).await;
        let keep = last.as_ref().and_then(|a| a.spec.sync.as_ref()).is_some_and(|s| s.prune == Some(false));
        let depends_on: Vec<String> = last.map(|a| a.spec.depends_on.clone()).unwrap_or_default();
        self.prune(status, commit, keep).await?;
        for dependency in depends_on {
            self.queue.enqueue(&dependency);
        }
        Ok(Action::AwaitChange)
    }

    /// What to do after a reconcile that failed (the ledger could not be written, a prune or a
    /// provider call failed outright): try again after a capped, jittered backoff.
    pub(super) fn error_policy(&self, name: &str, e: &anyhow::Error) -> Action {
        let class = error_class(e);
        let now = self.now();
        let next = {
            let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
            let next = Backoff::after(errors.get(name).copied(), now);
            errors.insert(name.to_owned(), next);
            next
        };
        let wait = jitter(name, next.remaining(now));
        tracing::error!(
            app = name,
            class = class.as_str(),
            retry_in_ms = wait.as_millis() as u64,
            error = format!("{e:#}"),
            "reconcile failed; will retry"
        );
        Action::requeue(wait)
    }

    /// Forgets the error backoff of an app whose reconcile succeeded.
    pub(super) fn reconciled(&self, name: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if !errors.is_empty() {
            errors.remove(name);
        }
    }

    fn backoff_of(&self, name: &str) -> Option<Backoff> {
        self.backoff.lock().unwrap_or_else(|e| e.into_inner()).get(name).copied()
    }

    /// An app whose manifest has errors is `Blocked` once per cause; its running version is kept.
    async fn hold_invalid(
        &self,
        name: &str,
        status: Option<&AppStatus>,
        desired: &Desired,
        commit: &str,
    ) -> Result<()> {
        if status.is_some_and(|s| s.phase == Phase::Blocked && s.reason == BlockReason::InvalidManifest.as_str()) {
            return Ok(());
        }
        // The loader says why, from this commit (the fleet's diagnostics are the last commit's).
        let message = match desired.state.held.get(name) {
            Some(why) => format!("{why}; the running version is kept"),
            None => format!(
                "apps/{name}/deploy.yaml has errors; the running version is kept. Run `keelson validate` for details"
            ),
        };
        let digest = status.map(|s| s.desired_digest.clone()).unwrap_or_default();
        let transition = Transition {
            app: name,
            desired_commit: commit,
            desired_digest: &digest,
            rollout: None,
            from: status.map_or(Phase::Pending, |s| s.phase),
            to: Phase::Blocked,
        };
        let event = Event::Block(Block {
            reason: BlockReason::InvalidManifest,
            message,
            verdicts: Vec::new(),
            problems: Vec::new(),
        });
        self.record(transition, event).await?;
        Ok(())
    }
}

/// `delay` plus up to a tenth more, different per app and per process, so that apps failing
/// together do not all retry together.
pub(super) fn jitter(app: &str, delay: Duration) -> Duration {
    let spread = delay / 10;
    if spread.is_zero() {
        return delay;
    }
    let r = std::hash::RandomState::new().hash_one(app);
    delay + Duration::from_nanos(r % spread.as_nanos().max(1) as u64)
}
