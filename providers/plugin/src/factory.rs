//! `type: plugin` in the daemon config: its settings and how an instance is built.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keelson_manifest::units::parse_duration;
use keelson_provider_api::{
    BuildEnv, Capability, Error, ErrorClass, Instance, InstanceName, MetricsSource, Provider, ProviderFactory,
    Renderer, Result, Settings, TrafficRouter,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::host::{HostConfig, PluginHost};
use crate::provider::{PROVIDER_TYPE, PluginProvider, PluginRenderer};

/// Builds plugin instances.
#[derive(Debug, Clone, Copy, Default)]
pub struct PluginFactory;

/// The settings of one plugin instance, as written in config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSettings {
    /// The executable and its arguments.
    pub command: Vec<String>,
    /// Environment variables for it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Its working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// How it is restarted after it exits.
    #[serde(default)]
    pub restart: RestartSettings,
}

/// `restart:` of a plugin instance.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartSettings {
    /// First wait before a restart (duration text).
    #[serde(default)]
    pub backoff: Option<String>,
    /// Longest wait (duration text).
    #[serde(default)]
    pub max_backoff: Option<String>,
}

impl PluginSettings {
    /// Reads settings (already checked against [`PluginFactory`]'s schema by config loading).
    pub fn parse(instance: &InstanceName, settings: &Settings) -> Result<PluginSettings> {
        let parsed: PluginSettings =
            serde_json::from_value(Value::Object(settings.clone())).map_err(|e| invalid(instance, e.to_string()))?;
        if parsed.command.first().is_none_or(|p| p.is_empty()) {
            return Err(invalid(
                instance,
                "command: name the plugin executable, e.g. [/usr/local/bin/keelson-dns]".into(),
            ));
        }
        Ok(parsed)
    }

    /// How to run the plugin for `instance`, with a deadline of `timeout` per call.
    pub fn host_config(&self, instance: &InstanceName, timeout: Duration) -> Result<HostConfig> {
        let duration = |field: &str, text: &Option<String>, default: Duration| -> Result<Duration> {
            match text {
                None => Ok(default),
                Some(t) => parse_duration(t).map_err(|e| invalid(instance, format!("restart.{field}: {e}"))),
            }
        };
        let mut config = HostConfig::new(instance.clone(), self.command.clone());
        config.command[0] = resolve(&self.command[0]);
        config.env = self.env.clone();
        config.working_dir = self.working_dir.as_deref().map(|d| PathBuf::from(resolve(d)));
        config.timeout = timeout;
        config.restart_backoff = duration("backoff", &self.restart.backoff, config.restart_backoff)?;
        config.max_restart_backoff =
            duration("maxBackoff", &self.restart.max_backoff, config.max_restart_backoff)?.max(config.restart_backoff);
        Ok(config)
    }
}

/// A relative path (`./plugins/dns`) is taken from the daemon's working directory, whatever the
/// plugin's own `workingDir`; a bare name (`keelson-dns`) is looked up in `PATH`.
fn resolve(path: &str) -> String {
    let p = Path::new(path);
    if p.is_relative()
        && path.contains('/')
        && let Ok(cwd) = std::env::current_dir()
    {
        return cwd.join(p).display().to_string();
    }
    path.to_owned()
}

fn invalid(instance: &InstanceName, message: String) -> Error {
    Error::Failed { instance: instance.clone(), message: format!("settings: {message}"), class: ErrorClass::Terminal }
}

