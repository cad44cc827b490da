//! The ledger's domain (entries, canonical form, hash, verification) lives in `keelson-core`,
//! which has no I/O; the stores here only move its rows.

pub use keelson_core::ledger::*;
