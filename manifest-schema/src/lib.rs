//! Keelson manifests: the App, Policy and Config kinds, their JSON Schemas, span-aware YAML
//! parsing with `file:line:col` diagnostics, semantic checks, and content digests.
//!
//! Entry points: [`Loader::load`] for a whole state repository, [`check_file`] for
//! `keelson validate FILE`, and [`parse_config`] for the daemon's `keelson.yaml`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod canonical;
pub mod config;
pub mod diagnostic;
pub mod digest;
pub mod ids;
pub mod loader;
pub mod not_built;
pub mod policy;
pub mod schema;
mod semantic;
mod suggest;
pub mod units;
pub mod validate;
pub mod yaml;

#[cfg(test)]
mod testing;

pub use app::{App, AppSpec, Metadata, Placement};
pub use config::{Config, parse_config};
pub use diagnostic::{Diagnostic, Severity};
pub use ids::{AppName, CommitId, Digest};
pub use loader::{DesiredState, EntryKind, FileChange, LoadOutcome, LoadedApp, LoadedPolicy, Loader, RepoFile};
pub use policy::Policy;
pub use schema::Kind;
pub use validate::{Manifest, check_file};

/// The one API version this release reads.
pub const API_VERSION: &str = "keelson.dev/v1alpha1";

/// Errors of this crate that are not diagnostics about a user's file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value cannot be written as RFC 8785 canonical JSON.
    #[error("cannot canonicalize JSON: {0}")]
    Canonical(String),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
