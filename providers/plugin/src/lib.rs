//! Keelson's external-plugin host: a provider type (`type: plugin`) whose instances are
//! executables speaking newline-delimited JSON-RPC 2.0 on stdin and stdout
//! (`docs/provider-protocol.md`).
//!
//! The host ([`PluginHost`]) starts a plugin on first use, asks it to `describe` itself, and
//! supervises it: a plugin that exits is restarted with capped backoff, one that hangs past its
//! deadline or writes something that is not a protocol message is stopped and restarted, and its
//! stderr goes to the daemon's log under its instance name. Every answer is checked against the
//! protocol's JSON Schemas ([`schema`]) before it is read, so a wrong-shaped answer is an error
//! naming the method and the JSON pointer, never a misread. Each failure becomes the contract's
//! error with a class ([`CallError::class`]): what a retry can fix is transient, so the apps on a
//! crashed plugin recover by themselves once it runs again, and only those apps are affected.
#![forbid(unsafe_code)]

pub mod conformance;
mod factory;
mod host;
mod protocol;
mod provider;
pub mod schema;

pub use factory::{PluginFactory, PluginSettings, RestartSettings};
pub use host::{
    CallError, DEFAULT_MAX_RESTART_BACKOFF, DEFAULT_RESTART_BACKOFF, HostConfig, MAX_ANSWER_BYTES, PluginHost,
};
pub use protocol::{Description, Method, PROTOCOL_VERSION, ProviderEvent};
pub use provider::{PROVIDER_TYPE, PluginProvider, PluginRenderer};
