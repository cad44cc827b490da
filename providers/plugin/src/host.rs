//! One plugin executable, supervised: started on first use, described, restarted with capped
//! backoff when it exits, stopped when it hangs or breaks the protocol, and stopped for good when
//! the host is dropped.
//!
//! A supervisor task owns the child process. Callers write a request line to the plugin's stdin
//! and wait for the answer that a reader task matches by id; the supervisor's watchdog stops a
//! process that leaves a call unanswered past its deadline, even when the caller has long given
//! up, so a hung plugin always comes back. While the plugin is down, calls fail at once with a
//! transient error instead of waiting: the engine backs off per app and the apps recover by
//! themselves once the plugin runs again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use keelson_provider_api::{ErrorClass, InstanceName};
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;

use crate::protocol::{Description, Method, PROTOCOL_VERSION, PluginError, ProviderEvent};
use crate::schema::{self, Violation};

/// First wait before restarting a plugin that exited; it doubles per failure up to the maximum.
pub const DEFAULT_RESTART_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between two restarts.
pub const DEFAULT_MAX_RESTART_BACKOFF: Duration = Duration::from_secs(30);
/// Longest line (one answer or notification) the host reads from a plugin.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;
/// A process that ran this long before it exited is restarted after the first delay again.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a plugin has to exit after its stdin is closed before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long the reader may take to drain what an exited process wrote.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// Provider events kept in memory (the newest).
const EVENTS_KEPT: usize = 256;
/// stderr lines longer than this are cut in the log.
const STDERR_LINE_MAX: usize = 8 << 10;
/// The only variables of the daemon's environment a plugin inherits (everything else, such as a
/// database URL, stays in the daemon); `env:` in config adds more.
const INHERITED_ENV: [&str; 8] = ["PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];

/// How to run one plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// The instance it serves (a key of `providers:`), given to the plugin in `describe`.
    pub instance: InstanceName,
    /// The executable and its arguments.
    pub command: Vec<String>,
    /// Environment variables set for it (on top of `PATH`, `HOME`, `LANG` and a few more).
    pub env: BTreeMap<String, String>,
    /// Its working directory (default: the daemon's).
    pub working_dir: Option<PathBuf>,
    /// A directory it may keep state in, passed as `KEELSON_DATA_DIR` (created if missing).
    pub data_dir: Option<PathBuf>,
    /// Deadline of one call.
    pub timeout: Duration,
    /// First wait before a restart.
    pub restart_backoff: Duration,
    /// Longest wait before a restart.
    pub max_restart_backoff: Duration,
    /// Longest line read from the plugin.
    pub max_answer_bytes: usize,
}

impl HostConfig {
    /// A plugin run as `command` for `instance`, with the default deadline and backoff.
    pub fn new(instance: impl Into<InstanceName>, command: Vec<String>) -> Self {
        Self {
            instance: instance.into(),
            command,
            env: BTreeMap::new(),
            working_dir: None,
            data_dir: None,
            timeout: keelson_provider_api::deadline::DEFAULT,
            restart_backoff: DEFAULT_RESTART_BACKOFF,
            max_restart_backoff: DEFAULT_MAX_RESTART_BACKOFF,
            max_answer_bytes: MAX_ANSWER_BYTES,
        }
    }

    /// The wait before restart number `failures` (1 for the first).
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.restart_backoff.saturating_mul(factor).min(self.max_restart_backoff)
    }
}

/// Why a call to a plugin failed before (or instead of) the plugin's own answer.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The plugin is not running (it exited or failed to start) and the host restarts it later.
    Down {
        /// What stopped the last process, or why the last start failed.
        reason: String,
        /// Time left until the next start.
        restart_in: Duration,
    },
    /// A (re)started plugin did not finish describing itself within one deadline.
    Starting {
        /// The deadline.
        after: Duration,
    },
    /// The host is stopped (the daemon is shutting down).
    Stopped,
    /// The process exited, or its pipe broke, before it answered.
    Exited {
        /// The call.
        method: Method,
        /// The exit status and the last line it wrote to stderr.
        detail: String,
    },
    /// No answer within the deadline; the process is stopped and restarted.
    Hung {
        /// The call.
        method: Method,
        /// The deadline.
        after: Duration,
    },
    /// The plugin wrote a line that is not a JSON-RPC message; it is stopped and restarted.
    Garbage {
        /// The line, cut short, and what is wrong with it.
        detail: String,
    },
    /// An answer longer than the limit; the process is stopped and restarted.
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// An answer that does not match the protocol's schema.
    Shape {
        /// The call answered.
        method: Method,
        /// Where and what.
        violation: Violation,
    },
    /// `describe` answered a protocol version this host does not speak.
    Version {
        /// The version the plugin speaks.
        plugin: u64,
    },
    /// The executable could not be started.
    Spawn {
        /// What the operating system said.
        detail: String,
    },
    /// The plugin answered with an error.
    Plugin(PluginError),
}

