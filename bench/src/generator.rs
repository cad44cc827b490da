//! A realistic state repository of N apps, written as a real git repository, the same for the same seed.
//!
//! The mix follows a typical fleet: about 60% web services (exposed, each depending on a database or
//! an API), 25% workers, 5% databases and 10% GPU inference services, with `dependsOn` chains at most
//! three edges deep (database ← API ← frontend ← worker) and two policy files. Commits carry fixed
//! dates and identities, so the same seed gives the same commit ids.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Small deterministic PRNG (SplitMix64): reproducible across platforms and versions, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What an app is, which decides its shape and where it sits in the dependency graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    /// A stateful store other apps depend on (depth 0).
    Database,
    /// An exposed API depending on a database (depth 1).
    Api,
    /// An exposed frontend depending on an API (depth 2).
    Frontend,
    /// A background worker depending on a database, an API or a frontend (depth ≤ 3).
    Worker,
    /// A GPU inference service, sometimes depending on a database (depth ≤ 1).
    Gpu,
}

/// One generated app: its name, kind and the apps it depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenApp {
    pub name: String,
    pub kind: AppKind,
    pub depends_on: Vec<String>,
}

/// A generated state repository.
#[derive(Debug, Clone)]
pub struct StateRepo {
    /// The work tree.
    pub dir: PathBuf,
    /// The seed it was made from.
    pub seed: u64,
    /// The apps, in generation order.
    pub apps: Vec<GenApp>,
    /// Full id of the commit holding them (the tip of `main`).
    pub commit: String,
}

impl StateRepo {
    /// The manifest path of `app`, relative to the repository.
    pub fn manifest_path(app: &str) -> String {
        format!("apps/{app}/deploy.yaml")
    }

    /// Paths of every app manifest, absolute.
    pub fn manifest_files(&self) -> Vec<PathBuf> {
        self.apps.iter().map(|a| self.dir.join(Self::manifest_path(&a.name))).collect()
    }

    /// The app that one-app-change commits edit in round `round`: a worker or web app chosen by the seed.
    pub fn change_target(&self, round: usize) -> &GenApp {
        let candidates: Vec<&GenApp> =
            self.apps.iter().filter(|a| matches!(a.kind, AppKind::Worker | AppKind::Frontend)).collect();
        let mut rng = Rng::new(self.seed.wrapping_add(1000 + round as u64));
        if candidates.is_empty() {
            return &self.apps[rng.below(self.apps.len())];
        }
        candidates[rng.below(candidates.len())]
    }
}

const WORDS: &[&str] = &[
    "checkout",
    "cart",
    "catalog",
    "search",
    "payments",
    "billing",
    "auth",
    "profile",
    "orders",
    "shipping",
    "inventory",
    "pricing",
    "reviews",
    "recs",
    "notify",
    "email",
    "media",
    "upload",
    "reports",
    "ledger",
    "fraud",
    "loyalty",
    "geo",
    "ads",
    "chat",
    "feed",
    "wallet",
    "tickets",
    "booking",
    "maps",
];
const TEAMS: &[&str] = &["web", "payments", "platform", "growth", "ml", "data", "identity", "logistics"];
const CLUSTERS: &[&str] = &["prod-east", "prod-west"];
const GPU_MODELS: &[&str] = &["H100", "H200", "L40S", "A100"];
const MEMORY: &[&str] = &["256Mi", "512Mi", "1Gi", "2Gi"];
const CPU: &[&str] = &["100m", "250m", "500m", "1"];

