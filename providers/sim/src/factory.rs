//! `type: sim` in the daemon config: its settings and how an instance is built.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keelson_manifest::units::parse_duration;
use keelson_provider_api::{
    BuildEnv, Capability, Error, ErrorClass, Instance, InstanceName, ProviderFactory, Renderer, Result, Settings,
    Variant,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{DriftFault, Faults, Operation, SimConfig, SimProvider, SimRenderer, VariantMetrics};

/// Builds sim instances; `defaults` apply to every setting an instance does not write.
#[derive(Debug, Clone, Default)]
pub struct SimFactory {
    defaults: SimConfig,
}

impl SimFactory {
    /// A factory whose instances start from `defaults` (the daemon's `--sim-rollout-time`).
    pub fn new(defaults: SimConfig) -> Self {
        Self { defaults }
    }
}

/// The settings of one sim instance, as written in config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimSettings {
    /// Time for a workload to converge (duration text).
    #[serde(default)]
    pub rollout_time: Option<String>,
    /// Faults to inject.
    #[serde(default)]
    pub faults: FaultSettings,
}

/// Faults as written in config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSettings {
    #[serde(default)]
    fail_apply: BTreeSet<String>,
    #[serde(default)]
    fail_delete: BTreeSet<String>,
    #[serde(default)]
    forbidden: BTreeSet<String>,
    #[serde(default)]
    unavailable: BTreeSet<Operation>,
    #[serde(default)]
    slow: BTreeMap<Operation, String>,
    #[serde(default)]
    hang: BTreeSet<Operation>,
    #[serde(default)]
    degrade: BTreeMap<Variant, VariantMetrics>,
    #[serde(default)]
    drift: Vec<DriftSetting>,
}

/// One drift fault as written in config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DriftSetting {
    name: String,
    pointer: String,
    value: Value,
    #[serde(default)]
    after: Option<String>,
}

impl SimSettings {
    /// Reads settings (already checked against [`SimFactory::settings_schema`] by config loading).
    pub fn parse(instance: &InstanceName, settings: &Settings) -> Result<SimSettings> {
        serde_json::from_value(Value::Object(settings.clone())).map_err(|e| invalid(instance, e.to_string()))
    }

    /// The config of an instance: these settings over `defaults`.
    pub fn config(&self, instance: &InstanceName, defaults: &SimConfig) -> Result<SimConfig> {
        let duration = |field: &str, text: &str| -> Result<Duration> {
            parse_duration(text).map_err(|e| invalid(instance, format!("{field}: {e}")))
        };
        let rollout_time = match &self.rollout_time {
            Some(text) => duration("rolloutTime", text)?,
            None => defaults.rollout_time,
        };
        let f = &self.faults;
        let mut slow = BTreeMap::new();
        for (operation, text) in &f.slow {
            slow.insert(*operation, duration("faults.slow", text)?);
        }
        let mut faults = defaults.faults.clone();
        faults.fail_apply.extend(f.fail_apply.iter().cloned());
        faults.fail_delete.extend(f.fail_delete.iter().cloned());
        faults.forbidden.extend(f.forbidden.iter().cloned());
        faults.unavailable.extend(f.unavailable.iter().copied());
        faults.slow.extend(slow);
        faults.hang.extend(f.hang.iter().copied());
        faults.degrade.extend(f.degrade.iter().map(|(v, m)| (*v, *m)));
        for d in &f.drift {
            let after = match &d.after {
                Some(text) => duration("faults.drift.after", text)?,
                None => Duration::ZERO,
            };
            faults.drift.push(DriftFault {
                name: d.name.clone(),
                pointer: d.pointer.clone(),
                value: d.value.clone(),
                after,
            });
        }
        Ok(SimConfig { rollout_time, faults: Faults { ..faults } })
    }
}

fn invalid(instance: &InstanceName, message: String) -> Error {
    Error::Failed { instance: instance.clone(), message: format!("settings: {message}"), class: ErrorClass::Terminal }
}

