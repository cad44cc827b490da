//! Prometheus metrics of the daemon, served on `/metrics`: the classic Prometheus text format by
//! default and OpenMetrics when the scraper's `Accept` asks for it (see [`Metrics::render_for`]).
//!
//! Most series are kept by small hooks where things happen (the journal, the rollout, the remote
//! source); the per-app info series and the last sync time are refreshed from the fleet view on
//! every scrape ([`Metrics::observe_fleet`]); process metrics are read from `/proc` at scrape time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a family: `(name, value)` pairs.
type Labels = Vec<(&'static str, String)>;
/// A family of histograms made by a plain function.
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// The content type of the classic Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics text.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn reconcile_buckets() -> Histogram {
    // 1 ms … ~60 s.
    Histogram::new(exponential_buckets(0.001, 2.5, 13))
}

fn rollout_buckets() -> Histogram {
    Histogram::new([0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0])
}

fn provider_buckets() -> Histogram {
    // 1 ms … ~60 s.
    Histogram::new(exponential_buckets(0.001, 2.5, 13))
}

fn commit_buckets() -> Histogram {
    Histogram::new([1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0, 86400.0])
}

/// One app as the per-app info series shows it.
#[derive(Debug, Clone, Default)]
pub struct AppInfo {
    pub app: String,
    pub phase: String,
    pub in_sync: bool,
    pub team: String,
    pub cluster: String,
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    /// Ledger entries appended, by target state.
    pub transitions: Family<Labels, Counter>,
    /// Commits of the tracked branch reconciled.
    pub source_commits: Counter,
    /// Reconciles of one app.
    pub reconciles: Counter,
    /// How long one reconcile of one app took, by result (`ok`, `error`).
    pub reconcile_duration: Histograms,
    /// Plan → Healthy or Failed, by outcome (`healthy`, `failed`).
    pub rollout_duration: Histograms,
    /// Commit time of the commit → its app Healthy at it.
    pub commit_to_healthy: Histogram,
    /// Provider calls, by operation and outcome (`created`, `updated`, …, or an error kind).
    pub provider_calls: Family<Labels, Counter>,
    /// Provider call latency, by instance and operation.
    pub provider_call_duration: Histograms,
    /// Failed provider calls, by instance, operation, error kind and class.
    pub provider_errors: Family<Labels, Counter>,
    /// Commits written to the status branch.
    pub status_commits: Counter,
    /// Ledger entries waiting for the status branch.
    pub outbox: Gauge,
    /// Apps in each phase.
    pub apps: Family<Labels, Gauge>,
    /// One series per app (value 1) with its phase, sync state, team and cluster.
    pub app_info: Family<Labels, Gauge>,
    /// Seq of the newest ledger entry.
    pub ledger_head: Gauge,
    /// 1 when the last verification of the ledger passed, 0 when it failed or before the first.
    pub ledger_verify_ok: Gauge,
    /// When the ledger was last verified (Unix seconds).
    pub ledger_verify_time: Gauge<f64, AtomicU64>,
    /// Errors found in the manifests of the last commit.
    pub manifest_errors: Gauge,
    /// Looks at a remote source, by outcome (`unchanged`, `moved`, or the failure's cause).
    pub source_fetches: Family<Labels, Counter>,
    /// Failed looks at a remote source, by cause.
    pub source_fetch_errors: Family<Labels, Counter>,
    /// When a commit was last loaded and reconciled (Unix seconds).
    pub last_sync: Gauge<f64, AtomicU64>,
    /// Rollouts held, by kind (`Policy`, `Freeze`, `PruneGuard`, `InvalidManifest`, …).
    pub blocks: Family<Labels, Counter>,
    /// Webhook deliveries, by outcome (`accepted`, `ignored`, `duplicate`, `rejected`).
    pub webhook_deliveries: Family<Labels, Counter>,
    /// Pushes of the status branch, by outcome (`pushed`, `rejected`, `failed`).
    pub status_pushes: Family<Labels, Counter>,
    /// Build information (value 1).
    pub build_info: Family<Labels, Gauge>,
    /// Rollouts under way: app → (when planned, commit).
    rollouts: Mutex<HashMap<String, (Instant, String)>>,
    /// Commit times of recently loaded commits (Unix seconds), by commit id.
    commit_times: Mutex<BTreeMap<String, i64>>,
    /// When these metrics were made (Unix seconds): commits older than this are not timed.
    started_at: i64,
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

/// Commit times kept for the commit → healthy latency.
const COMMIT_TIMES_KEPT: usize = 64;

impl Metrics {
    /// Registers every metric under the `keelson` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keelson");
        let m = Self {
            transitions: Family::default(),
            source_commits: Counter::default(),
            reconciles: Counter::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_buckets),
            rollout_duration: Family::new_with_constructor(rollout_buckets),
            commit_to_healthy: commit_buckets(),
            provider_calls: Family::default(),
            provider_call_duration: Family::new_with_constructor(provider_buckets),
            provider_errors: Family::default(),
            status_commits: Counter::default(),
            outbox: Gauge::default(),
            apps: Family::default(),
            app_info: Family::default(),
            ledger_head: Gauge::default(),
            ledger_verify_ok: Gauge::default(),
            ledger_verify_time: Gauge::default(),
            manifest_errors: Gauge::default(),
            source_fetches: Family::default(),
            source_fetch_errors: Family::default(),
            last_sync: Gauge::default(),
            blocks: Family::default(),
            webhook_deliveries: Family::default(),
            status_pushes: Family::default(),
            build_info: Family::default(),
            rollouts: Mutex::default(),
            commit_times: Mutex::default(),
            started_at: time::OffsetDateTime::now_utc().unix_timestamp(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("build_info", "Build information of this daemon (value 1)", m.build_info.clone());
        r.register("transitions", "Ledger entries appended, by target state", m.transitions.clone());
        r.register("source_commits", "Commits of the tracked branch reconciled", m.source_commits.clone());
        r.register("reconciles", "Reconciles of one app (by the work queue)", m.reconciles.clone());
        r.register(
            "reconcile_duration_seconds",
            "How long one reconcile of one app took, by result",
            m.reconcile_duration.clone(),
        );
        r.register(
            "rollout_duration_seconds",
            "Rollouts from plan to Healthy or Failed, by outcome",
            m.rollout_duration.clone(),
        );
        r.register(
            "commit_to_healthy_seconds",
            "From a commit's commit time to its app Healthy at it (commit to applied latency)",
            m.commit_to_healthy.clone(),
        );
        r.register("provider_calls", "Provider calls by operation and outcome", m.provider_calls.clone());
        r.register(
            "provider_call_duration_seconds",
            "Provider call latency by provider instance and operation",
            m.provider_call_duration.clone(),
        );
        r.register(
            "provider_errors",
            "Failed provider calls by provider instance, operation, error kind and error class",
            m.provider_errors.clone(),
        );
        r.register("status_commits", "Commits written to the status branch", m.status_commits.clone());
        r.register("outbox_entries", "Ledger entries not yet on the status branch", m.outbox.clone());
        r.register("apps", "Apps in each phase", m.apps.clone());
        r.register(
            "app_info",
            "One series per app (value 1) with its phase, sync status, team, cluster and provider instance",
            m.app_info.clone(),
        );
        r.register("ledger_head_seq", "Seq of the newest audit ledger entry", m.ledger_head.clone());
        r.register(
            "ledger_verify_ok",
            "1 when the last verification of the audit ledger passed, 0 when it failed",
            m.ledger_verify_ok.clone(),
        );
        r.register(
            "ledger_verify_timestamp_seconds",
            "When the audit ledger was last verified (Unix time)",
            m.ledger_verify_time.clone(),
        );
        r.register(
            "manifest_errors",
            "Errors in the manifests of the last reconciled commit",
            m.manifest_errors.clone(),
        );
        r.register(
            "source_fetches",
            "Looks at a remote source by outcome (unchanged, moved, or the failure's cause)",
            m.source_fetches.clone(),
        );
        r.register("source_fetch_errors", "Failed looks at a remote source by cause", m.source_fetch_errors.clone());
        r.register(
            "last_sync_timestamp_seconds",
            "When a commit of the source was last loaded and reconciled (Unix time)",
            m.last_sync.clone(),
        );
        r.register(
            "blocks",
            "Rollouts held, by kind (Policy, Freeze, PruneGuard, InvalidManifest, ...)",
            m.blocks.clone(),
        );
        r.register("webhook_deliveries", "Webhook deliveries by outcome", m.webhook_deliveries.clone());
        r.register("status_pushes", "Pushes of the status branch by outcome", m.status_pushes.clone());
        // Every phase has a series from the start, so `keelson_apps{phase="Failed"} > 0` can be alerted on.
        for phase in keelson_core::Phase::ALL {
            m.apps.get_or_create(&vec![("phase", phase.as_str().to_owned())]).set(0);
        }
        m.build_info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())]).set(1);
        Self { registry, ..m }
    }

    /// Counts one outcome of a labelled counter family.
    pub fn outcome(family: &Family<Labels, Counter>, outcome: &str) {
        family.get_or_create(&vec![("outcome", outcome.to_owned())]).inc();
    }

    /// Counts one failed look at a remote source.
    pub fn source_fetch_failed(&self, cause: &str) {
        self.source_fetch_errors.get_or_create(&vec![("cause", cause.to_owned())]).inc();
    }

    /// Counts one ledger entry.
    pub fn transition(&self, to: &str, seq: i64) {
        self.transitions.get_or_create(&vec![("to", to.to_owned())]).inc();
        self.ledger_head.set(seq);
    }

    /// One ledger entry this process appended: the transition counters, rollout timing (plan →
    /// Healthy or Failed), the commit → healthy latency, and blocks by kind (`block` names the
    /// reason of a block entry).
    pub fn recorded(&self, app: &str, to: &str, commit: &str, seq: i64, block: Option<&str>) {
        self.transition(to, seq);
        if let Some(kind) = block {
            self.blocks.get_or_create(&vec![("kind", kind.to_owned())]).inc();
        }
        let mut rollouts = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        match to {
            "Planned" => {
                rollouts.insert(app.to_owned(), (Instant::now(), commit.to_owned()));
            }
            "Healthy" | "Failed" => {
                let Some((started, rollout_commit)) = rollouts.remove(app) else { return };
                let outcome = if to == "Healthy" { "healthy" } else { "failed" };
                self.rollout_duration
                    .get_or_create(&vec![("outcome", outcome.to_owned())])
                    .observe(started.elapsed().as_secs_f64());
                if to == "Healthy" && rollout_commit == commit {
                    let at = self.commit_times.lock().unwrap_or_else(|e| e.into_inner()).get(commit).copied();
                    if let Some(at) = at {
                        let now = time::OffsetDateTime::now_utc().unix_timestamp();
                        self.commit_to_healthy.observe((now - at).max(0) as f64);
                    }
                }
            }
            "Deleted" => {
                rollouts.remove(app);
            }
            _ => {}
        }
    }

    /// A commit was loaded; `committed_at` is its commit time (Unix seconds). A commit made before
    /// the daemon started is not timed: its latency would be the daemon's downtime, or the age of
    /// the repository's head at a first start.
    pub fn commit_loaded(&self, commit: &str, committed_at: i64) {
        if committed_at < self.started_at {
            return;
        }
        let mut times = self.commit_times.lock().unwrap_or_else(|e| e.into_inner());
        times.insert(commit.to_owned(), committed_at);
        while times.len() > COMMIT_TIMES_KEPT {
            // Drop the oldest commit time.
            let Some(oldest) = times.iter().min_by_key(|(_, t)| **t).map(|(c, _)| c.clone()) else { break };
            times.remove(&oldest);
        }
    }

    /// One reconcile took `elapsed`.
    pub fn reconciled(&self, ok: bool, elapsed: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.reconcile_duration.get_or_create(&vec![("result", result.to_owned())]).observe(elapsed.as_secs_f64());
    }

    /// Counts one provider call of `instance` that took `elapsed`: `outcome` is the outcome's label
    /// on success, or the error's kind and class.
    pub fn provider_call(
        &self,
        instance: &str,
        op: &'static str,
        outcome: Result<&str, (&str, &str)>,
        elapsed: Duration,
    ) {
        let label = match outcome {
            Ok(label) => label,
            Err((kind, _)) => kind,
        };
        self.provider_calls.get_or_create(&vec![("op", op.to_owned()), ("outcome", label.to_owned())]).inc();
        self.provider_call_duration
            .get_or_create(&vec![("instance", instance.to_owned()), ("op", op.to_owned())])
            .observe(elapsed.as_secs_f64());
        if let Err((kind, class)) = outcome {
            self.provider_errors
                .get_or_create(&vec![
                    ("instance", instance.to_owned()),
                    ("op", op.to_owned()),
                    ("kind", kind.to_owned()),
                    ("class", class.to_owned()),
                ])
                .inc();
        }
    }

    /// The result of a ledger verification.
    pub fn verified(&self, ok: bool) {
        self.ledger_verify_ok.set(i64::from(ok));
        self.ledger_verify_time.set(time::OffsetDateTime::now_utc().unix_timestamp() as f64);
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

    /// Refreshes what is read from the fleet view on each scrape: the per-app info series and the
    /// last sync time (`last_sync` is RFC 3339).
    pub fn observe_fleet(&self, apps: impl IntoIterator<Item = AppInfo>, last_sync: Option<&str>) {
        self.app_info.clear();
        for a in apps {
            let sync = if a.in_sync { "Synced" } else { "OutOfSync" };
            self.app_info
                .get_or_create(&vec![
                    ("app", a.app),
                    ("phase", a.phase),
                    ("sync_status", sync.to_owned()),
                    ("team", a.team),
                    ("cluster", a.cluster),
                ])
                .set(1);
        }
        let parsed =
            last_sync.and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok());
        if let Some(t) = parsed {
            self.last_sync.set(t.unix_timestamp() as f64 + f64::from(t.millisecond()) / 1000.0);
        }
    }

    /// The OpenMetrics text exposition (with the process metrics, ending in `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        out.push_str(&process_metrics());
        let _ = encode_eof(&mut out);
        out
    }

    /// The exposition in the format `accept` (a request's `Accept` header) asks for, and its
    /// content type: OpenMetrics only when asked for by name, the classic text format otherwise.
    pub fn render_for(&self, accept: Option<&str>) -> (String, &'static str) {
        let text = self.render();
        if accept.is_some_and(wants_openmetrics) {
            (text, OPENMETRICS_TEXT)
        } else {
            (to_classic(&text), PROMETHEUS_TEXT)
        }
    }
}

