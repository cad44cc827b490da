//! Plan: what moving the tracked branch from one revision to another would do, app by app, for
//! `keelson plan` and pull-request comments: the typed field diff of each app, the objects its
//! provider's renderer makes of it (no credentials), what policy and freeze windows say, and the
//! risks a reviewer should look at. [`render`] turns a [`RevisionPlan`] into text and Markdown.

pub mod render;

use std::collections::BTreeMap;

use anyhow::Result;
use keelson_core::diff::{FieldChange, field_diff};
use keelson_core::event::ChangeKind as ResourceChangeKind;
use keelson_manifest::{DesiredState, Diagnostic, LoadOutcome, LoadedApp, Loader, RepoFile, Severity};
use keelson_provider_api::{DesiredResource, RenderCtx, Variant};
use serde::Serialize;
use serde_json::Value;

pub use self::render::{render_markdown, render_text};
use crate::policy::{Block, ChangeCtx, PolicySet, Verdict, VerdictKind, blocked_by};
use crate::source::GitRepo;

/// The rendered resources of an app at one revision, or why it cannot be rendered.
async fn render_at(
    renderers: &crate::providers::Renderers,
    app: &LoadedApp,
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
    /// New at head.
    Added,
    /// Its digest changed.
    Changed,
    /// Gone at head: the daemon deletes what it applied.
    Removed,
    /// Its manifest has errors at head: the daemon holds it as it runs (never prunes it).
    Invalid,
}

/// What the plan says about one app, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AppResult {
    /// The manifest has errors: held.
    Invalid,
    /// The provider cannot render it: the rollout would fail.
    CannotRender,
    /// A rule, Rego module or quota denies the change.
    Denied,
    /// Only an open freeze window holds the change; it rolls out when the window closes.
    Frozen,
    /// Removed: its resources are deleted.
    Deletes,
    /// Admitted, with warnings.
    Warned,
    /// Admitted.
    Clean,
}

/// Where an app runs, as its manifest places it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementView {
    /// `spec.placement.cluster`.
    pub cluster: String,
    /// `spot` when the app asks for a node pool (bid capacity), else `on-demand`.
    pub capacity: String,
    /// The node pool's server class, for spot capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_class: Option<String>,
    /// The node pool's highest bid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bid: Option<String>,
}

impl PlacementView {
    fn of(app: &keelson_manifest::App) -> Self {
        let pool = app.spec.placement.node_pool.as_ref();
        PlacementView {
            cluster: app.spec.placement.cluster.clone(),
            capacity: if pool.is_some() { "spot" } else { "on-demand" }.into(),
            server_class: pool.map(|p| p.server_class.clone()),
            max_bid: pool.and_then(|p| p.max_bid.clone()),
        }
    }
}

/// A place in a file of the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// Repository-relative path.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// JSON pointer of the field, where the location is a field.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pointer: String,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A policy verdict with where it points: the rule in its policy, and the fields of the app.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanVerdict {
    /// The verdict as the daemon records it.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The rule (`file:line:col` in the policy or `.rego` module).
    pub rule_at: Location,
    /// The fields of the app the verdict is about (`file:line:col` in the app), where known.
    pub fields_at: Vec<Location>,
}

/// One rendered resource and what the change does to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePlan {
    /// `instance:Kind/namespace/name`.
    pub resource: String,
    /// `create`, `update` or `delete`.
    pub change: ResourceChangeKind,
    /// The managed fields that change.
    pub fields: Vec<FieldChange>,
    /// The whole object as rendered at head (absent for a delete).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    /// The object as rendered at base (absent for a create).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// A resource the app no longer renders but that stays running because `sync.prune` is off.
    pub kept: bool,
}

/// One app of the plan.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppChange {
    /// The app.
    pub app: String,
    /// How it changes.
    pub change: ChangeKind,
    /// What the plan says about it.
    pub result: AppResult,
    /// Its manifest (at head; at base for a removed app).
    pub file: String,
    /// `metadata.team`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Where it runs (at head; at base for a removed app; absent for an invalid one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementView>,
    /// `spec.sync.prune` (at head; at base for a removed app).
    pub prune: bool,
    /// The fields of the manifest that change (every field for an added app).
    pub fields: Vec<FieldChange>,
    /// Policy verdicts other than freeze windows (those are the plan's one [`FreezeNotice`]).
    pub verdicts: Vec<PlanVerdict>,
    /// True when an open freeze window holds this change.
    pub frozen: bool,
    /// The rendered resources this change creates, changes or deletes.
    pub resources: Vec<ResourcePlan>,
    /// Why the app cannot be rendered at head, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub render_error: Option<String>,
    /// The manifest's errors, for an invalid app.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Diagnostic>,
}

