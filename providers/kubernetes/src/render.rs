//! App → Kubernetes objects. Pure: no cluster, no credentials, so `keelson plan` runs it in CI.
//!
//! Stable renders, in apply order: the Namespace (per-app mode only), ServiceAccount, Deployment,
//! Service (when the app has ports or is exposed) and Ingress (when it is exposed on a host).
//! Canary, blue and green render the same shared objects plus their own Deployment
//! (`<app>-<variant>`) and Service selecting only that variant's pods, so a mesh can weigh them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use keelson_manifest::App;
use keelson_manifest::app::{HttpProbe, Protocol};
use keelson_manifest::units::parse_duration;
use keelson_provider_api::{DesiredResource, Error, Owner, RenderCtx, Renderer, ResourceId, Result, Variant};
use serde_json::{Map, Value, json};

use crate::settings::{KubeSettings, NamespaceMode};
use crate::{APP_LABEL, MANAGED_BY_LABEL, NAME_LABEL, TEAM_LABEL, VARIANT_LABEL};

/// Node label selecting a spot server class (the well-known instance-type label).
pub const SERVER_CLASS_LABEL: &str = "node.kubernetes.io/instance-type";
/// Taint spot nodes carry; pods of apps on a spot node pool tolerate it.
pub const SPOT_TAINT: &str = "keelson.dev/spot";
/// Node label of a GPU pool (`placement.gpuPool`).
pub const GPU_POOL_LABEL: &str = "keelson.dev/gpu-pool";
/// Node label of a GPU model (`resources.gpu.model`).
pub const GPU_MODEL_LABEL: &str = "keelson.dev/gpu-model";
/// Node label NVIDIA's GPU feature discovery sets on GPU nodes.
pub const GPU_PRESENT_LABEL: &str = "nvidia.com/gpu.present";
/// The extended resource (and taint) of NVIDIA GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// The renderer of one instance's settings.
#[derive(Debug, Clone, Default)]
pub struct KubeRenderer {
    namespaces: NamespaceMode,
    ingress_class: Option<String>,
}

impl KubeRenderer {
    /// A renderer for instances with these settings.
    pub fn new(settings: &KubeSettings) -> Self {
        Self { namespaces: settings.namespaces, ingress_class: settings.ingress_class.clone() }
    }

    /// The namespace of `app`'s namespaced objects.
    pub fn namespace_of(&self, app: &App) -> String {
        match self.namespaces {
            NamespaceMode::Team => app.metadata.team.clone().unwrap_or_else(|| "default".to_owned()),
            NamespaceMode::App => app.metadata.name.clone(),
        }
    }

    /// The objects `app` wants in `ctx`.
    pub fn render_app(&self, app: &App, ctx: &RenderCtx) -> Result<Vec<DesiredResource>> {
        if app.spec.manifests.is_some() {
            return Err(invalid(
                ctx,
                app,
                "a `manifests:` app is rendered from its folder's files (manifests::render), not from spec.image"
                    .into(),
            ));
        }
        if app.spec.image.is_empty() {
            return Err(invalid(ctx, app, "spec.image is empty; name the container image to run".into()));
        }
        let r = Rendering { app, ctx, namespace: self.namespace_of(app) };
        let mut out = Vec::new();
        if self.namespaces == NamespaceMode::App {
            out.push(r.resource("v1", "Namespace", None, json!({"metadata": {"labels": r.labels(None)}})));
        }
        out.push(r.namespaced("v1", "ServiceAccount", r.name(), json!({"metadata": {"labels": r.labels(None)}})));
        out.push(r.deployment()?);
        if let Some(service) = r.service(Variant::Stable) {
            out.push(service);
        }
        if ctx.variant != Variant::Stable
            && let Some(service) = r.service(ctx.variant)
        {
            out.push(service);
        }
        if let Some(ingress) = r.ingress(self.ingress_class.as_deref()) {
            out.push(ingress);
        }
        Ok(out)
    }
}

#[async_trait]
impl Renderer for KubeRenderer {
    async fn render(&self, app: &App, ctx: &RenderCtx) -> Result<Vec<DesiredResource>> {
        self.render_app(app, ctx)
    }
}

fn invalid(ctx: &RenderCtx, app: &App, message: String) -> Error {
    Error::InvalidSpec { instance: ctx.instance.clone(), resource: format!("app {}", app.metadata.name), message }
}

struct Rendering<'a> {
    app: &'a App,
    ctx: &'a RenderCtx,
    namespace: String,
}

