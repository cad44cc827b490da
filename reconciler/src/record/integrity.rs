//! The status branch measured against the ledger.
//!
//! The ledger is the source of record; the branch must say what the ledger says. Two checks:
//! - [`inspect_tip`]: may the daemon build its next commit on the branch's tip? Only when the tip
//!   is one it wrote, or when the tip's `Keelson-Audit` trailers match the ledger and its
//!   `status/<app>.yaml` files are exactly what the ledger records up to the tip's last anchor.
//!   A branch that anchors a chain the ledger does not hold (a deleted or replaced ledger) is told
//!   apart from a tip edited by hand, because the daemon must refuse to start on the first.
//! - [`check_status_files`]: `keelson audit verify --repo` walks every status commit of the
//!   current chain and checks each commit's status files against the ledger.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use gix::bstr::ByteSlice;
use serde::Serialize;

use super::{STATUS_DIR, StatusBranch, parse_audit_trailers, starts_chain, status_file, tip};
use crate::ledger::{Ledger, LedgerEntry};

/// What the recorder is doing, as readiness and `/api/v1/status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum RecordState {
    /// Writing the status branch as transitions are recorded.
    #[default]
    Recording,
    /// Status commits fail (the repository is unwritable or gone); retried with backoff.
    Failing {
        /// The last commit's error.
        message: String,
        /// Since when commits fail (RFC 3339).
        since: String,
    },
    /// The tip does not match the ledger; nothing is written until it does.
    Stopped {
        /// Why.
        message: String,
    },
}

/// State shared by every clone of a [`StatusBranch`].
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) state: RecordState,
    /// The tip this process wrote or verified last (`Some(None)`: verified that there is none).
    trusted: Option<Option<String>>,
    /// The last tip found not to match, with why: it cannot start matching (the ledger only
    /// grows), so it is not inspected again on every wake-up.
    rejected: Option<(Option<String>, String)>,
    /// The push of a remote source's status branch (None for a local source).
    pub(super) push: Option<super::PushStatus>,
    /// Set while the remote status branch was moved by someone else: nothing is committed.
    pub(super) push_stopped: Option<String>,
}

/// The recorder refuses to build on the tip; the reason is in [`StatusBranch::record_state`].
#[derive(Debug, thiserror::Error)]
#[error("status writes are stopped: {reason}")]
pub struct WritesStopped {
    /// Why.
    pub reason: String,
}

/// The verdict on the branch's tip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TipCheck {
    /// The tip (None: there is no branch yet) agrees with the ledger.
    Verified {
        /// The tip's commit id.
        tip: Option<String>,
    },
    /// The branch anchors a chain the ledger does not hold: the ledger was deleted, replaced,
    /// truncated or restored from an older copy.
    OlderChain {
        /// What disagrees.
        reason: String,
    },
    /// The tip was not written from this ledger: a trailer or a status file disagrees with it.
    Foreign {
        /// The tip's commit id.
        tip: String,
        /// What disagrees.
        reason: String,
    },
}

/// How a commit holds the status folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StatusDir {
    Absent,
    Tree(gix::ObjectId),
    /// `status` is a file or a link, not a folder.
    NotATree,
}

/// One status commit of the current chain.
#[derive(Debug)]
pub(super) struct SegmentCommit {
    pub(super) id: gix::ObjectId,
    /// `(seq, hash)` of its `Keelson-Audit` trailers.
    pub(super) anchors: Vec<(i64, String)>,
    status: StatusDir,
}

impl StatusBranch {
    /// What the recorder is doing.
    pub fn record_state(&self) -> RecordState {
        self.shared().state.clone()
    }

    pub(super) fn set_record_state(&self, state: RecordState) {
        self.shared().state = state;
    }

    pub(super) fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `tip` as written by this process.
    pub(super) fn trust(&self, tip: String) {
        self.shared().trusted = Some(Some(tip));
    }

    pub(super) fn tip_id(&self) -> Result<Option<gix::ObjectId>> {
        tip(&self.repo.local(), &self.reference)
    }

