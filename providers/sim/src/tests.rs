use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keelson_manifest::App;
use serde_json::{Value, json};
use tempfile::TempDir;
use time::macros::datetime;

use super::*;
use keelson_provider_api::{ManualClock, Owner, RenderCtx, Renderer};

const ROLLOUT: Duration = Duration::from_secs(4);

// ---- builders ----

struct AppBuilder(Value);

/// An app as the manifest would spell it, built through serde so this keeps compiling whatever
/// Rust types the manifest crate gives its fields.
fn app(name: &str) -> AppBuilder {
    AppBuilder(json!({
        "apiVersion": "keelson.dev/v1alpha1",
        "kind": "App",
        "metadata": {"name": name},
        "spec": {"image": format!("registry.example.com/{name}:1"), "replicas": 1,
                 "placement": {"cluster": "local"}},
    }))
}

impl AppBuilder {
    fn team(mut self, team: &str) -> Self {
        self.0["metadata"]["team"] = json!(team);
        self
    }
    fn image(mut self, image: &str) -> Self {
        self.0["spec"]["image"] = json!(image);
        self
    }
    fn replicas(mut self, n: u32) -> Self {
        self.0["spec"]["replicas"] = json!(n);
        self
    }
    fn resources(mut self, resources: Value) -> Self {
        self.0["spec"]["resources"] = resources;
        self
    }
    fn expose(mut self, expose: Value) -> Self {
        self.0["spec"]["expose"] = expose;
        self
    }
    fn build(self) -> App {
        serde_json::from_value(self.0).expect("test app is a valid App")
    }
}

fn ctx(variant: Variant) -> RenderCtx {
    RenderCtx { instance: "sim".into(), revision: "c0ffee".into(), digest: "d1".into(), variant, weight: 100 }
}

/// A desired Workload of instance `sim`, namespace `default`, owner `web`.
struct ResourceBuilder(DesiredResource);

fn workload(name: &str) -> ResourceBuilder {
    ResourceBuilder(DesiredResource {
        id: id(WORKLOAD, name),
        owner: Owner { app: "web".into() },
        digest: "d1".into(),
        spec: json!({"image": "web:1", "replicas": 4}),
    })
}

fn route(name: &str) -> ResourceBuilder {
    ResourceBuilder(DesiredResource {
        id: id(ROUTE, name),
        owner: Owner { app: "web".into() },
        digest: "d1".into(),
        spec: json!({"service": name, "expose": {"port": 8080}}),
    })
}

impl ResourceBuilder {
    fn replicas(mut self, n: i64) -> Self {
        self.0.spec["replicas"] = json!(n);
        self
    }
    fn image(mut self, image: &str) -> Self {
        self.0.spec["image"] = json!(image);
        self
    }
    fn digest(mut self, digest: &str) -> Self {
        self.0.digest = digest.into();
        self
    }
    fn kind(mut self, api_version: &str, kind: &str) -> Self {
        self.0.id.api_version = api_version.into();
        self.0.id.kind = kind.into();
        self
    }
    fn instance(mut self, instance: &str) -> Self {
        self.0.id.instance = instance.into();
        self
    }
    fn build(self) -> DesiredResource {
        self.0
    }
}

fn id(kind: &str, name: &str) -> ResourceId {
    ResourceId::namespaced("sim", API_VERSION, kind, "default", name)
}

fn key(step: u32) -> IdempotencyKey {
    IdempotencyKey { app: "web".into(), rollout: 7, step, resource: "r".into() }
}

struct Fixture {
    dir: TempDir,
    clock: ManualClock,
    sim: SimProvider,
}

impl Fixture {
    fn path(&self) -> PathBuf {
        self.dir.path().join(".keelson/sim.db")
    }

    async fn reopen(&self, instance: &str) -> SimProvider {
        SimProvider::open(&self.path(), instance, Arc::new(self.clock.clone()), config()).await.expect("reopen sim")
    }
}

fn config() -> SimConfig {
    SimConfig { rollout_time: ROLLOUT, faults: Faults::default() }
}

