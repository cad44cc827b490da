//! The conformance suite against the sim, and against providers that break the contract on
//! purpose: each must fail exactly the checks it breaks.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keelson_manifest::app::Gate;
use keelson_provider_api::conformance::{self, KIND_CHECKS, Options, Report, Subject};
use keelson_provider_api::{
    AppRef, DesiredResource, Error, ErrorClass, Health, IdempotencyKey, ManualClock, MetricsSource, Observed, Outcome,
    Owner, Provider, ProviderDescriptor, ResourceId, Result, TrafficRouter, Variant, Weight,
};
use keelson_provider_sim::{Faults, Operation, SimConfig, SimProvider, WORKLOAD};
use tempfile::TempDir;

async fn sim(dir: &TempDir, config: SimConfig) -> SimProvider {
    let clock = Arc::new(ManualClock::new(time::macros::datetime!(2026-11-01 12:00 UTC)));
    SimProvider::open(&dir.path().join("sim.db"), "sim", clock, config).await.expect("open sim")
}

fn full(sim: &SimProvider) -> Subject<'_> {
    Subject { provider: sim, router: Some(sim), metrics: Some(sim) }
}

fn failures(report: &Report) -> BTreeSet<(String, String)> {
    report.failures().map(|c| (c.kind.clone(), c.name.clone())).collect()
}

fn set(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs.iter().map(|(k, n)| (k.to_string(), n.to_string())).collect()
}

const KINDS: [&str; 3] = ["Workload", "Route", "NodePool"];

#[tokio::test]
async fn the_sim_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir, SimConfig::default()).await;
    let report = conformance::run(full(&sim)).await;
    assert!(report.passed(), "{report}");
    // Per kind: the kind checks; then descriptor, unknown kind, 5 router and 3 metrics checks.
    assert_eq!(report.checks.len(), KINDS.len() * KIND_CHECKS.len() + 2 + 5 + 3, "{report}");
    for kind in KINDS {
        for name in KIND_CHECKS {
            assert!(report.check(kind, name).is_some(), "{kind}/{name} did not run:\n{report}");
        }
    }
    // It cleaned up after itself.
    let id = ResourceId::namespaced(
        "sim",
        keelson_provider_sim::API_VERSION,
        WORKLOAD,
        conformance::NAMESPACE,
        "keelson-conformance-workload",
    );
    assert_eq!(sim.observe(&[id]).await[0].1, Ok(None));
}

#[tokio::test]
async fn a_second_run_against_the_same_state_passes_too() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir, SimConfig::default()).await;
    assert!(conformance::run(full(&sim)).await.passed());
    let report = conformance::run(full(&sim)).await;
    assert!(report.passed(), "{report}");
}

#[tokio::test]
async fn leftovers_of_an_interrupted_run_are_cleaned_first() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(&dir, SimConfig::default()).await;
    let kind = &sim.descriptor().kinds[0];
    let leftover = DesiredResource {
        id: ResourceId::namespaced(
            "sim",
            &kind.api_version,
            &kind.kind,
            conformance::NAMESPACE,
            "keelson-conformance-workload",
        ),
        owner: Owner { app: conformance::OWNER.into() },
        digest: "sha256:old".into(),
        spec: kind.example.valid.clone(),
    };
    let key = IdempotencyKey { app: conformance::OWNER.into(), rollout: 1, step: 1, resource: "x".into() };
    sim.apply(&leftover, &key).await.unwrap();
    let report = conformance::run(full(&sim)).await;
    assert!(report.passed(), "{report}");
}

/// Breaks the contract in five ways on top of a working sim: a replayed apply acts again, a
/// replayed delete claims it deleted, invalid specs and ids of the wrong scope are "accepted"
/// (answered `Created` without any effect), an unknown kind is a transient failure, and batches
/// of observe are answered in reverse order.
struct Forgetful {
    inner: SimProvider,
    seen: Mutex<HashSet<String>>,
}

impl Forgetful {
    fn replayed(&self, key: &IdempotencyKey) -> bool {
        !self.seen.lock().unwrap().insert(key.to_string())
    }
}

