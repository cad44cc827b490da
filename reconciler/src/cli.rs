//! The `keelson` command line: verbs in the style of kubectl / flux, human output by default,
//! `--format json` for machines, exit codes 0 ok, 1 findings or failure, 2 usage.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

mod fleet;

use self::fleet::{FailOn, ObjectFormat, ServerArgs, WaitFor};
use crate::daemon::{self, DaemonOptions};
use crate::ledger::{AuditQuery, Ledger};
use crate::record::StatusBranch;
use crate::source::GitRepo;

/// Keelson: a GitOps reconciler with a tamper-evident audit ledger.
#[derive(Debug, Parser)]
#[command(name = "keelson", version, propagate_version = true, arg_required_else_help = true)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter in RUST_LOG syntax (e.g. `info`, `keelson=debug`); RUST_LOG is used when absent.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Output of reporting verbs.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Output of `plan`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PlanFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Debug, Subcommand)]
// Parsed once per process; boxing the daemon's flags would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Try Keelson: make (or reuse) a demo state repository and run the daemon on it with the simulator.
    Up(UpArgs),
    /// Run the reconciler daemon on a state repository.
    Daemon(DaemonArgs),
    /// Create a state repository from the bundled template (a git repository on `main`, one commit).
    Init {
        /// Directory to create (must be absent or empty).
        dir: PathBuf,
    },
    /// Check manifests: a whole repository (default `.`) or one file; prints `PATH:LINE:COL: error: message`.
    Validate {
        /// A state repository directory or a single YAML file [default: `.`, unless only --config is given].
        path: Option<PathBuf>,
        /// Also check a daemon configuration file (`kind: Config`): its provider settings, and that every
        /// app's cluster has the roles (workloads, mesh, metrics) its strategy needs.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show what moving the tracked branch from BASE to HEAD would change, app by app.
    Plan(PlanArgs),
    /// Show the fleet as the daemon sees it; exit 1 when an app is in a state --fail-on names.
    Status {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
        format: Format,
        /// App states that make the command exit 1 (comma-separated; `none` never fails).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "failed")]
        fail_on: Vec<FailOn>,
    },
    /// Show apps of a running daemon (`get apps`, `get app NAME`), like `kubectl get`.
    #[command(subcommand)]
    Get(GetCommand),
    /// An app's transitions from the audit ledger of a running daemon, oldest first.
    History {
        /// The app.
        app: String,
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, short = 'o', value_enum, default_value_t = ObjectFormat::Table)]
        format: ObjectFormat,
    },
    /// What is live against what git wants (the managed fields the daemon last observed); exit 1
    /// when anything has drifted.
    Diff {
        /// One app [default: every app].
        app: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Wait until an app is healthy or synced (for CI pipelines, like `argocd app wait`): exit 0
    /// when it is, 1 when it fails, is blocked by anything but a freeze, or the timeout passes.
    Wait {
        /// The app.
        app: String,
        /// What to wait for.
        #[arg(long = "for", value_enum, default_value_t = WaitFor::Healthy)]
        condition: WaitFor,
        /// Longest wait (`90s`, `5m`).
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
        /// Time between two looks.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a shell completion script (`source <(keelson completion bash)`).
    Completion {
        /// The shell.
        shell: CompletionShell,
    },
    /// Print the version of this keelson.
    Version {
        #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Inspect and verify the audit ledger.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Work with provider types and instances.
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Print the JSON Schema of a kind (App, Policy, Config), for editors and CI; without KIND, list them.
    Schema {
        /// `App`, `Policy` or `Config` (case-insensitive).
        kind: Option<String>,
    },
}

/// Shells `keelson completion` writes scripts for.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// Every app: a table (or `-o json|yaml`); `--watch` prints again on every change.
    Apps {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, short = 'o', value_enum, default_value_t = ObjectFormat::Table)]
        format: ObjectFormat,
        /// Keep looking and print the list again whenever it changes, until --watch-timeout.
        #[arg(long, short = 'w')]
        watch: bool,
        /// Time between two looks while watching.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        interval: Duration,
        /// How long --watch runs before it exits 0.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        watch_timeout: Duration,
    },
    /// One app in full: phase, reason, commits, digests, resources, last transition.
    App {
        /// The app.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, short = 'o', value_enum, default_value_t = ObjectFormat::Table)]
        format: ObjectFormat,
    },
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Demo state repository (created from the template when absent or empty).
    #[arg(long, default_value = "keelson-demo")]
    pub dir: PathBuf,
    /// Address of the status API (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:7420")]
    pub listen: SocketAddr,
    /// Run the workloads of every cluster the repository names on this Kubernetes cluster
    /// (provider instance `kubernetes`) instead of the simulator.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub tuning: Tuning,
}

