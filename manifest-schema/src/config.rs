//! The `Config` kind: the daemon's own `keelson.yaml`, validated like manifests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use serde_json::Value;

use crate::suggest::closest;
use crate::units::{check_cron, check_listen, parse_duration};
use crate::validate::Manifest;
use crate::yaml::{Document, Position, pointer_push};
use crate::{Diagnostic, Kind};

/// The daemon configuration (`keelson.yaml`); command-line flags override it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Always [`crate::API_VERSION`].
    pub api_version: String,
    /// Always `Config`.
    pub kind: String,
    /// The state repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceConfig>,
    /// The status branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusConfig>,
    /// Ledger database URL (`sqlite://…` or `postgres://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Status API listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiConfig>,
    /// Full drift scans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftConfig>,
    /// How much of the fleet one commit may delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_guard: Option<PruneGuardConfig>,
    /// Apps reconciled in parallel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Named provider instances.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Cluster name → provider instance per role.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clusters: BTreeMap<String, ClusterBinding>,
}

/// Where the state repository is and how changes are noticed and trusted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceConfig {
    /// URL or local path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Tracked branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Sub-folder holding `apps/` and `policies/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Fetch interval (duration text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<String>,
    /// Follow a rewritten tracked branch (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_force_push: Option<bool>,
    /// Credentials for a remote, from files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsConfig>,
    /// Push-notification listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
    /// Refuse unsigned head commits.
    #[serde(default)]
    pub require_signed_commits: bool,
    /// ssh `allowed_signers` file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_signers: Option<String>,
}

/// Credentials for a remote source: file paths only.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialsConfig {
    /// HTTP basic user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the HTTP password or token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// File holding a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// ssh private key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key_file: Option<String>,
    /// ssh known_hosts file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_file: Option<String>,
}

/// The webhook listener.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    /// `host:port`.
    pub listen: String,
    /// File holding the shared secret (the secret itself never sits in config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
}

/// Where status commits go.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusConfig {
    /// Status branch name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Least time between pushes (duration text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_interval: Option<String>,
    /// Separate repository for status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Identity of status commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<AuthorConfig>,
}

/// A git identity.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorConfig {
    /// Name, as in `git log`.
    pub name: String,
    /// E-mail address.
    pub email: String,
}

/// The status API listener.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiConfig {
    /// `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

/// How drift is looked for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriftConfig {
    /// Every app is observed again this long after it was last looked at (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// 5-field crontab expression (UTC): every app is also observed at these times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// JSON pointers never counted as drift, by resource kind (`Deployment: [/spec/replicas]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ignore_differences: BTreeMap<String, Vec<String>>,
}

/// The prune guard.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PruneGuardConfig {
    /// The largest share of the fleet (percent, default 50) one commit may delete without
    /// `Keelson-Allow-Prune: true`; a commit deleting every app always needs the trailer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_percent: Option<u32>,
}

/// A named provider instance: its type plus settings only that provider interprets.
// No `deny_unknown_fields`: the settings are free-form per provider type (serde cannot combine
// it with `flatten` anyway).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProviderConfig {
    /// Provider type (`kubernetes`, `spot`, `exec`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Every other field, as written.
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// Which provider instance serves each role for one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterBinding {
    /// Runs workloads.
    pub workloads: String,
    /// Provides (spot) capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    /// Splits traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
    /// Answers metric gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

/// Parses and validates a `keelson.yaml`: one `Config` document, schema, provider references,
/// durations and cron expressions. Every problem is returned, each at `path:line:col`.
pub fn parse_config(path: &str, bytes: &[u8]) -> Result<Config, Vec<Diagnostic>> {
    match crate::validate::parse_single(path, bytes, Kind::Config)? {
        Manifest::Config(config) => Ok(*config),
        // parse_single only returns the kind it was asked for.
        other => Err(vec![Diagnostic::error(
            path,
            Position::START,
            "",
            "manifest.kind",
            format!("expected a Config document, found a {}", other.kind()),
        )]),
    }
}

/// [`parse_config`], also returning the warnings of a config without errors (settings that are
/// accepted but not carried out, see [`crate::not_built`]).
pub fn check_config(path: &str, bytes: &[u8]) -> Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>> {
    match crate::validate::parse_single_with_warnings(path, bytes, Kind::Config)? {
        (Manifest::Config(config), warnings) => Ok((*config, warnings)),
        (other, _) => Err(vec![Diagnostic::error(
            path,
            Position::START,
            "",
            "manifest.kind",
            format!("expected a Config document, found a {}", other.kind()),
        )]),
    }
}

/// Checks of a Config document beyond its schema: durations, cron, listen addresses, and
/// clusters that name provider instances which exist.
pub(crate) fn check_config_document(file: &str, doc: &Document) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let error = |pointer: &str, rule: &str, message: String| {
        Diagnostic::error(file, doc.spans.locate_value(pointer), pointer, rule, message)
    };
    let text = |pointer: &str| doc.value.pointer(pointer).and_then(Value::as_str);
    for pointer in ["/source/pollInterval", "/status/pushInterval", "/drift/interval"] {
        if let Some(s) = text(pointer)
            && let Err(e) = parse_duration(s)
        {
            out.push(error(pointer, "config.duration", e));
        }
    }
    for pointer in ["/source/webhook/listen", "/api/listen"] {
        if let Some(s) = text(pointer)
            && let Err(e) = check_listen(s)
        {
            out.push(error(pointer, "config.listen", e));
        }
    }
    if let Some(s) = text("/drift/schedule")
        && let Err(e) = check_cron(s)
    {
        out.push(error("/drift/schedule", "config.cron", e));
    }
    let providers: Vec<&str> = match doc.value.pointer("/providers") {
        Some(Value::Object(m)) => m.keys().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    if let Some(Value::Object(clusters)) = doc.value.pointer("/clusters") {
        for (cluster, binding) in clusters {
            let Value::Object(roles) = binding else { continue };
            for (role, instance) in roles {
                let Some(instance) = instance.as_str() else { continue };
                if providers.contains(&instance) {
                    continue;
                }
                let pointer = pointer_push(&pointer_push("/clusters", cluster), role);
                let mut d = error(
                    &pointer,
                    "config.unknown-provider",
                    format!(
                        "cluster `{cluster}` uses provider instance `{instance}` as {role}, \
                         but `providers` has no such instance"
                    ),
                );
                if let Some(s) = closest(instance, providers.iter().copied()) {
                    d = d.with_hint(format!("did you mean `{s}`?"));
                }
                out.push(d);
            }
        }
    }
    out
}