/// Decides the apps of a repository of `n` apps: names, kinds and dependencies.
pub fn plan_apps(n: usize, seed: u64) -> Vec<GenApp> {
    let mut rng = Rng::new(seed);
    let databases = (n * 5 / 100).max(1).min(n);
    let gpus = (n / 10).min(n - databases);
    let workers = (n * 25 / 100).min(n - databases - gpus);
    let web = n - databases - gpus - workers;
    let apis = web.div_ceil(2);
    let frontends = web - apis;

    let mut apps: Vec<GenApp> = Vec::with_capacity(n);
    let name = |kind: &str, i: usize, rng: &mut Rng| format!("{}-{kind}-{i:05}", rng.pick(WORDS));
    let mut i = 0;
    let mut push = |apps: &mut Vec<GenApp>, kind: AppKind, tag: &str, deps: Vec<String>, rng: &mut Rng| {
        apps.push(GenApp { name: name(tag, i, rng), kind, depends_on: deps });
        i += 1;
    };
    for _ in 0..databases {
        push(&mut apps, AppKind::Database, "db", Vec::new(), &mut rng);
    }
    let db_names: Vec<String> = apps.iter().map(|a| a.name.clone()).collect();
    for _ in 0..apis {
        let db = rng.pick(&db_names).clone();
        push(&mut apps, AppKind::Api, "api", vec![db], &mut rng);
    }
    let api_names: Vec<String> = apps.iter().filter(|a| a.kind == AppKind::Api).map(|a| a.name.clone()).collect();
    for _ in 0..frontends {
        let api = rng.pick(&api_names).clone();
        push(&mut apps, AppKind::Frontend, "web", vec![api], &mut rng);
    }
    let web_names: Vec<String> = apps.iter().filter(|a| a.kind == AppKind::Frontend).map(|a| a.name.clone()).collect();
    for _ in 0..workers {
        let deps = match rng.below(10) {
            0..=3 => vec![rng.pick(&db_names).clone()],
            4..=7 if !api_names.is_empty() => vec![rng.pick(&api_names).clone()],
            8 if !web_names.is_empty() => vec![rng.pick(&web_names).clone()],
            _ => Vec::new(),
        };
        push(&mut apps, AppKind::Worker, "worker", deps, &mut rng);
    }
    for _ in 0..gpus {
        let deps = if rng.chance(30) { vec![rng.pick(&db_names).clone()] } else { Vec::new() };
        push(&mut apps, AppKind::Gpu, "infer", deps, &mut rng);
    }
    apps
}

/// The `deploy.yaml` of one app, block-style like the template; `revision` bumps the image tag.
pub fn manifest(app: &GenApp, seed: u64, revision: u32) -> String {
    let mut rng = Rng::new(seed ^ fnv(&app.name));
    let word = app.name.split('-').next().unwrap_or("app");
    let team = *rng.pick(TEAMS);
    let critical = rng.chance(20);
    let pci = word == "payments" || word == "billing" || word == "wallet";
    let (major, minor) = (1 + rng.below(4), rng.below(20));
    let mut y = String::with_capacity(640);
    let _ = writeln!(
        y,
        "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata:\n  name: {}\n  team: {team}\n  labels:",
        app.name
    );
    let _ = writeln!(y, "    tier: {}", if critical { "critical" } else { "standard" });
    let _ = writeln!(y, "    kind: {}", kind_label(app.kind));
    if pci {
        y.push_str("  compliance:\n    - pci\n");
    }
    y.push_str("spec:\n");
    let image = match app.kind {
        AppKind::Database => format!("docker.io/library/postgres:16.{}", 1 + (minor % 6) + revision as usize),
        _ => format!("registry.example.com/{team}/{}:{major}.{minor}.{revision}", app.name),
    };
    let _ = writeln!(y, "  image: {image}");
    let replicas = match app.kind {
        AppKind::Database => 1,
        AppKind::Gpu => 1 + rng.below(2),
        _ => 2 + rng.below(5),
    };
    let _ = writeln!(y, "  replicas: {replicas}");
    y.push_str("  resources:\n");
    match app.kind {
        AppKind::Gpu => {
            let _ = writeln!(y, "    cpu: \"{}\"\n    memory: {}Gi", 4 + rng.below(4) * 4, 16 << rng.below(3));
            let _ = writeln!(y, "    gpu:\n      count: {}\n      model: {}", 1 + rng.below(2), rng.pick(GPU_MODELS));
        }
        AppKind::Database => {
            let _ = writeln!(y, "    cpu: \"{}\"\n    memory: {}Gi", 1 + rng.below(4), 2 << rng.below(3));
        }
        _ => {
            let _ = writeln!(y, "    cpu: {}\n    memory: {}", rng.pick(CPU), rng.pick(MEMORY));
        }
    }
    y.push_str("  placement:\n");
    match app.kind {
        AppKind::Gpu => y.push_str("    cluster: gpu-lab\n    gpuPool: inference\n"),
        _ => {
            let _ = writeln!(y, "    cluster: {}", rng.pick(CLUSTERS));
            if app.kind == AppKind::Worker && !pci && rng.chance(40) {
                let _ = writeln!(
                    y,
                    "    nodePool:\n      serverClass: gp.vs1.large-iad\n      maxBid: \"0.0{}\"",
                    4 + rng.below(5)
                );
                y.push_str("      onDemandFallback: true\n");
            }
        }
    }
    match app.kind {
        AppKind::Database => y.push_str("  expose:\n    port: 5432\n"),
        AppKind::Api | AppKind::Frontend => {
            let port = if app.kind == AppKind::Api { 8080 } else { 3000 };
            let _ = writeln!(y, "  ports:\n    - name: http\n      port: {port}\n      protocol: http");
            let _ = writeln!(y, "  expose:\n    port: {port}\n    host: {}.example.com\n    tls: true", app.name);
            let _ =
                writeln!(y, "  health:\n    readiness:\n      path: /healthz\n      port: {port}\n      period: 10s");
        }
        AppKind::Gpu => {
            let _ = writeln!(y, "  expose:\n    port: 8000\n    host: {}.internal.example.com", app.name);
        }
        AppKind::Worker => {
            let _ = writeln!(
                y,
                "  env:\n    - name: QUEUE\n      value: {word}-jobs\n    - name: DATABASE_URL\n      secretRef:"
            );
            let _ = writeln!(y, "        name: {word}-db\n        key: url");
        }
    }
    if matches!(app.kind, AppKind::Api | AppKind::Frontend) && critical {
        // Rolling strategies and metric gates are refused until they are built (not_built.rs);
        // the draws they used are kept so the rest of the repository is generated as before.
        let _ = (rng.below(5), rng.below(6));
        y.push_str("  strategy:\n    type: direct\n");
    } else if app.kind != AppKind::Database {
        y.push_str("  strategy:\n    type: direct\n");
    }
    // `selfHeal` is not built either: only `prune`, which is.
    let _ = writeln!(y, "  sync:\n    prune: {}", app.kind != AppKind::Database);
    if !app.depends_on.is_empty() {
        y.push_str("  dependsOn:\n");
        for d in &app.depends_on {
            let _ = writeln!(y, "    - {d}");
        }
    }
    y
}

