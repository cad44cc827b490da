//! Limits that keep the daemon itself safe: from a flood of API connections, from a shutdown that
//! cannot finish, and from recording a new audit chain over an old one by accident.

use std::time::Duration;

use clap::Args;

use crate::cli::parse_duration;

/// Flags shared by `keelson up` and `keelson daemon` (see docs/operations.md).
#[derive(Debug, Clone, Args)]
pub struct Safeguards {
    /// Most status-API connections open at once; more are answered 503 and closed
    /// [default: a quarter of the open-file limit, at most 1024].
    #[arg(long, value_name = "N")]
    pub api_max_connections: Option<usize>,
    /// A status-API client must send its request headers within this time, and an idle
    /// keep-alive connection is closed after it.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub api_header_timeout: Duration,
    /// At SIGTERM, longest the daemon keeps trying to commit the status outbox (and waits for API
    /// connections) before it exits; what is not committed stays in the outbox for the next start.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_timeout: Duration,
    /// Start a new audit chain although the status branch anchors one this ledger does not hold
    /// (the ledger was deleted, replaced or restored from an older copy). Without it the daemon
    /// refuses to start, so that history is never recorded over by accident.
    #[arg(long)]
    pub new_audit_chain: bool,
}

impl Default for Safeguards {
    fn default() -> Self {
        Safeguards {
            api_max_connections: None,
            api_header_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            new_audit_chain: false,
        }
    }
}