impl CallError {
    /// Whether a retry can help: crashes, hangs, restarts and garbage lines (the process is
    /// restarted) are transient; a wrong shape or a protocol mismatch is a plugin bug (terminal).
    pub fn class(&self) -> ErrorClass {
        match self {
            CallError::Down { .. }
            | CallError::Starting { .. }
            | CallError::Stopped
            | CallError::Exited { .. }
            | CallError::Hung { .. }
            | CallError::Garbage { .. } => ErrorClass::Transient,
            CallError::TooLarge { .. }
            | CallError::Shape { .. }
            | CallError::Version { .. }
            | CallError::Spawn { .. } => ErrorClass::Terminal,
            CallError::Plugin(e) => e.data.as_ref().map_or(ErrorClass::Terminal, |d| d.class),
        }
    }

    /// For people: what went wrong with `method` of plugin `label`.
    pub fn describe(&self, label: &str, method: Method) -> String {
        match self {
            CallError::Down { reason, restart_in } if restart_in.is_zero() => {
                format!("plugin {label} is not running ({reason}); {method} was not sent; the host restarts it")
            }
            CallError::Down { reason, restart_in } => format!(
                "plugin {label} is not running ({reason}); {method} was not sent; the host restarts it in {}",
                human(*restart_in)
            ),
            CallError::Starting { after } => {
                format!("plugin {label} was restarted but did not describe itself within {}", human(*after))
            }
            CallError::Stopped => format!("plugin {label} is stopped (the daemon is shutting down)"),
            CallError::Exited { method, detail } => {
                format!("plugin {label} exited during {method} ({detail}); the host restarts it")
            }
            CallError::Hung { method, after } => format!(
                "plugin {label} did not answer {method} within {}; it was stopped and the host restarts it",
                human(*after)
            ),
            CallError::Garbage { detail } => format!(
                "plugin {label}: {method}: {detail}; it was stopped and the host restarts it \
                 (stdout is for protocol messages only: write logs to stderr)"
            ),
            CallError::TooLarge { limit } => format!(
                "plugin {label}: {method}: an answer is longer than the limit of {limit} bytes; \
                 it was stopped and the host restarts it"
            ),
            CallError::Shape { method, violation } => {
                format!("plugin {label}: {method}: answer does not match the protocol: {violation}")
            }
            CallError::Version { plugin } => format!(
                "plugin {label} speaks protocol version {plugin}, this keelson speaks {PROTOCOL_VERSION}: \
                 use a plugin built for protocol {PROTOCOL_VERSION}"
            ),
            CallError::Spawn { detail } => format!("plugin {label} cannot be started: {detail}"),
            CallError::Plugin(e) => format!("plugin {label}: {method}: {}", e.message),
        }
    }
}

/// A running or restarting plugin. Dropping it stops the plugin.
pub struct PluginHost {
    shared: Arc<Shared>,
    stop: Mutex<Option<oneshot::Receiver<()>>>,
    _stop: oneshot::Sender<()>,
}

struct Shared {
    config: HostConfig,
    state: watch::Sender<State>,
    supervised: AtomicBool,
    next_id: AtomicU64,
    starts: AtomicU64,
    description: OnceLock<Description>,
    events: Mutex<VecDeque<ProviderEvent>>,
}

#[derive(Clone)]
enum State {
    /// Not started yet (started by the first call).
    Idle,
    /// A process is being started and described.
    Starting,
    /// A described process answers calls.
    Running(Arc<Process>),
    /// No process; the next start is at `next_start`.
    Down { error: CallError, next_start: Instant },
    /// Stopped for good.
    Stopped,
}

