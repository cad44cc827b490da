//! Keelson's benchmark harness: a generator of realistic state repositories (deterministic by
//! seed), the scenarios that measure the daemon and the library at N = 100, 1,000 and 10,000 apps,
//! peers on the same inputs, and the table, JSON and log-log charts of the results.
#![forbid(unsafe_code)]

pub mod chart;
pub mod daemon;
pub mod generator;
pub mod harness;
pub mod ledger;
pub mod measure;
pub mod peers;
pub mod report;
pub mod stats;
