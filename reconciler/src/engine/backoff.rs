//! When an app whose rollout failed with a transient error is tried again.

use std::time::Duration;

use time::OffsetDateTime;

/// First wait after a transient failure.
const FIRST: Duration = Duration::from_secs(1);
/// Longest wait.
const MAX: Duration = Duration::from_secs(300);

/// The backoff of one app.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    attempts: u32,
    pub(super) until: OffsetDateTime,
}

impl Backoff {
    /// 1 s after the first failure, doubling to at most 5 minutes.
    pub(super) fn after(previous: Option<Backoff>, now: OffsetDateTime) -> Backoff {
        let attempts = previous.map_or(1, |b| b.attempts.saturating_add(1));
        let delay = FIRST.saturating_mul(1 << attempts.saturating_sub(1).min(9)).min(MAX);
        Backoff { attempts, until: now + delay }
    }

    /// How long until the app may be tried again (zero once it may).
    pub(super) fn remaining(&self, now: OffsetDateTime) -> Duration {
        Duration::try_from(self.until - now).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        let now = time::macros::datetime!(2026-12-01 12:00 UTC);
        let mut b = None;
        let mut delays = vec![];
        for _ in 0..12 {
            let next = Backoff::after(b, now);
            delays.push(next.remaining(now).as_secs());
            b = Some(next);
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }
}
