//! What the daemon shows about itself: every app's status (folded by `keelson-core` from the
//! ledger), the source, the providers and the settings that are not built.

use std::collections::BTreeMap;

use keelson_core::fleet::FoldError;
use serde::Serialize;

use crate::ledger::LedgerEntry;

pub use keelson_core::fleet::{LastTransition, Progress, ResourceStatus};
pub use keelson_core::{AppStatus, Phase};

/// The whole fleet plus where the source is, shared between the engine and the status API.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fleet {
    /// Every app's status, folded from the ledger.
    pub apps: keelson_core::Apps,
    /// Where the source is.
    pub source: SourceStatus,
    /// The provider instances and how clusters are bound to them.
    pub providers: crate::providers::ProvidersStatus,
    /// Daemon config settings accepted but not carried out (see `keelson_manifest::not_built`).
    pub config_not_built: Vec<String>,
    /// Seq of the last ledger entry folded into `apps` (whoever appended it).
    #[serde(skip)]
    pub head: i64,
    /// Team and cluster of every app the last loaded commit wants (for filters and metrics).
    #[serde(skip)]
    pub placements: BTreeMap<String, AppPlacement>,
}

/// Who owns an app and where it runs, as git says.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppPlacement {
    /// `metadata.team` (empty when not written).
    pub team: String,
    /// `spec.placement.cluster`.
    pub cluster: String,
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
    /// Why the tracked branch could not be read or its commit loaded, while that lasts.
    pub error: Option<SourceError>,
    /// The remote and its last fetch (None for a local repository).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::source::remote::RemoteStatus>,
    /// The webhook listener (None when there is none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<crate::source::webhook::WebhookStatus>,
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
    pub fn replay(&mut self, entries: impl IntoIterator<Item = LedgerEntry>) -> Result<(), FoldError> {
        keelson_core::fleet::replay(&mut self.apps, entries)
    }

    /// Number of apps in each phase (every phase present, zeros included).
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        keelson_core::fleet::counts(&self.apps)
    }
}
