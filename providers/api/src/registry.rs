//! Provider types build instances from typed settings; clusters bind instances to roles.
//!
//! The daemon registers one [`ProviderFactory`] per type it ships (`sim`, later `kubernetes`,
//! `plugin`, …) in [`Factories`] and never matches on type names: config validation asks the
//! factory for its settings schema, `keelson plan` asks it for a [`Renderer`], and the daemon asks
//! it to build an [`Instance`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keelson_manifest::App;
use keelson_manifest::app::StrategyType;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::deadline::WithDeadline;
use crate::{
    Capability, Clock, Error, InstanceName, MetricsSource, Provider, ProviderDescriptor, Renderer, Result,
    TrafficRouter,
};

/// An instance's own settings as written under `providers.<name>` (without `type` and `timeout`).
pub type Settings = serde_json::Map<String, Value>;

/// What building an instance may use: where it may keep state, its clock, and its deadline.
#[derive(Debug, Clone)]
pub struct BuildEnv {
    /// The daemon's data directory (a provider's own files go here, e.g. `sim.db`).
    pub data_dir: PathBuf,
    /// The clock providers must use for time they report.
    pub clock: Arc<dyn Clock>,
    /// The instance's deadline per call (`timeout:`). [`Instances`] enforces it on every call;
    /// a provider that must also stop the work itself (the plugin host stops a hung process) reads it.
    pub timeout: Duration,
}

/// One provider type: its settings, its renderer, and how to build instances.
#[async_trait]
pub trait ProviderFactory: Send + Sync {
    /// The `type:` that selects it in config.
    fn provider_type(&self) -> &'static str;
    /// One line for `--help` and docs.
    fn summary(&self) -> &'static str;
    /// What every instance of this type can do (checked against cluster roles without building).
    fn capabilities(&self) -> Vec<Capability>;
    /// JSON Schema of the settings of one instance: an object whose `properties` are the type's
    /// own settings (`type` and `timeout` are common to every type and added by the caller).
    fn settings_schema(&self) -> Value;
    /// The renderer of an instance with these settings: pure, no credentials, no network.
    fn renderer(&self, instance: &InstanceName, settings: &Settings) -> Result<Arc<dyn Renderer>>;
    /// Builds a running instance.
    async fn build(&self, instance: &InstanceName, settings: &Settings, env: &BuildEnv) -> Result<Instance>;
}

/// A built provider instance: the I/O provider, and the router and metrics source if it has them.
#[derive(Clone)]
pub struct Instance {
    /// Observes, applies, deletes, reports health.
    pub provider: Arc<dyn Provider>,
    /// Shifts traffic between variants, if the type can.
    pub router: Option<Arc<dyn TrafficRouter>>,
    /// Answers metric gates, if the type can.
    pub metrics: Option<Arc<dyn MetricsSource>>,
    /// Renders apps for this instance.
    pub renderer: Arc<dyn Renderer>,
}

/// Every provider type this build knows, by `type:` name.
#[derive(Clone, Default)]
pub struct Factories {
    by_type: BTreeMap<&'static str, Arc<dyn ProviderFactory>>,
}

impl Factories {
    /// No types yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a type.
    pub fn register(&mut self, factory: Arc<dyn ProviderFactory>) {
        self.by_type.insert(factory.provider_type(), factory);
    }

