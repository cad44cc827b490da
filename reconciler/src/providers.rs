//! Provider instances of a daemon: the provider types this build ships, instances built from the
//! config's `providers:`, and clusters bound to them by role (`clusters:`). Without `providers:`
//! one `sim` instance serves every role of every cluster, and the daemon says so.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use keelson_manifest::config::{ClusterBinding as ClusterConfig, ProviderConfig};
use keelson_provider_api::registry::{ClusterBinding, InstanceSpec, PlacementProblem};
use keelson_provider_api::{
    BuildEnv, Capability, ClusterBindings, Factories, InstanceName, Instances, Renderer, Role, SystemClock,
};
use keelson_provider_kubernetes::KubeFactory;
use keelson_provider_plugin::PluginFactory;
use keelson_provider_sim::{SimConfig, SimFactory};
use serde::Serialize;

/// The name of the instance a daemon without `providers:` runs on.
pub const DEFAULT_INSTANCE: &str = "sim";

/// Every provider type this build ships, by `type:`; `sim` starts from `sim_defaults`.
pub fn factories(sim_defaults: SimConfig) -> Factories {
    let mut factories = Factories::new();
    factories.register(Arc::new(SimFactory::new(sim_defaults)));
    factories.register(Arc::new(PluginFactory));
    factories.register(Arc::new(KubeFactory));
    factories
}

/// Instances as declared: `providers:` of the config, or the one default `sim`.
pub fn specs(providers: &BTreeMap<String, ProviderConfig>) -> Result<Vec<InstanceSpec>> {
    if providers.is_empty() {
        return Ok(vec![InstanceSpec {
            name: InstanceName::new(DEFAULT_INSTANCE),
            provider_type: "sim".into(),
            timeout: keelson_provider_api::deadline::DEFAULT,
            settings: Default::default(),
        }]);
    }
    providers
        .iter()
        .map(|(name, p)| {
            let mut settings = p.settings.clone();
            let timeout = match settings.remove("timeout") {
                None => keelson_provider_api::deadline::DEFAULT,
                Some(serde_json::Value::String(text)) => keelson_manifest::units::parse_duration(&text)
                    .map_err(|e| anyhow::anyhow!("providers.{name}.timeout: {e}"))?,
                Some(other) => bail!("providers.{name}.timeout: expected a duration such as 5s, got {other}"),
            };
            Ok(InstanceSpec { name: InstanceName::new(name.clone()), provider_type: p.kind.clone(), timeout, settings })
        })
        .collect()
}

/// Clusters bound by role; without `providers:`, everything goes to the default `sim`.
pub fn bindings(
    providers: &BTreeMap<String, ProviderConfig>,
    clusters: &BTreeMap<String, ClusterConfig>,
) -> ClusterBindings {
    if providers.is_empty() {
        return ClusterBindings::everything_to(InstanceName::new(DEFAULT_INSTANCE));
    }
    let instance = |name: &Option<String>| name.as_ref().map(|n| InstanceName::new(n.clone()));
    ClusterBindings {
        clusters: clusters
            .iter()
            .map(|(cluster, b)| {
                let binding = ClusterBinding {
                    workloads: Some(InstanceName::new(b.workloads.clone())),
                    capacity: instance(&b.capacity),
                    mesh: instance(&b.mesh),
                    metrics: instance(&b.metrics),
                };
                (cluster.clone(), binding)
            })
            .collect(),
        default: None,
    }
}

/// The instances and bindings of a running daemon.
#[derive(Clone)]
pub struct Providers {
    /// Built instances, every call within its deadline.
    pub instances: Instances,
    /// Which instance serves each role of each cluster.
    pub bindings: ClusterBindings,
    /// What `/api/v1/status` shows about them.
    pub status: ProvidersStatus,
}

impl Providers {
    /// The renderer of the instance serving `cluster`'s workloads.
    pub fn workloads(&self, cluster: &str) -> std::result::Result<InstanceName, String> {
        self.bindings.instance(cluster, Role::Workloads)
    }

    /// What in `app`'s placement these instances cannot serve.
    pub fn placement_problems(&self, app: &keelson_manifest::App) -> Vec<PlacementProblem> {
        self.bindings.check(app, |i| self.instances.get(i).ok().map(|b| b.descriptor().capabilities.clone()))
    }
}

/// The providers as the status API shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvidersStatus {
    /// Every instance.
    pub instances: Vec<InstanceStatus>,
    /// Which instance serves each role of each cluster.
    pub bindings: ClusterBindings,
    /// True when no `providers:` were configured and everything runs on the built-in simulator.
    pub simulated: bool,
    /// For people.
    pub message: String,
}

/// One instance as the status API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Its name.
    pub name: InstanceName,
    /// Its type.
    #[serde(rename = "type")]
    pub provider_type: String,
    /// Version of its implementation.
    pub version: String,
    /// What it can do.
    pub capabilities: Vec<Capability>,
    /// Deadline of each call, in milliseconds.
    pub timeout_ms: u64,
}

