//! Checks a JSON Schema cannot express: quantities and durations that must parse, canary steps,
//! the repository layout, app names, `dependsOn` targets and cycles, and paths that must exist.
//!
//! Per-document checks read the raw JSON value (not the typed struct) so they still run when the
//! schema found problems elsewhere in the same file; a node of the wrong type is left to the
//! schema's diagnostic.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde_json::Value;

use crate::schema::Kind;
use crate::suggest::closest;
use crate::units::{check_cron, parse_cpu_millis, parse_duration, parse_memory_bytes};
use crate::validate::CheckedFile;
use crate::yaml::{Document, Position};
use crate::{Diagnostic, EntryKind, RepoFile};

struct Checker<'a> {
    file: &'a str,
    doc: &'a Document,
    out: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    fn new(file: &'a str, doc: &'a Document) -> Self {
        Self { file, doc, out: Vec::new() }
    }

    fn get(&self, pointer: &str) -> Option<&'a Value> {
        self.doc.value.pointer(pointer)
    }

    fn error(&mut self, pointer: &str, rule: &str, message: String) -> &mut Diagnostic {
        let pos = self.doc.spans.locate_value(pointer);
        self.out.push(Diagnostic::error(self.file, pos, pointer, rule, message));
        self.out.last_mut().expect("just pushed")
    }

    fn warning(&mut self, pointer: &str, rule: &str, message: String) {
        let pos = self.doc.spans.locate_value(pointer);
        self.out.push(Diagnostic::warning(self.file, pos, pointer, rule, message));
    }

    fn duration(&mut self, pointer: &str, rule: &str) {
        if let Some(Value::String(s)) = self.get(pointer)
            && let Err(e) = parse_duration(s)
        {
            self.error(pointer, rule, e);
        }
    }
}

/// Text of a value the schema allows as string or number (`cpu: 2`, `cpu: "500m"`).
fn quantity_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Checks of one App document that need no other file.
pub(crate) fn check_app_document(file: &str, doc: &Document) -> Vec<Diagnostic> {
    let mut c = Checker::new(file, doc);
    if let Some(text) = c.get("/spec/resources/cpu").and_then(quantity_text)
        && let Err(e) = parse_cpu_millis(&text)
    {
        c.error("/spec/resources/cpu", "app.cpu", e);
    }
    if let Some(text) = c.get("/spec/resources/memory").and_then(quantity_text)
        && let Err(e) = parse_memory_bytes(&text)
    {
        c.error("/spec/resources/memory", "app.memory", e);
    }
    check_steps(&mut c);
    c.duration("/spec/strategy/interval", "app.duration");
    for probe in ["readiness", "liveness"] {
        for field in ["initialDelay", "period", "timeout"] {
            c.duration(&format!("/spec/health/{probe}/{field}"), "app.duration");
        }
    }
    if let Some(Value::Array(gates)) = c.get("/spec/strategy/gates") {
        for (i, gate) in gates.iter().enumerate() {
            if let (Some(min), Some(max)) =
                (gate.get("min").and_then(Value::as_f64), gate.get("max").and_then(Value::as_f64))
                && min > max
            {
                c.error(
                    &format!("/spec/strategy/gates/{i}/max"),
                    "app.gate",
                    format!("gates[{i}]: `max` ({max}) is below `min` ({min}); no value can pass"),
                );
            }
        }
    }
    if let Some(Value::String(image)) = c.get("/spec/image") {
        check_image(&mut c, image);
    }
    if let Some(Value::Array(env)) = c.get("/spec/env") {
        let mut seen = BTreeSet::new();
        for (i, var) in env.iter().enumerate() {
            if let Some(name) = var.get("name").and_then(Value::as_str)
                && !seen.insert(name)
            {
                c.error(
                    &format!("/spec/env/{i}/name"),
                    "app.env-duplicate",
                    format!("env[{i}]: `{name}` is set twice"),
                );
            }
        }
    }
    if let Some(Value::String(path)) = c.get("/spec/manifests/path")
        && let Err(e) = manifests_relative(path)
    {
        c.error("/spec/manifests/path", "app.manifests-path", e);
    }
    c.out
}