async fn fixture() -> Fixture {
    fixture_with(config()).await
}

async fn fixture_with(config: SimConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(datetime!(2026-11-01 12:00 UTC));
    let path = dir.path().join(".keelson/sim.db");
    let sim = SimProvider::open(&path, "sim", Arc::new(clock.clone()), config).await.expect("open sim");
    Fixture { dir, clock, sim }
}

async fn observed(sim: &SimProvider, id: &ResourceId) -> Result<Option<Observed>> {
    sim.observe(std::slice::from_ref(id)).await.pop().expect("one answer").1
}

async fn observed_spec(sim: &SimProvider, id: &ResourceId) -> Option<Value> {
    observed(sim, id).await.unwrap().map(|o| o.spec)
}

async fn health(sim: &SimProvider, id: &ResourceId) -> Result<Health> {
    sim.health(std::slice::from_ref(id)).await.pop().expect("one answer").1
}

// ---- descriptor and render ----

#[tokio::test]
async fn descriptor_names_sim_kinds_scopes_and_capabilities() {
    let f = fixture().await;
    let d = f.sim.descriptor();
    assert_eq!((d.provider_type.as_str(), d.instance.as_str()), ("sim", "sim"));
    let kinds: Vec<(&str, bool)> = d.kinds.iter().map(|k| (k.kind.as_str(), k.namespaced)).collect();
    assert_eq!(kinds, [(WORKLOAD, true), (ROUTE, true), (NODE_POOL, false)]);
    for c in [Capability::Workloads, Capability::Health, Capability::TrafficSplit, Capability::Metrics] {
        assert!(d.has(c), "{c}");
    }
}

#[tokio::test]
async fn renders_a_stable_workload_in_the_team_namespace() {
    let app = app("checkout").team("payments").replicas(4).build();
    let rendered = SimRenderer.render(&app, &ctx(Variant::Stable)).await.unwrap();
    assert_eq!(rendered.len(), 1);
    let w = &rendered[0];
    assert_eq!(w.id, ResourceId::namespaced("sim", "sim.keelson.dev/v1", "Workload", "payments", "checkout"));
    assert_eq!(w.owner, Owner { app: "checkout".into() });
    assert_eq!(w.digest, "d1");
    assert_eq!(
        w.spec,
        json!({"image": "registry.example.com/checkout:1", "replicas": 4, "variant": "stable", "weight": 100})
    );
}

#[tokio::test]
async fn renders_ids_of_the_context_instance() {
    let ctx = RenderCtx { instance: "lab".into(), ..ctx(Variant::Stable) };
    let rendered = SimRenderer.render(&app("web").build(), &ctx).await.unwrap();
    assert_eq!(rendered[0].id.instance, "lab");
    assert_eq!(rendered[0].id.namespace.as_deref(), Some("default"));
}

#[tokio::test]
async fn renders_variant_suffixes_and_weight() {
    for (variant, name) in [(Variant::Canary, "web-canary"), (Variant::Blue, "web-blue"), (Variant::Green, "web-green")]
    {
        let ctx = RenderCtx { weight: 10, ..ctx(variant) };
        let rendered = SimRenderer.render(&app("web").build(), &ctx).await.unwrap();
        assert_eq!(rendered[0].id.name, name);
        assert_eq!(rendered[0].spec["variant"], json!(variant));
        assert_eq!(rendered[0].spec["weight"], 10);
        assert_eq!(rendered[0].owner.app, "web");
    }
}

#[tokio::test]
async fn renders_resources_into_the_workload() {
    let resources = json!({"cpu": "500m", "memory": "512Mi"});
    let app = app("web").resources(resources.clone()).build();
    let rendered = SimRenderer.render(&app, &ctx(Variant::Stable)).await.unwrap();
    assert_eq!(rendered[0].spec["resources"], resources);
}

