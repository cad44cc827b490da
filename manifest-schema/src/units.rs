//! The small text formats manifests use: durations, CPU and memory quantities, crontab
//! expressions and `host:port` listeners. Shared by validation and by the reconciler, so a value
//! that validated is parsed the same way when it is used.

use std::time::Duration;

/// Parses `500ms`, `60s`, `5m`, `62h`, `7d` or a sum such as `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || format!("`{text}` is not a duration; write e.g. `60s`, `5m`, `62h` or `1h30m`");
    if text.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            match rest.as_bytes().first() {
                Some(b's') => (1_000, 1),
                Some(b'm') => (60_000, 1),
                Some(b'h') => (3_600_000, 1),
                Some(b'd') => (86_400_000, 1),
                _ => return Err(err()),
            }
        };
        rest = &rest[len..];
        total = n
            .checked_mul(unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
    }
    Ok(Duration::from_millis(total))
}

/// Parses a CPU quantity into millicores: `500m` → 500, `2` → 2000, `0.5` → 500.
pub fn parse_cpu_millis(text: &str) -> Result<u64, String> {
    let err = || format!("`{text}` is not a CPU quantity; write e.g. `500m`, `1` or `2.5`");
    if let Some(m) = text.strip_suffix('m') {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        return m.parse().map_err(|_| err());
    }
    let (whole, frac) = split_decimal(text).ok_or_else(err)?;
    if frac.len() > 3 && frac[3..].bytes().any(|b| b != b'0') {
        return Err(format!(
            "`{text}` is finer than one millicore; round it, e.g. `{}m`",
            text.parse::<f64>().map_or(0.0, |v| (v * 1000.0).ceil())
        ));
    }
    let mut millis_frac = frac.chars().take(3).collect::<String>();
    while millis_frac.len() < 3 {
        millis_frac.push('0');
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| err())? };
    let frac: u64 = millis_frac.parse().map_err(|_| err())?;
    whole.checked_mul(1000).and_then(|w| w.checked_add(frac)).ok_or_else(err)
}

/// Parses a memory quantity into bytes: `512Mi`, `2Gi`, `1G`, `1.5Gi`, `1000`.
pub fn parse_memory_bytes(text: &str) -> Result<u64, String> {
    let err = || format!("`{text}` is not a memory quantity; write e.g. `512Mi`, `2Gi` or `1G` (bytes)");
    const SUFFIXES: [(&str, u128); 12] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
    ];
    let (number, mult) = SUFFIXES.iter().find_map(|(s, m)| text.strip_suffix(s).map(|n| (n, *m))).unwrap_or((text, 1));
    let (whole, frac) = split_decimal(number).ok_or_else(err)?;
    if frac.len() > 18 {
        return Err(err());
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| err())? };
    let scale = 10u128.pow(frac.len() as u32);
    let frac_v: u128 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| err())? };
    // Fractions of a byte round up, as Kubernetes does.
    let bytes = whole.checked_mul(mult).and_then(|w| w.checked_add((frac_v * mult).div_ceil(scale))).ok_or_else(err)?;
    u64::try_from(bytes).map_err(|_| format!("`{text}` is more memory than can be counted"))
}

/// `12`, `1.5`, `.5` → (whole digits, fraction digits); `None` for anything else.
fn split_decimal(text: &str) -> Option<(&str, &str)> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return None;
    }
    if text.ends_with('.') {
        return None;
    }
    Some((whole, frac))
}

/// Checks a 5-field crontab expression (`0 18 * * FRI`) or a macro such as `@daily`.
pub fn check_cron(text: &str) -> Result<(), String> {
    const MACROS: [&str; 7] = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"];
    if text.starts_with('@') {
        return if MACROS.contains(&text) {
            Ok(())
        } else {
            Err(format!("unknown cron macro `{text}`; use one of {}", MACROS.join(", ")))
        };
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "`{text}` has {} field(s); a crontab expression has 5: minute hour day-of-month month day-of-week",
            fields.len()
        ));
    }
    const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
    const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let specs: [(&str, u32, u32, &[&str], u32); 5] = [
        ("minute", 0, 59, &[], 0),
        ("hour", 0, 23, &[], 0),
        ("day-of-month", 1, 31, &[], 0),
        ("month", 1, 12, &MONTHS, 1),
        ("day-of-week", 0, 7, &DAYS, 0),
    ];
    for (field, (name, lo, hi, names, base)) in fields.iter().zip(specs) {
        check_cron_field(field, name, lo, hi, names, base)?;
    }
    Ok(())
}