fn check_steps(c: &mut Checker<'_>) {
    let Some(Value::Array(steps)) = c.get("/spec/strategy/steps") else {
        return;
    };
    // An unknown type is the schema's to report; only a known other type makes steps pointless.
    let other_type = match c.get("/spec/strategy/type") {
        None => true,
        Some(Value::String(t)) => ["direct", "rolling", "blueGreen"].contains(&t.as_str()),
        Some(_) => false,
    };
    if other_type {
        c.warning(
            "/spec/strategy/steps",
            "app.steps-unused",
            "steps only apply to `type: canary`; they are ignored".into(),
        );
    }
    let mut previous: Option<i64> = None;
    let mut last: Option<(usize, i64)> = None;
    let mut broken = false;
    for (i, step) in steps.iter().enumerate() {
        let Some(v) = step.as_i64() else {
            return;
        };
        let pointer = format!("/spec/strategy/steps/{i}");
        if !(1..=100).contains(&v) {
            broken = true;
            c.error(&pointer, "app.steps", format!("steps[{i}]: {v} is not a traffic percentage from 1 to 100"));
        } else if let Some(p) = previous
            && v <= p
        {
            broken = true;
            c.error(&pointer, "app.steps", format!("steps[{i}]: {v} does not increase on the step before it ({p})"));
        }
        previous = Some(v);
        last = Some((i, v));
    }
    if let Some((i, v)) = last
        && v != 100
        && !broken
    {
        c.error(
            &format!("/spec/strategy/steps/{i}"),
            "app.steps",
            format!("steps[{i}]: the last step must be 100 (all traffic on the new version), got {v}"),
        )
        .hint = Some(format!("append 100: [{}, 100]", join_steps(steps)));
    }
}

fn join_steps(steps: &[Value]) -> String {
    steps.iter().map(Value::to_string).collect::<Vec<_>>().join(", ")
}

fn check_image(c: &mut Checker<'_>, image: &str) {
    if image.contains("@sha256:") {
        return;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => c.warning(
            "/spec/image",
            "app.image-unpinned",
            format!("`{image}` has neither a tag nor a digest, so what runs can change without a commit"),
        ),
        Some((_, "latest")) => c.warning(
            "/spec/image",
            "app.image-unpinned",
            format!("`{image}` uses the moving `latest` tag; pin a version or a digest"),
        ),
        Some(_) => {}
    }
}

/// The manifests folder relative to the app directory, normalised; an error for paths that
/// could escape it.
pub(crate) fn manifests_relative(path: &str) -> Result<String, String> {
    if path.starts_with('/') || path.starts_with('\\') {
        return Err(format!("manifests path `{path}` must be relative to the app's directory"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(format!("manifests path `{path}` must stay inside the app's directory (no `..`)"));
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(format!(
            "manifests path `{path}` must name a folder inside the app's directory, not the directory itself"
        ));
    }
    Ok(parts.join("/"))
}

/// Checks of one Policy document that need no other file.
pub(crate) fn check_policy_document(file: &str, doc: &Document) -> Vec<Diagnostic> {
    let mut c = Checker::new(file, doc);
    if let Some(Value::Array(windows)) = c.get("/spec/freeze") {
        for (i, w) in windows.iter().enumerate() {
            if let Some(Value::String(cron)) = w.get("cron")
                && let Err(e) = check_cron(cron)
            {
                c.error(&format!("/spec/freeze/{i}/cron"), "policy.cron", e);
            }
            c.duration(&format!("/spec/freeze/{i}/duration"), "policy.duration");
        }
    }
    if let Some(Value::Array(rules)) = c.get("/spec/rules") {
        let mut seen = BTreeSet::new();
        for (i, rule) in rules.iter().enumerate() {
            if let Some(name) = rule.get("name").and_then(Value::as_str)
                && !seen.insert(name)
            {
                c.error(
                    &format!("/spec/rules/{i}/name"),
                    "policy.duplicate-rule",
                    format!("rules[{i}]: a rule named `{name}` already exists in this policy"),
                );
            }
        }
    }
    c.out
}

/// Layout checks of `apps/<dir>/deploy.yaml`: exactly one App, named like its directory.
pub(crate) fn check_app_layout(path: &str, dir: &str, checked: &CheckedFile) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if checked.documents.is_empty() && checked.diagnostics.is_empty() {
        out.push(Diagnostic::error(
            path,
            Position::START,
            "",
            "layout.empty",
            format!("apps/{dir}/deploy.yaml has no App document"),
        ));
    }
    for (i, doc) in checked.documents.iter().enumerate() {
        if i > 0 {
            out.push(Diagnostic::error(
                path,
                doc.document.start,
                "",
                "layout.one-app",
                "deploy.yaml holds one App; put other apps in their own directories".to_string(),
            ));
            continue;
        }
        if let Some(kind) = doc.kind
            && kind != Kind::App
        {
            out.push(Diagnostic::error(
                path,
                doc.document.spans.locate_value("/kind"),
                "/kind",
                "layout.kind",
                format!("apps/{dir}/deploy.yaml must hold an App, found a {kind}"),
            ));
            continue;
        }
        if let Some(Value::String(name)) = doc.document.value.pointer("/metadata/name")
            && name != dir
        {
            out.push(
                Diagnostic::error(
                    path,
                    doc.document.spans.locate_value("/metadata/name"),
                    "/metadata/name",
                    "app.name-mismatch",
                    format!("metadata.name is `{name}` but the app's directory is `apps/{dir}`"),
                )
                .with_hint(format!("set `name: {dir}` or move the file to apps/{name}/deploy.yaml")),
            );
        }
    }
    out
}

/// An app document as the repository checks see it.
pub(crate) struct RepoApp<'a> {
    /// Directory name under `apps/`.
    pub dir: &'a str,
    /// Path of its deploy.yaml.
    pub file: &'a str,
    pub doc: &'a Document,
}

