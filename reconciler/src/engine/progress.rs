//! An in-flight rollout, observed: `Healthy` once every resource is healthy at the desired
//! digest, `Failed` past the progress deadline the plan recorded (also while the provider cannot
//! be reached). A failed app is still observed, so its health is shown as it is.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use keelson_core::event::{FailReason, Failed, Healthy};
use keelson_core::fleet::{Progress, ResourceStatus};
use keelson_core::ledger::{RolloutRef, Transition};
use keelson_core::{AppStatus, Event, Phase};
use keelson_manifest::Digest;
use keelson_provider_api::{Health, ResourceId};
use time::OffsetDateTime;

use super::{Action, Ctx};

/// First wait between two health checks of a converging app; it grows by half each time.
const FIRST_POLL: Duration = Duration::from_millis(200);
/// Longest wait between two health checks.
const MAX_POLL: Duration = Duration::from_secs(2);
/// Longest one observation of a failed app may take.
const OBSERVE_FAILED_LIMIT: Duration = Duration::from_secs(10);
/// An observation is given at least this long, even right at the deadline.
const MIN_OBSERVE: Duration = Duration::from_millis(500);

/// What the providers said about an app's resources.
struct Observed {
    resources: Vec<ResourceStatus>,
    ready: u32,
    desired: u32,
    all_healthy: bool,
    digest: Option<String>,
}

impl Ctx {
    /// Observes `status`'s app and records what changed; says when to look again.
    pub(super) async fn check_progress(&self, status: &AppStatus) -> Result<Action> {
        let now = self.now();
        let deadline = self.deadline_of(status, now);
        let remaining = Duration::try_from(deadline - now).unwrap_or_default();
        // Bounded: a provider that cannot be reached must not hold the deadline back.
        let observed = match tokio::time::timeout(remaining.max(MIN_OBSERVE), self.observe(&status.inventory)).await {
            Ok(Ok(o)) => Some(o),
            Ok(Err(e)) => {
                tracing::warn!(app = status.name, error = format!("{e:#}"), "health check failed");
                None
            }
            Err(_) => {
                tracing::warn!(app = status.name, "health check did not answer before the progress deadline");
                None
            }
        };
        let (ready, desired) = observed.as_ref().map_or((0, 0), |o| (o.ready, o.desired));
        let healthy = observed.as_ref().is_some_and(|o| {
            o.all_healthy && o.digest.as_deref() == Some(status.desired_digest.as_str()) && !status.inventory.is_empty()
        });
        if let Some(o) = observed {
            self.show(&status.name, o);
        }
        let transition = |to| Transition {
            app: &status.name,
            desired_commit: &status.desired_commit,
            desired_digest: &status.desired_digest,
            rollout: status.rollout.map(RolloutRef::Seq),
            from: Phase::Progressing,
            to,
        };
        if healthy {
            self.settled(&status.name);
            self.backoff.lock().unwrap_or_else(|e| e.into_inner()).remove(&status.name);
            let event = Event::Healthy(Healthy {
                observed_digest: Some(status.desired_digest.clone()),
                resources: status.inventory.len(),
            });
            self.record(transition(Phase::Healthy), event).await?;
            // Level-triggered from here on: observed again for drift.
            return Ok(Action::requeue(self.drift_wait(&status.name)));
        }
        if self.now() >= deadline {
            self.settled(&status.name);
            let event = Event::Failed(Failed {
                reason: FailReason::ProgressDeadlineExceeded,
                message: format!(
                    "not healthy after {:?} ({ready} of {desired} ready)",
                    self.settings.progress_deadline
                ),
                intent_seq: None,
                instance: None,
                class: None,
                outcomes: Default::default(),
                recovered: false,
            });
            self.record(transition(Phase::Failed), event).await?;
            return Ok(Action::requeue(super::reconcile::FAILED_OBSERVE));
        }
        let wait = {
            let mut polls = self.polls.lock().unwrap_or_else(|e| e.into_inner());
            let wait = polls.get(&status.name).copied().unwrap_or(FIRST_POLL);
            polls.insert(status.name.clone(), (wait + wait / 2).min(MAX_POLL));
            wait
        };
        let until_deadline = Duration::try_from(deadline - self.now()).unwrap_or_default();
        Ok(Action::requeue(wait.min(until_deadline.max(Duration::from_millis(1)))))
    }

