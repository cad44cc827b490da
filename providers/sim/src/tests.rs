use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keelson_manifest::App;
use serde_json::{Value, json};
use tempfile::TempDir;
use time::macros::datetime;

use super::*;
use crate::{ManualClock, Variant};

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
    RenderCtx { revision: "c0ffee".into(), digest: "d1".into(), variant, weight: 100 }
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
    fn owner(mut self, app: &str) -> Self {
        self.0.owner.app = app.into();
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
    ResourceId {
        instance: "sim".into(),
        api_version: API_VERSION.into(),
        kind: kind.into(),
        namespace: "default".into(),
        name: name.into(),
    }
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

async fn observed_spec(sim: &SimProvider, id: &ResourceId) -> Option<Value> {
    sim.observe(std::slice::from_ref(id)).await.unwrap().pop().map(|o| o.spec)
}

// ---- descriptor and render ----

#[tokio::test]
async fn descriptor_names_sim_kinds_and_capabilities() {
    let f = fixture().await;
    let d = f.sim.descriptor();
    assert_eq!(d.provider_type, "sim");
    assert_eq!(d.kinds, vec![(API_VERSION.into(), WORKLOAD.into()), (API_VERSION.into(), ROUTE.into())]);
    assert!(d.capabilities.contains(&Capability::Workloads));
    assert!(d.capabilities.contains(&Capability::Health));
}

#[tokio::test]
async fn renders_a_stable_workload_in_the_team_namespace() {
    let f = fixture().await;
    let app = app("checkout").team("payments").replicas(4).build();
    let rendered = f.sim.render(&app, &ctx(Variant::Stable)).await.unwrap();
    assert_eq!(rendered.len(), 1);
    let w = &rendered[0];
    assert_eq!(
        w.id,
        ResourceId {
            instance: "sim".into(),
            api_version: "sim.keelson.dev/v1".into(),
            kind: "Workload".into(),
            namespace: "payments".into(),
            name: "checkout".into(),
        }
    );
    assert_eq!(w.owner, Owner { app: "checkout".into() });
    assert_eq!(w.digest, "d1");
    assert_eq!(
        w.spec,
        json!({"image": "registry.example.com/checkout:1", "replicas": 4, "variant": "stable", "weight": 100})
    );
}

#[tokio::test]
async fn renders_into_default_namespace_without_a_team() {
    let f = fixture().await;
    let rendered = f.sim.render(&app("web").build(), &ctx(Variant::Stable)).await.unwrap();
    assert_eq!(rendered[0].id.namespace, "default");
}

#[tokio::test]
async fn renders_variant_suffixes_and_weight() {
    let f = fixture().await;
    for (variant, name) in [(Variant::Canary, "web-canary"), (Variant::Blue, "web-blue"), (Variant::Green, "web-green")]
    {
        let ctx = RenderCtx { weight: 10, ..ctx(variant) };
        let rendered = f.sim.render(&app("web").build(), &ctx).await.unwrap();
        assert_eq!(rendered[0].id.name, name);
        assert_eq!(rendered[0].spec["variant"], json!(variant));
        assert_eq!(rendered[0].spec["weight"], 10);
        assert_eq!(rendered[0].owner.app, "web");
    }
}

#[tokio::test]
async fn renders_resources_into_the_workload() {
    let f = fixture().await;
    let resources = json!({"cpu": "500m", "memory": "512Mi"});
    let app = app("web").resources(resources.clone()).build();
    let rendered = f.sim.render(&app, &ctx(Variant::Stable)).await.unwrap();
    assert_eq!(rendered[0].spec["resources"], resources);
}

#[tokio::test]
async fn renders_one_route_per_app_when_exposed() {
    let f = fixture().await;
    let expose = json!({"port": 8080, "host": "web.example.com", "tls": true});
    let app = app("web").team("shop").expose(expose.clone()).build();
    let stable = f.sim.render(&app, &ctx(Variant::Stable)).await.unwrap();
    let canary = f.sim.render(&app, &ctx(Variant::Canary)).await.unwrap();
    assert_eq!(stable.len(), 2);
    let route = &stable[1];
    assert_eq!((route.id.kind.as_str(), route.id.name.as_str()), ("Route", "web"));
    assert_eq!(route.id.namespace, "shop");
    assert_eq!(route.spec, json!({"service": "web", "expose": expose}));
    assert_eq!(canary[1], stable[1], "every variant renders the same Route");
}

#[tokio::test]
async fn render_rejects_an_empty_image() {
    let f = fixture().await;
    let err = f.sim.render(&app("web").image("").build(), &ctx(Variant::Stable)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidSpec { .. }), "{err}");
    assert!(err.to_string().contains("app web"), "{err}");
}

