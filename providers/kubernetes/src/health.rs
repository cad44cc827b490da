//! Health of a live object, by kind: rollout status for workloads, conditions for the rest.

use keelson_provider_api::Health;
use serde_json::Value;

/// The health of `live`, an object of `kind`.
pub fn of(kind: &str, live: &Value) -> Health {
    if live.pointer("/metadata/deletionTimestamp").is_some() {
        let finalizers = finalizers(live);
        return Health::Progressing {
            ready: 0,
            desired: 0,
            message: if finalizers.is_empty() {
                "being deleted".to_owned()
            } else {
                format!("being deleted, held by finalizers {}", finalizers.join(", "))
            },
        };
    }
    match kind {
        "Deployment" | "StatefulSet" => workload(kind, live),
        "DaemonSet" => daemon_set(live),
        "Job" => job(live),
        "CustomResourceDefinition" => match condition(live, "Established") {
            Some(("True", _)) => Health::Healthy,
            _ => progressing(0, 1, "the CRD is not established yet"),
        },
        "Namespace" => match live.pointer("/status/phase").and_then(Value::as_str) {
            Some("Terminating") => progressing(0, 1, "the namespace is terminating"),
            _ => Health::Healthy,
        },
        "PersistentVolumeClaim" => match live.pointer("/status/phase").and_then(Value::as_str) {
            Some("Bound") => Health::Healthy,
            Some("Lost") => Health::Degraded { message: "the claim lost its volume".into() },
            _ => progressing(0, 1, "the claim is not bound yet"),
        },
        // Custom resources that report a Ready condition are judged by it; everything else
        // (Services, ConfigMaps, Ingresses, RBAC, HPAs, …) is healthy once it exists.
        _ => match condition(live, "Ready") {
            Some(("False", message)) => Health::Degraded { message: format!("Ready is False: {message}") },
            Some(("Unknown", message)) => progressing(0, 1, &format!("Ready is Unknown: {message}")),
            _ => Health::Healthy,
        },
    }
}

fn progressing(ready: u32, desired: u32, message: &str) -> Health {
    Health::Progressing { ready, desired, message: message.to_owned() }
}

fn number(live: &Value, pointer: &str) -> Option<u64> {
    live.pointer(pointer).and_then(Value::as_u64)
}

fn condition<'a>(live: &'a Value, kind: &str) -> Option<(&'a str, &'a str)> {
    live.pointer("/status/conditions")?.as_array()?.iter().find_map(|c| {
        (c.get("type").and_then(Value::as_str) == Some(kind)).then(|| {
            (
                c.get("status").and_then(Value::as_str).unwrap_or("Unknown"),
                c.get("message").and_then(Value::as_str).unwrap_or(""),
            )
        })
    })
}

fn finalizers(live: &Value) -> Vec<String> {
    live.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Deployments and StatefulSets: the controller has seen the latest spec, and every wanted
/// replica is updated and available (ready, for StatefulSets).
fn workload(kind: &str, live: &Value) -> Health {
    let generation = number(live, "/metadata/generation").unwrap_or(0);
    let observed = number(live, "/status/observedGeneration").unwrap_or(0);
    let desired = number(live, "/spec/replicas").unwrap_or(1);
    let updated = number(live, "/status/updatedReplicas").unwrap_or(0);
    let available = if kind == "StatefulSet" {
        number(live, "/status/readyReplicas").unwrap_or(0)
    } else {
        number(live, "/status/availableReplicas").unwrap_or(0)
    };
    let total = number(live, "/status/replicas").unwrap_or(0);
    let (ready, want) = (to_u32(updated.min(available)), to_u32(desired));
    if kind == "Deployment"
        && let Some(c) = live
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("Progressing")))
        && c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
    {
        let message = c.get("message").and_then(Value::as_str).unwrap_or("the rollout stalled");
        return Health::Degraded { message: format!("progress deadline exceeded: {message}") };
    }
    if observed < generation {
        return progressing(ready, want, "the controller has not seen the latest spec yet");
    }
    if updated < desired {
        return progressing(ready, want, &format!("{updated} of {desired} replicas updated"));
    }
    if total > updated {
        return progressing(ready, want, &format!("{} old replicas are still terminating", total - updated));
    }
    if available < desired {
        return progressing(ready, want, &format!("{available} of {desired} updated replicas available"));
    }
    Health::Healthy
}

fn daemon_set(live: &Value) -> Health {
    let generation = number(live, "/metadata/generation").unwrap_or(0);
    let observed = number(live, "/status/observedGeneration").unwrap_or(0);
    let desired = number(live, "/status/desiredNumberScheduled").unwrap_or(0);
    let updated = number(live, "/status/updatedNumberScheduled").unwrap_or(0);
    let available = number(live, "/status/numberAvailable").unwrap_or(0);
    if observed < generation || updated < desired || available < desired {
        return progressing(to_u32(available), to_u32(desired), &format!("{available} of {desired} nodes available"));
    }
    Health::Healthy
}

fn job(live: &Value) -> Health {
    if let Some(("True", message)) = condition(live, "Failed") {
        return Health::Degraded { message: format!("the job failed: {message}") };
    }
    let completions = number(live, "/spec/completions").unwrap_or(1);
    let succeeded = number(live, "/status/succeeded").unwrap_or(0);
    if matches!(condition(live, "Complete"), Some(("True", _))) || succeeded >= completions {
        Health::Healthy
    } else {
        progressing(to_u32(succeeded), to_u32(completions), &format!("{succeeded} of {completions} completions"))
    }
}

fn to_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(generation: u64, status: Value) -> Value {
        json!({"metadata": {"generation": generation}, "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn a_deployment_is_healthy_once_every_replica_is_updated_and_available() {
        let done = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3});
        assert_eq!(of("Deployment", &deployment(2, done.clone())), Health::Healthy);
        let stale = of("Deployment", &deployment(3, done));
        assert!(matches!(&stale, Health::Progressing { message, .. } if message.contains("not seen")), "{stale:?}");
        let rolling = json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 2, "availableReplicas": 3});
        assert!(matches!(of("Deployment", &deployment(2, rolling)), Health::Progressing { ready: 2, desired: 3, .. }));
        let old = json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3});
        assert!(matches!(of("Deployment", &deployment(2, old)), Health::Progressing { .. }));
    }

    #[test]
    fn a_stalled_rollout_is_degraded() {
        let stalled = json!({"observedGeneration": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "web has timed out"}
        ]});
        assert!(
            matches!(of("Deployment", &deployment(1, stalled)), Health::Degraded { message } if message.contains("timed out"))
        );
    }

    #[test]
    fn other_kinds_follow_their_own_rules() {
        let crd = json!({"status": {"conditions": [{"type": "Established", "status": "True"}]}});
        assert_eq!(of("CustomResourceDefinition", &crd), Health::Healthy);
        assert!(matches!(of("CustomResourceDefinition", &json!({})), Health::Progressing { .. }));
        assert_eq!(of("ConfigMap", &json!({"data": {}})), Health::Healthy);
        let failed_job =
            json!({"status": {"conditions": [{"type": "Failed", "status": "True", "message": "backoff"}]}});
        assert!(matches!(of("Job", &failed_job), Health::Degraded { .. }));
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "message": "no cert"}]}});
        assert!(matches!(of("Certificate", &not_ready), Health::Degraded { .. }));
        let deleting = json!({"metadata": {"deletionTimestamp": "x", "finalizers": ["example.com/hold"]}});
        assert!(
            matches!(of("ConfigMap", &deleting), Health::Progressing { message, .. } if message.contains("example.com/hold"))
        );
    }
}
