//! An app that left git: everything its rollouts applied (the inventory the ledger recorded,
//! never a scan of the provider) is deleted, under a recorded plan and intent.

use anyhow::Result;
use keelson_core::event::{ChangeKind, FailReason, Failed, Intent, IntentOp, Op, Outcomes, Plan, PlannedChange};
use keelson_core::ledger::{RolloutRef, Transition};
use keelson_core::{AppStatus, Event, Phase};
use keelson_provider_api::Outcome;

use super::{Ctx, error_class, key, recorded, short};
use crate::crash::{crash_point, point};

impl Ctx {
    /// Enqueues every app the prune guard holds: whether it still holds depends on the whole
    /// commit, which has just changed.
    pub(super) fn enqueue_prune_guarded(&self) {
        let held: Vec<String> = {
            let fleet = self.fleet.read().unwrap_or_else(|e| e.into_inner());
            fleet
                .apps
                .values()
                .filter(|s| {
                    s.phase == Phase::Blocked && s.reason == keelson_core::event::BlockReason::PruneGuard.as_str()
                })
                .map(|s| s.name.clone())
                .collect()
        };
        for app in held {
            self.queue.enqueue(&app);
        }
    }
}

impl Ctx {
    /// Deletes everything `status`'s app applied (nothing when `keep`: its last manifest said
    /// `sync.prune: false`, so the fleet forgets the app and its resources stay); a failed delete
    /// is recorded and returned as an error, so the app is tried again after a backoff. A dry run
    /// records the plan only.
    pub(super) async fn prune(&self, status: &AppStatus, commit: &str, keep: bool) -> Result<()> {
        let name = status.name.clone();
        let instance = status.instance.clone();
        let ids = if keep { Vec::new() } else { status.inventory.clone() };
        let transition = |rollout, from, to| Transition {
            app: &name,
            desired_commit: commit,
            desired_digest: "",
            rollout: Some(rollout),
            from,
            to,
        };
        let plan = Plan {
            instance: instance.clone(),
            op: Op::Delete,
            strategy: None,
            steps: None,
            changes: ids
                .iter()
                .map(|id| PlannedChange {
                    resource: id.to_string(),
                    change: ChangeKind::Delete,
                    fields: Vec::new(),
                    message: None,
                })
                .collect(),
            verdicts: Vec::new(),
            message: if keep {
                format!(
                    "{name} was removed from git at {}; its {} resources are kept (sync.prune: false)",
                    short(commit),
                    status.inventory.len()
                )
            } else {
                format!("{name} was removed from git at {}", short(commit))
            },
            deadline: None,
            retry_of: None,
            dry_run: self.settings.dry_run,
            cause: None,
        };
        let planned =
            self.record(transition(RolloutRef::StartsHere, status.phase, Phase::Planned), Event::Plan(plan)).await?;
        if self.settings.dry_run {
            return Ok(());
        }
        let rollout = planned.seq;
        let intent = Intent {
            key: format!("{name}/{rollout}/1"),
            instance: instance.clone(),
            step: 1,
            of: 1,
            op: IntentOp::Delete { resources: Some(ids.clone()) },
        };
        let intended = self
            .record(transition(RolloutRef::Seq(rollout), Phase::Planned, Phase::Progressing), Event::Intent(intent))
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
        let failed = result.as_ref().err().map(|e| anyhow::anyhow!("pruning {name}: {e:#}"));
        let (to, event) = match result {
            Ok(outcomes) => (
                Phase::Deleted,
                Event::Deleted(Outcomes {
                    intent_seq: intended.seq,
                    instance,
                    step: None,
                    of: None,
                    outcomes: recorded(outcomes),
                    recovered: false,
                }),
            ),
            Err(e) => (
                Phase::Failed,
                Event::Failed(Failed {
                    reason: FailReason::DeleteFailed,
                    message: format!("{e:#}"),
                    intent_seq: Some(intended.seq),
                    instance: Some(instance),
                    class: Some(error_class(&e)),
                    outcomes: Default::default(),
                    recovered: false,
                }),
            ),
        };
        self.record(transition(RolloutRef::Seq(rollout), Phase::Progressing, to), event).await?;
        failed.map_or(Ok(()), Err)
    }
}
