//! One battery of checks every provider must pass: `sim`, the built-in providers and external
//! plugins (`keelson provider test`).
//!
//! The suite knows nothing about a provider's kinds beyond its descriptor (each kind comes with one
//! valid and one invalid example spec), and it works against live state: it only touches resources
//! in its own namespace and names, cleans up first and last, and uses fresh idempotency keys on
//! every run. It asks what any API can answer: a replayed apply must converge and act once
//! (`Unchanged`, or `Replayed` for APIs with client tokens), never "remember" a key.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keelson_manifest::app::Gate;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    AppRef, DesiredResource, Error, ErrorClass, Health, IdempotencyKey, KindDescriptor, MetricsSource, Observed,
    Outcome, Owner, Provider, ResourceId, TrafficRouter, Variant, Weight,
};

/// Namespace of every namespaced resource the suite creates, so it never touches anything else.
pub const NAMESPACE: &str = "keelson-conformance";
/// Owner (app) of every resource the suite creates.
pub const OWNER: &str = "keelson-conformance";
/// A kind no provider manages, for the unknown-kind checks.
const UNKNOWN_KIND: &str = "KeelsonConformanceUnknownKind";
/// Default upper bound of one provider call: a hung provider fails a check instead of hanging the suite.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How the suite runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Longest one provider call may take before its check fails.
    pub call_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { call_timeout: CALL_TIMEOUT }
    }
}

/// What the suite runs against: a provider, and its router and metrics source if it has them.
#[derive(Clone, Copy)]
pub struct Subject<'a> {
    /// The provider.
    pub provider: &'a dyn Provider,
    /// Its traffic router, checked when present.
    pub router: Option<&'a dyn TrafficRouter>,
    /// Its metrics source, checked when present.
    pub metrics: Option<&'a dyn MetricsSource>,
}

impl<'a> Subject<'a> {
    /// Only a provider.
    pub fn provider(provider: &'a dyn Provider) -> Self {
        Self { provider, router: None, metrics: None }
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// What was checked, e.g. `replay (apply)`.
    pub name: String,
    /// The kind it was checked on; empty for provider-wide checks.
    pub kind: String,
    /// Whether the provider behaved as the contract says.
    pub passed: bool,
    /// Why it failed; empty when it passed.
    pub message: String,
}

/// The results of one run of the suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The instance checked.
    pub instance: String,
    /// `type version` of the provider, from its descriptor.
    pub provider: String,
    /// Every check, in the order run.
    pub checks: Vec<Check>,
}

