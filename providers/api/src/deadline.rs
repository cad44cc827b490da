//! Deadlines on every provider call: a call past its instance's deadline is a
//! [`Error::DeadlineExceeded`] (transient) for that call only, so one hung provider never stalls
//! the apps placed elsewhere.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keelson_manifest::app::Gate;

use crate::{
    AppRef, DesiredResource, Error, Health, IdempotencyKey, MetricsSource, Observed, Outcome, Provider,
    ProviderDescriptor, ResourceId, Result, TrafficRouter, Variant, Weight,
};

/// The deadline of an instance that does not set `timeout`.
pub const DEFAULT: Duration = Duration::from_secs(5);

/// Runs `call`, or gives up after `after` with a transient error naming the instance and operation.
pub async fn within<T>(
    instance: &crate::InstanceName,
    operation: &str,
    after: Duration,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(after, call).await {
        Ok(result) => result,
        Err(_) => Err(Error::DeadlineExceeded { instance: instance.clone(), operation: operation.to_owned(), after }),
    }
}

/// A provider, router or metrics source whose every call has a deadline.
pub struct WithDeadline<T: ?Sized> {
    inner: Arc<T>,
    after: Duration,
    instance: crate::InstanceName,
}

impl<T: ?Sized> WithDeadline<T> {
    /// Wraps `inner` (of `instance`) so that every call ends within `after`.
    pub fn new(inner: Arc<T>, instance: crate::InstanceName, after: Duration) -> Self {
        Self { inner, after, instance }
    }

    fn late(&self, operation: &str) -> Error {
        Error::DeadlineExceeded { instance: self.instance.clone(), operation: operation.to_owned(), after: self.after }
    }

    /// Per-id answers, or the deadline error for every id when the batch did not finish in time.
    async fn per_id<R>(
        &self,
        operation: &str,
        ids: &[ResourceId],
        call: impl Future<Output = Vec<(ResourceId, Result<R>)>>,
    ) -> Vec<(ResourceId, Result<R>)> {
        match tokio::time::timeout(self.after, call).await {
            Ok(answers) => answers,
            Err(_) => crate::each_failed(ids, || self.late(operation)),
        }
    }
}

#[async_trait]
impl<T: Provider + ?Sized> Provider for WithDeadline<T> {
    fn descriptor(&self) -> &ProviderDescriptor {
        self.inner.descriptor()
    }

    async fn observe(&self, ids: &[ResourceId]) -> Vec<(ResourceId, Result<Option<Observed>>)> {
        self.per_id("observe", ids, self.inner.observe(ids)).await
    }

    async fn apply(&self, resource: &DesiredResource, key: &IdempotencyKey) -> Result<Outcome> {
        within(&self.instance, "apply", self.after, self.inner.apply(resource, key)).await
    }

    async fn delete(&self, id: &ResourceId, key: &IdempotencyKey) -> Result<Outcome> {
        within(&self.instance, "delete", self.after, self.inner.delete(id, key)).await
    }

    async fn health(&self, ids: &[ResourceId]) -> Vec<(ResourceId, Result<Health>)> {
        self.per_id("health", ids, self.inner.health(ids)).await
    }
}

#[async_trait]
impl<T: TrafficRouter + ?Sized> TrafficRouter for WithDeadline<T> {
    async fn set_weights(&self, app: &AppRef, weights: &[Weight], key: &IdempotencyKey) -> Result<Outcome> {
        within(&self.instance, "setWeights", self.after, self.inner.set_weights(app, weights, key)).await
    }

    async fn weights(&self, app: &AppRef) -> Result<Vec<Weight>> {
        within(&self.instance, "weights", self.after, self.inner.weights(app)).await
    }
}

#[async_trait]
impl<T: MetricsSource + ?Sized> MetricsSource for WithDeadline<T> {
    async fn query(&self, app: &AppRef, gate: &Gate, variant: Variant, window: Duration) -> Result<f64> {
        within(&self.instance, "query", self.after, self.inner.query(app, gate, variant, window)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Capability, InstanceName, KindDescriptor, KindExample};

    /// Answers observe at once and never answers apply.
    struct HalfHung {
        descriptor: ProviderDescriptor,
    }

    #[async_trait]
    impl Provider for HalfHung {
        fn descriptor(&self) -> &ProviderDescriptor {
            &self.descriptor
        }
        async fn observe(&self, ids: &[ResourceId]) -> Vec<(ResourceId, Result<Option<Observed>>)> {
            ids.iter().map(|id| (id.clone(), Ok(None))).collect()
        }
        async fn apply(&self, _: &DesiredResource, _: &IdempotencyKey) -> Result<Outcome> {
            std::future::pending().await
        }
        async fn delete(&self, _: &ResourceId, _: &IdempotencyKey) -> Result<Outcome> {
            Ok(Outcome::NotFound)
        }
        async fn health(&self, ids: &[ResourceId]) -> Vec<(ResourceId, Result<Health>)> {
            std::future::pending::<()>().await;
            ids.iter().map(|id| (id.clone(), Ok(Health::Missing))).collect()
        }
    }

    fn hung() -> WithDeadline<HalfHung> {
        let descriptor = ProviderDescriptor {
            instance: InstanceName::new("lab"),
            provider_type: "test".into(),
            version: "0".into(),
            kinds: vec![KindDescriptor {
                api_version: "v1".into(),
                kind: "Thing".into(),
                namespaced: true,
                example: KindExample { valid: serde_json::json!({}), invalid: serde_json::json!(null) },
            }],
            capabilities: vec![Capability::Workloads],
        };
        WithDeadline::new(Arc::new(HalfHung { descriptor }), InstanceName::new("lab"), Duration::from_secs(5))
    }

    fn id(name: &str) -> ResourceId {
        ResourceId::namespaced("lab", "v1", "Thing", "ns", name)
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_call_ends_at_the_deadline_as_a_transient_error() {
        let p = hung();
        let r = DesiredResource {
            id: id("a"),
            owner: crate::Owner { app: "web".into() },
            digest: "sha256:1".into(),
            spec: serde_json::json!({}),
        };
        let key = IdempotencyKey { app: "web".into(), rollout: 1, step: 1, resource: "a".into() };
        let started = tokio::time::Instant::now();
        let err = p.apply(&r, &key).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(err.class(), crate::ErrorClass::Transient);
        assert_eq!(err.to_string(), "provider lab: apply did not answer within 5s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_batch_fails_every_id_and_a_prompt_one_answers() {
        let p = hung();
        let ids = [id("a"), id("b")];
        let health = p.health(&ids).await;
        assert_eq!(health.len(), 2);
        assert!(health.iter().all(|(_, r)| matches!(r, Err(Error::DeadlineExceeded { .. }))));
        assert_eq!(health[1].0, ids[1]);
        let observed = p.observe(&ids).await;
        assert!(observed.iter().all(|(_, r)| matches!(r, Ok(None))));
    }
}