/// Knobs shared by `up` and `daemon`.
#[derive(Debug, Args)]
pub struct Tuning {
    /// How long a simulated workload takes to become healthy after a change (`1500ms`, `2s`).
    #[arg(long, default_value = "1500ms", value_parser = parse_duration)]
    pub sim_rollout_time: Duration,
    /// Fallback poll of the tracked branch, for filesystems without change events.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// A rollout not healthy after this long fails.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub progress_deadline: Duration,
    /// Apps reconciled at once (each app by one worker at a time); `concurrency:` in config.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: Option<u32>,
    /// Every app is observed again for drift this long (plus up to a tenth) after it was last
    /// looked at [default: `drift.interval` in config, else 5m].
    #[arg(long, value_parser = parse_duration)]
    pub drift_interval: Option<Duration>,
    /// Make the simulator change a field by itself, once, as a hand edit would:
    /// NAME:POINTER=VALUE[@AFTER], e.g. `storefront:/spec/replicas=5@10s` (repeatable).
    #[arg(long, value_parser = parse_sim_drift)]
    pub sim_drift: Vec<keelson_provider_sim::DriftFault>,
    #[command(flatten)]
    pub safeguards: crate::daemon::safeguards::Safeguards,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Daemon configuration file (`kind: Config`, see docs/manifest-reference.md); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// State repository: a local path (work tree or bare) or a URL (`file://`, `https://`,
    /// `ssh://`, `git@host:path`), fetched into `<data dir>/source.git`.
    #[arg(long, required_unless_present = "config")]
    pub repo: Option<String>,
    /// Tracked branch [default: main].
    #[arg(long)]
    pub branch: Option<String>,
    /// Sub-folder of the repository holding the state (e.g. `clusters/prod`).
    #[arg(long)]
    pub path: Option<String>,
    /// Audit ledger: a SQLite path or URL (`sqlite://…`, `postgres://…`); default `<data dir>/keelson.db`.
    // The value may hold a password: `--help` names the variable but never shows its value.
    #[arg(long, env = "KEELSON_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// Lock, default ledger and simulator state; default `<repo>/.keelson`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address of the status API [default: 127.0.0.1:7420].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Branch the daemon records transitions on [default: keelson/status].
    #[arg(long)]
    pub status_branch: Option<String>,
    /// Record what would be done as `Planned` transitions marked as dry runs; never call a
    /// provider's apply or delete (to run beside another tool during a migration).
    #[arg(long)]
    pub dry_run: bool,
    /// Least time between two pushes of the status branch to a remote source [default: 2s].
    #[arg(long, value_parser = parse_duration)]
    pub push_interval: Option<Duration>,
    /// Listen for push webhooks (`POST /hooks/git`) on this address, apart from the status API.
    #[arg(long, requires = "webhook_secret_file")]
    pub webhook_listen: Option<SocketAddr>,
    /// File holding the webhook secret (a trailing newline is trimmed).
    #[arg(long)]
    pub webhook_secret_file: Option<PathBuf>,
    /// HTTP basic user name for a remote (with --password-file).
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the HTTP password or access token of a remote.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// File holding a bearer token for a remote.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// ssh private key for a remote.
    #[arg(long)]
    pub ssh_key_file: Option<PathBuf>,
    /// ssh known_hosts file the remote's host key is checked against.
    #[arg(long)]
    pub known_hosts_file: Option<PathBuf>,
    #[command(flatten)]
    pub tuning: Tuning,
}

fn parse_sim_drift(text: &str) -> Result<keelson_provider_sim::DriftFault, String> {
    keelson_provider_sim::DriftFault::parse(text)
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// State repository.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Revision the change starts from (what is deployed).
    #[arg(long, default_value = "main")]
    pub base: String,
    /// Revision with the change (e.g. the pull-request branch).
    #[arg(long, default_value = "HEAD")]
    pub head: String,
    /// Sub-folder of the repository holding the state.
    #[arg(long, default_value = "")]
    pub path: String,
    /// Daemon config whose providers render the objects [default: the built-in `sim` for every cluster].
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, short = 'o', value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
}

