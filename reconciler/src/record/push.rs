//! Pushing the status branch of a remote source, at most every `pushInterval`, never forced.
//!
//! The recorder commits to the cache repository as for a local source; this task pushes the
//! branch's tip. A rejected push means the remote branch moved: its new commits are fetched and
//! built on only when every `Keelson-Audit` trailer on them is an entry of this daemon's ledger
//! with the same hash and their status files say what the ledger says (another replica on the
//! same PostgreSQL ledger wrote them). Then the local branch moves to the remote tip and the
//! recorder commits what the remote lacks on top of it. Any other move stops status writes (the
//! outbox keeps every entry) and is reported until the remote branch is put right.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::sync::{Notify, watch};

use super::{StatusBranch, TipCheck, inspect_tip, parse_audit_trailers};
use crate::crash::{crash_point, point};
use crate::ledger::Ledger;
use crate::source::transport::{GitTransport, PushOutcome, local_git};

/// Where the remote's status branch is fetched to be checked.
const REMOTE_STATUS_REF: &str = "refs/keelson/remote-status";
/// How often a remote that stopped status writes is looked at again.
const STOPPED_RECHECK: Duration = Duration::from_secs(30);
/// Longest wait between two failing pushes.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// `git gc --auto` runs after this many pushes, so the cache stays packed.
const PUSHES_PER_GC: u64 = 50;

/// The push as `/api/v1/status` shows it (under `statusPush`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushStatus {
    /// Where the branch is pushed (no password).
    pub remote: String,
    /// Least time between two pushes.
    pub interval_ms: u64,
    /// The commit the remote branch was last seen at after a push of ours.
    pub pushed_commit: Option<String>,
    /// When (RFC 3339).
    pub last_push: Option<String>,
    /// Why pushing fails, while it does.
    pub error: Option<String>,
}