    /// The commits of the current audit chain (back to the commit that started it, or the root),
    /// oldest first, following first parents.
    pub(super) fn segment(&self) -> Result<Vec<SegmentCommit>> {
        let repo = self.repo.local();
        let Some(mut next) = tip(&repo, &self.reference)? else { return Ok(Vec::new()) };
        let mut commits = Vec::new();
        loop {
            let commit = repo.find_commit(next).with_context(|| format!("status commit {next}"))?;
            let message = commit.message_raw_sloppy().to_str_lossy().into_owned();
            let tree =
                repo.find_tree(commit.tree_id()?.detach()).with_context(|| format!("tree of status commit {next}"))?;
            let status = match tree.decode()?.entries.iter().find(|e| e.filename == STATUS_DIR.as_bytes()) {
                None => StatusDir::Absent,
                Some(e) if e.mode.is_tree() => StatusDir::Tree(e.oid.to_owned()),
                Some(_) => StatusDir::NotATree,
            };
            commits.push(SegmentCommit { id: next, anchors: parse_audit_trailers(&message), status });
            if starts_chain(&message) {
                break;
            }
            match commit.parent_ids().next() {
                Some(parent) => next = parent.detach(),
                None => break,
            }
        }
        commits.reverse();
        Ok(commits)
    }

    /// `<app>.yaml` → blob id of a status folder, or what is wrong with it.
    fn status_files(&self, dir: StatusDir) -> Result<Result<BTreeMap<String, gix::ObjectId>, String>> {
        let id = match dir {
            StatusDir::Absent => return Ok(Ok(BTreeMap::new())),
            StatusDir::NotATree => return Ok(Err(format!("{STATUS_DIR} is not a folder"))),
            StatusDir::Tree(id) => id,
        };
        let repo = self.repo.local();
        let tree = repo.find_tree(id).with_context(|| format!("status tree {id}"))?;
        let mut files = BTreeMap::new();
        for entry in tree.decode()?.entries {
            let name = entry.filename.to_str_lossy().into_owned();
            if entry.mode.kind() != gix::objs::tree::EntryKind::Blob {
                return Ok(Err(format!("{STATUS_DIR}/{name} is not a plain file (mode {:o})", entry.mode.value())));
            }
            files.insert(name, entry.oid.to_owned());
        }
        Ok(Ok(files))
    }

    /// Verifies the tip unless this process wrote it; refuses with [`WritesStopped`] when it
    /// does not match the ledger (and records why in [`StatusBranch::record_state`]).
    pub(super) async fn check_tip(&self, ledger: &Ledger) -> Result<()> {
        if let Some(reason) = self.shared().push_stopped.clone() {
            return Err(WritesStopped { reason }.into());
        }
        let b = self.clone();
        let tip = tokio::task::spawn_blocking(move || b.tip_id()).await??.map(|t| t.to_string());
        {
            let shared = self.shared();
            if shared.trusted.as_ref() == Some(&tip) {
                return Ok(());
            }
            if let Some((rejected, reason)) = &shared.rejected
                && *rejected == tip
            {
                return Err(WritesStopped { reason: reason.clone() }.into());
            }
        }
        let reason = match inspect_tip(self, ledger).await? {
            TipCheck::Verified { tip } => {
                let was_stopped = matches!(self.record_state(), RecordState::Stopped { .. });
                let mut shared = self.shared();
                shared.trusted = Some(tip.clone());
                if was_stopped {
                    shared.state = RecordState::Recording;
                    tracing::info!(
                        branch = self.name(),
                        tip,
                        "the status branch tip matches the ledger again; status writes resume"
                    );
                }
                return Ok(());
            }
            TipCheck::OlderChain { reason } => reason,
            TipCheck::Foreign { tip, reason } => format!(
                "the tip {} of {} was not written by this daemon and does not match its ledger: {reason}",
                crate::engine::short(&tip),
                self.name()
            ),
        };
        let message = format!(
            "{reason}; status writes are stopped (the ledger keeps every transition in the outbox) until the branch \
             is reset to a commit that matches the ledger, e.g. `git update-ref refs/heads/{} <last good commit>`",
            self.name()
        );
        tracing::error!(branch = self.name(), "{message}");
        let mut shared = self.shared();
        shared.state = RecordState::Stopped { message: message.clone() };
        shared.rejected = Some((tip, message.clone()));
        Err(WritesStopped { reason: message }.into())
    }
}

