//! Turns the files of a state repository into [`DesiredState`], re-parsing only changed blobs.
//!
//! Layout: `apps/<name>/deploy.yaml` (one App), optional `apps/<name>/manifests/**`,
//! `policies/*.yaml` (Policy documents, possibly several per file) and `policies/*.rego`.
//! Everything else is ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::digest::app_digest;
use crate::semantic::{self, RepoApp, RepoPolicy, manifests_relative};
use crate::validate::{CheckedFile, Manifest, check_bytes};
use crate::yaml::Position;
use crate::{App, Diagnostic, Kind};

/// One file of the repository (relative to the configured `source.path`) and its git blob id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoFile {
    /// Path with `/` separators, relative to the repository (or `source.path`).
    pub path: String,
    /// Git blob id (any string that changes when the content does).
    pub blob_id: String,
    /// What the entry is; only regular files are ever read.
    pub entry: EntryKind,
}

/// What a tree entry is. Sources list every entry (so that nothing vanishes silently), but the
/// loader reads only regular files: a link or a submodule where a manifest is expected is an
/// error at its path, never followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EntryKind {
    /// A regular (or executable) file.
    #[default]
    File,
    /// A symbolic link (git mode 120000).
    Symlink,
    /// A submodule (git mode 160000).
    Submodule,
    /// Anything else a filesystem can hold (a socket, a device, a FIFO).
    Other,
}

impl EntryKind {
    /// How a person would name it.
    pub fn describe(self) -> &'static str {
        match self {
            EntryKind::File => "regular file",
            EntryKind::Symlink => "symbolic link (git mode 120000)",
            EntryKind::Submodule => "submodule (git mode 160000)",
            EntryKind::Other => "special file",
        }
    }
}

impl RepoFile {
    /// A regular file entry.
    pub fn new(path: impl Into<String>, blob_id: impl Into<String>) -> Self {
        Self { path: path.into(), blob_id: blob_id.into(), entry: EntryKind::File }
    }

    /// An entry of another kind (link, submodule, …).
    pub fn other(path: impl Into<String>, blob_id: impl Into<String>, entry: EntryKind) -> Self {
        Self { path: path.into(), blob_id: blob_id.into(), entry }
    }
}

/// An app that passed validation, with where it came from and its content digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadedApp {
    /// The typed app.
    pub app: App,
    /// Path of its deploy.yaml.
    pub file: String,
    /// `sha256:<hex>` over the app's canonical JSON and the blob ids it depends on.
    pub digest: String,
}

/// A policy document (evaluated by the policy engine).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadedPolicy {
    /// `metadata.name`.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// The document as JSON; [`LoadedPolicy::policy`] gives it typed.
    pub document: serde_json::Value,
}

impl LoadedPolicy {
    /// The typed policy. Loaded policies passed the schema, so this fails only on a bug.
    pub fn policy(&self) -> Result<crate::Policy, serde_json::Error> {
        serde_json::from_value(self.document.clone())
    }
}

/// What git says the fleet should be.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DesiredState {
    /// Valid apps by name.
    pub apps: BTreeMap<String, LoadedApp>,
    /// Valid policy documents, in file order.
    pub policies: Vec<LoadedPolicy>,
    /// Apps whose directory exists but whose manifest has errors: they are held as they are, never pruned.
    pub invalid_apps: BTreeSet<String>,
    /// Why each invalid app is held (its first error, as `file:line:col: error: message`).
    pub held: BTreeMap<String, String>,
}

