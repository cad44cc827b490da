//! Daemon configuration: `keelson.yaml` (kind `Config`, schema-validated like manifests) merged with
//! command-line flags, which win. Trust settings live here, never in the repository they protect.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use keelson_manifest::config::{Config, check_config};
use keelson_manifest::yaml::{Document, pointer_push};
use keelson_manifest::{Diagnostic, Kind, Severity, not_built};
use serde_json::json;

use crate::cli::{DaemonArgs, parse_duration};
use crate::daemon::DaemonOptions;

/// Reads and validates a config file; every problem is reported as `file:line:col: error: …`.
/// Warnings (settings accepted but not carried out) come back beside the config.
pub fn load(path: &Path) -> Result<(Config, Vec<Diagnostic>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading config {}", path.display()))?;
    let (config, diagnostics) = check(&path.display().to_string(), &bytes);
    match config {
        Some(config) => Ok((config, diagnostics)),
        None => {
            let lines: Vec<String> = diagnostics.iter().filter(|d| d.is_error()).map(ToString::to_string).collect();
            Err(anyhow::anyhow!("invalid config {}:\n{}", path.display(), lines.join("\n")))
        }
    }
}

/// Validates a config document: its schema and settings that are not built yet, then each provider
/// instance's settings against the schema its type declares. The config is returned (with its
/// warnings) only when there is no error.
pub fn check(file: &str, bytes: &[u8]) -> (Option<Config>, Vec<Diagnostic>) {
    // A diagnostic may quote the value it is about; `database` may hold a password.
    let mask = |mut diagnostics: Vec<Diagnostic>| {
        for d in &mut diagnostics {
            d.message = crate::ledger::redact(&d.message);
        }
        diagnostics
    };
    let (config, mut diagnostics) = match check_config(file, bytes) {
        Ok((config, warnings)) => (config, mask(warnings)),
        Err(errors) => return (None, mask(errors)),
    };
    if let Ok(mut docs) = keelson_manifest::yaml::parse(file, bytes)
        && !docs.is_empty()
    {
        let doc = docs.remove(0);
        diagnostics.extend(check_provider_settings(file, &doc, &config));
    }
    if diagnostics.iter().any(Diagnostic::is_error) { (None, diagnostics) } else { (Some(config), diagnostics) }
}

/// Each `providers.<name>` against its type: a known `type:`, and settings that type accepts.
fn check_provider_settings(file: &str, doc: &Document, config: &Config) -> Vec<Diagnostic> {
    let factories = crate::providers::factories(Default::default());
    let mut out = Vec::new();
    for (name, provider) in &config.providers {
        let instance = pointer_push("/providers", name);
        let factory = match factories.get(&provider.kind) {
            Ok(f) => f,
            Err(message) => {
                let pointer = pointer_push(&instance, "type");
                out.push(Diagnostic::error(
                    file,
                    doc.spans.locate_value(&pointer),
                    &pointer,
                    "config.provider-type",
                    format!("provider `{name}`: {message}"),
                ));
                continue;
            }
        };
        let mut settings = factory.settings_schema();
        let properties = settings.as_object_mut().and_then(|o| {
            o.insert("additionalProperties".into(), json!(false));
            o.entry("properties").or_insert_with(|| json!({})).as_object_mut()
        });
        if let Some(properties) = properties {
            properties.insert("type".into(), json!({"type": "string"}));
            properties.insert("timeout".into(), json!({"type": "string"}));
        }
        let wrapper = json!({"type": "object", "properties": {"providers": {"type": "object",
            "properties": {name.clone(): settings}}}});
        out.extend(keelson_manifest::schema::validate_with(file, doc, &wrapper));
    }
    out
}

/// Settings of a typed config that are accepted but not carried out (see
/// [`keelson_manifest::not_built`]): errors for those unsafe to ignore, as `(severity, message)`.
pub fn not_built_settings(config: &Config) -> Vec<(Severity, String)> {
    let value = serde_json::to_value(config).unwrap_or_default();
    not_built::findings(Kind::Config, &value).into_iter().map(|(row, _, message)| (row.severity, message)).collect()
}

