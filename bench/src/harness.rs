//! The scenarios, run at each fleet size: the daemon end to end (cold reconcile, idle cycle,
//! one-app commit, peak RSS), the library in-process (validation, change detection, ledger, status
//! branch), and the peers on the same inputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use keelson::source::GitRepo;

use crate::daemon::Daemon;
use crate::generator::{self, StateRepo};
use crate::measure;
use crate::peers::{self, CheckJsonschema};
use crate::report::{Better, Figure, Host, PeerFigure, Report};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub sizes: Vec<usize>,
    /// Repetitions at each size (same length as `sizes`).
    pub runs: Vec<usize>,
    pub seed: u64,
    /// The `keelson` binary to run as a daemon.
    pub keelson_bin: PathBuf,
    /// Where generated repositories and daemon data go (removed afterwards unless `keep_scratch`).
    pub scratch: PathBuf,
    pub keep_scratch: bool,
    /// Virtualenv for check-jsonschema.
    pub venv: PathBuf,
    pub peers: bool,
    pub daemon: bool,
    /// One-app commits timed per daemon run.
    pub commits_per_run: usize,
    /// How long the idle daemon is watched per run.
    pub idle_window: Duration,
    /// Budget for a cold reconcile: this much per app, plus one minute.
    pub cold_budget_per_app: Duration,
    /// The command line, for the report.
    pub command: String,
}

/// Samples of every figure at one size, by figure id.
type Samples = HashMap<&'static str, Vec<f64>>;

fn figures() -> Vec<Figure> {
    vec![
        Figure::new(
            "cold_reconcile",
            "cold full reconcile",
            "s",
            Better::Lower,
            "`keelson daemon` started on the generated repository with an empty ledger and simulator (`--sim-rollout-time 0ms`); wall time from spawn until `/api/v1/status` counts all N apps Healthy.",
        ),
        Figure::new(
            "idle_cpu",
            "idle daemon, no new commit",
            "% of a core",
            Better::Lower,
            "With every app Healthy, the outbox drained and no new commit, daemon CPU time (all threads, `/proc/<pid>/task/*/schedstat`) over a 3 s window, as a share of one core (the engine has no tick: an idle daemon waits on the filesystem watch, the ref poll and the ledger reflector, so this is the whole cost of waiting for a commit).",
        ),
        Figure::new(
            "one_app_commit",
            "one-app commit → applied",
            "ms",
            Better::Lower,
            "A commit changing one app's image is written, then `refs/heads/main` is moved to it (lock file + rename, as git does); wall time from the ref move until `/api/v1/apps/<app>` shows the new commit with action `applied` (or Healthy).",
        ),
        Figure::new(
            "one_app_commit_healthy",
            "one-app commit → Healthy",
            "ms",
            Better::Lower,
            "As above, until the app is Healthy on the new commit (health is checked at once after the apply, then after 200 ms growing by half).",
        ),
        Figure::new(
            "validation",
            "validation (loader, cold cache)",
            "files/s",
            Better::Higher,
            "`keelson_manifest::Loader::load` with an empty cache over every file of the commit (read into memory first): YAML parse, schema, semantic checks and digests.",
        ),
        Figure::new(
            "change_detection",
            "change detection (one-app commit)",
            "ms",
            Better::Lower,
            "`GitRepo::changes` from the parent commit (only the trees whose ids differ are read) plus `Loader::load_changes` into a loader holding the parent, as the daemon does.",
        ),
        Figure::new(
            "revalidation",
            "re-validation after a one-app commit",
            "ms",
            Better::Lower,
            "The `Loader::load_changes` part of change detection alone: the changed blob parsed and validated, the checks across apps redone for the apps it can reach, its digest computed, the desired state handed out.",
        ),
        Figure::new(
            "ledger_append",
            "ledger append (SQLite)",
            "entries/s",
            Better::Higher,
            "`Ledger::append` one entry at a time (plan, intent, applied, healthy per app: 4·N entries) to a new SQLite ledger.",
        ),
        Figure::new(
            "ledger_append_batch",
            "ledger append, batches of 1000 (SQLite)",
            "entries/s",
            Better::Higher,
            "`Ledger::append_batch` of the same 4·N entries, 1000 per call, to a new SQLite ledger (time inside the calls only).",
        ),
        Figure::new(
            "ledger_verify",
            "ledger verify (4·N entries)",
            "s",
            Better::Lower,
            "`Ledger::verify` over the 4·N entries just appended.",
        ),
        Figure::new(
            "status_commits",
            "status commits",
            "commits/s",
            Better::Higher,
            "`StatusBranch::commit_batch` of one entry per commit on a branch already holding N status files (100 commits).",
        ),
        Figure::new(
            "shutdown",
            "daemon shutdown (SIGTERM → exit)",
            "s",
            Better::Lower,
            "Wall time from SIGTERM until the daemon exits, after the one-app commits (it finishes the current step and drains the status outbox).",
        ),
        Figure::new(
            "peak_rss",
            "daemon peak RSS",
            "MiB",
            Better::Lower,
            "`VmHWM` of the daemon from `/proc/<pid>/status` right before SIGTERM, after the cold reconcile, idle window and one-app commits.",
        ),
    ]
}