impl PluginHost {
    /// A host for the plugin `config` describes; nothing runs until [`PluginHost::start`] or the
    /// first call.
    pub fn new(config: HostConfig) -> Self {
        let (stop_tx, stop_rx) = oneshot::channel();
        let (state, _) = watch::channel(State::Idle);
        Self {
            shared: Arc::new(Shared {
                config,
                state,
                supervised: AtomicBool::new(false),
                next_id: AtomicU64::new(1),
                starts: AtomicU64::new(0),
                description: OnceLock::new(),
                events: Mutex::new(VecDeque::new()),
            }),
            stop: Mutex::new(Some(stop_rx)),
            _stop: stop_tx,
        }
    }

    /// Starts the plugin (if it is not running) and waits for its first description.
    pub async fn start(&self) -> Result<&Description, CallError> {
        self.running().await?;
        self.shared.description.get().ok_or(CallError::Stopped)
    }

    /// What the plugin said about itself in its first `describe`.
    pub fn description(&self) -> Option<&Description> {
        self.shared.description.get()
    }

    /// How it is named in messages: its own name once described, else its executable's.
    pub fn label(&self) -> String {
        self.shared.label()
    }

    /// The instance it serves.
    pub fn instance(&self) -> &InstanceName {
        &self.shared.config.instance
    }

    /// How it is run.
    pub fn config(&self) -> &HostConfig {
        &self.shared.config
    }

    /// How many processes have been started so far (restarts included).
    pub fn starts(&self) -> u64 {
        self.shared.starts.load(Ordering::Relaxed)
    }

    /// The process id of the running plugin, if one runs.
    pub fn pid(&self) -> Option<u32> {
        match &*self.shared.state.borrow() {
            State::Running(p) => p.pid,
            _ => None,
        }
    }

    /// The provider events the plugin sent (the newest [`EVENTS_KEPT`]), oldest first.
    pub fn events(&self) -> Vec<ProviderEvent> {
        self.shared.events.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// Calls `method`; the result has passed its schema.
    pub async fn call(&self, method: Method, params: Value) -> Result<Value, CallError> {
        let process = self.running().await?;
        process.request(&self.shared, method, params).await
    }

    /// The running process, starting the supervisor on first use; waits (one deadline at most)
    /// while a process is starting.
    async fn running(&self) -> Result<Arc<Process>, CallError> {
        if !self.shared.supervised.swap(true, Ordering::SeqCst) {
            let stop = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(stop) = stop {
                self.shared.state.send_replace(State::Starting);
                tokio::spawn(supervise(self.shared.clone(), stop));
            }
        }
        let mut states = self.shared.state.subscribe();
        let after = self.shared.config.timeout;
        // Starting includes describe, which has its own deadline: one more is the bound.
        let settled = tokio::time::timeout(
            after.saturating_mul(2),
            states.wait_for(|s| !matches!(s, State::Idle | State::Starting)),
        )
        .await;
        let state = match settled {
            Err(_) => return Err(CallError::Starting { after }),
            Ok(Err(_)) => return Err(CallError::Stopped),
            Ok(Ok(state)) => state.clone(),
        };
        match state {
            State::Running(p) => Ok(p),
            State::Down { error, next_start } => Err(match error {
                // The first start of all: the caller (build, the conformance suite) wants the cause.
                e if self.shared.description.get().is_none() => e,
                e => CallError::Down {
                    reason: match e {
                        CallError::Down { reason, .. } => reason,
                        other => other.describe(&self.shared.label(), Method::Describe),
                    },
                    restart_in: next_start.saturating_duration_since(Instant::now()),
                },
            }),
            State::Stopped | State::Idle | State::Starting => Err(CallError::Stopped),
        }
    }
}

impl Shared {
    fn label(&self) -> String {
        if let Some(d) = self.description.get() {
            return d.name.clone();
        }
        let program = self.config.command.first().map(String::as_str).unwrap_or("(no command)");
        program.rsplit('/').next().unwrap_or(program).to_owned()
    }

    fn record(&self, event: ProviderEvent) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(event);
    }
}

/// One started process: its stdin, the calls waiting for answers, and its stderr's last lines.
struct Process {
    pid: Option<u32>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    calls: Mutex<Calls>,
    /// Wakes the supervisor: a new deadline to watch, or a request to stop the process.
    wake: Notify,
    stderr_tail: Mutex<VecDeque<String>>,
}

