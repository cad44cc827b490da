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
    pub id: keelson_providers::ResourceId,
    pub health: keelson_providers::Health,
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
        }
    }

    /// Folds one ledger entry of this app into its status (used live and when replaying at start-up).
    pub fn apply_entry(&mut self, e: &LedgerEntry) {
        let to = Phase::parse(&e.to_state);
        self.phase = to;
        if !e.desired_digest.is_empty() {
            self.desired_digest.clone_from(&e.desired_digest);
            self.desired_commit.clone_from(&e.desired_commit);
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
        match to {
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

/// The whole fleet plus where the source is, shared between the engine and the status API.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fleet {
    pub apps: BTreeMap<String, AppStatus>,
    pub source: SourceStatus,
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
    /// True once the first snapshot has been reconciled.
    pub ready: bool,
    /// Why the tracked branch could not be read or its commit loaded, while that lasts.
    pub error: Option<SourceError>,
}

/// A source problem (an unreadable ref, a corrupt object), retried with capped backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceError {
    /// What failed, with its causes.
    pub message: String,
    /// The commit that could not be loaded, when the branch itself could be read.
    pub commit: Option<String>,
    /// When the problem was first seen (RFC 3339).
    pub since: String,
    /// Attempts that failed so far.
    pub attempts: u32,
    /// How long until the next attempt, in milliseconds (a new commit is tried at once).
    pub retry_in_ms: u64,
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