impl Report {
    /// True when every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// The check `name` on `kind` (empty for provider-wide checks), if it ran.
    pub fn check(&self, kind: &str, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.kind == kind && c.name == name)
    }

    fn record(&mut self, name: &str, kind: &str, result: Result<(), String>) {
        let (passed, message) = match result {
            Ok(()) => (true, String::new()),
            Err(message) => (false, message),
        };
        self.checks.push(Check { name: name.to_owned(), kind: kind.to_owned(), passed, message });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let passed = self.checks.iter().filter(|c| c.passed).count();
        writeln!(
            f,
            "conformance of {} ({}): {passed} of {} checks passed",
            self.instance,
            self.provider,
            self.checks.len()
        )?;
        let kind_width = self.checks.iter().map(|c| c.kind.len()).chain([4]).max().unwrap_or(4);
        let name_width = self.checks.iter().map(|c| c.name.len()).chain([5]).max().unwrap_or(5);
        writeln!(f, "{:kind_width$}  {:name_width$}  RESULT  DETAIL", "KIND", "CHECK")?;
        for c in &self.checks {
            let result = if c.passed { "pass" } else { "FAIL" };
            let line = format!("{:kind_width$}  {:name_width$}  {result:6}  {}", c.kind, c.name, c.message);
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// The names of the per-kind checks, in the order they run.
pub const KIND_CHECKS: [&str; 12] = [
    "create",
    "observe after apply",
    "per-id results (observe)",
    "per-id results (health)",
    "health",
    "replay (apply)",
    "update",
    "invalid spec",
    "id scope",
    "delete",
    "replay (delete)",
    "delete of missing resource",
];

/// Runs every check against `subject` with the default options.
pub async fn run(subject: Subject<'_>) -> Report {
    run_with(subject, Options::default()).await
}

/// Runs every check against `subject`.
pub async fn run_with(subject: Subject<'_>, options: Options) -> Report {
    let descriptor = subject.provider.descriptor().clone();
    let mut report = Report {
        instance: descriptor.instance.to_string(),
        provider: format!("{} {}", descriptor.provider_type, descriptor.version),
        checks: vec![],
    };
    let t = options.call_timeout;
    let mut suite =
        Suite { provider: subject.provider, instance: &descriptor.instance, rollout: run_id(), step: 0, timeout: t };

    report.record("descriptor", "", check_descriptor(&descriptor));
    for kind in &descriptor.kinds {
        suite.check_kind(kind, &mut report).await;
    }
    if let Some(first) = descriptor.kinds.first() {
        report.record("unknown kind", "", suite.unknown_kind(first).await);
    }
    if let Some(router) = subject.router {
        check_router(router, &mut suite, &mut report).await;
    }
    if let Some(metrics) = subject.metrics {
        check_metrics(metrics, t, &mut report).await;
    }
    report
}

fn check_descriptor(d: &crate::ProviderDescriptor) -> Result<(), String> {
    let mut problems = vec![];
    if d.instance.is_empty() {
        problems.push("the instance name is empty".to_owned());
    }
    if d.provider_type.is_empty() || d.version.is_empty() {
        problems.push("type and version must not be empty".to_owned());
    }
    if d.kinds.is_empty() {
        problems.push("no kinds, so nothing can be checked".to_owned());
    }
    if d.capabilities.is_empty() {
        problems.push("no capabilities".to_owned());
    }
    let mut seen = std::collections::BTreeSet::new();
    for k in &d.kinds {
        if !seen.insert(k.qualified()) {
            problems.push(format!("kind {} is listed twice", k.qualified()));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

/// A rollout id no earlier run used, so keys of a previous run against the same state never replay.
fn run_id() -> i64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

struct Suite<'a> {
    provider: &'a dyn Provider,
    instance: &'a crate::InstanceName,
    rollout: i64,
    step: u32,
    timeout: Duration,
}

impl Suite<'_> {
    async fn check_kind(&mut self, kind: &KindDescriptor, report: &mut Report) {
        let k = kind.kind.as_str();
        let base = format!("{OWNER}-{}", k.to_lowercase());
        let id = self.id(kind, &base);
        let missing = self.id(kind, &format!("{base}-missing"));
        let invalid = self.id(kind, &format!("{base}-invalid"));
        let scoped = self.wrong_scope(kind, &format!("{base}-scope"));
        self.clean_up(&[&id, &missing, &invalid, &scoped]).await;

        let first = resource(&id, &kind.example.valid, "sha256:conformance-1");
        let create_key = self.key(&id);
        let results = [
            self.create(&first, &create_key).await,
            self.expect_observed(&first).await,
            self.per_id_observe(&first, &missing, kind).await,
            self.per_id_health(&first, &missing, kind).await,
            self.health_present(&id).await,
            self.replay_apply(&first, &create_key).await,
            self.update(&id, &kind.example.valid).await,
            self.invalid_spec(&invalid, &kind.example.invalid).await,
            self.id_scope(&scoped, kind).await,
        ];
        let delete_key = self.key(&id);
        let deleted = self.delete(&id, &delete_key).await;
        let replayed = self.replay_delete(&id, &delete_key).await;
        let missing_deleted = self.delete_missing(&missing).await;
        for (name, result) in KIND_CHECKS.iter().zip(results.into_iter().chain([deleted, replayed, missing_deleted])) {
            report.record(name, k, result);
        }
        self.clean_up(&[&id, &missing, &invalid, &scoped]).await;
    }

    async fn create(&mut self, r: &DesiredResource, key: &IdempotencyKey) -> Result<(), String> {
        expect_outcome(call(self.timeout, self.provider.apply(r, key)).await?, &[Outcome::Created])
    }

    async fn replay_apply(&mut self, first: &DesiredResource, key: &IdempotencyKey) -> Result<(), String> {
        expect_outcome(
            call(self.timeout, self.provider.apply(first, key)).await?,
            &[Outcome::Unchanged, Outcome::Replayed],
        )
        .map_err(|m| format!("a replayed apply acted again: {m}"))?;
        self.expect_observed(first).await
    }

    async fn update(&mut self, id: &ResourceId, spec: &Value) -> Result<(), String> {
        // Only the digest changes: the one thing every provider must store whatever its kinds.
        let second = resource(id, spec, "sha256:conformance-2");
        let key = self.key(id);
        expect_outcome(call(self.timeout, self.provider.apply(&second, &key)).await?, &[Outcome::Updated])?;
        self.expect_observed(&second).await?;
        let again = self.key(id);
        expect_outcome(call(self.timeout, self.provider.apply(&second, &again)).await?, &[Outcome::Unchanged])
            .map_err(|m| format!("re-applying the same spec and digest: {m}"))
    }

    async fn invalid_spec(&mut self, id: &ResourceId, spec: &Value) -> Result<(), String> {
        let key = self.key(id);
        expect_terminal(
            call(self.timeout, self.provider.apply(&resource(id, spec, "sha256:conformance-invalid"), &key)).await,
            |e| matches!(e, Error::InvalidSpec { .. }),
        )
        .map_err(|m| format!("expected an invalid-spec error: {m}"))?;
        self.expect_absent(id).await.map_err(|m| format!("the rejected resource: {m}"))
    }

    /// An id of the wrong scope (no namespace for a namespaced kind, one for a cluster-scoped kind)
    /// must be refused before any side effect.
    async fn id_scope(&mut self, id: &ResourceId, kind: &KindDescriptor) -> Result<(), String> {
        let key = self.key(id);
        let scope = if kind.namespaced {
            "a namespaced kind without a namespace"
        } else {
            "a cluster-scoped kind with a namespace"
        };
        expect_terminal(
            call(
                self.timeout,
                self.provider.apply(&resource(id, &kind.example.valid, "sha256:conformance-scope"), &key),
            )
            .await,
            |e| matches!(e, Error::InvalidSpec { .. }),
        )
        .map_err(|m| format!("{scope}: expected an invalid-spec error: {m}"))?;
        self.expect_absent(id).await
    }

    async fn delete(&mut self, id: &ResourceId, key: &IdempotencyKey) -> Result<(), String> {
        expect_outcome(call(self.timeout, self.provider.delete(id, key)).await?, &[Outcome::Deleted])?;
        self.expect_absent(id).await?;
        match single(call_batch(self.timeout, self.provider.health(std::slice::from_ref(id))).await?, id)? {
            Ok(Health::Missing) => Ok(()),
            Ok(other) => Err(format!("health of the deleted resource is {other:?}, expected Missing")),
            Err(e) => Err(format!("health of the deleted resource failed: {e}")),
        }
    }

    async fn replay_delete(&mut self, id: &ResourceId, key: &IdempotencyKey) -> Result<(), String> {
        expect_outcome(
            call(self.timeout, self.provider.delete(id, key)).await?,
            &[Outcome::NotFound, Outcome::Replayed],
        )?;
        self.expect_absent(id).await
    }

    async fn delete_missing(&mut self, id: &ResourceId) -> Result<(), String> {
        let key = self.key(id);
        expect_outcome(call(self.timeout, self.provider.delete(id, &key)).await?, &[Outcome::NotFound])
    }

    async fn unknown_kind(&mut self, example: &KindDescriptor) -> Result<(), String> {
        let id = self.unknown_id(example);
        let key = self.key(&id);
        expect_terminal(
            call(
                self.timeout,
                self.provider.apply(&resource(&id, &example.example.valid, "sha256:conformance-1"), &key),
            )
            .await,
            |e| matches!(e, Error::UnknownKind { .. }),
        )
        .map_err(|m| format!("expected an unknown-kind error: {m}"))
    }

    /// One batch with a present, a missing and an unknown-kind id: three answers, in order, each
    /// its own (one bad id never fails the others).
    async fn per_id_observe(
        &self,
        present: &DesiredResource,
        missing: &ResourceId,
        kind: &KindDescriptor,
    ) -> Result<(), String> {
        let unknown = self.unknown_id(kind);
        let ids = [present.id.clone(), missing.clone(), unknown.clone()];
        let answers = call_batch(self.timeout, self.provider.observe(&ids)).await?;
        expect_ids(&answers, &ids)?;
        match &answers[0].1 {
            Ok(Some(o)) if o.spec == present.spec => {}
            other => return Err(format!("the present resource: expected its spec, got {}", brief(other))),
        }
        match &answers[1].1 {
            Ok(None) => {}
            other => return Err(format!("the missing resource: expected nothing, got {}", brief(other))),
        }
        match &answers[2].1 {
            Err(Error::UnknownKind { .. }) => Ok(()),
            other => Err(format!("the unknown kind: expected an unknown-kind error, got {}", brief(other))),
        }
    }

    async fn per_id_health(
        &self,
        present: &DesiredResource,
        missing: &ResourceId,
        kind: &KindDescriptor,
    ) -> Result<(), String> {
        let unknown = self.unknown_id(kind);
        let ids = [present.id.clone(), missing.clone(), unknown];
        let answers = call_batch(self.timeout, self.provider.health(&ids)).await?;
        expect_ids(&answers, &ids)?;
        match &answers[0].1 {
            Ok(Health::Healthy | Health::Progressing { .. }) => {}
            other => return Err(format!("the present resource: expected Healthy or Progressing, got {other:?}")),
        }
        match &answers[1].1 {
            Ok(Health::Missing) => {}
            other => return Err(format!("the missing resource: expected Missing, got {other:?}")),
        }
        match &answers[2].1 {
            Err(Error::UnknownKind { .. }) => Ok(()),
            other => Err(format!("the unknown kind: expected an unknown-kind error, got {other:?}")),
        }
    }

    async fn expect_observed(&self, want: &DesiredResource) -> Result<(), String> {
        match single(call_batch(self.timeout, self.provider.observe(std::slice::from_ref(&want.id))).await?, &want.id)?
        {
            Ok(Some(got)) => {
                if got.id != want.id {
                    return Err(format!("observe returned {}, expected {}", got.id, want.id));
                }
                if got.digest.as_ref() != Some(&want.digest) {
                    return Err(format!("observed digest {:?}, expected {:?}", got.digest, want.digest));
                }
                if got.spec != want.spec {
                    return Err(format!("observed spec {}, expected {} (managed fields only)", got.spec, want.spec));
                }
                Ok(())
            }
            Ok(None) => Err(format!("observe does not find {}", want.id)),
            Err(e) => Err(format!("observe failed: {e}")),
        }
    }

    async fn expect_absent(&self, id: &ResourceId) -> Result<(), String> {
        match single(call_batch(self.timeout, self.provider.observe(std::slice::from_ref(id))).await?, id)? {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(format!("{id} exists")),
            Err(e) => Err(format!("observe failed: {e}")),
        }
    }

    async fn health_present(&self, id: &ResourceId) -> Result<(), String> {
        match single(call_batch(self.timeout, self.provider.health(std::slice::from_ref(id))).await?, id)? {
            Ok(Health::Progressing { .. } | Health::Healthy) => Ok(()),
            other => Err(format!("health of a just-applied resource is {other:?}")),
        }
    }

    /// Leftovers of an interrupted earlier run would make `create` report `Updated`.
    async fn clean_up(&mut self, ids: &[&ResourceId]) {
        for id in ids {
            let key = self.key(id);
            let _ = call(self.timeout, self.provider.delete(id, &key)).await;
        }
    }

    fn id(&self, kind: &KindDescriptor, name: &str) -> ResourceId {
        ResourceId {
            instance: self.instance.clone(),
            api_version: kind.api_version.clone(),
            kind: kind.kind.clone(),
            namespace: kind.namespaced.then(|| NAMESPACE.to_owned()),
            name: name.to_owned(),
        }
    }

    fn wrong_scope(&self, kind: &KindDescriptor, name: &str) -> ResourceId {
        ResourceId { namespace: (!kind.namespaced).then(|| NAMESPACE.to_owned()), ..self.id(kind, name) }
    }

    fn unknown_id(&self, kind: &KindDescriptor) -> ResourceId {
        ResourceId { kind: UNKNOWN_KIND.to_owned(), ..self.id(kind, OWNER) }
    }

    /// A key never used before in this run.
    fn key(&mut self, id: &ResourceId) -> IdempotencyKey {
        self.step += 1;
        IdempotencyKey { app: OWNER.into(), rollout: self.rollout, step: self.step, resource: id.to_string() }
    }
}

async fn check_router(router: &dyn TrafficRouter, suite: &mut Suite<'_>, report: &mut Report) {
    let t = suite.timeout;
    let app = AppRef { app: OWNER.into(), team: Some(NAMESPACE.to_owned()) };
    let w = |pairs: &[(Variant, u8)]| {
        pairs.iter().map(|&(variant, percent)| Weight { variant, percent }).collect::<Vec<_>>()
    };
    let mut key = |name: &str| {
        suite.step += 1;
        IdempotencyKey {
            app: OWNER.into(),
            rollout: suite.rollout,
            step: suite.step,
            resource: format!("route/{name}"),
        }
    };
    let all_stable = w(&[(Variant::Stable, 100)]);
    let split = w(&[(Variant::Stable, 90), (Variant::Canary, 10)]);

    let set = async |weights: &[Weight], key: IdempotencyKey, allowed: &[Outcome]| -> Result<(), String> {
        expect_outcome(call(t, router.set_weights(&app, weights, &key)).await?, allowed)?;
        let live = call(t, router.weights(&app)).await?;
        if same_weights(&live, weights) {
            Ok(())
        } else {
            Err(format!("weights read back as {live:?}, expected {weights:?}"))
        }
    };
    let start = set(&all_stable, key("start"), &[Outcome::Created, Outcome::Updated, Outcome::Unchanged]).await;
    report.record("router: set weights", "", start);
    report.record("router: shift weights", "", set(&split, key("shift"), &[Outcome::Updated]).await);
    let replay_key = key("shift");
    report.record("router: replay", "", set(&split, replay_key, &[Outcome::Unchanged, Outcome::Replayed]).await);
    for (name, bad) in [
        ("router: weights must add up to 100", w(&[(Variant::Stable, 50), (Variant::Canary, 20)])),
        ("router: one weight per variant", w(&[(Variant::Stable, 50), (Variant::Stable, 50)])),
    ] {
        let result = async {
            expect_terminal(call(t, router.set_weights(&app, &bad, &key("bad"))).await, |e| {
                matches!(e, Error::InvalidSpec { .. })
            })
            .map_err(|m| format!("expected an invalid-spec error: {m}"))?;
            let live = call(t, router.weights(&app)).await?;
            if same_weights(&live, &split) {
                Ok(())
            } else {
                Err(format!("a rejected call changed the weights to {live:?}"))
            }
        }
        .await;
        report.record(name, "", result);
    }
    let _ = call(t, router.set_weights(&app, &all_stable, &key("end"))).await;
}

async fn check_metrics(metrics: &dyn MetricsSource, t: Duration, report: &mut Report) {
    let app = AppRef { app: OWNER.into(), team: Some(NAMESPACE.to_owned()) };
    let window = Duration::from_secs(60);
    let gate = |metric: &str| Gate { metric: metric.to_owned(), ..Gate::default() };
    let success = async {
        let v = call(t, metrics.query(&app, &gate("success-rate"), Variant::Stable, window)).await?;
        if v.is_finite() && (0.0..=100.0).contains(&v) {
            Ok(())
        } else {
            Err(format!("success rate {v} is not a percentage"))
        }
    };
    report.record("metrics: success-rate", "", success.await);
    let latency = async {
        let v = call(t, metrics.query(&app, &gate("latency-p99"), Variant::Canary, window)).await?;
        if v.is_finite() && v >= 0.0 { Ok(()) } else { Err(format!("latency {v} is not a duration in ms")) }
    };
    report.record("metrics: latency-p99", "", latency.await);
    let unknown =
        call(t, metrics.query(&app, &gate("keelson-conformance-no-such-metric"), Variant::Stable, window)).await;
    report.record(
        "metrics: unknown metric",
        "",
        expect_terminal(unknown, |_| true).map_err(|m| format!("expected a terminal error: {m}")),
    );
}

fn same_weights(a: &[Weight], b: &[Weight]) -> bool {
    let sorted = |w: &[Weight]| {
        let mut v: Vec<(Variant, u8)> = w.iter().filter(|w| w.percent > 0).map(|w| (w.variant, w.percent)).collect();
        v.sort();
        v
    };
    sorted(a) == sorted(b)
}

fn resource(id: &ResourceId, spec: &Value, digest: &str) -> DesiredResource {
    DesiredResource { id: id.clone(), owner: Owner { app: OWNER.into() }, digest: digest.into(), spec: spec.clone() }
}

fn expect_outcome(got: Outcome, allowed: &[Outcome]) -> Result<(), String> {
    if allowed.contains(&got) {
        Ok(())
    } else {
        let want: Vec<String> = allowed.iter().map(|o| format!("{o:?}")).collect();
        Err(format!("expected {}, got {got:?}", want.join(" or ")))
    }
}

fn expect_terminal<T: fmt::Debug>(
    got: Result<T, CallError>,
    is_expected: impl Fn(&Error) -> bool,
) -> Result<(), String> {
    match got {
        Err(CallError::Provider(e)) if is_expected(&e) && e.class() == ErrorClass::Terminal => Ok(()),
        Err(CallError::Provider(e)) if is_expected(&e) => {
            Err(format!("got the right error with class {} instead of terminal: {e}", e.class()))
        }
        Err(other) => Err(format!("got {other}")),
        Ok(value) => Err(format!("got {value:?}")),
    }
}

fn expect_ids<T>(answers: &[(ResourceId, T)], ids: &[ResourceId]) -> Result<(), String> {
    let got: Vec<&ResourceId> = answers.iter().map(|(id, _)| id).collect();
    let want: Vec<&ResourceId> = ids.iter().collect();
    if got == want {
        Ok(())
    } else {
        Err(format!("expected one answer per id in the order asked ({}), got {}", show(&want), show(&got)))
    }
}

fn show(ids: &[&ResourceId]) -> String {
    ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn single<T>(mut answers: Vec<(ResourceId, T)>, id: &ResourceId) -> Result<T, String> {
    if answers.len() != 1 || &answers[0].0 != id {
        let got: Vec<String> = answers.iter().map(|(i, _)| i.to_string()).collect();
        return Err(format!("expected one answer for {id}, got [{}]", got.join(", ")));
    }
    Ok(answers.remove(0).1)
}

fn brief(answer: &crate::Result<Option<Observed>>) -> String {
    match answer {
        Ok(Some(o)) => format!("spec {}", o.spec),
        Ok(None) => "nothing".to_owned(),
        Err(e) => format!("error ({}): {e}", e.kind_label()),
    }
}

/// A provider call that failed or took too long.
#[derive(Debug)]
enum CallError {
    Provider(Error),
    TimedOut(Duration),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Provider(e) => write!(f, "error ({}): {e}", e.kind_label()),
            CallError::TimedOut(after) => write!(f, "no answer within {}", crate::error::humantime(*after)),
        }
    }
}

impl From<CallError> for String {
    fn from(e: CallError) -> String {
        e.to_string()
    }
}

async fn call<T>(timeout: Duration, fut: impl Future<Output = crate::Result<T>>) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(CallError::Provider(e)),
        Err(_) => Err(CallError::TimedOut(timeout)),
    }
}