#[derive(Default)]
struct Calls {
    waiting: HashMap<u64, Waiting>,
    /// Why the process stopped taking calls; set once, before the waiting calls are failed.
    closed: Option<String>,
    /// Why the host wants the process stopped.
    kill: Option<String>,
}

struct Waiting {
    method: Method,
    deadline: Instant,
    answer: Option<oneshot::Sender<Result<Value, CallError>>>,
}

impl Process {
    async fn request(&self, shared: &Shared, method: Method, params: Value) -> Result<Value, CallError> {
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method.as_str(), "params": params});
        // The schemas are the protocol's documentation: every request a test build sends must match them.
        debug_assert_eq!(schema::check("request.json", &request, ""), Ok(()), "{method} request");
        debug_assert_eq!(
            schema::check(method.params_schema(), &request["params"], "/params"),
            Ok(()),
            "{method} params"
        );
        let mut line = serde_json::to_vec(&request)
            .map_err(|e| CallError::Exited { method, detail: format!("cannot encode the request: {e}") })?;
        line.push(b'\n');
        let after = shared.config.timeout;
        let deadline = Instant::now() + after;
        let (tx, rx) = oneshot::channel();
        {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(reason) = &calls.closed {
                return Err(CallError::Down { reason: reason.clone(), restart_in: Duration::ZERO });
            }
            calls.waiting.insert(id, Waiting { method, deadline, answer: Some(tx) });
        }
        self.wake.notify_one();
        let write = async {
            let mut stdin = self.stdin.lock().await;
            let stdin = stdin.as_mut().ok_or_else(|| std::io::Error::other("its stdin is closed"))?;
            stdin.write_all(&line).await?;
            stdin.flush().await
        };
        match tokio::time::timeout_at(deadline, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.calls.lock().unwrap_or_else(|e| e.into_inner()).waiting.remove(&id);
                return Err(CallError::Exited { method, detail: format!("the request could not be sent: {e}") });
            }
            // A plugin that does not read its stdin: the watchdog stops it.
            Err(_) => return Err(CallError::Hung { method, after }),
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(CallError::Exited { method, detail: "it stopped before answering".into() }),
            Err(_) => Err(CallError::Hung { method, after }),
        }
    }

    /// Asks the supervisor to stop the process, failing every waiting call with `error`.
    fn stop_with(&self, reason: String, error: &CallError) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        for (_, mut w) in calls.waiting.drain() {
            if let Some(tx) = w.answer.take() {
                let _ = tx.send(Err(error.clone()));
            }
        }
        calls.kill.get_or_insert(reason);
        drop(calls);
        self.wake.notify_one();
    }

    /// Stops taking calls and fails those still waiting.
    fn close(&self, reason: &str) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.closed.get_or_insert_with(|| reason.to_owned());
        for (_, mut w) in calls.waiting.drain() {
            if let Some(tx) = w.answer.take() {
                let _ = tx.send(Err(CallError::Exited { method: w.method, detail: reason.to_owned() }));
            }
        }
    }

    /// The earliest deadline of a waiting call.
    fn next_deadline(&self) -> Option<Instant> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).waiting.values().map(|w| w.deadline).min()
    }

    /// A call past its deadline (the caller may be gone): the process is hung.
    fn overdue(&self, now: Instant) -> Option<Method> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.waiting.values().filter(|w| w.deadline <= now).map(|w| w.method).next()
    }

    fn kill_requested(&self) -> Option<String> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).kill.clone()
    }

    fn answer(&self, id: u64) -> Option<Waiting> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).waiting.remove(&id)
    }

    fn last_stderr(&self) -> Option<String> {
        self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner()).back().cloned()
    }
}

/// What ended a running process.
enum Exit {
    /// It exited by itself.
    Exited(std::io::Result<ExitStatus>),
    /// The host stopped it.
    Killed(String),
    /// The host was dropped.
    Stopped,
}

