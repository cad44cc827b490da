//! Admission before a rollout: the app's cluster must have the provider roles it needs, and
//! policy (rules, Rego, freeze windows, quotas) must allow the change. A held change is recorded
//! once per cause as `Blocked`; the running version is kept.

use std::sync::Arc;

use anyhow::Result;
use keelson_core::event::{Block as BlockEvent, BlockReason};
use keelson_core::ledger::Transition;
use keelson_core::verdict::Block;
use keelson_core::{AppStatus, Event, Phase};
use keelson_manifest::{App, LoadedApp};

use super::{Ctx, Desired, PreviousApps};
use crate::policy::{ChangeCtx, Verdict, VerdictKind, blocked_by};
use crate::source::GitRepo;

impl Ctx {
    /// The verdicts to roll `app` out with, or what holds the change (recorded as such, unless it
    /// already is for the same cause and digest). A freeze closes by itself; anything else waits
    /// for a change.
    pub(super) async fn admit_or_block(
        &self,
        app: &LoadedApp,
        status: Option<&AppStatus>,
        desired: &Desired,
        quota: Vec<Verdict>,
    ) -> Result<Result<Vec<Verdict>, Block>> {
        let commit = desired.commit.as_deref().unwrap_or_default();
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
                self.record_block(app, status, commit, event).await?;
            }
            return Ok(Err(Block::Policy));
        }
        let verdicts = self.admit(app, status, desired, quota).await;
        let Some(block) = blocked_by(&verdicts) else { return Ok(Ok(verdicts)) };
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
            self.record_block(app, status, commit, event).await?;
        }
        Ok(Err(block))
    }

    async fn record_block(
        &self,
        app: &LoadedApp,
        status: Option<&AppStatus>,
        commit: &str,
        event: BlockEvent,
    ) -> Result<()> {
        let transition = Transition {
            app: &app.app.metadata.name,
            desired_commit: commit,
            desired_digest: &app.digest,
            rollout: None,
            from: status.map_or(Phase::Pending, |s| s.phase),
            to: Phase::Blocked,
        };
        self.record(transition, Event::Block(event)).await?;
        Ok(())
    }

    /// Every policy verdict about rolling out `app` now.
    async fn admit(
        &self,
        app: &LoadedApp,
        status: Option<&AppStatus>,
        desired: &Desired,
        quota: Vec<Verdict>,
    ) -> Vec<Verdict> {
        let name = app.app.metadata.name.clone();
        tracing::debug!(app = name, "evaluating policies");
        // Rego may take up to its limit per rule: off the async executor, so the API, the
        // recorder and shutdown keep running meanwhile.
        let (policies, app_owned) = (Arc::clone(&desired.policies), app.clone());
        let commit = desired.commit.clone().unwrap_or_default();
        let freeze_override = desired.freeze_override.clone();
        let rollout_commit = status.and_then(|s| s.rollout_commit.clone());
        let (previous_cache, repo, path) = (self.previous.clone(), self.repo.clone(), self.settings.path.clone());
        let now = self.now();
        let evaluated = tokio::task::spawn_blocking(move || {
            let previous = rollout_commit.and_then(|at| previous_app(&previous_cache, &repo, &path, &name, &at));
            let ctx = ChangeCtx {
                previous: previous.as_deref(),
                commit: &commit,
                now,
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
        verdicts.extend(desired.policy_errors.iter().map(|problem| Verdict {
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

    /// The app `status` names as its last rollout started (read from git once, then cached).
    pub(super) async fn last_rolled_out(&self, status: &AppStatus) -> Option<Arc<App>> {
        let commit = status.rollout_commit.clone()?;
        let (cache, repo, path, name) =
            (self.previous.clone(), self.repo.clone(), self.settings.path.clone(), status.name.clone());
        tokio::task::spawn_blocking(move || previous_app(&cache, &repo, &path, &name, &commit)).await.ok().flatten()
    }
}

/// The app `name` as it was at `commit` (where its last rollout started): the `previous` of the
/// policy input, read from git so a restart gives the same verdicts. `None` when it cannot be read
/// (the commit was garbage-collected after a force push): policy then sees a new app.
fn previous_app(cache: &PreviousApps, repo: &GitRepo, path: &str, name: &str, commit: &str) -> Option<Arc<App>> {
    let key = (name.to_owned(), commit.to_owned());
    if let Some(known) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return known.clone();
    }
    let file =
        if path.is_empty() { format!("apps/{name}/deploy.yaml") } else { format!("{path}/apps/{name}/deploy.yaml") };
    let app = match repo.file_at(commit, &file) {
        Ok(Some(bytes)) => {
            let checked = keelson_manifest::validate::check_bytes(&file, &bytes);
            checked.documents.into_iter().next().and_then(|d| match d.manifest {
                Some(keelson_manifest::Manifest::App(app)) => Some(Arc::new(*app)),
                _ => None,
            })
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(app = name, commit, error = format!("{e:#}"), "cannot read the app as last rolled out");
            None
        }
    };
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() > 4_096 {
        cache.clear();
    }
    cache.insert(key, app.clone());
    app
}