async fn call_batch<T>(timeout: Duration, fut: impl Future<Output = T>) -> Result<T, CallError> {
    tokio::time::timeout(timeout, fut).await.map_err(|_| CallError::TimedOut(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_prints_as_a_table() {
        let report = Report {
            instance: "sim".into(),
            provider: "sim 0.1.0".into(),
            checks: vec![
                Check { name: "create".into(), kind: "Workload".into(), passed: true, message: String::new() },
                Check {
                    name: "unknown kind".into(),
                    kind: String::new(),
                    passed: false,
                    message: "expected an unknown-kind error: got Created".into(),
                },
            ],
        };
        assert_eq!(
            report.to_string(),
            "conformance of sim (sim 0.1.0): 1 of 2 checks passed\n\
             KIND      CHECK         RESULT  DETAIL\n\
             Workload  create        pass\n\
             \x20         unknown kind  FAIL    expected an unknown-kind error: got Created\n"
        );
        assert!(!report.passed());
        assert_eq!(report.failures().count(), 1);
        assert!(report.check("", "unknown kind").is_some());
    }

    #[test]
    fn weights_compare_as_sets_without_zero_shares() {
        let a = [Weight { variant: Variant::Canary, percent: 10 }, Weight { variant: Variant::Stable, percent: 90 }];
        let b = [
            Weight { variant: Variant::Stable, percent: 90 },
            Weight { variant: Variant::Canary, percent: 10 },
            Weight { variant: Variant::Blue, percent: 0 },
        ];
        assert!(same_weights(&a, &b));
        assert!(!same_weights(&a, &b[..1]));
    }
}
