//! Record: the status branch. Ledger entries not yet on the branch form the outbox; each batch
//! becomes one commit holding `status/<app>.yaml`, written as objects directly (no work tree), with
//! one `Keelson-Audit: <seq> <hash>` trailer per entry and `Keelson-Source: <commit>` trailers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use gix::bstr::ByteSlice;
use tokio::sync::{Notify, watch};

use crate::crash::{crash_point, point};
use crate::ledger::{Anchor, Ledger, LedgerEntry};
use crate::metrics::Metrics;
use crate::source::{GitRepo, trailer_values};

mod integrity;
mod push;
pub use integrity::{
    BadStatusFile, RecordState, StatusFilesReport, TipCheck, WritesStopped, check_status_files, inspect_tip,
};
pub use push::{PushStatus, Pusher};

/// The identity status commits are written with.
pub const KEELSON_NAME: &str = "Keelson";
/// The e-mail of that identity.
pub const KEELSON_EMAIL: &str = "keelson@localhost";

/// The trailer of the commit where a new audit chain starts (`--new-audit-chain`): anchors below
/// it belong to an older chain and are not checked against the current ledger.
pub const CHAIN_TRAILER: &str = "Keelson-Audit-Chain";

/// The status branch of a repository.
#[derive(Debug, Clone)]
pub struct StatusBranch {
    repo: GitRepo,
    reference: String,
    shared: Arc<Mutex<integrity::Shared>>,
    /// Name and e-mail status commits are written with.
    author: Arc<(String, String)>,
}

impl StatusBranch {
    /// The branch `branch` (e.g. `keelson/status`) of `repo`.
    pub fn new(repo: GitRepo, branch: &str) -> Self {
        Self { repo, reference: format!("refs/heads/{branch}"), shared: Arc::default(), author: default_author() }
    }

    /// The same branch, its commits written as `name <email>` (`status.author` in config).
    pub fn with_author(mut self, name: &str, email: &str) -> Self {
        self.author = Arc::new((name.to_owned(), email.to_owned()));
        self
    }

    /// A status branch at a full reference name (the fetched copy of a remote status branch).
    pub(crate) fn at_reference(repo: GitRepo, reference: &str) -> Self {
        Self { repo, reference: reference.to_owned(), shared: Arc::default(), author: default_author() }
    }

    /// The branch's short name (`keelson/status`).
    pub fn name(&self) -> &str {
        self.reference.strip_prefix("refs/heads/").unwrap_or(&self.reference)
    }

    /// Highest ledger seq recorded on the branch of the current audit chain (from the newest
    /// commit with trailers), `None` if the branch is new; 0 just after a new chain started.
    pub fn last_recorded_seq(&self) -> Result<Option<i64>> {
        let repo = self.repo.local();
        let Some(mut next) = tip(&repo, &self.reference)? else { return Ok(None) };
        loop {
            let commit = repo.find_commit(next).with_context(|| format!("status commit {next}"))?;
            let message = commit.message_raw_sloppy().to_str_lossy().into_owned();
            if let Some(seq) = parse_audit_trailers(&message).iter().map(|(seq, _)| *seq).max() {
                return Ok(Some(seq));
            }
            if starts_chain(&message) {
                return Ok(Some(0));
            }
            match commit.parent_ids().next() {
                Some(parent) => next = parent.detach(),
                None => return Ok(None),
            }
        }
    }

    /// Every `Keelson-Audit` trailer of the current audit chain on the branch, oldest first.
    pub fn anchors(&self) -> Result<Vec<Anchor>> {
        Ok(self
            .segment()?
            .into_iter()
            .flat_map(|c| {
                let commit = c.id.to_string();
                c.anchors.into_iter().map(move |(seq, hash)| Anchor { seq, hash, commit: commit.clone() })
            })
            .collect())
    }

