//! The app state machine's phases (DESIGN.md, "App state machine").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A phase of an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Known from git, nothing recorded yet.
    Pending,
    /// A rollout was planned; its intent is next.
    Planned,
    /// A rollout is being carried out or converging.
    Progressing,
    /// Everything the desired digest asks for is live and healthy.
    Healthy,
    /// Live but not working as wanted.
    Degraded,
    /// The rollout failed.
    Failed,
    /// Going back to the previous version.
    RollingBack,
    /// Back on the previous version.
    RolledBack,
    /// Held by policy, a freeze, an invalid manifest or a missing provider role.
    Blocked,
    /// Live state differs from git without a new commit.
    Drifted,
    /// `spec.suspend` is set.
    Suspended,
    /// The app was removed from git and everything it owned was deleted.
    Deleted,
}

impl Phase {
    /// All phases, for metrics with a zero for each.
    pub const ALL: [Phase; 12] = [
        Phase::Pending,
        Phase::Planned,
        Phase::Progressing,
        Phase::Healthy,
        Phase::Degraded,
        Phase::Failed,
        Phase::RollingBack,
        Phase::RolledBack,
        Phase::Blocked,
        Phase::Drifted,
        Phase::Suspended,
        Phase::Deleted,
    ];

    /// The name used in the ledger and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Planned => "Planned",
            Phase::Progressing => "Progressing",
            Phase::Healthy => "Healthy",
            Phase::Degraded => "Degraded",
            Phase::Failed => "Failed",
            Phase::RollingBack => "RollingBack",
            Phase::RolledBack => "RolledBack",
            Phase::Blocked => "Blocked",
            Phase::Drifted => "Drifted",
            Phase::Suspended => "Suspended",
            Phase::Deleted => "Deleted",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A phase name this release does not know (a ledger written by a newer Keelson, or tampering).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown phase {0:?} (known: Pending, Planned, Progressing, Healthy, …, Deleted)")]
pub struct UnknownPhase(pub String);

impl FromStr for Phase {
    type Err = UnknownPhase;

    fn from_str(s: &str) -> Result<Phase, UnknownPhase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| UnknownPhase(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_round_trips_and_unknown_ones_are_errors() {
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>(), Ok(p));
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert_eq!("Exploded".parse::<Phase>(), Err(UnknownPhase("Exploded".into())));
        assert!(serde_json::from_str::<Phase>("\"Exploded\"").is_err());
    }
}