/// Merges flags over the config file over built-in defaults.
pub fn daemon_options(args: DaemonArgs, config: Option<Config>) -> Result<DaemonOptions> {
    let config = config.unwrap_or_default();
    let source = config.source.clone().unwrap_or_default();
    // One table says what is not built (keelson_manifest::not_built); `load` already refused its
    // errors with positions, this covers a config that did not come through it.
    let mut not_built = Vec::new();
    for (severity, message) in not_built_settings(&config) {
        match severity {
            Severity::Error => bail!("{message}"),
            Severity::Warning => not_built.push(message),
        }
    }
    let status = config.status.clone().unwrap_or_default();
    let repo =
        args.repo.or(source.repo).context("no repository: pass --repo PATH|URL or set source.repo in the config")?;
    let remote_repo = crate::source::transport::is_remote(&repo);
    let listen: SocketAddr = match (args.listen, config.api.as_ref().and_then(|a| a.listen.clone())) {
        (Some(l), _) => l,
        (None, Some(l)) => {
            l.parse().with_context(|| format!("api.listen {l:?} is not an address like 127.0.0.1:7420"))?
        }
        (None, None) => "127.0.0.1:7420".parse().expect("valid default address"),
    };
    let poll_flag = (args.tuning.poll_interval != Duration::from_secs(5)).then_some(args.tuning.poll_interval);
    let poll_config = source
        .poll_interval
        .as_deref()
        .map(|p| parse_duration(p).map_err(|e| anyhow::anyhow!("source.pollInterval: {e}")))
        .transpose()?;
    let poll_interval = poll_flag.or(poll_config).unwrap_or(args.tuning.poll_interval);
    let remote = if remote_repo {
        let creds = source.credentials.clone().unwrap_or_default();
        let credentials = crate::source::transport::Credentials {
            username: args.username.or(creds.username),
            password_file: args.password_file.or(creds.password_file.map(PathBuf::from)),
            token_file: args.token_file.or(creds.token_file.map(PathBuf::from)),
            ssh_key_file: args.ssh_key_file.or(creds.ssh_key_file.map(PathBuf::from)),
            known_hosts_file: args.known_hosts_file.or(creds.known_hosts_file.map(PathBuf::from)),
        };
        let push_interval = match (args.push_interval, status.push_interval.as_deref()) {
            (Some(d), _) => d,
            (None, Some(p)) => parse_duration(p).map_err(|e| anyhow::anyhow!("status.pushInterval: {e}"))?,
            (None, None) => Duration::from_secs(2),
        };
        Some(crate::daemon::RemoteOptions {
            url: repo.clone(),
            credentials,
            allow_force_push: source.allow_force_push.unwrap_or(true),
            // A remote is asked once a minute unless told otherwise; a webhook fetches at once.
            poll_interval: poll_flag.or(poll_config).unwrap_or(Duration::from_secs(60)),
            push_interval,
        })
    } else {
        None
    };
    let webhook = match (args.webhook_listen, source.webhook.as_ref()) {
        (Some(listen), _) => Some(crate::daemon::WebhookOptions {
            listen,
            secret_file: args.webhook_secret_file.context("--webhook-listen requires --webhook-secret-file")?,
        }),
        (None, Some(w)) => Some(crate::daemon::WebhookOptions {
            listen: w
                .listen
                .parse()
                .with_context(|| format!("source.webhook.listen {:?} is not an address like 0.0.0.0:7421", w.listen))?,
            secret_file: args
                .webhook_secret_file
                .or(w.secret_file.as_ref().map(PathBuf::from))
                .context("source.webhook needs secretFile (a file holding the shared secret)")?,
        }),
        (None, None) => None,
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
        concurrency: args
            .tuning
            .concurrency
            .or(config.concurrency)
            .map_or(crate::daemon::DEFAULT_CONCURRENCY, |n| n.clamp(1, 1024) as usize),
        providers: config.providers.clone(),
        clusters: config.clusters.clone(),
        not_built,
        drift: drift_options(config.drift.as_ref(), args.tuning.drift_interval)?,
        prune_max_percent: config
            .prune_guard
            .as_ref()
            .and_then(|g| g.max_percent)
            .map_or(crate::engine::DEFAULT_PRUNE_MAX_PERCENT, |p| p.min(100)),
        dry_run: args.dry_run,
        sim_drift: args.tuning.sim_drift,
        remote,
        webhook,
        status_author: status.author.map(|a| (a.name, a.email)),
        safeguards: args.tuning.safeguards,
    })
}

