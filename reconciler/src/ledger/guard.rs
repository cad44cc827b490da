//! The write guard: whether the ledger can be written, and whether it is still the ledger this
//! process has been writing.
//!
//! Two things can go wrong under a running daemon. A write can fail (a full disk, an I/O error):
//! the guard keeps the failure until the next append succeeds, so readiness can say so. Or the
//! ledger can be swapped out: the SQLite file deleted or replaced, or a database whose
//! chain no longer holds the entry this process appended last (restored from an old backup,
//! recreated). SQLite keeps writing into an unlinked file without complaint, so the guard watches
//! the files' identity (device and inode) and the chain's continuity; once it has seen a swap it
//! refuses every append until the daemon is restarted, because every intent the engine would
//! record there would be lost, and the engine calls no provider without a recorded intent.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use super::chain::Head;
use super::{Error, Result};

/// Whether the ledger can be written, as readiness and `/api/v1/status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum WriteState {
    /// The last append succeeded (or none was tried yet).
    Writable,
    /// The last append failed; the next one may succeed.
    Failing {
        /// The error of the last append.
        message: String,
        /// When appends started failing (RFC 3339).
        since: String,
    },
    /// The ledger is not the one this process was writing; nothing is appended until a restart.
    Replaced {
        /// What was noticed.
        message: String,
    },
}

impl WriteState {
    /// True unless appends are failing or refused.
    pub fn is_writable(&self) -> bool {
        matches!(self, WriteState::Writable)
    }
}

/// A file whose identity the guard watches.
#[derive(Debug)]
struct WatchedFile {
    path: PathBuf,
    /// `(device, inode)` when the ledger was opened.
    identity: (u64, u64),
}

#[derive(Debug, Default)]
struct GuardState {
    /// `(seq, hash)` of the newest entry this process appended.
    last_written: Option<(i64, String)>,
    /// The last append's error and since when appends fail.
    failing: Option<(String, String)>,
    /// Set once a swapped ledger was noticed; never cleared.
    replaced: Option<String>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct WriteGuard {
    files: Vec<WatchedFile>,
    state: Mutex<GuardState>,
}

/// What the head read under the append lock says about the entry this process wrote last.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Continuity {
    /// The chain goes on from it (or this process has not written yet).
    Continues,
    /// Other writers appended since; the entry at this seq must still have our hash.
    Lookup(i64, String),
    /// The chain does not hold it.
    Broken(String),
}

impl WriteGuard {
    /// A guard watching these files (a SQLite database); missing files are skipped.
    pub(super) fn watching(paths: &[PathBuf]) -> WriteGuard {
        let files = paths
            .iter()
            .filter_map(|path| identity(path).map(|identity| WatchedFile { path: path.clone(), identity }))
            .collect();
        WriteGuard { files, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GuardState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The head this process last appended, to check the chain against under the append lock.
    pub(super) fn last_written(&self) -> Option<(i64, String)> {
        self.state().last_written.clone()
    }

    /// Refuses an append when the ledger was swapped (before or just now).
    pub(super) fn before_append(&self) -> Result<()> {
        self.check_files();
        match &self.state().replaced {
            Some(reason) => Err(Error::LedgerReplaced { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    /// Records how an append went.
    pub(super) fn after_append<T>(&self, result: &Result<Vec<T>>, last: impl FnOnce(&T) -> (i64, String)) {
        let mut state = self.state();
        match result {
            Ok(entries) => {
                if let Some(entry) = entries.last() {
                    state.last_written = Some(last(entry));
                }
                if state.failing.take().is_some() {
                    tracing::info!("the audit ledger can be written again");
                }
            }
            Err(Error::LedgerReplaced { reason }) => {
                if state.replaced.is_none() {
                    tracing::error!(
                        reason,
                        "the audit ledger was replaced under the daemon; no more transitions are recorded or applied until it is restarted"
                    );
                    state.replaced = Some(reason.clone());
                }
            }
            // A refused entry is the caller's mistake, not the database's.
            Err(Error::InvalidEntry { .. }) => {}
            Err(e) => {
                let message = e.to_string();
                if state.failing.is_none() {
                    tracing::error!(
                        error = message,
                        "appending to the audit ledger failed; the daemon is not ready until an append succeeds"
                    );
                    state.failing = Some((message, crate::engine::now_rfc3339()));
                } else if let Some((m, _)) = state.failing.as_mut() {
                    *m = message;
                }
            }
        }
    }

    /// Marks the ledger as swapped (from a check outside an append).
    pub(super) fn mark_replaced(&self, reason: String) {
        let result: Result<Vec<()>> = Err(Error::LedgerReplaced { reason });
        self.after_append(&result, |_| unreachable!("an error has no entries"));
    }

    /// Compares the watched files with what was opened; a deleted or different file is a swap.
    pub(super) fn check_files(&self) {
        for file in &self.files {
            let problem = match identity(&file.path) {
                None => format!(
                    "{} was deleted while the daemon was running (appends would go to a file nobody can read)",
                    file.path.display()
                ),
                Some(now) if now != file.identity => format!(
                    "{} was replaced by another file while the daemon was running (device/inode {}/{} became {}/{})",
                    file.path.display(),
                    file.identity.0,
                    file.identity.1,
                    now.0,
                    now.1
                ),
                Some(_) => continue,
            };
            self.mark_replaced(problem);
            return;
        }
    }

    /// The current write state.
    pub(super) fn write_state(&self) -> WriteState {
        let state = self.state();
        if let Some(message) = &state.replaced {
            return WriteState::Replaced { message: message.clone() };
        }
        match &state.failing {
            Some((message, since)) => WriteState::Failing { message: message.clone(), since: since.clone() },
            None => WriteState::Writable,
        }
    }
}

/// How the head read under the append lock relates to the entry this process wrote last.
pub(super) fn continuity(last_written: Option<&(i64, String)>, head: Option<&Head>) -> Continuity {
    let Some((seq, hash)) = last_written else { return Continuity::Continues };
    match head {
        None => Continuity::Broken(format!("the ledger is empty, but this daemon appended entry {seq} to it")),
        Some(h) if h.seq < *seq => Continuity::Broken(format!(
            "the ledger ends at seq {}, but this daemon appended entry {seq} to it (it was replaced or truncated)",
            h.seq
        )),
        Some(h) if h.seq == *seq && h.hash != *hash => Continuity::Broken(format!(
            "entry {seq} has hash {}, but this daemon appended it with hash {} (another chain is in its place)",
            short(&h.hash),
            short(hash)
        )),
        Some(h) if h.seq == *seq => Continuity::Continues,
        Some(_) => Continuity::Lookup(*seq, hash.clone()),
    }
}

/// The outcome of [`Continuity::Lookup`]: the hash found at `seq` (None: no such entry).
pub(super) fn looked_up(seq: i64, ours: &str, found: Option<&str>) -> Result<()> {
    match found {
        Some(h) if h == ours => Ok(()),
        Some(h) => Err(Error::LedgerReplaced {
            reason: format!(
                "entry {seq} has hash {}, but this daemon appended it with hash {} (another chain is in its place)",
                short(h),
                short(ours)
            ),
        }),
        None => Err(Error::LedgerReplaced {
            reason: format!("entry {seq}, which this daemon appended, is gone (the ledger was replaced or truncated)"),
        }),
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// `(device, inode)` of a file, None if it does not exist.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests;
