//! Freeze windows: a 5-field crontab in an IANA time zone opens the window, a duration closes it.
//!
//! croner with its `jiff` backend (jiff is already built for gix) instead of chrono + chrono-tz:
//! the least extra build weight for time-zone-aware cron, and croner resolves DST gaps and folds
//! itself. The duration is added on the window's wall clock, so `0 18 * * FRI` for `62h` ends at
//! Monday 08:00 local time on a DST weekend too, as the people who wrote it mean.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};
use keelson_manifest::Diagnostic;
use keelson_manifest::policy;
use keelson_manifest::units::parse_duration;

use super::{Located, Verdict, VerdictKind};

/// One compiled freeze window.
#[derive(Debug, Clone)]
pub(crate) struct FreezeWindow {
    policy: String,
    index: usize,
    cron_text: String,
    cron: Cron,
    zone_name: String,
    zone: TimeZone,
    duration_text: String,
    duration: SignedDuration,
    reason: String,
    file: String,
    line: usize,
    col: usize,
}

/// When an open window opened and when it closes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Open {
    pub(crate) since: Zoned,
    pub(crate) until: Zoned,
}

/// Parses crontab text the way the schema documents it: exactly 5 fields (or a macro), no seconds
/// or years, day-of-month and day-of-week OR-ed as in Vixie cron.
pub(crate) fn parse_cron(text: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("cron `{text}` cannot be used: {e}"))
}

impl FreezeWindow {
    /// Window `index` of the policy at `at`; a diagnostic when its cron, time zone or duration is unusable.
    pub(crate) fn compile(at: &Located<'_>, index: usize, w: &policy::FreezeWindow) -> Result<Self, Box<Diagnostic>> {
        let base = format!("/spec/freeze/{index}");
        let cron = parse_cron(&w.cron).map_err(|e| at.error(&format!("{base}/cron"), "policy.cron", e))?;
        let zone_name = w.time_zone.clone().unwrap_or_else(|| "UTC".into());
        let zone = TimeZone::get(&zone_name).map_err(|e| {
            at.error(&format!("{base}/timeZone"), "policy.time-zone", format!("unknown time zone `{zone_name}`: {e}"))
                .with_hint("use an IANA name such as `Europe/Berlin`, `America/New_York` or `UTC`")
        })?;
        let duration = parse_duration(&w.duration)
            .ok()
            .and_then(|d| SignedDuration::try_from(d).ok())
            .filter(|d| d.is_positive())
            .ok_or_else(|| {
                at.error(
                    &format!("{base}/duration"),
                    "policy.duration",
                    format!("`{}` is not a usable duration; write e.g. `62h` or `1h30m`", w.duration),
                )
            })?;
        // A pattern that names no real date (`0 0 31 2 *`) would never open; say so now rather
        // than let people believe they are protected.
        let probe = Timestamp::UNIX_EPOCH.to_zoned(zone.clone());
        if cron.find_next_occurrence(&probe, true).is_err() {
            return Err(Box::new(at.error(
                &format!("{base}/cron"),
                "policy.cron",
                format!("cron `{}` never matches a real date, so the window would never open", w.cron),
            )));
        }
        let pos = at.at(&base);
        Ok(Self {
            policy: at.name().to_string(),
            index,
            cron_text: w.cron.clone(),
            cron,
            zone_name,
            zone,
            duration_text: w.duration.clone(),
            duration,
            reason: w.reason.clone().unwrap_or_else(|| "freeze window".into()),
            file: at.file().to_string(),
            line: pos.line,
            col: pos.col,
        })
    }

    /// The window `now` falls in, if any: the latest opening at or before `now` whose wall-clock
    /// end is after `now`. The latest opening has the latest end, so one lookup is enough.
    pub(crate) fn open_at(&self, now: Timestamp) -> Option<Open> {
        let now = now.to_zoned(self.zone.clone());
        let since = self.cron.find_previous_occurrence(&now, true).ok()?;
        let end = since.datetime().checked_add(self.duration).ok()?;
        // A wall-clock end in a DST gap moves past the gap; in a fold it takes the earlier instant.
        let until = self.zone.to_ambiguous_zoned(end).compatible().ok()?;
        (now.timestamp() < until.timestamp()).then_some(Open { since, until })
    }

    /// A blocking verdict while the window is open, or a non-blocking one recording an override.
    pub(crate) fn evaluate(&self, now: Timestamp, freeze_override: Option<&str>) -> Option<Verdict> {
        let open = self.open_at(now)?;
        let window = format!(
            "`{}` for {} in {}, {} until {}",
            self.cron_text,
            self.duration_text,
            self.zone_name,
            open.since.strftime("%a %Y-%m-%d %H:%M %Z"),
            open.until.strftime("%a %Y-%m-%d %H:%M %Z"),
        );
        let reason = freeze_override.map(str::trim).filter(|r| !r.is_empty());
        let (blocking, message) = match (freeze_override, reason) {
            (_, Some(reason)) => {
                (false, format!("{} ({window}) overridden by Keelson-Freeze-Override: {reason}", self.reason))
            }
            (Some(_), None) => (
                true,
                format!(
                    "{} ({window}); the Keelson-Freeze-Override trailer needs a reason, e.g. \
                     `Keelson-Freeze-Override: hotfix for INC-123`",
                    self.reason
                ),
            ),
            (None, None) => (
                true,
                format!(
                    "{} ({window}); rollouts wait for the window to close, or add a \
                     `Keelson-Freeze-Override: <reason>` trailer to the head commit",
                    self.reason
                ),
            ),
        };
        Some(Verdict {
            policy: self.policy.clone(),
            rule: format!("freeze[{}]", self.index),
            kind: VerdictKind::Freeze,
            message,
            blocking,
            file: self.file.clone(),
            line: self.line,
            col: self.col,
        })
    }
}
