//! Loading a commit: the snapshot of the tracked branch, the desired state (only changed blobs
//! are parsed), the policies of that commit, the warnings a person should see; then exactly the
//! apps the commit changed (and their dependents) are enqueued.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use keelson_manifest::Loader;

use super::{Desired, Engine, now_rfc3339, short};

/// The loader and the commit it loaded last, which the next commit is compared with.
#[derive(Debug, Default)]
pub(super) struct RepoLoader {
    loader: Loader,
    commit: Option<String>,
}

impl Engine {
    /// The tracked ref may have moved: load the new commit (if any) and enqueue what it changed.
    pub(super) async fn on_ref_moved(&mut self) -> Result<()> {
        let ctx = self.ctx.clone();
        let repo = ctx.repo.clone();
        let branch = ctx.settings.branch.clone();
        let current = ctx.desired();
        let Some(head) = tokio::task::spawn_blocking(move || repo.branch_head(&branch)).await?? else {
            tracing::warn!(branch = ctx.settings.branch, "tracked branch does not exist; waiting for a commit");
            let kept = current.commit.as_deref().map_or("nothing has been applied yet".to_owned(), |c| {
                format!("the apps are kept as commit {} left them; nothing is applied or pruned", short(c))
            });
            let warning = format!("the tracked branch `{}` does not exist (deleted?); {kept}", ctx.settings.branch);
            ctx.fleet.write().unwrap_or_else(|e| e.into_inner()).source.warnings = vec![warning];
            return Ok(());
        };
        if current.commit.as_deref() == Some(head.as_str()) {
            return Ok(());
        }
        let started = Instant::now();
        let (snapshot, outcome, policies, policy_diagnostics) = {
            let repo = ctx.repo.clone();
            let loader = self.loader.clone();
            let path = ctx.settings.path.clone();
            let head = head.clone();
            tokio::task::spawn_blocking(move || -> Result<_> {
                let snapshot = repo.commit_info(&head)?;
                let local = repo.local();
                let mut read = |f: &keelson_manifest::RepoFile| crate::source::read_blob(&local, &f.blob_id);
                let mut loaded = loader.lock().unwrap_or_else(|e| e.into_inner());
                let changes = loaded.commit.as_deref().and_then(|base| match repo.changes(base, &head, &path) {
                    Ok(changes) => Some(changes),
                    Err(e) => {
                        // A base gone with a rewritten history, say: the full listing still works.
                        tracing::debug!(base, commit = %head, "listing the whole commit: {e:#}");
                        None
                    }
                });
                let outcome = match changes {
                    Some(changes) => loaded.loader.load_changes(&changes, &mut read),
                    None => {
                        let files = repo.snapshot(&head, &path)?.files;
                        loaded.loader.load(&files, &mut read)
                    }
                };
                loaded.commit = Some(head.clone());
                let (policies, policy_diagnostics) =
                    crate::plan::compile_policies(&outcome.desired, &|path| loaded.loader.file(path).cloned(), &local);
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
        let policy_errors: Vec<String> = outcome
            .diagnostics
            .iter()
            .filter(|d| d.is_error() && d.file.starts_with("policies/"))
            .map(|d| d.to_string())
            .collect();
        for d in &all_diagnostics {
            tracing::warn!(commit = %head, "{d}");
        }
        let mut quotas: HashMap<String, Vec<crate::policy::Verdict>> = HashMap::new();
        for (app, verdict) in policies.quotas(&outcome.desired) {
            quotas.entry(app).or_default().push(verdict);
        }
        let mut dependents: HashMap<String, Vec<String>> = HashMap::new();
        for app in outcome.desired.apps.values() {
            for dep in &app.app.spec.depends_on {
                dependents.entry(dep.clone()).or_default().push(app.app.metadata.name.clone());
            }
        }
        let next = Desired {
            commit: Some(head.clone()),
            state: outcome.desired,
            policies: Arc::new(policies),
            policy_errors,
            freeze_override: crate::source::trailer_values(&snapshot.message, "Keelson-Freeze-Override")
                .into_iter()
                .next(),
            allow_prune: crate::source::trailer_values(&snapshot.message, keelson_core::decide::ALLOW_PRUNE_TRAILER)
                .iter()
                .any(|v| v.eq_ignore_ascii_case("true")),
            dependents,
            quotas,
        };
        let changed = changed_apps(&current, &next);
        tracing::info!(
            commit = %head, summary = snapshot.summary, apps = next.state.apps.len(), errors, changed = %changed,
            elapsed_ms = started.elapsed().as_millis() as u64, "loaded commit"
        );
        ctx.metrics.source_commits.inc();
        ctx.metrics.commit_loaded(&head, snapshot.committed_at);
        ctx.metrics.manifest_errors.set(errors as i64);
        let had_apps = !ctx.fleet.read().unwrap_or_else(|e| e.into_inner()).apps.is_empty();
        let mut warnings = Vec::new();
        if next.is_empty() {
            warnings.push(if had_apps {
                format!(
                    "commit {} has no apps at all (is source.path `{}` right?); the prune guard kept every \
                     running app",
                    short(&head),
                    ctx.settings.path
                )
            } else {
                format!(
                    "commit {} has no apps (no apps/<name>/deploy.yaml under `{}`)",
                    short(&head),
                    ctx.settings.path
                )
            });
            if had_apps {
                tracing::warn!("commit has no apps at all; refusing to prune every app (prune guard)");
            }
        }
        let retry: Vec<String> = snapshot.retry_apps.iter().cloned().collect();
        ctx.retry.lock().unwrap_or_else(|e| e.into_inner()).extend(retry.iter().cloned());
        let next = Arc::new(next);
        ctx.journal.set_dependents(next.dependents.clone());
        *ctx.desired.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
        {
            let mut fleet = ctx.fleet.write().unwrap_or_else(|e| e.into_inner());
            fleet.source.warnings = warnings;
            fleet.source.commit = Some(head);
            fleet.source.diagnostics = diagnostics;
            fleet.source.not_built = not_built;
            fleet.source.last_sync = Some(now_rfc3339());
            fleet.placements = next
                .state
                .apps
                .iter()
                .map(|(name, app)| {
                    let placement = super::state::AppPlacement {
                        team: app.app.metadata.team.clone().unwrap_or_default(),
                        cluster: app.app.spec.placement.cluster.clone(),
                    };
                    (name.clone(), placement)
                })
                .collect();
            fleet.source.ready = true;
        }
        match changed {
            Changed::Everything => ctx.enqueue_everything(),
            Changed::Apps(apps) => {
                for app in apps.iter().chain(&retry) {
                    ctx.queue.enqueue(app);
                    for dependent in next.dependents_of(app) {
                        ctx.queue.enqueue(dependent);
                    }
                }
            }
        }
        // Whether the prune guard still holds depends on the whole commit.
        ctx.enqueue_prune_guarded();
        Ok(())
    }
}

/// What a new commit changed, as far as reconciles go.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Changed {
    /// Policies (or what they see of the commit) changed: every app is looked at again.
    Everything,
    /// Only these apps: their digest changed, they came or went, or how they are held changed.
    Apps(BTreeSet<String>),
}

impl std::fmt::Display for Changed {
    /// For the log: `all`, or how many apps.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Changed::Everything => f.write_str("all"),
            Changed::Apps(apps) => write!(f, "{}", apps.len()),
        }
    }
}

