//! The `ledger` scenario: append and verify throughput of the audit ledger at a fixed size (a
//! million entries by default), on SQLite and, when given a server, on PostgreSQL.
//!
//! Each run starts from an empty ledger: a new SQLite file, or a new PostgreSQL database that is
//! dropped afterwards, so runs are independent and nothing is left on the server. A run appends
//! `entries` in batches, verifies them all, then appends `single` more one at a time (so the
//! single-append figure is for a ledger of that size, not an empty one).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use keelson::ledger::{Ledger, redact, with_database};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::measure;
use crate::report::{Better, Figure, Report, num};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Entries appended in batches, then verified.
    pub entries: usize,
    /// Entries per `append_batch`.
    pub batch: usize,
    /// Entries appended one at a time after the batches.
    pub single: usize,
    pub runs: usize,
    /// A PostgreSQL URL whose user may create databases; PostgreSQL is skipped without one.
    pub postgres: Option<String>,
    /// Where the SQLite files go (a temp dir inside it per run).
    pub scratch: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

/// The commit every generated entry names.
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Samples of one engine's three figures.
#[derive(Default)]
struct Samples {
    batch: Vec<f64>,
    verify: Vec<f64>,
    single: Vec<f64>,
}

/// Runs the scenario and returns its figures as a [`Report`] (one size: `entries`).
pub fn run(opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    std::fs::create_dir_all(&opts.scratch).with_context(|| format!("creating {}", opts.scratch.display()))?;
    let mut sqlite = Samples::default();
    let mut postgres = Samples::default();
    let mut notes = vec![format!(
        "SQLite in WAL mode with synchronous=NORMAL (Keelson's setting, docs/audit.md): a commit survives a crash of \
         Keelson, not necessarily a power loss. Files in {}.",
        opts.scratch.display()
    )];
    for r in 1..=opts.runs {
        eprintln!("[ledger] SQLite run {r}/{}", opts.runs);
        let dir = tempfile::tempdir_in(&opts.scratch)?;
        let database = dir.path().join("ledger.db").display().to_string();
        rt.block_on(one_run(&database, opts, &mut sqlite)).with_context(|| format!("SQLite run {r}"))?;
    }
    match &opts.postgres {
        Some(url) => {
            notes.push(format!("PostgreSQL: a new database per run on {}, dropped afterwards.", redact(url)));
            for r in 1..=opts.runs {
                eprintln!("[ledger] PostgreSQL run {r}/{}", opts.runs);
                rt.block_on(postgres_run(url, opts, &mut postgres)).with_context(|| format!("PostgreSQL run {r}"))?;
            }
        }
        None => notes.push("PostgreSQL skipped: give --postgres or KEELSON_TEST_POSTGRES_URL.".into()),
    }
    let mut figures = Vec::new();
    for (engine, samples) in [("SQLite", &sqlite), ("PostgreSQL", &postgres)] {
        if samples.batch.is_empty() {
            continue;
        }
        let [batch, verify, single] = engine_figures(engine, opts.batch);
        figures.push(with_points(batch, opts.entries, &samples.batch));
        figures.push(with_points(verify, opts.entries, &samples.verify));
        figures.push(with_points(single, opts.single, &samples.single));
    }
    Ok(Report {
        generated_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        command: opts.command.clone(),
        keelson_revision: crate::harness::revision(),
        seed: 0,
        sizes: vec![opts.entries],
        runs: vec![opts.runs],
        host: crate::harness::host(),
        figures,
        peers: Vec::new(),
        notes,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

fn with_points(mut figure: Figure, n: usize, samples: &[f64]) -> Figure {
    figure.add(n, samples);
    figure
}

/// The batch-append, verify and single-append figures of one engine.
fn engine_figures(engine: &'static str, batch: usize) -> [Figure; 3] {
    // Titles and ids are static strings; the two engines and the usual batch size are spelled out.
    let sqlite = engine == "SQLite";
    let batch_title = match (sqlite, batch) {
        (true, 1000) => "SQLite append_batch, 1000 per batch",
        (true, _) => "SQLite append_batch (see --batch)",
        (false, 1000) => "PostgreSQL append_batch, 1000 per batch",
        (false, _) => "PostgreSQL append_batch (see --batch)",
    };
    let pick = |a: &'static str, b: &'static str| if sqlite { a } else { b };
    [
        Figure::new(
            pick("sqlite_append_batch", "postgres_append_batch"),
            batch_title,
            "entries/s",
            Better::Higher,
            "`Ledger::append_batch` of cold-rollout entries (plan, intent, applied, healthy per app) into an empty ledger; time inside the calls only.",
        ),
        Figure::new(
            pick("sqlite_verify", "postgres_verify"),
            pick("SQLite verify (whole ledger)", "PostgreSQL verify (whole ledger)"),
            "s",
            Better::Lower,
            "`Ledger::verify(&[])` over every entry just appended: read, recompute each hash, check the chain and each detail's canonical form.",
        ),
        Figure::new(
            pick("sqlite_append_single", "postgres_append_single"),
            pick("SQLite append, one at a time", "PostgreSQL append, one at a time"),
            "entries/s",
            Better::Higher,
            "`Ledger::append` of one entry per transaction (as the engine appends), onto the ledger just verified.",
        ),
    ]
}

/// Batch appends, verify and single appends on the ledger at `database`, which must be empty.
async fn one_run(database: &str, opts: &Options, samples: &mut Samples) -> Result<()> {
    let ledger = Ledger::open(database).await?;
    samples.batch.push(measure::ledger_batch_appends_per_s(&ledger, opts.entries, opts.batch, COMMIT).await?);
    samples.verify.push(measure::ledger_verify_s(&ledger, opts.entries as u64).await?);
    samples.single.push(measure::ledger_single_appends_per_s(&ledger, opts.single, COMMIT).await?);
    ledger.close().await;
    Ok(())
}

/// One run on a new database of the server at `admin_url`, dropped afterwards whatever happened.
async fn postgres_run(admin_url: &str, opts: &Options, samples: &mut Samples) -> Result<()> {
    let mut admin =
        PgConnection::connect(admin_url).await.with_context(|| format!("connecting to {}", redact(admin_url)))?;
    let name = format!("keelson_bench_{}_{}", std::process::id(), samples.batch.len() + 1);
    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&mut admin).await?;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;
    let outcome = one_run(&with_database(admin_url, &name), opts, samples).await;
    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut admin)
        .await
        .with_context(|| format!("dropping the benchmark database {name}"))?;
    outcome
}

/// `bench/results/ledger.md`: date, machine, command and the table.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Audit ledger throughput\n");
    let _ = writeln!(
        out,
        "Measured {} on {} ({} CPUs, {:.0} GiB, Linux {}), Keelson `{}`. Whole run: {:.0} s.\n",
        &report.generated_at[..10.min(report.generated_at.len())],
        report.host.cpu_model,
        report.host.cpus,
        report.host.memory_gib,
        report.host.kernel,
        report.keelson_revision,
        report.total_seconds
    );
    let _ = writeln!(out, "```sh\n{}\n```\n", report.command);
    let runs = report.runs.first().copied().unwrap_or(0);
    let _ = writeln!(out, "{runs} runs, each from an empty ledger. Each cell is min / **median** / max.\n");
    out.push_str("| figure | entries | min | median | max | unit |\n|---|---|---|---|---|---|\n");
    for f in &report.figures {
        for p in &f.points {
            let s = &p.summary;
            let _ = writeln!(
                out,
                "| {} | {} | {} | **{}** | {} | {} |",
                f.title,
                p.n,
                num(s.min),
                num(s.median),
                num(s.max),
                f.unit
            );
        }
    }
    out.push_str("\n## How each figure is measured\n\n");
    for f in &report.figures {
        let _ = writeln!(out, "- **{}**: {}", f.title, f.how);
    }
    if !report.notes.is_empty() {
        out.push_str("\n## Notes\n\n");
        for n in &report.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(with_database("postgres://u@h:5432/test", "b"), "postgres://u@h:5432/b");
        assert_eq!(with_database("postgres://u@h/test?sslmode=disable", "b"), "postgres://u@h/b?sslmode=disable");
        assert_eq!(with_database("postgres://u@h", "b"), "postgres://u@h/b");
    }
}