/// The hash of entry `seq` in the ledger, None if there is none.
pub(super) async fn hash_at(ledger: &Ledger, seq: i64) -> Result<Option<String>> {
    let found = ledger.entries_after(seq - 1, 1).await?;
    Ok(found.into_iter().find(|e| e.seq == seq).map(|e| e.hash))
}

/// The blob id `status/<app>.yaml` has when it shows `entry`.
pub(crate) fn status_blob_id(entry: &LedgerEntry) -> Result<gix::ObjectId> {
    Ok(gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, status_file(entry).as_bytes())?)
}

/// The first difference between the status files a commit has and those the ledger expects.
fn first_difference(
    actual: &BTreeMap<String, gix::ObjectId>,
    expected: &BTreeMap<String, (gix::ObjectId, i64)>,
) -> Option<String> {
    for (file, (blob, seq)) in expected {
        match actual.get(file) {
            None => return Some(format!("{STATUS_DIR}/{file} is missing, but the ledger records entry {seq} for it")),
            Some(id) if id != blob => {
                return Some(format!(
                    "{STATUS_DIR}/{file} does not say what the ledger records (entry {seq}); it was edited by hand"
                ));
            }
            Some(_) => {}
        }
    }
    actual
        .keys()
        .find(|f| !expected.contains_key(*f))
        .map(|f| format!("{STATUS_DIR}/{f} is not an app the ledger records (added by hand)"))
}

/// The status files the ledger expects at `upto`: file name → (blob id, seq of the entry shown).
fn expected_files(latest: &[LedgerEntry]) -> Result<BTreeMap<String, (gix::ObjectId, i64)>> {
    latest
        .iter()
        .filter(|e| e.to_state != "Deleted")
        .map(|e| Ok((format!("{}.yaml", e.app), (status_blob_id(e)?, e.seq))))
        .collect()
}

/// Measures the branch's tip against the ledger (see the module documentation).
pub async fn inspect_tip(branch: &StatusBranch, ledger: &Ledger) -> Result<TipCheck> {
    let b = branch.clone();
    let segment = tokio::task::spawn_blocking(move || b.segment()).await??;
    let Some(tip) = segment.last() else { return Ok(TipCheck::Verified { tip: None }) };
    let tip_hex = tip.id.to_string();
    let name = branch.name();
    let anchors: Vec<(&(i64, String), gix::ObjectId)> =
        segment.iter().flat_map(|c| c.anchors.iter().map(move |a| (a, c.id))).collect();
    let head = ledger.head().await?.map_or(0, |(seq, _)| seq);
    let mut upto = 0;
    if let Some(((first, hash), commit)) = anchors.iter().min_by_key(|((seq, _), _)| *seq) {
        let found = hash_at(ledger, *first).await?;
        if found.as_deref() != Some(hash.as_str()) {
            let has = match &found {
                None => format!("has no entry {first} (it ends at seq {head})"),
                Some(h) => format!("has hash {} there", crate::engine::short(h)),
            };
            return Ok(TipCheck::OlderChain {
                reason: format!(
                    "{name} anchors ledger entry {first} with hash {} (commit {}), but the ledger {has}: it is not \
                     the ledger this branch recorded (deleted, replaced, or restored from another chain)",
                    crate::engine::short(hash),
                    crate::engine::short(&commit.to_string()),
                ),
            });
        }
        upto = anchors.iter().map(|((seq, _), _)| *seq).max().unwrap_or(0);
        if upto > head {
            return Ok(TipCheck::OlderChain {
                reason: format!(
                    "{name} anchors ledger entries up to seq {upto}, but the ledger ends at seq {head}: entries were \
                     lost (the ledger was truncated or restored from an older copy)"
                ),
            });
        }
    }
    if let Some(newest) = segment.iter().rev().find(|c| !c.anchors.is_empty()) {
        for (seq, hash) in &newest.anchors {
            let found = hash_at(ledger, *seq).await?;
            if found.as_deref() != Some(hash.as_str()) {
                return Ok(TipCheck::Foreign {
                    tip: tip_hex,
                    reason: format!(
                        "commit {} anchors entry {seq} with hash {}, but the ledger has {}",
                        crate::engine::short(&newest.id.to_string()),
                        crate::engine::short(hash),
                        found.as_deref().map_or("no such entry", crate::engine::short)
                    ),
                });
            }
        }
    }
    let expected = expected_files(&ledger.latest_per_app(upto).await?)?;
    let (b, dir) = (branch.clone(), tip.status);
    let actual = tokio::task::spawn_blocking(move || b.status_files(dir)).await??;
    let problem = match actual {
        Ok(actual) => first_difference(&actual, &expected),
        Err(problem) => Some(problem),
    };
    Ok(match problem {
        Some(reason) => TipCheck::Foreign { tip: tip_hex, reason },
        None => TipCheck::Verified { tip: Some(tip_hex) },
    })
}