#[async_trait]
impl ProviderFactory for PluginFactory {
    fn provider_type(&self) -> &'static str {
        PROVIDER_TYPE
    }

    fn summary(&self) -> &'static str {
        "an external executable speaking JSON-RPC 2.0 over stdio (docs/provider-protocol.md); its describe declares what it can do"
    }

    /// Whatever a plugin may declare: the instance's own capabilities are known only from its
    /// `describe`, which the daemon checks against the cluster roles when it starts.
    fn capabilities(&self) -> Vec<Capability> {
        vec![
            Capability::Workloads,
            Capability::Scale,
            Capability::TrafficSplit,
            Capability::Metrics,
            Capability::Health,
            Capability::DryRun,
            Capability::Capacity,
            Capability::GpuAllocation,
        ]
    }

    fn settings_schema(&self) -> Value {
        let duration = json!({"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d))+$",
                              "x-expected": "a duration such as 250ms, 2s or 1m30s"});
        json!({
            "type": "object",
            "required": ["command"],
            "properties": {
                "command": {
                    "type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1},
                    "x-expected": "the executable and its arguments, e.g. [/usr/local/bin/keelson-dns, --zone, example.com]"
                },
                "env": {"type": "object", "additionalProperties": {"type": "string"},
                        "x-expected": "a mapping of variable names to text values"},
                "workingDir": {"type": "string", "minLength": 1},
                "restart": {
                    "type": "object", "additionalProperties": false,
                    "properties": {"backoff": duration, "maxBackoff": duration}
                }
            }
        })
    }

    fn renderer(&self, instance: &InstanceName, settings: &Settings) -> Result<Arc<dyn Renderer>> {
        let config = PluginSettings::parse(instance, settings)?
            .host_config(instance, keelson_provider_api::deadline::DEFAULT)?;
        Ok(Arc::new(PluginRenderer::new(Arc::new(PluginHost::new(config)))))
    }

    async fn build(&self, instance: &InstanceName, settings: &Settings, env: &BuildEnv) -> Result<Instance> {
        let mut config = PluginSettings::parse(instance, settings)?.host_config(instance, env.timeout)?;
        config.data_dir = Some(env.data_dir.join("plugins").join(instance.as_str()));
        let host = Arc::new(PluginHost::new(config));
        let provider = Arc::new(PluginProvider::connect(host.clone()).await?);
        let descriptor = provider.descriptor();
        let router = descriptor.has(Capability::TrafficSplit).then(|| provider.clone() as Arc<dyn TrafficRouter>);
        let metrics = descriptor.has(Capability::Metrics).then(|| provider.clone() as Arc<dyn MetricsSource>);
        Ok(Instance { provider, router, metrics, renderer: Arc::new(PluginRenderer::new(host)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(v: Value) -> Settings {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn settings_read_into_a_host_config() {
        let instance = InstanceName::new("dns");
        let parsed = PluginSettings::parse(
            &instance,
            &settings(json!({"command": ["/opt/dns", "--zone", "example.com"], "env": {"ZONE": "example.com"},
                             "workingDir": "/var/lib/dns", "restart": {"backoff": "2s", "maxBackoff": "1m"}})),
        )
        .unwrap();
        let config = parsed.host_config(&instance, Duration::from_secs(30)).unwrap();
        assert_eq!(config.command, ["/opt/dns", "--zone", "example.com"]);
        assert_eq!(config.env["ZONE"], "example.com");
        assert_eq!(config.working_dir.as_deref(), Some(Path::new("/var/lib/dns")));
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert_eq!(
            (config.restart_backoff, config.max_restart_backoff),
            (Duration::from_secs(2), Duration::from_secs(60))
        );
    }

    #[test]
    fn relative_commands_are_taken_from_the_daemons_directory_and_bare_names_from_path() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(resolve("./plugins/dns"), cwd.join("./plugins/dns").display().to_string());
        assert_eq!(resolve("keelson-dns"), "keelson-dns");
        assert_eq!(resolve("/opt/dns"), "/opt/dns");
    }

    #[test]
    fn bad_settings_name_the_instance_and_the_field() {
        let instance = InstanceName::new("dns");
        let err = PluginSettings::parse(&instance, &settings(json!({"command": []}))).unwrap_err();
        assert!(err.to_string().starts_with("provider dns: settings: command:"), "{err}");
        let err =
            PluginSettings::parse(&instance, &settings(json!({"command": ["x"], "restart": {"backoff": "soon"}})))
                .unwrap()
                .host_config(&instance, Duration::from_secs(5))
                .unwrap_err();
        assert!(err.to_string().contains("restart.backoff"), "{err}");
    }
}
