//! Start-up checks of the ledger against the status branch, and the ledger watchdog.

use std::time::Duration;

use anyhow::{Result, bail};
use tokio::sync::watch;

use crate::ledger::Ledger;
use crate::record::{StatusBranch, TipCheck, inspect_tip};

/// Refuses to start a chain under a status branch that anchors another one (a deleted, replaced
/// or truncated ledger), unless the operator said `--new-audit-chain`; then the branch gets a
/// commit that starts the new chain. A tip that merely does not match (edited by hand) is left to
/// the recorder, which stops status writes and reports it while the daemon runs.
pub(super) async fn check_status_branch(
    branch: &StatusBranch,
    ledger: &Ledger,
    database: &str,
    new_audit_chain: bool,
) -> Result<()> {
    let reason = match inspect_tip(branch, ledger).await {
        Ok(TipCheck::OlderChain { reason }) => reason,
        Ok(TipCheck::Verified { .. } | TipCheck::Foreign { .. }) => return Ok(()),
        Err(e) => {
            // The recorder meets the same problem and reports it; the daemon can still reconcile.
            tracing::error!(
                error = format!("{e:#}"),
                branch = branch.name(),
                "cannot check the status branch against the ledger"
            );
            return Ok(());
        }
    };
    if !new_audit_chain {
        bail!(
            "refusing to start: {reason}. Restore the ledger that belongs to this status branch (see \
             docs/operations.md, \"A deleted or replaced ledger\"), or start with --new-audit-chain to record a new \
             audit chain from here on (the old chain's trailers stay in the branch's history)"
        );
    }
    tracing::warn!(
        branch = branch.name(),
        reason,
        "starting a new audit chain on the status branch (--new-audit-chain)"
    );
    let why = format!("The operator started keelson with --new-audit-chain on ledger {database}: {reason}.");
    let b = branch.clone();
    let commit = tokio::task::spawn_blocking(move || b.start_new_chain(&why)).await??;
    tracing::warn!(branch = branch.name(), commit, "a new audit chain starts at this status commit");
    Ok(())
}

/// How often the ledger's identity is checked without an append.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Checks, until shutdown, that the ledger is still the one this process writes, so a deleted or
/// replaced file shows in readiness at once, not only at the next append.
pub(super) async fn watch_ledger(ledger: Ledger, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*shutdown.borrow() {
        tokio::select! {
            _ = tick.tick() => { ledger.check_identity().await; }
            _ = shutdown.changed() => {}
        }
    }
}
