//! `keelson-bench`: generate state repositories and run the benchmark scenarios.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use keelson_bench::harness::{self, Options, workspace_root};
use keelson_bench::{chart, generator};

/// Benchmarks of Keelson on generated state repositories.
#[derive(Debug, Parser)]
#[command(name = "keelson-bench", arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run every scenario at every size and print the table (and write results unless --quick).
    All(AllArgs),
    /// Audit-ledger throughput at one size: batch and single appends and a full verify, on SQLite
    /// and (with --postgres) PostgreSQL.
    Ledger(LedgerArgs),
    /// Write a generated state repository (a git repository on `main`, one commit).
    Gen {
        /// Directory to create (must be absent or empty).
        dir: PathBuf,
        /// Number of apps.
        #[arg(long, default_value_t = 100)]
        apps: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct AllArgs {
    /// Fleet sizes.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    sizes: Vec<usize>,
    /// Repetitions: one number for every size, or one per size (`3,3,2`).
    #[arg(long, value_delimiter = ',')]
    runs: Vec<usize>,
    /// CI smoke: N = 100 only, one run, nothing written unless --out is given.
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Where results.json, the charts and README.md go (default bench/results; none with --quick).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The keelson binary (default: build and use target/release/keelson).
    #[arg(long, env = "KEELSON_BIN")]
    keelson_bin: Option<PathBuf>,
    /// Scratch directory for generated repositories and daemon data (default: a temp dir).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Keep the generated repositories.
    #[arg(long)]
    keep_scratch: bool,
    /// Skip check-jsonschema and git diff-tree.
    #[arg(long)]
    no_peers: bool,
    /// Skip the scenarios that run the daemon.
    #[arg(long)]
    no_daemon: bool,
    /// One-app commits timed per daemon run.
    #[arg(long, default_value_t = 3)]
    commits_per_run: usize,
    /// Seconds the idle daemon is watched per run.
    #[arg(long, default_value_t = 3.0)]
    idle_seconds: f64,
    /// Cold-reconcile budget per app in milliseconds (plus one minute) before a run is abandoned.
    #[arg(long, default_value_t = 150)]
    cold_budget_ms_per_app: u64,
}

#[derive(Debug, clap::Args)]
struct LedgerArgs {
    /// Entries appended in batches and then verified.
    #[arg(long, default_value_t = 1_000_000)]
    entries: usize,
    /// Entries per `append_batch` call.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Entries appended one at a time after the verify.
    #[arg(long, default_value_t = 10_000)]
    single: usize,
    /// Repetitions, each from an empty ledger.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// PostgreSQL server URL (its user must be allowed to create databases); PostgreSQL is skipped without one.
    #[arg(long, env = "KEELSON_TEST_POSTGRES_URL")]
    postgres: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Also write ledger.md and ledger.json into this directory (e.g. bench/results).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Scratch directory for the SQLite files (default: a temp dir).
    #[arg(long)]
    scratch: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Gen { dir, apps, seed } => {
            let repo = generator::generate(&dir, apps, seed)?;
            println!("{}: {} apps, commit {} (seed {seed})", dir.display(), repo.apps.len(), repo.commit);
            Ok(())
        }
        Cmd::All(args) => all(args),
        Cmd::Ledger(args) => ledger(args),
    }
}

fn ledger(args: LedgerArgs) -> Result<()> {
    if args.entries == 0 || args.batch == 0 || args.runs == 0 {
        bail!("--entries, --batch and --runs must be at least 1");
    }
    let scratch_guard;
    let scratch = match &args.scratch {
        Some(dir) => dir.clone(),
        None => {
            scratch_guard = tempfile::Builder::new().prefix("keelson-bench-ledger-").tempdir()?;
            scratch_guard.path().to_path_buf()
        }
    };
    let opts = keelson_bench::ledger::Options {
        entries: args.entries,
        batch: args.batch,
        single: args.single,
        runs: args.runs,
        postgres: args.postgres.filter(|url| !url.trim().is_empty()),
        scratch,
        command: command_line(),
    };
    let report = keelson_bench::ledger::run(&opts)?;
    match args.format {
        Format::Text => print!("{}", report.table()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    if let Some(out) = args.out {
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        std::fs::write(out.join("ledger.json"), serde_json::to_string_pretty(&report)? + "\n")?;
        std::fs::write(out.join("ledger.md"), keelson_bench::ledger::markdown(&report))?;
        eprintln!("wrote {}/ledger.md and ledger.json", out.display());
    }
    Ok(())
}

fn all(args: AllArgs) -> Result<()> {
    let sizes = if args.quick { vec![100] } else { args.sizes.clone() };
    if sizes.is_empty() || sizes.contains(&0) {
        bail!("--sizes needs one or more positive numbers");
    }
    let runs = match args.runs.as_slice() {
        [] => vec![if args.quick { 1 } else { 3 }; sizes.len()],
        [r] => vec![*r; sizes.len()],
        list if list.len() == sizes.len() => list.to_vec(),
        list => bail!("--runs has {} values for {} sizes; give one value or one per size", list.len(), sizes.len()),
    };
    if runs.contains(&0) {
        bail!("--runs must be at least 1");
    }
    let root = workspace_root();
    let keelson_bin = match args.keelson_bin {
        Some(bin) => bin,
        None => build_keelson(&root)?,
    };
    let scratch_guard;
    let scratch = match &args.scratch {
        Some(dir) => dir.clone(),
        None => {
            scratch_guard = tempfile::Builder::new().prefix("keelson-bench-").tempdir()?;
            scratch_guard.path().to_path_buf()
        }
    };
    let out = match (args.out, args.quick) {
        (Some(out), _) => Some(out),
        (None, false) => Some(root.join("bench/results")),
        (None, true) => None,
    };
    let opts = Options {
        sizes,
        runs,
        seed: args.seed,
        keelson_bin,
        scratch,
        keep_scratch: args.keep_scratch,
        venv: root.join("bench/.venv"),
        peers: !args.no_peers,
        daemon: !args.no_daemon,
        commits_per_run: args.commits_per_run,
        idle_window: Duration::from_secs_f64(args.idle_seconds),
        cold_budget_per_app: Duration::from_millis(args.cold_budget_ms_per_app),
        command: command_line(),
    };
    let report = harness::run(&opts)?;
    match args.format {
        Format::Text => print!("{}", report.table()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    if let Some(out) = out {
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&report)? + "\n")?;
        std::fs::write(out.join("README.md"), report.markdown())?;
        for figure in &report.figures {
            let peers: Vec<_> = report.peers.iter().filter(|p| p.chart == figure.id).collect();
            chart::draw(&out, figure, &peers)?;
        }
        eprintln!("wrote {}/results.json, README.md and {} charts", out.display(), report.figures.len());
    }
    Ok(())
}

/// Builds the daemon binary in release mode (a no-op when it is up to date) and returns its path.
fn build_keelson(root: &Path) -> Result<PathBuf> {
    eprintln!("building the keelson binary (cargo build --release -p keelson)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--release", "-p", "keelson", "--bin", "keelson"])
        .current_dir(root)
        .status()
        .context("running cargo build for the keelson binary")?;
    if !status.success() {
        bail!("cargo build --release -p keelson failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    Ok(target.join("release/keelson"))
}

/// The command as a reader would type it.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo run --release -p keelson-bench -- {}", args.join(" "))
}
