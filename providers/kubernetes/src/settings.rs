//! The settings of one `type: kubernetes` instance, as written under `providers.<name>`.

use std::path::PathBuf;

use keelson_provider_api::{Error, ErrorClass, InstanceName, Result, Settings};
use serde::Deserialize;
use serde_json::{Value, json};

/// Where an app's namespaced objects go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NamespaceMode {
    /// One namespace per team (`metadata.team`, else `default`), shared by the team's apps:
    /// created when first needed and never pruned with an app.
    #[default]
    Team,
    /// One namespace per app, named after it, rendered as the app's own object (pruned with it).
    App,
}

/// The settings of one instance.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeSettings {
    /// Kubeconfig file; without it (and without `inCluster`) `$KUBECONFIG` or `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig [default: its current context].
    #[serde(default)]
    pub context: Option<String>,
    /// Use the service account the daemon runs as inside a pod.
    #[serde(default)]
    pub in_cluster: bool,
    /// Namespace per team (default) or per app.
    #[serde(default)]
    pub namespaces: NamespaceMode,
    /// `spec.ingressClassName` of rendered Ingresses [default: the cluster's default class].
    #[serde(default)]
    pub ingress_class: Option<String>,
    /// Most API requests in flight at once (client-side throttling) [default: 16].
    #[serde(default)]
    pub max_in_flight: Option<usize>,
}

impl KubeSettings {
    /// Reads settings (already checked against [`schema`] by config loading).
    pub fn parse(instance: &InstanceName, settings: &Settings) -> Result<KubeSettings> {
        let parsed: KubeSettings = serde_json::from_value(Value::Object(settings.clone())).map_err(|e| {
            Error::Failed { instance: instance.clone(), message: format!("settings: {e}"), class: ErrorClass::Terminal }
        })?;
        if parsed.in_cluster && (parsed.kubeconfig.is_some() || parsed.context.is_some()) {
            return Err(Error::Failed {
                instance: instance.clone(),
                message: "settings: `inCluster: true` excludes `kubeconfig` and `context`; keep one".into(),
                class: ErrorClass::Terminal,
            });
        }
        Ok(parsed)
    }

    /// Most requests in flight.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.unwrap_or(16).max(1)
    }
}

/// JSON Schema of the settings.
pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "kubeconfig": {"type": "string", "minLength": 1},
            "context": {"type": "string", "minLength": 1},
            "inCluster": {"type": "boolean"},
            "namespaces": {"enum": ["team", "app"]},
            "ingressClass": {"type": "string", "minLength": 1},
            "maxInFlight": {"type": "integer", "minimum": 1, "maximum": 1024}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(v: Value) -> Settings {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn settings_read_and_default() {
        let i = InstanceName::new("prod");
        let s = KubeSettings::parse(
            &i,
            &settings(json!({"kubeconfig": "/etc/k", "context": "east", "namespaces": "app", "ingressClass": "nginx"})),
        )
        .unwrap();
        assert_eq!(s.kubeconfig.as_deref(), Some(std::path::Path::new("/etc/k")));
        assert_eq!(s.namespaces, NamespaceMode::App);
        assert_eq!(s.max_in_flight(), 16);
        assert_eq!(KubeSettings::parse(&i, &Settings::new()).unwrap().namespaces, NamespaceMode::Team);
    }

    #[test]
    fn unknown_fields_and_contradictions_name_the_instance() {
        let i = InstanceName::new("prod");
        let e = KubeSettings::parse(&i, &settings(json!({"kubeConfig": "/x"}))).unwrap_err();
        assert!(e.to_string().starts_with("provider prod: settings: unknown field `kubeConfig`"), "{e}");
        let e = KubeSettings::parse(&i, &settings(json!({"inCluster": true, "kubeconfig": "/x"}))).unwrap_err();
        assert!(e.to_string().contains("excludes `kubeconfig`"), "{e}");
    }
}