    /// The factory of `provider_type`, or a message listing the types there are.
    pub fn get(&self, provider_type: &str) -> std::result::Result<&Arc<dyn ProviderFactory>, String> {
        self.by_type.get(provider_type).ok_or_else(|| {
            format!(
                "unknown provider type {provider_type:?}; this build has: {}",
                self.types().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The known type names, sorted.
    pub fn types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_type.keys().copied()
    }
}

/// One instance as config declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSpec {
    /// Its name (the key under `providers:`).
    pub name: InstanceName,
    /// Its `type:`.
    pub provider_type: String,
    /// Deadline of each call (`timeout:`, default [`crate::deadline::DEFAULT`]).
    pub timeout: Duration,
    /// Everything else written for it.
    pub settings: Settings,
}

/// A built instance with its deadline applied.
#[derive(Clone)]
pub struct BoundInstance {
    /// Its `type:`.
    pub provider_type: String,
    /// Deadline of each call.
    pub timeout: Duration,
    /// The provider, every call within `timeout`.
    pub provider: Arc<dyn Provider>,
    /// The router, every call within `timeout`.
    pub router: Option<Arc<dyn TrafficRouter>>,
    /// The metrics source, every call within `timeout`.
    pub metrics: Option<Arc<dyn MetricsSource>>,
    /// Its renderer.
    pub renderer: Arc<dyn Renderer>,
}

impl BoundInstance {
    /// Who it is.
    pub fn descriptor(&self) -> &ProviderDescriptor {
        self.provider.descriptor()
    }
}

/// The built instances of a daemon, by name.
#[derive(Clone, Default)]
pub struct Instances {
    by_name: BTreeMap<InstanceName, BoundInstance>,
}

impl Instances {
    /// Adds a built instance, wrapping every call in the spec's deadline.
    pub fn insert(&mut self, spec: &InstanceSpec, built: Instance) {
        let name = spec.name.clone();
        let after = spec.timeout;
        let bound = BoundInstance {
            provider_type: spec.provider_type.clone(),
            timeout: after,
            provider: Arc::new(WithDeadline::new(built.provider, name.clone(), after)),
            router: built.router.map(|r| Arc::new(WithDeadline::new(r, name.clone(), after)) as Arc<dyn TrafficRouter>),
            metrics: built
                .metrics
                .map(|m| Arc::new(WithDeadline::new(m, name.clone(), after)) as Arc<dyn MetricsSource>),
            renderer: built.renderer,
        };
        self.by_name.insert(name, bound);
    }

    /// The instance named `name`.
    pub fn get(&self, name: &str) -> Result<&BoundInstance> {
        self.by_name.get(name).ok_or_else(|| Error::NoSuchInstance(name.to_owned()))
    }

    /// Every instance, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&InstanceName, &BoundInstance)> {
        self.by_name.iter()
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// A job a cluster gives to one provider instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// Runs the app's workloads.
    Workloads,
    /// Provides (spot) capacity.
    Capacity,
    /// Shifts traffic between variants.
    Mesh,
    /// Answers metric gates.
    Metrics,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Workloads, Role::Capacity, Role::Mesh, Role::Metrics];

    /// The key under `clusters.<name>` in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Workloads => "workloads",
            Role::Capacity => "capacity",
            Role::Mesh => "mesh",
            Role::Metrics => "metrics",
        }
    }

    /// What the instance bound to this role must be able to do.
    pub fn capability(self) -> Capability {
        match self {
            Role::Workloads => Capability::Workloads,
            Role::Capacity => Capability::Capacity,
            Role::Mesh => Capability::TrafficSplit,
            Role::Metrics => Capability::Metrics,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which instance serves each role of one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterBinding {
    /// Runs workloads.
    pub workloads: Option<InstanceName>,
    /// Provides capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<InstanceName>,
    /// Splits traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh: Option<InstanceName>,
    /// Answers metric gates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<InstanceName>,
}

impl ClusterBinding {
    /// Every role bound to `instance`.
    pub fn all(instance: &InstanceName) -> Self {
        Self {
            workloads: Some(instance.clone()),
            capacity: Some(instance.clone()),
            mesh: Some(instance.clone()),
            metrics: Some(instance.clone()),
        }
    }

    /// The instance serving `role`, if one is bound.
    pub fn get(&self, role: Role) -> Option<&InstanceName> {
        match role {
            Role::Workloads => self.workloads.as_ref(),
            Role::Capacity => self.capacity.as_ref(),
            Role::Mesh => self.mesh.as_ref(),
            Role::Metrics => self.metrics.as_ref(),
        }
    }
}

/// Cluster name → instances by role; with a default, every cluster not listed gets it in every role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterBindings {
    /// Clusters bound in config.
    pub clusters: BTreeMap<String, ClusterBinding>,
    /// The instance of every role of every cluster not listed (`sim` without `providers:`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<InstanceName>,
}

/// Something about an app's placement that the bindings cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementProblem {
    /// The app.
    pub app: String,
    /// Its `placement.cluster`.
    pub cluster: String,
    /// The role that is missing or cannot be served.
    pub role: Role,
    /// What is wrong and what to do, for people.
    pub message: String,
}

