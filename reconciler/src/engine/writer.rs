//! The ledger writer and the fleet fold. Reconciles hand their entries to one writer task, which
//! appends everything waiting in one transaction (a group commit) and answers each reconcile only
//! once its entries are durable and folded, so an intent is on disk before the provider call it
//! announces. The fold is shared with the [`super::reflector`]: entries other writers appended
//! (another daemon on the same PostgreSQL ledger) are folded in ledger order before our own.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use keelson_core::ledger::NewEntry;
use keelson_core::{AppStatus, Event, Phase};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

use super::queue::WorkQueue;
use super::state::Fleet;
use crate::crash::{crash_point, point};
use crate::ledger::{Ledger, LedgerEntry};
use crate::metrics::Metrics;

/// Most entries one transaction takes (the rest wait for the next one).
const MAX_BATCH: usize = 512;
/// Entries read per page when catching up with other writers.
const PAGE: i64 = 1_000;

/// One entry to append, with the typed event it records (folded without parsing it again).
pub(super) struct Pending {
    pub entry: NewEntry,
    pub event: Event,
    pub from: Phase,
    pub to: Phase,
}

/// The fleet view and how it is kept: every ledger entry, whoever appended it, folded once in
/// ledger order.
pub(super) struct Journal {
    pub ledger: Ledger,
    pub fleet: Arc<RwLock<Fleet>>,
    pub metrics: Arc<Metrics>,
    recorder: Arc<Notify>,
    queue: Arc<WorkQueue>,
    /// Held while folding: the writer and the reflector never fold at once.
    fold: Mutex<()>,
    /// The apps that depend on each app (of the commit in force): enqueued when it turns Healthy.
    dependents: std::sync::RwLock<HashMap<String, Vec<String>>>,
}

impl Journal {
    pub fn new(
        ledger: Ledger,
        fleet: Arc<RwLock<Fleet>>,
        metrics: Arc<Metrics>,
        recorder: Arc<Notify>,
        queue: Arc<WorkQueue>,
    ) -> Journal {
        Journal { ledger, fleet, metrics, recorder, queue, fold: Mutex::new(()), dependents: Default::default() }
    }

    /// The dependents of the commit now in force.
    pub fn set_dependents(&self, dependents: HashMap<String, Vec<String>>) {
        *self.dependents.write().unwrap_or_else(|e| e.into_inner()) = dependents;
    }

    fn head(&self) -> i64 {
        self.fleet.read().unwrap_or_else(|e| e.into_inner()).head
    }

    /// Folds what other writers appended after our head, up to `upto` (everything when `None`),
    /// and enqueues their apps. Returns how many entries were folded.
    pub async fn catch_up(&self, upto: Option<i64>) -> Result<usize> {
        let _folding = self.fold.lock().await;
        self.catch_up_locked(upto).await
    }

    async fn catch_up_locked(&self, upto: Option<i64>) -> Result<usize> {
        let mut folded = 0;
        loop {
            let head = self.head();
            if upto.is_some_and(|upto| head >= upto) {
                return Ok(folded);
            }
            let limit = upto.map_or(PAGE, |upto| (upto - head).min(PAGE));
            let page = self.ledger.entries_after(head, limit).await.context("reading the ledger's new entries")?;
            if page.is_empty() {
                return Ok(folded);
            }
            let mut apps = Vec::with_capacity(page.len());
            {
                let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
                for e in &page {
                    match e.event().map_err(anyhow::Error::from).and_then(|ev| Ok((ev, e.phases()?))) {
                        Ok((event, (from, to))) => self.fold_one(&mut fleet, e, &event, from, to),
                        Err(err) => {
                            // A newer writer's event this version cannot read: the entry stays in
                            // the ledger (and verifies); this app's view is stale until upgraded.
                            tracing::error!(
                                seq = e.seq,
                                app = e.app,
                                error = format!("{err:#}"),
                                "an entry another writer appended cannot be folded; upgrade this daemon"
                            );
                            fleet.head = e.seq;
                        }
                    }
                    apps.push(e.app.clone());
                }
            }
            folded += page.len();
            tracing::debug!(entries = page.len(), "folded entries another writer appended");
            for app in apps {
                self.queue.enqueue(&app);
            }
            self.recorder.notify_one();
        }
    }

