//! App → sim resources. Pure: no I/O, so `keelson plan` can run it in CI.

use keelson_manifest::App;
use serde_json::{Map, Value, json};

use super::spec::{API_VERSION, Kind, ROUTE, WORKLOAD};
use crate::{DesiredResource, Error, Owner, RenderCtx, ResourceId, Result, Variant};

/// The resources the sim instance `instance` would hold for `app` in this render context.
pub(crate) fn render(instance: &str, app: &App, ctx: &RenderCtx) -> Result<Vec<DesiredResource>> {
    let name = &app.metadata.name;
    let namespace = app.metadata.team.as_deref().unwrap_or("default");
    // Through JSON, so the manifest crate can make these typed structs without breaking us.
    let spec = serde_json::to_value(&app.spec).map_err(|e| Error::Failed {
        provider: instance.to_owned(),
        message: format!("cannot read the spec of app {name}: {e}"),
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

    let id = |kind: &str, name: String| ResourceId {
        instance: instance.to_owned(),
        api_version: API_VERSION.to_owned(),
        kind: kind.to_owned(),
        namespace: namespace.to_owned(),
        name,
    };
    let resource = |id: ResourceId, spec: Map<String, Value>| DesiredResource {
        id,
        owner: Owner { app: name.clone() },
        digest: ctx.digest.clone(),
        spec: Value::Object(spec),
    };

    let mut resources = vec![resource(id(WORKLOAD, format!("{name}{}", variant_suffix(ctx.variant))), workload)];
    // One Route per app whatever the variant: shifting traffic between variants is the traffic
    // router's job, so every variant renders the same Route and re-applying it is a no-op.
    if let Some(expose) = present("expose") {
        let mut route = Map::new();
        route.insert("service".into(), json!(name));
        route.insert("expose".into(), expose);
        resources.push(resource(id(ROUTE, name.clone()), route));
    }

    for r in &resources {
        let kind = Kind::parse(&r.id.api_version, &r.id.kind).expect("render only emits sim kinds");
        let problems = kind.problems(&r.spec);
        if !problems.is_empty() {
            return Err(Error::InvalidSpec {
                provider: instance.to_owned(),
                resource: format!("{} (app {name})", r.id),
                message: problems.join("; "),
            });
        }
    }
    Ok(resources)
}

fn variant_suffix(variant: Variant) -> &'static str {
    match variant {
        Variant::Stable => "",
        Variant::Canary => "-canary",
        Variant::Blue => "-blue",
        Variant::Green => "-green",
    }
}