impl ClusterBindings {
    /// Every cluster bound to `instance` in every role.
    pub fn everything_to(instance: InstanceName) -> Self {
        Self { clusters: BTreeMap::new(), default: Some(instance) }
    }

    /// The binding of `cluster`, if it has one.
    pub fn binding(&self, cluster: &str) -> Option<ClusterBinding> {
        self.clusters.get(cluster).cloned().or_else(|| self.default.as_ref().map(ClusterBinding::all))
    }

    /// The instance serving `role` for `cluster`, or an error naming the cluster and the role.
    pub fn instance(&self, cluster: &str, role: Role) -> Result<InstanceName, String> {
        let Some(binding) = self.binding(cluster) else {
            return Err(format!(
                "cluster {cluster:?} is not bound to any provider; add it under `clusters:` in the daemon config"
            ));
        };
        binding.get(role).cloned().ok_or_else(|| {
            format!("cluster {cluster:?} has no {role} provider; set `clusters.{cluster}.{role}` in the daemon config")
        })
    }

    /// Checks that `app`'s cluster has an instance for every role the app needs, and that each can
    /// do what the role asks (`capabilities` gives an instance's capabilities, `None` when there is
    /// no such instance).
    pub fn check(
        &self,
        app: &App,
        capabilities: impl Fn(&InstanceName) -> Option<Vec<Capability>>,
    ) -> Vec<PlacementProblem> {
        let cluster = &app.spec.placement.cluster;
        let name = &app.metadata.name;
        let problem = |role: Role, message: String| PlacementProblem {
            app: name.clone(),
            cluster: cluster.clone(),
            role,
            message,
        };
        let mut out = Vec::new();
        for (role, why) in required_roles(app) {
            match self.instance(cluster, role) {
                Err(message) => out.push(problem(role, format!("app {name}: {why}, but {message}"))),
                Ok(instance) => match capabilities(&instance) {
                    None => out.push(problem(
                        role,
                        format!(
                            "app {name}: cluster {cluster:?} binds {role} to provider instance {:?}, which is not defined under `providers:`", instance.as_str()
                        ),
                    )),
                    Some(caps) if !caps.contains(&role.capability()) => out.push(problem(
                        role,
                        format!(
                            "app {name}: {why}, but provider instance {:?} bound as the {role} of cluster {cluster:?} lacks the {} capability",
                            instance.as_str(),
                            role.capability()
                        ),
                    )),
                    Some(_) => {}
                },
            }
        }
        out
    }
}

