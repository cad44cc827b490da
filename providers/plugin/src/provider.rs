//! A plugin as the contract sees it: a [`Provider`], a [`Renderer`], and a [`TrafficRouter`] or
//! [`MetricsSource`] when its `describe` declares those capabilities. Every call is one JSON-RPC
//! request to the plugin's process; every failure becomes the contract's [`Error`] with a class.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keelson_manifest::App;
use keelson_manifest::app::Gate;
use keelson_provider_api::{
    AppRef, DesiredResource, Error, ErrorClass, Health, IdempotencyKey, InstanceName, MetricsSource, Observed, Outcome,
    Provider, ProviderDescriptor, RenderCtx, Renderer, ResourceId, Result, TrafficRouter, Variant, Weight,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::host::{CallError, PluginHost};
use crate::protocol::{
    Batch, HealthValue, METHOD_NOT_FOUND, Method, ObservedValue, OutcomeResult, PluginError, QueryResult, Reason,
    RenderResult, WeightsResult,
};

/// The `type:` of plugin instances, and of their descriptors.
pub const PROVIDER_TYPE: &str = "plugin";

/// What an error is about, for the contract's error fields.
#[derive(Clone, Copy)]
enum About<'a> {
    Id(&'a ResourceId),
    App(&'a str),
    Nothing,
}

impl About<'_> {
    fn text(&self) -> String {
        match self {
            About::Id(id) => id.to_string(),
            About::App(app) => format!("app {app}"),
            About::Nothing => String::new(),
        }
    }
}

/// The contract's error for a failed call of `method` to the plugin of `host`.
fn contract_error(host: &PluginHost, method: Method, error: CallError, about: About<'_>) -> Error {
    let instance = host.instance().clone();
    let label = host.label();
    match error {
        CallError::Hung { method, after } => {
            Error::DeadlineExceeded { instance, operation: method.as_str().to_owned(), after }
        }
        CallError::Plugin(e) => plugin_error(instance, &label, method, e, about),
        other => {
            let message = other.describe(&label, method);
            match other.class() {
                ErrorClass::Transient => Error::Unavailable { instance, message },
                class => Error::Failed { instance, message, class },
            }
        }
    }
}

/// The contract's error for an error the plugin answered with.
fn plugin_error(instance: InstanceName, label: &str, method: Method, e: PluginError, about: About<'_>) -> Error {
    let Some(data) = e.data else {
        let message = if e.code == METHOD_NOT_FOUND {
            format!("plugin {label} does not implement {method}: {}", e.message)
        } else {
            format!(
                "plugin {label}: {method}: {} (JSON-RPC error {} without a class: taken as terminal)",
                e.message, e.code
            )
        };
        return Error::Failed { instance, message, class: ErrorClass::Terminal };
    };
    let resource = data.resource.clone().unwrap_or_else(|| about.text());
    match (data.reason, about) {
        (Some(Reason::InvalidSpec), _) => Error::InvalidSpec { instance, resource, message: e.message },
        (Some(Reason::UnknownKind), About::Id(id)) => {
            Error::UnknownKind { instance, api_version: id.api_version.clone(), kind: id.kind.clone() }
        }
        (Some(Reason::Forbidden), _) => Error::Forbidden { instance, resource, message: e.message },
        (Some(Reason::Conflict), _) => Error::Conflict {
            instance,
            resource,
            manager: data.manager.unwrap_or_else(|| "another writer".into()),
            fields: data.fields,
        },
        (Some(Reason::Unavailable), _) => Error::Unavailable { instance, message: format!("{method}: {}", e.message) },
        _ => Error::Failed { instance, message: format!("plugin {label}: {method}: {}", e.message), class: data.class },
    }
}

/// A result that passed its schema but still cannot be read as the type (a schema gap).
fn read<T: DeserializeOwned>(host: &PluginHost, method: Method, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::Failed {
        instance: host.instance().clone(),
        message: format!("plugin {}: {method}: answer cannot be read: {e}", host.label()),
        class: ErrorClass::Terminal,
    })
}

/// One plugin instance, described.
pub struct PluginProvider {
    host: Arc<PluginHost>,
    descriptor: ProviderDescriptor,
}

