//! Settings a user can write that this release does not carry out yet, in one table.
//!
//! A setting that is accepted and silently ignored is worse than one that is refused: a reviewer
//! approves a canary and gets a full rollout. Every such setting is listed in [`NOT_BUILT`] with
//! what ignoring it costs: an **error** when ignoring it would be unsafe (the app is held, the
//! config refused), a **warning** otherwise. When the feature lands, its row is deleted.
//!
//! The table is checked by `keelson validate` (repository, single file, `--config`), by the loader
//! the daemon runs on every commit, and by the daemon on its own config; `/api/v1/status` lists
//! what it found under `notBuilt`.

use serde_json::Value;

use crate::yaml::{Document, pointer_push};
use crate::{Diagnostic, Kind, Severity};

/// Rule name of every diagnostic this table produces.
pub const RULE: &str = "not-built";

/// When a row applies to the value found at its pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// The field is written at all (any value but `null`).
    Present,
    /// The field is `true`.
    True,
    /// The field is a string other than this one.
    Not(&'static str),
}

/// One setting that is accepted but not carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotBuilt {
    /// Kind of document the field belongs to.
    pub kind: Kind,
    /// JSON pointer of the field; a `*` token matches every key of an object (`/clusters/*/mesh`).
    pub pointer: &'static str,
    /// Which values count.
    pub when: When,
    /// Error when ignoring the setting would be unsafe, warning otherwise.
    pub severity: Severity,
    /// What is not built, in the user's words.
    pub what: &'static str,
    /// What this release does instead.
    pub instead: &'static str,
    /// The issue (or piece of work) that builds it.
    pub built_by: &'static str,
}

/// Everything accepted by the schemas that this release does not do. Delete a row when its
/// feature lands.
pub const NOT_BUILT: &[NotBuilt] = &[
    NotBuilt {
        kind: Kind::App,
        pointer: "/spec/strategy/type",
        when: When::Not("direct"),
        severity: Severity::Error,
        what: "rolling, blue-green and canary rollouts",
        instead: "the app would be rolled out all at once (`direct`), so it is held until you set \
                  `type: direct` or remove the strategy",
        built_by: "progressive delivery (not filed yet)",
    },
    NotBuilt {
        kind: Kind::App,
        pointer: "/spec/strategy/gates",
        when: When::Present,
        severity: Severity::Error,
        what: "metric gates",
        instead: "no metric would be checked before the rollout completes, so the app is held \
                  until the gates are removed",
        built_by: "progressive delivery (not filed yet)",
    },
    NotBuilt {
        kind: Kind::App,
        pointer: "/spec/strategy/autoRevert",
        when: When::Present,
        severity: Severity::Error,
        what: "automatic revert commits after a failed rollout",
        instead: "a failed rollout would stay failed with no revert commit, so the app is held \
                  until `autoRevert` is removed",
        built_by: "progressive delivery (not filed yet)",
    },
    NotBuilt {
        kind: Kind::App,
        pointer: "/spec/strategy/interval",
        when: When::Present,
        severity: Severity::Warning,
        what: "observation intervals between rollout steps",
        instead: "the interval is ignored: a `direct` rollout has one step",
        built_by: "progressive delivery (not filed yet)",
    },
    NotBuilt {
        kind: Kind::Config,
        pointer: "/source/requireSignedCommits",
        when: When::True,
        severity: Severity::Error,
        what: "signed-commit verification",
        instead: "commits would be applied unverified, so the daemon refuses to run with the \
                  protection you asked for (remove the setting to run unverified)",
        built_by: "issue 19 (signed commits)",
    },
    NotBuilt {
        kind: Kind::Config,
        pointer: "/source/allowedSigners",
        when: When::Present,
        severity: Severity::Warning,
        what: "signed-commit verification",
        instead: "the allowed signers are not read and no signature is checked",
        built_by: "issue 19 (signed commits)",
    },
    NotBuilt {
        kind: Kind::Config,
        pointer: "/status/repo",
        when: When::Present,
        severity: Severity::Error,
        what: "a separate status repository",
        instead: "transitions would be recorded somewhere you did not ask for, so the daemon \
                  refuses to run (remove it to record on the state repository)",
        built_by: "issue 18 (git source v2)",
    },
    NotBuilt {
        kind: Kind::Config,
        pointer: "/clusters/*/capacity",
        when: When::Present,
        severity: Severity::Warning,
        what: "the `capacity` role (spot capacity)",
        instead: "the instance is kept but nothing asks it for capacity",
        built_by: "the spot provider (not filed yet)",
    },
    NotBuilt {
        kind: Kind::Config,
        pointer: "/clusters/*/mesh",
        when: When::Present,
        severity: Severity::Warning,
        what: "the `mesh` role (traffic splitting)",
        instead: "the instance is kept but no traffic is ever split",
        built_by: "progressive delivery (not filed yet)",
    },
    NotBuilt {
        kind: Kind::Config,
        pointer: "/clusters/*/metrics",
        when: When::Present,
        severity: Severity::Warning,
        what: "the `metrics` role (metric gates)",
        instead: "the instance is kept but no metric is ever queried",
        built_by: "progressive delivery (not filed yet)",
    },
];

