//! Plan: what a change to the state repository would do, as a typed field diff per app
//! (for `keelson plan` and pull-request comments) and per resource (for the ledger).

use std::fmt::Write as _;

use anyhow::Result;
use keelson_core::diff::{FieldChange, ResourceChange, diff_resources, field_diff};
use keelson_core::event::ChangeKind as ResourceChangeKind;
use keelson_manifest::{DesiredState, Diagnostic, LoadOutcome, Loader, RepoFile, Severity};
use keelson_provider_api::{DesiredResource, RenderCtx, Variant};
use serde::Serialize;
use serde_json::Value;

use crate::policy::{ChangeCtx, PolicySet, Verdict, VerdictKind, blocked_by};
use crate::source::GitRepo;

/// The rendered resources of an app at one revision, or why it cannot be rendered.
async fn render_at(
    renderers: &crate::providers::Renderers,
    app: &keelson_manifest::LoadedApp,
    commit: &str,
) -> Result<Vec<DesiredResource>, String> {
    let (instance, renderer) = renderers.for_cluster(&app.app.spec.placement.cluster)?;
    let ctx = RenderCtx {
        instance,
        revision: commit.into(),
        digest: app.digest.as_str().into(),
        variant: Variant::Stable,
        weight: 100,
    };
    renderer.render(&app.app, &ctx).await.map_err(|e| e.to_string())
}

/// How an app differs between two revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Changed,
    Removed,
}

/// One app's change between two revisions.
#[derive(Debug, Clone, Serialize)]
pub struct AppChange {
    pub app: String,
    pub change: ChangeKind,
    pub file: String,
    pub fields: Vec<FieldChange>,
    /// What policy says about this change (empty for removals).
    pub verdicts: Vec<Verdict>,
    /// The rendered resources this change creates, changes or deletes.
    pub resources: Vec<ResourceChange>,
    /// Why the app cannot be rendered at head (the rollout would fail), if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub render_error: Option<String>,
}

/// What moving the tracked branch from `base` to `head` would do.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionPlan {
    pub base: String,
    pub head: String,
    pub changes: Vec<AppChange>,
    pub unchanged: usize,
    pub diagnostics: Vec<Diagnostic>,
}

impl RevisionPlan {
    /// True when `head` has errors, an app cannot be rendered, or policy denies one of its changes
    /// (a freeze alone does not count: the change rolls out once the window closes).
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
            || self.changes.iter().any(|c| c.render_error.is_some())
            || self.changes.iter().any(|c| blocked_by(&c.verdicts) == Some(crate::policy::Block::Policy))
    }
}

/// Compiles the policies of a desired state, reading `.rego` modules from the same commit.
pub fn compile_policies(
    desired: &DesiredState,
    files: &[RepoFile],
    repo: &gix::Repository,
) -> (PolicySet, Vec<Diagnostic>) {
    PolicySet::compile(desired, &mut |path| match files.iter().find(|f| f.path == path) {
        // A link's blob is its target's name: never read as a module (the loader reports it).
        Some(f) if f.entry != keelson_manifest::EntryKind::File => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{path} is a {}, not a regular file", f.entry.describe()),
        )),
        Some(f) => crate::source::read_blob(repo, &f.blob_id),
        None => Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{path} is not in this commit"))),
    })
}

/// Every verdict about `app` (policies, quotas) as it would be admitted now.
pub fn verdicts_for(
    policies: &PolicySet,
    desired: &DesiredState,
    app: &keelson_manifest::LoadedApp,
    previous: Option<&keelson_manifest::App>,
    commit: &str,
) -> Vec<Verdict> {
    let ctx = ChangeCtx { previous, commit, now: time::OffsetDateTime::now_utc(), freeze_override: None };
    let mut verdicts = policies.evaluate(app, &ctx);
    let name = &app.app.metadata.name;
    verdicts.extend(policies.quotas(desired).into_iter().filter(|(a, _)| a == name).map(|(_, v)| v));
    verdicts
}

/// A verdict as a diagnostic on the app's file, for `keelson validate` (a freeze is only a warning there:
/// the file is fine, the timing is not).
pub fn verdict_diagnostic(app_file: &str, v: &Verdict) -> Diagnostic {
    let error = v.blocking && v.kind != VerdictKind::Freeze;
    Diagnostic {
        file: app_file.to_owned(),
        line: 1,
        col: 1,
        pointer: String::new(),
        severity: if error { Severity::Error } else { Severity::Warning },
        rule: format!("policy.{}", v.kind),
        message: format!("{} {}/{}: {}", v.kind, v.policy, v.rule, v.message),
        hint: Some(format!("the rule is at {}:{}:{}", v.file, v.line, v.col)),
    }
}