async fn supervise(shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let instance = shared.config.instance.clone();
    let mut failures = 0u32;
    loop {
        shared.state.send_replace(State::Starting);
        let started = tokio::select! {
            started = start(&shared) => started,
            _ = &mut stop => break,
        };
        let (error, exited) = match started {
            Ok(mut running) => {
                let began = Instant::now();
                shared.state.send_replace(State::Running(running.process.clone()));
                let exit = running.watch(&mut stop).await;
                let reason = match &exit {
                    Exit::Stopped => {
                        running.process.close("the host is stopped");
                        break;
                    }
                    Exit::Exited(Ok(status)) => format!("it exited: {status}"),
                    Exit::Exited(Err(e)) => format!("waiting for it failed: {e}"),
                    Exit::Killed(reason) => format!("stopped by the host: {reason}"),
                };
                // What it wrote before it exited still counts (an answer, then `exit`).
                let _ = tokio::time::timeout(DRAIN_GRACE, &mut running.reader).await;
                running.reader.abort();
                let detail = match running.process.last_stderr() {
                    Some(line) => format!("{reason}; its last stderr line: {line}"),
                    None => reason.clone(),
                };
                if began.elapsed() >= STABLE_AFTER {
                    failures = 0;
                }
                (CallError::Down { reason: detail, restart_in: Duration::ZERO }, Some(running.process))
            }
            Err(e) => (e, None),
        };
        failures = failures.saturating_add(1);
        let delay = shared.config.backoff(failures);
        let reason = match &error {
            CallError::Down { reason, .. } => reason.clone(),
            other => other.describe(&shared.label(), Method::Describe),
        };
        // Down first, then the calls still waiting fail: a call made from now on is told the
        // plugin is down (and was not sent), not that it crashed during that call.
        shared.state.send_replace(State::Down { error, next_start: Instant::now() + delay });
        if let Some(process) = exited {
            process.close(&reason);
        }
        let label = shared.label();
        tracing::warn!(plugin = %instance, restart_in_ms = delay.as_millis() as u64, failures, "plugin {label} is down: {reason}");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut stop => break,
        }
    }
    shared.state.send_replace(State::Stopped);
}

/// A started, described process and the tasks reading its output.
struct Running {
    child: Child,
    process: Arc<Process>,
    reader: tokio::task::JoinHandle<()>,
    timeout: Duration,
}

impl Running {
    async fn watch(&mut self, stop: &mut oneshot::Receiver<()>) -> Exit {
        loop {
            if let Some(reason) = self.process.kill_requested() {
                return self.kill(reason).await;
            }
            let next = self.process.next_deadline().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                status = self.child.wait() => return Exit::Exited(status),
                _ = self.process.wake.notified() => {}
                _ = tokio::time::sleep_until(next) => {
                    if let Some(method) = self.process.overdue(Instant::now()) {
                        let after = self.timeout;
                        let error = CallError::Hung { method, after };
                        let reason = format!("it did not answer {method} within {}", human(after));
                        self.process.stop_with(reason, &error);
                    }
                }
                _ = &mut *stop => {
                    // Closing stdin asks a well-behaved plugin to exit.
                    self.process.stdin.lock().await.take();
                    if tokio::time::timeout(STOP_GRACE, self.child.wait()).await.is_err() {
                        let _ = self.child.kill().await;
                    }
                    return Exit::Stopped;
                }
            }
        }
    }

    async fn kill(&mut self, reason: String) -> Exit {
        let _ = self.child.kill().await;
        Exit::Killed(reason)
    }
}

