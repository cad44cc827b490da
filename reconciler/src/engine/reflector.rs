//! The reflector: tails the ledger for entries other writers appended (another daemon or a
//! `keelson` command on the same PostgreSQL ledger), folds them into the fleet in ledger order and
//! enqueues their apps. This process's own entries are folded by the writer as it appends them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::writer::Journal;

/// Runs until `shutdown` turns true, looking every `interval`.
pub(super) async fn run(journal: Arc<Journal>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        tokio::select! {
            changed = shutdown.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(interval) => {}
        }
        if *shutdown.borrow() {
            return;
        }
        match journal.catch_up(None).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("the ledger can be read again; the fleet view follows it");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(
                    error = format!("{e:#}"),
                    "reading the ledger for other writers' entries failed; retrying every {interval:?}"
                );
            }
            Err(_) => {}
        }
    }
}
