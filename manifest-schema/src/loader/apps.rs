//! The app directories: each one's own checks, the checks across apps as they concern it (names,
//! `dependsOn`, cycles), and whether its app is loaded or held.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use super::{LoadedApp, Loader, RepoFile, not_regular_error, relocate};
use crate::digest::app_digest;
use crate::semantic::{self, RepoApp, manifests_relative};
use crate::validate::{CheckedFile, Manifest};
use crate::yaml::Position;
use crate::{App, Diagnostic, EntryKind, Kind};

/// One `apps/<dir>/` directory: its entries, its own checks, and the checks across apps as they
/// concern it.
#[derive(Debug, Default)]
pub(super) struct AppDir {
    pub(super) dir: String,
    pub(super) deploy: Option<RepoFile>,
    pub(super) checked: Option<Arc<CheckedFile>>,
    /// The directory holds a link or submodule (never followed).
    pub(super) not_regular: bool,
    /// Its `metadata.name` and `dependsOn`, when deploy.yaml holds an App first.
    pub(super) name: Option<String>,
    pub(super) deps: Vec<String>,
    /// File, layout, link, missing-deploy and manifests-path problems.
    pub(super) own: Vec<Diagnostic>,
    pub(super) duplicate: Option<Diagnostic>,
    pub(super) unknown: Vec<Diagnostic>,
    pub(super) cycle: Vec<Diagnostic>,
    /// The digest's inputs (see [`digest_key`]) and the digest, or why it cannot be computed.
    pub(super) digest: Option<(String, Result<String, Diagnostic>)>,
}

impl AppDir {
    fn deploy_path(&self) -> String {
        format!("apps/{}/deploy.yaml", self.dir)
    }

    /// The App document, when deploy.yaml holds one first.
    fn repo_app<'a>(&'a self, file: &'a str) -> Option<RepoApp<'a>> {
        let doc = self.checked.as_ref()?.documents.first()?;
        (doc.kind == Some(Kind::App)).then_some(RepoApp { dir: &self.dir, file, doc: &doc.document })
    }

    fn is_app(&self) -> bool {
        self.repo_app("").is_some()
    }

    /// Every problem found in the directory, but for the digest's.
    fn checks(&self) -> impl Iterator<Item = &Diagnostic> {
        self.own.iter().chain(&self.duplicate).chain(&self.unknown).chain(&self.cycle)
    }

    pub(super) fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.checks().chain(self.digest.as_ref().and_then(|(_, d)| d.as_ref().err()))
    }
}

