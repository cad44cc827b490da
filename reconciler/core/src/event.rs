//! What a ledger entry records, typed.
//!
//! An entry's `action` column names the event and its `detail` column holds the event's fields as
//! canonical JSON (ledger format v1, `docs/audit.md`). The hashed form never changes: these types
//! read every detail any release has written (fields added since are optional) and write the same
//! shapes. A detail of an action this release does not know, or that does not have the shape its
//! action promises, is an error naming the entry, never a default.
//!
//! Versioning: every field added to an event after format v1 is optional, so old entries parse; a
//! change that cannot be optional becomes a new action. [`EVENT_FORMAT`] is the version written.

use std::collections::BTreeMap;

use keelson_manifest::app::StrategyType;
use keelson_provider_api::registry::PlacementProblem;
use keelson_provider_api::{DesiredResource, ErrorClass, Outcome, ResourceId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::verdict::Verdict;

/// The event format this release writes (and the newest it reads).
pub const EVENT_FORMAT: u32 = 1;

/// One transition of an app, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    /// A rollout (or a prune) was planned; its seq is the rollout id. Action `plan`.
    Plan(Plan),
    /// The step about to be carried out, durable before any provider call. Action `intent`.
    Intent(Intent),
    /// What the provider calls of an apply intent did. Action `applied`.
    Applied(Outcomes),
    /// What the provider calls of a delete intent did; the app is gone. Action `deleted`.
    Deleted(Outcomes),
    /// Every resource is healthy at the desired digest. Action `healthy`.
    Healthy(Healthy),
    /// The rollout failed. Action `failed`.
    Failed(Failed),
    /// The change is held; the running version is kept. Action `block`.
    Block(Block),
    /// `spec.suspend` is set. Action `suspend`.
    Suspend(Suspend),
    /// Live resources differ from what git wants without a new commit. Action `drift`.
    Drift(Drift),
}

/// Whether an intent (or plan) applies resources or deletes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Op {
    /// Create or update.
    #[default]
    Apply,
    /// Delete (the app left git).
    Delete,
}

/// One resource's planned change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedChange {
    /// `instance:Kind/namespace/name`.
    pub resource: String,
    /// What happens to it.
    pub change: ChangeKind,
    /// The managed fields that change (updates only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Why it could not be observed (`unknown` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What happens to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeKind {
    /// It does not exist yet.
    Create,
    /// Some managed fields differ.
    Update,
    /// It goes (pruned).
    Delete,
    /// It could not be observed; the apply decides.
    Unknown,
}

/// A planned rollout or prune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The provider instance the app's resources go to (empty: an app never rolled out).
    pub instance: String,
    /// Apply (a rollout) or delete (a prune).
    #[serde(default)]
    pub op: Op,
    /// The rollout strategy (rollouts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategyType>,
    /// How many steps the strategy takes (rollouts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    /// Per-resource changes, as observed when planning.
    #[serde(default)]
    pub changes: Vec<PlannedChange>,
    /// What policy said (rollouts only; warnings included).
    #[serde(default)]
    pub verdicts: Vec<Verdict>,
    /// For people.
    pub message: String,
    /// When the rollout fails if it is not healthy (ledger time), so a restart keeps the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// The commit whose `Keelson-Retry` trailer this rollout consumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// True when the daemon runs with `--dry-run`: planned only, no provider is ever called.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Why this rollout started when it is not a new commit (`Drifted`: a self-heal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// What an intent is about to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum IntentOp {
    /// Apply these resources, then delete the stale ones the app no longer renders.
    Apply {
        /// Every resource of the step, as rendered.
        resources: Vec<DesiredResource>,
        /// Resources applied before that this step deletes.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        prune: Vec<ResourceId>,
    },
    /// Delete these resources (the app left git). Ledgers from before the inventory did not name
    /// them: then the inventory folded so far is what goes.
    Delete {
        /// The resources to delete.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resources: Option<Vec<ResourceId>>,
    },
}

/// The step about to be carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    /// `<app>/<rollout>/<step>`: the idempotency key the calls of this step carry.
    pub key: String,
    /// The provider instance.
    pub instance: String,
    /// The step, from 1.
    pub step: u32,
    /// Steps in the rollout.
    pub of: u32,
    /// What it does.
    #[serde(flatten)]
    pub op: IntentOp,
}

/// An outcome as the ledger labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recorded {
    /// Created.
    Created,
    /// Changed.
    Updated,
    /// Already as wanted.
    Unchanged,
    /// Deleted.
    Deleted,
    /// Already gone.
    NotFound,
    /// Carried out before a crash; found done when recovering (or a token API recognised the key).
    Replayed,
}

