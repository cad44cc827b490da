//! An in-flight rollout, observed: `Healthy` once every resource is healthy at the desired
//! digest, `Failed` past the progress deadline.

use std::collections::BTreeMap;

use std::time::Duration;

use anyhow::Result;
use keelson_core::event::{FailReason, Failed, Healthy};
use keelson_core::fleet::{Progress, ResourceStatus};
use keelson_core::ledger::{RolloutRef, Transition};
use keelson_core::{AppStatus, Event, Phase};
use keelson_manifest::Digest;
use keelson_provider_api::{Health, ResourceId};

use super::Engine;

impl Engine {
    /// Observes `status`'s app and records what changed.
    pub(super) async fn check_progress(&mut self, status: &AppStatus) -> Result<()> {
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
        let transition = |to| Transition {
            app: &status.name,
            desired_commit: &status.desired_commit,
            desired_digest: &status.desired_digest,
            rollout: status.rollout.map(RolloutRef::Seq),
            from: Phase::Progressing,
            to,
        };
        if all_healthy && current && !ids.is_empty() {
            self.started.remove(&status.name);
            self.backoff.remove(&status.name);
            let event = Event::Healthy(Healthy { observed_digest, resources: ids.len() });
            self.record(transition(Phase::Healthy), event).await?;
        } else if self
            .started
            .get(&status.name)
            .is_some_and(|t| Duration::try_from(self.now() - *t).is_ok_and(|d| d > self.settings.progress_deadline))
        {
            self.started.remove(&status.name);
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
        }
        Ok(())
    }
}
