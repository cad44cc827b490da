//! Loading a commit: the snapshot of the tracked branch, the desired state (only changed blobs
//! are parsed), the policies of that commit, and the warnings a person should see.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use super::{Engine, now_rfc3339, short};

impl Engine {
    /// The tracked ref may have moved: load the new commit (if any) and reconcile.
    pub(super) async fn on_ref_moved(&mut self) -> Result<()> {
        let repo = self.repo.clone();
        let branch = self.settings.branch.clone();
        let Some(head) = tokio::task::spawn_blocking(move || repo.branch_head(&branch)).await?? else {
            tracing::warn!(branch = self.settings.branch, "tracked branch does not exist; waiting for a commit");
            let kept = self.commit.as_deref().map_or("nothing has been applied yet".to_owned(), |c| {
                format!("the apps are kept as commit {} left them; nothing is applied or pruned", short(c))
            });
            let warning = format!("the tracked branch `{}` does not exist (deleted?); {kept}", self.settings.branch);
            self.fleet.write().unwrap_or_else(|e| e.into_inner()).source.warnings = vec![warning];
            return Ok(());
        };
        if self.commit.as_deref() == Some(head.as_str()) {
            return Ok(());
        }
        let started = Instant::now();
        let (snapshot, outcome, policies, policy_diagnostics) = {
            let repo = self.repo.clone();
            let loader = self.loader.clone();
            let path = self.settings.path.clone();
            let head = head.clone();
            tokio::task::spawn_blocking(move || -> Result<_> {
                let snapshot = repo.snapshot(&head, &path)?;
                let local = repo.local();
                let outcome = {
                    let mut loader = loader.lock().unwrap_or_else(|e| e.into_inner());
                    loader.load(&snapshot.files, &mut |f| crate::source::read_blob(&local, &f.blob_id))
                };
                let (policies, policy_diagnostics) =
                    crate::plan::compile_policies(&outcome.desired, &snapshot.files, &local);
                Ok((snapshot, outcome, policies, policy_diagnostics))
            })
            .await??
        };
        let mut all_diagnostics = outcome.diagnostics.clone();
        all_diagnostics.extend(policy_diagnostics);
        let diagnostics: Vec<String> = all_diagnostics.iter().map(|d| d.to_string()).collect();
        let not_built: Vec<String> = all_diagnostics
            .iter()
            .filter(|d| d.rule == keelson_manifest::not_built::RULE)
            .map(|d| d.to_string())
            .collect();
        let errors = all_diagnostics.iter().filter(|d| d.is_error()).count();
        // A policy file with errors drops out of the desired state; holding every rollout keeps a
        // broken guardrail from silently disappearing.
        self.policy_errors = outcome
            .diagnostics
            .iter()
            .filter(|d| d.is_error() && d.file.starts_with("policies/"))
            .map(|d| d.to_string())
            .collect();
        self.policies = Arc::new(policies);
        self.freeze_override =
            crate::source::trailer_values(&snapshot.message, "Keelson-Freeze-Override").into_iter().next();
        for d in &all_diagnostics {
            tracing::warn!(commit = %head, "{d}");
        }
        tracing::info!(
            commit = %head, summary = snapshot.summary, apps = outcome.desired.apps.len(), errors,
            elapsed_ms = started.elapsed().as_millis() as u64, "loaded commit"
        );
        self.metrics.source_commits.inc();
        self.metrics.manifest_errors.set(errors as i64);
        self.retry.extend(snapshot.retry_apps.iter().cloned());
        self.desired = outcome.desired;
        self.commit = Some(head.clone());
        let had_apps = !self.fleet.read().unwrap_or_else(|e| e.into_inner()).apps.is_empty();
        // The commit is loaded whatever the pass does; a failed pass is retried on the next tick.
        if let Err(e) = self.reconcile(&snapshot).await {
            tracing::error!(commit = %head, error = format!("{e:#}"), "reconcile pass failed; will retry");
        }
        let mut warnings = Vec::new();
        if self.desired.apps.is_empty() && self.desired.invalid_apps.is_empty() {
            warnings.push(if had_apps {
                format!(
                    "commit {} has no apps at all (is source.path `{}` right?); the prune guard kept every \
                     running app",
                    short(&head),
                    self.settings.path
                )
            } else {
                format!(
                    "commit {} has no apps (no apps/<name>/deploy.yaml under `{}`)",
                    short(&head),
                    self.settings.path
                )
            });
        }
        let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
        fleet.source.warnings = warnings;
        fleet.source.commit = Some(head);
        fleet.source.diagnostics = diagnostics;
        fleet.source.not_built = not_built;
        fleet.source.last_sync = Some(now_rfc3339());
        fleet.source.ready = true;
        Ok(())
    }
}
