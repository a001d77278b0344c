//! Writing an event view as one JSON line on stdout: `{"timestamp":…,"level":"WARN",<view>}`
//! (the shape the diagnostics on stderr have too, so one log pipeline reads both).
use std::{
    io::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    timestamp: String,
    level: &'static str,
    #[serde(flatten)]
    view: &'a T,
}

/// Writes `view` as one JSON line on stdout (a write error, such as a closed pipe, is ignored
/// like the diagnostics' are: enforcement never waits on a reader).
pub fn emit<T: Serialize>(view: &T) {
    let line = Line {
        timestamp: rfc3339(SystemTime::now()),
        level: "WARN",
        view,
    };
    let Ok(mut text) = serde_json::to_vec(&line) else {
        return;
    };
    text.push(b'\n');
    let _ = std::io::stdout().lock().write_all(&text);
}

/// `t` in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds, like the diagnostics' lines).
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Year, month, day of the `days`-th day after 1970-01-01 (proleptic Gregorian calendar;
/// Howard Hinnant's days-to-civil algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::rfc3339;

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // 2026-11-23T23:50:10.011226Z, the README's example line.
        let t = UNIX_EPOCH + Duration::new(1_795_477_810, 11_226_000);
        assert_eq!(rfc3339(t), "2026-11-23T23:50:10.011226Z");
        // A leap day, and the day after the end of a leap year.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_164_800);
        assert_eq!(rfc3339(t), "2024-02-29T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599);
        assert_eq!(rfc3339(t), "2024-12-31T23:59:59.000000Z");
    }
}