/// The desired state plus every problem found on the way.
#[derive(Debug, Clone, Default)]
pub struct LoadOutcome {
    /// What to converge to.
    pub desired: DesiredState,
    /// Every problem, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadOutcome {
    /// True when any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Loads repositories, caching parsed files by blob id between calls.
#[derive(Debug, Default)]
pub struct Loader {
    /// Parse + validation results by blob id. Only path-independent work is cached; checks that
    /// depend on a file's path or on other files are redone on every load (they are cheap).
    cache: HashMap<String, Arc<CheckedFile>>,
    /// App digests by their inputs (see [`digest_key`]), as of the last load.
    digests: HashMap<String, String>,
}

/// Files of the repository sorted into the roles the layout gives them.
#[derive(Default)]
struct Layout<'a> {
    /// `apps/<dir>/deploy.yaml` by dir.
    deploys: BTreeMap<&'a str, &'a RepoFile>,
    /// Every `apps/<dir>/…` directory with the first file seen in it.
    app_dirs: BTreeMap<&'a str, &'a RepoFile>,
    /// `policies/*.yaml`.
    policies: Vec<&'a RepoFile>,
    /// `policies/*.rego`.
    rego: Vec<&'a RepoFile>,
    /// Every file, sorted by path (for prefix lookups).
    sorted: Vec<&'a RepoFile>,
    /// Entries under `apps/` or `policies/` that are not regular files, with the app directory
    /// they belong to (if any).
    not_regular: Vec<(&'a RepoFile, Option<&'a str>)>,
}

impl<'a> Layout<'a> {
    fn of(files: &'a [RepoFile]) -> Self {
        let mut layout = Layout::default();
        for f in files {
            let parts: Vec<&str> = f.path.split('/').collect();
            if f.entry != EntryKind::File {
                match parts.as_slice() {
                    ["apps", dir, ..] if !dir.is_empty() => {
                        layout.app_dirs.entry(dir).or_insert(f);
                        layout.not_regular.push((f, Some(dir)));
                    }
                    ["apps" | "policies", ..] => layout.not_regular.push((f, None)),
                    _ => {}
                }
                continue;
            }
            match parts.as_slice() {
                ["apps", dir, rest @ ..] if !rest.is_empty() && !dir.is_empty() => {
                    layout.app_dirs.entry(dir).or_insert(f);
                    if rest == ["deploy.yaml"] {
                        layout.deploys.insert(dir, f);
                    }
                }
                ["policies", name] if name.ends_with(".yaml") || name.ends_with(".yml") => {
                    layout.policies.push(f);
                }
                ["policies", name] if name.ends_with(".rego") => layout.rego.push(f),
                _ => {}
            }
        }
        layout.policies.sort_by(|a, b| a.path.cmp(&b.path));
        layout.rego.sort_by(|a, b| a.path.cmp(&b.path));
        layout.sorted = files.iter().filter(|f| f.entry == EntryKind::File).collect();
        if !layout.sorted.is_sorted_by(|a, b| a.path <= b.path) {
            layout.sorted.sort_by(|a, b| a.path.cmp(&b.path));
        }
        layout
    }
}

impl Loader {
    /// A loader with an empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of files whose parse results are cached.
    pub fn cached_files(&self) -> usize {
        self.cache.len()
    }