    /// Observes a failed app's resources and shows what they are (nothing is recorded).
    pub(super) async fn observe_failed(&self, status: &AppStatus) {
        match tokio::time::timeout(OBSERVE_FAILED_LIMIT, self.observe(&status.inventory)).await {
            Ok(Ok(o)) => self.show(&status.name, o),
            Ok(Err(e)) => tracing::debug!(app = status.name, error = format!("{e:#}"), "observing a failed app"),
            Err(_) => tracing::debug!(app = status.name, "observing a failed app did not answer"),
        }
    }

    /// When the rollout of `status` fails unless healthy: as its plan recorded, or (ledgers older
    /// than recorded deadlines) the progress deadline after this process first saw it in flight.
    fn deadline_of(&self, status: &AppStatus, now: OffsetDateTime) -> OffsetDateTime {
        if let Some(at) = status.deadline.as_deref().and_then(keelson_core::ledger::parse_at) {
            return at;
        }
        let mut seen = self.seen_in_flight.lock().unwrap_or_else(|e| e.into_inner());
        *seen.entry(status.name.clone()).or_insert(now) + self.settings.progress_deadline
    }

    /// The rollout of `app` is over: forget how it was polled.
    fn settled(&self, app: &str) {
        self.polls.lock().unwrap_or_else(|e| e.into_inner()).remove(app);
        self.seen_in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(app);
    }

    /// Health and digest of `ids`, through the instances that hold them.
    async fn observe(&self, ids: &[ResourceId]) -> Result<Observed> {
        let mut by_instance: BTreeMap<&str, Vec<ResourceId>> = BTreeMap::new();
        for id in ids {
            by_instance.entry(id.instance.as_str()).or_default().push(id.clone());
        }
        let mut o = Observed {
            resources: Vec::with_capacity(ids.len()),
            ready: 0,
            desired: 0,
            all_healthy: true,
            digest: None,
        };
        for (instance, ids) in by_instance {
            let bound = self.providers.instances.get(instance)?;
            for (id, health) in bound.provider.health(&ids).await {
                let health = match health {
                    Ok(h) => h,
                    Err(e) => {
                        // One resource that cannot be read keeps the app from Healthy, nothing more.
                        tracing::warn!(resource = %id, error = %e, "health check failed");
                        o.all_healthy = false;
                        continue;
                    }
                };
                match &health {
                    Health::Healthy => {}
                    Health::Progressing { ready, desired, .. } => {
                        o.ready += ready;
                        o.desired += desired;
                        o.all_healthy = false;
                    }
                    Health::Degraded { .. } | Health::Missing => o.all_healthy = false,
                }
                o.resources.push(ResourceStatus { id, health });
            }
            if o.digest.is_none() {
                o.digest = bound
                    .provider
                    .observe(&ids)
                    .await
                    .into_iter()
                    .find_map(|(_, o)| o.ok().flatten().and_then(|o| o.digest))
                    .map(Digest::into_string);
            }
        }
        Ok(o)
    }

    /// Shows what was observed in the fleet view (not recorded: the ledger holds transitions).
    fn show(&self, app: &str, o: Observed) {
        let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = fleet.apps.get_mut(app) {
            s.resources = o.resources;
            s.observed_digest = o.digest;
            if let Some(p) = s.progress.as_mut() {
                p.ready = o.ready;
                p.desired = o.desired;
            } else if s.phase == Phase::Progressing {
                s.progress = Some(Progress { step: 1, of: 1, ready: o.ready, desired: o.desired });
            }
        }
    }
}
