//! Turns the files of a state repository into [`DesiredState`], re-parsing only changed blobs.
//!
//! Layout: `apps/<name>/deploy.yaml` (one App), optional `apps/<name>/manifests/**`,
//! `policies/*.yaml` (Policy documents, possibly several per file) and `policies/*.rego`.
//! Everything else is ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use serde::Serialize;

use crate::semantic::{self, RepoPolicy};
use crate::validate::{CheckedFile, check_bytes};
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

/// An entry that differs between two commits: as it was and as it is (`None` where absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// The entry in the older commit.
    pub before: Option<RepoFile>,
    /// The entry in the newer commit.
    pub after: Option<RepoFile>,
}

impl FileChange {
    /// A change from `before` to `after`.
    pub fn new(before: Option<&RepoFile>, after: Option<&RepoFile>) -> Self {
        Self { before: before.cloned(), after: after.cloned() }
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
    /// Valid apps by name (shared with the loader, which keeps the last state it loaded).
    pub apps: BTreeMap<String, Arc<LoadedApp>>,
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

/// Loads a repository again and again, doing only the work the changed paths can affect.
///
/// Each [`Loader::load`] compares the files with the previous load's. A changed blob is parsed
/// and validated once (results are cached by blob id, so a rename or a revert costs nothing);
/// the checks across apps are kept per app and redone only for the apps a change can reach:
/// duplicate names for the names that came or went, `dependsOn` targets for the apps that name
/// an app that came or went, cycles for the apps reachable from a changed one, digests for the
/// changed apps (every app when a Rego module changes, since each digest covers them).
#[derive(Debug, Default)]
pub struct Loader {
    /// Every entry of the repository as of the last load, by path.
    files: BTreeMap<String, RepoFile>,
    /// Parsed files by blob id, with how many interpreted paths hold that blob now.
    cache: HashMap<String, Cached>,
    /// Every `apps/<dir>/` directory.
    dirs: BTreeMap<String, apps::AppDir>,
    /// `metadata.name` → the directories whose App declares it.
    by_name: BTreeMap<String, BTreeSet<String>>,
    /// `dependsOn` target → the directories whose App names it.
    dependents: BTreeMap<String, BTreeSet<String>>,
    /// The members of every dependency cycle.
    cycles: Vec<BTreeSet<String>>,
    /// Directories with an unknown `dependsOn` target (their hints name the closest app).
    unknown: BTreeSet<String>,
    /// Names held because an App in another directory declares them.
    held_names: BTreeSet<String>,
    /// Directories whose deploy.yaml could not be read: read again on the next load.
    unread: BTreeSet<String>,
    /// `policies/*.rego`, which every digest covers.
    rego: Vec<RepoFile>,
    /// Policies and the entries outside app directories.
    top: Top,
    /// The result of the last load.
    desired: DesiredState,
}

#[derive(Debug)]
struct Cached {
    file: Arc<CheckedFile>,
    users: usize,
}

/// What the policies and the entries outside app directories gave.
#[derive(Debug, Default)]
struct Top {
    diagnostics: Vec<Diagnostic>,
    /// Blobs of the policy files read (released when the policies are loaded again).
    blobs: Vec<String>,
    /// A policy file could not be read: load the policies again next time.
    unread: bool,
}

impl Loader {
    /// A loader that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of files whose parse results are cached.
    pub fn cached_files(&self) -> usize {
        self.cache.len()
    }

    /// Loads the repository `files` lists; `read` is called only for blobs not seen before (and
    /// again for one that could not be read).
    pub fn load(
        &mut self,
        files: &[RepoFile],
        read: &mut dyn FnMut(&RepoFile) -> std::io::Result<Vec<u8>>,
    ) -> LoadOutcome {
        let changes = self.update_files(files);
        self.reload(&changes, read)
    }

    /// Loads the repository the last load saw with `changes` applied (as a tree diff from the
    /// commit loaded last gives them), without a listing of every file.
    pub fn load_changes(
        &mut self,
        changes: &[FileChange],
        read: &mut dyn FnMut(&RepoFile) -> std::io::Result<Vec<u8>>,
    ) -> LoadOutcome {
        for change in changes {
            if let Some(before) = &change.before {
                self.files.remove(&before.path);
            }
        }
        for change in changes {
            if let Some(after) = &change.after {
                self.files.insert(after.path.clone(), after.clone());
            }
        }
        self.reload(changes, read)
    }

    /// The entry at `path` as of the last load.
    pub fn file(&self, path: &str) -> Option<&RepoFile> {
        self.files.get(path)
    }

    /// Redoes what `changes` (already applied to the listing) can affect.
    fn reload(
        &mut self,
        changes: &[FileChange],
        read: &mut dyn FnMut(&RepoFile) -> std::io::Result<Vec<u8>>,
    ) -> LoadOutcome {
        let mut touched = std::mem::take(&mut self.unread);
        let mut top_changed = std::mem::take(&mut self.top.unread);
        for change in changes {
            for entry in change.before.iter().chain(&change.after) {
                if let Some(dir) = app_dir_of(entry) {
                    touched.insert(dir.to_string());
                }
                top_changed |= is_top(&entry.path);
            }
        }
        let mut settle = touched.clone();
        if top_changed {
            let rego = policy_rego(&self.files);
            if rego != self.rego {
                // Every digest covers the Rego modules.
                settle.extend(self.dirs.keys().cloned());
            }
            self.rego = rego;
            self.load_top(read);
        }

        // The directories whose own files changed.
        let mut names = BTreeSet::new();
        let mut came_or_went = BTreeSet::new();
        let mut released = Vec::new();
        for dir in &touched {
            let old = self.dirs.remove(dir);
            let new = self.read_dir(dir, read);
            if old.is_some() != new.is_some() {
                came_or_went.insert(dir.clone());
            }
            if let Some(old) = old {
                self.unindex(&old);
                names.extend(old.name.clone());
                released.extend(old.deploy.map(|f| f.blob_id));
            }
            if let Some(new) = new {
                self.index(&new);
                names.extend(new.name.clone());
                self.dirs.insert(dir.clone(), new);
            }
        }
        // Released after every new blob is held, so a renamed directory is not parsed again.
        for blob in released {
            self.release(&blob);
        }

        // The checks across apps, for the apps the change can reach.
        for name in &names {
            self.check_duplicates(name, &mut settle);
        }
        let mut deps = touched.clone();
        for dir in &came_or_went {
            deps.extend(self.dependents.get(dir).into_iter().flatten().cloned());
        }
        if !came_or_went.is_empty() {
            deps.extend(self.unknown.iter().cloned());
        }
        for dir in &deps {
            self.check_dependencies(dir);
        }
        settle.extend(deps);
        self.check_cycles(&touched, &mut settle);

        for dir in &settle {
            self.settle(dir);
        }
        names.extend(came_or_went);
        for name in &names {
            self.settle_held_name(name);
        }
        self.outcome()
    }

    /// Replaces the file listing; returns each changed entry as it was and as it is.
    fn update_files(&mut self, files: &[RepoFile]) -> Vec<FileChange> {
        let mut sorted: Vec<&RepoFile> = files.iter().collect();
        if !sorted.is_sorted_by(|a, b| a.path <= b.path) {
            sorted.sort_by(|a, b| a.path.cmp(&b.path));
        }
        let mut changes = Vec::new();
        let mut old = self.files.values().peekable();
        let mut new = sorted.into_iter().peekable();
        loop {
            match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(o), Some(n)) if o.path == n.path => {
                    if o != n {
                        changes.push(FileChange::new(Some(o), Some(n)));
                    }
                    old.next();
                    new.next();
                }
                (Some(o), Some(n)) if o.path < n.path => {
                    changes.push(FileChange::new(Some(o), None));
                    old.next();
                }
                (Some(o), None) => {
                    changes.push(FileChange::new(Some(o), None));
                    old.next();
                }
                (_, Some(n)) => {
                    changes.push(FileChange::new(None, Some(n)));
                    new.next();
                }
            }
        }
        for change in &changes {
            match change {
                FileChange { after: Some(n), .. } => self.files.insert(n.path.clone(), n.clone()),
                FileChange { before: Some(o), after: None } => self.files.remove(&o.path),
                FileChange { before: None, after: None } => None,
            };
        }
        changes
    }

