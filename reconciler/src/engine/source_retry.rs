//! Source errors: a ref that cannot be read or a commit that cannot be loaded (a corrupt object)
//! is logged, shown in `/api/v1/status` and `/readyz`, and tried again with capped exponential
//! backoff; a new commit on the tracked branch is tried at once.

use std::time::Duration;

use tokio::time::Instant;

use super::Engine;
use super::state::SourceError;

/// First wait after a failure.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Backoff of the source.
#[derive(Debug, Default)]
pub(super) struct SourceRetry {
    attempts: u32,
    since: Option<String>,
    at: Option<Instant>,
    /// The head that failed (None when the ref itself could not be read).
    commit: Option<String>,
}

impl SourceRetry {
    /// Counts a failure; returns the wait before the next attempt.
    fn failed(&mut self) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        self.since.get_or_insert_with(super::now_rfc3339);
        let delay = FIRST_RETRY.saturating_mul(1 << (self.attempts - 1).min(16)).min(MAX_RETRY);
        self.at = Some(Instant::now() + delay);
        delay
    }

    /// Forgets the failures; true if there were any.
    fn succeeded(&mut self) -> bool {
        let was = self.attempts > 0;
        *self = SourceRetry::default();
        was
    }

    /// When the next attempt is due, if one is.
    pub(super) fn next_attempt(&self) -> Option<Instant> {
        self.at
    }
}

/// Completes at `at`, never for `None` (a `select!` branch that is off).
pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Engine {
    /// Reads the tracked branch and loads its commit if it moved, keeping the outcome visible.
    pub(super) async fn sync_source(&mut self) {
        let head = {
            let (repo, branch) = (self.ctx.repo.clone(), self.ctx.settings.branch.clone());
            tokio::task::spawn_blocking(move || repo.branch_head(&branch).ok().flatten()).await.ok().flatten()
        };
        // Wake-ups before the backoff is over (the poll, a touch of the ref) retry only a new head.
        if self.source_retry.at.is_some_and(|at| Instant::now() < at) && head == self.source_retry.commit {
            return;
        }
        match self.on_ref_moved().await {
            Ok(()) => {
                if self.source_retry.succeeded() {
                    tracing::info!(branch = self.ctx.settings.branch, "the source can be read again");
                }
                self.ctx.fleet.write().unwrap_or_else(|e| e.into_inner()).source.error = None;
            }
            Err(e) => {
                let message = format!("{e:#}");
                let delay = self.source_retry.failed();
                self.source_retry.commit.clone_from(&head);
                let commit = head;
                tracing::error!(
                    branch = self.ctx.settings.branch,
                    commit = commit.as_deref().unwrap_or("(unresolved)"),
                    attempts = self.source_retry.attempts,
                    retry_in_ms = delay.as_millis() as u64,
                    error = message,
                    "reading the source failed; will retry (a new commit is tried at once)"
                );
                let error = SourceError {
                    message,
                    commit,
                    since: self.source_retry.since.clone().unwrap_or_default(),
                    attempts: self.source_retry.attempts,
                    retry_in_ms: delay.as_millis() as u64,
                };
                self.ctx.fleet.write().unwrap_or_else(|e| e.into_inner()).source.error = Some(error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap_and_resets() {
        let mut retry = SourceRetry::default();
        let waits: Vec<u64> = (0..9).map(|_| retry.failed().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert!(retry.next_attempt().is_some());
        assert!(retry.succeeded());
        assert!(retry.next_attempt().is_none());
        assert!(!retry.succeeded());
        assert_eq!(retry.failed().as_secs(), 1);
    }
}
