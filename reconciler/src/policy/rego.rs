//! Rego modules, conftest-style: every package's `deny` set blocks, its `warn` set informs.
//!
//! All modules share one regorus engine, parsed and analysed once at compile time, so a package
//! may span files and import helpers from another listed module. Each evaluation runs under
//! regorus's cooperative execution time limit ([`EVAL_LIMIT`]), so a costly module fails (closed)
//! instead of stalling the daemon. Memory is bounded per builtin call ([`limits`]): every builtin
//! whose result can outgrow its arguments is checked before it runs, so no single step can
//! allocate past a few MiB before the timer is looked at again. A rule over either limit is a
//! blocking verdict naming it.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use keelson_manifest::Diagnostic;
use keelson_manifest::yaml::Position;
use regorus::Engine;
use regorus::utils::limits::{ExecutionTimerConfig, LimitError};
use serde_json::{Value, json};

use super::{ChangeCtx, Located, Verdict, VerdictKind};

mod limits;

/// Wall-clock budget of one rule evaluation for one app.
pub(crate) const EVAL_LIMIT: Duration = Duration::from_millis(500);

/// One `rego:` entry of a policy.
#[derive(Debug, Clone)]
pub(crate) struct ModuleRef {
    /// Index of the policy in the compile's policy list.
    pub(crate) policy: usize,
    /// Index of the entry in the policy's `rego` list.
    pub(crate) index: usize,
    /// Repo-relative path of the module.
    pub(crate) path: String,
}

/// Every listed module in one engine, and the packages whose `deny`/`warn` we query.
#[derive(Debug, Default)]
pub(crate) struct RegoModules {
    engine: Option<Mutex<Engine>>,
    packages: Vec<Package>,
}

/// A package that declares `deny` and/or `warn`.
#[derive(Debug, Clone)]
struct Package {
    /// `data.keelson.defaults`.
    path: String,
    /// Policy that first listed one of the package's modules.
    policy: String,
    deny: Option<RuleAt>,
    warn: Option<RuleAt>,
}

/// Where a rule is first declared.
#[derive(Debug, Clone)]
struct RuleAt {
    file: String,
    line: usize,
    col: usize,
}

/// A module read from the repository, parsed successfully.
#[derive(Debug, Clone)]
struct Source {
    path: String,
    text: String,
    /// Index into the compile's located policies of the first policy that listed it.
    policy: usize,
    /// Its `rego:` entry, for diagnostics about the module as a whole.
    entry: usize,
    v0: bool,
}

