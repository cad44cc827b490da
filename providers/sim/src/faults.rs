//! Faults injected into a sim by tests or config: failing, forbidden, unreachable, slow and hung
//! calls, degraded variants, and fields that drift behind Keelson's back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use keelson_provider_api::Variant;
use serde_json::Value;

use crate::{Operation, VariantMetrics};

/// Faults injected into a sim by tests or config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Resource names whose apply is rejected (a terminal error) before any effect.
    pub fail_apply: BTreeSet<String>,
    /// Resource names whose delete is rejected (a terminal error) before any effect.
    pub fail_delete: BTreeSet<String>,
    /// Resource names every call on which is forbidden, as RBAC would answer.
    pub forbidden: BTreeSet<String>,
    /// Operations that fail as if the API were unreachable (a transient error).
    pub unavailable: BTreeSet<Operation>,
    /// Extra latency per operation. For apply and delete it comes after the effect is stored, like a
    /// response lost on a slow network, so a caller that times out must rely on observing.
    pub slow: BTreeMap<Operation, Duration>,
    /// Operations that never answer.
    pub hang: BTreeSet<Operation>,
    /// Variants whose metrics are degraded.
    pub degrade: BTreeMap<Variant, VariantMetrics>,
    /// Fields the sim changes by itself, once each, as someone editing a live object would.
    pub drift: Vec<DriftFault>,
}

/// A field of a live resource that the sim changes once, `after` its last apply: drift behind
/// Keelson's back (`faults.drift` in config, `--sim-drift` on the command line).
#[derive(Debug, Clone, PartialEq)]
pub struct DriftFault {
    /// Resources named this.
    pub name: String,
    /// The field, a JSON pointer into the resource's spec (`/replicas`; `/spec/replicas` too).
    pub pointer: String,
    /// Its new value.
    pub value: Value,
    /// How long after the resource was last applied it drifts.
    pub after: Duration,
}

impl DriftFault {
    /// Reads `NAME:POINTER=VALUE[@AFTER]` (`storefront:/spec/replicas=5@10s`); VALUE is JSON, or
    /// text when it is not JSON; AFTER defaults to 0 (at the next look).
    pub fn parse(text: &str) -> std::result::Result<DriftFault, String> {
        let usage = || format!("`{text}` is not NAME:POINTER=VALUE[@AFTER] (e.g. storefront:/spec/replicas=5@10s)");
        let (name, rest) = text.split_once(':').ok_or_else(usage)?;
        let (pointer, rest) = rest.split_once('=').ok_or_else(usage)?;
        let (value, after) = match rest.rsplit_once('@') {
            Some((value, after)) => {
                let after = keelson_manifest::units::parse_duration(after).map_err(|e| format!("`{text}`: {e}"))?;
                (value, after)
            }
            None => (rest, Duration::ZERO),
        };
        if name.is_empty() || !pointer.starts_with('/') {
            return Err(usage());
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        Ok(DriftFault { name: name.to_owned(), pointer: pointer.to_owned(), value, after })
    }

    /// The pointer inside the stored spec.
    pub(crate) fn spec_pointer(&self) -> &str {
        self.pointer.strip_prefix("/spec").filter(|p| p.starts_with('/')).unwrap_or(&self.pointer)
    }
}

impl Faults {
    /// Makes every apply of resources named `name` fail.
    pub fn fail_apply(mut self, name: impl Into<String>) -> Self {
        self.fail_apply.insert(name.into());
        self
    }

    /// Makes every delete of resources named `name` fail.
    pub fn fail_delete(mut self, name: impl Into<String>) -> Self {
        self.fail_delete.insert(name.into());
        self
    }

    /// Makes every call on resources named `name` forbidden.
    pub fn forbid(mut self, name: impl Into<String>) -> Self {
        self.forbidden.insert(name.into());
        self
    }

    /// Makes `operation` fail as unreachable.
    pub fn unavailable(mut self, operation: Operation) -> Self {
        self.unavailable.insert(operation);
        self
    }

    /// Makes every `operation` take at least `delay` longer.
    pub fn slow(mut self, operation: Operation, delay: Duration) -> Self {
        self.slow.insert(operation, delay);
        self
    }

    /// Makes `operation` never answer.
    pub fn hang(mut self, operation: Operation) -> Self {
        self.hang.insert(operation);
        self
    }

    /// Makes `variant` report these metrics.
    pub fn degrade(mut self, variant: Variant, metrics: VariantMetrics) -> Self {
        self.degrade.insert(variant, metrics);
        self
    }
}

/// Sets `pointer` in `doc`, adding the last segment to an existing object if it is missing.
pub(crate) fn set_pointer(doc: &mut Value, pointer: &str, value: Value) -> std::result::Result<(), String> {
    if let Some(target) = doc.pointer_mut(pointer) {
        *target = value;
        return Ok(());
    }
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return Err("a JSON pointer must start with '/'".to_owned());
    };
    match doc.pointer_mut(parent) {
        Some(Value::Object(fields)) => {
            fields.insert(last.replace("~1", "/").replace("~0", "~"), value);
            Ok(())
        }
        Some(_) => Err(format!("{parent:?} is not an object")),
        None => Err(format!("{parent:?} does not exist")),
    }
}