/// Loads the desired state at `rev` of `repo` (under `path`).
pub fn load_revision(repo: &GitRepo, rev: &str, path: &str) -> Result<(String, LoadOutcome, PolicySet)> {
    let commit = repo.resolve(rev)?;
    let snapshot = repo.snapshot(&commit, path)?;
    let local = repo.local();
    let mut outcome = Loader::new().load(&snapshot.files, &mut |f| crate::source::read_blob(&local, &f.blob_id));
    let (policies, diagnostics) = compile_policies(&outcome.desired, &snapshot.files, &local);
    outcome.diagnostics.extend(diagnostics);
    Ok((commit, outcome, policies))
}

/// Diffs two desired states app by app.
pub fn diff_states(base: &DesiredState, head: &DesiredState) -> (Vec<AppChange>, usize) {
    let mut changes = Vec::new();
    let mut unchanged = 0;
    for (name, new) in &head.apps {
        match base.apps.get(name) {
            None => changes.push(AppChange {
                app: name.clone(),
                change: ChangeKind::Added,
                file: new.file.clone(),
                fields: field_diff(&Value::Null, &to_value(&new.app)),
                verdicts: Vec::new(),
                resources: Vec::new(),
                render_error: None,
            }),
            Some(old) if old.digest != new.digest => changes.push(AppChange {
                app: name.clone(),
                change: ChangeKind::Changed,
                file: new.file.clone(),
                fields: field_diff(&to_value(&old.app), &to_value(&new.app)),
                verdicts: Vec::new(),
                resources: Vec::new(),
                render_error: None,
            }),
            Some(_) => unchanged += 1,
        }
    }
    for (name, old) in &base.apps {
        // An app that is invalid at head is held, not removed.
        if !head.apps.contains_key(name) && !head.invalid_apps.contains(name) {
            changes.push(AppChange {
                app: name.clone(),
                change: ChangeKind::Removed,
                file: old.file.clone(),
                fields: Vec::new(),
                verdicts: Vec::new(),
                resources: Vec::new(),
                render_error: None,
            });
        }
    }
    changes.sort_by(|a, b| a.app.cmp(&b.app));
    (changes, unchanged)
}

fn to_value(app: &keelson_manifest::App) -> Value {
    serde_json::to_value(app).unwrap_or(Value::Null)
}

/// Plans `base..head` of a repository, rendering each changed app through the renderer of its
/// cluster's workloads provider (no credentials needed).
pub async fn plan_revisions(
    repo: &GitRepo,
    base: &str,
    head: &str,
    path: &str,
    renderers: &crate::providers::Renderers,
) -> Result<RevisionPlan> {
    let (base_commit, base_state, _) = load_revision(repo, base, path)?;
    let (head_commit, head_state, policies) = load_revision(repo, head, path)?;
    let (mut changes, unchanged) = diff_states(&base_state.desired, &head_state.desired);
    for change in changes.iter_mut() {
        let old = base_state.desired.apps.get(&change.app);
        let new = head_state.desired.apps.get(&change.app);
        if let Some(app) = new {
            change.verdicts = verdicts_for(&policies, &head_state.desired, app, old.map(|a| &a.app), &head_commit);
        }
        // The base render is what runs now; an app that cannot be rendered at base shows as created.
        let before = match old {
            Some(app) => render_at(renderers, app, &base_commit).await.unwrap_or_default(),
            None => Vec::new(),
        };
        let after = match new {
            Some(app) => match render_at(renderers, app, &head_commit).await {
                Ok(r) => r,
                Err(e) => {
                    change.render_error = Some(e);
                    continue;
                }
            },
            None => Vec::new(),
        };
        change.resources = diff_resources(&before, &after);
    }
    Ok(RevisionPlan { base: base_commit, head: head_commit, changes, unchanged, diagnostics: head_state.diagnostics })
}

fn show(v: &Option<Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

fn symbol(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Added => "+",
        ChangeKind::Changed => "~",
        ChangeKind::Removed => "-",
    }
}

fn resource_symbol(change: ResourceChangeKind) -> &'static str {
    match change {
        ResourceChangeKind::Create => "+",
        ResourceChangeKind::Delete => "-",
        ResourceChangeKind::Update | ResourceChangeKind::Unknown => "~",
    }
}

fn summary(plan: &RevisionPlan) -> String {
    let count = |k| plan.changes.iter().filter(|c| c.change == k).count();
    format!(
        "{} to add, {} to change, {} to remove, {} unchanged",
        count(ChangeKind::Added),
        count(ChangeKind::Changed),
        count(ChangeKind::Removed),
        plan.unchanged
    )
}