impl RegoModules {
    /// True when no module declares `deny` or `warn`.
    pub(crate) fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// Reads, parses and analyses every module listed by `refs`. Returns the modules, the
    /// diagnostics and, for every module that could not be used, a blocking verdict.
    pub(crate) fn compile(
        located: &[Located<'_>],
        refs: &[ModuleRef],
        read: &mut dyn FnMut(&str) -> std::io::Result<Vec<u8>>,
    ) -> (Self, Vec<Diagnostic>, Vec<Verdict>) {
        let mut diagnostics = Vec::new();
        let mut broken = Vec::new();
        let mut fail = |at: &Located<'_>, d: Diagnostic, path: &str, diags: &mut Vec<Diagnostic>| {
            broken.push(at.broken(VerdictKind::Rego, path.to_string(), &d));
            diags.push(d);
        };

        // Read and parse each module once, whichever policies list it.
        let mut sources: Vec<Source> = Vec::new();
        for r in refs {
            if sources.iter().any(|s| s.path == r.path) {
                continue;
            }
            let at = &located[r.policy];
            let pointer = format!("/spec/rego/{}", r.index);
            let text = match read(&r.path) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => text,
                    Err(_) => {
                        let d = at.error(&pointer, "policy.rego-read", format!("`{}` is not UTF-8 text", r.path));
                        fail(at, d, &r.path, &mut diagnostics);
                        continue;
                    }
                },
                Err(e) => {
                    let d = at.error(&pointer, "policy.rego-missing", format!("cannot read `{}`: {e}", r.path));
                    fail(at, d, &r.path, &mut diagnostics);
                    continue;
                }
            };
            match parse(&r.path, &text) {
                Ok(v0) => {
                    if v0 {
                        diagnostics.push(
                            Diagnostic::warning(
                                &r.path,
                                Position::START,
                                "",
                                "rego.v0",
                                "module uses Rego v0 syntax; it is accepted for now",
                            )
                            .with_hint("write rules as `deny contains msg if { … }` (Rego v1, as OPA 1.0 does)"),
                        );
                    }
                    sources.push(Source { path: r.path.clone(), text, policy: r.policy, entry: r.index, v0 });
                }
                Err(e) => {
                    let d = rego_diagnostic(&r.path, &e).with_hint(
                        "Rego v1 syntax: `package my.rules`, then `deny contains msg if { … }` and \
                         `warn contains msg if { … }`",
                    );
                    fail(at, d, &r.path, &mut diagnostics);
                }
            }
        }

        // Analyse them together; drop a module the analysis blames and try again.
        loop {
            if sources.is_empty() {
                return (Self::default(), diagnostics, broken);
            }
            let (mut engine, packages) = match load(&sources) {
                Ok(loaded) => loaded,
                Err(e) => {
                    let d = rego_diagnostic(&sources[0].path, &e);
                    fail(&located[sources[0].policy], d, &sources[0].path, &mut diagnostics);
                    sources.remove(0);
                    continue;
                }
            };
            let mut queried = Vec::new();
            let mut warnings = Vec::new();
            for (path, (policy, files)) in &packages {
                let find = |rule: &str| {
                    files.iter().find_map(|s| {
                        rule_head(&s.text, rule).map(|(line, col)| RuleAt { file: s.path.clone(), line, col })
                    })
                };
                let (deny, warn) = (find("deny"), find("warn"));
                if deny.is_some() || warn.is_some() {
                    queried.push(Package {
                        path: path.clone(),
                        policy: located[*policy].name().to_string(),
                        deny,
                        warn,
                    });
                    continue;
                }
                // A package others import is a library; one nobody uses is probably a mistake.
                let imported = sources.iter().any(|o| !files.iter().any(|f| f.path == o.path) && o.text.contains(path));
                for s in files.iter().filter(|_| !imported) {
                    let at = &located[s.policy];
                    let pointer = format!("/spec/rego/{}", s.entry);
                    warnings.push(Diagnostic::warning(
                        at.file(),
                        at.at(&pointer),
                        &pointer,
                        "rego.no-rules",
                        format!("`{}` declares neither `deny` nor `warn`, so it never affects a change", s.path),
                    ));
                }
            }
            let packages = queried;
            // Analysis runs on the first evaluation, and some mistakes (an unknown function) show
            // only when a rule runs: evaluate every queried rule once with an empty input, where
            // rules that read the input are simply undefined. Running out of time here is not a
            // compile error; it will show (and fail closed) when the rule runs for an app.
            engine.set_input(regorus::Value::from(json!({})));
            let analysed = packages
                .iter()
                .flat_map(|p| [("deny", &p.deny), ("warn", &p.warn)].map(|(rule, at)| (p, rule, at.is_some())))
                .filter(|(.., declared)| *declared)
                .map(|(p, rule, _)| engine.eval_rule(format!("{}.{rule}", p.path)).map(|_| ()))
                .find(|r| r.as_ref().is_err_and(|e| !over_limit(e)))
                .unwrap_or(Ok(()));
            match analysed {
                Ok(()) => {
                    diagnostics.extend(warnings);
                    return (Self { engine: Some(Mutex::new(engine)), packages }, diagnostics, broken);
                }
                Err(e) => {
                    let message = format!("{e:#}");
                    let blamed = locate(&message)
                        .and_then(|(file, ..)| sources.iter().position(|s| s.path == file))
                        .unwrap_or(0);
                    let s = sources.remove(blamed);
                    let d = rego_diagnostic(&s.path, &e);
                    fail(&located[s.policy], d, &s.path, &mut diagnostics);
                }
            }
        }
    }

    /// Verdicts of every package's `deny` (blocking) and `warn` (not blocking) for one app.
    /// `app` is the App document as JSON.
    pub(crate) fn evaluate(&self, app: &Value, ctx: &ChangeCtx<'_>) -> Vec<Verdict> {
        let Some(engine) = &self.engine else { return Vec::new() };
        let previous = ctx.previous.and_then(|p| serde_json::to_value(p).ok()).unwrap_or(Value::Null);
        let input = json!({
            "app": app,
            "placement": app.pointer("/spec/placement").cloned().unwrap_or(Value::Null),
            "change": {"previous": previous, "commit": ctx.commit},
        });
        // One engine holds the analysed modules; evaluations take turns rather than each paying
        // for a clone of the interpreter.
        let mut engine = engine.lock().unwrap_or_else(PoisonError::into_inner);
        engine.set_input(regorus::Value::from(input));
        let mut out = Vec::new();
        for p in &self.packages {
            for (rule, at, blocking) in [("deny", &p.deny, true), ("warn", &p.warn, false)] {
                let Some(at) = at else { continue };
                let verdict = |message: String, blocking: bool| Verdict {
                    policy: p.policy.clone(),
                    rule: format!("{}.{rule}", p.path.trim_start_matches("data.")),
                    kind: VerdictKind::Rego,
                    message,
                    blocking,
                    file: at.file.clone(),
                    line: at.line,
                    col: at.col,
                };
                match engine.eval_rule(format!("{}.{rule}", p.path)) {
                    Ok(value) => out.extend(messages(&value).into_iter().map(|m| verdict(m, blocking))),
                    // Over its time or memory limit, a rule blocks whatever kind it is: its answer
                    // is unknown, and a rule that could silence a denial by being slow would be a
                    // way around every guardrail.
                    Err(e) if over_limit(&e) => out.push(verdict(
                        format!(
                            "{}.{rule} exceeded its evaluation limit ({} ms, {} MiB per call), so the change is held: {}",
                            p.path,
                            EVAL_LIMIT.as_millis(),
                            limits::MAX_BYTES >> 20,
                            error_text(&format!("{e:#}"))
                        ),
                        true,
                    )),
                    // A deny that cannot be evaluated fails closed; a warn only says so.
                    Err(e) => out.push(verdict(
                        format!("cannot evaluate {}.{rule}: {}", p.path, error_text(&format!("{e:#}"))),
                        blocking,
                    )),
                }
            }
        }
        out
    }
}