    /// Starts a new audit chain on the branch: one commit with no status files, whose message
    /// says why; the anchors below it are the old chain's. Returns the commit id.
    pub fn start_new_chain(&self, why: &str) -> Result<String> {
        let repo = self.repo.local();
        let parent = tip(&repo, &self.reference)?;
        let mut root = match parent {
            Some(p) => read_tree(&repo, Some(repo.find_commit(p)?.tree_id()?.detach()))?,
            None => gix::objs::Tree::empty(),
        };
        set_entry(&mut root, STATUS_DIR.as_bytes(), gix::objs::tree::EntryKind::Tree, None);
        let tree = repo.write_object(&root)?.detach();
        let message = format!(
            "keelson: a new audit chain starts here\n\n{why}\n\nThe status files are written again from the new \
             ledger; the Keelson-Audit trailers below this commit belong to the previous chain.\n\n\
             {CHAIN_TRAILER}: new\n"
        );
        let id = self.write_commit(&repo, message, tree, parent)?;
        self.trust(id.clone());
        Ok(id)
    }

    fn write_commit(
        &self,
        repo: &gix::Repository,
        message: String,
        tree: gix::ObjectId,
        parent: Option<gix::ObjectId>,
    ) -> Result<String> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let signature = gix::actor::Signature {
            name: self.author.0.as_str().into(),
            email: self.author.1.as_str().into(),
            time: gix::date::Time::new(now.as_secs() as i64, 0),
        };
        let (mut b1, mut b2) = (gix::date::parse::TimeBuf::default(), gix::date::parse::TimeBuf::default());
        let id = repo
            .commit_as(
                signature.to_ref(&mut b1),
                signature.to_ref(&mut b2),
                self.reference.as_str(),
                message,
                tree,
                parent,
            )
            .with_context(|| format!("committing to {}", self.reference))?;
        Ok(id.to_string())
    }

    /// Writes one commit for `entries` (ascending seq) and moves the branch to it.
    pub fn commit_batch(&self, entries: &[LedgerEntry]) -> Result<String> {
        let repo = self.repo.local();
        let parent = tip(&repo, &self.reference)?;
        let base_tree = match parent {
            Some(p) => Some(repo.find_commit(p)?.tree_id()?.detach()),
            None => None,
        };
        let mut latest: BTreeMap<&str, &LedgerEntry> = BTreeMap::new();
        for entry in entries {
            latest.insert(entry.app.as_str(), entry);
        }
        let mut root = read_tree(&repo, base_tree)?;
        let status_dir = root.entries.iter().find(|e| e.filename == STATUS_DIR && e.mode.is_tree()).map(|e| e.oid);
        let mut status = read_tree(&repo, status_dir)?;
        for (app, entry) in &latest {
            let file =
                if entry.to_state == "Deleted" { None } else { Some(repo.write_blob(status_file(entry))?.detach()) };
            set_entry(&mut status, format!("{app}.yaml").as_bytes(), gix::objs::tree::EntryKind::Blob, file);
        }
        let status_id = if status.entries.is_empty() { None } else { Some(repo.write_object(&status)?.detach()) };
        set_entry(&mut root, STATUS_DIR.as_bytes(), gix::objs::tree::EntryKind::Tree, status_id);
        let tree = repo.write_object(&root)?.detach();
        crash_point(point::MID_STATUS_COMMIT);
        let id = self.write_commit(&repo, commit_message(entries), tree, parent)?;
        self.trust(id.clone());
        Ok(id)
    }
}

fn default_author() -> Arc<(String, String)> {
    Arc::new((KEELSON_NAME.to_owned(), KEELSON_EMAIL.to_owned()))
}

/// True for the message of a commit that starts a new audit chain.
fn starts_chain(message: &str) -> bool {
    trailer_values(message, CHAIN_TRAILER).iter().any(|v| v == "new")
}

/// The folder of the status branch holding one file per app.
const STATUS_DIR: &str = "status";

/// The tree `id` decoded (an empty tree for `None`).
fn read_tree(repo: &gix::Repository, id: Option<gix::ObjectId>) -> Result<gix::objs::Tree> {
    let Some(id) = id else { return Ok(gix::objs::Tree::empty()) };
    let tree = repo.find_tree(id).with_context(|| format!("status tree {id}"))?;
    Ok(tree.decode().with_context(|| format!("decoding status tree {id}"))?.into())
}