impl PluginProvider {
    /// Starts the plugin of `host` (if it is not running) and reads its description.
    pub async fn connect(host: Arc<PluginHost>) -> Result<PluginProvider> {
        let description =
            host.start().await.map_err(|e| contract_error(&host, Method::Describe, e, About::Nothing))?.clone();
        let descriptor = ProviderDescriptor {
            instance: host.instance().clone(),
            provider_type: PROVIDER_TYPE.to_owned(),
            version: format!("{} {}", description.name, description.version),
            kinds: description.kinds,
            capabilities: description.capabilities,
        };
        Ok(PluginProvider { host, descriptor })
    }

    /// The host running the plugin.
    pub fn host(&self) -> &Arc<PluginHost> {
        &self.host
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, params: Value, about: About<'_>) -> Result<T> {
        let value = self.host.call(method, params).await.map_err(|e| contract_error(&self.host, method, e, about))?;
        read(&self.host, method, value)
    }

    /// A batch call answered per id; the answer must name the ids asked, in the order asked.
    async fn batch<T: DeserializeOwned>(
        &self,
        method: Method,
        ids: &[ResourceId],
    ) -> Result<Vec<(ResourceId, Result<T>)>> {
        let batch: Batch<T> = self.call(method, json!({"ids": ids}), About::Nothing).await?;
        let answered: Vec<&ResourceId> = batch.results.iter().map(|r| &r.id).collect();
        if answered.len() != ids.len() || answered.iter().zip(ids).any(|(a, b)| *a != b) {
            let show = |ids: Vec<&ResourceId>| ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            return Err(Error::Failed {
                instance: self.host.instance().clone(),
                message: format!(
                    "plugin {}: {method}: answered for [{}] but was asked for [{}] (one result per id, in the order asked)",
                    self.host.label(),
                    show(answered),
                    show(ids.iter().collect())
                ),
                class: ErrorClass::Terminal,
            });
        }
        let label = self.host.label();
        Ok(batch
            .results
            .into_iter()
            .map(|r| {
                let value = match r.error {
                    Some(e) => Err(plugin_error(self.host.instance().clone(), &label, method, e, About::Id(&r.id))),
                    None => Ok(r.value),
                };
                (r.id, value)
            })
            .collect())
    }

    /// Every id failed with the same error (the batch itself failed).
    fn all_failed<T>(ids: &[ResourceId], error: Error) -> Vec<(ResourceId, Result<T>)> {
        keelson_provider_api::each_failed(ids, || error.clone())
    }
}

#[async_trait]
impl Provider for PluginProvider {
    fn descriptor(&self) -> &ProviderDescriptor {
        &self.descriptor
    }

    async fn observe(&self, ids: &[ResourceId]) -> Vec<(ResourceId, Result<Option<Observed>>)> {
        match self.batch::<ObservedValue>(Method::Observe, ids).await {
            Err(e) => Self::all_failed(ids, e),
            Ok(answers) => answers
                .into_iter()
                .map(|(id, value)| {
                    let observed = value.map(|v| {
                        v.observed.map(|o| Observed { id: id.clone(), digest: o.digest.map(Into::into), spec: o.spec })
                    });
                    (id, observed)
                })
                .collect(),
        }
    }

    async fn apply(&self, resource: &DesiredResource, key: &IdempotencyKey) -> Result<Outcome> {
        let params = json!({"resource": resource, "key": key});
        Ok(self.call::<OutcomeResult>(Method::Apply, params, About::Id(&resource.id)).await?.outcome)
    }

    async fn delete(&self, id: &ResourceId, key: &IdempotencyKey) -> Result<Outcome> {
        let params = json!({"id": id, "key": key});
        Ok(self.call::<OutcomeResult>(Method::Delete, params, About::Id(id)).await?.outcome)
    }

    async fn health(&self, ids: &[ResourceId]) -> Vec<(ResourceId, Result<Health>)> {
        match self.batch::<HealthValue>(Method::Health, ids).await {
            Err(e) => Self::all_failed(ids, e),
            Ok(answers) => answers
                .into_iter()
                .map(|(id, value)| {
                    let health = value.and_then(|v| {
                        v.health.map(Health::from).ok_or_else(|| Error::Failed {
                            instance: self.host.instance().clone(),
                            message: format!("plugin {}: health: no health for {id}", self.host.label()),
                            class: ErrorClass::Terminal,
                        })
                    });
                    (id, health)
                })
                .collect(),
        }
    }
}

