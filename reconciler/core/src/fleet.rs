//! The fleet fold: the status of every app, from its ledger entries' typed events.
//!
//! The same fold runs live (each entry as it is appended) and at start-up (the whole ledger), so a
//! restart knows exactly what the running daemon knew. An entry it cannot read is an error.

use std::collections::BTreeMap;

use keelson_provider_api::{Health, ResourceId};
use serde::{Deserialize, Serialize};

use crate::diff::FieldChange;
use crate::event::{DriftedResource, Event, EventError, IntentOp};
use crate::ledger::LedgerEntry;
use crate::phase::{Phase, UnknownPhase};

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The step being carried out, from 1.
    pub step: u32,
    /// Steps in the rollout.
    pub of: u32,
    /// Ready units over all resources of the step.
    pub ready: u32,
    /// Units wanted over all resources of the step.
    pub desired: u32,
}

/// One managed resource as last observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// Which resource.
    pub id: ResourceId,
    /// Its health.
    pub health: Health,
}

/// A resource whose live managed fields differ from what git wants, as last seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDrift {
    /// `instance:Kind/namespace/name`.
    pub resource: String,
    /// True when the resource is gone altogether.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
    /// The fields that differ: `old` is what is live, `new` what git wants (values only as
    /// observed by this process; the ledger records the pointers).
    #[serde(default)]
    pub changes: Vec<FieldChange>,
}

impl From<&DriftedResource> for ResourceDrift {
    fn from(d: &DriftedResource) -> Self {
        ResourceDrift {
            resource: d.resource.clone(),
            missing: d.missing,
            changes: d.fields.iter().map(|f| FieldChange { pointer: f.clone(), old: None, new: None }).collect(),
        }
    }
}

/// The last recorded transition of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastTransition {
    /// Phase before.
    pub from: Phase,
    /// Phase after.
    pub to: Phase,
    /// The event's action.
    pub action: String,
    /// When (the ledger's `at`).
    pub at: String,
    /// The ledger entry.
    pub audit_seq: i64,
}

/// Everything the daemon knows about one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    /// The app.
    pub name: String,
    /// Its phase.
    pub phase: Phase,
    /// Short machine-readable cause (`DependencyNotReady`, `InvalidManifest`, `ApplyFailed`, …).
    pub reason: String,
    /// What happened, for people.
    pub message: String,
    /// Commit the current desired digest was rolled out from.
    pub desired_commit: String,
    /// The digest last acted on.
    pub desired_digest: String,
    /// Digest stamped on the live resources.
    pub observed_digest: Option<String>,
    /// True when the live resources carry the desired digest and are healthy.
    pub in_sync: bool,
    /// Where the current rollout is.
    pub progress: Option<Progress>,
    /// The resources as last observed.
    pub resources: Vec<ResourceStatus>,
    /// The last transition.
    pub last_transition: Option<LastTransition>,
    /// Ledger seq of the entry that started the current rollout.
    pub rollout: Option<i64>,
    /// Provider instance that holds the app's resources.
    pub instance: String,
    /// A digest whose rollout failed; not retried until the digest changes or `Keelson-Retry: <app>`.
    pub quarantined_digest: Option<String>,
    /// Every resource the app's rollouts applied and did not delete since: what a prune deletes.
    pub inventory: Vec<ResourceId>,
    /// A newer commit git wants for this app that has not started (it waits: `reason`, `message`).
    pub wanted_commit: Option<String>,
    /// The digest of [`AppStatus::wanted_commit`].
    pub wanted_digest: Option<String>,
    /// When the current rollout fails unless it is healthy (ledger time), if its plan said.
    pub deadline: Option<String>,
    /// The commit whose `Keelson-Retry` trailer the last rollout consumed.
    pub retry_consumed: Option<String>,
    /// The commit the last rollout (not a prune) started from: the app at that commit is the
    /// `previous` of the next rollout's policy input.
    pub rollout_commit: Option<String>,
    /// Live resources that differ from git (empty when none, or not looked at since Healthy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<ResourceDrift>,
}

/// An entry the fold cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    /// Its event is unknown or malformed.
    #[error(transparent)]
    Event(#[from] EventError),
    /// A phase it names is unknown.
    #[error("ledger entry {seq}: {source}")]
    Phase {
        /// The entry.
        seq: i64,
        /// The phase.
        source: UnknownPhase,
    },
}

