//! Crash points for crash-safety tests: `KEELSON_CRASH_AT=<point>` aborts the process there.
//! They exist only in builds with the `crash-points` cargo feature; release builds compile them away.

/// Points where a test may kill the daemon.
pub mod point {
    /// The intent is durable, no provider call made yet.
    pub const AFTER_INTENT: &str = "after-intent";
    /// The provider acted, its outcome not yet in the ledger.
    pub const AFTER_PROVIDER_CALL: &str = "after-provider-call";
    /// A ledger entry is appended, not yet on the status branch.
    pub const AFTER_LEDGER_APPEND: &str = "after-ledger-append";
    /// Status commit objects are written, the branch ref not yet moved.
    pub const MID_STATUS_COMMIT: &str = "mid-status-commit";
    /// A push of the status branch is under way.
    pub const MID_PUSH: &str = "mid-push";
}

/// Aborts the process if `KEELSON_CRASH_AT` names this point (only with the `crash-points` feature).
#[inline]
pub fn crash_point(name: &str) {
    #[cfg(feature = "crash-points")]
    if std::env::var("KEELSON_CRASH_AT").is_ok_and(|p| p == name) {
        eprintln!("keelson: crash point {name} reached, aborting");
        std::process::abort();
    }
    #[cfg(not(feature = "crash-points"))]
    let _ = name;
}
