//! One cluster: server-side apply under the field manager `keelson`, observe from
//! `managedFields`, health from rollout status, foreground delete.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use keelson_provider_api::{
    Capability, DesiredResource, Error, ErrorClass, Health, IdempotencyKey, InstanceName, KindDescriptor, KindExample,
    Observed, Outcome, Provider, ProviderDescriptor, ResourceId, Result,
};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, Semaphore};

use crate::errors::{from_kube, from_status};
use crate::settings::KubeSettings;
use crate::{DIGEST_ANNOTATION, FIELD_MANAGER, MANAGED_BY_LABEL, TAKE_OWNERSHIP_ANNOTATION, fields, health};

/// What every instance can do.
pub const CAPABILITIES: [Capability; 3] = [Capability::Workloads, Capability::Scale, Capability::Health];

/// How long `delete` waits for an object to be gone before it answers.
const DELETE_WAIT: Duration = Duration::from_secs(2);
/// Finalizers that only mean "the API server is still deleting": not a stuck object.
const DELETING_FINALIZERS: [&str; 2] = ["foregroundDeletion", "kubernetes"];

/// A provider instance bound to one cluster.
pub struct KubeProvider {
    descriptor: ProviderDescriptor,
    client: kube::Client,
    kinds: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
    namespaces: Mutex<HashSet<String>>,
    throttle: Semaphore,
}