/// The plan for a terminal.
pub fn render_text(plan: &RevisionPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Plan {}..{}", &plan.base[..12.min(plan.base.len())], &plan.head[..12.min(plan.head.len())]);
    for c in &plan.changes {
        let _ = writeln!(out, "\n{} {} ({})", symbol(c.change), c.app, c.file);
        for f in &c.fields {
            match c.change {
                ChangeKind::Changed => {
                    let _ = writeln!(out, "    {}: {} → {}", f.pointer, show(&f.old), show(&f.new));
                }
                _ => {
                    let _ = writeln!(out, "    {}: {}", f.pointer, show(&f.new));
                }
            }
        }
        if let Some(e) = &c.render_error {
            let _ = writeln!(out, "    cannot render: {e}");
        }
        for r in &c.resources {
            let _ = writeln!(out, "    {} {}", resource_symbol(r.change), r.resource);
            if r.change == ResourceChangeKind::Update {
                for f in &r.fields {
                    let _ = writeln!(out, "        {}: {} → {}", f.pointer, show(&f.old), show(&f.new));
                }
            }
        }
        for v in &c.verdicts {
            let level = if v.blocking { "DENY" } else { "warn" };
            let _ =
                writeln!(out, "    {level} {} {}/{}: {} ({}:{})", v.kind, v.policy, v.rule, v.message, v.file, v.line);
        }
    }
    if !plan.diagnostics.is_empty() {
        out.push_str("\nProblems at head:\n");
        for d in &plan.diagnostics {
            let _ = writeln!(out, "  {d}");
        }
    }
    let _ = writeln!(out, "\n{}", summary(plan));
    out
}

/// The plan as Markdown for a pull-request comment.
pub fn render_markdown(plan: &RevisionPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Keelson plan `{}`..`{}`\n",
        &plan.base[..12.min(plan.base.len())],
        &plan.head[..12.min(plan.head.len())]
    );
    let _ = writeln!(out, "**{}**\n", summary(plan));
    if !plan.changes.is_empty() {
        out.push_str("| | app | file | fields | resources | policy |\n|---|---|---|---|---|---|\n");
        for c in &plan.changes {
            let policy = match blocked_by(&c.verdicts) {
                Some(block) => format!(":no_entry: {}", block.reason()),
                None if c.verdicts.is_empty() => ":white_check_mark:".to_owned(),
                None => format!(":warning: {} warning(s)", c.verdicts.len()),
            };
            let resources = match &c.render_error {
                Some(_) => ":x: cannot render".to_owned(),
                None => {
                    let n = |k| c.resources.iter().filter(|r| r.change == k).count();
                    format!(
                        "+{} ~{} -{}",
                        n(ResourceChangeKind::Create),
                        n(ResourceChangeKind::Update),
                        n(ResourceChangeKind::Delete)
                    )
                }
            };
            let _ = writeln!(
                out,
                "| {} | `{}` | `{}` | {} | {resources} | {policy} |",
                symbol(c.change),
                c.app,
                c.file,
                c.fields.len()
            );
        }
        let verdicts: Vec<(&str, &Verdict)> =
            plan.changes.iter().flat_map(|c| c.verdicts.iter().map(move |v| (c.app.as_str(), v))).collect();
        if !verdicts.is_empty() {
            out.push_str("\n#### Policy verdicts\n\n| app | verdict | policy / rule | message |\n|---|---|---|---|\n");
            for (app, v) in verdicts {
                let level = if v.blocking { "**deny**" } else { "warn" };
                let _ = writeln!(
                    out,
                    "| `{app}` | {level} | `{}/{}` | {} |",
                    v.policy,
                    v.rule,
                    v.message.replace('|', "\\|")
                );
            }
        }
        for c in plan.changes.iter().filter(|c| c.change == ChangeKind::Changed || !c.resources.is_empty()) {
            let _ = writeln!(out, "\n<details><summary><code>{}</code></summary>\n\n```diff", c.app);
            if c.change == ChangeKind::Changed {
                for f in &c.fields {
                    let _ = writeln!(out, "- {}: {}\n+ {}: {}", f.pointer, show(&f.old), f.pointer, show(&f.new));
                }
            }
            for r in &c.resources {
                let _ = writeln!(out, "{} {}", resource_symbol(r.change), r.resource);
            }
            out.push_str("```\n</details>\n");
        }
        for c in plan.changes.iter().filter_map(|c| c.render_error.as_ref().map(|e| (c, e))) {
            let _ = writeln!(out, "\n:x: `{}` cannot be rendered: {}", c.0.app, c.1.replace('|', "\\|"));
        }
    }
    if !plan.diagnostics.is_empty() {
        out.push_str("\n#### Problems\n\n");
        for d in &plan.diagnostics {
            let _ = writeln!(out, "- `{d}`");
        }
    }
    out
}
