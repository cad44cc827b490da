//! Keelson's Kubernetes provider (`type: kubernetes`).
//!
//! One instance per cluster. Its [`KubeRenderer`] turns an App into Kubernetes objects with no
//! cluster at hand (`keelson plan` shows them); plain-YAML folders of `manifests:` apps become
//! resources through [`manifests::render`]. [`KubeProvider`] applies each object with server-side
//! apply under the field manager `keelson`, observes exactly the fields that manager owns (from
//! `managedFields`, so defaulted and server-written fields never look like drift), reports health
//! from rollout status, and deletes with foreground propagation.
//!
//! A [`keelson_provider_api::DesiredResource`]'s `spec` is the object without the fields its id
//! already names (`apiVersion`, `kind`, `metadata.name`, `metadata.namespace`); the provider adds
//! them, and the app digest as the annotation [`DIGEST_ANNOTATION`], when it applies.
#![forbid(unsafe_code)]

mod errors;
mod factory;
pub mod fields;
pub mod health;
pub mod manifests;
mod provider;
pub mod render;
mod settings;

pub use factory::KubeFactory;
pub use provider::KubeProvider;
pub use render::KubeRenderer;
pub use settings::{KubeSettings, NamespaceMode};

/// The field manager of every apply (`managedFields[].manager`).
pub const FIELD_MANAGER: &str = "keelson";
/// Annotation holding the digest of the app an object was last applied from.
pub const DIGEST_ANNOTATION: &str = "keelson.dev/digest";
/// Annotation that lets an apply take fields over from another field manager (`"true"`).
pub const TAKE_OWNERSHIP_ANNOTATION: &str = "keelson.dev/take-ownership";
/// Label naming the owning app.
pub const APP_LABEL: &str = "keelson.dev/app";
/// Label naming the owning team.
pub const TEAM_LABEL: &str = "keelson.dev/team";
/// Label naming the variant (stable, canary, blue, green) of a workload.
pub const VARIANT_LABEL: &str = "keelson.dev/variant";
/// The standard `app.kubernetes.io/managed-by` label; its value is `keelson`.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The standard `app.kubernetes.io/name` label; its value is the app's name.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
