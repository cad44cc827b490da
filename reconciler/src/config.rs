//! Daemon configuration: `keelson.yaml` (kind `Config`, schema-validated like manifests) merged with
//! command-line flags, which win. Trust settings live here, never in the repository they protect.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use keelson_manifest::config::{Config, parse_config};

use crate::cli::{DaemonArgs, parse_duration};
use crate::daemon::DaemonOptions;

/// Reads and validates a config file; every problem is reported as `file:line:col: error: …`.
pub fn load(path: &Path) -> Result<Config> {
    let bytes = std::fs::read(path).with_context(|| format!("reading config {}", path.display()))?;
    parse_config(&path.display().to_string(), &bytes).map_err(|diagnostics| {
        let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid config {}:\n{}", path.display(), lines.join("\n"))
    })
}

/// Merges flags over the config file over built-in defaults.
pub fn daemon_options(args: DaemonArgs, config: Option<Config>) -> Result<DaemonOptions> {
    let config = config.unwrap_or_default();
    let source = config.source.clone().unwrap_or_default();
    if source.require_signed_commits {
        bail!(
            "source.requireSignedCommits is set, but signed-commit verification is not built yet; \
             refusing to run without the protection you asked for (remove the setting to run unverified)"
        );
    }
    if source.webhook.is_some() {
        tracing::warn!("source.webhook is not built yet and is ignored; the tracked branch is watched and polled");
    }
    if config.drift.is_some() {
        tracing::warn!("drift.schedule is not built yet and is ignored");
    }
    let status = config.status.clone().unwrap_or_default();
    if status.repo.is_some() {
        bail!(
            "status.repo (a separate status repository) is not built yet; remove it to record on the state repository"
        );
    }
    let repo = args.repo.or(source.repo).context("no repository: pass --repo PATH or set source.repo in the config")?;
    if repo.contains("://") || repo.starts_with("git@") {
        bail!(
            "remote repositories are not supported yet ({repo}); clone it and pass the local path: git clone {repo} state && keelson daemon --repo state"
        );
    }
    let listen: SocketAddr = match (args.listen, config.api.as_ref().and_then(|a| a.listen.clone())) {
        (Some(l), _) => l,
        (None, Some(l)) => {
            l.parse().with_context(|| format!("api.listen {l:?} is not an address like 127.0.0.1:7420"))?
        }
        (None, None) => "127.0.0.1:7420".parse().expect("valid default address"),
    };
    let poll_interval = match source.poll_interval.as_deref() {
        Some(p) if args.tuning.poll_interval == Duration::from_secs(5) => {
            parse_duration(p).map_err(|e| anyhow::anyhow!("source.pollInterval: {e}"))?
        }
        _ => args.tuning.poll_interval,
    };
    Ok(DaemonOptions {
        repo: PathBuf::from(repo),
        branch: args.branch.or(source.branch).unwrap_or_else(|| "main".into()),
        path: args.path.or(source.path).unwrap_or_default(),
        database: args.database.or(config.database.clone()),
        data_dir: args.data_dir,
        listen,
        status_branch: args.status_branch.or(status.branch).unwrap_or_else(|| "keelson/status".into()),
        poll_interval,
        sim_rollout_time: args.tuning.sim_rollout_time,
        progress_deadline: args.tuning.progress_deadline,
        pass_budget: args.tuning.pass_budget,
        providers: config.providers.clone(),
        clusters: config.clusters.iter().map(|(k, v)| (k.clone(), v.workloads.clone())).collect(),
        safeguards: args.tuning.safeguards,
    })
}
