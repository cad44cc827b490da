//! Prometheus metrics of the daemon, served as text on `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels `{to}` of a transition.
type ToLabel = Vec<(&'static str, String)>;

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    /// Ledger entries appended, by target state.
    pub transitions: Family<ToLabel, Counter>,
    /// Commits of the tracked branch reconciled.
    pub source_commits: Counter,
    /// Reconciles of one app.
    pub reconciles: Counter,
    /// Provider calls, by operation and outcome (`created`, `updated`, …, or an error kind).
    pub provider_calls: Family<Vec<(&'static str, String)>, Counter>,
    /// Commits written to the status branch.
    pub status_commits: Counter,
    /// Ledger entries waiting for the status branch.
    pub outbox: Gauge,
    /// Apps in each phase.
    pub apps: Family<Vec<(&'static str, String)>, Gauge>,
    /// Seq of the newest ledger entry.
    pub ledger_head: Gauge,
    /// Errors found in the manifests of the last commit.
    pub manifest_errors: Gauge,
    /// Looks at a remote source, by outcome (`unchanged`, `moved`, or the failure's cause).
    pub source_fetches: Family<Vec<(&'static str, String)>, Counter>,
    /// Webhook deliveries, by outcome (`accepted`, `ignored`, `duplicate`, `rejected`).
    pub webhook_deliveries: Family<Vec<(&'static str, String)>, Counter>,
    /// Pushes of the status branch, by outcome (`pushed`, `rejected`, `failed`).
    pub status_pushes: Family<Vec<(&'static str, String)>, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `keelson` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keelson");
        let m = Self {
            transitions: Family::default(),
            source_commits: Counter::default(),
            reconciles: Counter::default(),
            provider_calls: Family::default(),
            status_commits: Counter::default(),
            outbox: Gauge::default(),
            apps: Family::default(),
            ledger_head: Gauge::default(),
            manifest_errors: Gauge::default(),
            source_fetches: Family::default(),
            webhook_deliveries: Family::default(),
            status_pushes: Family::default(),
            registry: Registry::default(),
        };
        registry.register("transitions", "Ledger entries appended, by target state", m.transitions.clone());
        registry.register("source_commits", "Commits of the tracked branch reconciled", m.source_commits.clone());
        registry.register("reconciles", "Reconciles of one app (by the work queue)", m.reconciles.clone());
        registry.register("provider_calls", "Provider calls by operation and outcome", m.provider_calls.clone());
        registry.register("status_commits", "Commits written to the status branch", m.status_commits.clone());
        registry.register("outbox_entries", "Ledger entries not yet on the status branch", m.outbox.clone());
        registry.register("apps", "Apps in each phase", m.apps.clone());
        registry.register("ledger_head_seq", "Seq of the newest audit ledger entry", m.ledger_head.clone());
        registry.register(
            "manifest_errors",
            "Errors in the manifests of the last reconciled commit",
            m.manifest_errors.clone(),
        );
        registry.register(
            "source_fetches",
            "Looks at a remote source by outcome (unchanged, moved, or the failure's cause)",
            m.source_fetches.clone(),
        );
        registry.register("webhook_deliveries", "Webhook deliveries by outcome", m.webhook_deliveries.clone());
        registry.register("status_pushes", "Pushes of the status branch by outcome", m.status_pushes.clone());
        Self { registry, ..m }
    }

    /// Counts one outcome of a labelled counter family.
    pub fn outcome(family: &Family<Vec<(&'static str, String)>, Counter>, outcome: &str) {
        family.get_or_create(&vec![("outcome", outcome.to_owned())]).inc();
    }

    /// Counts one ledger entry.
    pub fn transition(&self, to: &str, seq: i64) {
        self.transitions.get_or_create(&vec![("to", to.to_owned())]).inc();
        self.ledger_head.set(seq);
    }

    /// Counts one provider call.
    pub fn provider_call(&self, op: &'static str, outcome: &str) {
        self.provider_calls.get_or_create(&vec![("op", op.to_owned()), ("outcome", outcome.to_owned())]).inc();
    }

    /// One app left phase `from` (`None`: it was new) for `to` (`None`: it left the fleet).
    pub fn app_moved(&self, from: Option<&str>, to: Option<&str>) {
        if from == to {
            return;
        }
        if let Some(from) = from {
            self.apps.get_or_create(&vec![("phase", from.to_owned())]).dec();
        }
        if let Some(to) = to {
            self.apps.get_or_create(&vec![("phase", to.to_owned())]).inc();
        }
    }

    /// Sets the per-phase app gauges.
    pub fn set_app_counts<'a>(&self, counts: impl IntoIterator<Item = (&'a str, usize)>) {
        for (phase, n) in counts {
            self.apps.get_or_create(&vec![("phase", phase.to_owned())]).set(n as i64);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
