//! Declarative rules: `match` selects apps, `deny` conditions that all hold deny the change,
//! `require` conditions that do not all hold deny it too.

use std::collections::BTreeMap;

use keelson_manifest::App;
use keelson_manifest::policy::{Rule, RuleMatch};
use serde_json::Value;

use super::{Located, Verdict, VerdictKind};

/// One rule, ready to be matched against apps.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    policy: String,
    name: String,
    matches: RuleMatch,
    deny: Vec<Condition>,
    require: Vec<Condition>,
    message: String,
    file: String,
    line: usize,
    col: usize,
}

/// `field path → expected` from a `deny` or `require` map.
#[derive(Debug, Clone)]
struct Condition {
    /// As written, for messages.
    path: String,
    /// JSON path into the App document.
    tokens: Vec<String>,
    expected: Value,
}

impl Condition {
    fn new(path: &str, expected: &Value) -> Self {
        let mut tokens: Vec<String> = path.split('.').map(str::to_string).collect();
        // Paths are relative to `spec` (`placement.nodePool`) unless they name the document's
        // top level (`metadata.labels.tier`, `spec.image`); App has no spec field of either name.
        if !matches!(tokens.first().map(String::as_str), Some("metadata" | "spec")) {
            tokens.insert(0, "spec".into());
        }
        Self { path: path.to_string(), tokens, expected: expected.clone() }
    }

    fn lookup<'v>(&self, doc: &'v Value) -> Option<&'v Value> {
        let mut node = doc;
        for t in &self.tokens {
            node = match node {
                Value::Object(map) => map.get(t)?,
                Value::Array(items) => items.get(t.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        (!node.is_null()).then_some(node)
    }

    fn holds(&self, doc: &Value) -> bool {
        satisfies(self.lookup(doc), &self.expected)
    }

    /// What the field holds, for messages: `absent`, `present` (when that is all the rule asks), or the value.
    fn actual(&self, doc: &Value) -> String {
        match (self.lookup(doc), self.expected.as_str()) {
            (None, _) => "absent".into(),
            (Some(_), Some("present" | "absent")) => "present".into(),
            (Some(v), _) => v.to_string(),
        }
    }

    /// What the rule asks for, for messages: `present`, `"critical"`, `one of "a", "b"`.
    fn expected(&self) -> String {
        match &self.expected {
            Value::String(s) if s == "present" || s == "absent" => s.clone(),
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(Value::to_string).collect();
                format!("one of {}", items.join(", "))
            }
            v => v.to_string(),
        }
    }
}

/// Whether a field's value (`None` when absent) satisfies a condition: `present`, `absent`, a
/// list (any element) or a value (equal, or contained when the field is a list).
fn satisfies(actual: Option<&Value>, expected: &Value) -> bool {
    match expected {
        Value::String(s) if s == "present" => actual.is_some(),
        Value::String(s) if s == "absent" => actual.is_none(),
        Value::Array(options) => options.iter().any(|o| satisfies(actual, o)),
        expected => match actual {
            None => false,
            Some(Value::Array(items)) => items.iter().any(|i| loosely_equal(i, expected)),
            Some(v) => loosely_equal(v, expected),
        },
    }
}

/// Equality that lets `cpu: 2` in a rule match the `"2"` an app stores (quantities are text).
fn loosely_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(s), Value::Number(_) | Value::Bool(_)) => text_equals(s, b),
        (Value::Number(_) | Value::Bool(_), Value::String(s)) => text_equals(s, a),
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Whether text such as `"2"` or `"true"` reads as the number or boolean `v`.
fn text_equals(text: &str, v: &Value) -> bool {
    serde_json::from_str::<Value>(text).is_ok_and(|parsed| !parsed.is_string() && loosely_equal(&parsed, v))
}

/// `*` any run of characters, `?` one character; everything else literal.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                backtrack = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match backtrack {
                Some((bp, bt)) => {
                    pi = bp + 1;
                    ti = bt + 1;
                    backtrack = Some((bp, bt + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether a rule's `match` selects `app` (every given part must match; empty selects all).
pub(crate) fn selects(m: &RuleMatch, app: &App) -> bool {
    let meta = &app.metadata;
    (m.names.is_empty() || m.names.iter().any(|g| glob(g, &meta.name)))
        && m.team.as_ref().is_none_or(|t| meta.team.as_ref() == Some(t))
        && m.labels.iter().all(|(k, v)| meta.labels.get(k) == Some(v))
        && (m.compliance.is_empty() || m.compliance.iter().any(|c| meta.compliance.contains(c)))
}

fn conditions(map: &BTreeMap<String, Value>) -> Vec<Condition> {
    map.iter().map(|(path, expected)| Condition::new(path, expected)).collect()
}

impl CompiledRule {
    /// Rule `index` of the policy at `at`.
    pub(crate) fn new(at: &Located<'_>, index: usize, rule: &Rule) -> Self {
        let pos = at.at(&format!("/spec/rules/{index}"));
        Self {
            policy: at.name().to_string(),
            name: rule.name.clone(),
            matches: rule.matches.clone(),
            deny: conditions(&rule.deny),
            require: conditions(&rule.require),
            message: rule.message.clone(),
            file: at.file().to_string(),
            line: pos.line,
            col: pos.col,
        }
    }

    /// The rule's verdicts for `app` (`doc` is the app as JSON): at most one for `deny`, one for `require`.
    pub(crate) fn evaluate(&self, app: &App, doc: &Value) -> Vec<Verdict> {
        if !selects(&self.matches, app) {
            return Vec::new();
        }
        let mut out = Vec::new();
        // A rule without deny conditions denies nothing (rather than everything it matches).
        if !self.deny.is_empty() && self.deny.iter().all(|c| c.holds(doc)) {
            let why: Vec<String> = self.deny.iter().map(|c| format!("{} is {}", c.path, c.actual(doc))).collect();
            out.push(self.verdict(VerdictKind::Rule, why.join(", ")));
        }
        let unmet: Vec<String> = self
            .require
            .iter()
            .filter(|c| !c.holds(doc))
            .map(|c| format!("{} must be {}, is {}", c.path, c.expected(), c.actual(doc)))
            .collect();
        if !unmet.is_empty() {
            out.push(self.verdict(VerdictKind::Require, unmet.join(", ")));
        }
        out
    }

    /// Whether this rule produced `v`.
    pub(crate) fn spoke(&self, v: &Verdict) -> bool {
        v.policy == self.policy && v.rule == self.name && v.file == self.file && v.line == self.line
    }

    /// JSON pointers into the App of the fields a verdict of `kind` is about.
    pub(crate) fn pointers(&self, kind: VerdictKind) -> Vec<String> {
        let conditions = if kind == VerdictKind::Require { &self.require } else { &self.deny };
        conditions
            .iter()
            .map(|c| c.tokens.iter().map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1"))).collect())
            .collect()
    }

    fn verdict(&self, kind: VerdictKind, why: String) -> Verdict {
        Verdict {
            policy: self.policy.clone(),
            rule: self.name.clone(),
            kind,
            message: format!("{} ({why})", self.message),
            blocking: true,
            file: self.file.clone(),
            line: self.line,
            col: self.col,
        }
    }
}