#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Run the conformance suite against a provider instance; prints a pass/fail table, exit 1 on any failure.
    Test {
        /// Daemon config declaring the instance; without it, the built-in `sim` in a temporary directory.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Test a plugin executable (docs/provider-protocol.md) instead of a configured instance.
        #[arg(long, value_name = "PATH", conflicts_with_all = ["config", "instance"])]
        plugin: Option<PathBuf>,
        /// The instance (a key of `providers:`) [default: the only one, or `sim`].
        #[arg(long)]
        instance: Option<String>,
        /// Where instances keep state [default: a temporary directory, removed afterwards].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// List the provider types of this build, with their capabilities.
    Types {
        #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain, cross-check the status branch's `Keelson-Audit` trailers and (with
    /// `--repo` and a database) check every status commit's `status/<app>.yaml` against the ledger.
    Verify {
        #[command(flatten)]
        db: LedgerArgs,
        /// Verify an export (`keelson audit export`) instead of a database.
        #[arg(long, conflicts_with = "database")]
        file: Option<PathBuf>,
        #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// List ledger entries.
    Log {
        #[command(flatten)]
        db: LedgerArgs,
        /// Only this app.
        #[arg(long)]
        app: Option<String>,
        /// Entries after this seq, or at/after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Write every entry as JSON lines to FILE (`-` for stdout), for offline verification.
    Export {
        #[command(flatten)]
        db: LedgerArgs,
        file: PathBuf,
    },
}

/// Where the ledger (and the status branch to cross-check) are.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// Ledger database path or URL; default `<repo>/.keelson/keelson.db`.
    #[arg(long, env = "KEELSON_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// State repository whose status branch holds the audit trailers [default: `.` when
    /// --database is not given, as `plan` and `validate` do].
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// Status branch name.
    #[arg(long, default_value = "keelson/status")]
    pub status_branch: String,
}

impl LedgerArgs {
    /// The repository: as given, or the current directory when neither it nor a database is.
    fn repo(&self) -> Option<PathBuf> {
        match (&self.database, &self.repo) {
            (_, Some(repo)) => Some(repo.clone()),
            (None, None) => Some(PathBuf::from(".")),
            (Some(_), None) => None,
        }
    }

    fn database(&self) -> Result<String> {
        match (&self.database, self.repo()) {
            (Some(db), _) => Ok(db.clone()),
            (None, Some(repo)) => Ok(repo.join(".keelson/keelson.db").display().to_string()),
            (None, None) => {
                bail!("say which ledger: --database PATH|URL or --repo PATH (uses PATH/.keelson/keelson.db)")
            }
        }
    }

    async fn open(&self) -> Result<Ledger> {
        let db = self.database()?;
        if !db.contains("://") && !Path::new(&db).exists() {
            bail!(
                "no ledger at {}; pass --database or --repo of a repository the daemon has run on",
                crate::ledger::redact(&db)
            );
        }
        Ledger::open(&db).await.context("opening the audit ledger")
    }

    fn anchors(&self) -> Result<Vec<crate::ledger::Anchor>> {
        match (&self.repo, self.repo()) {
            (Some(repo), _) => StatusBranch::new(GitRepo::open(repo)?, &self.status_branch).anchors(),
            // The current directory stands in for --repo only when it is a repository.
            (None, Some(cwd)) => match GitRepo::open(&cwd) {
                Ok(repo) => StatusBranch::new(repo, &self.status_branch).anchors(),
                Err(_) => Ok(Vec::new()),
            },
            (None, None) => Ok(Vec::new()),
        }
    }
}

/// Parses `250ms`, `2s`, `5m`, `1h30m` the same way manifests do.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    keelson_manifest::units::parse_duration(s.trim())
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.log_level.as_deref());
    // An error that stops a command is exit 2 (1 is for findings). The daemon keeps exit 1 for
    // every failure, as its service managers and DESIGN.md expect.
    let error_code = match cli.command {
        Command::Up(_) | Command::Daemon(_) => ExitCode::FAILURE,
        _ => ExitCode::from(2),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return error_code;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            error_code
        }
    }
}

