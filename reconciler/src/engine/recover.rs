//! Start-up: the fleet folded from the whole ledger, and intents a crash left without an outcome
//! settled by observing the providers (only what is not yet as the intent wanted is redone).

use anyhow::{Context, Result};
use keelson_core::event::{FailReason, Failed, Intent, IntentOp, Outcomes};
use keelson_core::ledger::{RolloutRef, Transition};
use keelson_core::{Apps, Event, Phase};
use keelson_provider_api::{Outcome, ResourceId};

use super::{Ctx, error_class, key, recorded};
use crate::ledger::LedgerEntry;

impl Ctx {
    /// Rebuilds the fleet from the ledger and settles intents a crash left open.
    pub(super) async fn resume(&self) -> Result<()> {
        let mut apps = Apps::new();
        let mut after = 0;
        loop {
            let batch = self.ledger.entries_after(after, 10_000).await?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            keelson_core::fleet::replay(&mut apps, batch).context("folding the audit ledger into the fleet")?;
        }
        if after > 0 {
            self.metrics.ledger_head.set(after);
        }
        let counts = keelson_core::fleet::counts(&apps);
        self.metrics.set_app_counts(counts.iter().map(|(k, v)| (*k, *v)));
        {
            let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
            fleet.apps = apps;
            fleet.head = after;
        }
        let open = self.ledger.open_intents().await?;
        if self.settings.dry_run {
            if !open.is_empty() {
                // Settling would apply or delete; a dry run never does.
                tracing::warn!(
                    intents = open.len(),
                    "dry run: open intents from an interrupted run are left open; run without --dry-run to settle them"
                );
            }
            return Ok(());
        }
        for entry in open {
            let Event::Intent(intent) = entry.event()? else {
                anyhow::bail!("ledger entry {} is listed as an open intent but records a {}", entry.seq, entry.action);
            };
            self.settle_open_intent(&entry, intent).await?;
        }
        Ok(())
    }

    /// An intent without an outcome: the daemon stopped between the two. Observe the provider and
    /// record what really happened.
    async fn settle_open_intent(&self, entry: &LedgerEntry, intent: Intent) -> Result<()> {
        let app = entry.app.clone();
        let delete = matches!(intent.op, IntentOp::Delete { .. });
        tracing::warn!(app, seq = entry.seq, delete, "found an open intent from an interrupted run; settling it");
        let rollout = entry.rollout.unwrap_or(entry.seq);
        let result = self.carry_out_again(&app, rollout, &intent).await;
        let transition = |to| Transition {
            app: &app,
            desired_commit: &entry.desired_commit,
            desired_digest: &entry.desired_digest,
            rollout: Some(RolloutRef::Seq(rollout)),
            from: Phase::Progressing,
            to,
        };
        let instance = intent.instance.clone();
        let (to, event) = match result {
            Ok(outcomes) => {
                let outcomes = Outcomes {
                    intent_seq: entry.seq,
                    instance,
                    step: Some(intent.step),
                    of: Some(intent.of),
                    outcomes: recorded(outcomes),
                    recovered: true,
                };
                if delete {
                    (Phase::Deleted, Event::Deleted(outcomes))
                } else {
                    (Phase::Progressing, Event::Applied(outcomes))
                }
            }
            Err(e) => (
                Phase::Failed,
                Event::Failed(Failed {
                    reason: FailReason::RecoveryFailed,
                    message: format!("{e:#}"),
                    intent_seq: Some(entry.seq),
                    instance: Some(instance),
                    class: Some(error_class(&e)),
                    outcomes: Default::default(),
                    recovered: true,
                }),
            ),
        };
        self.record(transition(to), event).await?;
        Ok(())
    }

    /// Every call of `intent`, each only if its effect is not already there.
    async fn carry_out_again(&self, app: &str, rollout: i64, intent: &Intent) -> Result<Vec<(String, Outcome)>> {
        let mut outcomes = Vec::new();
        let (resources, stale) = match &intent.op {
            IntentOp::Delete { resources } => {
                // Older ledgers did not name the ids: then the inventory the fold kept goes.
                let ids = match resources {
                    Some(ids) => ids.clone(),
                    None => self.status_of(app).map(|s| s.inventory).unwrap_or_default(),
                };
                (Vec::new(), ids)
            }
            IntentOp::Apply { resources, prune } => (resources.clone(), prune.clone()),
        };
        if !resources.is_empty() {
            let bound = self.providers.instances.get(&intent.instance)?;
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
                    bound.provider.apply(r, &key(app, rollout, intent.step, &r.id.to_string())).await?
                };
                outcomes.push((r.id.to_string(), outcome));
            }
        }
        for id in stale {
            let o = self.delete_resource(&id, &key(app, rollout, intent.step, &id.to_string())).await?;
            outcomes.push((id.to_string(), o));
        }
        Ok(outcomes)
    }
}