impl AppChange {
    /// Resources this change deletes (not those `sync.prune: false` keeps).
    pub fn deletes(&self) -> impl Iterator<Item = &ResourcePlan> {
        self.resources.iter().filter(|r| r.change == ResourceChangeKind::Delete && !r.kept)
    }
}

/// An open freeze window (one notice for the whole plan, however many apps it holds).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FreezeWindowView {
    /// The policy.
    pub policy: String,
    /// `freeze[i]`.
    pub rule: String,
    /// Its reason and when it opened and closes.
    pub message: String,
    /// False when the head commit overrides it (`Keelson-Freeze-Override: <reason>`).
    pub blocking: bool,
    /// Where the window is declared.
    pub rule_at: Location,
}

/// Freeze windows open at the time of the plan and the changes they hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FreezeNotice {
    /// The open windows.
    pub windows: Vec<FreezeWindowView>,
    /// The added and changed apps they hold (removals are not held by freeze windows).
    pub apps: Vec<String>,
}

/// Something a reviewer should look at twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RiskKind {
    /// The GPUs an app holds (replicas × `resources.gpu.count`) change.
    GpuCount,
    /// An app moves between spot and on-demand capacity.
    Capacity,
    /// An app's rollout strategy changes.
    Strategy,
    /// The change deletes resources (removed apps, or stale resources of apps that prune).
    PruneShare,
    /// An open freeze window holds changes of this plan.
    Freeze,
}

/// One risk flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Risk {
    /// What kind.
    pub kind: RiskKind,
    /// The app, for per-app risks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// What changes, for people.
    pub message: String,
}

/// The cost of the change, where a provider reports prices.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CostView {
    /// The provider instance that priced the change; `None`: no price source.
    pub source: Option<String>,
    /// The delta, or why there is none.
    pub message: String,
}

/// Every app counted once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
    pub invalid: usize,
    /// Added or changed apps a rule, Rego module or quota denies.
    pub denied: usize,
    /// Added or changed apps only a freeze window holds.
    pub frozen: usize,
    /// Apps that cannot be rendered at head.
    pub cannot_render: usize,
    /// Resources the change deletes.
    pub deleted_resources: usize,
}

impl Summary {
    /// Apps at base and head together, each once.
    pub fn apps(&self) -> usize {
        self.added + self.changed + self.removed + self.unchanged + self.invalid
    }
}

/// What moving the tracked branch from `base` to `head` would do.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionPlan {
    pub base: String,
    pub head: String,
    pub summary: Summary,
    /// Open freeze windows, once for the whole plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze: Option<FreezeNotice>,
    pub risks: Vec<Risk>,
    pub cost: CostView,
    /// Every app that is not unchanged, by name.
    pub changes: Vec<AppChange>,
    /// Problems at head that belong to no app (policies, the repository layout).
    pub diagnostics: Vec<Diagnostic>,
}