/// Builds every instance and the bindings; without `providers:`, one `sim` for everything.
pub async fn build(
    providers: &BTreeMap<String, ProviderConfig>,
    clusters: &BTreeMap<String, ClusterConfig>,
    sim_defaults: SimConfig,
    data_dir: &Path,
) -> Result<Providers> {
    let factories = factories(sim_defaults);
    let specs = specs(providers)?;
    let mut instances = Instances::default();
    for spec in &specs {
        let env = BuildEnv { data_dir: data_dir.to_path_buf(), clock: Arc::new(SystemClock), timeout: spec.timeout };
        let factory = factories
            .get(&spec.provider_type)
            .map_err(|e| anyhow::anyhow!("provider {}: {e}; see the status table in README.md", spec.name))?;
        let built = factory
            .build(&spec.name, &spec.settings, &env)
            .await
            .with_context(|| format!("starting provider instance {} ({})", spec.name, spec.provider_type))?;
        instances.insert(spec, built);
    }
    let bindings = bindings(providers, clusters);
    for (cluster, binding) in &bindings.clusters {
        for role in Role::ALL {
            if let Some(instance) = binding.get(role) {
                let bound = instances.get(instance).map_err(|_| {
                    anyhow::anyhow!(
                        "cluster {cluster}: {role} provider {:?} is not defined under `providers:`",
                        instance.as_str()
                    )
                })?;
                if !bound.descriptor().has(role.capability()) {
                    bail!(
                        "cluster {cluster}: provider {:?} ({}) cannot serve as {role}: it lacks the {} capability",
                        instance.as_str(),
                        bound.provider_type,
                        role.capability()
                    );
                }
            }
        }
    }
    let simulated = providers.is_empty();
    let message = if simulated {
        "no `providers:` in the daemon config: every cluster is bound to the built-in simulator (sim) in every role"
            .to_owned()
    } else {
        format!("{} provider instance(s) from the daemon config", instances.len())
    };
    let status = ProvidersStatus {
        instances: instances
            .iter()
            .map(|(name, b)| InstanceStatus {
                name: name.clone(),
                provider_type: b.provider_type.clone(),
                version: b.descriptor().version.clone(),
                capabilities: b.descriptor().capabilities.clone(),
                timeout_ms: u64::try_from(b.timeout.as_millis()).unwrap_or(u64::MAX),
            })
            .collect(),
        bindings: bindings.clone(),
        simulated,
        message,
    };
    Ok(Providers { instances, bindings, status })
}

/// The conformance suite against the plugin executable at `path` (`keelson provider test
/// --plugin`), as an instance named after the file, keeping its state under `data_dir`.
pub async fn test_plugin(path: &Path, data_dir: &Path) -> keelson_provider_api::conformance::Report {
    let name = path.file_stem().map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned());
    let command = if path.is_relative() && path.components().count() == 1 && !path.exists() {
        path.display().to_string()
    } else {
        std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string()
    };
    let mut config = keelson_provider_plugin::HostConfig::new(name.as_str(), vec![command]);
    config.data_dir = Some(data_dir.join("plugins").join(&name));
    keelson_provider_plugin::conformance::run(config, Default::default()).await
}

/// Renderers of every cluster for `keelson plan` and `keelson validate`: built from the config's
/// settings without credentials, network or state.
#[derive(Clone)]
pub struct Renderers {
    bindings: ClusterBindings,
    by_instance: BTreeMap<InstanceName, Arc<dyn Renderer>>,
    capabilities: BTreeMap<InstanceName, Vec<Capability>>,
}

impl Renderers {
    /// Renderers as a config declares them (none: the default `sim` for every cluster).
    pub fn from_config(
        providers: &BTreeMap<String, ProviderConfig>,
        clusters: &BTreeMap<String, ClusterConfig>,
    ) -> Result<Renderers> {
        let factories = factories(SimConfig::default());
        let mut by_instance = BTreeMap::new();
        let mut capabilities = BTreeMap::new();
        for spec in specs(providers)? {
            let factory =
                factories.get(&spec.provider_type).map_err(|e| anyhow::anyhow!("provider {}: {e}", spec.name))?;
            let renderer = factory
                .renderer(&spec.name, &spec.settings)
                .with_context(|| format!("the renderer of provider {}", spec.name))?;
            by_instance.insert(spec.name.clone(), renderer);
            capabilities.insert(spec.name.clone(), factory.capabilities());
        }
        Ok(Renderers { bindings: bindings(providers, clusters), by_instance, capabilities })
    }

    /// The instance serving `cluster`'s workloads and its renderer.
    pub fn for_cluster(&self, cluster: &str) -> std::result::Result<(InstanceName, Arc<dyn Renderer>), String> {
        let instance = self.bindings.instance(cluster, Role::Workloads)?;
        let renderer = self.by_instance.get(&instance).cloned().ok_or_else(|| {
            format!(
                "cluster {cluster:?} binds workloads to {:?}, which is not defined under `providers:`",
                instance.as_str()
            )
        })?;
        Ok((instance, renderer))
    }

    /// What in `app`'s placement the configured providers cannot serve.
    pub fn placement_problems(&self, app: &keelson_manifest::App) -> Vec<PlacementProblem> {
        self.bindings.check(app, |i| self.capabilities.get(i).cloned())
    }
}
