//! The JSON the status API writes and the CLI reads, one type each, camelCase throughout.
//!
//! The ledger's hashed form (snake_case, `detail` as canonical text; ledger format v1) is what
//! `keelson audit export` writes and third-party verifiers read; everything a person or a bot
//! reads from the API or `--format json` is one of these views instead.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fleet::AppStatus;
use crate::ledger::LedgerEntry;

/// `GET /api/v1/apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppList {
    /// Every app, by name.
    pub apps: Vec<AppStatus>,
}

/// One ledger entry as people and bots read it: camelCase, the detail as structured JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryView {
    /// Position in the chain.
    pub seq: i64,
    /// When (RFC 3339 UTC, microseconds).
    pub at: String,
    /// The app.
    pub app: String,
    /// The desired commit.
    pub desired_commit: String,
    /// The desired digest.
    pub desired_digest: String,
    /// The entry that started this entry's rollout.
    pub rollout: Option<i64>,
    /// Phase before.
    pub from: String,
    /// Phase after.
    pub to: String,
    /// The event's action.
    pub action: String,
    /// Who caused it.
    pub actor: String,
    /// The event's fields (structured; a detail that is not JSON, only possible after tampering,
    /// is shown as its text).
    pub detail: Value,
    /// `hash` of the previous entry.
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

impl From<&LedgerEntry> for EntryView {
    fn from(e: &LedgerEntry) -> EntryView {
        EntryView {
            seq: e.seq,
            at: e.at.clone(),
            app: e.app.clone(),
            desired_commit: e.desired_commit.clone(),
            desired_digest: e.desired_digest.clone(),
            rollout: e.rollout,
            from: e.from_state.clone(),
            to: e.to_state.clone(),
            action: e.action.clone(),
            actor: e.actor.clone(),
            detail: serde_json::from_str(&e.detail).unwrap_or_else(|_| Value::String(e.detail.clone())),
            prev_hash: e.prev_hash.clone(),
            hash: e.hash.clone(),
        }
    }
}

/// `GET /api/v1/audit`, and `keelson audit log -o json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryList {
    /// The entries, ascending seq.
    pub entries: Vec<EntryView>,
}

/// `GET /api/v1/apps/{name}/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// The app.
    pub app: String,
    /// Its entries, ascending seq.
    pub entries: Vec<EntryView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_view_is_camel_case_with_a_structured_detail() {
        let entry = LedgerEntry {
            seq: 3,
            at: "2026-12-01T12:00:00.000000Z".into(),
            app: "web".into(),
            desired_commit: "c".into(),
            desired_digest: "d".into(),
            rollout: Some(2),
            from_state: "Planned".into(),
            to_state: "Progressing".into(),
            action: "intent".into(),
            actor: "keelson".into(),
            detail: r#"{"key":"web/2/1"}"#.into(),
            prev_hash: "p".into(),
            hash: "h".into(),
        };
        let json = serde_json::to_value(EntryView::from(&entry)).unwrap();
        assert_eq!(json["desiredCommit"], "c");
        assert_eq!(json["from"], "Planned");
        assert_eq!(json["detail"]["key"], "web/2/1", "the detail is an object, not a string: {json}");
        assert!(json.get("desired_commit").is_none());
    }
}
