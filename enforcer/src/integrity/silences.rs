//! Silences read from `GET /api/v2/silences`, and what changed between two reads.
//!
//! Alertmanager edits a silence in place only when its matchers stay the same (and an active
//! one keeps its start); any other edit expires the old id and creates a new one in the same
//! instant, so the number of active silences never moves. A silence that appears in the same
//! read in which another expired, with the same `updatedAt` (within [`LINK_WINDOW_MS`]), is
//! that silence's successor.
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::finding::{Finding, FindingKind, Source};
use super::time::{parse_rfc3339, rfc3339};
use crate::details;
use crate::matchers::{self, Answer, Matcher, Op};
use crate::policy::IntegritySettings;

/// How close the expiry of a silence and the creation of its successor are.
pub const LINK_WINDOW_MS: i64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    #[error("the silences are not the JSON Alertmanager's API returns: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiSilence {
    id: String,
    status: ApiStatus,
    #[serde(default)]
    updated_at: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    created_by: String,
    ends_at: String,
    starts_at: String,
    matchers: Vec<ApiMatcher>,
}

#[derive(Deserialize)]
struct ApiStatus {
    state: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiMatcher {
    name: String,
    value: String,
    is_regex: bool,
    /// Absent before Alertmanager 0.22: equal.
    #[serde(default = "yes")]
    is_equal: bool,
}

fn yes() -> bool {
    true
}

/// One silence as read.
#[derive(Clone, Debug)]
pub struct Silence {
    pub id: String,
    /// `active`, `pending` or `expired`.
    pub state: String,
    pub matchers: Vec<Matcher>,
    /// Why the matchers could not be compiled here (a regex RE2 accepts and Rust does not).
    pub matcher_error: Option<String>,
    /// As Alertmanager shows them.
    pub rendered: String,
    pub created_by: String,
    pub comment: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub updated_at: i64,
}

impl Silence {
    pub fn live(&self) -> bool {
        self.state != "expired"
    }

    fn details(&self) -> Map<String, Value> {
        details! {
            "silence_id" => self.id,
            "state" => self.state,
            "matchers" => self.rendered,
            "created_by" => self.created_by,
            "comment" => self.comment,
            "starts_at" => rfc3339(self.starts_at),
            "ends_at" => rfc3339(self.ends_at),
        }
    }
}

/// Reads the API's answer.
pub fn parse(body: &[u8]) -> Result<Vec<Silence>, SilenceError> {
    let api: Vec<ApiSilence> = serde_json::from_slice(body)?;
    Ok(api
        .into_iter()
        .map(|s| {
            let mut matchers = Vec::new();
            let mut matcher_error = None;
            let mut shown = Vec::new();
            for m in &s.matchers {
                let op = match (m.is_regex, m.is_equal) {
                    (false, true) => Op::Equal,
                    (false, false) => Op::NotEqual,
                    (true, true) => Op::Regex,
                    (true, false) => Op::NotRegex,
                };
                shown.push(format!("{}{}{:?}", m.name, op.as_str(), m.value));
                match Matcher::new(&m.name, op, &m.value) {
                    Ok(c) => matchers.push(c),
                    Err(e) => matcher_error = Some(e.to_string()),
                }
            }
            let time = |t: &str| parse_rfc3339(t).unwrap_or(0);
            Silence {
                id: s.id,
                state: s.status.state,
                matchers,
                matcher_error,
                rendered: format!("{{{}}}", shown.join(", ")),
                created_by: s.created_by,
                comment: s.comment,
                starts_at: time(&s.starts_at),
                ends_at: time(&s.ends_at),
                updated_at: time(&s.updated_at),
            }
        })
        .collect())
}

/// How much a silence mutes, for the `silences` metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Breadth {
    /// Every alert.
    Everything,
    /// Some alert a `protected` selector names.
    Protected,
    /// Neither.
    Narrow,
}

impl Breadth {
    pub fn as_str(self) -> &'static str {
        match self {
            Breadth::Everything => "everything",
            Breadth::Protected => "protected",
            Breadth::Narrow => "narrow",
        }
    }
}