/// The pusher task's settings.
#[derive(Debug, Clone)]
pub struct Pusher {
    pub branch: StatusBranch,
    pub transport: Arc<dyn GitTransport>,
    pub ledger: Ledger,
    pub interval: Duration,
    /// The recorder, woken after the local branch moved to the remote tip.
    pub recorder: Arc<Notify>,
    /// The cache repository's git dir.
    pub git_dir: PathBuf,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl StatusBranch {
    /// The push, if this branch is pushed.
    pub fn push_status(&self) -> Option<PushStatus> {
        self.shared().push.clone()
    }

    fn update_push(&self, f: impl FnOnce(&mut PushStatus)) {
        if let Some(p) = self.shared().push.as_mut() {
            f(p);
        }
    }
}

impl Pusher {
    /// Pushes until shutdown, then once more (the daemon calls [`Pusher::push_once`] after the
    /// final drain).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        self.branch.shared().push = Some(PushStatus {
            remote: self.transport.display_url(),
            interval_ms: self.interval.as_millis() as u64,
            ..PushStatus::default()
        });
        self.gc().await;
        let mut pushed: Option<String> = None;
        let mut backoff = self.interval;
        let mut pushes = 0u64;
        let mut wait = Duration::ZERO;
        while !*shutdown.borrow() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => break,
            }
            wait = self.interval;
            if self.branch.shared().push_stopped.is_some() {
                wait = STOPPED_RECHECK;
            }
            match self.push_once(&mut pushed).await {
                Ok(true) => {
                    backoff = self.interval;
                    pushes += 1;
                    if pushes.is_multiple_of(PUSHES_PER_GC) {
                        self.gc().await;
                    }
                }
                Ok(false) => backoff = self.interval,
                Err(e) => {
                    let message = format!("{e:#}");
                    tracing::warn!(
                        error = message,
                        retry_in_ms = backoff.as_millis() as u64,
                        "pushing the status branch failed"
                    );
                    self.branch.update_push(|p| p.error = Some(message));
                    wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Pushes the local tip if the remote may lack it; true when a push landed.
    pub async fn push_once(&self, pushed: &mut Option<String>) -> Result<bool> {
        if self.branch.shared().push_stopped.is_some() {
            // Looked at again: the remote may have been put right.
            self.catch_up().await?;
            return Ok(false);
        }
        let b = self.branch.clone();
        let Some(local) = tokio::task::spawn_blocking(move || b.tip_id()).await??.map(|t| t.to_string()) else {
            return Ok(false);
        };
        if pushed.as_deref() == Some(local.as_str()) {
            return Ok(false);
        }
        crash_point(point::MID_PUSH);
        let outcome = self.transport.push(&self.branch.reference).await;
        let label = match &outcome {
            Ok(PushOutcome::Pushed) => "pushed",
            Ok(PushOutcome::Rejected) => "rejected",
            Err(_) => "failed",
        };
        crate::metrics::Metrics::outcome(&self.metrics.status_pushes, label);
        match outcome? {
            PushOutcome::Pushed => {
                tracing::debug!(commit = local, remote = self.transport.display_url(), "pushed the status branch");
                self.branch.update_push(|p| {
                    p.pushed_commit = Some(local.clone());
                    p.last_push = Some(crate::engine::now_rfc3339());
                    p.error = None;
                });
                *pushed = Some(local);
                Ok(true)
            }
            PushOutcome::Rejected => {
                tracing::info!(
                    branch = self.branch.name(),
                    "the remote status branch moved; checking its new commits against the ledger"
                );
                if let Some(adopted) = self.catch_up().await? {
                    *pushed = Some(adopted);
                }
                Ok(false)
            }
        }
    }

    /// Fetches the remote branch and builds on it if every new commit verifies; the adopted tip.
    async fn catch_up(&self) -> Result<Option<String>> {
        let reference = self.branch.reference.clone();
        self.transport.fetch(&reference, REMOTE_STATUS_REF).await?;
        let remote = self.rev(REMOTE_STATUS_REF).await?.context("the fetched status branch has no commit")?;
        let local = self.rev(&reference).await?;
        let verdict = self.verify_remote(&remote, local.as_deref()).await?;
        if let Some(reason) = verdict {
            let message = format!(
                "the status branch {} on {} was moved by someone else (tip {}): {reason}; status writes are stopped \
                 (the ledger keeps every transition in the outbox) until that branch is reset to a commit keelson \
                 wrote, e.g. `git push --force {} {}:refs/heads/{}` from the cache {}",
                self.branch.name(),
                self.transport.display_url(),
                crate::engine::short(&remote),
                self.transport.display_url(),
                local.as_deref().map(crate::engine::short).unwrap_or("<last good commit>"),
                self.branch.name(),
                self.git_dir.display(),
            );
            let first = self.branch.shared().push_stopped.is_none();
            if first {
                tracing::error!(branch = self.branch.name(), "{message}");
            }
            let mut shared = self.branch.shared();
            shared.push_stopped = Some(message.clone());
            shared.state = super::RecordState::Stopped { message };
            return Ok(None);
        }
        let was_stopped = self.branch.shared().push_stopped.take().is_some();
        if was_stopped {
            tracing::info!(
                branch = self.branch.name(),
                "the remote status branch matches the ledger again; status writes resume"
            );
        }
        let adopted = |tip: &str| {
            self.branch.update_push(|p| {
                p.pushed_commit = Some(tip.to_owned());
                p.error = None;
            });
        };
        if local.as_deref() == Some(remote.as_str()) {
            adopted(&remote);
            return Ok(Some(remote));
        }
        // Moves only if the recorder has not committed meanwhile (then the next push retries).
        let mut args =
            vec!["update-ref", "-m", "keelson: build on the remote status branch", reference.as_str(), remote.as_str()];
        let old = local.clone().unwrap_or_else(|| "0".repeat(40));
        args.push(&old);
        let out = local_git(&self.git_dir, &args).await.map_err(anyhow::Error::msg)?;
        if !out.status.success() {
            bail!("the status branch moved while adopting the remote tip; retrying at the next push");
        }
        self.branch.trust(remote.clone());
        adopted(&remote);
        tracing::info!(
            branch = self.branch.name(),
            tip = remote,
            "the remote status branch holds commits of another replica of this ledger; building on them"
        );
        self.recorder.notify_one();
        Ok(Some(remote))
    }

    /// `None` when every commit of `remote` that `local` lacks was written from this ledger; else why not.
    async fn verify_remote(&self, remote: &str, local: Option<&str>) -> Result<Option<String>> {
        let mut args = vec!["log", "--format=%H%x00%B%x1e", remote];
        let hidden;
        if let Some(local) = local {
            hidden = format!("^{local}");
            args.push(&hidden);
        }
        let out = local_git(&self.git_dir, &args).await.map_err(anyhow::Error::msg)?;
        if !out.status.success() {
            bail!("cannot list the remote status commits: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for record in text.split('\x1e').map(|r| r.trim_start_matches('\n')).filter(|r| !r.trim().is_empty()) {
            let Some((id, message)) = record.split_once('\0') else { continue };
            let anchors = parse_audit_trailers(message);
            if anchors.is_empty() {
                return Ok(Some(format!(
                    "commit {} has no Keelson-Audit trailer (not written by keelson)",
                    crate::engine::short(id)
                )));
            }
            for (seq, hash) in anchors {
                let found = super::integrity::hash_at(&self.ledger, seq).await?;
                if found.as_deref() != Some(hash.as_str()) {
                    return Ok(Some(format!(
                        "commit {} anchors ledger entry {seq} with hash {}, which this daemon's ledger does not hold",
                        crate::engine::short(id),
                        crate::engine::short(&hash)
                    )));
                }
            }
        }
        let remote_branch = StatusBranch::at_reference(self.branch.repo.clone(), REMOTE_STATUS_REF);
        Ok(match inspect_tip(&remote_branch, &self.ledger).await? {
            TipCheck::Verified { .. } => None,
            TipCheck::OlderChain { reason } | TipCheck::Foreign { reason, .. } => Some(reason),
        })
    }

    async fn rev(&self, reference: &str) -> Result<Option<String>> {
        let out = local_git(&self.git_dir, &["rev-parse", "--verify", "--quiet", &format!("{reference}^{{commit}}")])
            .await
            .map_err(anyhow::Error::msg)?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok((out.status.success() && !id.is_empty()).then_some(id))
    }

    /// Keeps the cache packed: status commits are written as loose objects.
    async fn gc(&self) {
        match local_git(&self.git_dir, &["gc", "--auto", "--quiet"]).await {
            Ok(out) if out.status.success() => {}
            Ok(out) => tracing::warn!(error = %String::from_utf8_lossy(&out.stderr).trim(), "git gc --auto failed"),
            Err(e) => tracing::warn!(error = e, "git gc --auto failed"),
        }
    }
}