impl From<Outcome> for Recorded {
    fn from(o: Outcome) -> Recorded {
        match o {
            Outcome::Created => Recorded::Created,
            Outcome::Updated => Recorded::Updated,
            Outcome::Unchanged => Recorded::Unchanged,
            Outcome::Deleted => Recorded::Deleted,
            Outcome::NotFound => Recorded::NotFound,
            Outcome::Replayed => Recorded::Replayed,
        }
    }
}

/// What the calls of an intent did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcomes {
    /// The intent this settles.
    pub intent_seq: i64,
    /// The provider instance.
    pub instance: String,
    /// The step (rollouts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// Steps in the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<u32>,
    /// Outcome per resource (`instance:Kind/namespace/name`).
    pub outcomes: BTreeMap<String, Recorded>,
    /// True when settled at start-up after an interrupted run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
}

/// Every resource healthy at the desired digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Healthy {
    /// The digest the live resources carry.
    pub observed_digest: Option<String>,
    /// How many resources were checked.
    pub resources: usize,
}

/// Why a rollout failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailReason {
    /// A provider refused or failed an apply.
    ApplyFailed,
    /// A provider refused or failed a delete.
    DeleteFailed,
    /// An interrupted step could not be settled at start-up.
    RecoveryFailed,
    /// Not healthy within the progress deadline.
    ProgressDeadlineExceeded,
    /// The app's cluster has no workloads provider.
    NoProvider,
    /// The provider's renderer refused the app.
    RenderFailed,
}

impl FailReason {
    /// The name the API and status files show.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::ApplyFailed => "ApplyFailed",
            FailReason::DeleteFailed => "DeleteFailed",
            FailReason::RecoveryFailed => "RecoveryFailed",
            FailReason::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
            FailReason::NoProvider => "NoProvider",
            FailReason::RenderFailed => "RenderFailed",
        }
    }
}

/// A failed rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failed {
    /// Why.
    pub reason: FailReason,
    /// For people.
    pub message: String,
    /// The intent whose calls failed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_seq: Option<i64>,
    /// The provider instance, if one was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The provider error's class; absent (older ledgers, the deadline): the digest is quarantined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<ErrorClass>,
    /// What the calls before the failure did.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outcomes: BTreeMap<String, Recorded>,
    /// True when settled at start-up after an interrupted run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
}

impl Failed {
    /// A failure that is retried after a backoff instead of quarantining the digest.
    pub fn is_transient(&self) -> bool {
        self.class == Some(ErrorClass::Transient)
    }
}

/// Why a change is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockReason {
    /// The app's manifest (or something it depends on in the repository) has errors.
    InvalidManifest,
    /// A rule, Rego module or quota denies it.
    Policy,
    /// A freeze window is open.
    Freeze,
    /// Its cluster lacks a provider role its strategy needs.
    MissingRole,
    /// The commit would delete more of the fleet than the prune guard allows.
    PruneGuard,
}

impl BlockReason {
    /// The name the API and status files show.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockReason::InvalidManifest => "InvalidManifest",
            BlockReason::Policy => "Policy",
            BlockReason::Freeze => "Freeze",
            BlockReason::MissingRole => "MissingRole",
            BlockReason::PruneGuard => "PruneGuard",
        }
    }
}

/// A held change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Block {
    /// Why.
    pub reason: BlockReason,
    /// For people (ends in "the running version is kept").
    pub message: String,
    /// The verdicts behind a policy or freeze block.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<Verdict>,
    /// The placement problems behind a missing-role block.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<PlacementProblem>,
}

/// A suspended app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suspend {
    /// Always `Suspended`.
    pub reason: String,
    /// For people.
    pub message: String,
}

/// Live resources that differ from what git wants, found with no new commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    /// Every resource that differs.
    pub resources: Vec<DriftedResource>,
    /// True when the app heals itself next (`sync.selfHeal` is not false).
    pub self_heal: bool,
    /// For people.
    pub message: String,
}

/// One resource that differs from what git wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftedResource {
    /// `instance:Kind/namespace/name`.
    pub resource: String,
    /// JSON pointers of the managed fields that differ (`/spec/replicas`); values are not
    /// recorded (a live value may be a float, which has no canonical form in the ledger).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// True when the resource is gone altogether.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
}

/// A detail that is not what its action promises, or an action this release does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The action names no event this release knows.
    #[error(
        "ledger entry {seq} has action {action:?}, which this release does not know (written by a newer \
         Keelson?); upgrade keelson to read this ledger"
    )]
    UnknownAction {
        /// The entry.
        seq: i64,
        /// Its action.
        action: String,
    },
    /// The detail does not have the shape of its action.
    #[error("ledger entry {seq} ({action}): the detail is not a valid {action} event: {reason}")]
    BadDetail {
        /// The entry.
        seq: i64,
        /// Its action.
        action: String,
        /// What is wrong.
        reason: String,
    },
}

