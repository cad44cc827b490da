//! The work queue, in the shape of kube-runtime's scheduler and runner: keyed by app,
//! deduplicated, at most one reconcile in flight per app, and delayed requeues. Workers take apps
//! with [`WorkQueue::next`] and hand them back with [`WorkQueue::done`] and the [`Action`] their
//! reconcile answered.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Look at the app again after this long (a rollout converging, a backoff, a freeze).
    RequeueAfter(Duration),
    /// Nothing to do until something changes (a commit, a dependency, an event).
    AwaitChange,
}

impl Action {
    /// [`Action::RequeueAfter`].
    pub fn requeue(after: Duration) -> Action {
        Action::RequeueAfter(after)
    }
}

/// Which apps this replica reconciles. HA later is a lease per shard; one node owns every shard.
pub trait Shards: Send + Sync {
    /// True when this replica holds the shard of `app`.
    fn owns(&self, app: &str) -> bool;
}

/// Every shard is ours (a single daemon).
#[derive(Debug, Default, Clone, Copy)]
pub struct AllShards;

impl Shards for AllShards {
    fn owns(&self, _app: &str) -> bool {
        true
    }
}

#[derive(Default)]
struct State {
    /// Apps ready to be taken, oldest first.
    ready: VecDeque<String>,
    /// Apps in `ready` (dedup).
    queued: BTreeSet<String>,
    /// Apps a worker holds.
    in_flight: BTreeSet<String>,
    /// Apps asked for again while in flight: queued again as soon as they are done.
    dirty: BTreeSet<String>,
    /// Delayed requeues by due time (one entry per app: the earliest).
    delayed: BTreeMap<(Instant, u64), String>,
    due: HashMap<String, (Instant, u64)>,
    counter: u64,
    closed: bool,
}

/// What [`WorkQueue::take`] found.
enum Taken {
    App(String),
    Closed,
    /// Nothing ready: wait until this due time (or an enqueue).
    Wait(Option<Instant>),
}

/// See the module documentation.
pub struct WorkQueue {
    state: Mutex<State>,
    wake: Notify,
    shards: Arc<dyn Shards>,
}