    /// Policies, and links or submodules outside app directories.
    fn load_top(&mut self, read: &mut dyn FnMut(&RepoFile) -> std::io::Result<Vec<u8>>) {
        let previous = std::mem::take(&mut self.top);
        let mut diagnostics = Vec::new();
        let mut policy_files = Vec::new();
        // `policies-x/…` sorts between `policies` and `policies/…`, hence the two lookups.
        let top_entries = [self.files.get("apps"), self.files.get("policies")].into_iter().flatten().chain(
            self.files
                .range::<str, _>((Bound::Included("policies/"), Bound::Unbounded))
                .take_while(|(path, _)| path.starts_with("policies/"))
                .map(|(_, f)| f),
        );
        for f in top_entries {
            if f.entry != EntryKind::File {
                diagnostics.push(not_regular_error(f, None));
            } else if let ["policies", name] = f.path.split('/').collect::<Vec<_>>().as_slice()
                && (name.ends_with(".yaml") || name.ends_with(".yml"))
            {
                policy_files.push(f.clone());
            }
        }
        let mut checked = Vec::new();
        for f in &policy_files {
            match self.acquire(f, read) {
                Ok(c) => {
                    self.top.blobs.push(f.blob_id.clone());
                    checked.push((f, c));
                }
                Err(e) => {
                    diagnostics.push(*e);
                    self.top.unread = true;
                }
            }
        }
        let mut repo_policies = Vec::new();
        for (f, c) in &checked {
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
        let rego_paths: Vec<&str> = self.files.keys().map(String::as_str).filter(|p| p.ends_with(".rego")).collect();
        let views: Vec<RepoPolicy<'_>> =
            repo_policies.iter().map(|(p, _)| RepoPolicy { file: p.file, doc: p.doc }).collect();
        let policy_diags = semantic::check_policies(&views, &rego_paths);
        let mut policies = Vec::new();
        for (index, (p, doc)) in repo_policies.iter().enumerate() {
            let broken = policy_diags.iter().any(|(i, d)| *i == index && d.is_error());
            if broken || doc.manifest.is_none() {
                continue;
            }
            let name = p.doc.value.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
            policies.push(LoadedPolicy { name, file: p.file.to_string(), document: p.doc.value.clone() });
        }
        diagnostics.extend(policy_diags.into_iter().map(|(_, d)| d));
        self.desired.policies = policies;
        self.top.diagnostics = diagnostics;
        for blob in previous.blobs {
            self.release(&blob);
        }
    }

    /// Every diagnostic, sorted by file and position, and the desired state.
    fn outcome(&self) -> LoadOutcome {
        let mut diagnostics: Vec<Diagnostic> =
            self.top.diagnostics.iter().chain(self.dirs.values().flat_map(|d| d.diagnostics())).cloned().collect();
        diagnostics.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
        diagnostics.dedup();
        LoadOutcome { desired: self.desired.clone(), diagnostics }
    }

    /// The parsed file, from the cache or read and checked now; counts one more user of its blob.
    fn acquire(
        &mut self,
        file: &RepoFile,
        read: &mut dyn FnMut(&RepoFile) -> std::io::Result<Vec<u8>>,
    ) -> Result<Arc<CheckedFile>, Box<Diagnostic>> {
        if let Some(c) = self.cache.get_mut(&file.blob_id) {
            c.users += 1;
            return Ok(Arc::clone(&c.file));
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
        self.cache.insert(file.blob_id.clone(), Cached { file: Arc::clone(&c), users: 1 });
        Ok(c)
    }

    /// One user fewer of the blob; the cache forgets it with its last user, so memory follows
    /// the repository.
    fn release(&mut self, blob: &str) {
        if let Some(c) = self.cache.get_mut(blob) {
            c.users -= 1;
            if c.users == 0 {
                self.cache.remove(blob);
            }
        }
    }
}

/// The app directory an entry belongs to: `apps/<dir>/…` for a regular file; a link or a
/// submodule at `apps/<dir>` itself counts too (it is an error there).
fn app_dir_of(f: &RepoFile) -> Option<&str> {
    let mut parts = f.path.split('/');
    let (Some("apps"), Some(dir)) = (parts.next(), parts.next()) else {
        return None;
    };
    (!dir.is_empty() && (f.entry != EntryKind::File || parts.next().is_some())).then_some(dir)
}

/// Paths whose change can alter the policies or the errors outside app directories.
fn is_top(path: &str) -> bool {
    path == "apps" || semantic::under(path, "policies") || path.ends_with(".rego")
}

/// `policies/*.rego`, in path order.
fn policy_rego(files: &BTreeMap<String, RepoFile>) -> Vec<RepoFile> {
    files
        .range::<str, _>((Bound::Included("policies/"), Bound::Unbounded))
        .take_while(|(path, _)| path.starts_with("policies/"))
        .filter(|(path, f)| f.entry == EntryKind::File && path.ends_with(".rego") && !path[9..].contains('/'))
        .map(|(_, f)| f.clone())
        .collect()
}

/// A link or submodule where Keelson expects a regular file; `dir` is the app it holds.
fn not_regular_error(f: &RepoFile, dir: Option<&str>) -> Diagnostic {
    let what = match dir {
        Some(dir) => format!("the app `{dir}` is held as it runs (never pruned) until it is a regular file"),
        None if f.path.starts_with("policies") => {
            "policies cannot be complete, so every change is held until it is a regular file".into()
        }
        None => "nothing below it is read".into(),
    };
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
    .with_hint("commit the file's content instead of a link to it")
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

mod apps;
#[cfg(test)]
mod tests;