impl KubeProvider {
    /// Connects through the instance's kubeconfig (file and context), the in-cluster service
    /// account, or the environment's default kubeconfig.
    pub async fn connect(instance: &InstanceName, settings: &KubeSettings) -> Result<Self> {
        let config = if settings.in_cluster {
            kube::Config::incluster().map_err(|e| setup(instance, format!("in-cluster config: {e}")))?
        } else if let Some(path) = &settings.kubeconfig {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| setup(instance, format!("kubeconfig {}: {e}", path.display())))?;
            let options = kube::config::KubeConfigOptions { context: settings.context.clone(), ..Default::default() };
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| setup(instance, format!("kubeconfig {}: {e}", path.display())))?
        } else {
            let options = kube::config::KubeConfigOptions { context: settings.context.clone(), ..Default::default() };
            kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| setup(instance, format!("default kubeconfig ($KUBECONFIG or ~/.kube/config): {e}")))?
        };
        if config.cluster_url.scheme_str() == Some("https") {
            return Err(setup(
                instance,
                format!(
                    "{} is https, and this build links no TLS stack yet (README status table); \
                     only plain-http API servers (a local proxy such as `kubectl proxy`) work",
                    config.cluster_url
                ),
            ));
        }
        let client = kube::Client::try_from(config).map_err(|e| setup(instance, format!("client: {e}")))?;
        Ok(Self::with_client(instance, client, settings))
    }

    /// An instance over an existing client.
    pub fn with_client(instance: &InstanceName, client: kube::Client, settings: &KubeSettings) -> Self {
        Self {
            descriptor: descriptor(instance),
            client,
            kinds: Mutex::default(),
            namespaces: Mutex::default(),
            throttle: Semaphore::new(settings.max_in_flight()),
        }
    }

    fn instance(&self) -> &InstanceName {
        &self.descriptor.instance
    }

    /// The API resource of `id`'s kind, and whether it is namespaced (discovery, cached).
    async fn resolve(&self, id: &ResourceId) -> Result<(ApiResource, bool)> {
        let key = (id.api_version.clone(), id.kind.clone());
        if let Some(found) = self.kinds.lock().await.get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = match id.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", id.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &id.kind);
        let found = {
            let _permit = self.throttle.acquire().await;
            kube::discovery::pinned_kind(&self.client, &gvk).await
        };
        let (resource, caps) = match found {
            Ok(found) => found,
            Err(kube::Error::Api(s)) if s.code == 404 => return Err(self.unknown_kind(id)),
            Err(kube::Error::Discovery(_)) => return Err(self.unknown_kind(id)),
            Err(e) => return Err(from_kube(self.instance(), id, e)),
        };
        let entry = (resource, caps.scope == Scope::Namespaced);
        self.kinds.lock().await.insert(key, entry.clone());
        Ok(entry)
    }

    fn unknown_kind(&self, id: &ResourceId) -> Error {
        Error::UnknownKind {
            instance: self.instance().clone(),
            api_version: id.api_version.clone(),
            kind: id.kind.clone(),
        }
    }

    /// The API of `id`'s kind in its namespace, after checking the id's scope.
    async fn api(&self, id: &ResourceId) -> Result<Api<DynamicObject>> {
        let (resource, namespaced) = self.resolve(id).await?;
        match (&id.namespace, namespaced) {
            (Some(ns), true) => Ok(Api::namespaced_with(self.client.clone(), ns, &resource)),
            (None, false) => Ok(Api::all_with(self.client.clone(), &resource)),
            (None, true) => Err(self.invalid(id, format!("{} is namespaced; the id needs a namespace", id.kind))),
            (Some(_), false) => {
                Err(self.invalid(id, format!("{} is cluster-scoped; the id must not name a namespace", id.kind)))
            }
        }
    }

    fn invalid(&self, id: &ResourceId, message: String) -> Error {
        Error::InvalidSpec { instance: self.instance().clone(), resource: id.to_string(), message }
    }

    async fn get(&self, id: &ResourceId) -> Result<Option<Value>> {
        let api = match self.api(id).await {
            // No object can exist under an id of the wrong scope.
            Err(Error::InvalidSpec { .. }) => return Ok(None),
            other => other?,
        };
        let _permit = self.throttle.acquire().await;
        match api.get_opt(&id.name).await {
            Ok(found) => Ok(found.map(|o| serde_json::to_value(o).unwrap_or(Value::Null))),
            Err(e) => Err(from_kube(self.instance(), id, e)),
        }
    }

    async fn observe_one(&self, id: &ResourceId) -> Result<Option<Observed>> {
        Ok(self.get(id).await?.map(|live| {
            let (spec, digest) = managed(&live);
            Observed { id: id.clone(), digest: digest.map(Into::into), spec }
        }))
    }

    async fn health_one(&self, id: &ResourceId) -> Result<Health> {
        Ok(match self.get(id).await? {
            None => Health::Missing,
            Some(live) => health::of(&id.kind, &live),
        })
    }

    /// The object to apply: the spec with the id's identity and the digest annotation.
    fn body(&self, r: &DesiredResource) -> Result<Value> {
        let id = &r.id;
        let Value::Object(spec) = &r.spec else {
            return Err(self.invalid(id, format!("the spec must be an object, not {}", r.spec)));
        };
        for (field, want) in [("apiVersion", &id.api_version), ("kind", &id.kind)] {
            if let Some(got) = spec.get(field)
                && got.as_str() != Some(want)
            {
                return Err(self.invalid(id, format!("{field} is {got}, but the id says {want:?}")));
            }
        }
        let mut body = spec.clone();
        body.insert("apiVersion".into(), json!(id.api_version));
        body.insert("kind".into(), json!(id.kind));
        let metadata = body.entry("metadata").or_insert_with(|| json!({}));
        let Value::Object(metadata) = metadata else {
            return Err(self.invalid(id, "metadata must be an object".into()));
        };
        for (field, want) in [("name", Some(&id.name)), ("namespace", id.namespace.as_ref())] {
            if let Some(got) = metadata.get(field)
                && want.is_none_or(|w| got.as_str() != Some(w))
            {
                return Err(self.invalid(id, format!("metadata.{field} is {got}, but the id says {want:?}")));
            }
        }
        metadata.insert("name".into(), json!(id.name));
        if let Some(ns) = &id.namespace {
            metadata.insert("namespace".into(), json!(ns));
        }
        let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
        let Value::Object(annotations) = annotations else {
            return Err(self.invalid(id, "metadata.annotations must be a map".into()));
        };
        annotations.insert(DIGEST_ANNOTATION.into(), json!(r.digest.as_str()));
        Ok(Value::Object(body))
    }

    async fn server_side_apply(&self, r: &DesiredResource, body: &Value, force: bool) -> Result<()> {
        let api = self.api(&r.id).await?;
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = force;
        let result = {
            let _permit = self.throttle.acquire().await;
            api.patch(&r.id.name, &params, &Patch::Apply(body)).await
        };
        match result {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 && s.details.as_ref().is_some_and(|d| d.kind == "namespaces") => {
                Err(Error::Failed {
                    instance: self.instance().clone(),
                    message: format!("namespace-missing:{}", r.id.namespace.clone().unwrap_or_default()),
                    class: ErrorClass::Transient,
                })
            }
            Err(kube::Error::Api(s)) => Err(from_status(self.instance(), &r.id, &s)),
            Err(e) => Err(from_kube(self.instance(), &r.id, e)),
        }
    }

    /// Creates a namespace Keelson was asked to put objects in (team namespaces are shared by
    /// the team's apps, so none of them renders it; it is never pruned).
    async fn ensure_namespace(&self, namespace: &str, for_id: &ResourceId) -> Result<()> {
        if self.namespaces.lock().await.contains(namespace) {
            return Ok(());
        }
        let id = ResourceId::cluster_scoped(self.instance().clone(), "v1", "Namespace", namespace);
        let api = self.api(&id).await?;
        let body = json!({"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": namespace, "labels": {MANAGED_BY_LABEL: "keelson"}}});
        let result = {
            let _permit = self.throttle.acquire().await;
            api.patch(namespace, &PatchParams::apply("keelson-namespaces"), &Patch::Apply(&body)).await
        };
        result.map_err(|e| match from_kube(self.instance(), &id, e) {
            Error::Forbidden { message, .. } => Error::Forbidden {
                instance: self.instance().clone(),
                resource: for_id.to_string(),
                message: format!("namespace {namespace} does not exist and cannot be created: {message}"),
            },
            other => other,
        })?;
        self.namespaces.lock().await.insert(namespace.to_owned());
        Ok(())
    }
}

