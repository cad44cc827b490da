//! `type: kubernetes` in the daemon config: settings, renderer, and how an instance is built.

use std::sync::Arc;

use async_trait::async_trait;
use keelson_provider_api::{BuildEnv, Capability, Instance, InstanceName, ProviderFactory, Renderer, Result, Settings};
use serde_json::Value;

use crate::provider::CAPABILITIES;
use crate::settings::{self, KubeSettings};
use crate::{KubeProvider, KubeRenderer};

/// Builds Kubernetes instances, one per cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct KubeFactory;

#[async_trait]
impl ProviderFactory for KubeFactory {
    fn provider_type(&self) -> &'static str {
        "kubernetes"
    }

    fn summary(&self) -> &'static str {
        "a Kubernetes cluster through server-side apply (field manager keelson); kubeconfig or in-cluster"
    }

    fn capabilities(&self) -> Vec<Capability> {
        CAPABILITIES.to_vec()
    }

    fn settings_schema(&self) -> Value {
        settings::schema()
    }

    fn renderer(&self, instance: &InstanceName, settings: &Settings) -> Result<Arc<dyn Renderer>> {
        Ok(Arc::new(KubeRenderer::new(&KubeSettings::parse(instance, settings)?)))
    }

    async fn build(&self, instance: &InstanceName, settings: &Settings, _env: &BuildEnv) -> Result<Instance> {
        let settings = KubeSettings::parse(instance, settings)?;
        let provider = KubeProvider::connect(instance, &settings).await?;
        Ok(Instance {
            provider: Arc::new(provider),
            router: None,
            metrics: None,
            renderer: Arc::new(KubeRenderer::new(&settings)),
        })
    }
}