impl AppStatus {
    /// A new app nobody has acted on yet.
    pub fn pending(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            phase: Phase::Pending,
            reason: String::new(),
            message: String::new(),
            desired_commit: String::new(),
            desired_digest: String::new(),
            observed_digest: None,
            in_sync: false,
            progress: None,
            resources: Vec::new(),
            last_transition: None,
            rollout: None,
            instance: String::new(),
            quarantined_digest: None,
            inventory: Vec::new(),
            wanted_commit: None,
            wanted_digest: None,
            deadline: None,
            retry_consumed: None,
            rollout_commit: None,
            drift: Vec::new(),
        }
    }

    /// Git wants `digest` (from `commit`) but its rollout must wait: say so, and stop calling the
    /// running version in sync with git.
    pub fn wait_for(&mut self, commit: &str, digest: &str, reason: &str, message: String) {
        self.reason = reason.into();
        self.message = message;
        self.in_sync = false;
        self.wanted_commit = Some(commit.to_owned());
        self.wanted_digest = Some(digest.to_owned());
    }

    /// Nothing waits any more: the running version is what git wants.
    pub fn clear_wait(&mut self) {
        self.wanted_commit = None;
        self.wanted_digest = None;
        self.in_sync = self.phase == Phase::Healthy;
        if self.reason == "DependencyNotReady" {
            self.reason.clear();
            self.message.clear();
        }
    }

    /// Folds one ledger entry of this app into its status.
    pub fn apply_entry(&mut self, e: &LedgerEntry) -> Result<(), FoldError> {
        let event = e.event()?;
        let (from, to) = e.phases().map_err(|source| FoldError::Phase { seq: e.seq, source })?;
        self.apply_event(e, &event, from, to);
        Ok(())
    }

    /// Folds a typed event (already parsed from `e`) into this status.
    pub fn apply_event(&mut self, e: &LedgerEntry, event: &Event, from: Phase, to: Phase) {
        self.phase = to;
        if !e.desired_digest.is_empty() {
            self.desired_digest.clone_from(&e.desired_digest);
            self.desired_commit.clone_from(&e.desired_commit);
            // Whatever waited has now been acted on (or superseded).
            self.wanted_commit = None;
            self.wanted_digest = None;
        }
        if e.rollout.is_some() {
            self.rollout = e.rollout;
        }
        if let Some(instance) = event.instance() {
            self.instance = instance.to_owned();
        }
        self.reason = event.reason().unwrap_or_default().to_owned();
        self.message = event.message().unwrap_or_default().to_owned();
        if let Event::Plan(plan) = event {
            self.deadline.clone_from(&plan.deadline);
            if plan.retry_of.is_some() {
                self.retry_consumed.clone_from(&plan.retry_of);
            }
            if plan.op == crate::event::Op::Apply {
                self.rollout_commit = Some(e.desired_commit.clone());
            }
        }
        if let Event::Intent(intent) = event
            && let IntentOp::Apply { resources, prune } = &intent.op
        {
            // An apply adds what it applies and drops what it prunes; a delete names what is about
            // to go, and the app leaves the fleet once it is Deleted.
            self.inventory.retain(|id| !prune.contains(id));
            for r in resources {
                if !self.inventory.contains(&r.id) {
                    self.inventory.push(r.id.clone());
                }
            }
            self.inventory.sort();
        }
        if let Event::Drift(drift) = event {
            self.drift = drift.resources.iter().map(ResourceDrift::from).collect();
        }
        if !matches!(to, Phase::Planned | Phase::Progressing) {
            // A deadline belongs to a rollout in flight.
            self.deadline = None;
        }
        match (to, event) {
            // A transient failure is tried again after a backoff; anything else waits for a new
            // digest or a `Keelson-Retry` trailer (ledgers older than error classes: all of them).
            (Phase::Failed, Event::Failed(f)) if f.is_transient() => self.in_sync = false,
            (Phase::Failed, _) => self.quarantined_digest = Some(e.desired_digest.clone()),
            (Phase::Healthy, _) => {
                self.drift.clear();
                self.quarantined_digest = None;
                self.observed_digest = Some(e.desired_digest.clone());
                self.in_sync = true;
                self.progress = None;
            }
            _ => self.in_sync = false,
        }
        if let Some((step, of)) = event.step() {
            let (ready, desired) = self.progress.as_ref().map(|p| (p.ready, p.desired)).unwrap_or_default();
            self.progress = Some(Progress { step, of, ready, desired });
        }
        self.last_transition =
            Some(LastTransition { from, to, action: e.action.clone(), at: e.at.clone(), audit_seq: e.seq });
    }
}

/// Every app's status, by name.
pub type Apps = BTreeMap<String, AppStatus>;

/// Folds entries (ascending seq) into `apps`; an app that is `Deleted` leaves the map.
pub fn replay(apps: &mut Apps, entries: impl IntoIterator<Item = LedgerEntry>) -> Result<(), FoldError> {
    for e in entries {
        let status = apps.entry(e.app.clone()).or_insert_with(|| AppStatus::pending(&e.app));
        status.apply_entry(&e)?;
        if status.phase == Phase::Deleted {
            apps.remove(&e.app);
        }
    }
    Ok(())
}

/// Number of apps in each phase (every phase present, zeros included).
pub fn counts(apps: &Apps) -> BTreeMap<&'static str, usize> {
    let mut counts: BTreeMap<&'static str, usize> = Phase::ALL.iter().map(|p| (p.as_str(), 0)).collect();
    for app in apps.values() {
        *counts.entry(app.phase.as_str()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests;
