//! The `Policy` kind: admission rules, freeze windows, quotas and Rego modules.
//!
//! Only the shape lives here; evaluating policies is the planner's job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Metadata;

/// One policy document from `policies/*.yaml`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// Always [`crate::API_VERSION`].
    pub api_version: String,
    /// Always `Policy`.
    pub kind: String,
    /// Name (unique across the repository) and owner.
    pub metadata: Metadata,
    /// Rules, freezes, quotas, Rego.
    pub spec: PolicySpec,
}

/// The body of a policy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Admission rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Windows in which no rollout starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<FreezeWindow>,
    /// Per-team ceilings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<Quota>,
    /// Repository paths of extra Rego modules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rego: Vec<String>,
}

/// One admission rule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Rule name, shown in verdicts.
    pub name: String,
    /// Which apps the rule applies to; all when empty.
    #[serde(default, rename = "match")]
    pub matches: RuleMatch,
    /// Deny when every condition holds (dotted spec path → `present`, `absent`, value or list).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deny: BTreeMap<String, serde_json::Value>,
    /// Deny unless every condition holds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub require: BTreeMap<String, serde_json::Value>,
    /// Shown to the author of a denied change.
    pub message: String,
}

/// Selects apps by name glob, team, labels and compliance tags (all given parts must match).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleMatch {
    /// App name globs (`*`, `?`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Owning team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Compliance tags of which the app must carry at least one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compliance: Vec<String>,
}

/// A recurring window in which rollouts wait.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FreezeWindow {
    /// 5-field crontab expression for when the window opens.
    pub cron: String,
    /// How long it stays open (duration text).
    pub duration: String,
    /// IANA time zone of `cron`; UTC when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Why, shown on blocked apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A team's ceilings across all its apps.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quota {
    /// Team the quota applies to.
    pub team: String,
    /// Most GPUs (replicas × gpu count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// Most replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}