    /// Folds one entry into `fleet`, keeping the per-phase gauges.
    fn fold_one(&self, fleet: &mut Fleet, e: &LedgerEntry, event: &Event, from: Phase, to: Phase) {
        let before = fleet.apps.get(&e.app).map(|s| s.phase.as_str());
        let status = fleet.apps.entry(e.app.clone()).or_insert_with(|| AppStatus::pending(&e.app));
        status.apply_event(e, event, from, to);
        let after = if to == Phase::Deleted {
            fleet.apps.remove(&e.app);
            None
        } else {
            Some(to.as_str())
        };
        self.metrics.app_moved(before, after);
        fleet.head = fleet.head.max(e.seq);
        if to == Phase::Healthy {
            // Apps waiting for this one may start now.
            let dependents = self.dependents.read().unwrap_or_else(|e| e.into_inner());
            for app in dependents.get(&e.app).into_iter().flatten() {
                self.queue.enqueue(app);
            }
        }
    }

    /// Folds entries this process appended (after whatever other writers appended before them).
    async fn fold_own(&self, stored: &[LedgerEntry], pending: &[&Pending]) -> Result<()> {
        let _folding = self.fold.lock().await;
        let first = stored.first().map_or(0, |e| e.seq);
        if self.head() < first - 1 {
            self.catch_up_locked(Some(first - 1)).await?;
        }
        let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
        for (e, p) in stored.iter().zip(pending) {
            if e.seq <= fleet.head {
                // The reflector read it from the ledger first.
                continue;
            }
            tracing::info!(
                app = e.app,
                seq = e.seq,
                from = e.from_state,
                to = e.to_state,
                action = e.action,
                "transition"
            );
            let block = match &p.event {
                Event::Block(b) => Some(b.reason.as_str()),
                _ => None,
            };
            self.metrics.recorded(&e.app, &e.to_state, &e.desired_commit, e.seq, block);
            self.fold_one(&mut fleet, e, &p.event, p.from, p.to);
        }
        drop(fleet);
        self.recorder.notify_one();
        Ok(())
    }
}

/// A batch of one reconcile's entries and where to answer.
struct Request {
    pending: Vec<Pending>,
    reply: oneshot::Sender<Result<Vec<LedgerEntry>>>,
}

/// The handle reconciles append through.
#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::UnboundedSender<Request>,
}

impl Writer {
    /// Starts the writer task over `journal`.
    pub fn start(journal: Arc<Journal>) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(journal, rx));
        Writer { tx }
    }

    /// Appends `pending` (contiguous, in one transaction) and returns the entries once they are
    /// durable and folded.
    pub async fn append(&self, pending: Vec<Pending>) -> Result<Vec<LedgerEntry>> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Request { pending, reply }).map_err(|_| anyhow::anyhow!("the ledger writer has stopped"))?;
        answer.await.map_err(|_| anyhow::anyhow!("the ledger writer stopped before answering"))?
    }
}

async fn run(journal: Arc<Journal>, mut rx: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut entries = batch[0].pending.len();
        while entries < MAX_BATCH {
            let Ok(next) = rx.try_recv() else { break };
            entries += next.pending.len();
            batch.push(next);
        }
        if batch.len() == 1 {
            let request = batch.pop().expect("one request");
            let result = append(&journal, &request.pending).await;
            let _ = request.reply.send(result);
            continue;
        }
        let all: Vec<NewEntry> = batch.iter().flat_map(|r| r.pending.iter().map(|p| p.entry.clone())).collect();
        match journal.ledger.append_batch(all).await {
            Ok(stored) => {
                crash_point(point::AFTER_LEDGER_APPEND);
                let pending: Vec<&Pending> = batch.iter().flat_map(|r| r.pending.iter()).collect();
                let folded = journal.fold_own(&stored, &pending).await;
                let mut stored = stored.into_iter();
                for request in batch {
                    let mine: Vec<LedgerEntry> = stored.by_ref().take(request.pending.len()).collect();
                    let answer = match &folded {
                        Ok(()) => Ok(mine),
                        Err(e) => Err(anyhow::anyhow!("{e:#}")),
                    };
                    let _ = request.reply.send(answer);
                }
            }
            Err(_) => {
                // One bad entry must not fail the others: each reconcile's entries alone.
                for request in batch {
                    let result = append(&journal, &request.pending).await;
                    let _ = request.reply.send(result);
                }
            }
        }
    }
}

/// One reconcile's entries in their own transaction.
async fn append(journal: &Journal, pending: &[Pending]) -> Result<Vec<LedgerEntry>> {
    let entries = pending.iter().map(|p| p.entry.clone()).collect();
    let stored = journal.ledger.append_batch(entries).await?;
    crash_point(point::AFTER_LEDGER_APPEND);
    journal.fold_own(&stored, &pending.iter().collect::<Vec<_>>()).await?;
    Ok(stored)
}