/// Runs every scenario at every size.
pub fn run(opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let mut figures = figures();
    let mut validation_peer = PeerFigure {
        id: "validation_vs_check_jsonschema",
        title: "manifest validation, CLI",
        unit: "files/s",
        better: Better::Higher,
        chart: "validation",
        ours_label: "keelson validate",
        theirs_label: "check-jsonschema".into(),
        ours_is_separate_series: true,
        points: Vec::new(),
        skipped: Vec::new(),
    };
    let mut diff_peer = PeerFigure {
        id: "change_detection_vs_git_diff_tree",
        title: "change detection, same commit pair",
        unit: "ms",
        better: Better::Lower,
        chart: "change_detection",
        ours_label: "Keelson tree diff + incremental load",
        theirs_label: "git diff-tree -r --name-only".into(),
        ours_is_separate_series: false,
        points: Vec::new(),
        skipped: Vec::new(),
    };
    let mut notes = Vec::new();
    let checker = if opts.peers {
        match CheckJsonschema::ensure(&opts.venv) {
            Ok(c) => {
                validation_peer.theirs_label =
                    format!("check-jsonschema {}", c.version().rsplit(' ').next().unwrap_or_default());
                Some(c)
            }
            Err(e) => {
                let why = format!("check-jsonschema row skipped: cannot install it ({e:#})");
                eprintln!("note: {why}");
                validation_peer.skipped.push(why);
                None
            }
        }
    } else {
        None
    };
    let schema = workspace_root().join("manifest-schema/schemas/app.v1alpha1.json");

    std::fs::create_dir_all(&opts.scratch).with_context(|| format!("creating {}", opts.scratch.display()))?;
    for (&n, &runs) in opts.sizes.iter().zip(&opts.runs) {
        let dir = opts.scratch.join(format!("repo-{n}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        eprintln!("[N={n}] generating the repository (seed {})", opts.seed);
        let repo = generator::generate(&dir, n, opts.seed)?;
        let mut samples: Samples = HashMap::new();

        if opts.daemon {
            for r in 0..runs {
                eprintln!("[N={n}] daemon run {}/{runs}", r + 1);
                daemon_run(opts, &repo, r, &mut samples, &mut notes)
                    .with_context(|| format!("daemon run {} at N={n}", r + 1))?;
            }
        }
        reset(&repo)?;
        let git_repo = GitRepo::open(&repo.dir)?;
        let target = repo.change_target(0).clone();
        let head = generator::commit_one_app_change(&repo, &target, 1)?;
        let names: Vec<String> = repo.apps.iter().map(|a| a.name.clone()).collect();
        for r in 0..runs {
            eprintln!("[N={n}] library run {}/{runs}", r + 1);
            samples.entry("validation").or_default().push(measure::validation_files_per_s(&git_repo, &repo.commit, n)?);
            let (ms, load_ms, changed) = measure::change_detection_ms(&git_repo, &repo.commit, &head)?;
            if changed != [target.name.clone()] {
                bail!("change detection found {changed:?} changed, expected only {}", target.name);
            }
            samples.entry("change_detection").or_default().push(ms);
            samples.entry("revalidation").or_default().push(load_ms);
            let tmp = tempfile::tempdir_in(&opts.scratch)?;
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            let (per_s, verify_s, _) =
                rt.block_on(measure::ledger_append_and_verify(tmp.path(), &names, &repo.commit))?;
            samples.entry("ledger_append").or_default().push(per_s);
            samples.entry("ledger_verify").or_default().push(verify_s);
            let batch_per_s =
                rt.block_on(measure::new_sqlite_ledger_batch_appends_per_s(tmp.path(), 4 * n, 1000, &repo.commit))?;
            samples.entry("ledger_append_batch").or_default().push(batch_per_s);
            samples.entry("status_commits").or_default().push(measure::status_commits_per_s(
                &git_repo,
                "bench/status",
                &names,
                100,
            )?);
        }
        if opts.peers {
            eprintln!("[N={n}] peers");
            let mut git_ms = Vec::new();
            for _ in 0..runs {
                let (ms, paths) = peers::git_diff_tree_ms(&repo.dir, &repo.commit, &head)?;
                if paths != [StateRepo::manifest_path(&target.name)] {
                    bail!("git diff-tree listed {paths:?}, expected only the changed manifest");
                }
                git_ms.push(ms);
            }
            diff_peer.add(n, &samples["change_detection"], &git_ms);
            // The peer validates the App manifests; `keelson validate` reads the same files plus two policies.
            reset(&repo)?;
            let files = repo.manifest_files();
            let ours: Vec<f64> = (0..runs)
                .map(|_| peers::keelson_validate_files_per_s(&opts.keelson_bin, &repo.dir, n + 2))
                .collect::<Result<_>>()?;
            match &checker {
                Some(c) => match (0..runs).map(|_| c.files_per_s(&schema, &files)).collect::<Result<Vec<f64>>>() {
                    Ok(theirs) => validation_peer.add(n, &ours, &theirs),
                    Err(e) => validation_peer.skipped.push(format!("N={n}: {e:#}")),
                },
                None => validation_peer.add(n, &ours, &[]),
            }
        }
        for f in &mut figures {
            if let Some(s) = samples.get(f.id) {
                f.add(n, s);
            }
        }
        if !opts.keep_scratch {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    if !opts.daemon {
        notes.push(
            "daemon scenarios skipped (--no-daemon): no cold reconcile, idle cycle, one-app commit or peak RSS".into(),
        );
    }
    notes.push("Peer rows time whole processes (start-up included) on both sides; the in-process figures above exclude start-up.".into());
    notes.push(
        "check-jsonschema checks the JSON Schema only; keelson validate also runs semantic checks (names, dependsOn, policies) and digests."
            .into(),
    );
    figures.retain(|f| !f.points.is_empty());
    let mut peers = Vec::new();
    if opts.peers {
        peers.push(validation_peer);
        peers.push(diff_peer);
    }
    Ok(Report {
        generated_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        command: opts.command.clone(),
        keelson_revision: revision(),
        seed: opts.seed,
        sizes: opts.sizes.clone(),
        runs: opts.runs.clone(),
        host: host(),
        figures,
        peers,
        notes,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Puts the repository back at its generated commit with no status branch, for a cold start.
fn reset(repo: &StateRepo) -> Result<()> {
    generator::git(&repo.dir, &["reset", "--quiet", "--hard", &repo.commit], 0)?;
    for branch in ["refs/heads/keelson/status", "refs/heads/bench/status"] {
        if generator::git(&repo.dir, &["rev-parse", "--verify", "--quiet", branch], 0).is_ok() {
            generator::git(&repo.dir, &["update-ref", "-d", branch], 0)?;
        }
    }
    Ok(())
}

/// One daemon lifetime: cold reconcile, idle window, one-app commits, peak RSS.
fn daemon_run(
    opts: &Options,
    repo: &StateRepo,
    run: usize,
    samples: &mut Samples,
    notes: &mut Vec<String>,
) -> Result<()> {
    let n = repo.apps.len();
    reset(repo)?;
    let data = tempfile::tempdir_in(&opts.scratch)?;
    let daemon = Daemon::start(&opts.keelson_bin, &repo.dir, data.path())?;
    let budget = Duration::from_secs(60) + opts.cold_budget_per_app * n as u32;
    daemon.wait_for(&format!("all {n} apps Healthy"), budget, Duration::from_millis(50), |d| {
        let Some(status) = d.json("/api/v1/status")? else { return Ok(None) };
        let phase = |p: &str| status["phases"][p].as_u64().unwrap_or(0) as usize;
        if phase("Failed") + phase("Blocked") > 0 {
            let apps = d.json("/api/v1/apps")?.unwrap_or_default();
            let bad: Vec<String> = apps["apps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| matches!(a["phase"].as_str(), Some("Failed" | "Blocked")))
                .take(3)
                .map(|a| format!("{} {}: {}", a["name"], a["phase"], a["message"]))
                .collect();
            bail!("apps failed during the cold reconcile: {}", bad.join("; "));
        }
        Ok((phase("Healthy") == n).then_some(()))
    })?;
    samples.entry("cold_reconcile").or_default().push(daemon.started.elapsed().as_secs_f64());

    // Idle: let the recorder finish the cold start's status commits, then watch a quiet window.
    daemon.wait_for("the status outbox to drain", Duration::from_secs(120), Duration::from_millis(100), |d| {
        Ok((d.metric("keelson_outbox_entries")? == 0.0).then_some(()))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let cpu0 = daemon.thread_cpu_ns()?;
    let window = Instant::now();
    std::thread::sleep(opts.idle_window);
    let cpu1 = daemon.thread_cpu_ns()?;
    let window = window.elapsed();
    let cpu_ns: u64 = cpu1.iter().map(|(tid, ns)| ns.saturating_sub(cpu0.get(tid).copied().unwrap_or(0))).sum();
    samples.entry("idle_cpu").or_default().push(cpu_ns as f64 / window.as_nanos() as f64 * 100.0);

    for k in 0..opts.commits_per_run {
        let round = run * opts.commits_per_run + k;
        let app = repo.change_target(round).clone();
        let commit = generator::prepare_one_app_change(repo, &app, round as u32 + 1)?;
        let t0 = Instant::now();
        generator::move_main(repo, &commit)?;
        let path = format!("/api/v1/apps/{}", app.name);
        let mut applied = None;
        daemon.wait_for(
            &format!("{} to be applied and Healthy on {commit}", app.name),
            Duration::from_secs(120),
            Duration::from_millis(5),
            |d| {
                let Some(s) = d.json(&path)? else { return Ok(None) };
                if s["desiredCommit"].as_str() != Some(commit.as_str()) {
                    return Ok(None);
                }
                let healthy = s["phase"] == "Healthy";
                if applied.is_none() && (healthy || s["lastTransition"]["action"] == "applied") {
                    applied = Some(t0.elapsed());
                }
                if matches!(s["phase"].as_str(), Some("Failed" | "Blocked")) {
                    bail!("{} went {} on the one-app commit: {}", app.name, s["phase"], s["message"]);
                }
                Ok(healthy.then_some(()))
            },
        )?;
        let healthy = t0.elapsed();
        samples.entry("one_app_commit").or_default().push(applied.unwrap_or(healthy).as_secs_f64() * 1e3);
        samples.entry("one_app_commit_healthy").or_default().push(healthy.as_secs_f64() * 1e3);
    }
    samples.entry("peak_rss").or_default().push(daemon.peak_rss_bytes()? as f64 / (1024.0 * 1024.0));
    match daemon.terminate(Duration::from_secs(120)) {
        Ok(took) => samples.entry("shutdown").or_default().push(took.as_secs_f64()),
        Err(e) => notes.push(format!("N={n}, run {}: {e:#}", run + 1)),
    }
    Ok(())
}

/// The workspace this crate belongs to.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The workspace's revision, `-dirty` when it has local changes.
pub(crate) fn revision() -> String {
    let root = workspace_root();
    let head = generator::git(&root, &["rev-parse", "--short=12", "HEAD"], 0).unwrap_or_else(|_| "unknown".into());
    let dirty = generator::git(&root, &["status", "--porcelain", "--untracked-files=no"], 0)
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    if dirty { format!("{head}-dirty") } else { head }
}

/// The machine the run happens on.
pub(crate) fn host() -> Host {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    Host {
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
        memory_gib: mem_kb / 1024.0 / 1024.0,
    }
}