impl RepoApp<'_> {
    pub(crate) fn name(&self) -> Option<&str> {
        self.doc.value.pointer("/metadata/name")?.as_str()
    }

    pub(crate) fn depends_on(&self) -> Vec<(usize, &str)> {
        match self.doc.value.pointer("/spec/dependsOn") {
            Some(Value::Array(deps)) => deps.iter().enumerate().filter_map(|(i, d)| Some((i, d.as_str()?))).collect(),
            _ => Vec::new(),
        }
    }

    fn error(&self, pointer: &str, rule: &str, message: String) -> Diagnostic {
        Diagnostic::error(self.file, self.doc.spans.locate_value(pointer), pointer, rule, message)
    }
}

/// The duplicate-name error of `app`, whose name `first` (an earlier directory) already uses.
pub(crate) fn duplicate_name(app: &RepoApp<'_>, first: &str) -> Option<Diagnostic> {
    let name = app.name()?;
    Some(app.error("/metadata/name", "app.duplicate-name", format!("app name `{name}` is already used by {first}")))
}

/// The `dependsOn` entries of `app` that name no app directory. `known` holds every app
/// directory (valid or not), so depending on a broken app is not reported twice.
pub(crate) fn unknown_dependencies<D>(app: &RepoApp<'_>, known: &BTreeMap<String, D>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, dep) in app.depends_on() {
        if !known.contains_key(dep) {
            let mut d = app.error(
                &format!("/spec/dependsOn/{i}"),
                "app.unknown-dependency",
                format!("dependsOn[{i}]: there is no app `{dep}` (no apps/{dep}/deploy.yaml)"),
            );
            if let Some(s) = closest(dep, known.keys().map(String::as_str)) {
                d = d.with_hint(format!("did you mean `{s}`?"));
            }
            out.push(d);
        }
    }
    out
}

/// The error of an app whose `manifests.path` holds no file.
pub(crate) fn missing_manifests(app: &RepoApp<'_>, files: &BTreeMap<String, RepoFile>) -> Option<Diagnostic> {
    let Some(Value::String(path)) = app.doc.value.pointer("/spec/manifests/path") else {
        return None;
    };
    let rel = manifests_relative(path).ok()?;
    let prefix = format!("apps/{}/{rel}", app.dir);
    if files_under(files, &prefix).next().is_some() {
        return None;
    }
    Some(app.error(
        "/spec/manifests/path",
        "app.manifests-path",
        format!("manifests path `{path}` does not exist: nothing at {prefix}"),
    ))
}

/// The regular files of `files` that are `prefix` or below it: paths under `prefix` sort in one
/// run starting at the first path not less than it.
pub(crate) fn files_under<'a>(
    files: &'a BTreeMap<String, RepoFile>,
    prefix: &'a str,
) -> impl Iterator<Item = &'a RepoFile> + 'a {
    files
        .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(path, _)| path.starts_with(prefix))
        .filter(move |(path, f)| f.entry == EntryKind::File && under(path, prefix))
        .map(|(_, f)| f)
}

/// True when `name` is a DNS-1123 label, the form of an app name.
pub(crate) fn is_app_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// True when `path` is `prefix` itself or a file below it.
pub(crate) fn under(path: &str, prefix: &str) -> bool {
    path == prefix || (path.len() > prefix.len() && path.starts_with(prefix) && path.as_bytes()[prefix.len()] == b'/')
}

/// A dependency cycle: the directories of its strongly connected component, and the errors
/// reported in each of their files.
pub(crate) struct Cycle {
    pub members: BTreeSet<String>,
    pub diagnostics: Vec<(String, Diagnostic)>,
}