#[tokio::test]
async fn renders_one_route_per_app_when_exposed() {
    let expose = json!({"port": 8080, "host": "web.example.com", "tls": true});
    let app = app("web").team("shop").expose(expose.clone()).build();
    let stable = SimRenderer.render(&app, &ctx(Variant::Stable)).await.unwrap();
    let canary = SimRenderer.render(&app, &ctx(Variant::Canary)).await.unwrap();
    assert_eq!(stable.len(), 2);
    let route = &stable[1];
    assert_eq!((route.id.kind.as_str(), route.id.name.as_str()), ("Route", "web"));
    assert_eq!(route.id.namespace.as_deref(), Some("shop"));
    assert_eq!(route.spec, json!({"service": "web", "expose": expose}));
    assert_eq!(canary[1], stable[1], "every variant renders the same Route");
}

#[tokio::test]
async fn renders_a_cluster_scoped_node_pool_for_spot_placement() {
    let mut app = app("batch").team("data").build();
    app.spec.placement.node_pool = Some(keelson_manifest::app::NodePool {
        server_class: "gp.vs1.large-iad".into(),
        max_bid: Some("0.08".into()),
        on_demand_fallback: true,
    });
    let rendered = SimRenderer.render(&app, &ctx(Variant::Stable)).await.unwrap();
    let pool = rendered.iter().find(|r| r.id.kind == NODE_POOL).expect("a node pool");
    assert_eq!(pool.id, ResourceId::cluster_scoped("sim", API_VERSION, NODE_POOL, "batch"));
    assert_eq!(pool.spec, json!({"serverClass": "gp.vs1.large-iad", "maxBid": "0.08", "onDemandFallback": true}));
}