/// What the watchdog knows of one silence.
#[derive(Clone, Debug)]
struct Known {
    silence: Silence,
    breadth: Breadth,
    /// Protected selectors it may mute.
    covers: Vec<String>,
    /// Whether some answer was [`Answer::Unknown`] (reported as a finding, to be safe).
    uncertain: bool,
}

/// The silences of one target across reads.
#[derive(Default)]
pub struct SilenceBook {
    known: HashMap<String, Known>,
    read_once: bool,
}

/// What one read gave.
#[derive(Default)]
pub struct Observed {
    /// Findings that hold now (sent again while they hold).
    pub states: Vec<Finding>,
    /// Changes seen in this read.
    pub changes: Vec<Finding>,
    /// Live silences by breadth.
    pub breadth: HashMap<Breadth, i64>,
}

fn analyse(s: &Silence, settings: &IntegritySettings) -> Known {
    let mut uncertain = s.matcher_error.is_some();
    let everything = if s.matcher_error.is_some() {
        Answer::Unknown
    } else {
        matchers::matches_everything(&s.matchers)
    };
    uncertain |= everything == Answer::Unknown;
    let mut covered = Vec::new();
    for p in &settings.protected {
        let a = if s.matcher_error.is_some() {
            Answer::Unknown
        } else {
            covers(&s.matchers, &p.matchers)
        };
        uncertain |= a == Answer::Unknown;
        if a != Answer::No {
            covered.push(p.text.clone());
        }
    }
    let breadth = if everything != Answer::No {
        Breadth::Everything
    } else if !covered.is_empty() {
        Breadth::Protected
    } else {
        Breadth::Narrow
    };
    Known {
        silence: s.clone(),
        breadth,
        covers: covered,
        uncertain,
    }
}

/// Whether a silence covers a protected selector: it mutes every alert the selector names, or
/// it names one of the selector's labels and mutes some alert the selector names. (A silence
/// of `alertname="DiskFull"` could mute a critical DiskFull alert, but it does not aim at
/// critical alerts; `{alertname="DiskFull", severity="critical"}` does.)
pub fn covers(silence: &[Matcher], protected: &[Matcher]) -> Answer {
    let all = matchers::includes(silence, protected);
    if all != Answer::No {
        return all;
    }
    let aims = silence
        .iter()
        .any(|m| protected.iter().any(|p| p.name == m.name));
    if !aims {
        return Answer::No;
    }
    matchers::overlap(silence, protected)
}

impl SilenceBook {
    /// Takes one read of the silences; `now` in ms since the epoch.
    pub fn observe(
        &mut self,
        silences: Vec<Silence>,
        settings: &IntegritySettings,
        at: &Source,
    ) -> Observed {
        let mut out = Observed::default();
        let mut next: HashMap<String, Known> = HashMap::new();
        for s in silences {
            let k = match self.known.get(&s.id) {
                // Matchers never change in place; keep the analysis.
                Some(old) if old.silence.rendered == s.rendered => Known {
                    silence: s.clone(),
                    ..old.clone()
                },
                _ => analyse(&s, settings),
            };
            next.insert(s.id.clone(), k);
        }
        if self.read_once {
            self.changes(&next, at, &mut out);
        }
        for k in next.values().filter(|k| k.silence.live()) {
            *out.breadth.entry(k.breadth).or_default() += 1;
            Self::states(k, settings, at, &mut out.states);
        }
        self.known = next;
        self.read_once = true;
        out.states
            .sort_by(|a, b| (a.finding, &a.key).cmp(&(b.finding, &b.key)));
        out.changes
            .sort_by(|a, b| (a.finding, &a.key).cmp(&(b.finding, &b.key)));
        out
    }