impl Loader {
    /// The directory's entries and its own checks; `None` once it holds nothing.
    pub(super) fn read_dir(
        &mut self,
        dir: &str,
        read: &mut dyn FnMut(&RepoFile) -> std::io::Result<Vec<u8>>,
    ) -> Option<AppDir> {
        let mut d = AppDir { dir: dir.to_string(), ..AppDir::default() };
        let prefix = format!("apps/{dir}/");
        let deploy_path = d.deploy_path();
        let mut first: Option<&RepoFile> = None;
        let mut deploy_yml = None;
        let mut not_regular = Vec::new();
        if let Some(f) = self.files.get(&format!("apps/{dir}"))
            && f.entry != EntryKind::File
        {
            not_regular.push(f);
        }
        for (path, f) in self.files.range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded)) {
            if !path.starts_with(&prefix) {
                break;
            }
            if f.entry != EntryKind::File {
                not_regular.push(f);
                continue;
            }
            first.get_or_insert(f);
            if *path == deploy_path {
                d.deploy = Some(f.clone());
            } else if path.strip_prefix(&prefix) == Some("deploy.yml") {
                deploy_yml = Some(f);
            }
        }
        if not_regular.is_empty() && first.is_none() {
            return None;
        }
        d.not_regular = !not_regular.is_empty();
        for f in not_regular {
            d.own.push(not_regular_error(f, Some(dir)));
        }
        if !d.not_regular && d.deploy.is_none() {
            let (at, found) = match (deploy_yml, first) {
                (Some(yml), _) => (yml, " (found deploy.yml; rename it to deploy.yaml)"),
                (None, first) => (first.expect("a directory with no entry was returned above"), ""),
            };
            d.own.push(Diagnostic::error(
                &at.path,
                Position::START,
                "",
                "layout.missing-deploy",
                format!("apps/{dir}/ has no deploy.yaml{found}; the app is held as it is"),
            ));
        }
        if let Some(deploy) = d.deploy.clone() {
            match self.acquire(&deploy, read) {
                Ok(c) => {
                    d.own.extend(relocate(c.all_diagnostics(), &deploy.path));
                    d.own.extend(semantic::check_app_layout(&deploy.path, dir, &c));
                    d.checked = Some(c);
                }
                Err(e) => {
                    d.own.push(*e);
                    self.unread.insert(dir.to_string());
                }
            }
        }
        if let Some(app) = d.repo_app(&deploy_path) {
            let name = app.name().map(str::to_string);
            let deps = app.depends_on().into_iter().map(|(_, dep)| dep.to_string()).collect();
            let missing = semantic::missing_manifests(&app, &self.files);
            d.own.extend(missing);
            d.name = name;
            d.deps = deps;
        }
        Some(d)
    }

    pub(super) fn index(&mut self, d: &AppDir) {
        if let Some(name) = &d.name {
            self.by_name.entry(name.clone()).or_default().insert(d.dir.clone());
        }
        for dep in &d.deps {
            self.dependents.entry(dep.clone()).or_default().insert(d.dir.clone());
        }
    }

    pub(super) fn unindex(&mut self, d: &AppDir) {
        if let Some(name) = &d.name {
            forget(&mut self.by_name, name, &d.dir);
        }
        for dep in &d.deps {
            forget(&mut self.dependents, dep, &d.dir);
        }
        self.unknown.remove(&d.dir);
    }

    /// The first directory (in name order) declaring `name` keeps it; every later one is an error.
    pub(super) fn check_duplicates(&mut self, name: &str, settle: &mut BTreeSet<String>) {
        let dirs: Vec<String> = self.by_name.get(name).into_iter().flatten().cloned().collect();
        let Some(first) = dirs.first() else { return };
        let first_file = format!("apps/{first}/deploy.yaml");
        for (i, dir) in dirs.iter().enumerate() {
            let Some(d) = self.dirs.get(dir) else { continue };
            let file = d.deploy_path();
            let duplicate =
                if i == 0 { None } else { d.repo_app(&file).and_then(|a| semantic::duplicate_name(&a, &first_file)) };
            if let Some(d) = self.dirs.get_mut(dir) {
                d.duplicate = duplicate;
            }
            settle.insert(dir.clone());
        }
    }

    pub(super) fn check_dependencies(&mut self, dir: &str) {
        let Some(d) = self.dirs.get(dir) else { return };
        let file = d.deploy_path();
        let unknown = d.repo_app(&file).map(|a| semantic::unknown_dependencies(&a, &self.dirs)).unwrap_or_default();
        if unknown.is_empty() {
            self.unknown.remove(dir);
        } else {
            self.unknown.insert(dir.to_string());
        }
        if let Some(d) = self.dirs.get_mut(dir) {
            d.unknown = unknown;
        }
    }

    /// A cycle through a changed app contains it, and a cycle a change broke contained it: the
    /// cycles among the apps reachable from the changed ones (and the members of the cycles
    /// they were in) are found again; every other cycle stands.
    pub(super) fn check_cycles(&mut self, touched: &BTreeSet<String>, settle: &mut BTreeSet<String>) {
        let mut start: Vec<String> = touched.iter().cloned().collect();
        for members in &self.cycles {
            if members.iter().any(|m| touched.contains(m)) {
                start.extend(members.iter().cloned());
            }
        }
        let mut reachable = BTreeSet::new();
        while let Some(dir) = start.pop() {
            let Some(d) = self.dirs.get(&dir).filter(|d| d.is_app()) else { continue };
            if reachable.insert(dir) {
                start.extend(d.deps.iter().filter(|dep| !reachable.contains(*dep)).cloned());
            }
        }
        let mut stale = Vec::new();
        self.cycles.retain(|members| {
            let hit = members.iter().any(|m| reachable.contains(m) || touched.contains(m));
            if hit {
                stale.extend(members.iter().cloned());
            }
            !hit
        });
        for dir in stale.iter().chain(&reachable) {
            if let Some(d) = self.dirs.get_mut(dir) {
                d.cycle.clear();
            }
        }
        settle.extend(stale);
        let files: Vec<(String, String)> =
            reachable.iter().filter_map(|dir| self.dirs.get(dir).map(|d| (dir.clone(), d.deploy_path()))).collect();
        let apps: Vec<RepoApp<'_>> =
            files.iter().filter_map(|(dir, file)| self.dirs.get(dir).and_then(|d| d.repo_app(file))).collect();
        let found = semantic::check_cycles(&apps);
        drop(apps);
        for cycle in found {
            for (dir, diagnostic) in cycle.diagnostics {
                if let Some(d) = self.dirs.get_mut(&dir) {
                    d.cycle.push(diagnostic);
                }
            }
            settle.extend(cycle.members.iter().cloned());
            self.cycles.push(cycle.members);
        }
    }

    /// Decides whether the directory's app is loaded or held, from its checks.
    pub(super) fn settle(&mut self, dir: &str) {
        let Some(d) = self.dirs.get_mut(dir) else {
            self.desired.apps.remove(dir);
            self.desired.invalid_apps.remove(dir);
            self.desired.held.remove(dir);
            return;
        };
        let file = d.deploy_path();
        let typed = match d.checked.as_ref().and_then(|c| c.documents.first()).and_then(|doc| doc.manifest.as_ref()) {
            Some(Manifest::App(typed)) if !d.not_regular && !d.checks().any(Diagnostic::is_error) => {
                Some(typed.clone())
            }
            _ => None,
        };
        if let Some(typed) = typed {
            let inputs = digest_inputs(dir, &typed, &self.rego, &self.files);
            let key = digest_key(d.deploy.as_ref().map_or("", |f| f.blob_id.as_str()), &inputs);
            if d.digest.as_ref().is_none_or(|(k, _)| *k != key) {
                let value = &d.checked.as_ref().expect("an App was parsed").documents[0].document.value;
                let digest = app_digest(value, &inputs).map_err(|e| {
                    Diagnostic::error(
                        &file,
                        Position::START,
                        "",
                        "app.digest",
                        format!("cannot compute the app's digest: {e}"),
                    )
                });
                d.digest = Some((key, digest));
            }
            if let Some((_, Ok(digest))) = &d.digest {
                let loaded = LoadedApp { app: *typed, file, digest: digest.clone() };
                if self.desired.apps.get(dir).is_none_or(|known| **known != loaded) {
                    self.desired.apps.insert(dir.to_string(), Arc::new(loaded));
                }
                self.desired.invalid_apps.remove(dir);
                self.desired.held.remove(dir);
                return;
            }
        } else {
            d.digest = None;
        }
        let mut diagnostics: Vec<&Diagnostic> = d.diagnostics().filter(|d| d.is_error()).collect();
        diagnostics.sort_by_key(|d| (&d.file, d.line, d.col));
        let reason = diagnostics.first().map_or_else(|| format!("{file} has errors"), |d| d.to_string());
        self.desired.apps.remove(dir);
        self.desired.invalid_apps.insert(dir.to_string());
        self.desired.held.insert(dir.to_string(), reason);
    }

    /// An app directory renamed without its `metadata.name` (or the reverse): the app the name
    /// refers to is held too, never pruned, until the two agree.
    pub(super) fn settle_held_name(&mut self, name: &str) {
        if self.dirs.contains_key(name) {
            self.held_names.remove(name);
            return;
        }
        let declared_by = self.by_name.get(name).and_then(|dirs| dirs.last()).filter(|_| semantic::is_app_name(name));
        if let Some(dir) = declared_by {
            let reason = format!(
                "apps/{dir}/deploy.yaml declares `{name}` in a directory named `{dir}`; `{name}` is held as it runs \
                 until the name and the directory agree"
            );
            self.held_names.insert(name.to_string());
            self.desired.invalid_apps.insert(name.to_string());
            self.desired.held.insert(name.to_string(), reason);
        } else if self.held_names.remove(name) {
            self.desired.invalid_apps.remove(name);
            self.desired.held.remove(name);
        }
    }
}

/// Takes `dir` out of `index[key]`, and the key with its last directory.
fn forget(index: &mut BTreeMap<String, BTreeSet<String>>, key: &str, dir: &str) {
    if let Some(dirs) = index.get_mut(key) {
        dirs.remove(dir);
        if dirs.is_empty() {
            index.remove(key);
        }
    }
}

/// The files an app's digest covers: everything under its manifests path plus every Rego module.
fn digest_inputs(dir: &str, app: &App, rego: &[RepoFile], files: &BTreeMap<String, RepoFile>) -> Vec<RepoFile> {
    let mut inputs: Vec<RepoFile> = rego.to_vec();
    if let Some(m) = &app.spec.manifests
        && let Ok(rel) = manifests_relative(&m.path)
    {
        let prefix = format!("apps/{dir}/{rel}");
        inputs.extend(semantic::files_under(files, &prefix).cloned());
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
