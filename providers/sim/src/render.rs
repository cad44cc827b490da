//! App → sim resources. Pure: no I/O, so `keelson plan` can run it in CI.

use async_trait::async_trait;
use keelson_manifest::App;
use keelson_provider_api::{DesiredResource, Error, Owner, RenderCtx, Renderer, ResourceId, Result};
use serde_json::{Map, Value, json};

use super::spec::{API_VERSION, Kind, NODE_POOL, ROUTE, WORKLOAD};

/// The sim's renderer: a Workload per variant, a Route when the app is exposed, and a
/// (cluster-scoped) NodePool when it asks for spot capacity.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimRenderer;

#[async_trait]
impl Renderer for SimRenderer {
    async fn render(&self, app: &App, ctx: &RenderCtx) -> Result<Vec<DesiredResource>> {
        render(app, ctx)
    }
}

/// The resources the sim instance of `ctx` would hold for `app`.
pub fn render(app: &App, ctx: &RenderCtx) -> Result<Vec<DesiredResource>> {
    let name = &app.metadata.name;
    let namespace = app.metadata.team.as_deref().unwrap_or("default");
    // Through JSON, so the manifest crate can make these typed structs without breaking us.
    let spec = serde_json::to_value(&app.spec).map_err(|e| Error::InvalidSpec {
        instance: ctx.instance.clone(),
        resource: format!("app {name}"),
        message: format!("cannot read the spec: {e}"),
    })?;
    let present = |field: &str| spec.get(field).filter(|v| !v.is_null()).cloned();

    let mut workload = Map::new();
    workload.insert("image".into(), json!(app.spec.image));
    workload.insert("replicas".into(), json!(app.spec.replicas));
    if let Some(resources) = present("resources") {
        workload.insert("resources".into(), resources);
    }
    workload.insert("variant".into(), json!(ctx.variant));
    workload.insert("weight".into(), json!(ctx.weight));

    let id =
        |kind: &str, name: String| ResourceId::namespaced(ctx.instance.clone(), API_VERSION, kind, namespace, &name);
    let resource = |id: ResourceId, spec: Map<String, Value>| DesiredResource {
        id,
        owner: Owner { app: name.as_str().into() },
        digest: ctx.digest.clone(),
        spec: Value::Object(spec),
    };

    let mut resources = vec![resource(id(WORKLOAD, format!("{name}{}", ctx.variant.suffix())), workload)];
    // One Route per app whatever the variant: shifting traffic between variants is the traffic
    // router's job, so every variant renders the same Route and re-applying it is a no-op.
    if let Some(expose) = present("expose") {
        let mut route = Map::new();
        route.insert("service".into(), json!(name));
        route.insert("expose".into(), expose);
        resources.push(resource(id(ROUTE, name.clone()), route));
    }
    if let Some(pool) = &app.spec.placement.node_pool {
        let mut spec = Map::new();
        spec.insert("serverClass".into(), json!(pool.server_class));
        if let Some(bid) = &pool.max_bid {
            spec.insert("maxBid".into(), json!(bid));
        }
        spec.insert("onDemandFallback".into(), json!(pool.on_demand_fallback));
        let pool_id = ResourceId::cluster_scoped(ctx.instance.clone(), API_VERSION, NODE_POOL, name);
        resources.push(resource(pool_id, spec));
    }

    for r in &resources {
        let kind = Kind::parse(&r.id.api_version, &r.id.kind).expect("render only emits sim kinds");
        let mut problems = kind.scope_problems(&r.id);
        problems.extend(kind.problems(&r.spec));
        if !problems.is_empty() {
            return Err(Error::InvalidSpec {
                instance: ctx.instance.clone(),
                resource: format!("{} (app {name})", r.id),
                message: problems.join("; "),
            });
        }
    }
    Ok(resources)
}
