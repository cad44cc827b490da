//! Admission before a rollout: the app's cluster must have the provider roles it needs, and
//! policy (rules, Rego, freeze windows, quotas) must allow the change. A held change is recorded
//! once per cause as `Blocked`; the running version is kept.

use std::sync::Arc;

use anyhow::Result;
use keelson_core::event::{Block as BlockEvent, BlockReason};
use keelson_core::ledger::Transition;
use keelson_core::verdict::Block;
use keelson_core::{AppStatus, Event, Phase};
use keelson_manifest::LoadedApp;

use super::Engine;
use crate::policy::{ChangeCtx, Verdict, VerdictKind, blocked_by};
use crate::source::Snapshot;

impl Engine {
    /// The verdicts to roll `app` out with, or `None` when the change is held (and recorded as
    /// such, unless it already is for the same cause and digest). A freeze counts as deferred: it
    /// closes by itself.
    pub(super) async fn admit_or_block(
        &mut self,
        app: &LoadedApp,
        status: Option<&AppStatus>,
        snapshot: &Snapshot,
        quota: Vec<Verdict>,
        deferred: &mut usize,
    ) -> Result<Option<Vec<Verdict>>> {
        let already = |reason: BlockReason| {
            status.is_some_and(|s| {
                s.phase == Phase::Blocked && s.reason == reason.as_str() && s.desired_digest == app.digest
            })
        };
        let problems = self.providers.placement_problems(&app.app);
        if !problems.is_empty() {
            if !already(BlockReason::MissingRole) {
                let message = problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; ");
                tracing::warn!(app = app.app.metadata.name, "rollout refused: {message}");
                let event = BlockEvent {
                    reason: BlockReason::MissingRole,
                    message: format!("{message}; the running version is kept"),
                    verdicts: Vec::new(),
                    problems,
                };
                self.record_block(app, status, snapshot, event).await?;
            }
            return Ok(None);
        }
        let verdicts = self.admit(app, snapshot, quota).await;
        let Some(block) = blocked_by(&verdicts) else { return Ok(Some(verdicts)) };
        *deferred += usize::from(block == Block::Freeze);
        let reason = match block {
            Block::Policy => BlockReason::Policy,
            Block::Freeze => BlockReason::Freeze,
        };
        if !already(reason) {
            let blocking: Vec<String> = verdicts
                .iter()
                .filter(|v| v.blocking)
                .map(|v| format!("{}/{}: {}", v.policy, v.rule, v.message))
                .collect();
            tracing::warn!(
                app = app.app.metadata.name,
                reason = reason.as_str(),
                "change held by policy: {}",
                blocking.join("; ")
            );
            let event = BlockEvent {
                reason,
                message: format!("{}; the running version is kept", blocking.join("; ")),
                verdicts,
                problems: Vec::new(),
            };
            self.record_block(app, status, snapshot, event).await?;
        }
        Ok(None)
    }

    async fn record_block(
        &mut self,
        app: &LoadedApp,
        status: Option<&AppStatus>,
        snapshot: &Snapshot,
        event: BlockEvent,
    ) -> Result<()> {
        let transition = Transition {
            app: &app.app.metadata.name,
            desired_commit: &snapshot.commit,
            desired_digest: &app.digest,
            rollout: None,
            from: status.map_or(Phase::Pending, |s| s.phase),
            to: Phase::Blocked,
        };
        self.record(transition, Event::Block(event)).await?;
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
}