    fn states(k: &Known, settings: &IntegritySettings, at: &Source, out: &mut Vec<Finding>) {
        let s = &k.silence;
        let with = |mut d: Map<String, Value>, extra: Map<String, Value>| {
            d.extend(extra);
            d
        };
        let uncertain = details! {"uncertain" => k.uncertain};
        match k.breadth {
            Breadth::Everything => out.push(Finding::new(
                FindingKind::SilenceMatchesEverything,
                at,
                &s.id,
                with(s.details(), uncertain),
            )),
            Breadth::Protected => out.push(Finding::new(
                FindingKind::SilenceCoversProtected,
                at,
                &s.id,
                with(
                    s.details(),
                    details! {"protected" => k.covers, "uncertain" => k.uncertain},
                ),
            )),
            Breadth::Narrow => {}
        }
        let max = i64::try_from(settings.max_silence_duration.as_millis()).unwrap_or(i64::MAX);
        let length = s.ends_at.saturating_sub(s.starts_at);
        if length > max {
            out.push(Finding::new(
                FindingKind::SilenceTooLong,
                at,
                &s.id,
                with(
                    s.details(),
                    details! {
                        "duration_seconds" => length / 1000,
                        "max_silence_duration_seconds" => max / 1000,
                    },
                ),
            ));
        }
    }

    fn changes(&self, next: &HashMap<String, Known>, at: &Source, out: &mut Observed) {
        // Extended in place: same id, later end.
        for (id, k) in next {
            if let Some(old) = self.known.get(id)
                && k.silence.live()
                && k.silence.ends_at > old.silence.ends_at
            {
                out.changes.push(extended(&k.silence, &old.silence, at));
            }
        }
        // Replaced: a live silence that expired (or vanished) in this read, and a new one.
        let mut gone: Vec<&Known> = self
            .known
            .values()
            .filter(|old| old.silence.live())
            .filter(|old| next.get(&old.silence.id).is_none_or(|k| !k.silence.live()))
            .collect();
        let mut fresh: Vec<&Known> = next
            .values()
            .filter(|k| k.silence.live() && !self.known.contains_key(&k.silence.id))
            .collect();
        fresh.sort_by_key(|k| k.silence.updated_at);
        for new in fresh {
            let expired_at = |old: &Known| {
                next.get(&old.silence.id)
                    .map_or(new.silence.updated_at, |k| k.silence.updated_at)
            };
            let best = gone
                .iter()
                .enumerate()
                .filter(|(_, old)| {
                    (expired_at(old) - new.silence.updated_at).abs() <= LINK_WINDOW_MS
                })
                .min_by_key(|(_, old)| {
                    (
                        old.silence.created_by != new.silence.created_by,
                        (expired_at(old) - new.silence.updated_at).abs(),
                    )
                })
                .map(|(i, _)| i);
            let Some(i) = best else { continue };
            let old = gone.swap_remove(i);
            let (n, o) = (&new.silence, &old.silence);
            let wider = if n.matcher_error.is_some() || o.matcher_error.is_some() {
                Answer::Unknown
            } else {
                matchers::includes(&o.matchers, &n.matchers)
            };
            if wider != Answer::Yes {
                let mut d = n.details();
                d.extend(details! {
                    "previous_id" => o.id,
                    "previous_matchers" => o.rendered,
                    "previous_ends_at" => rfc3339(o.ends_at),
                    "uncertain" => wider == Answer::Unknown,
                    "breadth" => new.breadth.as_str(),
                    "previous_breadth" => old.breadth.as_str(),
                });
                out.changes
                    .push(Finding::new(FindingKind::SilenceBroadened, at, &n.id, d));
            }
            if n.ends_at > o.ends_at {
                out.changes.push(extended(n, o, at));
            }
        }
    }
}

fn extended(new: &Silence, old: &Silence, at: &Source) -> Finding {
    let mut d = new.details();
    d.extend(details! {
        "previous_ends_at" => rfc3339(old.ends_at),
        "extended_by_seconds" => (new.ends_at - old.ends_at) / 1000,
    });
    if new.id != old.id {
        d.insert("previous_id".into(), Value::String(old.id.clone()));
    }
    let subject = format!("{}@{}", new.id, new.ends_at);
    Finding::new(FindingKind::SilenceExtended, at, &subject, d)
}

#[cfg(test)]
#[path = "silences_tests.rs"]
mod tests;