/// Every row of [`NOT_BUILT`] that applies to `value` (a document of `kind`), with the concrete
/// pointer and the message for the person who wrote it.
pub fn findings(kind: Kind, value: &Value) -> Vec<(&'static NotBuilt, String, String)> {
    let mut out = Vec::new();
    for row in NOT_BUILT.iter().filter(|r| r.kind == kind) {
        for (pointer, found) in matches(value, row.pointer) {
            let applies = match row.when {
                When::Present => !found.is_null(),
                When::True => found == &Value::Bool(true),
                When::Not(expected) => found.as_str().is_some_and(|s| s != expected),
            };
            if applies {
                let written = match found {
                    Value::String(s) if matches!(row.when, When::Not(_)) => format!("`{}: {s}`", dotted(&pointer)),
                    _ => format!("`{}`", dotted(&pointer)),
                };
                let message = format!(
                    "{written} is not carried out yet: {} is not built (comes with {}); {}",
                    row.what, row.built_by, row.instead
                );
                out.push((row, pointer, message));
            }
        }
    }
    out
}

/// The diagnostics of [`findings`] for one parsed document, each at the field's position.
pub fn diagnostics(file: &str, kind: Kind, doc: &Document) -> Vec<Diagnostic> {
    findings(kind, &doc.value)
        .into_iter()
        .map(|(row, pointer, message)| {
            let pos = doc.spans.locate_key(&pointer);
            match row.severity {
                Severity::Error => Diagnostic::error(file, pos, &pointer, RULE, message),
                Severity::Warning => Diagnostic::warning(file, pos, &pointer, RULE, message),
            }
        })
        .collect()
}

/// `/spec/strategy/type` → `spec.strategy.type`.
fn dotted(pointer: &str) -> String {
    crate::yaml::pointer_tokens(pointer).join(".")
}

/// The values at `pattern` (a JSON pointer whose `*` tokens match every key), with their pointers.
fn matches<'v>(value: &'v Value, pattern: &str) -> Vec<(String, &'v Value)> {
    let mut found = vec![(String::new(), value)];
    for token in pattern.split('/').skip(1) {
        let mut next = Vec::new();
        for (pointer, v) in found {
            let Value::Object(map) = v else { continue };
            if token == "*" {
                next.extend(map.iter().map(|(k, child)| (pointer_push(&pointer, k), child)));
            } else if let Some(child) = map.get(token) {
                next.push((pointer_push(&pointer, token), child));
            }
        }
        found = next;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_row_applies_only_to_what_it_names() {
        let app = json!({"spec": {"strategy": {"type": "direct"}, "sync": {"selfHeal": false, "prune": true}}});
        assert!(findings(Kind::App, &app).is_empty());
        let app = json!({"spec": {"strategy": {"type": "canary", "autoRevert": "branch"}, "sync": {"selfHeal": true}}});
        let found: Vec<(&str, Severity)> =
            findings(Kind::App, &app).iter().map(|(r, _, _)| (r.pointer, r.severity)).collect();
        assert_eq!(found, [("/spec/strategy/type", Severity::Error), ("/spec/strategy/autoRevert", Severity::Error)]);
    }

    #[test]
    fn wildcards_expand_to_every_cluster() {
        let config =
            json!({"clusters": {"a": {"workloads": "k", "mesh": "m"}, "b": {"workloads": "k", "metrics": "p"}}});
        let pointers: Vec<String> = findings(Kind::Config, &config).into_iter().map(|(_, p, _)| p).collect();
        assert_eq!(pointers, ["/clusters/a/mesh", "/clusters/b/metrics"]);
    }

    #[test]
    fn every_row_points_at_a_field_its_schema_accepts() {
        for row in NOT_BUILT {
            let schema = crate::schema::SCHEMAS.iter().find(|s| s.kind == row.kind).expect("a schema per kind");
            let mut node: Value = serde_json::from_str(schema.json).expect("schemas are JSON");
            for token in row.pointer.split('/').skip(1) {
                let props = node.get("properties").cloned();
                node = match (token, props) {
                    ("*", _) => node.get("additionalProperties").cloned().unwrap_or_default(),
                    (t, Some(p)) => p.get(t).cloned().unwrap_or_default(),
                    _ => Value::Null,
                };
                if let Some(r) = node.get("$ref").and_then(Value::as_str) {
                    let def = r.rsplit('/').next().unwrap_or_default();
                    let root: Value = serde_json::from_str(schema.json).unwrap_or_default();
                    node = root.pointer(&format!("/$defs/{def}")).cloned().unwrap_or_default();
                }
                assert!(!node.is_null(), "{} is not in the {} schema", row.pointer, row.kind);
            }
        }
    }
}
