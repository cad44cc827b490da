use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use keelson_manifest::App;
use tempfile::TempDir;

use super::*;
use crate::sim::{SimConfig, SimProvider};
use crate::{ManualClock, Observed, ProviderDescriptor, RenderCtx};

async fn sim(dir: &TempDir) -> SimProvider {
    let clock = Arc::new(ManualClock::new(time::macros::datetime!(2026-11-01 12:00 UTC)));
    SimProvider::open(&dir.path().join("sim.db"), "sim", clock, SimConfig::default()).await.expect("open sim")
}

fn check<'a>(report: &'a Report, kind: &str, name: &str) -> &'a Check {
    report
        .checks
        .iter()
        .find(|c| c.kind == kind && c.name == name)
        .unwrap_or_else(|| panic!("no check {kind}/{name} in\n{report}"))
}

#[tokio::test]
async fn the_sim_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir).await;
    let report = run(&sim, &sim.examples()).await;
    assert!(report.passed(), "{report}");
    // 10 checks per kind for Workload and Route, plus descriptor and unknown kind.
    assert_eq!(report.checks.len(), 22, "{report}");
    assert!(sim.list(&Owner { app: OWNER.into() }).await.unwrap().is_empty(), "the suite cleans up");
}

#[tokio::test]
async fn a_second_run_against_the_same_state_passes_too() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir).await;
    assert!(run(&sim, &sim.examples()).await.passed());
    let report = run(&sim, &sim.examples()).await;
    assert!(report.passed(), "{report}");
}

#[tokio::test]
async fn leftovers_of_an_interrupted_run_are_cleaned_first() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir).await;
    let examples = sim.examples();
    let suite = Suite { provider: &sim, instance: "sim", rollout: 1, step: 0 };
    let leftover =
        resource(&suite.id(&examples.kinds[0], "keelson-conformance-workload"), &examples.kinds[0].valid, "old");
    let key = IdempotencyKey { app: OWNER.into(), rollout: 1, step: 1, resource: "x".into() };
    sim.apply(&leftover, &key).await.unwrap();
    let report = run(&sim, &examples).await;
    assert!(report.passed(), "{report}");
}

#[tokio::test]
async fn the_report_prints_as_a_table() {
    let report = Report {
        provider: "sim 0.1.0".into(),
        checks: vec![
            Check { name: "create".into(), kind: "Workload".into(), passed: true, message: String::new() },
            Check {
                name: "unknown kind".into(),
                kind: String::new(),
                passed: false,
                message: "expected an unknown-kind error, got Created".into(),
            },
        ],
    };
    assert_eq!(
        report.to_string(),
        "conformance of sim 0.1.0: 1 of 2 checks passed\n\
         KIND      CHECK         RESULT  DETAIL\n\
         Workload  create        pass\n\
         \x20         unknown kind  FAIL    expected an unknown-kind error, got Created\n"
    );
    assert!(!report.passed());
    assert_eq!(report.failures().count(), 1);
}

#[tokio::test]
async fn missing_and_undeclared_examples_fail_the_descriptor_check() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir).await;
    let mut examples = sim.examples();
    examples.kinds.remove(1);
    examples.kinds.push(KindExample { kind: "Gadget".into(), ..examples.kinds[0].clone() });
    let report = run(&sim, &examples).await;
    let descriptor = check(&report, "", "descriptor lists every example kind");
    assert!(!descriptor.passed);
    assert!(descriptor.message.contains("no example for sim.keelson.dev/v1/Route"), "{}", descriptor.message);
    assert!(descriptor.message.contains("sim.keelson.dev/v1/Gadget"), "{}", descriptor.message);
    // A kind the provider does not know fails its create check with the provider's own error.
    assert!(!check(&report, "Gadget", "create").passed);
}

#[tokio::test]
async fn no_examples_fail_rather_than_pass_vacuously() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir).await;
    let report = run(&sim, &Examples { instance: "sim".into(), kinds: vec![] }).await;
    assert!(!report.passed(), "{report}");
}

/// A provider that forgets idempotency keys, accepts anything and calls unknown kinds failures:
/// the suite must catch each of those.
struct Forgetful {
    inner: SimProvider,
    calls: AtomicU32,
}

impl Forgetful {
    fn fresh(&self, key: &IdempotencyKey) -> IdempotencyKey {
        IdempotencyKey { step: 1_000_000 + self.calls.fetch_add(1, Ordering::Relaxed), ..key.clone() }
    }
}

#[async_trait]
impl Provider for Forgetful {
    fn descriptor(&self) -> ProviderDescriptor {
        self.inner.descriptor()
    }
    async fn render(&self, app: &App, ctx: &RenderCtx) -> crate::Result<Vec<DesiredResource>> {
        self.inner.render(app, ctx).await
    }
    async fn observe(&self, ids: &[ResourceId]) -> crate::Result<Vec<Observed>> {
        self.inner.observe(ids).await
    }
    async fn list(&self, owner: &Owner) -> crate::Result<Vec<ResourceId>> {
        self.inner.list(owner).await
    }
    async fn apply(&self, r: &DesiredResource, key: &IdempotencyKey) -> crate::Result<Outcome> {
        match self.inner.apply(r, &self.fresh(key)).await {
            Err(Error::UnknownKind { provider, kind, .. }) => Err(Error::Failed { provider, message: kind }),
            Err(Error::InvalidSpec { .. }) => Ok(Outcome::Created),
            other => other,
        }
    }
    async fn delete(&self, id: &ResourceId, key: &IdempotencyKey) -> crate::Result<Outcome> {
        self.inner.delete(id, &self.fresh(key)).await
    }
    async fn health(&self, id: &ResourceId) -> crate::Result<Health> {
        self.inner.health(id).await
    }
}

#[tokio::test]
async fn a_provider_that_breaks_the_contract_fails_the_matching_checks() {
    let dir = tempfile::tempdir().unwrap();
    let inner = sim(&dir).await;
    let examples = inner.examples();
    let forgetful = Forgetful { inner, calls: AtomicU32::new(0) };
    let report = run(&forgetful, &examples).await;

    let failed: Vec<(&str, &str)> = report.failures().map(|c| (c.kind.as_str(), c.name.as_str())).collect();
    for kind in ["Workload", "Route"] {
        for name in ["idempotent replay (apply)", "idempotent replay (delete)", "invalid spec"] {
            assert!(failed.contains(&(kind, name)), "{kind}/{name} should fail:\n{report}");
        }
        for name in ["create", "observe after apply", "list", "health", "update", "delete"] {
            assert!(check(&report, kind, name).passed, "{kind}/{name} should pass:\n{report}");
        }
    }
    let unknown = check(&report, "", "unknown kind");
    assert!(!unknown.passed);
    assert!(unknown.message.starts_with("expected an unknown-kind error, got error (failed)"), "{}", unknown.message);
    assert!(report.to_string().contains("FAIL"));
}
