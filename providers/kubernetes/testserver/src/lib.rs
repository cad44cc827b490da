#![forbid(unsafe_code)]
//! A faithful in-memory Kubernetes API server on loopback, for tests only (never a dependency
//! of the shipped binary).
//!
//! It serves discovery, the built-in kinds Keelson's providers use and the custom resources of
//! established CRDs over real HTTP/1.1 with JSON bodies: create / get / list / watch / update /
//! merge and JSON patch / delete, and server-side apply with field ownership and conflicts as
//! the Kubernetes API server computes them. A Deployment controller moves `status` toward
//! `spec`; a garbage collector, the namespace lifecycle and CRD establishment run beside it.
//! `docs/kubernetes-testserver.md` lists how it differs from a real API server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keelson_kube_testserver::Error> {
//! use keelson_kube_testserver::{Options, TestServer};
//! let server = TestServer::start(Options::default()).await?;
//! server.kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! // ... point a kube::Client at server.url() ...
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod admission;
pub mod apply;
mod catalog;
mod controller;
pub mod fieldpath;
mod http;
mod jsonpatch;
pub mod schema;
mod selector;
mod server;
mod status;
mod store;
mod yaml;

pub use http::{Fault, RequestRecord};
pub use server::{Controllers, Error, Options, TestServer, kubeconfig_yaml};
pub use status::ApiError;
pub use store::Deny;