impl Rendering<'_> {
    fn name(&self) -> &str {
        &self.app.metadata.name
    }

    /// Ownership labels (plus the app's own labels); with a variant, the variant label too.
    fn labels(&self, variant: Option<Variant>) -> Value {
        let mut labels: BTreeMap<String, String> = self.app.metadata.labels.clone();
        labels.insert(NAME_LABEL.into(), self.name().into());
        labels.insert(MANAGED_BY_LABEL.into(), "keelson".into());
        labels.insert(APP_LABEL.into(), self.name().into());
        if let Some(team) = &self.app.metadata.team {
            labels.insert(TEAM_LABEL.into(), team.clone());
        }
        if let Some(v) = variant {
            labels.insert(VARIANT_LABEL.into(), v.as_str().into());
        }
        json!(labels)
    }

    fn selector(&self, variant: Option<Variant>) -> Value {
        let mut s = Map::new();
        s.insert(NAME_LABEL.into(), json!(self.name()));
        if let Some(v) = variant {
            s.insert(VARIANT_LABEL.into(), json!(v.as_str()));
        }
        Value::Object(s)
    }

    fn resource(&self, api_version: &str, kind: &str, namespace: Option<&str>, spec: Value) -> DesiredResource {
        let id = match namespace {
            Some(ns) => {
                ResourceId::namespaced(self.ctx.instance.clone(), api_version, kind, ns, &self.namespace_name())
            }
            None => ResourceId::cluster_scoped(self.ctx.instance.clone(), api_version, kind, &self.namespace_name()),
        };
        DesiredResource { id, owner: Owner { app: self.name().into() }, digest: self.ctx.digest.clone(), spec }
    }

    /// The Namespace's name (only rendered in per-app mode, where it is the app's name).
    fn namespace_name(&self) -> String {
        self.namespace.clone()
    }

    fn namespaced(&self, api_version: &str, kind: &str, name: &str, spec: Value) -> DesiredResource {
        let id = ResourceId::namespaced(self.ctx.instance.clone(), api_version, kind, &self.namespace, name);
        DesiredResource { id, owner: Owner { app: self.name().into() }, digest: self.ctx.digest.clone(), spec }
    }

    fn deployment(&self) -> Result<DesiredResource> {
        let spec = &self.app.spec;
        let variant = self.ctx.variant;
        let mut container = Map::new();
        container.insert("name".into(), json!(self.name()));
        container.insert("image".into(), json!(spec.image));
        if !spec.command.is_empty() {
            container.insert("command".into(), json!(spec.command));
        }
        if !spec.args.is_empty() {
            container.insert("args".into(), json!(spec.args));
        }
        if !spec.env.is_empty() {
            let env: Vec<Value> = spec
                .env
                .iter()
                .map(|e| match (&e.value, &e.secret_ref) {
                    (_, Some(s)) => {
                        json!({"name": e.name, "valueFrom": {"secretKeyRef": {"name": s.name, "key": s.key}}})
                    }
                    (Some(v), None) => json!({"name": e.name, "value": v}),
                    (None, None) => json!({"name": e.name, "value": ""}),
                })
                .collect();
            container.insert("env".into(), json!(env));
        }
        let ports = self.container_ports();
        if !ports.is_empty() {
            container.insert("ports".into(), json!(ports));
        }
        let mut pod = Map::new();
        pod.insert("serviceAccountName".into(), json!(self.name()));
        let mut node_selector = Map::new();
        let mut tolerations = Vec::new();
        if let Some(res) = &spec.resources {
            let mut requests = Map::new();
            let mut limits = Map::new();
            if let Some(cpu) = &res.cpu {
                requests.insert("cpu".into(), json!(cpu));
            }
            if let Some(memory) = &res.memory {
                requests.insert("memory".into(), json!(memory));
                limits.insert("memory".into(), json!(memory));
            }
            if let Some(gpu) = res.gpu.as_ref().filter(|g| g.count > 0) {
                let resource = match &gpu.mig {
                    Some(profile) => format!("nvidia.com/mig-{profile}"),
                    None => GPU_RESOURCE.to_owned(),
                };
                limits.insert(resource, json!(gpu.count.to_string()));
                node_selector.insert(GPU_PRESENT_LABEL.into(), json!("true"));
                if let Some(model) = &gpu.model {
                    node_selector.insert(GPU_MODEL_LABEL.into(), json!(model));
                }
                tolerations.push(json!({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}));
            }
            let mut resources = Map::new();
            if !requests.is_empty() {
                resources.insert("requests".into(), Value::Object(requests));
            }
            if !limits.is_empty() {
                resources.insert("limits".into(), Value::Object(limits));
            }
            if !resources.is_empty() {
                container.insert("resources".into(), Value::Object(resources));
            }
        }
        if let Some(health) = &spec.health {
            if let Some(p) = &health.readiness {
                container.insert("readinessProbe".into(), self.probe(p, "readiness")?);
            }
            if let Some(p) = &health.liveness {
                container.insert("livenessProbe".into(), self.probe(p, "liveness")?);
            }
        }
        if let Some(pool) = &spec.placement.gpu_pool {
            node_selector.insert(GPU_POOL_LABEL.into(), json!(pool));
        }
        if let Some(pool) = &spec.placement.node_pool {
            tolerations.push(json!({"key": SPOT_TAINT, "operator": "Exists", "effect": "NoSchedule"}));
            let term = json!({"matchExpressions": [{"key": SERVER_CLASS_LABEL, "operator": "In", "values": [pool.server_class]}]});
            // With an on-demand fallback the server class is a preference, so pods still schedule
            // when the spot pool is gone; without one it is a requirement.
            let node_affinity = if pool.on_demand_fallback {
                json!({"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": term}]})
            } else {
                json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}})
            };
            pod.insert("affinity".into(), json!({"nodeAffinity": node_affinity}));
        }
        if !node_selector.is_empty() {
            pod.insert("nodeSelector".into(), Value::Object(node_selector));
        }
        if !tolerations.is_empty() {
            pod.insert("tolerations".into(), json!(tolerations));
        }
        pod.insert("containers".into(), json!([container]));
        let body = json!({
            "metadata": {"labels": self.labels(Some(variant))},
            "spec": {
                "replicas": spec.replicas,
                "selector": {"matchLabels": self.selector(Some(variant))},
                "template": {
                    "metadata": {"labels": self.labels(Some(variant))},
                    "spec": pod,
                },
            },
        });
        Ok(self.namespaced("apps/v1", "Deployment", &format!("{}{}", self.name(), variant.suffix()), body))
    }

    /// The app's ports, plus the exposed port when no port lists it.
    fn container_ports(&self) -> Vec<Value> {
        let spec = &self.app.spec;
        let mut ports: Vec<Value> = spec
            .ports
            .iter()
            .map(|p| {
                let mut port = Map::new();
                if let Some(name) = &p.name {
                    port.insert("name".into(), json!(name));
                }
                port.insert("containerPort".into(), json!(p.port));
                port.insert("protocol".into(), json!(protocol(p.protocol)));
                Value::Object(port)
            })
            .collect();
        if let Some(expose) = &spec.expose
            && !spec.ports.iter().any(|p| p.port == expose.port)
        {
            ports.push(json!({"name": "http", "containerPort": expose.port, "protocol": "TCP"}));
        }
        ports
    }

    fn probe(&self, p: &HttpProbe, which: &str) -> Result<Value> {
        let mut probe = Map::new();
        probe.insert("httpGet".into(), json!({"path": p.path, "port": p.port}));
        for (field, text, key) in [
            ("initialDelay", &p.initial_delay, "initialDelaySeconds"),
            ("period", &p.period, "periodSeconds"),
            ("timeout", &p.timeout, "timeoutSeconds"),
        ] {
            if let Some(text) = text {
                let d = parse_duration(text)
                    .map_err(|e| invalid(self.ctx, self.app, format!("spec.health.{which}.{field}: {e}")))?;
                // Kubernetes counts whole seconds, at least one.
                probe.insert(key.into(), json!(d.as_secs().max(1)));
            }
        }
        if let Some(n) = p.failure_threshold {
            probe.insert("failureThreshold".into(), json!(n));
        }
        Ok(Value::Object(probe))
    }

    /// The app's Service (`variant` stable), or a variant's own (`<app>-<variant>`).
    fn service(&self, variant: Variant) -> Option<DesiredResource> {
        let ports: Vec<Value> = self
            .container_ports()
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let name = p.get("name").cloned().unwrap_or_else(|| json!(format!("port-{i}")));
                json!({"name": name, "port": p["containerPort"], "targetPort": p["containerPort"], "protocol": p["protocol"]})
            })
            .collect();
        if ports.is_empty() {
            return None;
        }
        let (name, selector, labels) = match variant {
            Variant::Stable => (self.name().to_owned(), self.selector(None), self.labels(None)),
            v => (format!("{}{}", self.name(), v.suffix()), self.selector(Some(v)), self.labels(Some(v))),
        };
        let body = json!({
            "metadata": {"labels": labels},
            "spec": {"type": "ClusterIP", "selector": selector, "ports": ports},
        });
        Some(self.namespaced("v1", "Service", &name, body))
    }

    fn ingress(&self, class: Option<&str>) -> Option<DesiredResource> {
        let expose = self.app.spec.expose.as_ref()?;
        let host = expose.host.as_ref()?;
        let path = expose.path.clone().unwrap_or_else(|| "/".to_owned());
        let mut spec = Map::new();
        if let Some(class) = class {
            spec.insert("ingressClassName".into(), json!(class));
        }
        if expose.tls {
            spec.insert("tls".into(), json!([{"hosts": [host], "secretName": format!("{}-tls", self.name())}]));
        }
        spec.insert(
            "rules".into(),
            json!([{"host": host, "http": {"paths": [{
                "path": path, "pathType": "Prefix",
                "backend": {"service": {"name": self.name(), "port": {"number": expose.port}}}
            }]}}]),
        );
        let body = json!({"metadata": {"labels": self.labels(None)}, "spec": spec});
        Some(self.namespaced("networking.k8s.io/v1", "Ingress", self.name(), body))
    }
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "UDP",
        Protocol::Tcp | Protocol::Http | Protocol::Grpc => "TCP",
    }
}

#[cfg(test)]
mod tests;
