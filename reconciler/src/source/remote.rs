//! A remote state repository, fetched into a cache repository under the data directory.
//!
//! The engine never sees the transport: it reads snapshots of `refs/heads/<branch>` of the cache
//! like those of a local repository, and is woken when that ref moves. This module moves it:
//! at start-up, on every (jittered) poll, and at once when a webhook asks. A poll of an unchanged
//! remote is one ref lookup (`ls-remote` of the tracked ref); only a new head is fetched, into a
//! scratch ref, and checked for a history rewrite before the tracked ref moves. A failure leaves
//! the tracked ref where it was, so the last good snapshot stays in force, and is retried with
//! capped exponential backoff.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, mpsc, watch};

use super::transport::{Cause, GitTransport, RemoteError, local_git};
use crate::engine::state::Fleet;

/// Where a fetched head waits while it is checked.
const INCOMING_REF: &str = "refs/keelson/incoming";
/// First wait after a failed fetch.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between two failed fetches.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// History rewrites kept for `/api/v1/status`.
const REWRITES_SHOWN: usize = 10;

/// The remote as `/api/v1/status` shows it (under `source.remote`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteStatus {
    /// The URL, without a password.
    pub url: String,
    /// When the remote was last asked for the tracked ref successfully (RFC 3339).
    pub last_fetch: Option<String>,
    /// The remote head as last fetched.
    pub fetched_commit: Option<String>,
    /// Whether a rewritten history is followed (`allowForcePush`).
    pub allow_force_push: bool,
    /// Why the last fetch failed, while that lasts.
    pub error: Option<FetchError>,
    /// The newest history rewrites (non-fast-forward moves of the tracked branch), newest last.
    pub history_rewrites: Vec<HistoryRewrite>,
}

/// A failing fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchError {
    /// One cause per thing to fix.
    pub cause: Cause,
    /// What failed and what to do.
    pub message: String,
    /// First failure of this run of failures (RFC 3339).
    pub since: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Wait before the next attempt (a webhook delivery fetches at once).
    pub retry_in_ms: u64,
}

/// A non-fast-forward move of the tracked branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryRewrite {
    pub from: String,
    pub to: String,
    pub at: String,
    /// True when it was followed; false when `allowForcePush: false` refused it.
    pub followed: bool,
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    /// The remote head is the cached one (one ref lookup).
    Unchanged,
    /// The tracked ref moved; `rewrite` when the move was not a fast-forward.
    Moved { from: Option<String>, to: String, rewrite: bool },
}

/// The remote source.
#[derive(Debug)]
pub struct RemoteSource {
    transport: Arc<dyn GitTransport>,
    git_dir: PathBuf,
    branch: String,
    allow_force_push: bool,
    poll: Duration,
    fleet: Arc<RwLock<Fleet>>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Wakes the engine (the same channel as the ref watch).
    engine: mpsc::Sender<()>,
    /// Webhook deliveries ask for a fetch through this.
    fetch_now: Arc<Notify>,
    /// A rewritten head refused once is not fetched again.
    refused: Option<String>,
    failures: u32,
    since: Option<String>,
}

/// Settings of a [`RemoteSource`].
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    pub branch: String,
    pub allow_force_push: bool,
    pub poll: Duration,
}

