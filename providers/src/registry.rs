//! Provider instances by name, and which instance serves each cluster role.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Error, Provider, Result};

/// Named provider instances (`providers:` in config; `sim` for `keelson up`).
#[derive(Clone, Default)]
pub struct Registry {
    instances: BTreeMap<String, Arc<dyn Provider>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an instance.
    pub fn insert(&mut self, name: impl Into<String>, provider: Arc<dyn Provider>) {
        self.instances.insert(name.into(), provider);
    }

    /// The instance with this name.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Provider>> {
        self.instances.get(name).cloned().ok_or_else(|| Error::NoSuchInstance(name.to_owned()))
    }

    /// Names of all instances.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.instances.keys().map(String::as_str)
    }
}
