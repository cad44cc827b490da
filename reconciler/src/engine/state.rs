//! What the daemon knows about each app: its phase in the state machine and why.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::ledger::LedgerEntry;

/// A phase of the app state machine (DESIGN.md: "App state machine").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Phase {
    Pending,
    Planned,
    Progressing,
    Healthy,
    Degraded,
    Failed,
    RollingBack,
    RolledBack,
    Blocked,
    Drifted,
    Suspended,
    /// The app was removed from git and everything it owned was deleted.
    Deleted,
}

impl Phase {
    /// All phases, for metrics with a zero for each.
    pub const ALL: [Phase; 12] = [
        Phase::Pending,
        Phase::Planned,
        Phase::Progressing,
        Phase::Healthy,
        Phase::Degraded,
        Phase::Failed,
        Phase::RollingBack,
        Phase::RolledBack,
        Phase::Blocked,
        Phase::Drifted,
        Phase::Suspended,
        Phase::Deleted,
    ];

    /// The name used in the ledger and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Planned => "Planned",
            Phase::Progressing => "Progressing",
            Phase::Healthy => "Healthy",
            Phase::Degraded => "Degraded",
            Phase::Failed => "Failed",
            Phase::RollingBack => "RollingBack",
            Phase::RolledBack => "RolledBack",
            Phase::Blocked => "Blocked",
            Phase::Drifted => "Drifted",
            Phase::Suspended => "Suspended",
            Phase::Deleted => "Deleted",
        }
    }

    /// Parses a ledger `to_state`; unknown names (from a newer version) read as `Pending`.
    pub fn parse(s: &str) -> Phase {
        Phase::ALL.into_iter().find(|p| p.as_str() == s).unwrap_or(Phase::Pending)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub step: u32,
    pub of: u32,
    /// Ready units over all resources of the step.
    pub ready: u32,
    pub desired: u32,
}

/// One managed resource as last observed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    pub id: keelson_provider_api::ResourceId,
    pub health: keelson_provider_api::Health,
}

/// The last recorded transition of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastTransition {
    pub from: String,
    pub to: String,
    pub action: String,
    pub at: String,
    pub audit_seq: i64,
}

/// Everything the daemon knows about one app.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    pub name: String,
    pub phase: Phase,
    /// Short machine-readable cause (`DependencyNotReady`, `InvalidManifest`, `ApplyFailed`, …).
    pub reason: String,
    /// What happened, for people.
    pub message: String,
    /// Commit the current desired digest was rolled out from.
    pub desired_commit: String,
    pub desired_digest: String,
    /// Digest stamped on the live resources.
    pub observed_digest: Option<String>,
    /// True when the live resources carry the desired digest and are healthy.
    pub in_sync: bool,
    pub progress: Option<Progress>,
    pub resources: Vec<ResourceStatus>,
    pub last_transition: Option<LastTransition>,
    /// Ledger seq of the intent that started the current rollout.
    pub rollout: Option<i64>,
    /// Provider instance that holds the app's resources.
    pub instance: String,
    /// A digest whose rollout failed; not retried until the digest changes or `Keelson-Retry: <app>`.
    pub quarantined_digest: Option<String>,
    /// Every resource the app's rollouts applied and did not delete since: what a prune deletes.
    pub inventory: Vec<keelson_provider_api::ResourceId>,
    /// A newer commit git wants for this app that has not started (it waits: `reason`, `message`).
    pub wanted_commit: Option<String>,
    /// The digest of [`AppStatus::wanted_commit`].
    pub wanted_digest: Option<String>,
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

    /// Folds one ledger entry of this app into its status (used live and when replaying at start-up).
    pub fn apply_entry(&mut self, e: &LedgerEntry) {
        let to = Phase::parse(&e.to_state);
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
        let detail = e.detail_json();
        if let Some(instance) = detail.get("instance").and_then(|v| v.as_str()) {
            self.instance = instance.to_owned();
        }
        if let Some(reason) = detail.get("reason").and_then(|v| v.as_str()) {
            self.reason = reason.to_owned();
        } else {
            self.reason.clear();
        }
        self.message = detail.get("message").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        if e.action == "intent" {
            self.fold_inventory(&detail);
        }
        match to {
            // A transient failure is tried again after a backoff; anything else waits for a new
            // digest or a `Keelson-Retry` trailer (ledgers older than error classes: all of them).
            Phase::Failed if detail.get("class").and_then(|c| c.as_str()) == Some("transient") => {
                self.in_sync = false;
            }
            Phase::Failed => self.quarantined_digest = Some(e.desired_digest.clone()),
            Phase::Healthy => {
                self.quarantined_digest = None;
                self.observed_digest = Some(e.desired_digest.clone());
                self.in_sync = true;
                self.progress = None;
            }
            _ => self.in_sync = false,
        }
        if let (Some(step), Some(of)) =
            (detail.get("step").and_then(|v| v.as_u64()), detail.get("of").and_then(|v| v.as_u64()))
        {
            let (ready, desired) = self.progress.as_ref().map(|p| (p.ready, p.desired)).unwrap_or_default();
            self.progress = Some(Progress { step: step as u32, of: of as u32, ready, desired });
        }
        self.last_transition = Some(LastTransition {
            from: e.from_state.clone(),
            to: e.to_state.clone(),
            action: e.action.clone(),
            at: e.at.clone(),
            audit_seq: e.seq,
        });
    }
}

