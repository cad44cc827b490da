//! One pass over the desired state: for each app in dependency order, the core's decision carried
//! out; then apps whose manifest is invalid are held, and apps that left git are pruned.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Result;
use keelson_core::decide::{Decision, decide, dependencies_ready, policy_blocked_at};
use keelson_core::event::{Block, BlockReason, Suspend};
use keelson_core::ledger::Transition;
use keelson_core::order::dependency_order;
use keelson_core::{AppStatus, Event, Phase};
use keelson_manifest::DesiredState;

use super::Engine;
use crate::policy::Verdict;
use crate::source::Snapshot;

impl Engine {
    pub(super) async fn reconcile_desired(&mut self, desired: &DesiredState, snapshot: &Snapshot) -> Result<()> {
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
                (fleet.apps.get(&name).cloned(), dependencies_ready(app, desired, &fleet.apps))
            };
            let retry = self.retry.contains(&name);
            let from = status.as_ref().map_or(Phase::Pending, |s| s.phase);
            let transition = |to| Transition {
                app: &name,
                desired_commit: &snapshot.commit,
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
                    let event = Event::Suspend(Suspend {
                        reason: "Suspended".into(),
                        message: "spec.suspend is true; the app is left as it is".into(),
                    });
                    self.record(transition(Phase::Suspended), event).await?;
                }
                Decision::StartRollout if !retry && policy_blocked_at(status.as_ref(), app, &snapshot.commit) => {
                    // A policy denial changes only with a new commit: evaluating it again (up to
                    // its time limit per rule, every tick) would starve the rest of the fleet.
                }
                Decision::StartRollout => {
                    let now = self.now();
                    let backing_off = self.backoff.get(&name).is_some_and(|b| !b.remaining(now).is_zero());
                    if backing_off && from == Phase::Failed {
                        // A transient failure: tried again once its backoff has passed.
                        deferred += 1;
                        continue;
                    }
                    acted = true;
                    let Some(verdicts) = self
                        .admit_or_block(
                            app,
                            status.as_ref(),
                            snapshot,
                            quota_verdicts.remove(&name).unwrap_or_default(),
                            &mut deferred,
                        )
                        .await?
                    else {
                        continue;
                    };
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
        self.hold_invalid_apps(desired, snapshot).await?;
        self.prune_removed_apps(desired, snapshot).await
    }

    /// Apps whose manifest has errors are `Blocked` once per cause; their running version is kept.
    async fn hold_invalid_apps(&mut self, desired: &DesiredState, snapshot: &Snapshot) -> Result<()> {
        for name in &desired.invalid_apps {
            let status = self.status_of(name);
            if status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::Blocked && s.reason == BlockReason::InvalidManifest.as_str())
            {
                continue;
            }
            // The loader says why, from this commit (the fleet's diagnostics are the last commit's).
            let message = match desired.held.get(name) {
                Some(why) => format!("{why}; the running version is kept"),
                None => format!(
                    "apps/{name}/deploy.yaml has errors; the running version is kept. Run `keelson validate` for details"
                ),
            };
            let digest = status.as_ref().map(|s| s.desired_digest.clone()).unwrap_or_default();
            let transition = Transition {
                app: name,
                desired_commit: &snapshot.commit,
                desired_digest: &digest,
                rollout: None,
                from: status.as_ref().map_or(Phase::Pending, |s| s.phase),
                to: Phase::Blocked,
            };
            let event = Event::Block(Block {
                reason: BlockReason::InvalidManifest,
                message,
                verdicts: Vec::new(),
                problems: Vec::new(),
            });
            self.record(transition, event).await?;
        }
        Ok(())
    }

    /// Apps in the fleet that git no longer has (and does not hold as invalid) are pruned, unless
    /// the commit has no apps at all (the prune guard).
    async fn prune_removed_apps(&mut self, desired: &DesiredState, snapshot: &Snapshot) -> Result<()> {
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
}
