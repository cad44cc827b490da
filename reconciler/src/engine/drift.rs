//! Drift, level-triggered as in Flux: an app that is where git wants it asks to be looked at again
//! after a jittered `drift.interval` (and every app is enqueued on the `drift.schedule` crontab).
//! Its reconcile renders what git wants, observes the live managed fields and compares them,
//! minus `sync.ignoreDifferences` (per app) and `drift.ignoreDifferences` (per kind). A difference
//! with no new commit is a `Drifted` transition naming the fields, then a self-heal rollout
//! unless `sync.selfHeal: false`.

use std::time::Duration;

use anyhow::Result;
use keelson_core::event::{Drift, DriftedResource, Healthy};
use keelson_core::fleet::ResourceDrift;
use keelson_core::ledger::Transition;
use keelson_core::{AppStatus, Event, Phase};
use keelson_manifest::{CommitId, Digest, LoadedApp};
use keelson_provider_api::{RenderCtx, ResourceId, Variant};

use super::{Ctx, app_self_heals};

/// Longest one drift observation may take.
const OBSERVE_LIMIT: Duration = Duration::from_secs(10);

/// What one look at an app's live resources found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DriftCheck {
    /// Live is what git wants (minus ignored fields).
    InSync,
    /// Something differs; heal it now when true.
    Drifted { heal: bool },
    /// The resources could not be rendered or observed; nothing is said either way.
    Unknown,
}

impl Ctx {
    /// The wait until `app` is observed again for drift: `drift.interval` plus up to a tenth, so a
    /// fleet that converged together is not observed all at once.
    pub(super) fn drift_wait(&self, app: &str) -> Duration {
        super::reconcile::jitter(app, self.settings.drift_interval)
    }