/// Puts `oid` at `name` in `tree` (keeping git's entry order), or removes `name` for `None`.
///
/// This replaces gix's tree editor, which checks that every entry of the edited tree exists in the
/// object database: with one file per app that is one `stat` per app per commit, which made status
/// commits, and a cold reconcile with them, quadratic in the number of apps.
fn set_entry(tree: &mut gix::objs::Tree, name: &[u8], kind: gix::objs::tree::EntryKind, oid: Option<gix::ObjectId>) {
    let probe = gix::objs::tree::Entry {
        mode: kind.into(),
        filename: name.into(),
        oid: gix::ObjectId::null(gix::hash::Kind::Sha1),
    };
    // git orders a tree `x` as `x/`, so an entry of the other kind under the same name (a file
    // `status` someone committed by hand) sits elsewhere; it must go, or the tree names it twice.
    let other_kind = if kind == gix::objs::tree::EntryKind::Tree {
        gix::objs::tree::EntryKind::Blob
    } else {
        gix::objs::tree::EntryKind::Tree
    };
    let other = gix::objs::tree::Entry { mode: other_kind.into(), ..probe.clone() };
    if let Ok(at) = tree.entries.binary_search(&other) {
        tree.entries.remove(at);
    }
    match (tree.entries.binary_search(&probe), oid) {
        (Ok(at), Some(oid)) => tree.entries[at] = gix::objs::tree::Entry { oid, ..probe },
        (Ok(at), None) => {
            tree.entries.remove(at);
        }
        (Err(at), Some(oid)) => tree.entries.insert(at, gix::objs::tree::Entry { oid, ..probe }),
        (Err(_), None) => {}
    }
}

fn tip(repo: &gix::Repository, reference: &str) -> Result<Option<gix::ObjectId>> {
    let Some(mut r) = repo.try_find_reference(reference)? else { return Ok(None) };
    Ok(Some(r.peel_to_id()?.detach()))
}

/// `(seq, hash)` of every `Keelson-Audit` trailer of a message.
pub fn parse_audit_trailers(message: &str) -> Vec<(i64, String)> {
    trailer_values(message, "Keelson-Audit")
        .into_iter()
        .filter_map(|v| {
            let (seq, hash) = v.split_once(' ')?;
            Some((seq.trim().parse().ok()?, hash.trim().to_owned()))
        })
        .collect()
}

/// The message of a status commit: a summary, one line per transition, then the trailers.
pub fn commit_message(entries: &[LedgerEntry]) -> String {
    let mut msg = String::new();
    match entries {
        [one] => {
            let _ = writeln!(msg, "keelson: {} {} → {} ({})", one.app, one.from_state, one.to_state, one.action);
        }
        _ => {
            let mut apps: Vec<&str> = entries.iter().map(|e| e.app.as_str()).collect();
            apps.sort_unstable();
            apps.dedup();
            let _ = writeln!(msg, "keelson: {} transitions ({})", entries.len(), apps.join(", "));
        }
    }
    msg.push('\n');
    for e in entries {
        let _ = writeln!(msg, "- {} {}: {} → {} ({}) at {}", e.seq, e.app, e.from_state, e.to_state, e.action, e.at);
    }
    msg.push('\n');
    for e in entries {
        let _ = writeln!(msg, "Keelson-Audit: {} {}", e.seq, e.hash);
    }
    let mut sources: Vec<&str> = entries.iter().map(|e| e.desired_commit.as_str()).filter(|c| !c.is_empty()).collect();
    sources.dedup();
    let mut seen = std::collections::BTreeSet::new();
    for s in sources {
        if seen.insert(s) {
            let _ = writeln!(msg, "Keelson-Source: {s}");
        }
    }
    msg
}

/// `status/<app>.yaml`: the app's latest recorded transition.
pub(crate) fn status_file(e: &LedgerEntry) -> String {
    let rollout = e.rollout.map(|r| r.to_string()).unwrap_or_else(|| "null".into());
    format!(
        "# Written by Keelson from its audit ledger; do not edit.\n\
         app: {app}\n\
         phase: {to}\n\
         desiredCommit: \"{commit}\"\n\
         desiredDigest: \"{digest}\"\n\
         rollout: {rollout}\n\
         lastTransition:\n  from: {from}\n  to: {to}\n  action: {action}\n  at: \"{at}\"\n  auditSeq: {seq}\n  auditHash: \"{hash}\"\n",
        app = e.app,
        to = e.to_state,
        from = e.from_state,
        commit = e.desired_commit,
        digest = e.desired_digest,
        action = e.action,
        at = e.at,
        seq = e.seq,
        hash = e.hash,
    )
}