impl AppStatus {
    /// An apply intent adds what it applies and drops what it prunes; a delete intent names what is
    /// about to go (the app leaves the fleet once it is `Deleted`).
    fn fold_inventory(&mut self, detail: &serde_json::Value) {
        use keelson_provider_api::{DesiredResource, ResourceId};
        if detail.get("op").and_then(|o| o.as_str()) == Some("delete") {
            return;
        }
        let applied: Vec<DesiredResource> =
            detail.get("resources").and_then(|r| serde_json::from_value(r.clone()).ok()).unwrap_or_default();
        let pruned: Vec<ResourceId> =
            detail.get("prune").and_then(|r| serde_json::from_value(r.clone()).ok()).unwrap_or_default();
        self.inventory.retain(|id| !pruned.contains(id));
        for r in applied {
            if !self.inventory.contains(&r.id) {
                self.inventory.push(r.id);
            }
        }
        self.inventory.sort();
    }
}

/// The whole fleet plus where the source is, shared between the engine and the status API.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fleet {
    pub apps: BTreeMap<String, AppStatus>,
    pub source: SourceStatus,
    /// The provider instances and how clusters are bound to them.
    pub providers: crate::providers::ProvidersStatus,
    /// Daemon config settings accepted but not carried out (see `keelson_manifest::not_built`).
    pub config_not_built: Vec<String>,
}

/// The source as last seen.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub repo: String,
    pub branch: String,
    pub path: String,
    /// Last commit reconciled.
    pub commit: Option<String>,
    /// When that reconcile finished (RFC 3339).
    pub last_sync: Option<String>,
    /// Problems found in that commit, as `file:line:col: error: message`.
    pub diagnostics: Vec<String>,
    /// The diagnostics about settings of that commit that are accepted but not carried out.
    pub not_built: Vec<String>,
    /// True once the first snapshot has been reconciled.
    pub ready: bool,
    /// What is wrong with the source right now that keeps git's wishes from being carried out
    /// (a deleted tracked branch, a commit with no apps), for people; empty when all is well.
    pub warnings: Vec<String>,
}

impl Fleet {
    /// Replays ledger entries (ascending seq) into app statuses; deleted apps drop out.
    pub fn replay(&mut self, entries: impl IntoIterator<Item = LedgerEntry>) {
        for e in entries {
            let status = self.apps.entry(e.app.clone()).or_insert_with(|| AppStatus::pending(&e.app));
            status.apply_entry(&e);
            if status.phase == Phase::Deleted {
                self.apps.remove(&e.app);
            }
        }
    }

    /// Number of apps in each phase (every phase present, zeros included).
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts: BTreeMap<&'static str, usize> = Phase::ALL.iter().map(|p| (p.as_str(), 0)).collect();
        for app in self.apps.values() {
            *counts.entry(app.phase.as_str()).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(seq: i64, to: &str, action: &str, detail: serde_json::Value) -> LedgerEntry {
        LedgerEntry {
            seq,
            at: "2026-12-01T12:00:00.000000Z".into(),
            app: "web".into(),
            desired_commit: "c1".into(),
            desired_digest: "sha256:d1".into(),
            rollout: Some(1),
            from_state: "Planned".into(),
            to_state: to.into(),
            action: action.into(),
            actor: "keelson".into(),
            detail: detail.to_string(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn resource(kind: &str, name: &str) -> serde_json::Value {
        json!({"id": {"instance": "sim", "apiVersion": "sim.keelson.dev/v1", "kind": kind, "namespace": "web", "name": name},
               "owner": {"app": "web"}, "digest": "sha256:d1", "spec": {}})
    }

    fn id(kind: &str, name: &str) -> keelson_provider_api::ResourceId {
        keelson_provider_api::ResourceId::namespaced("sim", "sim.keelson.dev/v1", kind, "web", name)
    }

    #[test]
    fn intents_build_the_inventory_that_prune_deletes() {
        let mut fleet = Fleet::default();
        fleet.replay([entry(
            2,
            "Progressing",
            "intent",
            json!({"op": "apply", "resources": [resource("Workload", "web"), resource("Route", "web")]}),
        )]);
        assert_eq!(fleet.apps["web"].inventory, [id("Route", "web"), id("Workload", "web")]);
        // The next rollout no longer renders the Route and prunes it.
        fleet.replay([entry(
            5,
            "Progressing",
            "intent",
            json!({"op": "apply", "resources": [resource("Workload", "web")], "prune": [id("Route", "web")]}),
        )]);
        assert_eq!(fleet.apps["web"].inventory, [id("Workload", "web")]);
        // A delete intent leaves the inventory for recovery; `Deleted` removes the app.
        fleet.replay([entry(
            8,
            "Progressing",
            "intent",
            json!({"op": "delete", "resources": [id("Workload", "web")]}),
        )]);
        assert_eq!(fleet.apps["web"].inventory, [id("Workload", "web")]);
        fleet.replay([entry(9, "Deleted", "deleted", json!({}))]);
        assert!(!fleet.apps.contains_key("web"));
    }

    #[test]
    fn only_failures_that_are_not_transient_quarantine_the_digest() {
        let mut fleet = Fleet::default();
        fleet.replay([entry(3, "Failed", "failed", json!({"reason": "ApplyFailed", "class": "transient"}))]);
        assert_eq!(fleet.apps["web"].quarantined_digest, None);
        fleet.replay([entry(4, "Failed", "failed", json!({"reason": "ApplyFailed", "class": "terminal"}))]);
        assert_eq!(fleet.apps["web"].quarantined_digest.as_deref(), Some("sha256:d1"));
        // Ledgers written before error classes: every failure quarantines, as it always did.
        let mut old = Fleet::default();
        old.replay([entry(3, "Failed", "failed", json!({"reason": "ApplyFailed"}))]);
        assert_eq!(old.apps["web"].quarantined_digest.as_deref(), Some("sha256:d1"));
    }
}