impl WorkQueue {
    /// An empty queue admitting the apps `shards` owns.
    pub fn new(shards: Arc<dyn Shards>) -> WorkQueue {
        WorkQueue { state: Mutex::new(State::default()), wake: Notify::new(), shards }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for `app` to be reconciled as soon as a worker is free (once, however often asked).
    pub fn enqueue(&self, app: &str) {
        if !self.shards.owns(app) {
            return;
        }
        let mut s = self.state();
        if let Some(key) = s.due.remove(app) {
            s.delayed.remove(&key);
        }
        if s.in_flight.contains(app) {
            s.dirty.insert(app.to_owned());
        } else if s.queued.insert(app.to_owned()) {
            s.ready.push_back(app.to_owned());
            drop(s);
            self.wake.notify_one();
        }
    }

    /// Asks for `app` after `delay` (an earlier request for it wins).
    pub fn enqueue_after(&self, app: &str, delay: Duration) {
        if delay.is_zero() {
            return self.enqueue(app);
        }
        if !self.shards.owns(app) {
            return;
        }
        let at = Instant::now() + delay;
        let mut s = self.state();
        if s.queued.contains(app) || s.dirty.contains(app) {
            return;
        }
        if let Some(&(existing, _)) = s.due.get(app)
            && existing <= at
        {
            return;
        }
        if let Some(key) = s.due.remove(app) {
            s.delayed.remove(&key);
        }
        s.counter += 1;
        let key = (at, s.counter);
        s.delayed.insert(key, app.to_owned());
        s.due.insert(app.to_owned(), key);
        drop(s);
        // A worker asleep until a later due time must recompute its wait.
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    /// The next app to reconcile, waiting for one; `None` once the queue is closed.
    pub async fn next(&self) -> Option<String> {
        loop {
            let wait_until = match self.take() {
                Taken::App(app) => return Some(app),
                Taken::Closed => return None,
                Taken::Wait(at) => at,
            };
            let notified = self.wake.notified();
            match wait_until {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// The next app ready now, without waiting (the engine's test harness drives the queue so).
    #[cfg(test)]
    pub fn try_next(&self) -> Option<String> {
        match self.take() {
            Taken::App(app) => Some(app),
            Taken::Closed | Taken::Wait(_) => None,
        }
    }

    /// Moves due requeues to the ready list and takes the first ready app.
    fn take(&self) -> Taken {
        let mut s = self.state();
        if s.closed {
            return Taken::Closed;
        }
        let now = Instant::now();
        while let Some((&key, _)) = s.delayed.first_key_value() {
            if key.0 > now {
                break;
            }
            let app = s.delayed.remove(&key).expect("first key exists");
            s.due.remove(&app);
            if s.in_flight.contains(&app) {
                s.dirty.insert(app);
            } else if s.queued.insert(app.clone()) {
                s.ready.push_back(app);
            }
        }
        if let Some(app) = s.ready.pop_front() {
            s.queued.remove(&app);
            s.in_flight.insert(app.clone());
            return Taken::App(app);
        }
        Taken::Wait(s.delayed.first_key_value().map(|(k, _)| k.0))
    }

    /// A worker is done with `app`; its reconcile answered `action`.
    pub fn done(&self, app: &str, action: Action) {
        let again = {
            let mut s = self.state();
            s.in_flight.remove(app);
            s.dirty.remove(app)
        };
        if again {
            self.enqueue(app);
        } else if let Action::RequeueAfter(delay) = action {
            self.enqueue_after(app, delay);
        }
    }

    /// Stops handing out apps; every waiting [`WorkQueue::next`] returns `None`.
    pub fn close(&self) {
        self.state().closed = true;
        self.wake.notify_waiters();
    }

    /// The apps being reconciled now.
    pub fn in_flight(&self) -> Vec<String> {
        self.state().in_flight.iter().cloned().collect()
    }

    /// Apps ready or in flight now, and apps with a delayed requeue.
    pub fn depth(&self) -> (usize, usize) {
        let s = self.state();
        (s.ready.len() + s.in_flight.len(), s.delayed.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn queue() -> Arc<WorkQueue> {
        Arc::new(WorkQueue::new(Arc::new(AllShards)))
    }

    #[tokio::test(start_paused = true)]
    async fn apps_are_deduplicated_and_handed_out_in_order() {
        let q = queue();
        for app in ["a", "b", "a", "c", "b"] {
            q.enqueue(app);
        }
        assert_eq!(q.depth(), (3, 0));
        for want in ["a", "b", "c"] {
            assert_eq!(q.next().await.as_deref(), Some(want));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_app_asked_for_while_in_flight_comes_back_once_it_is_done() {
        let q = queue();
        q.enqueue("a");
        assert_eq!(q.next().await.as_deref(), Some("a"));
        q.enqueue("a");
        q.enqueue("a");
        assert_eq!(q.depth(), (1, 0), "not handed out twice at once");
        q.done("a", Action::AwaitChange);
        assert_eq!(q.next().await.as_deref(), Some("a"));
        q.done("a", Action::AwaitChange);
        assert_eq!(q.depth(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_requeue_after_waits_exactly_its_delay_and_the_earliest_wins() {
        let q = queue();
        q.enqueue("a");
        q.next().await;
        let started = Instant::now();
        q.done("a", Action::requeue(Duration::from_secs(30)));
        q.enqueue_after("a", Duration::from_secs(10));
        q.enqueue_after("a", Duration::from_secs(20));
        assert_eq!(q.next().await.as_deref(), Some("a"));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn an_enqueue_cancels_a_pending_delay() {
        let q = queue();
        q.enqueue_after("a", Duration::from_secs(60));
        let started = Instant::now();
        q.enqueue("a");
        assert_eq!(q.next().await.as_deref(), Some("a"));
        assert_eq!(started.elapsed(), Duration::ZERO);
        q.done("a", Action::AwaitChange);
        assert_eq!(q.depth(), (0, 0), "the delayed request is gone");
    }

    #[tokio::test(start_paused = true)]
    async fn workers_never_hold_one_app_twice_and_concurrency_is_bounded_by_workers() {
        let q = queue();
        for i in 0..40 {
            q.enqueue(&format!("app-{}", i % 10));
        }
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let holders = Arc::new(Mutex::new(BTreeSet::new()));
        let mut workers = Vec::new();
        for _ in 0..3 {
            let (q, in_flight, peak, holders) = (q.clone(), in_flight.clone(), peak.clone(), holders.clone());
            workers.push(tokio::spawn(async move {
                let mut done = 0;
                while let Some(app) = q.next().await {
                    assert!(holders.lock().unwrap().insert(app.clone()), "{app} held twice");
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    holders.lock().unwrap().remove(&app);
                    q.done(&app, Action::AwaitChange);
                    done += 1;
                }
                done
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        q.close();
        let mut total = 0;
        for w in workers {
            total += w.await.unwrap();
        }
        assert_eq!(total, 10, "ten distinct apps, each reconciled once");
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn apps_of_other_shards_never_enter() {
        struct Even;
        impl Shards for Even {
            fn owns(&self, app: &str) -> bool {
                app.ends_with(['0', '2', '4', '6', '8'])
            }
        }
        let q = WorkQueue::new(Arc::new(Even));
        q.enqueue("a1");
        q.enqueue("a2");
        q.enqueue_after("a3", Duration::from_secs(1));
        assert_eq!(q.depth(), (1, 0));
        assert_eq!(q.next().await.as_deref(), Some("a2"));
    }

    #[tokio::test(start_paused = true)]
    async fn close_wakes_idle_workers() {
        let q = queue();
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        q.close();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
