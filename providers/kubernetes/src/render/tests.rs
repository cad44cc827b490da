//! Rendered objects as snapshots, built from small App builders.

use keelson_manifest::app::EnvVar;
use keelson_manifest::app::{Expose, Gpu, Health, HttpProbe, NodePool, Resources, SecretRef};
use serde_json::json;

use super::*;

fn app(name: &str) -> App {
    let mut app = App { api_version: keelson_manifest::API_VERSION.into(), kind: "App".into(), ..Default::default() };
    app.metadata.name = name.into();
    app.metadata.team = Some("web".into());
    app.spec.image =
        format!("registry.example.com/{name}@sha256:f425939dadde31097dc75b5392db71875cd0ea62463e08167030822e071a874c");
    app.spec.replicas = 3;
    app.spec.placement.cluster = "prod-east".into();
    app
}

fn ctx(variant: Variant) -> RenderCtx {
    RenderCtx {
        instance: "prod-east".into(),
        revision: "c0ffee".into(),
        digest: "sha256:d1".into(),
        variant,
        weight: 100,
    }
}

fn rendered(renderer: &KubeRenderer, app: &App, variant: Variant) -> Value {
    let resources = renderer.render_app(app, &ctx(variant)).unwrap();
    for r in &resources {
        assert_eq!(r.digest.as_str(), "sha256:d1");
        assert_eq!(r.owner.app.as_str(), app.metadata.name);
    }
    json!(
        resources
            .iter()
            .map(|r| json!({"id": r.id.to_string(), "apiVersion": r.id.api_version, "spec": r.spec}))
            .collect::<Vec<_>>()
    )
}

fn storefront() -> App {
    let mut a = app("storefront");
    a.metadata.labels.insert("tier".into(), "critical".into());
    a.spec.resources = Some(Resources { cpu: Some("500m".into()), memory: Some("512Mi".into()), gpu: None });
    a.spec.env = vec![
        EnvVar { name: "MODE".into(), value: Some("prod".into()), secret_ref: None },
        EnvVar {
            name: "DB_PASSWORD".into(),
            value: None,
            secret_ref: Some(SecretRef { name: "db".into(), key: "password".into() }),
        },
    ];
    a.spec.expose = Some(Expose { port: 8080, host: Some("shop.example.com".into()), path: None, tls: true });
    a.spec.health = Some(Health {
        readiness: Some(HttpProbe {
            path: "/ready".into(),
            port: 8080,
            period: Some("10s".into()),
            ..HttpProbe::default()
        }),
        liveness: Some(HttpProbe {
            path: "/live".into(),
            port: 8080,
            initial_delay: Some("30s".into()),
            failure_threshold: Some(3),
            ..HttpProbe::default()
        }),
    });
    a
}

#[test]
fn an_exposed_app_renders_account_deployment_service_and_tls_ingress() {
    let renderer = KubeRenderer::new(&KubeSettings { ingress_class: Some("nginx".into()), ..KubeSettings::default() });
    insta::assert_json_snapshot!("storefront", rendered(&renderer, &storefront(), Variant::Stable));
}

#[test]
fn a_gpu_app_asks_for_gpus_and_lands_on_gpu_nodes() {
    let mut a = app("llm-inference");
    a.metadata.team = Some("ml".into());
    a.spec.resources = Some(Resources {
        cpu: Some("4".into()),
        memory: Some("32Gi".into()),
        gpu: Some(Gpu { count: 1, model: Some("H100".into()), mig: None }),
    });
    a.spec.placement.gpu_pool = Some("h100-pool".into());
    insta::assert_json_snapshot!("gpu", rendered(&KubeRenderer::default(), &a, Variant::Stable));
}

#[test]
fn a_spot_app_tolerates_spot_nodes_and_requires_its_server_class_unless_it_may_fall_back() {
    let mut a = app("order-worker");
    a.spec.placement.node_pool = Some(NodePool {
        server_class: "gp.vs1.large-iad".into(),
        max_bid: Some("0.08".into()),
        on_demand_fallback: false,
    });
    insta::assert_json_snapshot!("spot", rendered(&KubeRenderer::default(), &a, Variant::Stable));
    a.spec.placement.node_pool.as_mut().unwrap().on_demand_fallback = true;
    let fallback = KubeRenderer::default().render_app(&a, &ctx(Variant::Stable)).unwrap();
    let deployment = fallback.iter().find(|r| r.id.kind == "Deployment").unwrap();
    let affinity = &deployment.spec["spec"]["template"]["spec"]["affinity"]["nodeAffinity"];
    assert!(affinity.get("requiredDuringSchedulingIgnoredDuringExecution").is_none(), "{affinity}");
    assert_eq!(affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"], 100);
}

#[test]
fn a_canary_renders_its_own_deployment_and_service_beside_the_shared_objects() {
    let renderer = KubeRenderer::default();
    let ids = |v| -> Vec<String> {
        renderer.render_app(&storefront(), &ctx(v)).unwrap().iter().map(|r| r.id.to_string()).collect()
    };
    assert_eq!(
        ids(Variant::Canary),
        [
            "prod-east:ServiceAccount/web/storefront",
            "prod-east:Deployment/web/storefront-canary",
            "prod-east:Service/web/storefront",
            "prod-east:Service/web/storefront-canary",
            "prod-east:Ingress/web/storefront",
        ]
    );
    let green = renderer.render_app(&storefront(), &ctx(Variant::Green)).unwrap();
    let deployment = green.iter().find(|r| r.id.kind == "Deployment").unwrap();
    assert_eq!(deployment.id.name, "storefront-green");
    assert_eq!(deployment.spec["spec"]["selector"]["matchLabels"][VARIANT_LABEL], "green");
    assert_eq!(deployment.spec["spec"]["template"]["metadata"]["labels"][VARIANT_LABEL], "green");
    // The shared objects render the same for every variant, so re-applying them is a no-op.
    let stable = renderer.render_app(&storefront(), &ctx(Variant::Stable)).unwrap();
    let service =
        |rs: &[DesiredResource]| rs.iter().find(|r| r.id.kind == "Service" && r.id.name == "storefront").cloned();
    assert_eq!(service(&stable), service(&green));
}

#[test]
fn per_app_namespaces_render_the_namespace_first() {
    let renderer = KubeRenderer::new(&KubeSettings { namespaces: NamespaceMode::App, ..KubeSettings::default() });
    let a = app("worker");
    let resources = renderer.render_app(&a, &ctx(Variant::Stable)).unwrap();
    assert_eq!(resources[0].id.to_string(), "prod-east:Namespace/worker");
    assert!(resources[1..].iter().all(|r| r.id.namespace.as_deref() == Some("worker")));
    // No ports, no exposure: no Service, no Ingress.
    let kinds: Vec<&str> = resources.iter().map(|r| r.id.kind.as_str()).collect();
    assert_eq!(kinds, ["Namespace", "ServiceAccount", "Deployment"]);
}

#[test]
fn manifests_apps_and_apps_without_an_image_are_refused_with_the_reason() {
    let mut a = app("legacy");
    a.spec.image.clear();
    let e = KubeRenderer::default().render_app(&a, &ctx(Variant::Stable)).unwrap_err();
    assert!(e.to_string().contains("spec.image is empty"), "{e}");
    let mut bad = storefront();
    bad.spec.health.as_mut().unwrap().readiness.as_mut().unwrap().period = Some("often".into());
    let e = KubeRenderer::default().render_app(&bad, &ctx(Variant::Stable)).unwrap_err();
    assert!(e.to_string().contains("spec.health.readiness.period"), "{e}");
}