impl Event {
    /// The ledger `action` of this event.
    pub fn action(&self) -> &'static str {
        match self {
            Event::Plan(_) => "plan",
            Event::Intent(_) => "intent",
            Event::Applied(_) => "applied",
            Event::Deleted(_) => "deleted",
            Event::Healthy(_) => "healthy",
            Event::Failed(_) => "failed",
            Event::Block(_) => "block",
            Event::Suspend(_) => "suspend",
            Event::Drift(_) => "drift",
        }
    }

    /// The ledger `detail` of this event (its fields, without the action).
    pub fn detail(&self) -> Value {
        let value = match self {
            Event::Plan(e) => serde_json::to_value(e),
            Event::Intent(e) => serde_json::to_value(e),
            Event::Applied(e) | Event::Deleted(e) => serde_json::to_value(e),
            Event::Healthy(e) => serde_json::to_value(e),
            Event::Failed(e) => serde_json::to_value(e),
            Event::Block(e) => serde_json::to_value(e),
            Event::Suspend(e) => serde_json::to_value(e),
            Event::Drift(e) => serde_json::to_value(e),
        };
        // Every field is a string, an integer, a bool, a list or a map: serialization cannot fail.
        value.expect("events serialize to JSON")
    }

    /// The event of entry `seq` from its `action` and `detail` text.
    pub fn parse(seq: i64, action: &str, detail: &str) -> Result<Event, EventError> {
        fn read<T: DeserializeOwned>(seq: i64, action: &str, detail: &str) -> Result<T, EventError> {
            serde_json::from_str(detail).map_err(|e| EventError::BadDetail {
                seq,
                action: action.to_owned(),
                reason: e.to_string(),
            })
        }
        Ok(match action {
            "plan" => Event::Plan(read(seq, action, detail)?),
            "intent" => Event::Intent(read(seq, action, detail)?),
            "applied" => Event::Applied(read(seq, action, detail)?),
            "deleted" => Event::Deleted(read(seq, action, detail)?),
            "healthy" => Event::Healthy(read(seq, action, detail)?),
            "failed" => Event::Failed(read(seq, action, detail)?),
            "block" => Event::Block(read(seq, action, detail)?),
            "suspend" => Event::Suspend(read(seq, action, detail)?),
            "drift" => Event::Drift(read(seq, action, detail)?),
            _ => return Err(EventError::UnknownAction { seq, action: action.to_owned() }),
        })
    }

    /// The provider instance the event names, if it names one.
    pub fn instance(&self) -> Option<&str> {
        match self {
            Event::Plan(e) => Some(e.instance.as_str()),
            Event::Intent(e) => Some(e.instance.as_str()),
            Event::Applied(e) | Event::Deleted(e) => Some(e.instance.as_str()),
            Event::Failed(e) => e.instance.as_deref(),
            Event::Healthy(_) | Event::Block(_) | Event::Suspend(_) | Event::Drift(_) => None,
        }
        .filter(|i| !i.is_empty())
    }

    /// The machine-readable reason the event gives (`ApplyFailed`, `Policy`, …), if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Event::Failed(e) => Some(e.reason.as_str()),
            Event::Block(e) => Some(e.reason.as_str()),
            Event::Suspend(e) => Some(&e.reason),
            Event::Drift(_) => Some("Drifted"),
            Event::Plan(p) if p.dry_run && p.op == Op::Delete => Some("DryRunPrune"),
            Event::Plan(p) if p.dry_run => Some("DryRun"),
            _ => None,
        }
    }

    /// The event's message for people, if it has one.
    pub fn message(&self) -> Option<&str> {
        match self {
            Event::Plan(e) => Some(&e.message),
            Event::Failed(e) => Some(&e.message),
            Event::Block(e) => Some(&e.message),
            Event::Suspend(e) => Some(&e.message),
            Event::Drift(e) => Some(&e.message),
            _ => None,
        }
    }

    /// `(step, of)` for events that say where a rollout is.
    pub fn step(&self) -> Option<(u32, u32)> {
        match self {
            Event::Intent(e) => Some((e.step, e.of)),
            Event::Applied(e) | Event::Deleted(e) => e.step.zip(e.of),
            _ => None,
        }
    }

    /// The intent an outcome settles, if this is one.
    pub fn intent_seq(&self) -> Option<i64> {
        match self {
            Event::Applied(e) | Event::Deleted(e) => Some(e.intent_seq),
            Event::Failed(e) => e.intent_seq,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