    /// Loads the whole repository; `read` is called only for blobs not seen before.
    pub fn load(
        &mut self,
        files: &[RepoFile],
        read: &mut dyn FnMut(&RepoFile) -> std::io::Result<Vec<u8>>,
    ) -> LoadOutcome {
        let layout = Layout::of(files);
        let mut diagnostics = Vec::new();
        let mut desired = DesiredState::default();

        // Parse (or recall) every file we interpret.
        let mut checked: BTreeMap<&str, Arc<CheckedFile>> = BTreeMap::new();
        for f in layout.deploys.values().chain(layout.policies.iter()) {
            match self.checked(f, read) {
                Ok(c) => {
                    checked.insert(f.path.as_str(), c);
                }
                Err(d) => diagnostics.push(*d),
            }
        }
        // Keep the cache to what the repository holds now, so memory follows the repository.
        let live: BTreeSet<&str> = files.iter().map(|f| f.blob_id.as_str()).collect();
        self.cache.retain(|blob, _| live.contains(blob.as_str()));

        // Links and submodules are never followed: an error at their path, and their app is held.
        for (f, dir) in &layout.not_regular {
            let what = match dir {
                Some(dir) => format!("the app `{dir}` is held as it runs (never pruned) until it is a regular file"),
                None if f.path.starts_with("policies") => {
                    "policies cannot be complete, so every change is held until it is a regular file".into()
                }
                None => "nothing below it is read".into(),
            };
            diagnostics.push(
                Diagnostic::error(
                    &f.path,
                    Position::START,
                    "",
                    "layout.not-a-file",
                    format!(
                        "{} is a {} where Keelson expects a regular file; links and submodules are never followed, so {what}",
                        f.path,
                        f.entry.describe()
                    ),
                )
                .with_hint("commit the file's content instead of a link to it"),
            );
            if let Some(dir) = dir {
                desired.invalid_apps.insert(dir.to_string());
            }
        }

        // Apps.
        for (dir, any_file) in &layout.app_dirs {
            if layout.not_regular.iter().any(|(_, d)| d == &Some(*dir)) {
                continue;
            }
            if !layout.deploys.contains_key(dir) {
                let found = if any_file.path.ends_with("/deploy.yml") {
                    " (found deploy.yml; rename it to deploy.yaml)"
                } else {
                    ""
                };
                diagnostics.push(Diagnostic::error(
                    &any_file.path,
                    Position::START,
                    "",
                    "layout.missing-deploy",
                    format!("apps/{dir}/ has no deploy.yaml{found}; the app is held as it is"),
                ));
                desired.invalid_apps.insert(dir.to_string());
            }
        }
        let mut repo_apps = Vec::new();
        let mut digests = HashMap::with_capacity(layout.deploys.len());
        for (dir, f) in &layout.deploys {
            let Some(c) = checked.get(f.path.as_str()) else {
                desired.invalid_apps.insert(dir.to_string());
                continue;
            };
            let mut file_diags = relocate(c.all_diagnostics(), &f.path);
            file_diags.extend(semantic::check_app_layout(&f.path, dir, c));
            if file_diags.iter().any(Diagnostic::is_error) {
                desired.invalid_apps.insert(dir.to_string());
            }
            diagnostics.extend(file_diags);
            if let Some(doc) = c.documents.first()
                && doc.kind == Some(Kind::App)
            {
                // An app directory renamed without its `metadata.name` (or the reverse): the
                // app the name refers to is held too, never pruned, until the two agree.
                if let Some(name) = doc.document.value.pointer("/metadata/name").and_then(|v| v.as_str())
                    && name != *dir
                    && !layout.app_dirs.contains_key(name)
                    && crate::semantic::is_app_name(name)
                {
                    desired.invalid_apps.insert(name.to_string());
                    desired.held.insert(
                        name.to_string(),
                        format!(
                            "{} declares `{name}` in a directory named `{dir}`; `{name}` is held as it runs until \
                             the name and the directory agree",
                            f.path
                        ),
                    );
                }
                repo_apps.push(RepoApp { dir, file: &f.path, doc: &doc.document });
            }
        }
        let known: BTreeSet<String> = layout.app_dirs.keys().map(|d| d.to_string()).collect();
        let (repo_diags, repo_invalid) = semantic::check_apps(&repo_apps, &known, &layout.sorted);
        diagnostics.extend(repo_diags);
        desired.invalid_apps.extend(repo_invalid);

        for app in &repo_apps {
            if desired.invalid_apps.contains(app.dir) {
                continue;
            }
            let Some(Manifest::App(typed)) =
                checked.get(app.file).and_then(|c| c.documents.first()).and_then(|d| d.manifest.clone())
            else {
                desired.invalid_apps.insert(app.dir.to_string());
                continue;
            };
            let deploy_blob = layout.deploys.get(app.dir).map_or("", |f| f.blob_id.as_str());
            let inputs = digest_inputs(app.dir, &typed, &layout);
            let key = digest_key(deploy_blob, &inputs);
            let digest = match self.digests.get(&key) {
                Some(known) => Ok(known.clone()),
                None => app_digest(&app.doc.value, &inputs),
            };
            match digest {
                Ok(digest) => {
                    digests.insert(key, digest.clone());
                    desired
                        .apps
                        .insert(app.dir.to_string(), LoadedApp { app: *typed, file: app.file.to_string(), digest });
                }
                Err(e) => {
                    diagnostics.push(Diagnostic::error(
                        app.file,
                        Position::START,
                        "",
                        "app.digest",
                        format!("cannot compute the app's digest: {e}"),
                    ));
                    desired.invalid_apps.insert(app.dir.to_string());
                }
            }
        }

        self.digests = digests;

        // Policies.
        let mut repo_policies = Vec::new();
        for f in &layout.policies {
            let Some(c) = checked.get(f.path.as_str()) else {
                continue;
            };
            diagnostics.extend(relocate(c.all_diagnostics(), &f.path));
            for doc in &c.documents {
                match doc.kind {
                    Some(Kind::Policy) => repo_policies.push((RepoPolicy { file: &f.path, doc: &doc.document }, doc)),
                    Some(other) => diagnostics.push(Diagnostic::error(
                        &f.path,
                        doc.document.spans.locate_value("/kind"),
                        "/kind",
                        "layout.kind",
                        format!("files under policies/ hold Policy documents, found a {other}"),
                    )),
                    None => {}
                }
            }
        }
        let views: Vec<RepoPolicy<'_>> =
            repo_policies.iter().map(|(p, _)| RepoPolicy { file: p.file, doc: p.doc }).collect();
        let policy_diags = semantic::check_policies(&views, files);
        for (index, (p, doc)) in repo_policies.iter().enumerate() {
            let broken = policy_diags.iter().any(|(i, d)| *i == index && d.is_error());
            if broken || doc.manifest.is_none() {
                continue;
            }
            let name = p.doc.value.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
            desired.policies.push(LoadedPolicy { name, file: p.file.to_string(), document: p.doc.value.clone() });
        }
        diagnostics.extend(policy_diags.into_iter().map(|(_, d)| d));

        diagnostics.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
        diagnostics.dedup();
        for name in &desired.invalid_apps {
            if desired.held.contains_key(name) {
                continue;
            }
            let prefix = format!("apps/{name}");
            let first = diagnostics.iter().find(|d| d.is_error() && crate::semantic::under(&d.file, &prefix));
            let reason = match first {
                Some(d) => d.to_string(),
                None => format!("{prefix}/deploy.yaml has errors"),
            };
            desired.held.insert(name.clone(), reason);
        }
        LoadOutcome { desired, diagnostics }
    }