#[tokio::test]
async fn render_rejects_an_empty_image() {
    let err = SimRenderer.render(&app("web").image("").build(), &ctx(Variant::Stable)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidSpec { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Terminal);
    assert!(err.to_string().contains("app web"), "{err}");
}

// ---- apply ----

#[tokio::test]
async fn apply_creates_then_is_unchanged_then_updates() {
    let f = fixture().await;
    assert_eq!(f.sim.apply(&workload("web").build(), &key(1)).await.unwrap(), Outcome::Created);
    assert_eq!(f.sim.apply(&workload("web").build(), &key(2)).await.unwrap(), Outcome::Unchanged);
    let scaled = workload("web").replicas(6).build();
    assert_eq!(f.sim.apply(&scaled, &key(3)).await.unwrap(), Outcome::Updated);
    assert_eq!(observed_spec(&f.sim, &scaled.id).await, Some(scaled.spec));
}

#[tokio::test]
async fn apply_of_a_new_digest_alone_is_an_update() {
    let f = fixture().await;
    f.sim.apply(&workload("web").build(), &key(1)).await.unwrap();
    let redigested = workload("web").digest("d2").build();
    assert_eq!(f.sim.apply(&redigested, &key(2)).await.unwrap(), Outcome::Updated);
    assert_eq!(observed(&f.sim, &redigested.id).await.unwrap().unwrap().digest, Some("d2".into()));
}

#[tokio::test]
async fn apply_converges_by_content_whatever_the_key() {
    let f = fixture().await;
    let first = workload("web").build();
    assert_eq!(f.sim.apply(&first, &key(1)).await.unwrap(), Outcome::Created);
    assert_eq!(f.sim.apply(&first, &key(1)).await.unwrap(), Outcome::Unchanged, "a replay does nothing");
    // A key is not a lock: new content under an old key is applied, as a real API would.
    let other = workload("web").image("web:2").digest("d2").build();
    assert_eq!(f.sim.apply(&other, &key(1)).await.unwrap(), Outcome::Updated);
    assert_eq!(observed_spec(&f.sim, &first.id).await, Some(other.spec));
}

#[tokio::test]
async fn concurrent_applies_of_one_object_create_it_once() {
    let f = fixture().await;
    let r = workload("web").build();
    let k = key(1);
    let calls = (0..8).map(|_| f.sim.apply(&r, &k));
    let outcomes = join_all(calls).await;
    let created = outcomes.iter().filter(|o| **o == Outcome::Created).count();
    let unchanged = outcomes.iter().filter(|o| **o == Outcome::Unchanged).count();
    assert_eq!((created, unchanged), (1, 7), "{outcomes:?}");
}

/// Polls the calls together on this task, so they really overlap, without the `futures` crate.
async fn join_all<F: Future<Output = Result<Outcome>>>(calls: impl Iterator<Item = F>) -> Vec<Outcome> {
    let mut pending: Vec<_> = calls.map(Box::pin).collect();
    let mut outcomes = vec![];
    std::future::poll_fn(|cx| {
        pending.retain_mut(|call| match call.as_mut().poll(cx) {
            std::task::Poll::Ready(result) => {
                outcomes.push(result.expect("apply"));
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    outcomes
}

#[tokio::test]
async fn apply_rejects_invalid_specs_before_any_effect() {
    let f = fixture().await;
    let bad = workload("web").replicas(-1).image("").build();
    let err = f.sim.apply(&bad, &key(1)).await.unwrap_err();
    let Error::InvalidSpec { instance, resource, message } = &err else { panic!("{err}") };
    assert_eq!((instance.as_str(), resource.as_str()), ("sim", "sim:Workload/default/web"));
    assert!(message.contains("replicas must be a non-negative integer"), "{message}");
    assert!(message.contains("image must be a non-empty string"), "{message}");
    assert_eq!(err.class(), ErrorClass::Terminal);
    assert_eq!(observed_spec(&f.sim, &bad.id).await, None);
}

#[tokio::test]
async fn apply_refuses_ids_of_the_wrong_scope() {
    let f = fixture().await;
    let mut loose = workload("web").build();
    loose.id.namespace = None;
    let err = f.sim.apply(&loose, &key(1)).await.unwrap_err();
    assert!(err.to_string().contains("Workload is namespaced"), "{err}");
    let pool = DesiredResource {
        id: ResourceId::namespaced("sim", API_VERSION, NODE_POOL, "team", "web"),
        owner: Owner { app: "web".into() },
        digest: "d1".into(),
        spec: json!({"serverClass": "gp.vs1.large-iad"}),
    };
    let err = f.sim.apply(&pool, &key(2)).await.unwrap_err();
    assert!(err.to_string().contains("NodePool is cluster-scoped"), "{err}");
}

#[tokio::test]
async fn cluster_scoped_objects_live_apart_from_namespaced_ones() {
    let f = fixture().await;
    let pool = DesiredResource {
        id: ResourceId::cluster_scoped("sim", API_VERSION, NODE_POOL, "web"),
        owner: Owner { app: "web".into() },
        digest: "d1".into(),
        spec: json!({"serverClass": "gp.vs1.large-iad"}),
    };
    assert_eq!(f.sim.apply(&pool, &key(1)).await.unwrap(), Outcome::Created);
    assert_eq!(observed_spec(&f.sim, &pool.id).await, Some(pool.spec.clone()));
    assert_eq!(health(&f.sim, &pool.id).await.unwrap(), Health::Healthy);
    assert_eq!(f.sim.delete(&pool.id, &key(2)).await.unwrap(), Outcome::Deleted);
    assert_eq!(observed_spec(&f.sim, &pool.id).await, None);
}

#[tokio::test]
async fn apply_of_an_unknown_kind_is_refused_and_observe_answers_per_id() {
    let f = fixture().await;
    let web = workload("web").build();
    f.sim.apply(&web, &key(1)).await.unwrap();
    let r = workload("web").kind("apps/v1", "Deployment").build();
    let err = f.sim.apply(&r, &key(2)).await.unwrap_err();
    assert!(matches!(err, Error::UnknownKind { .. }), "{err}");
    assert_eq!(err.to_string(), "provider sim: unknown resource kind apps/v1/Deployment");
    let answers = f.sim.observe(&[r.id.clone(), web.id.clone()]).await;
    assert_eq!(answers[0].1.as_ref().unwrap_err().kind_label(), "unknown_kind");
    assert_eq!(answers[1].1.as_ref().unwrap().as_ref().map(|o| &o.spec), Some(&web.spec));
}

#[tokio::test]
async fn apply_of_another_instances_resource_is_refused() {
    let f = fixture().await;
    let err = f.sim.apply(&workload("web").instance("other").build(), &key(1)).await.unwrap_err();
    assert!(matches!(err, Error::Failed { class: ErrorClass::Terminal, .. }), "{err}");
    assert!(err.to_string().contains("\"other\""), "{err}");
}

#[tokio::test]
async fn injected_apply_fault_fails_until_cleared() {
    let f = fixture_with(SimConfig { faults: Faults::default().fail_apply("web"), ..config() }).await;
    let err = f.sim.apply(&workload("web").build(), &key(1)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Terminal);
    assert_eq!(err.to_string(), "provider sim: injected fault: apply of sim:Workload/default/web was rejected");
    assert_eq!(f.sim.apply(&workload("api").build(), &key(2)).await.unwrap(), Outcome::Created);
    f.sim.set_faults(Faults::default());
    assert_eq!(f.sim.apply(&workload("web").build(), &key(1)).await.unwrap(), Outcome::Created);
}

#[tokio::test]
async fn a_forbidden_resource_fails_alone() {
    let f = fixture().await;
    let (web, api) = (workload("web").build(), workload("api").build());
    f.sim.apply(&web, &key(1)).await.unwrap();
    f.sim.apply(&api, &key(2)).await.unwrap();
    f.sim.set_faults(Faults::default().forbid("web"));
    let answers = f.sim.health(&[web.id.clone(), api.id.clone()]).await;
    assert!(matches!(&answers[0].1, Err(Error::Forbidden { .. })), "{:?}", answers[0]);
    assert!(answers[1].1.is_ok(), "{:?}", answers[1]);
    assert_eq!(f.sim.apply(&web, &key(3)).await.unwrap_err().class(), ErrorClass::Terminal);
}

#[tokio::test]
async fn an_unavailable_operation_is_transient_for_every_id() {
    let f = fixture_with(SimConfig { faults: Faults::default().unavailable(Operation::Observe), ..config() }).await;
    let answers = f.sim.observe(&[id(WORKLOAD, "a"), id(WORKLOAD, "b")]).await;
    assert_eq!(answers.len(), 2);
    for (_, answer) in answers {
        assert_eq!(answer.unwrap_err().class(), ErrorClass::Transient);
    }
    assert!(f.sim.apply(&workload("web").build(), &key(1)).await.is_ok(), "only observe is down");
}

#[tokio::test]
async fn a_hung_operation_never_answers() {
    let f = fixture_with(SimConfig { faults: Faults::default().hang(Operation::Apply), ..config() }).await;
    let hung = tokio::time::timeout(Duration::from_millis(200), f.sim.apply(&workload("web").build(), &key(1))).await;
    assert!(hung.is_err(), "a hung apply must not answer");
    assert_eq!(observed_spec(&f.sim, &id(WORKLOAD, "web")).await, None, "it never acted");
}

// ---- observe ----

#[tokio::test]
async fn observe_answers_each_id_in_order() {
    let f = fixture().await;
    let web = workload("web").build();
    f.sim.apply(&web, &key(1)).await.unwrap();
    let answers = f.sim.observe(&[id(WORKLOAD, "gone"), web.id.clone()]).await;
    assert_eq!(answers[0].0, id(WORKLOAD, "gone"));
    assert_eq!(answers[0].1, Ok(None));
    assert_eq!(answers[1].1, Ok(Some(Observed { id: web.id.clone(), digest: Some("d1".into()), spec: web.spec })));
    assert!(f.sim.observe(&[]).await.is_empty());
}

// ---- delete ----

#[tokio::test]
async fn delete_removes_and_reports_missing_ones() {
    let f = fixture().await;
    let web = workload("web").build();
    f.sim.apply(&web, &key(1)).await.unwrap();
    assert_eq!(f.sim.delete(&web.id, &key(2)).await.unwrap(), Outcome::Deleted);
    assert_eq!(observed_spec(&f.sim, &web.id).await, None);
    assert_eq!(f.sim.delete(&web.id, &key(2)).await.unwrap(), Outcome::NotFound, "a replay finds nothing");
}

#[tokio::test]
async fn injected_delete_fault_fails() {
    let f = fixture_with(SimConfig { faults: Faults::default().fail_delete("web"), ..config() }).await;
    let web = workload("web").build();
    f.sim.apply(&web, &key(1)).await.unwrap();
    let err = f.sim.delete(&web.id, &key(2)).await.unwrap_err();
    assert_eq!(err.to_string(), "provider sim: injected fault: delete of sim:Workload/default/web was rejected");
    assert!(observed_spec(&f.sim, &web.id).await.is_some());
}

// ---- health ----

#[tokio::test]
async fn workloads_progress_linearly_then_become_healthy() {
    let f = fixture().await;
    let web = workload("web").build();
    f.sim.apply(&web, &key(1)).await.unwrap();
    let progressing = |ready| Health::Progressing {
        ready,
        desired: 4,
        message: format!("sim:Workload/default/web: {ready} of 4 replicas ready"),
    };
    assert_eq!(health(&f.sim, &web.id).await.unwrap(), progressing(0));
    f.clock.advance(ROLLOUT / 2);
    assert_eq!(health(&f.sim, &web.id).await.unwrap(), progressing(2));
    f.clock.advance(ROLLOUT / 2 - Duration::from_micros(1));
    assert_eq!(health(&f.sim, &web.id).await.unwrap(), progressing(3));
    f.clock.advance(Duration::from_micros(1));
    assert_eq!(health(&f.sim, &web.id).await.unwrap(), Health::Healthy);
}

#[tokio::test]
async fn zero_replicas_and_routes_are_healthy_at_once() {
    let f = fixture().await;
    let idle = workload("idle").replicas(0).build();
    f.sim.apply(&idle, &key(1)).await.unwrap();
    f.sim.apply(&route("web").build(), &key(2)).await.unwrap();
    let answers = f.sim.health(&[idle.id.clone(), id(ROUTE, "web"), id(WORKLOAD, "nothing")]).await;
    let health: Vec<Health> = answers.into_iter().map(|(_, h)| h.unwrap()).collect();
    assert_eq!(health, [Health::Healthy, Health::Healthy, Health::Missing]);
}

#[tokio::test]
async fn a_spec_change_restarts_the_rollout_but_a_digest_change_does_not() {
    let f = fixture().await;
    f.sim.apply(&workload("web").build(), &key(1)).await.unwrap();
    f.clock.advance(ROLLOUT);
    f.sim.apply(&workload("web").digest("d2").build(), &key(2)).await.unwrap();
    assert_eq!(health(&f.sim, &id(WORKLOAD, "web")).await.unwrap(), Health::Healthy);
    f.sim.apply(&workload("web").image("web:2").build(), &key(3)).await.unwrap();
    assert!(matches!(health(&f.sim, &id(WORKLOAD, "web")).await.unwrap(), Health::Progressing { ready: 0, .. }));
}

#[tokio::test]
async fn zero_rollout_time_converges_at_once() {
    let f = fixture_with(SimConfig { rollout_time: Duration::ZERO, ..config() }).await;
    f.sim.apply(&workload("web").build(), &key(1)).await.unwrap();
    assert_eq!(health(&f.sim, &id(WORKLOAD, "web")).await.unwrap(), Health::Healthy);
}

#[test]
fn default_config_converges_in_one_and_a_half_seconds() {
    assert_eq!(SimConfig::default().rollout_time, Duration::from_millis(1500));
    assert_eq!(SimConfig::default().faults, Faults::default());
}

// ---- traffic and metrics ----

fn app_ref(name: &str) -> AppRef {
    AppRef { app: name.into(), team: None }
}

fn weights(pairs: &[(Variant, u8)]) -> Vec<Weight> {
    pairs.iter().map(|&(variant, percent)| Weight { variant, percent }).collect()
}

#[tokio::test]
async fn weights_are_set_per_app_and_read_back() {
    let f = fixture().await;
    assert!(f.sim.weights(&app_ref("web")).await.unwrap().is_empty());
    let split = weights(&[(Variant::Canary, 10), (Variant::Stable, 90)]);
    assert_eq!(f.sim.set_weights(&app_ref("web"), &split, &key(1)).await.unwrap(), Outcome::Created);
    assert_eq!(f.sim.set_weights(&app_ref("web"), &split, &key(1)).await.unwrap(), Outcome::Unchanged);
    let live = f.sim.weights(&app_ref("web")).await.unwrap();
    assert_eq!(live, weights(&[(Variant::Stable, 90), (Variant::Canary, 10)]));
    let all = weights(&[(Variant::Stable, 100), (Variant::Canary, 0)]);
    assert_eq!(f.sim.set_weights(&app_ref("web"), &all, &key(2)).await.unwrap(), Outcome::Updated);
    assert_eq!(f.sim.weights(&app_ref("web")).await.unwrap(), weights(&[(Variant::Stable, 100)]));
    assert!(f.sim.weights(&app_ref("api")).await.unwrap().is_empty(), "weights are per app");
}

#[tokio::test]
async fn weights_that_do_not_add_up_are_refused() {
    let f = fixture().await;
    let err = f.sim.set_weights(&app_ref("web"), &weights(&[(Variant::Stable, 60)]), &key(1)).await.unwrap_err();
    assert!(err.to_string().contains("add up to 100, they add up to 60"), "{err}");
    let twice = weights(&[(Variant::Stable, 50), (Variant::Stable, 50)]);
    let err = f.sim.set_weights(&app_ref("web"), &twice, &key(2)).await.unwrap_err();
    assert!(err.to_string().contains("variant stable has more than one weight"), "{err}");
}

#[tokio::test]
async fn metrics_are_healthy_until_a_variant_is_degraded() {
    let f = fixture().await;
    let gate = |metric: &str| Gate { metric: metric.into(), ..Gate::default() };
    let window = Duration::from_secs(60);
    let q = async |metric: &str, variant| f.sim.query(&app_ref("web"), &gate(metric), variant, window).await;
    assert_eq!(q("success-rate", Variant::Canary).await.unwrap(), 99.95);
    assert_eq!(q("latency-p99", Variant::Canary).await.unwrap(), 85.0);
    f.sim.set_faults(
        Faults::default().degrade(Variant::Canary, VariantMetrics { success_rate: 91.0, latency_p99_ms: 900.0 }),
    );
    assert_eq!(q("success-rate", Variant::Canary).await.unwrap(), 91.0);
    assert_eq!(q("error-rate", Variant::Canary).await.unwrap(), 9.0);
    assert_eq!(q("latency-p99", Variant::Canary).await.unwrap(), 900.0);
    assert_eq!(q("success-rate", Variant::Stable).await.unwrap(), 99.95, "only the canary is degraded");
    let err = q("apdex", Variant::Stable).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Terminal);
    assert!(err.to_string().contains("unknown metric \"apdex\""), "{err}");
}

// ---- drift ----

#[tokio::test]
async fn drift_changes_the_observed_field_but_not_the_digest() {
    let f = fixture().await;
    let web = workload("web").build();
    f.sim.apply(&web, &key(1)).await.unwrap();
    f.sim.drift(&web.id, "/replicas", json!(9)).await.unwrap();
    let live = observed(&f.sim, &web.id).await.unwrap().unwrap();
    assert_eq!(live.spec["replicas"], 9);
    assert_eq!(live.digest, Some("d1".into()));
    // Re-applying the desired spec heals it.
    assert_eq!(f.sim.apply(&web, &key(2)).await.unwrap(), Outcome::Updated);
    assert_eq!(observed_spec(&f.sim, &web.id).await, Some(web.spec));
}

#[tokio::test]
async fn drift_can_add_a_field_and_break_health() {
    let f = fixture().await;
    let web = workload("web").build();
    f.sim.apply(&web, &key(1)).await.unwrap();
    f.sim.drift(&web.id, "/resources", json!({"cpu": "4"})).await.unwrap();
    assert_eq!(observed_spec(&f.sim, &web.id).await.unwrap()["resources"]["cpu"], "4");
    f.sim.drift(&web.id, "/replicas", json!("many")).await.unwrap();
    assert!(matches!(health(&f.sim, &web.id).await.unwrap(), Health::Degraded { .. }));
}

#[tokio::test]
async fn drift_of_a_missing_resource_or_bad_pointer_fails() {
    let f = fixture().await;
    let err = f.sim.drift(&id(WORKLOAD, "gone"), "/replicas", json!(1)).await.unwrap_err();
    assert!(err.to_string().contains("sim:Workload/default/gone"), "{err}");
    f.sim.apply(&workload("web").build(), &key(1)).await.unwrap();
    for pointer in ["replicas", "/a/b", "/image/x"] {
        let err = f.sim.drift(&id(WORKLOAD, "web"), pointer, json!(1)).await.unwrap_err();
        assert!(matches!(err, Error::Failed { .. }), "{pointer}: {err}");
    }
}

// ---- storage ----

#[tokio::test]
async fn state_survives_a_reopen() {
    let f = fixture().await;
    let web = workload("web").build();
    f.sim.apply(&web, &key(1)).await.unwrap();
    f.sim.close().await;
    let reopened = f.reopen("sim").await;
    assert_eq!(observed_spec(&reopened, &web.id).await, Some(web.spec.clone()));
    assert_eq!(reopened.apply(&web, &key(1)).await.unwrap(), Outcome::Unchanged);
}

#[tokio::test]
async fn instances_sharing_a_file_keep_apart() {
    let f = fixture().await;
    let other = f.reopen("sim-2").await;
    f.sim.apply(&workload("web").build(), &key(1)).await.unwrap();
    assert_eq!(observed_spec(&other, &id(WORKLOAD, "web").with_instance("sim-2")).await, None);
}

trait WithInstance {
    fn with_instance(self, instance: &str) -> Self;
}

impl WithInstance for ResourceId {
    fn with_instance(self, instance: &str) -> Self {
        ResourceId { instance: instance.into(), ..self }
    }
}

#[tokio::test]
async fn opens_in_wal_mode_and_creates_parent_folders() {
    let f = fixture().await;
    f.sim.apply(&workload("web").build(), &key(1)).await.unwrap();
    assert!(f.path().exists());
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&f.sim.pool).await.unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn storage_errors_are_transient_and_name_the_instance() {
    let f = fixture().await;
    f.sim.close().await;
    let err = health(&f.sim, &id(WORKLOAD, "web")).await.unwrap_err();
    assert_eq!(err.kind_label(), "unavailable");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(err.to_string().starts_with("provider sim: unavailable: storage"), "{err}");
}

// ---- slow calls ----

#[tokio::test]
async fn slow_reads_take_at_least_the_delay() {
    let delay = Duration::from_millis(40);
    let f = fixture_with(SimConfig { faults: Faults::default().slow(Operation::Observe, delay), ..config() }).await;
    let started = Instant::now();
    f.sim.observe(&[id(WORKLOAD, "web")]).await;
    assert!(started.elapsed() >= delay);
}

#[tokio::test]
async fn a_slow_apply_that_times_out_has_acted_and_observing_shows_it() {
    let f = fixture().await;
    f.sim.set_faults(Faults::default().slow(Operation::Apply, Duration::from_secs(30)));
    let web = workload("web").build();
    let timed_out = tokio::time::timeout(Duration::from_secs(1), f.sim.apply(&web, &key(1))).await;
    assert!(timed_out.is_err(), "the slow apply should not answer in time");
    f.sim.set_faults(Faults::default());
    let live = observed(&f.sim, &web.id).await.unwrap().expect("the effect happened before the delay");
    assert_eq!(live.digest, Some(web.digest.clone()));
    assert_eq!(f.sim.apply(&web, &key(1)).await.unwrap(), Outcome::Unchanged);
}