fn kind_label(kind: AppKind) -> &'static str {
    match kind {
        AppKind::Database => "database",
        AppKind::Api => "api",
        AppKind::Frontend => "frontend",
        AppKind::Worker => "worker",
        AppKind::Gpu => "gpu-inference",
    }
}

/// FNV-1a: a stable per-app seed component (std's hasher is not stable across releases).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

const GUARDRAILS: &str = "apiVersion: keelson.dev/v1alpha1
kind: Policy
metadata:
  name: guardrails
spec:
  rules:
    - name: pci-off-spot
      match:
        compliance:
          - pci
      deny:
        placement.nodePool: present
      message: PCI workloads may not run on spot capacity
    - name: frontends-use-tls
      match:
        labels:
          kind: frontend
      require:
        expose.tls: true
      message: public frontends must terminate TLS
  quotas:
    - team: ml
      gpus: {gpus}
      replicas: {replicas}
";

const FREEZE: &str = "apiVersion: keelson.dev/v1alpha1
kind: Policy
metadata:
  name: change-freeze
spec:
  freeze:
    - cron: \"0 18 * * FRI\"
      duration: 62h
      timeZone: Europe/Berlin
      reason: weekend freeze
";

/// Writes a repository of `n` apps into `dir` (which must be absent or empty) and commits it on `main`.
pub fn generate(dir: &Path, n: usize, seed: u64) -> Result<StateRepo> {
    if n == 0 {
        bail!("a state repository needs at least one app");
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} is not empty; pick a new directory for the generated repository", dir.display());
    }
    let apps = plan_apps(n, seed);
    for app in &apps {
        let app_dir = dir.join("apps").join(&app.name);
        std::fs::create_dir_all(&app_dir).with_context(|| format!("creating {}", app_dir.display()))?;
        std::fs::write(app_dir.join("deploy.yaml"), manifest(app, seed, 0))?;
    }
    std::fs::create_dir_all(dir.join("policies"))?;
    // Quotas sized to the fleet, so the policies shape the repository without blocking the benchmark.
    let guardrails = GUARDRAILS.replace("{gpus}", &(4 * n).to_string()).replace("{replicas}", &(10 * n).to_string());
    std::fs::write(dir.join("policies/guardrails.yaml"), guardrails)?;
    std::fs::write(dir.join("policies/change-freeze.yaml"), FREEZE)?;
    std::fs::write(
        dir.join("README.md"),
        format!("# Generated state repository\n\n{n} apps, seed {seed}, made by `keelson-bench gen`.\n"),
    )?;
    git(dir, &["init", "--quiet", "--initial-branch=main"], 0)?;
    git(dir, &["add", "-A"], 0)?;
    git(dir, &["commit", "--quiet", "--no-verify", "-m", &format!("Generated fleet: {n} apps (seed {seed})")], 0)?;
    let commit = git(dir, &["rev-parse", "HEAD"], 0)?;
    Ok(StateRepo { dir: dir.to_path_buf(), seed, apps, commit })
}

