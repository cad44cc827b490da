//! The daemon: one instance per data directory and per (repository, status branch), wiring
//! source → engine → ledger → status branch → API.

mod lock;
pub mod safeguards;
mod startup;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use keelson_manifest::config::{ClusterBinding, ProviderConfig};
use keelson_provider_sim::SimConfig;
use tokio::sync::{Notify, mpsc, watch};

use crate::api::server::{ServeLimits, default_max_connections, serve};
use crate::api::{ApiState, router};
use crate::engine::state::{Fleet, SourceStatus};
use crate::engine::{Engine, EngineSettings};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::record::{Pusher, StatusBranch, drain_outbox, final_drain, run_recorder};
use crate::source::remote::{RemoteSettings, RemoteSource, prepare_cache};
use crate::source::transport::{Credentials, GitCli, GitTransport, display_url};
use crate::source::webhook::{self, HookState, Secret, WebhookStatus};
use crate::source::{GitRepo, watch_ref};

/// Apps reconciled at once unless `--concurrency` or `concurrency:` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// How often the engine looks for ledger entries another writer appended (a second daemon on
/// the same PostgreSQL ledger).
const REFLECT_INTERVAL: Duration = Duration::from_secs(1);

/// Everything `keelson daemon` (and `keelson up`) needs to run.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Path of the state repository (work tree or bare).
    pub repo: PathBuf,
    pub branch: String,
    /// Sub-folder of the repository holding the state.
    pub path: String,
    /// Ledger database: a path or URL; default `<data dir>/keelson.db`.
    pub database: Option<String>,
    /// Where the lock, the default ledger and the simulator live; default `<repo>/.keelson`.
    pub data_dir: Option<PathBuf>,
    pub listen: SocketAddr,
    pub status_branch: String,
    /// Fallback poll of the tracked ref, for filesystems without change events.
    pub poll_interval: Duration,
    /// How long a simulated workload takes to converge.
    pub sim_rollout_time: Duration,
    pub progress_deadline: Duration,
    /// Apps reconciled at once.
    pub concurrency: usize,
    /// Named provider instances (`providers:` in config); empty means one `sim` instance for every cluster.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Cluster name → provider instance per role (`clusters:` in config).
    pub clusters: BTreeMap<String, ClusterBinding>,
    /// Config settings accepted but not carried out, one message each (logged, and in `/api/v1/status`).
    pub not_built: Vec<String>,
    /// API connection limits, the shutdown deadline, `--new-audit-chain`.
    pub safeguards: safeguards::Safeguards,
    /// `drift:` in config (and `--drift-interval`).
    pub drift: DriftOptions,
    /// `pruneGuard.maxPercent` in config.
    pub prune_max_percent: u32,
    /// `--dry-run`: plan and record, never apply or delete.
    pub dry_run: bool,
    /// `--sim-drift`: drift faults every sim instance starts with.
    pub sim_drift: Vec<keelson_provider_sim::DriftFault>,
    /// Set when the repository is a URL: fetched into `<data dir>/source.git`.
    pub remote: Option<RemoteOptions>,
    /// The push webhook listener.
    pub webhook: Option<WebhookOptions>,
    /// `(name, email)` of status commits (`status.author`); default `Keelson <keelson@localhost>`.
    pub status_author: Option<(String, String)>,
}

/// How drift is looked for.
#[derive(Debug, Clone)]
pub struct DriftOptions {
    /// Every app is observed again this long (plus up to a tenth) after it was last looked at.
    pub interval: Duration,
    /// And every app at each time of this crontab (UTC).
    pub schedule: Option<croner::Cron>,
    /// JSON pointers never counted as drift, by resource kind.
    pub ignore_by_kind: BTreeMap<String, Vec<String>>,
}

impl Default for DriftOptions {
    fn default() -> Self {
        DriftOptions {
            interval: crate::engine::DEFAULT_DRIFT_INTERVAL,
            schedule: None,
            ignore_by_kind: BTreeMap::new(),
        }
    }
}

/// A remote state repository.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// As written (may hold a user name; a password in it is never shown).
    pub url: String,
    pub credentials: Credentials,
    /// Follow a rewritten tracked branch.
    pub allow_force_push: bool,
    /// How often the remote is asked for the tracked ref (jittered).
    pub poll_interval: Duration,
    /// Least time between two pushes of the status branch.
    pub push_interval: Duration,
}