fn setup(instance: &InstanceName, message: String) -> Error {
    Error::Failed { instance: instance.clone(), message, class: ErrorClass::Terminal }
}

/// The fields Keelson applied, as a spec (identity and digest annotation removed), and the digest.
pub fn managed(live: &Value) -> (Value, Option<String>) {
    let digest = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(DIGEST_ANNOTATION))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut spec = match fields::applied_by(live, FIELD_MANAGER) {
        Some(owned) => fields::project(live, owned).unwrap_or_else(|| json!({})),
        None => json!({}),
    };
    if let Value::Object(top) = &mut spec {
        top.remove("apiVersion");
        top.remove("kind");
        if let Some(Value::Object(metadata)) = top.get_mut("metadata") {
            metadata.remove("name");
            metadata.remove("namespace");
            if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
                annotations.remove(DIGEST_ANNOTATION);
                if annotations.is_empty() {
                    metadata.remove("annotations");
                }
            }
            if metadata.is_empty() {
                top.remove("metadata");
            }
        }
    }
    (spec, digest)
}

fn finalizers(live: &Value) -> Vec<String> {
    live.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

#[async_trait]
impl Provider for KubeProvider {
    fn descriptor(&self) -> &ProviderDescriptor {
        &self.descriptor
    }

    async fn observe(&self, ids: &[ResourceId]) -> Vec<(ResourceId, Result<Option<Observed>>)> {
        join_all(ids.iter().map(async |id| (id.clone(), self.observe_one(id).await))).await
    }

    async fn apply(&self, r: &DesiredResource, _key: &IdempotencyKey) -> Result<Outcome> {
        let body = self.body(r)?;
        let current = self.get(&r.id).await?;
        if let Some(live) = &current {
            let (spec, digest) = managed(live);
            if spec == r.spec && digest.as_deref() == Some(r.digest.as_str()) {
                return Ok(Outcome::Unchanged);
            }
        }
        let force = r
            .spec
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(TAKE_OWNERSHIP_ANNOTATION))
            .and_then(Value::as_str)
            == Some("true");
        match self.server_side_apply(r, &body, force).await {
            Err(Error::Failed { message, .. }) if message.starts_with("namespace-missing:") => {
                let namespace = r.id.namespace.as_deref().unwrap_or_default();
                self.ensure_namespace(namespace, &r.id).await?;
                self.server_side_apply(r, &body, force).await?;
            }
            other => other?,
        }
        Ok(if current.is_some() { Outcome::Updated } else { Outcome::Created })
    }

    async fn delete(&self, id: &ResourceId, _key: &IdempotencyKey) -> Result<Outcome> {
        let api = self.api(id).await?;
        let result = {
            let _permit = self.throttle.acquire().await;
            api.delete(&id.name, &DeleteParams::foreground()).await
        };
        match result {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Outcome::NotFound),
            Err(e) => return Err(from_kube(self.instance(), id, e)),
        }
        // Foreground deletion deletes dependents first; wait a little, then say what holds it.
        let deadline = tokio::time::Instant::now() + DELETE_WAIT;
        loop {
            let Some(live) = self.get(id).await? else { return Ok(Outcome::Deleted) };
            let holding: Vec<String> =
                finalizers(&live).into_iter().filter(|f| !DELETING_FINALIZERS.contains(&f.as_str())).collect();
            if tokio::time::Instant::now() >= deadline {
                if holding.is_empty() {
                    // Still deleting its dependents (or a namespace's content): under way.
                    return Ok(Outcome::Deleted);
                }
                return Err(Error::Failed {
                    instance: self.instance().clone(),
                    message: format!(
                        "{id} is being deleted but held by finalizers {}; the controller that owns them must \
                         finish (or remove them by hand)",
                        holding.join(", ")
                    ),
                    class: ErrorClass::Transient,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn health(&self, ids: &[ResourceId]) -> Vec<(ResourceId, Result<Health>)> {
        join_all(ids.iter().map(async |id| (id.clone(), self.health_one(id).await))).await
    }
}

/// Who an instance is: the kinds the conformance suite exercises (any other kind the cluster
/// serves is applied too, found through discovery).
fn descriptor(instance: &InstanceName) -> ProviderDescriptor {
    let labels = |extra: Value| {
        let mut l = Map::new();
        l.insert("keelson.dev/conformance".into(), json!("true"));
        if let Value::Object(e) = extra {
            l.extend(e);
        }
        Value::Object(l)
    };
    let bad_labels = json!({"metadata": {"labels": {"not a label key!": "x"}}});
    let kind = |api_version: &str, kind: &str, namespaced: bool, valid: Value, invalid: Value| KindDescriptor {
        api_version: api_version.into(),
        kind: kind.into(),
        namespaced,
        example: KindExample { valid, invalid },
    };
    let pod = json!({"metadata": {"labels": {"app": "conformance"}},
                     "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}});
    ProviderDescriptor {
        instance: instance.clone(),
        provider_type: "kubernetes".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        kinds: vec![
            kind("v1", "Namespace", false, json!({"metadata": {"labels": labels(json!({}))}}), bad_labels.clone()),
            kind("v1", "ServiceAccount", true, json!({"metadata": {"labels": labels(json!({}))}}), bad_labels.clone()),
            kind("v1", "ConfigMap", true, json!({"data": {"greeting": "hello"}}), json!({"data": {"greeting": 1}})),
            kind(
                "v1",
                "Service",
                true,
                json!({"spec": {"selector": {"app": "conformance"},
                                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}),
                json!({"spec": {"ports": [{"name": "http", "port": 0, "protocol": "TCP"}]}}),
            ),
            kind(
                "apps/v1",
                "Deployment",
                true,
                json!({"spec": {"replicas": 1, "selector": {"matchLabels": {"app": "conformance"}}, "template": pod}}),
                json!({"spec": {"replicas": 1, "selector": {"matchLabels": {"app": "other"}}, "template": pod}}),
            ),
        ],
        capabilities: CAPABILITIES.to_vec(),
    }
}
