//! Keelson: a GitOps reconciler daemon. The binary `keelson` is a thin CLI over this library.
//!
//! The data flows one way: [`source`] (git) → loader (`keelson-manifest`) → [`plan`] → [`engine`]
//! (execute through providers) → [`ledger`] (audit chain) → [`record`] (status branch) → [`api`].
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod crash;
pub mod daemon;
pub mod engine;
pub mod health;
pub mod init;
pub mod ledger;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod providers;
pub mod record;
pub mod source;
#[cfg(test)]
mod testing;
pub mod validate;