#[async_trait]
impl TrafficRouter for PluginProvider {
    async fn set_weights(&self, app: &AppRef, weights: &[Weight], key: &IdempotencyKey) -> Result<Outcome> {
        let params = json!({"app": app, "weights": weights, "key": key});
        Ok(self.call::<OutcomeResult>(Method::SetWeights, params, About::App(&app.app)).await?.outcome)
    }

    async fn weights(&self, app: &AppRef) -> Result<Vec<Weight>> {
        Ok(self.call::<WeightsResult>(Method::Weights, json!({"app": app}), About::App(&app.app)).await?.weights)
    }
}

#[async_trait]
impl MetricsSource for PluginProvider {
    async fn query(&self, app: &AppRef, gate: &Gate, variant: Variant, window: Duration) -> Result<f64> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let params = json!({"app": app, "gate": gate, "variant": variant, "windowMs": window_ms});
        Ok(self.call::<QueryResult>(Method::Query, params, About::App(&app.app)).await?.value)
    }
}

/// Renders through the plugin's `render`: the same process as the instance in the daemon, or
/// one started on first use for `keelson plan`.
pub struct PluginRenderer {
    host: Arc<PluginHost>,
}

impl PluginRenderer {
    /// Renders through `host`.
    pub fn new(host: Arc<PluginHost>) -> Self {
        Self { host }
    }

    /// What in a render answer breaks the contract: a resource on another instance, of a kind
    /// describe did not declare, of the wrong scope, or not stamped with the app and its digest.
    fn problems(&self, app: &App, ctx: &RenderCtx, resources: &[DesiredResource]) -> Vec<String> {
        let kinds = self.host.description().map(|d| d.kinds.as_slice()).unwrap_or_default();
        let mut out = Vec::new();
        for (i, r) in resources.iter().enumerate() {
            let at = format!("/result/resources/{i}");
            let id = &r.id;
            if id.instance != ctx.instance {
                out.push(format!("{at}/id/instance: {id} is not on instance {}", ctx.instance));
            }
            match kinds.iter().find(|k| k.api_version == id.api_version && k.kind == id.kind) {
                None => {
                    out.push(format!("{at}/id/kind: {}/{} is not a kind describe declared", id.api_version, id.kind))
                }
                Some(k) if k.namespaced != id.namespace.is_some() => out.push(format!(
                    "{at}/id/namespace: {} is {}",
                    k.qualified(),
                    if k.namespaced {
                        "namespaced, but the id has no namespace"
                    } else {
                        "cluster-scoped, but the id has a namespace"
                    }
                )),
                Some(_) => {}
            }
            if r.owner.app.as_str() != app.metadata.name {
                out.push(format!("{at}/owner/app: {} is not the app rendered ({})", r.owner.app, app.metadata.name));
            }
            if r.digest != ctx.digest {
                out.push(format!("{at}/digest: {} is not the digest of the render ({})", r.digest, ctx.digest));
            }
        }
        out
    }
}

#[async_trait]
impl Renderer for PluginRenderer {
    async fn render(&self, app: &App, ctx: &RenderCtx) -> Result<Vec<DesiredResource>> {
        let name = app.metadata.name.as_str();
        let params = json!({"app": app, "ctx": ctx});
        let value = self
            .host
            .call(Method::Render, params)
            .await
            .map_err(|e| contract_error(&self.host, Method::Render, e, About::App(name)))?;
        let resources = read::<RenderResult>(&self.host, Method::Render, value)?.resources;
        let problems = self.problems(app, ctx, &resources);
        if !problems.is_empty() {
            return Err(Error::Failed {
                instance: self.host.instance().clone(),
                message: format!("plugin {}: render of app {name}: {}", self.host.label(), problems.join("; ")),
                class: ErrorClass::Terminal,
            });
        }
        Ok(resources)
    }
}
