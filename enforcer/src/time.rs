//! RFC 3339 timestamps, without a date library: the agent's event lines (UTC, microseconds),
//! Alertmanager's `startsAt`/`endsAt` to and from milliseconds since the Unix epoch.

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[path = "civil.rs"]
mod civil;
use civil::civil_from_days;

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil time (UTC) of a moment, for time intervals.
pub fn civil(ms: i64) -> crate::amconfig::routes::Civil {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    crate::amconfig::routes::Civil {
        year,
        month,
        day,
        month_days: days_from_civil(ny, nm, 1) - days_from_civil(year, month, 1),
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7),
        minute: secs.rem_euclid(86_400) / 60,
    }
}

/// `2026-12-02T00:15:15.450Z` (UTC, milliseconds).
pub fn rfc3339(ms: i64) -> String {
    utc(ms.div_euclid(1000), ms.rem_euclid(1000), 3)
}

/// `2026-11-23T23:50:10.011226Z` (UTC, microseconds, like the diagnostics' lines).
pub fn rfc3339_micros(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    utc(secs, i64::from(d.subsec_micros()), 6)
}

/// `secs` since the epoch in UTC, with `frac` as the `digits`-digit fraction of a second.
fn utc(secs: i64, frac: i64, digits: usize) -> String {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{frac:0digits$}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; `None` when it is not that.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &text[start..i.min(start + 3)];
        frac_ms = digits.parse::<i64>().ok()? * 10_i64.pow(3 - digits.len() as u32);
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let o = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_s;
    Some(secs * 1000 + frac_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_timestamps_are_utc_with_microseconds() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(rfc3339_micros(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // 2026-11-23T23:50:10.011226Z, the README's example line.
        let t = UNIX_EPOCH + Duration::new(1_795_477_810, 11_226_000);
        assert_eq!(rfc3339_micros(t), "2026-11-23T23:50:10.011226Z");
        // A leap day, and the day after the end of a leap year.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_164_800);
        assert_eq!(rfc3339_micros(t), "2024-02-29T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599);
        assert_eq!(rfc3339_micros(t), "2024-12-31T23:59:59.000000Z");
    }

    #[test]
    fn round_trip_and_offsets() {
        let ms = parse_rfc3339("2026-12-02T00:15:15.450Z").unwrap();
        assert_eq!(rfc3339(ms), "2026-12-02T00:15:15.450Z");
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-12-02T02:15:15.45+02:00"),
            Some(ms),
            "offsets and short fractions"
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.123456789Z"),
            Some(1_709_208_000_123)
        );
        let c = civil(parse_rfc3339("2024-02-29T23:59:00Z").unwrap());
        assert_eq!(
            (c.year, c.month, c.day, c.month_days, c.weekday, c.minute),
            (2024, 2, 29, 29, 4, 1439)
        );
        for bad in [
            "",
            "2026-12-02",
            "2026-13-02T00:00:00Z",
            "2026-12-02T00:00:00",
            "x026-12-02T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