/// Spawns the plugin, starts reading its stdout and stderr, and asks it to describe itself.
async fn start(shared: &Arc<Shared>) -> Result<Running, CallError> {
    let config = &shared.config;
    let instance = &config.instance;
    let (program, args) =
        config.command.split_first().ok_or_else(|| CallError::Spawn { detail: "the command is empty".into() })?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .env_clear();
    for name in INHERITED_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.envs(&config.env);
    command.env("KEELSON_PLUGIN_INSTANCE", instance.as_str());
    command.env("KEELSON_PLUGIN_PROTOCOL", PROTOCOL_VERSION.to_string());
    if let Some(dir) = &config.data_dir {
        std::fs::create_dir_all(dir).map_err(|e| CallError::Spawn {
            detail: format!("cannot create its data directory {}: {e}", dir.display()),
        })?;
        command.env("KEELSON_DATA_DIR", dir);
    }
    if let Some(dir) = &config.working_dir {
        command.current_dir(dir);
    }
    let mut child = command.spawn().map_err(|e| CallError::Spawn { detail: format!("{program}: {e}") })?;
    shared.starts.fetch_add(1, Ordering::Relaxed);
    let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(CallError::Spawn { detail: "its standard streams could not be opened".into() });
    };
    let process = Arc::new(Process {
        pid: child.id(),
        stdin: tokio::sync::Mutex::new(Some(stdin)),
        calls: Mutex::new(Calls::default()),
        wake: Notify::new(),
        stderr_tail: Mutex::new(VecDeque::new()),
    });
    let mut reader = tokio::spawn(read_stdout(shared.clone(), process.clone(), stdout));
    tokio::spawn(read_stderr(instance.clone(), process.clone(), stderr));

    let params = json!({"protocolVersion": PROTOCOL_VERSION, "instance": instance.as_str()});
    let answer = {
        let request = process.request(shared, Method::Describe, params);
        tokio::pin!(request);
        let answer = tokio::select! {
            biased;
            answer = &mut request => answer,
            status = child.wait() => {
                let _ = tokio::time::timeout(DRAIN_GRACE, &mut reader).await;
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                let detail = match process.last_stderr() {
                    Some(line) => format!("it exited: {status}; its last stderr line: {line}"),
                    None => format!("it exited: {status}"),
                };
                process.close(&detail);
                // Whatever it answered, the process is gone.
                let _ = (&mut request).await;
                Err(CallError::Exited { method: Method::Describe, detail })
            }
        };
        answer
    };
    let description = answer.and_then(|value| {
        serde_json::from_value::<Description>(value).map_err(|e| CallError::Shape {
            method: Method::Describe,
            violation: Violation { schema: "describe.result.json", pointer: "/result".into(), message: e.to_string() },
        })
    });
    let description = match description {
        Ok(d) => d,
        Err(e) => {
            let _ = child.kill().await;
            reader.abort();
            return Err(e);
        }
    };
    match shared.description.get() {
        None => {
            let _ = shared.description.set(description.clone());
        }
        Some(first) if *first != description => tracing::warn!(
            plugin = %instance,
            "plugin {} describes itself differently since its restart ({} {}); keelson keeps the first description until the daemon restarts",
            first.name, description.name, description.version
        ),
        Some(_) => {}
    }
    tracing::info!(
        plugin = %instance, pid = process.pid, program = %program,
        "plugin {} {} started (protocol {PROTOCOL_VERSION})", description.name, description.version
    );
    Ok(Running { child, process, reader, timeout: config.timeout })
}

/// What one bounded read of a line gave.
enum Line {
    /// A line (without its newline) is in the buffer; at the end of the stream, the last one.
    Complete,
    /// The line is longer than the limit; the buffer holds its first part.
    TooLong,
    /// The stream ended.
    Eof,
}

/// Reads one `\n`-terminated line into `buf`, keeping at most about `max` bytes of it.
async fn read_line(reader: &mut (impl AsyncBufRead + Unpin), buf: &mut Vec<u8>, max: usize) -> std::io::Result<Line> {
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() { Line::Eof } else { Line::Complete });
        }
        match available.iter().position(|b| *b == b'\n') {
            Some(i) => {
                buf.extend_from_slice(&available[..i]);
                reader.consume(i + 1);
                return Ok(if buf.len() > max { Line::TooLong } else { Line::Complete });
            }
            None => {
                let n = available.len();
                buf.extend_from_slice(available);
                reader.consume(n);
                if buf.len() > max {
                    return Ok(Line::TooLong);
                }
            }
        }
    }
}