/// The webhook listener.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub listen: SocketAddr,
    pub secret_file: PathBuf,
}

/// Runs until SIGTERM or SIGINT; `on_listening` is called with the bound API address and data dir.
pub async fn run(opts: DaemonOptions, on_listening: impl FnOnce(SocketAddr, &Path, &str)) -> Result<()> {
    // The secret is read before anything else, so a missing file fails start-up at once.
    let secret = opts.webhook.as_ref().map(|w| Secret::read(&w.secret_file)).transpose()?;
    let (repo, data_dir, _lock) = match &opts.remote {
        None => {
            let path = opts.repo.clone();
            let repo = tokio::task::spawn_blocking(move || GitRepo::open(&path)).await??;
            let data_dir = opts.data_dir.clone().unwrap_or_else(|| repo.root().join(".keelson"));
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating data directory {}", data_dir.display()))?;
            let lock = take_instance_lock(&data_dir)?;
            (repo, data_dir, lock)
        }
        Some(remote) => {
            let data_dir = opts.data_dir.clone().unwrap_or_else(|| PathBuf::from(".keelson"));
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating data directory {}", data_dir.display()))?;
            let lock = take_instance_lock(&data_dir)?;
            let cache = prepare_cache(&data_dir, &remote.url).await?;
            let repo = tokio::task::spawn_blocking(move || GitRepo::open(&cache)).await??;
            (repo, data_dir, lock)
        }
    };
    let _repo_lock = lock::take_repository_lock(repo.git_dir(), repo.root(), &opts.status_branch, &data_dir)?;
    clear_stale_git_locks(&repo, &opts.status_branch);
    let guards = opts.safeguards.clone();
    let open_files = crate::api::server::raise_open_file_limit();
    // A write past a file-size limit must fail like a full disk (an error the ledger recovers
    // from), not kill the daemon in the middle of a commit.
    let _xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ)).ok();

    let database = opts.database.clone().unwrap_or_else(|| data_dir.join("keelson.db").display().to_string());
    let ledger = Ledger::open(&database).await.context("opening the audit ledger")?;
    // From here on the database string is only shown without its password.
    let database = crate::ledger::redact(&database);
    let mut sim_defaults = SimConfig { rollout_time: opts.sim_rollout_time, ..SimConfig::default() };
    sim_defaults.faults.drift.extend(opts.sim_drift.iter().cloned());
    if opts.dry_run {
        tracing::warn!("dry run: plans are recorded as `Planned` (dry run); no provider apply or delete is called");
    }
    let providers = crate::providers::build(&opts.providers, &opts.clusters, sim_defaults, &data_dir).await?;
    if providers.status.simulated {
        tracing::info!("{}", providers.status.message);
    }

    let metrics = Arc::new(Metrics::new());
    let mut status_branch = StatusBranch::new(repo.clone(), &opts.status_branch);
    if let Some((name, email)) = &opts.status_author {
        status_branch = status_branch.with_author(name, email);
    }
    startup::check_status_branch(&status_branch, &ledger, &database, guards.new_audit_chain).await?;
    // Whatever a previous run appended but did not commit goes to the branch before any new work.
    match drain_outbox(&status_branch, &ledger, &metrics).await {
        Ok(0) => {}
        Ok(drained) => {
            tracing::info!(entries = drained, "recorded ledger entries left from the previous run on the status branch")
        }
        // Reported by the recorder's state; the daemon runs on without writing the branch.
        Err(e) if e.is::<crate::record::WritesStopped>() => {}
        Err(e) => return Err(e.context("draining the status outbox")),
    }
    for message in &opts.not_built {
        tracing::warn!(setting = "config", "{message}");
    }
    let fleet = Arc::new(RwLock::new(Fleet {
        config_not_built: opts.not_built.clone(),
        apps: Default::default(),
        source: SourceStatus {
            // The repository's own name, not where it sits on this machine: the API may be
            // reachable from elsewhere, and the layout of the host is nobody's business there.
            repo: match &opts.remote {
                Some(remote) => display_url(&remote.url),
                None => repo_name(&opts.repo),
            },
            branch: opts.branch.clone(),
            path: opts.path.clone(),
            ..SourceStatus::default()
        },
        providers: providers.status.clone(),
        head: 0,
        placements: Default::default(),
    }));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_tx = Arc::new(shutdown_tx);
    let listener = tokio::net::TcpListener::bind(opts.listen).await.with_context(|| {
        format!("cannot listen on {} (is another process using it? try --listen 127.0.0.1:0)", opts.listen)
    })?;
    let addr = listener.local_addr()?;
    let live_engine: Arc<std::sync::OnceLock<Arc<crate::engine::Ctx>>> = Arc::default();
    let api = router(ApiState {
        fleet: fleet.clone(),
        ledger: ledger.clone(),
        metrics: metrics.clone(),
        status_branch: Some(status_branch.clone()),
        engine: live_engine.clone(),
    });
    let limits = ServeLimits {
        max_connections: guards.api_max_connections.unwrap_or_else(|| default_max_connections(open_files)),
        header_timeout: guards.api_header_timeout,
        max_lifetime: Duration::from_secs(60),
    };
    tracing::info!(
        max_connections = limits.max_connections,
        open_file_limit = open_files,
        header_timeout_ms = limits.header_timeout.as_millis() as u64,
        "status API limits"
    );
    let server = tokio::spawn(serve(listener, api, limits, shutdown_rx.clone(), guards.shutdown_timeout));

    let wake = Arc::new(Notify::new());
    let recorder = tokio::spawn(run_recorder(
        status_branch.clone(),
        ledger.clone(),
        metrics.clone(),
        wake.clone(),
        shutdown_rx.clone(),
    ));
    let watchdog = tokio::spawn(startup::watch_ledger(ledger.clone(), shutdown_rx.clone()));
    let (ref_tx, ref_rx) = mpsc::channel(16);
    let _watch = watch_ref(repo.git_dir(), &opts.branch, opts.poll_interval, ref_tx.clone())?;
    let fetch_now = Arc::new(Notify::new());
    let transport: Option<Arc<dyn GitTransport>> = opts.remote.as_ref().map(|remote| {
        Arc::new(GitCli::new(&remote.url, repo.git_dir(), remote.credentials.clone())) as Arc<dyn GitTransport>
    });
    let mut pusher = None;
    if let (Some(remote), Some(transport)) = (&opts.remote, &transport) {
        let source = RemoteSource::new(
            transport.clone(),
            repo.git_dir(),
            RemoteSettings {
                branch: opts.branch.clone(),
                allow_force_push: remote.allow_force_push,
                poll: remote.poll_interval,
            },
            fleet.clone(),
            metrics.clone(),
            ref_tx.clone(),
            fetch_now.clone(),
        );
        // The first fetch starts at once, whatever the poll interval; the engine loads what the
        // cache holds meanwhile (the last commit applied) and is woken when the fetch moves it.
        tokio::spawn(source.run(Duration::ZERO, shutdown_rx.clone()));
        let p = Pusher {
            branch: status_branch.clone(),
            transport: transport.clone(),
            ledger: ledger.clone(),
            interval: remote.push_interval,
            recorder: wake.clone(),
            git_dir: repo.git_dir().to_path_buf(),
            metrics: metrics.clone(),
        };
        pusher = Some((p.clone(), tokio::spawn(p.run(shutdown_rx.clone()))));
    }
    let mut hooks = None;
    if let (Some(w), Some(secret)) = (&opts.webhook, secret) {
        let listener = webhook::bind(w.listen).await?;
        let hook_addr = listener.local_addr()?;
        fleet.write().unwrap_or_else(|e| e.into_inner()).source.webhook =
            Some(WebhookStatus { listen: hook_addr.to_string(), ..WebhookStatus::default() });
        let trigger: Arc<dyn Fn() + Send + Sync> = if opts.remote.is_some() {
            webhook::notify_trigger(fetch_now.clone())
        } else {
            let tx = ref_tx.clone();
            Arc::new(move || {
                let _ = tx.try_send(());
            })
        };
        let state = HookState::new(secret, &opts.branch, trigger, fleet.clone(), metrics.clone());
        tracing::info!(addr = %hook_addr, "webhook listener on POST /hooks/git");
        println!("webhooks on http://{hook_addr}/hooks/git");
        hooks = Some(tokio::spawn(serve(
            listener,
            webhook::router(state),
            webhook::limits(),
            shutdown_rx.clone(),
            guards.shutdown_timeout,
        )));
    }
    drop(ref_tx);
    let engine = Engine::new(
        repo.clone(),
        ledger.clone(),
        providers,
        EngineSettings {
            reflect_interval: REFLECT_INTERVAL,
            drift_interval: opts.drift.interval,
            drift_schedule: opts.drift.schedule.clone(),
            ignore_by_kind: opts.drift.ignore_by_kind.clone(),
            prune_max_percent: opts.prune_max_percent,
            dry_run: opts.dry_run,
            shutdown_timeout: guards.shutdown_timeout,
            ..EngineSettings::new(opts.branch.clone(), opts.path.clone(), opts.progress_deadline, opts.concurrency)
        },
        fleet,
        metrics.clone(),
        wake,
        Arc::new(keelson_provider_api::SystemClock),
    );
    let _ = live_engine.set(engine.ctx());
    let signalled = shutdown_tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing the current step, draining the status outbox");
        let _ = signalled.send(true);
    });
    on_listening(addr, &data_dir, &database);
    tracing::info!(%addr, repo = %repo.root().display(), branch = opts.branch, "keelson is running");
    let result = engine.run(ref_rx, shutdown_rx).await;
    if let Err(e) = &result {
        // Without this the recorder and the API would wait for a signal that never comes.
        tracing::error!(error = format!("{e:#}"), "the engine stopped; shutting down");
        let _ = shutdown_tx.send(true);
    }
    if tokio::time::timeout(guards.shutdown_timeout, recorder).await.is_err() {
        tracing::warn!("the status recorder did not stop within the shutdown deadline");
    }
    // The engine has stopped appending: one last drain, within the shutdown deadline, so that
    // nothing appended is left off the branch unless the branch cannot be written.
    final_drain(&status_branch, &ledger, &metrics, guards.shutdown_timeout).await;
    if let Some((pusher, task)) = pusher {
        // A push under way (each git command is bounded) may finish within the deadline.
        let _ = tokio::time::timeout(guards.shutdown_timeout, task).await;
        // What the final drain committed goes to the remote too, within the shutdown deadline.
        match tokio::time::timeout(guards.shutdown_timeout, pusher.push_once(&mut None)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(
                error = format!("{e:#}"),
                "the last push of the status branch failed; it is pushed at the next start"
            ),
            Err(_) => tracing::warn!("the last push of the status branch did not finish within the shutdown deadline"),
        }
    }
    if let Some(hooks) = hooks {
        let _ = hooks.await;
    }
    let _ = watchdog.await;
    let _ = server.await;
    if tokio::time::timeout(guards.shutdown_timeout, ledger.close()).await.is_err() {
        tracing::warn!("the ledger's connections did not close within the shutdown deadline");
    }
    result
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Takes `<data dir>/lock`; fails with a clear message when another instance holds it.
fn take_instance_lock(data_dir: &Path) -> Result<File> {
    let path = data_dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another keelson is already running on {} (it holds {}); stop it first or use another --data-dir",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// With the instance lock held, a lock file on the status branch can only be one this daemon left
/// behind when it was killed mid-commit; git would refuse to move the branch until it is gone.
fn clear_stale_git_locks(repo: &GitRepo, status_branch: &str) {
    let lock = repo.git_dir().join("refs/heads").join(format!("{status_branch}.lock"));
    if lock.exists() {
        match std::fs::remove_file(&lock) {
            Ok(()) => tracing::warn!(path = %lock.display(), "removed a stale lock file left by an interrupted run"),
            Err(e) => tracing::error!(path = %lock.display(), error = %e, "cannot remove a stale git lock file"),
        }
    }
}

/// The last component of the repository's path (`state` for `/srv/keelson/state/`).
fn repo_name(path: &Path) -> String {
    let name = path.components().rev().find_map(|c| match c {
        std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
        _ => None,
    });
    name.unwrap_or_else(|| ".".into())
}