fn init_logging(format: LogFormat, filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::try_new(f).unwrap_or_else(|e| {
            eprintln!("warning: bad --log-level {f:?} ({e}); using info");
            EnvFilter::new("info")
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // A log line that cannot be written (a full disk under a redirected stderr) is dropped: the
    // default reports it with eprintln!, which panics when stderr cannot be written either, and
    // took the daemon down with the disk.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Up(args) => up(args).await,
        Command::Daemon(args) => daemon_verb(args).await,
        Command::Init { dir } => {
            crate::init::init_repo(&dir)?;
            println!("Created a state repository in {} (branch main, one commit).", dir.display());
            println!("Next: keelson daemon --repo {}   (or keelson up --dir {})", dir.display(), dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { path, config, format } => {
            crate::validate::run(path.as_deref(), config.as_deref(), format).await
        }
        Command::Plan(args) => plan(args).await,
        Command::Provider(cmd) => provider(cmd).await,
        Command::Status { server, format, fail_on } => fleet::status(&server, format, &fail_on),
        Command::Get(GetCommand::Apps { server, format, watch, interval, watch_timeout }) => {
            fleet::get_apps(&server, format, watch.then_some((interval, watch_timeout)))
        }
        Command::Get(GetCommand::App { name, server, format }) => fleet::get_app(&server, &name, format),
        Command::History { app, server, format } => fleet::history(&server, &app, format),
        Command::Diff { app, server, format } => fleet::diff(&server, app.as_deref(), format),
        Command::Wait { app, condition, timeout, interval, server } => {
            fleet::wait(&server, &app, condition, timeout, interval)
        }
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut Cli::command(), "keelson", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Version { format } => {
            let version = env!("CARGO_PKG_VERSION");
            match format {
                Format::Text => println!("keelson {version}"),
                Format::Json => println!("{}", serde_json::json!({"version": version})),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(cmd) => audit(cmd).await,
        Command::Schema { kind } => schema(kind.as_deref()),
    }
}

async fn up(args: UpArgs) -> Result<ExitCode> {
    let created = crate::init::prepare_demo(&args.dir)?;
    let dir = args.dir.clone();
    let (providers, clusters) = match &args.kubeconfig {
        None => Default::default(),
        Some(kubeconfig) => crate::init::bind_to_kubernetes(&dir, kubeconfig)?,
    };
    let on_kubernetes = args.kubeconfig.clone();
    let opts = DaemonOptions {
        repo: dir.clone(),
        branch: "main".into(),
        path: String::new(),
        database: None,
        data_dir: Some(dir.join(".keelson")),
        listen: args.listen,
        status_branch: "keelson/status".into(),
        poll_interval: args.tuning.poll_interval,
        sim_rollout_time: args.tuning.sim_rollout_time,
        progress_deadline: args.tuning.progress_deadline,
        concurrency: args.tuning.concurrency.map_or(crate::daemon::DEFAULT_CONCURRENCY, |n| n as usize),
        providers,
        clusters,
        not_built: Vec::new(),
        drift: crate::daemon::DriftOptions {
            interval: args.tuning.drift_interval.unwrap_or(crate::engine::DEFAULT_DRIFT_INTERVAL),
            ..Default::default()
        },
        prune_max_percent: crate::engine::DEFAULT_PRUNE_MAX_PERCENT,
        dry_run: false,
        sim_drift: args.tuning.sim_drift,
        remote: None,
        webhook: None,
        status_author: None,
        safeguards: args.tuning.safeguards,
    };
    daemon::run(opts, |addr, data_dir, database| {
        let d = dir.display();
        let app = "storefront";
        println!(
            "Keelson is running on {d} ({}).",
            if created { "new repository from the template" } else { "existing repository" }
        );
        println!("  listening on http://{addr}");
        println!("  status page   http://{addr}/   JSON: http://{addr}/api/v1/apps");
        println!("  audit ledger  {database}");
        match &on_kubernetes {
            Some(kubeconfig) => println!("  kubernetes    {} (every cluster's workloads)", kubeconfig.display()),
            None => println!("  simulator     {}", data_dir.join("sim.db").display()),
        }
        println!();
        println!("Try a change (in another terminal):");
        println!("  sed -i 's/replicas: 3/replicas: 5/' {d}/apps/{app}/deploy.yaml");
        println!("  git -C {d} commit -am 'Scale {app} to 5'");
        println!("  keelson status --server http://{addr}");
        println!("  git -C {d} log keelson/status");
        println!("  keelson audit verify --repo {d}");
        println!("Stop with Ctrl-C.");
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

async fn daemon_verb(args: DaemonArgs) -> Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Some(crate::config::load(path)?.0),
        None => None,
    };
    let opts = crate::config::daemon_options(args, config)?;
    daemon::run(opts, |addr, _, database| {
        println!("listening on http://{addr}");
        println!("audit ledger {database}");
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

fn schema(kind: Option<&str>) -> Result<ExitCode> {
    use keelson_manifest::schema::SCHEMAS;
    let Some(kind) = kind else {
        println!("{:<8} {:<24} {:<22} ID", "KIND", "API VERSION", "FILE");
        for s in &SCHEMAS {
            println!("{:<8} {:<24} {:<22} {}", s.kind.to_string(), s.api_version, s.file_name, s.id);
        }
        return Ok(ExitCode::SUCCESS);
    };
    match SCHEMAS.iter().find(|s| s.kind.to_string().eq_ignore_ascii_case(kind)) {
        Some(s) => {
            println!("{}", s.json.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let known: Vec<String> = SCHEMAS.iter().map(|s| s.kind.to_string()).collect();
            bail!("unknown kind {kind:?}; supported kinds: {}", known.join(", "))
        }
    }
}

async fn plan(args: PlanArgs) -> Result<ExitCode> {
    let repo = GitRepo::open(&args.repo)?;
    let config = match &args.config {
        Some(path) => crate::config::load(path)?.0,
        None => Default::default(),
    };
    let renderers = crate::providers::Renderers::from_config(&config.providers, &config.clusters)?;
    let now = time::OffsetDateTime::now_utc();
    let plan = crate::plan::plan_revisions(&repo, &args.base, &args.head, &args.path, &renderers, now).await?;
    match args.format {
        PlanFormat::Text => print!("{}", crate::plan::render_text(&plan)),
        PlanFormat::Markdown => print!("{}", crate::plan::render_markdown(&plan)),
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
    }
    Ok(if plan.has_findings() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn provider(cmd: ProviderCommand) -> Result<ExitCode> {
    match cmd {
        ProviderCommand::Types { format } => {
            let factories = crate::providers::factories(Default::default());
            let types: Vec<serde_json::Value> = factories
                .types()
                .filter_map(|t| factories.get(t).ok())
                .map(|f| serde_json::json!({"type": f.provider_type(), "summary": f.summary(), "capabilities": f.capabilities()}))
                .collect();
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&serde_json::json!({"types": types}))?),
                Format::Text => {
                    println!("{:<12} {:<60} SUMMARY", "TYPE", "CAPABILITIES");
                    for t in &types {
                        let caps: Vec<&str> =
                            t["capabilities"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect();
                        println!(
                            "{:<12} {:<60} {}",
                            t["type"].as_str().unwrap_or_default(),
                            caps.join(","),
                            t["summary"].as_str().unwrap_or_default()
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ProviderCommand::Test { config, plugin, instance, data_dir, format } => {
            let config = match &config {
                Some(path) => crate::config::load(path)?.0,
                None => Default::default(),
            };
            let temp;
            let dir = match data_dir {
                Some(dir) => dir,
                None => {
                    temp = tempfile::tempdir().context("creating a temporary data directory")?;
                    temp.path().to_path_buf()
                }
            };
            if let Some(path) = plugin {
                let report = crate::providers::test_plugin(&path, &dir).await;
                match format {
                    Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                    Format::Text => print!("{report}"),
                }
                return Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
            }
            let specs = crate::providers::specs(&config.providers)?;
            let name = match instance {
                Some(name) => name,
                None if specs.len() == 1 => specs[0].name.to_string(),
                None => bail!(
                    "the config declares {} provider instances; say which with --instance ({})",
                    specs.len(),
                    specs.iter().map(|s| s.name.to_string()).collect::<Vec<_>>().join(", ")
                ),
            };
            let Some(spec) = specs.iter().find(|s| s.name.as_str() == name) else {
                bail!(
                    "no provider instance {name:?}; the config declares: {}",
                    specs.iter().map(|s| s.name.to_string()).collect::<Vec<_>>().join(", ")
                );
            };
            let factories = crate::providers::factories(Default::default());
            let factory = factories.get(&spec.provider_type).map_err(|e| anyhow::anyhow!("provider {name}: {e}"))?;
            let env = keelson_provider_api::BuildEnv {
                data_dir: dir,
                clock: std::sync::Arc::new(keelson_provider_api::SystemClock),
                timeout: spec.timeout,
            };
            let built = factory
                .build(&spec.name, &spec.settings, &env)
                .await
                .with_context(|| format!("starting provider instance {name} ({})", spec.provider_type))?;
            let subject = keelson_provider_api::conformance::Subject {
                provider: built.provider.as_ref(),
                router: built.router.as_deref(),
                metrics: built.metrics.as_deref(),
            };
            let options =
                keelson_provider_api::conformance::Options { call_timeout: spec.timeout.max(Duration::from_secs(1)) };
            let report = keelson_provider_api::conformance::run_with(subject, options).await;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Format::Text => print!("{report}"),
            }
            Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

async fn audit(cmd: AuditCommand) -> Result<ExitCode> {
    match cmd {
        AuditCommand::Verify { db, file, format } => {
            let anchors = db.anchors()?;
            let (report, files) = match file {
                Some(path) => {
                    let f = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                    (crate::ledger::verify_export(std::io::BufReader::new(f), &anchors)?, None)
                }
                None => {
                    let ledger = db.open().await?;
                    let report = ledger.verify(&anchors).await?;
                    // The status files too, not only the trailers: a hand edit of
                    // status/<app>.yaml changes no trailer.
                    let files = match &db.repo {
                        Some(repo) => {
                            let branch = StatusBranch::new(GitRepo::open(repo)?, &db.status_branch);
                            Some(crate::record::check_status_files(&branch, &ledger).await?)
                        }
                        None => None,
                    };
                    (report, files)
                }
            };
            let ok = report.ok && files.as_ref().is_none_or(|f| f.ok);
            match format {
                Format::Json => {
                    let mut body = serde_json::to_value(&report)?;
                    if let Some(files) = &files {
                        body["ok"] = serde_json::json!(ok);
                        body["statusFiles"] = serde_json::to_value(files)?;
                    }
                    println!("{}", serde_json::to_string_pretty(&body)?)
                }
                Format::Text => {
                    println!("{report}");
                    if let Some(files) = &files {
                        println!("{files}");
                    }
                }
            }
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        AuditCommand::Log { db, app, since, limit, format } => {
            let ledger = db.open().await?;
            let (since_seq, since_time) = match since {
                Some(s) => match s.parse::<i64>() {
                    Ok(seq) => (Some(seq), None),
                    Err(_) => (None, Some(s)),
                },
                None => (None, None),
            };
            let entries = ledger.entries(&AuditQuery { since_seq, app, limit: Some(limit), since_time }).await?;
            match format {
                Format::Json => {
                    let list = keelson_core::view::EntryList {
                        entries: entries.iter().map(keelson_core::view::EntryView::from).collect(),
                    };
                    println!("{}", serde_json::to_string_pretty(&list)?)
                }
                Format::Text => {
                    println!("{:>6}  {:<27} {:<20} {:<26} {:<10} COMMIT", "SEQ", "AT", "APP", "TRANSITION", "ACTION");
                    for e in &entries {
                        println!(
                            "{:>6}  {:<27} {:<20} {:<26} {:<10} {}",
                            e.seq,
                            e.at,
                            e.app,
                            format!("{} → {}", e.from_state, e.to_state),
                            e.action,
                            crate::engine::short(&e.desired_commit)
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { db, file } => {
            let ledger = db.open().await?;
            let n = if file.as_os_str() == "-" {
                let mut out = std::io::stdout();
                ledger.export(&mut out).await?
            } else {
                let mut out = std::io::BufWriter::new(
                    std::fs::File::create(&file).with_context(|| format!("creating {}", file.display()))?,
                );
                let n = ledger.export(&mut out).await?;
                std::io::Write::flush(&mut out)?;
                n
            };
            eprintln!("exported {n} entries");
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("five").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
