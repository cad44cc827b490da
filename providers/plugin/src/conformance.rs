//! The conformance suite against a plugin executable (`keelson provider test --plugin PATH`):
//! the handshake and the renderer first, then the contract's battery
//! ([`keelson_provider_api::conformance`]) against the running plugin.
//!
//! A plugin that cannot even describe itself fails the `describe` check and nothing else runs;
//! one that crashes, hangs or answers garbage later fails each check it cannot answer. Every call
//! is bounded by the host's deadline, so a broken plugin fails the suite in bounded time.

use std::sync::Arc;

use keelson_manifest::App;
use keelson_provider_api::conformance::{self, Check, Options, Report, Subject};
use keelson_provider_api::{
    Capability, DesiredResource, IdempotencyKey, MetricsSource, Outcome, Provider, RenderCtx, Renderer, TrafficRouter,
    Variant,
};

use crate::host::{HostConfig, PluginHost};
use crate::provider::{PluginProvider, PluginRenderer};

/// The checks this suite adds before the contract's, in the order they run.
pub const PLUGIN_CHECKS: [&str; 4] = ["describe", "render", "render is pure", "render output applies"];

/// Runs the suite against the plugin `config` describes; `options` bound each call of the
/// contract's battery (the host's own deadline, `config.timeout`, bounds every call too).
pub async fn run(config: HostConfig, options: Options) -> Report {
    let host = Arc::new(PluginHost::new(config));
    let mut report =
        Report { instance: host.instance().to_string(), provider: format!("plugin {}", host.label()), checks: vec![] };
    let provider = match PluginProvider::connect(host.clone()).await {
        Ok(p) => p,
        Err(e) => {
            report.checks.push(check("describe", Err(format!("{e}; no other check can run"))));
            return report;
        }
    };
    report.checks.push(check("describe", Ok(())));
    let renderer = PluginRenderer::new(host.clone());
    let (render, pure, applies) = check_render(&renderer, &provider).await;
    report.checks.push(check("render", render));
    report.checks.push(check("render is pure", pure));
    report.checks.push(check("render output applies", applies));

    let caps = provider.descriptor().capabilities.clone();
    let subject = Subject {
        provider: &provider,
        router: caps.contains(&Capability::TrafficSplit).then_some(&provider as &dyn TrafficRouter),
        metrics: caps.contains(&Capability::Metrics).then_some(&provider as &dyn MetricsSource),
    };
    let contract = conformance::run_with(subject, options).await;
    report.provider = contract.provider;
    report.checks.extend(contract.checks);
    report
}

fn check(name: &str, result: Result<(), String>) -> Check {
    let (passed, message) = match result {
        Ok(()) => (true, String::new()),
        Err(m) => (false, m),
    };
    Check { name: name.to_owned(), kind: String::new(), passed, message }
}

/// The app every render check renders: exposed, in the suite's own namespace.
pub fn sample_app() -> App {
    serde_json::from_value(serde_json::json!({
        "apiVersion": keelson_manifest::API_VERSION,
        "kind": "App",
        "metadata": {"name": conformance::OWNER, "team": conformance::NAMESPACE},
        "spec": {
            "image": "registry.example.com/keelson-conformance:1.0.0",
            "replicas": 2,
            "placement": {"cluster": "keelson-conformance"},
            "expose": {"port": 8080, "host": "keelson-conformance.example.com"}
        }
    }))
    .expect("the sample app is a valid App")
}

async fn check_render(
    renderer: &PluginRenderer,
    provider: &PluginProvider,
) -> (Result<(), String>, Result<(), String>, Result<(), String>) {
    let app = sample_app();
    let ctx = RenderCtx {
        instance: provider.descriptor().instance.clone(),
        revision: "0000000000000000000000000000000000000000".into(),
        digest: "sha256:keelson-conformance-render".into(),
        variant: Variant::Stable,
        weight: 100,
    };
    let first = match renderer.render(&app, &ctx).await {
        Ok(r) if r.is_empty() => Err("rendered no resources for an exposed app".to_owned()),
        Ok(r) => Ok(r),
        Err(e) => Err(format!("error ({}): {e}", e.kind_label())),
    };
    let resources = match first {
        Ok(r) => r,
        Err(m) => {
            let skipped = || Err("skipped: render failed".to_owned());
            return (Err(m), skipped(), skipped());
        }
    };
    let pure = match renderer.render(&app, &ctx).await {
        Ok(again) if again == resources => Ok(()),
        Ok(again) => {
            Err(format!("a second render of the same app differs: {} vs {} resources", resources.len(), again.len()))
        }
        Err(e) => Err(format!("a second render failed: {e}")),
    };
    (Ok(()), pure, applies(provider, &resources).await)
}

/// What render produced must be accepted by apply; the suite removes it again.
async fn applies(provider: &PluginProvider, resources: &[DesiredResource]) -> Result<(), String> {
    let key = |step: u32, r: &DesiredResource| IdempotencyKey {
        app: conformance::OWNER.into(),
        rollout: 0,
        step,
        resource: r.id.to_string(),
    };
    let mut result = Ok(());
    for r in resources {
        match provider.apply(r, &key(1, r)).await {
            Ok(Outcome::Created | Outcome::Updated | Outcome::Unchanged | Outcome::Replayed) => {}
            Ok(other) => {
                result = Err(format!("apply of rendered {} answered {other:?}", r.id));
                break;
            }
            Err(e) => {
                result = Err(format!("apply of rendered {} failed: {e}", r.id));
                break;
            }
        }
    }
    for r in resources {
        let _ = provider.delete(&r.id, &key(2, r)).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_app_is_exposed_in_the_suites_namespace() {
        let app = sample_app();
        assert_eq!(app.metadata.team.as_deref(), Some(conformance::NAMESPACE));
        assert!(app.spec.expose.is_some());
    }
}
