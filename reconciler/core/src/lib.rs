//! Keelson's domain, without I/O: no database, git, HTTP or async runtime here, so every rule can be
//! tested exhaustively and fast. The reconciler (`keelson`) carries out what this crate decides.
//!
//! - [`phase`]: the app state machine's phases.
//! - [`event`]: the typed, versioned events each ledger entry records.
//! - [`ledger`]: the ledger entry, its canonical form and hash, and the chain verifier.
//! - [`fleet`]: the status of every app, folded from the events.
//! - [`decide`]: the per-app decision; [`order`]: dependency order.
//! - [`diff`]: field and resource diffs for plans; [`verdict`]: what policy said.
//! - [`view`]: the JSON the API writes and the CLI reads.
#![forbid(unsafe_code)]

pub mod decide;
pub mod diff;
pub mod event;
pub mod fleet;
pub mod ledger;
pub mod order;
pub mod phase;
pub mod verdict;
pub mod view;

pub use event::Event;
pub use fleet::{AppStatus, Apps};
pub use ledger::{LedgerEntry, NewEntry};
pub use phase::Phase;

/// The first 12 characters of an id or digest (`sha256:` dropped), for messages.
pub fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.get(..12).unwrap_or(id)
}