/// Reads answers and notifications until the stream ends or breaks the protocol.
async fn read_stdout(shared: Arc<Shared>, process: Arc<Process>, stdout: tokio::process::ChildStdout) {
    let max = shared.config.max_answer_bytes;
    let mut reader = BufReader::with_capacity(64 << 10, stdout);
    let mut line = Vec::new();
    loop {
        match read_line(&mut reader, &mut line, max).await {
            Ok(Line::Eof) => return,
            Ok(Line::TooLong) => {
                let reason = format!("it wrote a line longer than the limit of {max} bytes");
                process.stop_with(reason, &CallError::TooLarge { limit: max });
                return;
            }
            Ok(Line::Complete) => {
                if !handle_line(&shared, &process, &line) {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(plugin = %shared.config.instance, "reading the plugin's stdout failed: {e}");
                return;
            }
        }
    }
}

/// Handles one line of stdout; false when the process was stopped for it.
fn handle_line(shared: &Arc<Shared>, process: &Arc<Process>, line: &[u8]) -> bool {
    let text = line.strip_suffix(b"\r").unwrap_or(line);
    if text.iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    let garbage = |detail: String| {
        process.stop_with(detail.clone(), &CallError::Garbage { detail });
        false
    };
    let value: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => return garbage(format!("it wrote a line that is not JSON ({e}): {}", excerpt(text))),
    };
    match (value.get("id"), value.get("method")) {
        (Some(_), None) => answer(shared, process, value),
        (None, Some(_)) => {
            notification(shared, value);
            true
        }
        (Some(id), Some(method)) => {
            // The host serves no requests; say so, as JSON-RPC asks, and carry on.
            tracing::warn!(plugin = %shared.config.instance, %method, "the plugin sent a request; the host answers none");
            let reply = json!({"jsonrpc": "2.0", "id": id, "error": {"code": crate::protocol::METHOD_NOT_FOUND,
                "message": "the keelson plugin host accepts notifications only"}});
            let process = process.clone();
            tokio::spawn(async move {
                let mut line = reply.to_string().into_bytes();
                line.push(b'\n');
                if let Some(stdin) = process.stdin.lock().await.as_mut() {
                    let _ = stdin.write_all(&line).await;
                    let _ = stdin.flush().await;
                }
            });
            true
        }
        (None, None) => garbage(format!("it wrote JSON that is not a JSON-RPC message: {}", excerpt(text))),
    }
}

/// Hands an answer to the call waiting for it, after checking its shape.
fn answer(shared: &Arc<Shared>, process: &Arc<Process>, value: Value) -> bool {
    let instance = &shared.config.instance;
    let Some(id) = value.get("id").and_then(Value::as_u64) else {
        // An id the host never sent: no call can be told, so every waiting call is.
        let violation = schema::check("response.json", &value, "").err().unwrap_or_else(|| Violation {
            schema: "response.json",
            pointer: "/id".into(),
            message: "not an id the host sent".into(),
        });
        let detail = format!("it answered with an id the host never sent: {violation}");
        let mut calls = process.calls.lock().unwrap_or_else(|e| e.into_inner());
        for (_, mut w) in calls.waiting.drain() {
            if let Some(tx) = w.answer.take() {
                let _ = tx.send(Err(CallError::Shape { method: w.method, violation: violation.clone() }));
            }
        }
        calls.kill.get_or_insert(detail);
        drop(calls);
        process.wake.notify_one();
        return false;
    };
    let Some(waiting) = process.answer(id) else {
        tracing::warn!(plugin = %instance, id, "the plugin answered a call that is not waiting (after its deadline?); ignored");
        return true;
    };
    let method = waiting.method;
    let shape = |violation: Violation| CallError::Shape { method, violation };
    let outcome = (|| {
        schema::check("response.json", &value, "").map_err(shape)?;
        if let Some(error) = value.get("error") {
            let error = serde_json::from_value(error.clone()).map_err(|e| {
                shape(Violation { schema: "response.json", pointer: "/error".into(), message: e.to_string() })
            })?;
            return Err(CallError::Plugin(error));
        }
        let result = value.get("result").cloned().unwrap_or_default();
        if method == Method::Describe
            && let Some(version) = result.get("protocolVersion").and_then(Value::as_u64)
            && version != u64::from(PROTOCOL_VERSION)
        {
            return Err(CallError::Version { plugin: version });
        }
        schema::check(method.result_schema(), &result, "/result").map_err(shape)?;
        Ok(result)
    })();
    if let Err(e @ CallError::Shape { .. }) = &outcome {
        tracing::warn!(plugin = %instance, "{}", e.describe(&shared.label(), method));
    }
    if let Some(tx) = waiting.answer {
        let _ = tx.send(outcome);
    }
    true
}

