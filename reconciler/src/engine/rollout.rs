//! A rollout (direct strategy: one step applying every resource): render through the cluster's
//! workloads instance, observe, record the plan and the intent, apply, delete what the app no
//! longer renders, record the outcome.

use anyhow::Result;
use keelson_core::event::{FailReason, Failed, Intent, IntentOp, Outcomes, Plan};
use keelson_core::ledger::{RolloutRef, Transition};
use keelson_core::{Event, Phase};
use keelson_manifest::app::StrategyType;
use keelson_manifest::{CommitId, Digest, LoadedApp};
use keelson_provider_api::{ErrorClass, RenderCtx, ResourceId, Variant};

use super::backoff::Backoff;
use super::{Ctx, Desired, app_prunes, error_class, key, recorded, short};
use crate::crash::{crash_point, point};
use crate::policy::Verdict;

impl Ctx {
    /// Starts a rollout of `app`: plan, intent, the provider calls, their outcome. `retry_of`
    /// names the commit whose `Keelson-Retry` trailer it consumes.
    pub(super) async fn rollout(
        &self,
        app: &LoadedApp,
        from: Phase,
        desired: &Desired,
        verdicts: &[Verdict],
        retry_of: Option<String>,
    ) -> Result<()> {
        let name = app.app.metadata.name.clone();
        let commit = desired.commit.clone().unwrap_or_default();
        let instance = match self.providers.workloads(&app.app.spec.placement.cluster) {
            Ok(i) => i,
            Err(message) => {
                return self
                    .fail_before_start(app, from, &commit, FailReason::NoProvider, message, ErrorClass::Terminal)
                    .await;
            }
        };
        let bound = self.providers.instances.get(&instance)?.clone();
        let ctx = RenderCtx {
            instance: instance.clone(),
            revision: CommitId::new(commit.clone()),
            digest: Digest::new(app.digest.clone()),
            variant: Variant::Stable,
            weight: 100,
        };
        let resources = match bound.renderer.render(&app.app, &ctx).await {
            Ok(r) => r,
            Err(e) => {
                // A plugin that is down or restarting renders again later; a bad render is quarantined.
                let class = e.class();
                return self
                    .fail_before_start(app, from, &commit, FailReason::RenderFailed, e.to_string(), class)
                    .await;
            }
        };
        let ids: Vec<ResourceId> = resources.iter().map(|r| r.id.clone()).collect();
        // What the app applied before but no longer renders: deleted after the applies if it prunes.
        let stale: Vec<ResourceId> = if app_prunes(app) {
            let inventory = self.status_of(&name).map(|s| s.inventory).unwrap_or_default();
            inventory.into_iter().filter(|id| !ids.contains(id)).collect()
        } else {
            Vec::new()
        };
        let observed = bound.provider.observe(&ids).await;
        let transition = |rollout, from, to| Transition {
            app: &name,
            desired_commit: &commit,
            desired_digest: &app.digest,
            rollout: Some(rollout),
            from,
            to,
        };
        let plan = Plan {
            instance: instance.to_string(),
            op: keelson_core::event::Op::Apply,
            strategy: Some(StrategyType::Direct),
            steps: Some(1),
            changes: keelson_core::diff::resource_changes(&resources, &observed, &stale),
            verdicts: verdicts.to_vec(),
            message: match (self.settings.dry_run, from == Phase::Drifted) {
                (true, _) => format!("dry run: would roll out {} from {}", short(&app.digest), short(&commit)),
                (false, true) => {
                    format!("healing drift: rolling out {} from {} again", short(&app.digest), short(&commit))
                }
                (false, false) => format!("rolling out {} from {}", short(&app.digest), short(&commit)),
            },
            deadline: (!self.settings.dry_run)
                .then(|| keelson_core::ledger::format_at(self.now() + self.settings.progress_deadline)),
            retry_of,
            dry_run: self.settings.dry_run,
            cause: (from == Phase::Drifted).then(|| Phase::Drifted.as_str().to_owned()),
        };
        let planned = self.record(transition(RolloutRef::StartsHere, from, Phase::Planned), Event::Plan(plan)).await?;
        if self.settings.dry_run {
            // Planned, never carried out: no intent, no provider call.
            return Ok(());
        }
        let rollout = planned.seq;
        let (step, of) = (1u32, 1u32);
        let intent = Intent {
            key: format!("{name}/{rollout}/{step}"),
            instance: instance.to_string(),
            step,
            of,
            op: IntentOp::Apply { resources: resources.clone(), prune: stale.clone() },
        };
        let intended = self
            .record(transition(RolloutRef::Seq(rollout), Phase::Planned, Phase::Progressing), Event::Intent(intent))
            .await?;
        crash_point(point::AFTER_INTENT);
        let mut outcomes = Vec::new();
        let mut failure: Option<(String, ErrorClass)> = None;
        for r in &resources {
            let started = std::time::Instant::now();
            let applied = bound.provider.apply(r, &key(&name, rollout, step, &r.id.to_string())).await;
            let elapsed = started.elapsed();
            match applied {
                Ok(o) => {
                    self.metrics.provider_call(instance.as_str(), "apply", Ok(o.label()), elapsed);
                    outcomes.push((r.id.to_string(), o));
                }
                Err(e) => {
                    let error = (e.kind_label(), e.class().as_str());
                    self.metrics.provider_call(instance.as_str(), "apply", Err(error), elapsed);
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
        let done = transition(RolloutRef::Seq(rollout), Phase::Progressing, Phase::Progressing);
        let (to, event) = match failure {
            None => {
                let outcomes = Outcomes {
                    intent_seq: intended.seq,
                    instance: instance.to_string(),
                    step: Some(step),
                    of: Some(of),
                    outcomes: recorded(outcomes),
                    recovered: false,
                };
                (Phase::Progressing, Event::Applied(outcomes))
            }
            Some((message, class)) => {
                let message = self.with_retry_advice(&name, message, class);
                let failed = Failed {
                    reason: FailReason::ApplyFailed,
                    message,
                    intent_seq: Some(intended.seq),
                    instance: Some(instance.to_string()),
                    class: Some(class),
                    outcomes: recorded(outcomes),
                    recovered: false,
                };
                (Phase::Failed, Event::Failed(failed))
            }
        };
        self.record(Transition { to, ..done }, event).await?;
        Ok(())
    }

    /// Records a rollout that could not start (no provider, render error): Failed, and
    /// quarantined unless the error is transient (then retried after a backoff).
    async fn fail_before_start(
        &self,
        app: &LoadedApp,
        from: Phase,
        commit: &str,
        reason: FailReason,
        message: String,
        class: ErrorClass,
    ) -> Result<()> {
        tracing::error!(app = app.app.metadata.name, reason = reason.as_str(), message, "rollout cannot start");
        let message = self.with_retry_advice(&app.app.metadata.name, message, class);
        let transition = Transition {
            app: &app.app.metadata.name,
            desired_commit: commit,
            desired_digest: &app.digest,
            rollout: None,
            from,
            to: Phase::Failed,
        };
        let failed = Failed {
            reason,
            message,
            intent_seq: None,
            instance: None,
            class: Some(class),
            outcomes: Default::default(),
            recovered: false,
        };
        self.record(transition, Event::Failed(failed)).await?;
        Ok(())
    }

    /// The failure message with what happens next; a transient failure starts (or extends) the
    /// app's backoff.
    fn with_retry_advice(&self, app: &str, message: String, class: ErrorClass) -> String {
        match class {
            ErrorClass::Transient => {
                let mut backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
                let next = Backoff::after(backoff.get(app).copied(), self.now());
                backoff.insert(app.to_owned(), next);
                format!("{message}; retrying after a backoff")
            }
            ErrorClass::Conflict => format!(
                "{message}; another writer owns these fields: resolve it, then push a new commit or `Keelson-Retry: {app}`"
            ),
            ErrorClass::Terminal => message,
        }
    }
}