    fn checked(
        &mut self,
        file: &RepoFile,
        read: &mut dyn FnMut(&RepoFile) -> std::io::Result<Vec<u8>>,
    ) -> Result<Arc<CheckedFile>, Box<Diagnostic>> {
        if let Some(c) = self.cache.get(&file.blob_id) {
            return Ok(Arc::clone(c));
        }
        let bytes = read(file).map_err(|e| {
            Box::new(Diagnostic::error(
                &file.path,
                Position::START,
                "",
                "io.read",
                format!("cannot read blob {}: {e}", file.blob_id),
            ))
        })?;
        let c = Arc::new(check_bytes(&file.path, &bytes));
        self.cache.insert(file.blob_id.clone(), Arc::clone(&c));
        Ok(c)
    }
}

/// Cached diagnostics carry the path the blob had when first parsed; the same blob may now sit
/// at another path.
fn relocate(mut diagnostics: Vec<Diagnostic>, path: &str) -> Vec<Diagnostic> {
    for d in &mut diagnostics {
        if d.file != path {
            d.file = path.to_string();
        }
    }
    diagnostics
}

/// The files an app's digest covers: everything under its manifests path plus every Rego module.
fn digest_inputs(dir: &str, app: &App, layout: &Layout<'_>) -> Vec<RepoFile> {
    let mut inputs: Vec<RepoFile> = layout.rego.iter().map(|f| (*f).clone()).collect();
    if let Some(m) = &app.spec.manifests
        && let Ok(rel) = manifests_relative(&m.path)
    {
        let prefix = format!("apps/{dir}/{rel}");
        inputs.extend(semantic::files_under(&layout.sorted, &prefix).cloned());
    }
    inputs
}

/// What an app's digest is a function of: the deploy.yaml blob (its canonical value follows from
/// the bytes) and the path and blob of every other input.
fn digest_key(deploy_blob: &str, inputs: &[RepoFile]) -> String {
    let mut key = String::with_capacity(41 + inputs.len() * 64);
    key.push_str(deploy_blob);
    for f in inputs {
        key.push('\n');
        key.push_str(&f.path);
        key.push('\0');
        key.push_str(&f.blob_id);
    }
    key
}

#[cfg(test)]
mod tests;