/// `drift:` in config, under `--drift-interval`.
fn drift_options(
    drift: Option<&keelson_manifest::config::DriftConfig>,
    flag: Option<Duration>,
) -> Result<crate::daemon::DriftOptions> {
    let mut out = crate::daemon::DriftOptions::default();
    let Some(drift) = drift else {
        out.interval = flag.unwrap_or(out.interval);
        return Ok(out);
    };
    out.interval = match (flag, drift.interval.as_deref()) {
        (Some(d), _) => d,
        (None, Some(text)) => parse_duration(text).map_err(|e| anyhow::anyhow!("drift.interval: {e}"))?,
        (None, None) => out.interval,
    };
    if out.interval.is_zero() {
        bail!("drift.interval must be longer than 0s (write e.g. `5m`)");
    }
    if let Some(text) = drift.schedule.as_deref() {
        out.schedule =
            Some(crate::policy::freeze::parse_cron(text).map_err(|e| anyhow::anyhow!("drift.schedule: {e}"))?);
    }
    out.ignore_by_kind = drift.ignore_differences.clone();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon_args(extra: &[&str]) -> DaemonArgs {
        use clap::Parser as _;
        let mut argv = vec!["keelson", "daemon", "--repo", "/srv/state"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Daemon(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn drift_prune_guard_and_dry_run_come_from_config_and_flags() {
        let yaml = "apiVersion: keelson.dev/v1alpha1\nkind: Config\ndrift:\n  interval: 2m\n  schedule: \"*/10 * * * *\"\n  \
                    ignoreDifferences:\n    Deployment: [/spec/replicas]\npruneGuard: {maxPercent: 30}\n";
        let (config, diagnostics) = check("keelson.yaml", yaml.as_bytes());
        assert!(diagnostics.is_empty(), "drift and pruneGuard are built: {diagnostics:#?}");
        let opts = daemon_options(daemon_args(&["--dry-run"]), config.clone()).unwrap();
        assert_eq!(opts.drift.interval, Duration::from_secs(120));
        assert!(opts.drift.schedule.is_some());
        assert_eq!(opts.drift.ignore_by_kind["Deployment"], ["/spec/replicas"]);
        assert_eq!((opts.prune_max_percent, opts.dry_run), (30, true));
        let opts = daemon_options(daemon_args(&["--drift-interval", "15s"]), config).unwrap();
        assert_eq!((opts.drift.interval, opts.dry_run), (Duration::from_secs(15), false), "the flag wins");
        let defaults = daemon_options(daemon_args(&[]), None).unwrap();
        assert_eq!((defaults.drift.interval, defaults.prune_max_percent), (Duration::from_secs(300), 50));
        let bad = "apiVersion: keelson.dev/v1alpha1\nkind: Config\ndrift: {interval: soon}\n";
        let errors = diagnostics_of(bad);
        assert!(errors.iter().any(|e| e.contains("/drift/interval")), "{errors:#?}");
    }

    fn diagnostics_of(yaml: &str) -> Vec<String> {
        check("keelson.yaml", yaml.as_bytes()).1.iter().filter(|d| d.is_error()).map(ToString::to_string).collect()
    }

    fn diagnostics(yaml: &str) -> Vec<String> {
        check("keelson.yaml", yaml.as_bytes()).1.iter().filter(|d| d.is_error()).map(ToString::to_string).collect()
    }

    #[test]
    fn provider_settings_are_checked_against_their_type_with_positions() {
        let yaml = "apiVersion: keelson.dev/v1alpha1\nkind: Config\nproviders:\n  lab:\n    type: sim\n    \
                    rolloutTime: soon\n    faults:\n      hang: [forever]\n    colour: blue\n";
        let found = diagnostics(yaml);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].starts_with("keelson.yaml:6:18: error: "), "{found:#?}");
        assert!(found[0].contains("a duration such as 250ms, 2s or 1m30s"), "{found:#?}");
        assert!(found[1].starts_with("keelson.yaml:8:14: error: "), "{found:#?}");
        assert!(found[1].contains("expected one of `observe`, `apply`"), "{found:#?}");
        assert!(
            found[2].starts_with("keelson.yaml:9:5: error: /providers/lab/colour: unknown field `colour`"),
            "{found:#?}"
        );
    }

    #[test]
    fn an_unknown_provider_type_lists_the_types_of_this_build() {
        let yaml = "apiVersion: keelson.dev/v1alpha1\nkind: Config\nproviders:\n  k8s:\n    type: istio\n";
        let found = diagnostics(yaml);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with(
                "keelson.yaml:5:11: error: /providers/k8s/type: provider `k8s`: unknown provider type \"istio\"; this build has: kubernetes, plugin, sim"
            ),
            "{found:#?}"
        );
        assert!(check("keelson.yaml", yaml.as_bytes()).0.is_none());
    }

    #[test]
    fn plugin_settings_are_checked_at_load_with_positions() {
        let yaml = "apiVersion: keelson.dev/v1alpha1\nkind: Config\nproviders:\n  dns:\n    type: plugin\n    \
                    env:\n      ZONE: 5\n    restart:\n      backoff: soon\n  bare:\n    type: plugin\n";
        let found = diagnostics(yaml);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(
            found[0].contains("/providers/bare") && found[0].contains("missing required field `command`"),
            "{found:#?}"
        );
        assert!(
            found[1].contains("/providers/dns") && found[1].contains("missing required field `command`"),
            "{found:#?}"
        );
        assert!(found[2].starts_with("keelson.yaml:7:13: error: /providers/dns/env/ZONE"), "{found:#?}");
        assert!(found[3].starts_with("keelson.yaml:9:16: error: /providers/dns/restart/backoff"), "{found:#?}");
        let fine = "apiVersion: keelson.dev/v1alpha1\nkind: Config\nproviders:\n  dns:\n    type: plugin\n    \
                    command: [/usr/local/bin/keelson-dns, --zone, example.com]\n    timeout: 30s\n    \
                    env: {ZONE: example.com}\n    workingDir: /var/lib/dns\n    restart: {backoff: 1s, maxBackoff: 1m}\n";
        let (config, found) = check("keelson.yaml", fine.as_bytes());
        assert!(found.is_empty(), "{found:#?}");
        assert!(config.is_some());
    }

    #[test]
    fn valid_settings_and_a_timeout_pass() {
        let yaml = "apiVersion: keelson.dev/v1alpha1\nkind: Config\nproviders:\n  lab:\n    type: sim\n    timeout: 2s\n    \
                    rolloutTime: 1s\n    faults:\n      degrade:\n        canary: {successRate: 90, latencyP99Ms: 800}\n\
                    clusters:\n  prod:\n    workloads: lab\n    mesh: lab\n    metrics: lab\n";
        let (config, found) = check("keelson.yaml", yaml.as_bytes());
        assert!(!found.iter().any(Diagnostic::is_error), "{found:#?}");
        let config = config.unwrap();
        assert_eq!(config.clusters["prod"].mesh.as_deref(), Some("lab"), "every role is kept");
    }
}
