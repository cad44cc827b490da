//! Policy verdicts as the ledger records them and the engine acts on them. Evaluating policies
//! (rules, Rego, freeze windows, quotas) is the reconciler's; what a verdict is lives here.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which part of a policy produced a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VerdictKind {
    /// A rule's `deny` conditions all held.
    Rule,
    /// A rule's `require` conditions did not all hold.
    Require,
    /// A Rego module's `deny` (blocking) or `warn` (not blocking) produced a message.
    Rego,
    /// A freeze window is open.
    Freeze,
    /// A team is over its quota.
    Quota,
}

impl fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VerdictKind::Rule => "rule",
            VerdictKind::Require => "require",
            VerdictKind::Rego => "rego",
            VerdictKind::Freeze => "freeze",
            VerdictKind::Quota => "quota",
        })
    }
}

/// One finding of a policy about one app, with where in the repository it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// `metadata.name` of the policy.
    pub policy: String,
    /// Rule name; `<package>.deny`/`<package>.warn` for Rego, `freeze[i]` and `quotas[i].gpus|replicas`.
    pub rule: String,
    /// Which part of the policy spoke.
    pub kind: VerdictKind,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
    /// True when the change must not roll out.
    pub blocking: bool,
    /// File of the rule (the policy YAML, or the `.rego` module).
    pub file: String,
    /// 1-based line of the rule in `file`.
    pub line: usize,
    /// 1-based column of the rule in `file`.
    pub col: usize,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = if self.blocking { "deny" } else { "warn" };
        write!(
            f,
            "{}:{}:{}: {level}: {} {}/{}: {}",
            self.file, self.line, self.col, self.kind, self.policy, self.rule, self.message
        )
    }
}

/// What a set of verdicts blocks an app for, mapped by the engine onto `Blocked{policy | freeze}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Block {
    /// A rule, Rego module or quota denies the change; waiting does not help, a new commit does.
    Policy,
    /// Only a freeze window holds the change; it rolls out when the window closes.
    Freeze,
}

impl Block {
    /// The `reason` the ledger and status show (`Policy` or `Freeze`).
    pub fn reason(self) -> &'static str {
        match self {
            Block::Policy => "Policy",
            Block::Freeze => "Freeze",
        }
    }
}

/// Whether `verdicts` block the change, and why. A policy denial wins over a freeze: once the
/// window closes the change would still be denied, so that is what the author needs to hear.
pub fn blocked_by<'a>(verdicts: impl IntoIterator<Item = &'a Verdict>) -> Option<Block> {
    let mut block = None;
    for v in verdicts.into_iter().filter(|v| v.blocking) {
        if v.kind != VerdictKind::Freeze {
            return Some(Block::Policy);
        }
        block = Some(Block::Freeze);
    }
    block
}
