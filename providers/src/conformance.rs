//! One battery of checks that every provider must pass: the sim, the built-in providers and external
//! plugins (`keelson provider test --plugin PATH`).
//!
//! The suite knows nothing about a provider's kinds beyond the [`Examples`] it is given (external
//! plugins return them from `describe`), and it works against live state: it only touches resources
//! in its own namespace, cleans up first and last, and uses fresh idempotency keys on every run.

#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{DesiredResource, Error, Health, IdempotencyKey, Outcome, Owner, Provider, ResourceId};

/// Namespace of every resource the suite creates, so it never touches anything else.
pub const NAMESPACE: &str = "keelson-conformance";
/// Owner (app) of every resource the suite creates.
pub const OWNER: &str = "keelson-conformance";
/// A kind no provider manages, for the unknown-kind check.
const UNKNOWN_KIND: &str = "KeelsonConformanceUnknownKind";
/// Upper bound of one provider call: a hung provider fails a check instead of hanging the suite.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Example specs a provider offers for the suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Examples {
    /// The provider instance the resources belong to (`ResourceId::instance`).
    pub instance: String,
    /// One entry per kind the provider manages.
    pub kinds: Vec<KindExample>,
}

/// One valid and one invalid spec of a kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KindExample {
    /// API version of the kind.
    pub api_version: String,
    /// Name of the kind.
    pub kind: String,
    /// A spec the provider must accept.
    pub valid: Value,
    /// A spec the provider must reject with [`Error::InvalidSpec`].
    pub invalid: Value,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked, e.g. `idempotent replay (apply)`.
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
pub struct Report {
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
        writeln!(f, "conformance of {}: {passed} of {} checks passed", self.provider, self.checks.len())?;
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

/// Runs every check against `provider`, using `examples` for the specs.
pub async fn run(provider: &dyn Provider, examples: &Examples) -> Report {
    let descriptor = provider.descriptor();
    let mut report =
        Report { provider: format!("{} {}", descriptor.provider_type, descriptor.version), checks: vec![] };
    let mut suite = Suite { provider, instance: &examples.instance, rollout: run_id(), step: 0 };

    report.record("descriptor lists every example kind", "", check_descriptor(&descriptor.kinds, examples));
    for example in &examples.kinds {
        suite.check_kind(example, &mut report).await;
    }
    if let Some(first) = examples.kinds.first() {
        report.record("unknown kind", "", suite.unknown_kind(first).await);
    }
    report
}

fn check_descriptor(kinds: &[(String, String)], examples: &Examples) -> Result<(), String> {
    let missing_examples: Vec<String> = kinds
        .iter()
        .filter(|(a, k)| !examples.kinds.iter().any(|e| &e.api_version == a && &e.kind == k))
        .map(|(a, k)| format!("{a}/{k}"))
        .collect();
    let undeclared: Vec<String> = examples
        .kinds
        .iter()
        .filter(|e| !kinds.iter().any(|(a, k)| a == &e.api_version && k == &e.kind))
        .map(|e| format!("{}/{}", e.api_version, e.kind))
        .collect();
    let mut problems = vec![];
    if examples.kinds.is_empty() {
        problems.push("no examples given, so no kind can be checked".to_owned());
    }
    if !missing_examples.is_empty() {
        problems.push(format!("no example for {}", missing_examples.join(", ")));
    }
    if !undeclared.is_empty() {
        problems.push(format!("examples of kinds the descriptor does not list: {}", undeclared.join(", ")));
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
    instance: &'a str,
    rollout: i64,
    step: u32,
}

impl Suite<'_> {
    async fn check_kind(&mut self, example: &KindExample, report: &mut Report) {
        let kind = example.kind.as_str();
        let base = format!("{OWNER}-{}", kind.to_lowercase());
        let id = self.id(example, &base);
        let missing = self.id(example, &format!("{base}-missing"));
        let invalid = self.id(example, &format!("{base}-invalid"));
        self.clean_up(&[&id, &missing, &invalid]).await;

        let first = resource(&id, &example.valid, "conformance-1");
        let create_key = self.key(&id);
        report.record("create", kind, self.create(&first, &create_key).await);
        report.record("observe after apply", kind, self.expect_observed(&first).await);
        report.record("list", kind, self.listed(&id, true).await);
        report.record("health", kind, self.health_present(&id).await);
        report.record("idempotent replay (apply)", kind, self.replay_apply(&first, &create_key).await);
        report.record("update", kind, self.update(&id, &example.valid).await);
        report.record("invalid spec", kind, self.invalid_spec(&invalid, &example.invalid).await);
        let delete_key = self.key(&id);
        report.record("delete", kind, self.delete(&id, &delete_key).await);
        report.record("idempotent replay (delete)", kind, self.replay_delete(&first, &delete_key).await);
        report.record("delete of missing resource", kind, self.delete_missing(&missing).await);

        self.clean_up(&[&id, &missing, &invalid]).await;
    }

    async fn create(&mut self, r: &DesiredResource, key: &IdempotencyKey) -> Result<(), String> {
        expect_outcome(call(self.provider.apply(r, key)).await?, Outcome::Created)
    }

    async fn replay_apply(&mut self, first: &DesiredResource, key: &IdempotencyKey) -> Result<(), String> {
        // The replayed call carries a different digest: if the provider acted again, observe shows it.
        let changed = DesiredResource { digest: "conformance-replayed".to_owned(), ..first.clone() };
        expect_outcome(call(self.provider.apply(&changed, key)).await?, Outcome::Replayed)?;
        self.expect_observed(first).await.map_err(|m| format!("the replay acted: {m}"))
    }

    async fn update(&mut self, id: &ResourceId, spec: &Value) -> Result<(), String> {
        // Only the digest changes: the one thing every provider must store whatever its kinds.
        let second = resource(id, spec, "conformance-2");
        let key = self.key(id);
        expect_outcome(call(self.provider.apply(&second, &key)).await?, Outcome::Updated)?;
        self.expect_observed(&second).await?;
        let again = self.key(id);
        expect_outcome(call(self.provider.apply(&second, &again)).await?, Outcome::Unchanged)
            .map_err(|m| format!("re-applying the same spec and digest: {m}"))
    }

    async fn invalid_spec(&mut self, id: &ResourceId, spec: &Value) -> Result<(), String> {
        let key = self.key(id);
        match call(self.provider.apply(&resource(id, spec, "conformance-invalid"), &key)).await {
            Err(CallError::Provider(Error::InvalidSpec { .. })) => {}
            Err(other) => return Err(format!("expected an invalid-spec error, got {other}")),
            Ok(outcome) => return Err(format!("expected an invalid-spec error, got {outcome:?}")),
        }
        let observed = call(self.provider.observe(std::slice::from_ref(id))).await?;
        if observed.is_empty() { Ok(()) } else { Err("the rejected resource exists anyway".to_owned()) }
    }

    async fn delete(&mut self, id: &ResourceId, key: &IdempotencyKey) -> Result<(), String> {
        expect_outcome(call(self.provider.delete(id, key)).await?, Outcome::Deleted)?;
        let observed = call(self.provider.observe(std::slice::from_ref(id))).await?;
        if !observed.is_empty() {
            return Err("observe still returns the deleted resource".to_owned());
        }
        self.listed(id, false).await?;
        match call(self.provider.health(id)).await? {
            Health::Missing => Ok(()),
            other => Err(format!("health of the deleted resource is {other:?}, expected Missing")),
        }
    }

    async fn replay_delete(&mut self, first: &DesiredResource, key: &IdempotencyKey) -> Result<(), String> {
        let recreate = self.key(&first.id);
        expect_outcome(call(self.provider.apply(first, &recreate)).await?, Outcome::Created)
            .map_err(|m| format!("re-creating before the replay: {m}"))?;
        expect_outcome(call(self.provider.delete(&first.id, key)).await?, Outcome::Replayed)?;
        self.expect_observed(first).await.map_err(|m| format!("the replayed delete acted: {m}"))
    }

    async fn delete_missing(&mut self, id: &ResourceId) -> Result<(), String> {
        let key = self.key(id);
        expect_outcome(call(self.provider.delete(id, &key)).await?, Outcome::NotFound)
    }

    async fn unknown_kind(&mut self, example: &KindExample) -> Result<(), String> {
        let id = ResourceId { kind: UNKNOWN_KIND.to_owned(), ..self.id(example, OWNER) };
        let key = self.key(&id);
        match call(self.provider.apply(&resource(&id, &example.valid, "conformance-1"), &key)).await {
            Err(CallError::Provider(Error::UnknownKind { .. })) => Ok(()),
            Err(other) => Err(format!("expected an unknown-kind error, got {other}")),
            Ok(outcome) => Err(format!("expected an unknown-kind error, got {outcome:?}")),
        }
    }

    async fn expect_observed(&self, want: &DesiredResource) -> Result<(), String> {
        let observed = call(self.provider.observe(std::slice::from_ref(&want.id))).await?;
        let [got] = observed.as_slice() else {
            return Err(format!("observe returned {} resources, expected 1", observed.len()));
        };
        if got.id != want.id {
            return Err(format!("observe returned {}, expected {}", got.id, want.id));
        }
        if got.digest.as_deref() != Some(want.digest.as_str()) {
            return Err(format!("observed digest {:?}, expected {:?}", got.digest, want.digest));
        }
        if got.spec != want.spec {
            return Err(format!("observed spec {}, expected {}", got.spec, want.spec));
        }
        Ok(())
    }

    async fn listed(&self, id: &ResourceId, expected: bool) -> Result<(), String> {
        let ids = call(self.provider.list(&Owner { app: OWNER.to_owned() })).await?;
        match (ids.contains(id), expected) {
            (true, false) => Err(format!("list still returns {id}")),
            (false, true) => Err(format!("list does not return {id}: got {ids:?}")),
            _ => Ok(()),
        }
    }

    async fn health_present(&self, id: &ResourceId) -> Result<(), String> {
        match call(self.provider.health(id)).await? {
            Health::Progressing { .. } | Health::Healthy => Ok(()),
            other => Err(format!("health of a just-applied resource is {other:?}")),
        }
    }

    /// Leftovers of an interrupted earlier run would make `create` report `Updated`.
    async fn clean_up(&mut self, ids: &[&ResourceId]) {
        for id in ids {
            let key = self.key(id);
            let _ = call(self.provider.delete(id, &key)).await;
        }
    }

    fn id(&self, example: &KindExample, name: &str) -> ResourceId {
        ResourceId {
            instance: self.instance.to_owned(),
            api_version: example.api_version.clone(),
            kind: example.kind.clone(),
            namespace: NAMESPACE.to_owned(),
            name: name.to_owned(),
        }
    }

    /// A key never used before in this run.
    fn key(&mut self, id: &ResourceId) -> IdempotencyKey {
        self.step += 1;
        IdempotencyKey { app: OWNER.to_owned(), rollout: self.rollout, step: self.step, resource: id.to_string() }
    }
}

fn resource(id: &ResourceId, spec: &Value, digest: &str) -> DesiredResource {
    DesiredResource {
        id: id.clone(),
        owner: Owner { app: OWNER.to_owned() },
        digest: digest.to_owned(),
        spec: spec.clone(),
    }
}

fn expect_outcome(got: Outcome, want: Outcome) -> Result<(), String> {
    if got == want { Ok(()) } else { Err(format!("expected {want:?}, got {got:?}")) }
}

/// A provider call that failed or took too long.
#[derive(Debug)]
enum CallError {
    Provider(Error),
    TimedOut,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Provider(e) => write!(f, "error ({}): {e}", e.kind_label()),
            CallError::TimedOut => write!(f, "no answer within {CALL_TIMEOUT:?}"),
        }
    }
}

impl From<CallError> for String {
    fn from(e: CallError) -> String {
        e.to_string()
    }
}

async fn call<T>(fut: impl Future<Output = crate::Result<T>>) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(CallError::Provider(e)),
        Err(_) => Err(CallError::TimedOut),
    }
}