/// True when an `Accept` header names OpenMetrics text with a non-zero quality.
fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or_default();
        let zero =
            params.any(|p| p.strip_prefix("q=").is_some_and(|q| q.trim().parse::<f64>().is_ok_and(|q| q <= 0.0)));
        media.eq_ignore_ascii_case("application/openmetrics-text") && !zero
    })
}

/// OpenMetrics text as the classic Prometheus text format (version 0.0.4): counter families are
/// named with their `_total` suffix in HELP and TYPE, `unknown` is `untyped`, and there is no
/// `# UNIT`, `_created` or `# EOF`.
pub fn to_classic(openmetrics: &str) -> String {
    let counters: HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    // Families whose `_created` samples OpenMetrics has and the classic format does not.
    let created: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("# TYPE ")?;
            let (name, kind) = rest.split_once(' ')?;
            matches!(kind, "counter" | "histogram" | "summary").then_some(name)
        })
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let tail = if prefix == "# TYPE " && tail == "unknown" { "untyped" } else { tail };
            let suffix = if counters.contains(name) { "_total" } else { "" };
            out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        if name.strip_suffix("_created").is_some_and(|base| created.contains(base)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The standard process metrics (`process_*`), in OpenMetrics text, read from `/proc/self`;
/// empty where `/proc` cannot be read.
fn process_metrics() -> String {
    let mut out = String::new();
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return out };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let Some((_, after)) = stat.rsplit_once(')') else { return out };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field n of proc_pid_stat(5) is fields[n - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    // /proc reports CPU times in USER_HZ, which the kernel fixes at 100 for user space.
    let ticks = 100.0;
    let mut family = |name: &str, kind: &str, help: &str, value: f64| {
        let sample = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
        out.push_str(&format!("# HELP {name} {help}.\n# TYPE {name} {kind}\n{sample} {value}\n"));
    };
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        family(
            "process_cpu_seconds",
            "counter",
            "Total user and system CPU time spent in seconds",
            (utime + stime) as f64 / ticks,
        );
    }
    let rss_kib = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        let line = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().to_owned();
        line.strip_suffix("kB")?.trim().parse::<u64>().ok()
    });
    if let Some(kib) = rss_kib {
        family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes", (kib * 1024) as f64);
    }
    if let Some(vsize) = field(23) {
        family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes", vsize as f64);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        family("process_open_fds", "gauge", "Number of open file descriptors", dir.count() as f64);
    }
    if let Ok((soft, _)) = rlimit::Resource::NOFILE.get() {
        family("process_max_fds", "gauge", "Maximum number of open file descriptors", soft as f64);
    }
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<u64>().ok()));
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds",
            boot as f64 + start as f64 / ticks,
        );
    }
    out
}

#[cfg(test)]
mod tests;
