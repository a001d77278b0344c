//! Alertmanager's time intervals (`timeinterval/timeinterval.go`): a named list of
//! specifications; a moment is in the interval when it is in any of them, and in one when each
//! of its given fields (`times`, `weekdays`, `days_of_month`, `months`, `years`) contains it.
//!
//! Moments are given as civil time ([`Civil`]). `location` is honoured for `UTC` and `Local`
//! (read as UTC, the zone of an Alertmanager container); another zone is evaluated in UTC and
//! marked [`TimeInterval::zone_assumed`].
use super::routes::{Cx, RoutingError};
use crate::yaml::Node;

/// Specifications per interval and ranges per field that are analysed.
const MAX_SPECS: usize = 100;
const MAX_RANGES: usize = 100;

/// A moment in civil time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 1..=12
    pub month: i64,
    /// 1..=31
    pub day: i64,
    /// Days in this month.
    pub month_days: i64,
    /// 0 = Sunday.
    pub weekday: i64,
    /// Minutes since midnight.
    pub minute: i64,
}

/// One specification; an empty field contains everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spec {
    /// `[start, end)` in minutes of the day.
    pub times: Vec<(i64, i64)>,
    pub weekdays: Vec<(i64, i64)>,
    pub days_of_month: Vec<(i64, i64)>,
    pub months: Vec<(i64, i64)>,
    pub years: Vec<(i64, i64)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeInterval {
    pub name: String,
    pub specs: Vec<Spec>,
    /// Some specification names a zone other than UTC: evaluated in UTC.
    pub zone_assumed: bool,
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn bound(text: &str, names: &[&str], offset: i64) -> Option<i64> {
    let t = text.trim().to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == t) {
        return i64::try_from(i).ok().map(|i| i + offset);
    }
    t.parse().ok()
}

/// `a:b` or `a` with names or numbers.
fn range(text: &str, names: &[&str], offset: i64) -> Option<(i64, i64)> {
    let (a, b) = text.split_once(':').unwrap_or((text, text));
    Some((bound(a, names, offset)?, bound(b, names, offset)?))
}

fn minute_of(text: &str) -> Option<i64> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=24).contains(&h) && (0..60).contains(&m) && h * 60 + m <= 1440).then_some(h * 60 + m)
}

pub(super) fn parse(cx: &Cx<'_>, node: &Node, key: &str) -> Result<TimeInterval, RoutingError> {
    let name = match node.value("name") {
        Some(n) => cx.string(n, &format!("{key}[].name"))?,
        None => return Err(cx.err(node, &format!("{key}[]"), "has no name")),
    };
    let mut out = TimeInterval {
        name: name.clone(),
        specs: Vec::new(),
        zone_assumed: false,
    };
    let field = format!("{key}[{name}].time_intervals");
    let specs = node
        .value("time_intervals")
        .map_or(Ok(&[][..]), |n| cx.list(n, &field))?;
    if specs.len() > MAX_SPECS {
        return Err(cx.err(node, &field, format!("more than {MAX_SPECS} entries")));
    }
    for s in specs {
        let mut spec = Spec::default();
        let ranges = |f: &str, names: &[&str], offset: i64, lo: i64, hi: i64| {
            let texts = cx.strings(s.value(f), f)?;
            if texts.len() > MAX_RANGES {
                return Err(cx.err(s, f, format!("more than {MAX_RANGES} entries")));
            }
            texts
                .iter()
                .map(|t| {
                    // As Alertmanager: a range never runs backwards (days of the month count
                    // from the end when negative, and a negative start needs a negative end).
                    range(t, names, offset)
                        .filter(|(a, b)| (lo..=hi).contains(a) && (lo..=hi).contains(b))
                        .filter(|(a, b)| a <= b || (*a > 0 && *b < 0))
                        .filter(|(a, b)| !(*a < 0 && *b > 0))
                        .ok_or_else(|| cx.err(s, f, format!("{t:?} is not a valid range")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        spec.weekdays = ranges("weekdays", &WEEKDAYS, 0, 0, 6)?;
        spec.days_of_month = ranges("days_of_month", &[], 0, -31, 31)?;
        spec.months = ranges("months", &MONTHS, 1, 1, 12)?;
        spec.years = ranges("years", &[], 0, 0, 9999)?;
        if let Some(times) = s.value("times") {
            for t in cx.list(times, "times")?.iter().take(MAX_RANGES) {
                let get = |k: &str| {
                    t.value(k)
                        .and_then(|v| v.text(cx.text))
                        .and_then(|v| minute_of(&v))
                        .ok_or_else(|| cx.err(t, k, "must be a time such as 09:30"))
                };
                spec.times.push((get("start_time")?, get("end_time")?));
            }
        }
        if let Some(loc) = s.value("location") {
            let loc = cx.string(loc, "location")?;
            out.zone_assumed |= !matches!(loc.as_str(), "" | "UTC" | "Local");
        }
        out.specs.push(spec);
    }
    Ok(out)
}

impl TimeInterval {
    /// Whether the moment is in the interval.
    pub fn contains(&self, t: &Civil) -> bool {
        self.specs.iter().any(|s| s.contains(t))
    }
}

impl Spec {
    pub fn contains(&self, t: &Civil) -> bool {
        let any = |ranges: &[(i64, i64)], v: i64| {
            ranges.is_empty() || ranges.iter().any(|&(a, b)| (a..=b).contains(&v))
        };
        let times =
            self.times.is_empty() || self.times.iter().any(|&(a, b)| (a..b).contains(&t.minute));
        // Negative days count from the end of the month (-1 is the last day).
        let day = |d: i64| if d < 0 { t.month_days + 1 + d } else { d };
        let days = self.days_of_month.is_empty()
            || self
                .days_of_month
                .iter()
                .any(|&(a, b)| (day(a)..=day(b)).contains(&t.day));
        times
            && days
            && any(&self.weekdays, t.weekday)
            && any(&self.months, t.month)
            && any(&self.years, t.year)
    }
}