#[async_trait]
impl Provider for Forgetful {
    fn descriptor(&self) -> &ProviderDescriptor {
        self.inner.descriptor()
    }
    async fn observe(&self, ids: &[ResourceId]) -> Vec<(ResourceId, Result<Option<Observed>>)> {
        let mut answers = self.inner.observe(ids).await;
        answers.reverse();
        answers
    }
    async fn apply(&self, r: &DesiredResource, key: &IdempotencyKey) -> Result<Outcome> {
        if self.replayed(key) {
            self.inner.delete(&r.id, key).await?;
            return self.inner.apply(r, key).await;
        }
        match self.inner.apply(r, key).await {
            Err(Error::UnknownKind { instance, kind, .. }) => {
                Err(Error::Failed { instance, message: kind, class: ErrorClass::Transient })
            }
            Err(Error::InvalidSpec { .. }) => Ok(Outcome::Created),
            other => other,
        }
    }
    async fn delete(&self, id: &ResourceId, key: &IdempotencyKey) -> Result<Outcome> {
        if self.replayed(key) {
            return Ok(Outcome::Deleted);
        }
        self.inner.delete(id, key).await
    }
    async fn health(&self, ids: &[ResourceId]) -> Vec<(ResourceId, Result<Health>)> {
        self.inner.health(ids).await
    }
}

#[tokio::test]
async fn a_provider_that_breaks_the_contract_fails_exactly_the_checks_it_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let forgetful = Forgetful { inner: sim(&dir, SimConfig::default()).await, seen: Mutex::new(HashSet::new()) };
    let report = conformance::run(Subject::provider(&forgetful)).await;
    let mut expected = vec![];
    for kind in KINDS {
        for name in ["replay (apply)", "replay (delete)", "invalid spec", "id scope", "per-id results (observe)"] {
            expected.push((kind, name));
        }
    }
    expected.push(("", "unknown kind"));
    assert_eq!(failures(&report), set(&expected), "{report}");
    let unknown = report.check("", "unknown kind").unwrap();
    assert!(unknown.message.starts_with("expected an unknown-kind error: got error (failed)"), "{}", unknown.message);
    let replay = report.check("Workload", "replay (apply)").unwrap();
    assert!(replay.message.contains("acted again"), "{}", replay.message);
}

/// A router that takes weights that do not add up to 100 (and ignores them), and a metrics
/// source that answers NaN for latency: two failures, nothing else.
struct Lax {
    inner: SimProvider,
}

#[async_trait]
impl TrafficRouter for Lax {
    async fn set_weights(&self, app: &AppRef, weights: &[Weight], key: &IdempotencyKey) -> Result<Outcome> {
        if weights.iter().map(|w| u32::from(w.percent)).sum::<u32>() != 100 {
            return Ok(Outcome::Updated);
        }
        self.inner.set_weights(app, weights, key).await
    }
    async fn weights(&self, app: &AppRef) -> Result<Vec<Weight>> {
        self.inner.weights(app).await
    }
}

#[async_trait]
impl MetricsSource for Lax {
    async fn query(&self, app: &AppRef, gate: &Gate, variant: Variant, window: Duration) -> Result<f64> {
        if gate.metric == "latency-p99" {
            return Ok(f64::NAN);
        }
        self.inner.query(app, gate, variant, window).await
    }
}

#[tokio::test]
async fn a_lax_router_and_a_nan_metric_fail_only_their_checks() {
    let dir = tempfile::tempdir().unwrap();
    let lax = Lax { inner: sim(&dir, SimConfig::default()).await };
    let report = conformance::run(Subject { provider: &lax.inner, router: Some(&lax), metrics: Some(&lax) }).await;
    assert_eq!(
        failures(&report),
        set(&[("", "router: weights must add up to 100"), ("", "metrics: latency-p99")]),
        "{report}"
    );
}

#[tokio::test]
async fn a_provider_that_never_answers_fails_within_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        SimConfig { faults: Faults::default().hang(Operation::Apply).hang(Operation::Health), ..SimConfig::default() };
    let hung = sim(&dir, config).await;
    let started = Instant::now();
    let report =
        conformance::run_with(Subject::provider(&hung), Options { call_timeout: Duration::from_millis(50) }).await;
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    let create = report.check("Workload", "create").unwrap();
    assert!(!create.passed && create.message.contains("no answer within 50ms"), "{report}");
    assert!(report.check("", "descriptor").unwrap().passed, "{report}");
}
