//! Admission by policy: declarative rules, Rego modules, freeze windows and team quotas.
//!
//! [`PolicySet::compile`] turns the policy documents of a [`DesiredState`] into something cheap to
//! evaluate (globs, cron expressions and time zones resolved, Rego parsed and analysed once).
//! [`PolicySet::evaluate`] and [`PolicySet::quotas`] are then pure functions of their inputs: no
//! I/O, no clock (the caller passes `now`), so `keelson plan` in CI and the daemon agree.
//!
//! A policy that does not compile fails closed: every app gets a blocking verdict naming the
//! problem until the policy is fixed, because a broken guardrail must not silently let every
//! change through.

pub(crate) mod freeze;
mod quota;
mod rego;
mod rules;

use keelson_manifest::yaml::{self, Position};
use keelson_manifest::{App, DesiredState, Diagnostic, LoadedApp, LoadedPolicy, Policy};

use self::freeze::FreezeWindow;
use self::quota::TeamQuota;
use self::rego::RegoModules;
use self::rules::CompiledRule;

pub use keelson_core::verdict::{Block, Verdict, VerdictKind, blocked_by};

/// What is known about the change being admitted, besides the app itself.
#[derive(Debug, Clone, Copy)]
pub struct ChangeCtx<'a> {
    /// The app as it was at the last applied commit; `None` for a new app.
    pub previous: Option<&'a App>,
    /// The commit being applied.
    pub commit: &'a str,
    /// The instant freeze windows are checked against.
    pub now: time::OffsetDateTime,
    /// Reason from a `Keelson-Freeze-Override: <reason>` trailer of the head commit.
    pub freeze_override: Option<&'a str>,
}

/// Every policy of a desired state, compiled once and evaluated per app.
#[derive(Debug, Default)]
pub struct PolicySet {
    rules: Vec<CompiledRule>,
    rego: RegoModules,
    freezes: Vec<FreezeWindow>,
    quotas: Vec<TeamQuota>,
    /// Verdicts for policies that did not compile, given to every app (fail closed).
    broken: Vec<Verdict>,
}

/// Where the parts of one policy document sit in its file.
pub(crate) struct Located<'a> {
    policy: &'a LoadedPolicy,
    spans: Option<yaml::Spans>,
}

impl Located<'_> {
    /// Name of the policy.
    pub(crate) fn name(&self) -> &str {
        &self.policy.name
    }

    /// Path of the policy's file.
    pub(crate) fn file(&self) -> &str {
        &self.policy.file
    }

    /// Position of the entry at `pointer` (its key if it has one), or the file's start.
    pub(crate) fn at(&self, pointer: &str) -> Position {
        self.spans.as_ref().map_or(Position::START, |s| s.locate_key(pointer))
    }

    /// A diagnostic about the entry at `pointer`.
    pub(crate) fn error(&self, pointer: &str, rule: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(self.file(), self.at(pointer), pointer, rule, message)
    }

    /// A blocking verdict standing in for a part of this policy that did not compile.
    pub(crate) fn broken(&self, kind: VerdictKind, rule: String, d: &Diagnostic) -> Verdict {
        Verdict {
            policy: self.name().to_string(),
            rule,
            kind,
            message: format!(
                "policy `{}` does not compile, so nothing is admitted until it is fixed: {}",
                self.name(),
                d.message
            ),
            blocking: true,
            file: d.file.clone(),
            line: d.line,
            col: d.col,
        }
    }
}