/// The first status file found to disagree with the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BadStatusFile {
    /// The status commit.
    pub commit: String,
    /// What disagrees.
    pub reason: String,
}

/// The outcome of checking every status commit's files against the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusFilesReport {
    /// True when every status commit shows what the ledger records.
    pub ok: bool,
    /// Status commits of the current chain looked at.
    pub commits: u64,
    /// Status files compared.
    pub files: u64,
    /// The first disagreement.
    pub first_bad: Option<BadStatusFile>,
}

impl std::fmt::Display for StatusFilesReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.first_bad {
            None => write!(
                f,
                "OK status files of {} status commits match the ledger ({} files compared)",
                self.commits, self.files
            ),
            Some(bad) => write!(f, "BAD status commit {}: {}", crate::engine::short(&bad.commit), bad.reason),
        }
    }
}

/// Checks the status files of every commit of the current chain against the ledger: each commit
/// must show, for every app, the newest entry up to its last trailer (and nothing else); a commit
/// without trailers must not change them.
pub async fn check_status_files(branch: &StatusBranch, ledger: &Ledger) -> Result<StatusFilesReport> {
    let b = branch.clone();
    let segment = tokio::task::spawn_blocking(move || b.segment()).await??;
    let mut expected: BTreeMap<String, (gix::ObjectId, i64)> = BTreeMap::new();
    let mut report = StatusFilesReport { ok: true, commits: 0, files: 0, first_bad: None };
    let (mut recorded, mut previous) = (0i64, StatusDir::Absent);
    for commit in &segment {
        report.commits += 1;
        let upto = commit.anchors.iter().map(|(seq, _)| *seq).max().unwrap_or(recorded).max(recorded);
        while recorded < upto {
            let page = ledger.entries_after(recorded, (upto - recorded).min(10_000)).await?;
            let Some(last) = page.last() else { break };
            recorded = last.seq;
            for e in &page {
                let file = format!("{}.yaml", e.app);
                if e.to_state == "Deleted" {
                    expected.remove(&file);
                } else {
                    expected.insert(file, (status_blob_id(e)?, e.seq));
                }
            }
        }
        if commit.anchors.is_empty() && commit.status == previous {
            continue;
        }
        previous = commit.status;
        let (b, dir) = (branch.clone(), commit.status);
        let actual = tokio::task::spawn_blocking(move || b.status_files(dir)).await??;
        let problem = match actual {
            Ok(actual) => {
                report.files += actual.len() as u64;
                first_difference(&actual, &expected)
            }
            Err(problem) => Some(problem),
        };
        if let Some(reason) = problem {
            report.ok = false;
            report.first_bad = Some(BadStatusFile { commit: commit.id.to_string(), reason });
            break;
        }
    }
    Ok(report)
}