#[async_trait]
impl ProviderFactory for SimFactory {
    fn provider_type(&self) -> &'static str {
        "sim"
    }

    fn summary(&self) -> &'static str {
        "the built-in simulated fleet (own SQLite file in the data directory, fault injection)"
    }

    fn capabilities(&self) -> Vec<Capability> {
        crate::CAPABILITIES.to_vec()
    }

    fn settings_schema(&self) -> Value {
        let duration = json!({"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d))+$",
                              "x-expected": "a duration such as 250ms, 2s or 1m30s"});
        let operation = json!({"enum": ["observe", "apply", "delete", "health", "setWeights", "weights", "query"]});
        let names = json!({"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": true});
        let operations = json!({"type": "array", "items": operation, "uniqueItems": true});
        let operation_names: Vec<&str> =
            ["observe", "apply", "delete", "health", "setWeights", "weights", "query"].into();
        let slow_properties: serde_json::Map<String, Value> =
            operation_names.iter().map(|op| ((*op).to_owned(), duration.clone())).collect();
        let metrics = json!({
            "type": "object", "additionalProperties": false, "required": ["successRate", "latencyP99Ms"],
            "properties": {"successRate": {"type": "number", "minimum": 0, "maximum": 100},
                           "latencyP99Ms": {"type": "number", "minimum": 0}}
        });
        let variant_properties: serde_json::Map<String, Value> =
            Variant::ALL.iter().map(|v| (v.as_str().to_owned(), metrics.clone())).collect();
        json!({
            "type": "object",
            "properties": {
                "rolloutTime": duration,
                "faults": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "failApply": names, "failDelete": names, "forbidden": names,
                        "unavailable": operations, "hang": operations,
                        "slow": {"type": "object", "additionalProperties": false, "properties": slow_properties},
                        "degrade": {"type": "object", "additionalProperties": false, "properties": variant_properties},
                        "drift": {"type": "array", "items": {
                            "type": "object", "additionalProperties": false, "required": ["name", "pointer", "value"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "pointer": {"type": "string", "pattern": "^(/([^~/]|~[01])*)+$",
                                            "x-expected": "a JSON pointer such as `/spec/replicas`"},
                                "value": {},
                                "after": duration
                            }
                        }}
                    }
                }
            }
        })
    }

    fn renderer(&self, _instance: &InstanceName, _settings: &Settings) -> Result<Arc<dyn Renderer>> {
        Ok(Arc::new(SimRenderer))
    }

    async fn build(&self, instance: &InstanceName, settings: &Settings, env: &BuildEnv) -> Result<Instance> {
        let config = SimSettings::parse(instance, settings)?.config(instance, &self.defaults)?;
        // The default instance keeps the file name every earlier release used.
        let file = if instance.as_str() == "sim" { "sim.db".to_owned() } else { format!("sim-{instance}.db") };
        let sim = Arc::new(SimProvider::open(&env.data_dir.join(file), instance, env.clock.clone(), config).await?);
        Ok(Instance {
            provider: sim.clone(),
            router: Some(sim.clone()),
            metrics: Some(sim),
            renderer: Arc::new(SimRenderer),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(v: Value) -> Settings {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn settings_override_defaults_and_add_faults() {
        let instance = InstanceName::new("lab");
        let parsed = SimSettings::parse(
            &instance,
            &settings(json!({"rolloutTime": "2s", "faults": {"failApply": ["web"], "slow": {"observe": "250ms"},
                              "hang": ["health"], "degrade": {"canary": {"successRate": 90, "latencyP99Ms": 900}}}})),
        )
        .unwrap();
        let config = parsed.config(&instance, &SimConfig::default()).unwrap();
        assert_eq!(config.rollout_time, Duration::from_secs(2));
        assert!(config.faults.fail_apply.contains("web"));
        assert_eq!(config.faults.slow[&Operation::Observe], Duration::from_millis(250));
        assert!(config.faults.hang.contains(&Operation::Health));
        assert_eq!(config.faults.degrade[&Variant::Canary].success_rate, 90.0);
        let defaults = SimSettings::default().config(&instance, &SimConfig::default()).unwrap();
        assert_eq!(defaults, SimConfig::default());
    }

    #[test]
    fn drift_faults_come_from_settings_and_from_flag_text() {
        let instance = InstanceName::new("lab");
        let parsed = SimSettings::parse(
            &instance,
            &settings(json!({"faults": {"drift": [{"name": "web", "pointer": "/spec/replicas", "value": 5, "after": "10s"}]}})),
        )
        .unwrap();
        let config = parsed.config(&instance, &SimConfig::default()).unwrap();
        let flag = DriftFault::parse("web:/spec/replicas=5@10s").unwrap();
        assert_eq!(config.faults.drift, std::slice::from_ref(&flag));
        assert_eq!((&flag.value, flag.after), (&json!(5), Duration::from_secs(10)));
        assert_eq!(flag.spec_pointer(), "/replicas");
        assert_eq!(DriftFault::parse("web:/image=registry/x:2").unwrap().value, json!("registry/x:2"));
        assert!(DriftFault::parse("web=5").unwrap_err().contains("NAME:POINTER=VALUE"));
    }

    #[test]
    fn unknown_settings_and_bad_durations_name_the_instance() {
        let instance = InstanceName::new("lab");
        let err = SimSettings::parse(&instance, &settings(json!({"rollout": "2s"}))).unwrap_err();
        assert!(err.to_string().starts_with("provider lab: settings: unknown field `rollout`"), "{err}");
        let err = SimSettings::parse(&instance, &settings(json!({"rolloutTime": "soon"})))
            .unwrap()
            .config(&instance, &SimConfig::default())
            .unwrap_err();
        assert!(err.to_string().contains("rolloutTime"), "{err}");
    }
}