#[tokio::test]
async fn render_does_no_io() {
    let f = fixture().await;
    f.sim.close().await;
    f.sim.render(&app("web").build(), &ctx(Variant::Stable)).await.expect("render without storage");
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
    let observed = f.sim.observe(std::slice::from_ref(&redigested.id)).await.unwrap();
    assert_eq!(observed[0].digest.as_deref(), Some("d2"));
}

#[tokio::test]
async fn apply_replayed_with_the_same_key_acts_once() {
    let f = fixture().await;
    let first = workload("web").build();
    assert_eq!(f.sim.apply(&first, &key(1)).await.unwrap(), Outcome::Created);
    let other = workload("web").image("web:2").digest("d2").build();
    assert_eq!(f.sim.apply(&other, &key(1)).await.unwrap(), Outcome::Replayed);
    let observed = f.sim.observe(std::slice::from_ref(&first.id)).await.unwrap();
    assert_eq!((observed[0].spec.clone(), observed[0].digest.clone()), (first.spec, Some("d1".into())));
}

#[tokio::test]
async fn concurrent_replays_of_one_key_act_once() {
    let f = fixture().await;
    let r = workload("web").build();
    let k = key(1);
    let calls = (0..8).map(|_| f.sim.apply(&r, &k));
    let outcomes = join_all(calls).await;
    let created = outcomes.iter().filter(|o| **o == Outcome::Created).count();
    let replayed = outcomes.iter().filter(|o| **o == Outcome::Replayed).count();
    assert_eq!((created, replayed), (1, 7), "{outcomes:?}");
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
async fn apply_rejects_invalid_specs_without_recording_the_key() {
    let f = fixture().await;
    let bad = workload("web").replicas(-1).image("").build();
    let err = f.sim.apply(&bad, &key(1)).await.unwrap_err();
    let Error::InvalidSpec { provider, resource, message } = &err else { panic!("{err}") };
    assert_eq!((provider.as_str(), resource.as_str()), ("sim", "sim:Workload/default/web"));
    assert!(message.contains("replicas must be a non-negative integer"), "{message}");
    assert!(message.contains("image must be a non-empty string"), "{message}");
    assert_eq!(observed_spec(&f.sim, &bad.id).await, None);
    // Nothing was carried out, so a corrected retry under the same key acts.
    assert_eq!(f.sim.apply(&workload("web").build(), &key(1)).await.unwrap(), Outcome::Created);
}

#[tokio::test]
async fn apply_of_an_unknown_kind_is_refused() {
    let f = fixture().await;
    let r = workload("web").kind("apps/v1", "Deployment").build();
    let err = f.sim.apply(&r, &key(1)).await.unwrap_err();
    assert!(matches!(err, Error::UnknownKind { .. }), "{err}");
    assert!(err.to_string().contains("provider sim") && err.to_string().contains("Deployment/default/web"), "{err}");
    let err = f.sim.observe(std::slice::from_ref(&r.id)).await.unwrap_err();
    assert_eq!(err.kind_label(), "unknown_kind");
}

#[tokio::test]
async fn apply_of_another_instances_resource_is_refused() {
    let f = fixture().await;
    let err = f.sim.apply(&workload("web").instance("other").build(), &key(1)).await.unwrap_err();
    assert!(matches!(err, Error::Failed { .. }), "{err}");
    assert!(err.to_string().contains("\"other\""), "{err}");
}

#[tokio::test]
async fn injected_apply_fault_fails_until_cleared() {
    let f = fixture_with(SimConfig { faults: Faults::default().fail_apply("web"), ..config() }).await;
    let err = f.sim.apply(&workload("web").build(), &key(1)).await.unwrap_err();
    assert!(matches!(err, Error::Failed { .. }), "{err}");
    assert_eq!(err.to_string(), "provider sim: injected fault: apply of sim:Workload/default/web failed");
    assert_eq!(f.sim.apply(&workload("api").build(), &key(2)).await.unwrap(), Outcome::Created);
    f.sim.set_faults(Faults::default());
    assert_eq!(f.sim.apply(&workload("web").build(), &key(1)).await.unwrap(), Outcome::Created);
}

// ---- observe and list ----

#[tokio::test]
async fn observe_returns_managed_fields_and_digest_and_leaves_out_missing() {
    let f = fixture().await;
    let web = workload("web").build();
    f.sim.apply(&web, &key(1)).await.unwrap();
    let observed = f.sim.observe(&[id(WORKLOAD, "gone"), web.id.clone()]).await.unwrap();
    assert_eq!(observed, vec![Observed { id: web.id, digest: Some("d1".into()), spec: web.spec }]);
    assert!(f.sim.observe(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn list_returns_an_owners_resources_of_this_instance_only() {
    let f = fixture().await;
    let other_instance = f.reopen("sim-2").await;
    f.sim.apply(&workload("web").build(), &key(1)).await.unwrap();
    f.sim.apply(&route("web").build(), &key(2)).await.unwrap();
    f.sim.apply(&workload("api").owner("api").build(), &key(3)).await.unwrap();
    other_instance.apply(&workload("web").instance("sim-2").build(), &key(1)).await.unwrap();

    let listed = f.sim.list(&Owner { app: "web".into() }).await.unwrap();
    assert_eq!(listed, vec![id(ROUTE, "web"), id(WORKLOAD, "web")]);
    assert_eq!(other_instance.list(&Owner { app: "web".into() }).await.unwrap().len(), 1);
    assert!(f.sim.list(&Owner { app: "nobody".into() }).await.unwrap().is_empty());
}

// ---- delete ----

#[tokio::test]
async fn delete_removes_and_reports_missing_ones() {
    let f = fixture().await;
    let web = workload("web").build();
    f.sim.apply(&web, &key(1)).await.unwrap();
    assert_eq!(f.sim.delete(&web.id, &key(2)).await.unwrap(), Outcome::Deleted);
    assert_eq!(observed_spec(&f.sim, &web.id).await, None);
    assert_eq!(f.sim.delete(&web.id, &key(3)).await.unwrap(), Outcome::NotFound);
}

#[tokio::test]
async fn delete_replayed_with_the_same_key_acts_once() {
    let f = fixture().await;
    let web = workload("web").build();
    f.sim.apply(&web, &key(1)).await.unwrap();
    assert_eq!(f.sim.delete(&web.id, &key(2)).await.unwrap(), Outcome::Deleted);
    f.sim.apply(&web, &key(3)).await.unwrap();
    assert_eq!(f.sim.delete(&web.id, &key(2)).await.unwrap(), Outcome::Replayed);
    assert!(observed_spec(&f.sim, &web.id).await.is_some(), "the replay must not delete again");
}

#[tokio::test]
async fn injected_delete_fault_fails() {
    let f = fixture_with(SimConfig { faults: Faults::default().fail_delete("web"), ..config() }).await;
    let web = workload("web").build();
    f.sim.apply(&web, &key(1)).await.unwrap();
    let err = f.sim.delete(&web.id, &key(2)).await.unwrap_err();
    assert_eq!(err.to_string(), "provider sim: injected fault: delete of sim:Workload/default/web failed");
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
    assert_eq!(f.sim.health(&web.id).await.unwrap(), progressing(0));
    f.clock.advance(ROLLOUT / 2);
    assert_eq!(f.sim.health(&web.id).await.unwrap(), progressing(2));
    f.clock.advance(ROLLOUT / 2 - Duration::from_micros(1));
    assert_eq!(f.sim.health(&web.id).await.unwrap(), progressing(3));
    f.clock.advance(Duration::from_micros(1));
    assert_eq!(f.sim.health(&web.id).await.unwrap(), Health::Healthy);
}

#[tokio::test]
async fn zero_replicas_and_routes_are_healthy_at_once() {
    let f = fixture().await;
    let idle = workload("idle").replicas(0).build();
    f.sim.apply(&idle, &key(1)).await.unwrap();
    f.sim.apply(&route("web").build(), &key(2)).await.unwrap();
    assert_eq!(f.sim.health(&idle.id).await.unwrap(), Health::Healthy);
    assert_eq!(f.sim.health(&id(ROUTE, "web")).await.unwrap(), Health::Healthy);
}

#[tokio::test]
async fn missing_resources_have_missing_health() {
    let f = fixture().await;
    assert_eq!(f.sim.health(&id(WORKLOAD, "nothing")).await.unwrap(), Health::Missing);
}

#[tokio::test]
async fn a_spec_change_restarts_the_rollout_but_a_digest_change_does_not() {
    let f = fixture().await;
    f.sim.apply(&workload("web").build(), &key(1)).await.unwrap();
    f.clock.advance(ROLLOUT);
    f.sim.apply(&workload("web").digest("d2").build(), &key(2)).await.unwrap();
    assert_eq!(f.sim.health(&id(WORKLOAD, "web")).await.unwrap(), Health::Healthy);
    f.sim.apply(&workload("web").image("web:2").build(), &key(3)).await.unwrap();
    assert!(matches!(f.sim.health(&id(WORKLOAD, "web")).await.unwrap(), Health::Progressing { ready: 0, .. }));
}

#[tokio::test]
async fn zero_rollout_time_converges_at_once() {
    let f = fixture_with(SimConfig { rollout_time: Duration::ZERO, ..config() }).await;
    f.sim.apply(&workload("web").build(), &key(1)).await.unwrap();
    assert_eq!(f.sim.health(&id(WORKLOAD, "web")).await.unwrap(), Health::Healthy);
}

#[test]
fn default_config_converges_in_one_and_a_half_seconds() {
    assert_eq!(SimConfig::default().rollout_time, Duration::from_millis(1500));
    assert_eq!(SimConfig::default().faults, Faults::default());
}

// ---- drift ----

#[tokio::test]
async fn drift_changes_the_observed_field_but_not_the_digest() {
    let f = fixture().await;
    let web = workload("web").build();
    f.sim.apply(&web, &key(1)).await.unwrap();
    f.sim.drift(&web.id, "/replicas", json!(9)).await.unwrap();
    let observed = f.sim.observe(std::slice::from_ref(&web.id)).await.unwrap();
    assert_eq!(observed[0].spec["replicas"], 9);
    assert_eq!(observed[0].digest.as_deref(), Some("d1"));
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
    assert!(matches!(f.sim.health(&web.id).await.unwrap(), Health::Degraded { .. }));
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
async fn state_and_keys_survive_a_reopen() {
    let f = fixture().await;
    let web = workload("web").build();
    f.sim.apply(&web, &key(1)).await.unwrap();
    f.sim.close().await;
    let reopened = f.reopen("sim").await;
    assert_eq!(observed_spec(&reopened, &web.id).await, Some(web.spec.clone()));
    assert_eq!(reopened.apply(&web, &key(1)).await.unwrap(), Outcome::Replayed);
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
async fn storage_errors_name_the_instance() {
    let f = fixture().await;
    f.sim.close().await;
    let err = f.sim.health(&id(WORKLOAD, "web")).await.unwrap_err();
    assert_eq!(err.kind_label(), "storage");
    assert!(err.to_string().starts_with("provider sim: storage"), "{err}");
}

// ---- slow calls ----

#[tokio::test]
async fn slow_reads_take_at_least_the_delay() {
    let delay = Duration::from_millis(40);
    let f = fixture_with(SimConfig { faults: Faults::default().slow(Operation::Observe, delay), ..config() }).await;
    let started = Instant::now();
    f.sim.observe(&[id(WORKLOAD, "web")]).await.unwrap();
    assert!(started.elapsed() >= delay);
}

#[tokio::test]
async fn a_slow_apply_that_times_out_has_acted_and_replays_safely() {
    let f = fixture().await;
    f.sim.set_faults(Faults::default().slow(Operation::Apply, Duration::from_secs(30)));
    let web = workload("web").build();
    let timed_out = tokio::time::timeout(Duration::from_secs(1), f.sim.apply(&web, &key(1))).await;
    assert!(timed_out.is_err(), "the slow apply should not answer in time");
    f.sim.set_faults(Faults::default());
    assert!(observed_spec(&f.sim, &web.id).await.is_some(), "the effect happened before the delay");
    assert_eq!(f.sim.apply(&web, &key(1)).await.unwrap(), Outcome::Replayed);
}