/// The apps whose reconcile `next` may answer differently than `current`.
pub(super) fn changed_apps(current: &Desired, next: &Desired) -> Changed {
    if current.commit.is_none()
        || current.state.policies != next.state.policies
        || current.policy_errors != next.policy_errors
        || current.freeze_override != next.freeze_override
        || current.allow_prune != next.allow_prune
    {
        return Changed::Everything;
    }
    let mut apps = BTreeSet::new();
    let (was, now) = (&current.state, &next.state);
    for (name, app) in &now.apps {
        if was.apps.get(name).is_none_or(|old| old.digest != app.digest) {
            apps.insert(name.clone());
        }
    }
    apps.extend(was.apps.keys().filter(|name| !now.apps.contains_key(*name)).cloned());
    apps.extend(was.invalid_apps.symmetric_difference(&now.invalid_apps).cloned());
    for name in &now.invalid_apps {
        if was.held.get(name) != now.held.get(name) {
            apps.insert(name.clone());
        }
    }
    for (name, verdicts) in &next.quotas {
        if current.quotas.get(name) != Some(verdicts) {
            apps.insert(name.clone());
        }
    }
    apps.extend(current.quotas.keys().filter(|name| !next.quotas.contains_key(*name)).cloned());
    if current.is_empty() != next.is_empty() {
        // The prune guard lifted or engaged: every app of the fleet is looked at.
        return Changed::Everything;
    }
    Changed::Apps(apps)
}