/// True when `error` is a time or memory limit, not a mistake in the module.
fn over_limit(error: &anyhow::Error) -> bool {
    is_time_limit(error) || limits::is_limit(&format!("{error:#}"))
}

/// True when `error` is regorus's execution time limit, not a mistake in the module.
fn is_time_limit(error: &anyhow::Error) -> bool {
    error.chain().any(|c| matches!(c.downcast_ref::<LimitError>(), Some(LimitError::TimeLimitExceeded { .. })))
        || format!("{error:#}").contains("exceeded time limit")
}

/// Parses `text` as Rego v1, falling back to v0; `Ok(true)` when only v0 parses.
fn parse(path: &str, text: &str) -> anyhow::Result<bool> {
    let mut engine = Engine::new();
    match engine.add_policy(path.to_string(), text.to_string()) {
        Ok(_) => Ok(false),
        Err(v1_error) => {
            engine.set_rego_v0(true);
            engine.add_policy(path.to_string(), text.to_string()).map(|_| true).map_err(|_| v1_error)
        }
    }
}

/// Package path → (first listing policy, its modules).
type Packages<'a> = BTreeMap<String, (usize, Vec<&'a Source>)>;

/// An engine with every module added, limits set, and the packages they declare.
fn load(sources: &[Source]) -> anyhow::Result<(Engine, Packages<'_>)> {
    let mut engine = Engine::new();
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: EVAL_LIMIT,
        check_interval: NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN),
    });
    limits::install(&mut engine)?;
    let mut packages: Packages<'_> = BTreeMap::new();
    for s in sources {
        engine.set_rego_v0(s.v0);
        let package = engine.add_policy(s.path.clone(), s.text.clone())?;
        packages.entry(package).or_insert_with(|| (s.policy, Vec::new())).1.push(s);
    }
    Ok((engine, packages))
}

/// Messages from a `deny`/`warn` value: a set (or array) of strings or of objects with `msg`,
/// a single string, or `true`.
fn messages(value: &regorus::Value) -> Vec<String> {
    if matches!(value, regorus::Value::Undefined) {
        return Vec::new();
    }
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => Some(o.get("msg").and_then(Value::as_str).map_or_else(|| v.to_string(), str::to_string)),
        Value::Bool(true) => Some("denied".into()),
        Value::Bool(false) | Value::Null => None,
        other => Some(other.to_string()),
    };
    let mut out: Vec<String> = match serde_json::to_value(value) {
        Ok(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Ok(v) => one(&v).into_iter().collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out.dedup();
    out
}

/// Line and column of the first rule head named `rule` (`deny contains …`, `deny[msg] …`).
fn rule_head(text: &str, rule: &str) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let trimmed = line.trim_start();
        let rest = trimmed.strip_prefix(rule)?;
        let boundary = rest.chars().next().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        boundary.then(|| (i + 1, line.len() - trimmed.len() + 1))
    })
}

/// `(file, line, col, message)` from a regorus error (`--> file:line:col` … `error: message`).
fn locate(message: &str) -> Option<(String, usize, usize, String)> {
    let arrow = message.lines().find_map(|l| l.trim_start().strip_prefix("--> "))?;
    let mut parts = arrow.rsplitn(3, ':');
    let col = parts.next()?.trim().parse().ok()?;
    let line = parts.next()?.trim().parse().ok()?;
    let file = parts.next()?.to_string();
    Some((file, line, col, error_text(message)))
}

/// The one-line message of a regorus error (its last `error: …` line, or its first line).
fn error_text(message: &str) -> String {
    let last = message.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(message);
    match last.trim().strip_prefix("error: ") {
        Some(m) => m.to_string(),
        None => message.lines().find(|l| !l.trim().is_empty()).unwrap_or(message).trim().to_string(),
    }
}

/// A diagnostic for a regorus error, at the position it names in `file` when it names one.
fn rego_diagnostic(file: &str, error: &anyhow::Error) -> Diagnostic {
    let message = format!("{error:#}");
    match locate(&message) {
        Some((f, line, col, text)) => Diagnostic::error(&f, Position::new(line, col), "", "rego.compile", text),
        None => Diagnostic::error(file, Position::START, "", "rego.compile", error_text(&message)),
    }
}
