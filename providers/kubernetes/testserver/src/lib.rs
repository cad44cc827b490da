#![forbid(unsafe_code)]
//! A faithful in-memory Kubernetes API server on loopback, for tests only.

pub mod apply;
pub mod fieldpath;
pub mod schema;