fn check_cron_field(field: &str, name: &str, lo: u32, hi: u32, names: &[&str], base: u32) -> Result<(), String> {
    let bad = || format!("cron {name} field `{field}` is not valid (allowed {lo}-{hi})");
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + base);
        }
        let v: u32 = s.parse().map_err(|_| bad())?;
        if v < lo || v > hi {
            return Err(format!("cron {name} value {v} is outside {lo}-{hi}"));
        }
        Ok(v)
    };
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(s) if s >= 1 && s <= hi.max(1) => {}
                _ => return Err(bad()),
            }
        }
        if range == "*" || (range == "?" && (name == "day-of-month" || name == "day-of-week")) {
            continue;
        }
        match range.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (value(a)?, value(b)?);
                if a > b {
                    return Err(format!("cron {name} range `{range}` runs backwards"));
                }
            }
            None => {
                value(range)?;
            }
        }
    }
    Ok(())
}

/// Checks a `host:port` listener address (`0.0.0.0:7421`, `[::1]:7420`, `localhost:7420`).
pub fn check_listen(text: &str) -> Result<(), String> {
    let err = || format!("`{text}` is not a listen address; write `host:port`, e.g. `127.0.0.1:7420`");
    let (host, port) = text.rsplit_once(':').ok_or_else(err)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(err());
    }
    if host.starts_with('[') != host.ends_with(']') {
        return Err(err());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::seconds("60s", 60_000)]
    #[case::minutes("5m", 300_000)]
    #[case::hours("62h", 223_200_000)]
    #[case::millis("250ms", 250)]
    #[case::days("7d", 604_800_000)]
    #[case::compound("1h30m", 5_400_000)]
    fn durations_parse(#[case] text: &str, #[case] ms: u64) {
        assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)));
    }

    #[rstest]
    #[case::empty("")]
    #[case::no_unit("60")]
    #[case::words("5 minutes")]
    #[case::unit_first("s60")]
    #[case::negative("-5s")]
    #[case::float("1.5h")]
    #[case::overflow("99999999999999999999d")]
    fn durations_reject(#[case] text: &str) {
        assert!(parse_duration(text).is_err(), "{text}");
    }

    #[rstest]
    #[case::millicores("500m", 500)]
    #[case::cores("2", 2000)]
    #[case::half("0.5", 500)]
    #[case::leading_dot(".25", 250)]
    fn cpu_parses(#[case] text: &str, #[case] millis: u64) {
        assert_eq!(parse_cpu_millis(text), Ok(millis));
    }

    #[rstest]
    #[case::unit("500 m")]
    #[case::memory_suffix("2Gi")]
    #[case::sub_millicore("0.0005")]
    #[case::negative("-1")]
    fn cpu_rejects(#[case] text: &str) {
        assert!(parse_cpu_millis(text).is_err(), "{text}");
    }

    #[rstest]
    #[case::mebi("512Mi", 512 << 20)]
    #[case::gibi("2Gi", 2 << 30)]
    #[case::giga("1G", 1_000_000_000)]
    #[case::fraction("1.5Gi", 3 << 29)]
    #[case::bytes("1000", 1000)]
    fn memory_parses(#[case] text: &str, #[case] bytes: u64) {
        assert_eq!(parse_memory_bytes(text), Ok(bytes));
    }

    #[rstest]
    #[case::lowercase_binary("512mi")]
    #[case::bytes_word("512MB")]
    #[case::overflow("99999999Ei")]
    fn memory_rejects(#[case] text: &str) {
        assert!(parse_memory_bytes(text).is_err(), "{text}");
    }

    #[rstest]
    #[case::freeze("0 18 * * FRI")]
    #[case::every_five("*/5 * * * *")]
    #[case::ranges("0 9-17 * JAN-MAR MON-FRI")]
    #[case::lists("0,30 * 1,15 * 0,7")]
    #[case::macro_("@daily")]
    fn cron_accepts(#[case] text: &str) {
        assert_eq!(check_cron(text), Ok(()));
    }

    #[rstest]
    #[case::six_fields("0 0 18 * * FRI")]
    #[case::minute_range("60 * * * *")]
    #[case::bad_day("0 18 * * FRIDAY")]
    #[case::backwards("0 17-9 * * *")]
    #[case::zero_step("*/0 * * * *")]
    #[case::bad_macro("@sometimes")]
    fn cron_rejects(#[case] text: &str) {
        assert!(check_cron(text).is_err(), "{text}");
    }
}