impl PolicySet {
    /// Compiles every policy document (rules, cron expressions, Rego modules via regorus).
    /// Problems (bad cron, Rego that doesn't compile, missing .rego file) come back as
    /// diagnostics with file:line:col where known; `read` returns a repo-relative file's bytes.
    pub fn compile(
        desired: &DesiredState,
        read: &mut dyn FnMut(&str) -> std::io::Result<Vec<u8>>,
    ) -> (PolicySet, Vec<Diagnostic>) {
        let mut set = PolicySet::default();
        let mut diagnostics = Vec::new();
        let located: Vec<Located<'_>> =
            desired.policies.iter().map(|policy| Located { policy, spans: spans_of(policy, read) }).collect();
        let mut rego_refs = Vec::new();
        for (index, at) in located.iter().enumerate() {
            let policy: Policy = match at.policy.policy() {
                Ok(p) => p,
                Err(e) => {
                    // Loaded policies passed the schema, so only a bug (or a schema newer than the
                    // types) lands here; fail closed like any other broken policy.
                    let d = at.error("", "policy.shape", format!("cannot read policy `{}`: {e}", at.name()));
                    set.broken.push(at.broken(VerdictKind::Rule, "*".into(), &d));
                    diagnostics.push(d);
                    continue;
                }
            };
            set.rules.extend(policy.spec.rules.iter().enumerate().map(|(i, rule)| CompiledRule::new(at, i, rule)));
            for (i, window) in policy.spec.freeze.iter().enumerate() {
                match FreezeWindow::compile(at, i, window) {
                    Ok(w) => set.freezes.push(w),
                    Err(d) => {
                        // Kind `Rule`, not `Freeze`: waiting does not fix it, so it is a policy block.
                        set.broken.push(at.broken(VerdictKind::Rule, format!("freeze[{i}]"), &d));
                        diagnostics.push(*d);
                    }
                }
            }
            set.quotas.extend(policy.spec.quotas.iter().enumerate().map(|(i, q)| TeamQuota::new(at, i, q)));
            for (i, path) in policy.spec.rego.iter().enumerate() {
                rego_refs.push(rego::ModuleRef { policy: index, index: i, path: path.clone() });
            }
        }
        let (modules, rego_diags, rego_broken) = RegoModules::compile(&located, &rego_refs, read);
        set.rego = modules;
        set.broken.extend(rego_broken);
        diagnostics.extend(rego_diags);
        (set, diagnostics)
    }

    /// Verdicts for one app's change: declarative rules, Rego `deny` (blocking) / `warn` (not
    /// blocking) with input `{app, placement, change: {previous, commit}}`, and freeze windows
    /// (blocking while `now` is inside one, unless the commit overrides the freeze).
    pub fn evaluate(&self, app: &LoadedApp, ctx: &ChangeCtx) -> Vec<Verdict> {
        let mut verdicts = self.broken.clone();
        let doc = serde_json::to_value(&app.app).unwrap_or_default();
        for rule in &self.rules {
            verdicts.extend(rule.evaluate(&app.app, &doc));
        }
        verdicts.extend(self.rego.evaluate(&doc, ctx));
        let now =
            jiff::Timestamp::from_nanosecond(ctx.now.unix_timestamp_nanos()).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        for window in &self.freezes {
            verdicts.extend(window.evaluate(now, ctx.freeze_override));
        }
        verdicts
    }

    /// Fleet-wide quotas per team (GPUs = replicas × gpu.count, and replicas) over the whole
    /// desired state: a blocking verdict for every app that counts towards an exceeded quota.
    pub fn quotas(&self, desired: &DesiredState) -> Vec<(String, Verdict)> {
        let mut out: Vec<(String, Verdict)> = self.quotas.iter().flat_map(|q| q.evaluate(desired)).collect();
        // Stable: quotas keep policy order within one app.
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// JSON pointers into the app of the fields `v` is about (empty for freeze windows and Rego,
    /// which name no field), so a plan can point at `file:line:col` in the app as well as the rule.
    pub fn fields_of(&self, v: &Verdict) -> Vec<String> {
        match v.kind {
            VerdictKind::Rule | VerdictKind::Require => {
                self.rules.iter().find(|r| r.spoke(v)).map(|r| r.pointers(v.kind)).unwrap_or_default()
            }
            VerdictKind::Quota if v.rule.ends_with(".gpus") => vec!["/spec/resources/gpu/count".into()],
            VerdictKind::Quota if v.rule.ends_with(".replicas") => vec!["/spec/replicas".into()],
            _ => Vec::new(),
        }
    }

    /// True when no policy has anything to say (no rules, Rego, freezes, quotas or problems).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
            && self.rego.is_empty()
            && self.freezes.is_empty()
            && self.quotas.is_empty()
            && self.broken.is_empty()
    }
}

/// Positions of the policy's nodes, from its file parsed again: `DesiredState` keeps policies as
/// plain JSON, and verdicts should point at the rule that spoke. Without them verdicts point at 1:1.
fn spans_of(policy: &LoadedPolicy, read: &mut dyn FnMut(&str) -> std::io::Result<Vec<u8>>) -> Option<yaml::Spans> {
    let bytes = read(&policy.file).ok()?;
    let documents = yaml::parse(&policy.file, &bytes).ok()?;
    documents
        .into_iter()
        .find(|d| d.value.pointer("/metadata/name").and_then(|v| v.as_str()) == Some(policy.name.as_str()))
        .map(|d| d.spans)
}

#[cfg(test)]
mod tests;