/// Finds dependency cycles among `apps` (Tarjan's strongly connected components) and reports
/// each with its path, in every file that takes part. Edges to apps outside `apps` are ignored,
/// so a caller passes a set closed under `dependsOn`.
pub(crate) fn check_cycles(apps: &[RepoApp<'_>]) -> Vec<Cycle> {
    let index: BTreeMap<&str, usize> = apps.iter().enumerate().map(|(i, a)| (a.dir, i)).collect();
    let edges: Vec<Vec<(usize, usize)>> = apps
        .iter()
        .map(|a| a.depends_on().into_iter().filter_map(|(pos, dep)| Some((pos, *index.get(dep)?))).collect())
        .collect();
    let mut cycles = Vec::new();
    for component in strongly_connected(&edges) {
        let single = component.len() == 1;
        let first = component[0];
        if single && !edges[first].iter().any(|&(_, t)| t == first) {
            continue;
        }
        let members: BTreeSet<usize> = component.iter().copied().collect();
        // Start from the smallest name so the reported path is stable across runs.
        let start = *members.iter().min_by_key(|&&i| apps[i].dir).unwrap_or(&first);
        let path = cycle_path(start, &edges, &members);
        let names: Vec<&str> = path.iter().map(|&i| apps[i].dir).collect();
        let mut out = Vec::new();
        for (k, &node) in path.iter().enumerate() {
            let next = path.get(k + 1).copied().unwrap_or(start);
            let entry = edges[node].iter().find(|&&(_, t)| t == next).map_or(0, |&(p, _)| p);
            let mut rotated: Vec<&str> = names[k..].to_vec();
            rotated.extend(&names[..k]);
            rotated.push(names[k]);
            let d = apps[node].error(
                &format!("/spec/dependsOn/{entry}"),
                "app.dependency-cycle",
                format!("dependency cycle: {}", rotated.join(" → ")),
            );
            out.push((apps[node].dir.to_string(), d));
        }
        for &m in &members {
            if !path.contains(&m) {
                let d = apps[m].error(
                    "/spec/dependsOn",
                    "app.dependency-cycle",
                    format!("part of a dependency cycle: {} → {}", names.join(" → "), names[0]),
                );
                out.push((apps[m].dir.to_string(), d));
            }
        }
        cycles.push(Cycle { members: members.iter().map(|&m| apps[m].dir.to_string()).collect(), diagnostics: out });
    }
    cycles
}

/// A simple cycle through `start` inside one strongly connected component.
fn cycle_path(start: usize, edges: &[Vec<(usize, usize)>], members: &BTreeSet<usize>) -> Vec<usize> {
    // Breadth-first from start's successors back to start gives a shortest cycle.
    let mut parent: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::new();
    for &(_, t) in &edges[start] {
        if t == start {
            return vec![start];
        }
        if members.contains(&t) && !parent.contains_key(&t) {
            parent.insert(t, start);
            queue.push_back(t);
        }
    }
    while let Some(n) = queue.pop_front() {
        for &(_, t) in &edges[n] {
            if t == start {
                let mut path = vec![n];
                let mut cur = n;
                while let Some(&p) = parent.get(&cur) {
                    if p == start {
                        break;
                    }
                    path.push(p);
                    cur = p;
                }
                path.push(start);
                path.reverse();
                return path;
            }
            if members.contains(&t) && !parent.contains_key(&t) {
                parent.insert(t, n);
                queue.push_back(t);
            }
        }
    }
    vec![start]
}

/// Tarjan's algorithm, iterative so a long dependency chain cannot overflow the stack.
fn strongly_connected(edges: &[Vec<(usize, usize)>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut components = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(top) = work.last_mut() {
            let (v, child) = *top;
            if let Some(&(_, w)) = edges[v].get(child) {
                top.1 += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// A policy document as the repository checks see it.
pub(crate) struct RepoPolicy<'a> {
    pub file: &'a str,
    pub doc: &'a Document,
}

/// Checks across policies: unique names and Rego modules that exist. Each diagnostic comes with
/// the index of the policy it is about.
pub(crate) fn check_policies(policies: &[RepoPolicy<'_>], rego_files: &[&str]) -> Vec<(usize, Diagnostic)> {
    let mut out = Vec::new();
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    for (index, p) in policies.iter().enumerate() {
        let at = |pointer: &str| p.doc.spans.locate_value(pointer);
        if let Some(Value::String(name)) = p.doc.value.pointer("/metadata/name") {
            if let Some(first) = names.get(name.as_str()) {
                out.push((
                    index,
                    Diagnostic::error(
                        p.file,
                        at("/metadata/name"),
                        "/metadata/name",
                        "policy.duplicate-name",
                        format!("policy name `{name}` is already used in {first}"),
                    ),
                ));
            } else {
                names.insert(name, p.file);
            }
        }
        if let Some(Value::Array(rego)) = p.doc.value.pointer("/spec/rego") {
            for (i, path) in rego.iter().enumerate() {
                let Some(path) = path.as_str() else { continue };
                if !rego_files.contains(&path) {
                    let pointer = format!("/spec/rego/{i}");
                    let mut d = Diagnostic::error(
                        p.file,
                        at(&pointer),
                        &pointer,
                        "policy.rego-missing",
                        format!("rego[{i}]: `{path}` is not in the repository"),
                    );
                    if let Some(s) = closest(path, rego_files.iter().copied()) {
                        d = d.with_hint(format!("did you mean `{s}`?"));
                    }
                    out.push((index, d));
                }
            }
        }
    }
    out
}