/// Commits a change to one app (its image tag becomes `revision`) on `main`; returns the commit id.
pub fn commit_one_app_change(repo: &StateRepo, app: &GenApp, revision: u32) -> Result<String> {
    let commit = prepare_one_app_change(repo, app, revision)?;
    move_main(repo, &commit)?;
    Ok(commit)
}

/// Writes the commit of a one-app change on top of `main` (index and work tree updated) without
/// moving `main`, so a benchmark can time from the ref move alone.
pub fn prepare_one_app_change(repo: &StateRepo, app: &GenApp, revision: u32) -> Result<String> {
    let rel = StateRepo::manifest_path(&app.name);
    std::fs::write(repo.dir.join(&rel), manifest(app, repo.seed, revision))
        .with_context(|| format!("writing {rel}"))?;
    git(&repo.dir, &["add", "--", &rel], revision)?;
    let tree = git(&repo.dir, &["write-tree"], revision)?;
    let parent = git(&repo.dir, &["rev-parse", "refs/heads/main"], revision)?;
    let message = format!("Roll {} to revision {revision}", app.name);
    git(&repo.dir, &["commit-tree", &tree, "-p", &parent, "-m", &message], revision)
}

/// Moves `refs/heads/main` to `commit` the way git does (write `main.lock`, rename it over `main`),
/// in microseconds, so the daemon's watcher sees the same file events as after `git commit`.
pub fn move_main(repo: &StateRepo, commit: &str) -> Result<()> {
    let heads = repo.dir.join(".git/refs/heads");
    let lock = heads.join("main.lock");
    std::fs::write(&lock, format!("{commit}\n")).with_context(|| format!("writing {}", lock.display()))?;
    std::fs::rename(&lock, heads.join("main")).context("moving refs/heads/main")?;
    Ok(())
}

/// Runs git in `dir` with a fixed identity and dates (offset by `tick` seconds) so commits are reproducible.
pub fn git(dir: &Path, args: &[&str], tick: u32) -> Result<String> {
    let date = format!("{} +0000", 1_767_225_600 + u64::from(tick));
    let out = Command::new("git")
        .args(["-c", "commit.gpgsign=false", "-c", "core.autocrlf=false", "-c", "gc.auto=0"])
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Keelson Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@keelson.invalid")
        .env("GIT_COMMITTER_NAME", "Keelson Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@keelson.invalid")
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .output()
        .with_context(|| format!("running git {args:?} (is git installed?)"))?;
    if !out.status.success() {
        bail!("git {args:?} in {} failed: {}", dir.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_every_kind_and_chains_at_most_three_deep() {
        let apps = plan_apps(1000, 7);
        assert_eq!(apps.len(), 1000);
        let count = |k| apps.iter().filter(|a| a.kind == k).count();
        assert_eq!(count(AppKind::Database), 50);
        assert_eq!(count(AppKind::Gpu), 100);
        assert_eq!(count(AppKind::Worker), 250);
        assert_eq!(count(AppKind::Api) + count(AppKind::Frontend), 600);
        let names: std::collections::HashSet<&str> = apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names.len(), 1000, "names are unique");
        let by_name: std::collections::HashMap<&str, &GenApp> = apps.iter().map(|a| (a.name.as_str(), a)).collect();
        fn depth(a: &GenApp, by: &std::collections::HashMap<&str, &GenApp>) -> usize {
            a.depends_on.iter().map(|d| 1 + depth(by[d.as_str()], by)).max().unwrap_or(0)
        }
        assert_eq!(apps.iter().map(|a| depth(a, &by_name)).max(), Some(3));
    }

    #[test]
    fn same_seed_same_apps_other_seed_other_apps() {
        assert_eq!(plan_apps(50, 1), plan_apps(50, 1));
        assert_ne!(plan_apps(50, 1), plan_apps(50, 2));
        let a = &plan_apps(50, 1)[10];
        assert_eq!(manifest(a, 1, 0), manifest(a, 1, 0));
        assert_ne!(manifest(a, 1, 0), manifest(a, 1, 1));
    }

    #[test]
    fn tiny_fleets_still_work() {
        for n in 1..6 {
            assert_eq!(plan_apps(n, 3).len(), n);
        }
    }
}