/// Commits every ledger entry not yet on the branch (the outbox), in batches; returns how many.
/// Fails with [`WritesStopped`] rather than build on a tip that does not match the ledger.
pub async fn drain_outbox(branch: &StatusBranch, ledger: &Ledger, metrics: &Metrics) -> Result<usize> {
    let mut written = 0;
    loop {
        branch.check_tip(ledger).await?;
        let b = branch.clone();
        let last = tokio::task::spawn_blocking(move || b.last_recorded_seq()).await??.unwrap_or(0);
        let entries = ledger.entries_after(last, OUTBOX_BATCH).await?;
        let head = ledger.head().await?.map_or(0, |(seq, _)| seq);
        metrics.outbox.set(head - last);
        if entries.is_empty() {
            return Ok(written);
        }
        let n = entries.len();
        let b = branch.clone();
        tokio::task::spawn_blocking(move || b.commit_batch(&entries)).await??;
        metrics.status_commits.inc();
        metrics.outbox.set((head - last - n as i64).max(0));
        written += n;
    }
}

/// Most entries one status commit holds.
const OUTBOX_BATCH: i64 = 500;

/// Shortest time between two drains of the outbox while transitions keep arriving.
const GROUP_WINDOW: Duration = Duration::from_millis(100);

/// Longest wait between two attempts of a failing status commit.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The recorder task: drains the outbox whenever the engine appends, until shutdown (then the
/// daemon calls [`final_drain`] once the engine has stopped appending).
pub async fn run_recorder(
    branch: StatusBranch,
    ledger: Ledger,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut last_drain: Option<Instant> = None;
    while !*shutdown.borrow() {
        // One commit per transition when quiet; under a burst, at most one drain per window, so
        // the transitions that arrive meanwhile are grouped into one commit.
        if let Some(since) = last_drain.map(|t| t.elapsed()).filter(|s| *s < GROUP_WINDOW) {
            tokio::select! {
                _ = tokio::time::sleep(GROUP_WINDOW - since) => {}
                _ = shutdown.changed() => {}
            }
        }
        last_drain = Some(Instant::now());
        let wait = match drain_outbox(&branch, &ledger, &metrics).await {
            Ok(_) => {
                backoff = Duration::from_millis(100);
                if matches!(branch.record_state(), RecordState::Failing { .. }) {
                    tracing::info!(branch = branch.name(), "status commits succeed again");
                }
                branch.set_record_state(RecordState::Recording);
                Duration::from_secs(5)
            }
            // Already logged and shown; the tip is looked at again on every wake-up.
            Err(e) if e.is::<WritesStopped>() => Duration::from_secs(5),
            Err(e) => {
                let message = format!("{e:#}");
                tracing::warn!(
                    error = message,
                    retry_in_ms = backoff.as_millis() as u64,
                    "status branch commit failed; will retry"
                );
                let since = match branch.record_state() {
                    RecordState::Failing { since, .. } => since,
                    _ => crate::engine::now_rfc3339(),
                };
                branch.set_record_state(RecordState::Failing { message, since });
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The drain at shutdown: retried until `deadline`, then given up with a log line saying what
/// stays in the outbox (the next start drains it first).
pub async fn final_drain(branch: &StatusBranch, ledger: &Ledger, metrics: &Metrics, deadline: Duration) {
    let until = tokio::time::Instant::now() + deadline;
    let mut backoff = Duration::from_millis(100);
    let last_error = loop {
        let remaining = until.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(remaining, drain_outbox(branch, ledger, metrics)).await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) if e.is::<WritesStopped>() => break format!("{e:#}"),
            Ok(Err(e)) => {
                let pause = backoff.min(until.saturating_duration_since(tokio::time::Instant::now()));
                if pause.is_zero() {
                    break format!("{e:#}");
                }
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(_) => break format!("the drain did not finish within {deadline:?}"),
        }
    };
    tracing::warn!(
        entries = metrics.outbox.get(),
        deadline_ms = deadline.as_millis() as u64,
        error = last_error,
        "shutting down with ledger entries not yet on the status branch; they stay in the outbox and are \
         committed at the next start"
    );
}

#[cfg(test)]
mod tests;