/// Records a provider-initiated event.
fn notification(shared: &Arc<Shared>, value: Value) {
    let instance = &shared.config.instance;
    if let Err(v) = schema::check("notification.json", &value, "") {
        tracing::warn!(plugin = %instance, "the plugin sent a malformed notification, ignored: {v}");
        return;
    }
    let method = value.get("method").and_then(Value::as_str).unwrap_or_default().to_owned();
    let params = value.get("params").cloned().unwrap_or_else(|| json!({}));
    if method == "event" {
        if let Err(v) = schema::check("event.json", &params, "/params") {
            tracing::warn!(plugin = %instance, "the plugin sent a malformed event, ignored: {v}");
            return;
        }
        let event_type = params.get("type").and_then(Value::as_str).unwrap_or_default();
        let message = params.get("message").and_then(Value::as_str).unwrap_or_default();
        let resource = params.get("resource").map(Value::to_string).unwrap_or_default();
        tracing::warn!(plugin = %instance, event = event_type, resource, "provider event: {message}");
    } else {
        tracing::warn!(plugin = %instance, %method, "the plugin sent a notification this keelson does not know; recorded only");
    }
    shared.record(ProviderEvent { instance: instance.clone(), method, params });
}

/// Forwards the plugin's stderr to the daemon's log under its instance name.
async fn read_stderr(instance: InstanceName, process: Arc<Process>, stderr: tokio::process::ChildStderr) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        let cut = match read_line(&mut reader, &mut line, STDERR_LINE_MAX).await {
            Ok(Line::Eof) | Err(_) => return,
            Ok(Line::TooLong) => true,
            Ok(Line::Complete) => false,
        };
        let text = String::from_utf8_lossy(&line[..line.len().min(STDERR_LINE_MAX)]);
        let text = text.trim_end();
        if text.is_empty() {
            continue;
        }
        let text = if cut { format!("{text}…") } else { text.to_owned() };
        tracing::info!(target: "keelson::plugin", plugin = %instance, "{text}");
        let mut tail = process.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() == 3 {
            tail.pop_front();
        }
        tail.push_back(excerpt(text.as_bytes()));
    }
}

/// The start of a line, quoted, for messages.
fn excerpt(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let short: String = text.chars().take(120).collect();
    if short.len() < text.len() { format!("{:?}…", short) } else { format!("{short:?}") }
}

/// `250ms`, `5s`, `1.5s`, `2m`: durations in messages.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) && ms < 120_000 {
        format!("{}s", ms / 1000)
    } else if ms < 120_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_doubling_to_the_cap() {
        let config = HostConfig::new("dns", vec!["x".into()]);
        let delays: Vec<u128> = (1..=9).map(|n| config.backoff(n).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    }

    #[tokio::test]
    async fn lines_are_read_whole_and_bounded() {
        let input: &[u8] = b"{\"a\":1}\r\n\nxxxxxxxxxxxxxxxxxxxx\nlast";
        let mut reader = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        assert!(matches!(read_line(&mut reader, &mut buf, 10).await.unwrap(), Line::Complete));
        assert_eq!(buf, b"{\"a\":1}\r");
        assert!(matches!(read_line(&mut reader, &mut buf, 10).await.unwrap(), Line::Complete));
        assert!(buf.is_empty());
        assert!(matches!(read_line(&mut reader, &mut buf, 10).await.unwrap(), Line::TooLong));
        assert!(buf.len() <= 10 + 4, "kept {} bytes", buf.len());
    }

    #[test]
    fn classes_follow_what_a_retry_can_fix() {
        let shape = CallError::Shape {
            method: Method::Apply,
            violation: Violation {
                schema: "apply.result.json",
                pointer: "/result/outcome".into(),
                message: "m".into(),
            },
        };
        assert_eq!(shape.class(), ErrorClass::Terminal);
        assert_eq!(CallError::Version { plugin: 2 }.class(), ErrorClass::Terminal);
        for transient in [
            CallError::Hung { method: Method::Apply, after: Duration::from_secs(5) },
            CallError::Exited { method: Method::Apply, detail: "signal 9".into() },
            CallError::Garbage { detail: "hello".into() },
            CallError::Down { reason: "exited".into(), restart_in: Duration::from_secs(1) },
        ] {
            assert_eq!(transient.class(), ErrorClass::Transient, "{transient:?}");
        }
        assert_eq!(
            shape.describe("dns-records", Method::Apply),
            "plugin dns-records: apply: answer does not match the protocol: /result/outcome: m (schema apply.result.json)"
        );
    }
}