impl RevisionPlan {
    /// True when the change has findings: an invalid app, an error at head, an app that cannot be
    /// rendered, or a change denied by policy or held by a freeze window (every kind of deny).
    pub fn has_findings(&self) -> bool {
        let s = &self.summary;
        s.invalid + s.denied + s.frozen + s.cannot_render > 0 || self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Compiles the policies of a desired state, reading `.rego` modules from the same commit.
pub fn compile_policies(
    desired: &DesiredState,
    file: &dyn Fn(&str) -> Option<RepoFile>,
    repo: &gix::Repository,
) -> (PolicySet, Vec<Diagnostic>) {
    PolicySet::compile(desired, &mut |path| match file(path) {
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

/// One revision, loaded.
struct Revision {
    commit: String,
    outcome: LoadOutcome,
    policies: PolicySet,
    files: Vec<RepoFile>,
    message: String,
}

/// Loads the desired state at `rev` of `repo` (under `path`).
fn load_revision(repo: &GitRepo, rev: &str, path: &str) -> Result<Revision> {
    let commit = repo.resolve(rev)?;
    let snapshot = repo.snapshot(&commit, path)?;
    let local = repo.local();
    let mut outcome = Loader::new().load(&snapshot.files, &mut |f| crate::source::read_blob(&local, &f.blob_id));
    let (policies, diagnostics) =
        compile_policies(&outcome.desired, &|path| snapshot.files.iter().find(|f| f.path == path).cloned(), &local);
    outcome.diagnostics.extend(diagnostics);
    Ok(Revision { commit, outcome, policies, files: snapshot.files, message: snapshot.message })
}

fn to_value(app: &keelson_manifest::App) -> Value {
    serde_json::to_value(app).unwrap_or(Value::Null)
}

fn empty() -> Value {
    Value::Object(Default::default())
}

fn prunes(app: &keelson_manifest::App) -> bool {
    app.spec.sync.as_ref().is_some_and(|s| s.prune == Some(true))
}

/// An app removed from git keeps its resources only when it says `sync.prune: false`.
fn keeps_when_removed(app: &keelson_manifest::App) -> bool {
    app.spec.sync.as_ref().is_some_and(|s| s.prune == Some(false))
}

/// GPUs an app holds: replicas × `resources.gpu.count`.
fn gpus(app: &keelson_manifest::App) -> u64 {
    let per = app.spec.resources.as_ref().and_then(|r| r.gpu.as_ref()).map_or(0, |g| u64::from(g.count));
    per * u64::from(app.spec.replicas)
}

fn strategy(app: &keelson_manifest::App) -> String {
    app.spec
        .strategy
        .as_ref()
        .and_then(|s| serde_json::to_value(s.kind).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "direct".into())
}

/// Where the fields at `pointers` are written in the app's file at head (via its YAML spans).
fn locate_fields(repo: &gix::Repository, files: &[RepoFile], app: &LoadedApp, pointers: &[String]) -> Vec<Location> {
    if pointers.is_empty() {
        return Vec::new();
    }
    let spans = files
        .iter()
        .find(|f| f.path == app.file && f.entry == keelson_manifest::EntryKind::File)
        .and_then(|f| crate::source::read_blob(repo, &f.blob_id).ok())
        .and_then(|bytes| keelson_manifest::yaml::parse(&app.file, &bytes).ok())
        .and_then(|docs| {
            docs.into_iter().find(|d| {
                d.value.pointer("/metadata/name").and_then(Value::as_str) == Some(app.app.metadata.name.as_str())
            })
        })
        .map(|d| d.spans);
    pointers
        .iter()
        .map(|p| {
            let pos = spans.as_ref().map_or(keelson_manifest::yaml::Position::START, |s| s.locate_key(p));
            Location { file: app.file.clone(), line: pos.line, col: pos.col, pointer: p.clone() }
        })
        .collect()
}

fn rule_at(v: &Verdict) -> Location {
    Location { file: v.file.clone(), line: v.line, col: v.col, pointer: String::new() }
}

/// Per-resource plan of two renders; with `prune` off, what the app stops rendering is kept.
fn plan_resources(before: &[DesiredResource], after: &[DesiredResource], prune: bool) -> Vec<ResourcePlan> {
    let mut out = Vec::new();
    for r in after {
        match before.iter().find(|b| b.id == r.id) {
            None => out.push(ResourcePlan {
                resource: r.id.to_string(),
                change: ResourceChangeKind::Create,
                fields: field_diff(&empty(), &r.spec),
                object: Some(r.spec.clone()),
                before: None,
                kept: false,
            }),
            Some(b) => {
                let fields = field_diff(&b.spec, &r.spec);
                if !fields.is_empty() {
                    out.push(ResourcePlan {
                        resource: r.id.to_string(),
                        change: ResourceChangeKind::Update,
                        fields,
                        object: Some(r.spec.clone()),
                        before: Some(b.spec.clone()),
                        kept: false,
                    });
                }
            }
        }
    }
    for b in before.iter().filter(|b| !after.iter().any(|r| r.id == b.id)) {
        out.push(ResourcePlan {
            resource: b.id.to_string(),
            change: ResourceChangeKind::Delete,
            fields: Vec::new(),
            object: None,
            before: Some(b.spec.clone()),
            // A removed app's inventory goes unless it says `sync.prune: false` (`prune` is then
            // false); an app that stays keeps what it stops rendering unless it prunes.
            kept: !prune,
        });
    }
    out
}

/// Plans `base..head` of a repository, rendering each changed app through the renderer of its
/// cluster's workloads provider (no credentials needed); freeze windows are checked at `now`.
pub async fn plan_revisions(
    repo: &GitRepo,
    base: &str,
    head: &str,
    path: &str,
    renderers: &crate::providers::Renderers,
    now: time::OffsetDateTime,
) -> Result<RevisionPlan> {
    let base_rev = load_revision(repo, base, path)?;
    let head_rev = load_revision(repo, head, path)?;
    let local = repo.local();
    let (b, h) = (&base_rev.outcome.desired, &head_rev.outcome.desired);
    let freeze_override =
        crate::source::trailer_values(&head_rev.message, "Keelson-Freeze-Override").into_iter().next();
    let mut summary = Summary::default();
    let mut changes = Vec::new();
    let mut windows: BTreeMap<(String, String), FreezeWindowView> = BTreeMap::new();
    let mut frozen_apps = Vec::new();
    let mut risks = Vec::new();

    for (name, new) in &h.apps {
        let old = b.apps.get(name);
        let kind = match old {
            None => ChangeKind::Added,
            Some(old) if old.digest != new.digest => ChangeKind::Changed,
            Some(_) => {
                summary.unchanged += 1;
                continue;
            }
        };
        let ctx = ChangeCtx {
            previous: old.map(|a| &a.app),
            commit: &head_rev.commit,
            now,
            freeze_override: freeze_override.as_deref(),
        };
        let mut all = head_rev.policies.evaluate(new, &ctx);
        all.extend(head_rev.policies.quotas(h).into_iter().filter(|(a, _)| a == name).map(|(_, v)| v));
        let block = blocked_by(&all);
        let frozen = all.iter().any(|v| v.kind == VerdictKind::Freeze && v.blocking);
        let mut verdicts = Vec::new();
        for v in all {
            if v.kind == VerdictKind::Freeze {
                windows.entry((v.policy.clone(), v.rule.clone())).or_insert_with(|| FreezeWindowView {
                    policy: v.policy.clone(),
                    rule: v.rule.clone(),
                    message: v.message.clone(),
                    blocking: v.blocking,
                    rule_at: rule_at(&v),
                });
                continue;
            }
            let fields_at = locate_fields(&local, &head_rev.files, new, &head_rev.policies.fields_of(&v));
            verdicts.push(PlanVerdict { rule_at: rule_at(&v), fields_at, verdict: v });
        }
        if frozen {
            frozen_apps.push(name.clone());
        }
        let before = match old {
            Some(app) => render_at(renderers, app, &base_rev.commit).await.unwrap_or_default(),
            None => Vec::new(),
        };
        let (resources, render_error) = match render_at(renderers, new, &head_rev.commit).await {
            Ok(after) => (plan_resources(&before, &after, prunes(&new.app)), None),
            Err(e) => (Vec::new(), Some(e)),
        };
        // Against an empty object, so an added app lists each of its fields.
        let fields = field_diff(&old.map_or_else(empty, |o| to_value(&o.app)), &to_value(&new.app));
        let result = match (block, &render_error) {
            (_, Some(_)) => AppResult::CannotRender,
            (Some(Block::Policy), _) => AppResult::Denied,
            (Some(Block::Freeze), _) => AppResult::Frozen,
            (None, _) if !verdicts.is_empty() => AppResult::Warned,
            (None, _) => AppResult::Clean,
        };
        match kind {
            ChangeKind::Added => summary.added += 1,
            _ => summary.changed += 1,
        }
        match result {
            AppResult::CannotRender => summary.cannot_render += 1,
            AppResult::Denied => summary.denied += 1,
            AppResult::Frozen => summary.frozen += 1,
            _ => {}
        }
        risks.extend(app_risks(name, old.map(|o| &o.app), Some(&new.app)));
        changes.push(AppChange {
            app: name.clone(),
            change: kind,
            result,
            file: new.file.clone(),
            team: new.app.metadata.team.clone(),
            placement: Some(PlacementView::of(&new.app)),
            prune: prunes(&new.app),
            fields,
            verdicts,
            frozen,
            resources,
            render_error,
            problems: Vec::new(),
        });
    }
    for (name, old) in &b.apps {
        if h.apps.contains_key(name) || h.invalid_apps.contains(name) {
            continue;
        }
        summary.removed += 1;
        let before = render_at(renderers, old, &base_rev.commit).await;
        let (resources, render_error) = match before {
            Ok(before) => (plan_resources(&before, &[], !keeps_when_removed(&old.app)), None),
            Err(e) => (Vec::new(), Some(format!("cannot render at base to list what is deleted: {e}"))),
        };
        risks.extend(app_risks(name, Some(&old.app), None));
        changes.push(AppChange {
            app: name.clone(),
            change: ChangeKind::Removed,
            result: AppResult::Deletes,
            file: old.file.clone(),
            team: old.app.metadata.team.clone(),
            placement: Some(PlacementView::of(&old.app)),
            prune: prunes(&old.app),
            fields: Vec::new(),
            verdicts: Vec::new(),
            frozen: false,
            resources,
            render_error,
            problems: Vec::new(),
        });
    }
    let mut diagnostics = head_rev.outcome.diagnostics.clone();
    for name in &h.invalid_apps {
        summary.invalid += 1;
        let dir = format!("apps/{name}/");
        let (problems, rest): (Vec<Diagnostic>, Vec<Diagnostic>) =
            diagnostics.into_iter().partition(|d| d.file.starts_with(&dir));
        diagnostics = rest;
        let old = b.apps.get(name);
        changes.push(AppChange {
            app: name.clone(),
            change: ChangeKind::Invalid,
            result: AppResult::Invalid,
            file: problems.first().map_or_else(|| format!("{dir}deploy.yaml"), |d| d.file.clone()),
            team: old.and_then(|o| o.app.metadata.team.clone()),
            placement: old.map(|o| PlacementView::of(&o.app)),
            prune: old.is_some_and(|o| prunes(&o.app)),
            fields: Vec::new(),
            verdicts: Vec::new(),
            frozen: false,
            resources: Vec::new(),
            render_error: None,
            problems,
        });
    }
    changes.sort_by(|a, b| a.app.cmp(&b.app));
    summary.deleted_resources = changes.iter().map(|c| c.deletes().count()).sum();

    if summary.deleted_resources > 0 || summary.removed > 0 {
        let base_apps = b.apps.len().max(1);
        let mut message = format!(
            "removes {} of {} apps ({}%) and deletes {} resource{}",
            summary.removed,
            b.apps.len(),
            summary.removed * 100 / base_apps,
            summary.deleted_resources,
            if summary.deleted_resources == 1 { "" } else { "s" }
        );
        if h.apps.is_empty() && h.invalid_apps.is_empty() {
            message.push_str("; head has no apps at all, so the daemon's prune guard refuses to prune any of them");
        }
        risks.push(Risk { kind: RiskKind::PruneShare, app: None, message });
    }
    let freeze =
        (!windows.is_empty()).then(|| FreezeNotice { windows: windows.into_values().collect(), apps: frozen_apps });
    if let Some(f) = freeze.as_ref().filter(|f| !f.apps.is_empty()) {
        risks.push(Risk {
            kind: RiskKind::Freeze,
            app: None,
            message: format!(
                "a freeze window holds {} change{}",
                f.apps.len(),
                if f.apps.len() == 1 { "" } else { "s" }
            ),
        });
    }
    Ok(RevisionPlan {
        base: base_rev.commit,
        head: head_rev.commit,
        summary,
        freeze,
        risks,
        // No provider contract reports prices yet; the plan says so instead of showing $0.
        cost: CostView { source: None, message: "no price source: no provider of this plan reports prices".into() },
        changes,
        diagnostics,
    })
}

/// Risk flags of one app between base (`old`) and head (`new`).
fn app_risks(name: &str, old: Option<&keelson_manifest::App>, new: Option<&keelson_manifest::App>) -> Vec<Risk> {
    let mut out = Vec::new();
    let risk = |kind, message| Risk { kind, app: Some(name.to_owned()), message };
    let (g0, g1) = (old.map_or(0, gpus), new.map_or(0, gpus));
    if g0 != g1 {
        out.push(risk(RiskKind::GpuCount, format!("GPUs {g0} → {g1} (replicas × resources.gpu.count)")));
    }
    if let (Some(old), Some(new)) = (old, new) {
        let (p0, p1) = (PlacementView::of(old), PlacementView::of(new));
        if p0.capacity != p1.capacity {
            let class = p1.server_class.as_deref().or(p0.server_class.as_deref()).unwrap_or_default();
            out.push(risk(RiskKind::Capacity, format!("{} → {} ({class})", p0.capacity, p1.capacity)));
        }
        let (s0, s1) = (strategy(old), strategy(new));
        if s0 != s1 {
            out.push(risk(RiskKind::Strategy, format!("strategy {s0} → {s1}")));
        }
    }
    out
}

#[cfg(test)]
mod tests;