    /// What is live for `app` against what git wants: the differing fields (with values), or
    /// `None` when that cannot be known now (no provider, a render error, an observe error).
    pub(super) async fn live_drift(&self, app: &LoadedApp, status: &AppStatus) -> Option<Vec<ResourceDrift>> {
        let name = app.app.metadata.name.as_str();
        let instance = self.providers.workloads(&app.app.spec.placement.cluster).ok()?;
        let bound = self.providers.instances.get(&instance).ok()?.clone();
        let revision = status.rollout_commit.clone().unwrap_or_else(|| status.desired_commit.clone());
        let ctx = RenderCtx {
            instance: instance.clone(),
            revision: CommitId::new(revision),
            digest: Digest::new(app.digest.clone()),
            variant: Variant::Stable,
            weight: 100,
        };
        let resources = match bound.renderer.render(&app.app, &ctx).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(app = name, error = %e, "drift check: cannot render");
                return None;
            }
        };
        let ids: Vec<ResourceId> = resources.iter().map(|r| r.id.clone()).collect();
        let observed = match tokio::time::timeout(OBSERVE_LIMIT, bound.provider.observe(&ids)).await {
            Ok(o) => o,
            Err(_) => {
                tracing::debug!(app = name, "drift check: observe did not answer");
                return None;
            }
        };
        if let Some((id, Err(e))) = observed.iter().find(|(_, o)| o.is_err()) {
            tracing::debug!(app = name, resource = %id, error = %e, "drift check: cannot observe");
            return None;
        }
        let per_app: Vec<String> = app.app.spec.sync.as_ref().map(|s| s.ignore_differences.clone()).unwrap_or_default();
        let ignored = |id: &ResourceId| {
            let mut all = per_app.clone();
            all.extend(self.settings.ignore_by_kind.get(&id.kind).cloned().unwrap_or_default());
            all
        };
        Some(keelson_core::diff::drift(&resources, &observed, ignored))
    }

    /// Looks at `status`'s app (Healthy or Drifted at the digest git wants): records `Drifted`
    /// when its live resources differ (once per set of differing fields), or `Healthy` again when
    /// a drift that was not healed went away by itself.
    pub(super) async fn check_drift(&self, app: &LoadedApp, status: &AppStatus) -> Result<DriftCheck> {
        let Some(drift) = self.live_drift(app, status).await else { return Ok(DriftCheck::Unknown) };
        let name = status.name.as_str();
        let heal = app_self_heals(&app.app);
        let transition = |to| Transition {
            app: name,
            desired_commit: &status.desired_commit,
            desired_digest: &status.desired_digest,
            rollout: None,
            from: status.phase,
            to,
        };
        if drift.is_empty() {
            if status.phase == Phase::Drifted {
                let event = Event::Healthy(Healthy {
                    observed_digest: status.observed_digest.clone(),
                    resources: status.inventory.len(),
                });
                self.record(transition(Phase::Healthy), event).await?;
            }
            return Ok(DriftCheck::InSync);
        }
        let recorded: Vec<DriftedResource> = drift
            .iter()
            .map(|d| DriftedResource {
                resource: d.resource.clone(),
                fields: d.changes.iter().map(|c| c.pointer.clone()).collect(),
                missing: d.missing,
            })
            .collect();
        let same_as_recorded = status.phase == Phase::Drifted
            && status.drift.len() == recorded.len()
            && status.drift.iter().zip(&recorded).all(|(seen, now)| {
                seen.resource == now.resource
                    && seen.missing == now.missing
                    && seen.changes.iter().map(|c| &c.pointer).eq(now.fields.iter())
            });
        if !same_as_recorded {
            let fields: Vec<String> = recorded
                .iter()
                .flat_map(|r| {
                    if r.missing {
                        vec![format!("{} (missing)", r.resource)]
                    } else {
                        r.fields.iter().map(|f| format!("{}{f}", r.resource)).collect()
                    }
                })
                .collect();
            let next = if heal {
                "healing it with a new rollout of what git wants"
            } else {
                "left as it is (sync.selfHeal is false)"
            };
            let event = Event::Drift(Drift {
                resources: recorded,
                self_heal: heal,
                message: format!("live state differs from git without a new commit: {}; {next}", fields.join(", ")),
            });
            self.record(transition(Phase::Drifted), event).await?;
        }
        // The values are shown (not recorded: a live value may have no canonical form).
        if let Some(s) = self.fleet.write().unwrap_or_else(|e| e.into_inner()).apps.get_mut(name) {
            s.drift = drift;
        }
        Ok(DriftCheck::Drifted { heal })
    }

    /// Shows what differs for a suspended app without recording anything (it is left alone).
    pub(super) async fn show_suspended_drift(&self, app: &LoadedApp, status: &AppStatus) {
        if status.inventory.is_empty() {
            return;
        }
        self.observe_failed(status).await;
        if let Some(drift) = self.live_drift(app, status).await
            && let Some(s) = self.fleet.write().unwrap_or_else(|e| e.into_inner()).apps.get_mut(&status.name)
        {
            s.drift = drift;
        }
    }
}

/// The wait from `now` until `schedule` next fires, if it ever does.
pub(super) fn until_next(schedule: &croner::Cron, now: time::OffsetDateTime) -> Option<Duration> {
    let at = jiff::Timestamp::from_nanosecond(now.unix_timestamp_nanos()).ok()?;
    let zoned = at.to_zoned(jiff::tz::TimeZone::UTC);
    let next = schedule.find_next_occurrence(&zoned, false).ok()?;
    let wait = next.timestamp().duration_since(at);
    Duration::try_from(wait).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_fires_at_its_next_minute_in_utc() {
        let every_five = crate::policy::freeze::parse_cron("*/5 * * * *").unwrap();
        let now = time::macros::datetime!(2026-12-01 12:03:30 UTC);
        assert_eq!(until_next(&every_five, now), Some(Duration::from_secs(90)));
        let on_the_dot = time::macros::datetime!(2026-12-01 12:05 UTC);
        assert_eq!(until_next(&every_five, on_the_dot), Some(Duration::from_secs(300)), "the next one, not now");
    }
}
