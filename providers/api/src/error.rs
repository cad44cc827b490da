//! The one error type of the contract, with a class that decides what the engine does next.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::InstanceName;

/// What the engine does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorClass {
    /// Worth retrying with backoff: a timeout, an unreachable API, a throttled call.
    Transient,
    /// Retrying the same thing cannot help: fail the rollout (and quarantine its digest).
    Terminal,
    /// Another writer owns a field Keelson wants to set; a person must decide.
    Conflict,
}

impl ErrorClass {
    /// The lowercase name, for messages, metrics and the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Terminal => "terminal",
            ErrorClass::Conflict => "conflict",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors a provider reports. Holds no storage-engine or transport types: their text is kept, so
/// the contract does not change when a provider's dependencies do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The provider does not manage this kind of resource.
    #[error("provider {instance}: unknown resource kind {api_version}/{kind}")]
    UnknownKind {
        /// The instance asked.
        instance: InstanceName,
        /// API version asked for.
        api_version: String,
        /// Kind asked for.
        kind: String,
    },
    /// The resource was rejected before any side effect.
    #[error("provider {instance}: invalid spec for {resource}: {message}")]
    InvalidSpec {
        /// The instance asked.
        instance: InstanceName,
        /// The resource (id display) or app the spec was for.
        resource: String,
        /// Every problem found.
        message: String,
    },
    /// The provider may not touch this resource (RBAC, a cloud policy).
    #[error("provider {instance}: forbidden: {resource}: {message}")]
    Forbidden {
        /// The instance asked.
        instance: InstanceName,
        /// The resource.
        resource: String,
        /// What the API said.
        message: String,
    },
    /// Another field manager owns fields Keelson wants to set.
    #[error("provider {instance}: conflict on {resource}: {manager} owns {}", fields.join(", "))]
    Conflict {
        /// The instance asked.
        instance: InstanceName,
        /// The resource.
        resource: String,
        /// Who owns the fields.
        manager: String,
        /// The fields, as JSON pointers or the API's paths.
        fields: Vec<String>,
    },
    /// The provider could not be reached or its backing store failed; retry later.
    #[error("provider {instance}: unavailable: {message}")]
    Unavailable {
        /// The instance asked.
        instance: InstanceName,
        /// What failed.
        message: String,
    },
    /// The call did not finish within the instance's deadline.
    #[error("provider {instance}: {operation} did not answer within {}", humantime(*after))]
    DeadlineExceeded {
        /// The instance asked.
        instance: InstanceName,
        /// `observe`, `apply`, `delete`, `health`, `setWeights`, `weights`, `query`.
        operation: String,
        /// The deadline.
        after: Duration,
    },
    /// Any other failure, with the class the provider gives it.
    #[error("provider {instance}: {message}")]
    Failed {
        /// The instance asked.
        instance: InstanceName,
        /// What went wrong.
        message: String,
        /// Whether to retry.
        class: ErrorClass,
    },
    /// No instance of that name exists.
    #[error("no provider instance named {0:?}; define it under `providers:` in the daemon config")]
    NoSuchInstance(String),
    /// The instance lacks what was asked of it (a router, a metrics source).
    #[error("provider {instance} ({provider_type}) cannot act as {role}: it lacks the {capability} capability")]
    Unsupported {
        /// The instance asked.
        instance: InstanceName,
        /// Its type.
        provider_type: String,
        /// The role or call asked for.
        role: String,
        /// The capability missing.
        capability: crate::Capability,
    },
}

impl Error {
    /// Whether the engine retries, fails or reports a conflict.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Unavailable { .. } | Error::DeadlineExceeded { .. } => ErrorClass::Transient,
            Error::Conflict { .. } => ErrorClass::Conflict,
            Error::Failed { class, .. } => *class,
            Error::UnknownKind { .. }
            | Error::InvalidSpec { .. }
            | Error::Forbidden { .. }
            | Error::NoSuchInstance(_)
            | Error::Unsupported { .. } => ErrorClass::Terminal,
        }
    }

    /// A short, stable label for metrics (never the message).
    pub fn kind_label(&self) -> &'static str {
        match self {
            Error::UnknownKind { .. } => "unknown_kind",
            Error::InvalidSpec { .. } => "invalid_spec",
            Error::Forbidden { .. } => "forbidden",
            Error::Conflict { .. } => "conflict",
            Error::Unavailable { .. } => "unavailable",
            Error::DeadlineExceeded { .. } => "deadline_exceeded",
            Error::Failed { .. } => "failed",
            Error::NoSuchInstance(_) => "no_such_instance",
            Error::Unsupported { .. } => "unsupported",
        }
    }

    /// A transient failure of `instance` (storage, network), keeping only the text of its cause.
    pub fn unavailable(instance: &InstanceName, cause: impl fmt::Display) -> Self {
        Error::Unavailable { instance: instance.clone(), message: cause.to_string() }
    }
}

/// Result type of the contract.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `250ms`, `5s`, `1m30s`: how deadlines read in messages.
pub(crate) fn humantime(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) && ms < 60_000 {
        format!("{}s", ms / 1000)
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        let s = d.as_secs();
        if s.is_multiple_of(60) { format!("{}m", s / 60) } else { format!("{}m{}s", s / 60, s % 60) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance() -> InstanceName {
        InstanceName::new("prod")
    }

    #[test]
    fn classes_decide_retry_fail_or_conflict() {
        let transient = [
            Error::unavailable(&instance(), "connection refused"),
            Error::DeadlineExceeded { instance: instance(), operation: "apply".into(), after: Duration::from_secs(5) },
            Error::Failed { instance: instance(), message: "throttled".into(), class: ErrorClass::Transient },
        ];
        for e in &transient {
            assert_eq!(e.class(), ErrorClass::Transient, "{e}");
        }
        let terminal = [
            Error::UnknownKind { instance: instance(), api_version: "v1".into(), kind: "Gadget".into() },
            Error::InvalidSpec { instance: instance(), resource: "r".into(), message: "m".into() },
            Error::Forbidden { instance: instance(), resource: "r".into(), message: "m".into() },
            Error::NoSuchInstance("x".into()),
        ];
        for e in &terminal {
            assert_eq!(e.class(), ErrorClass::Terminal, "{e}");
        }
        let conflict = Error::Conflict {
            instance: instance(),
            resource: "prod:Deployment/payments/web".into(),
            manager: "kubectl-edit".into(),
            fields: vec!["/spec/replicas".into()],
        };
        assert_eq!(conflict.class(), ErrorClass::Conflict);
        assert_eq!(
            conflict.to_string(),
            "provider prod: conflict on prod:Deployment/payments/web: kubectl-edit owns /spec/replicas"
        );
    }

    #[test]
    fn deadlines_read_like_config() {
        let e = Error::DeadlineExceeded {
            instance: instance(),
            operation: "observe".into(),
            after: Duration::from_secs(5),
        };
        assert_eq!(e.to_string(), "provider prod: observe did not answer within 5s");
        assert_eq!(humantime(Duration::from_millis(250)), "250ms");
        assert_eq!(humantime(Duration::from_millis(1500)), "1.5s");
        assert_eq!(humantime(Duration::from_secs(90)), "1m30s");
        assert_eq!(humantime(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn labels_are_distinct() {
        let labels = [
            Error::unavailable(&instance(), "x").kind_label(),
            Error::NoSuchInstance("x".into()).kind_label(),
            Error::Failed { instance: instance(), message: String::new(), class: ErrorClass::Terminal }.kind_label(),
        ];
        assert_eq!(labels, ["unavailable", "no_such_instance", "failed"]);
    }
}
