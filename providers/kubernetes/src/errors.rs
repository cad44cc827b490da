//! kube-rs errors → the contract's errors, by status code and reason.
//!
//! kube-rs's client already retries 429, 503 and 504 itself, waiting as long as the server's
//! `Retry-After` says; what reaches here has run out of those retries and is transient, with the
//! server's `retryAfterSeconds` kept in the message.

use keelson_provider_api::{Error, ErrorClass, InstanceName, ResourceId};
use kube::core::Status;

/// The contract error for a failed call on `id`.
pub fn from_kube(instance: &InstanceName, id: &ResourceId, e: kube::Error) -> Error {
    match e {
        kube::Error::Api(status) => from_status(instance, id, &status),
        kube::Error::Discovery(d) => Error::UnknownKind {
            instance: instance.clone(),
            api_version: id.api_version.clone(),
            kind: format!("{} ({d})", id.kind),
        },
        // Transport, TLS, a body that is not JSON: the API could not be reached or answered badly.
        other => Error::unavailable(instance, format!("{id}: {other}")),
    }
}

/// The contract error for an API `Status` answer about `id`.
pub fn from_status(instance: &InstanceName, id: &ResourceId, s: &Status) -> Error {
    let resource = id.to_string();
    let message = if s.message.is_empty() { s.reason.clone() } else { s.message.clone() };
    match (s.code, s.reason.as_str()) {
        (409, "Conflict") if conflict_causes(s).is_some() => {
            let (manager, fields) = conflict_causes(s).unwrap_or_default();
            Error::Conflict { instance: instance.clone(), resource, manager, fields }
        }
        (403, _) => Error::Forbidden { instance: instance.clone(), resource, message },
        (401, _) => Error::Failed {
            instance: instance.clone(),
            message: format!("{resource}: unauthorized ({message}); check the kubeconfig's credentials"),
            class: ErrorClass::Terminal,
        },
        (400 | 422, _) => Error::InvalidSpec { instance: instance.clone(), resource, message },
        (404, _) => Error::UnknownKind {
            instance: instance.clone(),
            api_version: id.api_version.clone(),
            kind: format!("{} (the API server answered 404: {message})", id.kind),
        },
        (429, _) | (500..=599, _) | (408, _) | (409, _) => {
            let after = s
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|n| *n > 0)
                .map(|n| format!(" (retry after {n}s)"))
                .unwrap_or_default();
            Error::Failed {
                instance: instance.clone(),
                message: format!("{resource}: {} {}: {message}{after}", s.code, s.reason),
                class: ErrorClass::Transient,
            }
        }
        _ => Error::Failed {
            instance: instance.clone(),
            message: format!("{resource}: {} {}: {message}", s.code, s.reason),
            class: ErrorClass::Terminal,
        },
    }
}

/// The manager and fields of a server-side apply conflict (`FieldManagerConflict` causes).
fn conflict_causes(s: &Status) -> Option<(String, Vec<String>)> {
    let causes = &s.details.as_ref()?.causes;
    let conflicts: Vec<_> = causes.iter().filter(|c| c.reason == "FieldManagerConflict").collect();
    if conflicts.is_empty() {
        return None;
    }
    let mut managers: Vec<String> = conflicts.iter().filter_map(|c| manager_of(&c.message)).collect();
    managers.dedup();
    let fields = conflicts.iter().map(|c| c.field.clone()).collect();
    Some((if managers.is_empty() { "another field manager".into() } else { managers.join(", ") }, fields))
}

/// `conflict with "kubectl-edit" using apps/v1` → `kubectl-edit`.
fn manager_of(message: &str) -> Option<String> {
    let rest = message.split_once("conflict with \"")?.1;
    Some(rest.split_once('"')?.0.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::StatusDetails;
    use serde_json::json;

    fn details(v: serde_json::Value) -> StatusDetails {
        serde_json::from_value(v).unwrap()
    }

    fn id() -> ResourceId {
        ResourceId::namespaced("prod", "apps/v1", "Deployment", "web", "web")
    }

    fn status(code: u16, reason: &str, details: Option<StatusDetails>) -> Status {
        Status { code, reason: reason.into(), message: "m".into(), details, ..Status::default() }
    }

    #[test]
    fn codes_and_reasons_map_to_classes() {
        let i = InstanceName::new("prod");
        let class = |code, reason| from_status(&i, &id(), &status(code, reason, None)).class();
        assert_eq!(class(403, "Forbidden"), ErrorClass::Terminal);
        assert!(matches!(from_status(&i, &id(), &status(403, "Forbidden", None)), Error::Forbidden { .. }));
        assert!(matches!(from_status(&i, &id(), &status(422, "Invalid", None)), Error::InvalidSpec { .. }));
        assert_eq!(class(500, "InternalError"), ErrorClass::Transient);
        assert_eq!(class(429, "TooManyRequests"), ErrorClass::Transient);
        assert_eq!(class(409, "AlreadyExists"), ErrorClass::Transient);
        assert_eq!(class(401, "Unauthorized"), ErrorClass::Terminal);
        let throttled = status(429, "TooManyRequests", Some(details(json!({"retryAfterSeconds": 7}))));
        assert!(from_status(&i, &id(), &throttled).to_string().contains("retry after 7s"));
    }

    #[test]
    fn an_apply_conflict_names_the_manager_and_fields() {
        let cause = |field: &str| json!({"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-edit\" using apps/v1", "field": field});
        let s =
            status(409, "Conflict", Some(details(json!({"causes": [cause(".spec.replicas"), cause(".spec.paused")]}))));
        let e = from_status(&InstanceName::new("prod"), &id(), &s);
        assert_eq!(e.class(), ErrorClass::Conflict);
        assert_eq!(
            e.to_string(),
            "provider prod: conflict on prod:Deployment/web/web: kubectl-edit owns .spec.replicas, .spec.paused"
        );
    }
}
