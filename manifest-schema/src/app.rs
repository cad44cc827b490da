//! The `App` kind: one application in the state repository.
//!
//! These types mirror `schemas/app.v1alpha1.json`; a document is deserialized into them only
//! after it passed that schema, so every error a user sees comes with a position.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One application, as declared in `apps/<name>/deploy.yaml`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct App {
    /// Always [`crate::API_VERSION`].
    pub api_version: String,
    /// Always `App`.
    pub kind: String,
    /// Name, team, labels.
    pub metadata: Metadata,
    /// What to run and how.
    pub spec: AppSpec,
}

/// Name, owning team and labels of an app (policies share the shape).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// DNS-1123 label; equals the app's directory name.
    pub name: String,
    /// Owning team, used by policy matches and quotas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Free-form labels matched by policies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Compliance regimes (`pci`, `hipaa`, …) matched by policies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compliance: Vec<String>,
}

/// What an app wants: image, size, placement, exposure, rollout and sync behaviour.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppSpec {
    /// Container image by digest or tag; empty for `manifests:` apps.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Number of instances; 1 when omitted.
    #[serde(default = "one")]
    pub replicas: u32,
    /// Resources per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Ports the container listens on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Outside access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Expose>,
    /// HTTP health probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Where the app runs.
    pub placement: Placement,
    /// How new versions are rolled out; `direct` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Drift and prune behaviour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncPolicy>,
    /// Leave the app exactly as it is.
    #[serde(default)]
    pub suspend: bool,
    /// Apps that must be healthy first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Plain Kubernetes YAML to deploy instead of an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests: Option<Manifests>,
}

fn one() -> u32 {
    1
}

/// One environment variable: a literal value or a reference to a secret.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Literal value (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Secret the workload provider resolves at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// A key of a named secret; the value itself never appears in git.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Secret name.
    pub name: String,
    /// Key inside the secret.
    pub key: String,
}

/// Resources each instance requests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// CPU as written (`500m`, `2`); see [`crate::units::parse_cpu_millis`].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "string_or_number")]
    pub cpu: Option<String>,
    /// Memory as written (`512Mi`); see [`crate::units::parse_memory_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "string_or_number")]
    pub memory: Option<String>,
    /// GPUs per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
}

/// GPUs (or MIG slices) per instance.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gpu {
    /// How many GPUs, or MIG slices when `mig` is set.
    pub count: u32,
    /// Model such as `H100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// MIG profile such as `1g.10gb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig: Option<String>,
}

/// A port the container listens on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    /// Optional port name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port number.
    pub port: u16,
    /// Protocol; `tcp` when omitted.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Protocol of a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Protocol {
    /// Plain TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// HTTP/1.1 or HTTP/2.
    Http,
    /// gRPC.
    Grpc,
}

/// How the app is reached from outside its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expose {
    /// Container port to expose.
    pub port: u16,
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// HTTP path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Terminate TLS.
    #[serde(default)]
    pub tls: bool,
}

/// HTTP health probes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    /// Gates traffic to an instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<HttpProbe>,
    /// Restarts an instance that fails it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<HttpProbe>,
}

/// One HTTP GET probe.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbe {
    /// Path to GET.
    pub path: String,
    /// Port to probe.
    pub port: u16,
    /// Wait before the first probe (duration text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<String>,
    /// Time between probes (duration text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// Probe timeout (duration text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Failures before the instance counts as unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
}

/// Where an app runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    /// Cluster name, bound to providers by the daemon config.
    pub cluster: String,
    /// Spot capacity to run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<NodePool>,
    /// GPU pool to schedule on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_pool: Option<String>,
}

/// Spot capacity an app runs on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePool {
    /// Server class such as `gp.vs1.large-iad`.
    pub server_class: String,
    /// Highest hourly bid as decimal text (`"0.08"`); kept as text so money never becomes a float.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "string_or_number")]
    pub max_bid: Option<String>,
    /// Fall back to on-demand capacity when outbid.
    #[serde(default)]
    pub on_demand_fallback: bool,
}

/// How a new version replaces the old one.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Strategy {
    /// Kind of rollout.
    #[serde(default, rename = "type")]
    pub kind: StrategyType,
    /// Canary traffic percentages, strictly increasing, ending at 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<u8>,
    /// Observation time per step (duration text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Metric checks at every step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Gate>,
    /// What to do in git after a failed rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_revert: Option<AutoRevert>,
}

/// Kind of rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StrategyType {
    /// Replace everything at once.
    #[default]
    Direct,
    /// Replace instances a few at a time.
    Rolling,
    /// Start the new version beside the old, then switch traffic.
    BlueGreen,
    /// Shift traffic in steps, checking gates at each.
    Canary,
}

/// A metric check; the step fails when the metric leaves the bounds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gate {
    /// Metric name (`success-rate`, `latency-p99`).
    pub metric: String,
    /// Lowest acceptable value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest acceptable value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Highest acceptable latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
}

/// Where a revert commit for a failed rollout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AutoRevert {
    /// Commit the revert to the tracked branch.
    Push,
    /// Write it to `keelson/revert/<app>-<seq>` for a pull request.
    Branch,
}

/// What the daemon does about drift and removed resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncPolicy {
    /// Undo changes made outside git (default true: drift is healed unless this says false).
    #[serde(default = "yes")]
    pub self_heal: bool,
    /// Delete resources the app no longer declares (`None`: not written; see
    /// `docs/manifest-reference.md` for what each case does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<bool>,
    /// JSON pointers whose drift is ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_differences: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy { self_heal: true, prune: None, ignore_differences: Vec::new() }
    }
}

/// Plain Kubernetes YAML deployed from the app's directory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifests {
    /// Folder or file relative to `apps/<name>/`.
    pub path: String,
    /// Format of the files.
    #[serde(default, rename = "type")]
    pub kind: ManifestsType,
}

/// Format of an app's manifests folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ManifestsType {
    /// Kubernetes objects applied as they are.
    #[default]
    Plain,
}

/// Accepts `cpu: 2` as well as `cpu: "2"`: YAML users rarely quote numbers.
fn string_or_number<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(Option::<Raw>::deserialize(deserializer)?.map(|raw| match raw {
        Raw::Text(s) => s,
        Raw::Number(n) => n.to_string(),
    }))
}