/// Makes (or checks) the cache repository `<data dir>/source.git` for `url`: a bare repository
/// that remembers the URL it caches, so a data directory is never reused for another remote.
pub async fn prepare_cache(data_dir: &Path, url: &str) -> anyhow::Result<PathBuf> {
    let git_dir = data_dir.join("source.git");
    if !git_dir.join("HEAD").exists() {
        let out = local_git(&git_dir, &["init", "--bare", "--quiet"]).await.map_err(anyhow::Error::msg)?;
        if !out.status.success() {
            anyhow::bail!(
                "cannot make the source cache {}: {}",
                git_dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let shown = super::transport::display_url(url);
    let out = local_git(&git_dir, &["config", "--get", "keelson.url"]).await.map_err(anyhow::Error::msg)?;
    let cached = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if cached.is_empty() {
        let out = local_git(&git_dir, &["config", "keelson.url", &shown]).await.map_err(anyhow::Error::msg)?;
        if !out.status.success() {
            anyhow::bail!("cannot write {}/config: {}", git_dir.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
    } else if cached != shown {
        anyhow::bail!(
            "the data directory {} caches {cached}, not {shown}; use another --data-dir for this repository",
            data_dir.display()
        );
    }
    Ok(git_dir)
}

impl RemoteSource {
    pub fn new(
        transport: Arc<dyn GitTransport>,
        git_dir: &Path,
        settings: RemoteSettings,
        fleet: Arc<RwLock<Fleet>>,
        metrics: Arc<crate::metrics::Metrics>,
        engine: mpsc::Sender<()>,
        fetch_now: Arc<Notify>,
    ) -> Self {
        {
            let mut f = fleet.write().unwrap_or_else(|e| e.into_inner());
            f.source.remote = Some(RemoteStatus {
                url: transport.display_url(),
                allow_force_push: settings.allow_force_push,
                ..RemoteStatus::default()
            });
        }
        Self {
            transport,
            git_dir: git_dir.to_path_buf(),
            branch: settings.branch,
            allow_force_push: settings.allow_force_push,
            poll: settings.poll,
            fleet,
            metrics,
            engine,
            fetch_now,
            refused: None,
            failures: 0,
            since: None,
        }
    }

    fn tracked_ref(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }

    /// The commit a local ref of the cache points at.
    async fn local_ref(&self, reference: &str) -> Result<Option<String>, RemoteError> {
        let out = local_git(&self.git_dir, &["rev-parse", "--verify", "--quiet", &format!("{reference}^{{commit}}")])
            .await
            .map_err(|e| RemoteError::new(Cause::Other, e))?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok((out.status.success() && !id.is_empty()).then_some(id))
    }

    /// One look at the remote: moves the tracked ref of the cache if the remote head moved.
    pub async fn sync(&mut self) -> Result<Synced, RemoteError> {
        let tracked = self.tracked_ref();
        let url = self.transport.display_url();
        let Some(remote) = self.transport.remote_ref(&tracked).await? else {
            let (cause, what) = if self.transport.has_branches().await? {
                (Cause::BranchMissing, format!("{url} has no branch `{}` (deleted or renamed?)", self.branch))
            } else {
                (Cause::EmptyRepository, format!("{url} is an empty repository (nothing pushed yet)"))
            };
            return Err(RemoteError::new(cause, format!("{what}; the last fetched commit stays in force")));
        };
        let cached = self.local_ref(&tracked).await?;
        if cached.as_deref() == Some(remote.as_str()) {
            return Ok(Synced::Unchanged);
        }
        if self.refused.as_deref() == Some(remote.as_str()) {
            return Err(self.refusal(cached.as_deref().unwrap_or_default(), &remote));
        }
        self.transport.fetch(&tracked, INCOMING_REF).await?;
        let Some(fetched) = self.local_ref(INCOMING_REF).await? else {
            return Err(RemoteError::new(
                Cause::Corrupt,
                format!("the fetch from {url} left no commit at {INCOMING_REF}"),
            ));
        };
        let mut rewrite = false;
        if let Some(old) = &cached {
            let out = local_git(&self.git_dir, &["merge-base", "--is-ancestor", old, &fetched])
                .await
                .map_err(|e| RemoteError::new(Cause::Other, e))?;
            match out.status.code() {
                Some(0) => {}
                Some(1) => rewrite = true,
                _ => {
                    return Err(RemoteError::new(
                        Cause::Corrupt,
                        format!(
                            "cannot compare {} with {} in the cache: {}",
                            crate::engine::short(old),
                            crate::engine::short(&fetched),
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                    ));
                }
            }
        }
        if rewrite {
            let old = cached.clone().unwrap_or_default();
            self.note_rewrite(&old, &fetched, self.allow_force_push);
            if !self.allow_force_push {
                self.refused = Some(fetched.clone());
                return Err(self.refusal(&old, &fetched));
            }
            tracing::warn!(
                branch = self.branch,
                from = old,
                to = fetched,
                "the tracked branch was rewritten (not a fast-forward); following it (allowForcePush)"
            );
        }
        let mut args = vec!["update-ref", "-m", "keelson: fetched", tracked.as_str(), fetched.as_str()];
        if let Some(old) = &cached {
            args.push(old);
        }
        let out = local_git(&self.git_dir, &args).await.map_err(|e| RemoteError::new(Cause::Other, e))?;
        if !out.status.success() {
            return Err(RemoteError::new(
                Cause::Other,
                format!("cannot move {tracked} in the cache: {}", String::from_utf8_lossy(&out.stderr).trim()),
            ));
        }
        self.refused = None;
        Ok(Synced::Moved { from: cached, to: fetched, rewrite })
    }

    fn refusal(&self, from: &str, to: &str) -> RemoteError {
        RemoteError::new(
            Cause::HistoryRewriteRefused,
            format!(
                "branch `{}` of {} was rewritten: {} is not a descendant of the applied {} (a force-push); \
                 allowForcePush is false, so it is not applied; push a commit on top of {} (e.g. `git revert`), \
                 or set allowForcePush: true",
                self.branch,
                self.transport.display_url(),
                crate::engine::short(to),
                crate::engine::short(from),
                crate::engine::short(from),
            ),
        )
    }

    fn note_rewrite(&self, from: &str, to: &str, followed: bool) {
        let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
        if let Some(remote) = fleet.source.remote.as_mut() {
            remote.history_rewrites.push(HistoryRewrite {
                from: from.to_owned(),
                to: to.to_owned(),
                at: crate::engine::now_rfc3339(),
                followed,
            });
            let excess = remote.history_rewrites.len().saturating_sub(REWRITES_SHOWN);
            remote.history_rewrites.drain(..excess);
        }
    }

    /// [`RemoteSource::sync`], with the outcome logged, shown in the fleet and handed to the
    /// engine; returns the wait before the next look.
    pub async fn sync_and_report(&mut self) -> Duration {
        let outcome = self.sync().await;
        let label = match &outcome {
            Ok(Synced::Unchanged) => "unchanged",
            Ok(Synced::Moved { .. }) => "moved",
            Err(e) => e.cause.label(),
        };
        crate::metrics::Metrics::outcome(&self.metrics.source_fetches, label);
        if outcome.is_err() {
            self.metrics.source_fetch_failed(label);
        }
        let now = crate::engine::now_rfc3339();
        match outcome {
            Ok(synced) => {
                if self.failures > 0 {
                    tracing::info!(url = self.transport.display_url(), "the remote can be fetched again");
                }
                self.failures = 0;
                self.since = None;
                let fetched = match &synced {
                    Synced::Moved { from, to, rewrite } => {
                        tracing::info!(
                            branch = self.branch,
                            from = from.as_deref().unwrap_or("(none)"),
                            to,
                            rewrite,
                            "fetched a new head of the tracked branch"
                        );
                        let _ = self.engine.try_send(());
                        Some(to.clone())
                    }
                    Synced::Unchanged => None,
                };
                let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
                if let Some(remote) = fleet.source.remote.as_mut() {
                    remote.last_fetch = Some(now);
                    remote.error = None;
                    if fetched.is_some() {
                        remote.fetched_commit = fetched;
                    }
                }
                jittered(self.poll)
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                let since = self.since.get_or_insert(now).clone();
                let wait = FIRST_RETRY.saturating_mul(1 << (self.failures - 1).min(16)).min(MAX_RETRY).min(self.poll);
                tracing::error!(
                    cause = e.cause.label(),
                    attempts = self.failures,
                    retry_in_ms = wait.as_millis() as u64,
                    error = e.message,
                    "fetching the source failed; the last good commit stays in force"
                );
                let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
                if let Some(remote) = fleet.source.remote.as_mut() {
                    remote.error = Some(FetchError {
                        cause: e.cause,
                        message: e.message,
                        since,
                        attempts: self.failures,
                        retry_in_ms: wait.as_millis() as u64,
                    });
                }
                wait
            }
        }
    }

    /// Polls until shutdown; a webhook delivery (through `fetch_now`) fetches at once.
    pub async fn run(mut self, first_wait: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut wait = first_wait;
        while !*shutdown.borrow() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.fetch_now.notified() => {}
                _ = shutdown.changed() => break,
            }
            wait = self.sync_and_report().await;
        }
    }
}

/// `d` ± 10 %, so many daemons polling one remote do not arrive together.
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let spread = d / 5;
    let offset = spread.mul_f64(f64::from(nanos % 1000) / 1000.0);
    d - d / 10 + offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_are_jittered_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(60));
            assert!(d >= Duration::from_secs(54) && d <= Duration::from_secs(66), "{d:?}");
        }
    }
}