/// The roles `app` needs from its cluster, each with the reason.
pub fn required_roles(app: &App) -> Vec<(Role, &'static str)> {
    let mut roles = vec![(Role::Workloads, "every app runs on a workloads provider")];
    if let Some(strategy) = &app.spec.strategy {
        match strategy.kind {
            StrategyType::Canary => roles.push((Role::Mesh, "a canary strategy shifts traffic through a mesh")),
            StrategyType::BlueGreen => {
                roles.push((Role::Mesh, "a blue-green strategy switches traffic through a mesh"))
            }
            StrategyType::Direct | StrategyType::Rolling => {}
        }
        if !strategy.gates.is_empty() {
            roles.push((Role::Metrics, "its strategy has metric gates"));
        }
    }
    roles
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_manifest::app::{Gate, Strategy};

    fn app(cluster: &str, strategy: Option<Strategy>) -> App {
        let mut app = App::default();
        app.metadata.name = "web".into();
        app.spec.placement.cluster = cluster.into();
        app.spec.strategy = strategy;
        app
    }

    fn canary_with_gates() -> Strategy {
        Strategy {
            kind: StrategyType::Canary,
            steps: vec![10, 100],
            gates: vec![Gate { metric: "success-rate".into(), min: Some(99.0), ..Gate::default() }],
            ..Strategy::default()
        }
    }

    fn caps(all: &[(&str, &[Capability])]) -> impl Fn(&InstanceName) -> Option<Vec<Capability>> {
        let map: BTreeMap<String, Vec<Capability>> = all.iter().map(|(n, c)| (n.to_string(), c.to_vec())).collect();
        move |i| map.get(i.as_str()).cloned()
    }

    #[test]
    fn a_default_binds_every_role_of_every_cluster() {
        let b = ClusterBindings::everything_to("sim".into());
        for role in Role::ALL {
            assert_eq!(b.instance("anywhere", role).unwrap(), "sim");
        }
        let all = [Capability::Workloads, Capability::TrafficSplit, Capability::Metrics];
        assert!(b.check(&app("prod", Some(canary_with_gates())), caps(&[("sim", &all)])).is_empty());
    }

    #[test]
    fn a_canary_on_a_cluster_without_mesh_names_app_cluster_and_role() {
        let mut b = ClusterBindings::default();
        b.clusters.insert("prod-east".into(), ClusterBinding { workloads: Some("k8s".into()), ..Default::default() });
        let problems =
            b.check(&app("prod-east", Some(canary_with_gates())), caps(&[("k8s", &[Capability::Workloads])]));
        let roles: Vec<Role> = problems.iter().map(|p| p.role).collect();
        assert_eq!(roles, [Role::Mesh, Role::Metrics]);
        assert!(problems[0].message.contains("app web"), "{}", problems[0].message);
        assert!(problems[0].message.contains("\"prod-east\" has no mesh provider"), "{}", problems[0].message);
        assert!(problems[0].message.contains("clusters.prod-east.mesh"), "{}", problems[0].message);
    }

    #[test]
    fn a_role_bound_to_an_instance_that_cannot_serve_it_is_a_problem() {
        let mut b = ClusterBindings::default();
        let binding = ClusterBinding { workloads: Some("k8s".into()), mesh: Some("k8s".into()), ..Default::default() };
        b.clusters.insert("prod".into(), binding);
        let blue_green = Strategy { kind: StrategyType::BlueGreen, ..Strategy::default() };
        let problems = b.check(&app("prod", Some(blue_green)), caps(&[("k8s", &[Capability::Workloads])]));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("lacks the trafficSplit capability"), "{}", problems[0].message);
    }

    #[test]
    fn unbound_clusters_and_undefined_instances_are_problems() {
        let mut b = ClusterBindings::default();
        b.clusters.insert("prod".into(), ClusterBinding { workloads: Some("gone".into()), ..Default::default() });
        let problems = b.check(&app("staging", None), caps(&[]));
        assert!(problems[0].message.contains("\"staging\" is not bound"), "{}", problems[0].message);
        let problems = b.check(&app("prod", None), caps(&[]));
        assert!(problems[0].message.contains("\"gone\", which is not defined"), "{}", problems[0].message);
    }

    #[test]
    fn direct_and_rolling_need_only_workloads() {
        for kind in [StrategyType::Direct, StrategyType::Rolling] {
            let roles: Vec<Role> = required_roles(&app("c", Some(Strategy { kind, ..Strategy::default() })))
                .into_iter()
                .map(|r| r.0)
                .collect();
            assert_eq!(roles, [Role::Workloads]);
        }
    }
}
