//! Where a silence came from, as far as the API guard saw (issue 29): a silence finding whose
//! creation no watched API write explains — no state-changing request on a silences path of any
//! watched replica shortly before — says so in its finding (`origin`). Such a silence came in
//! by gossip from another replica, or from a replica the agent does not watch: a planted
//! silence has no `api_request` line of its own.
//!
//! The agent's API guard records each silence write ([`silence_written`]) and whether the guard
//! is on ([`guard_active`]); the watchdog adds the note when it raises a finding
//! ([`annotated`]). Without a guard, or before it has watched for [`WINDOW`], nothing is said.
use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{Finding, FindingKind};

/// How far back a silence write explains a silence the watchdog reports.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Writes remembered at most (older ones go first).
const MAX_WRITES: usize = 10_000;

/// The note added to a finding nothing explains.
pub const NOTE: &str = "no api_request on a watched replica explains this silence: it came in by \
                        gossip from another replica, or from a replica that is not watched";

#[derive(Default)]
struct Seen {
    guard_since: Option<Instant>,
    writes: VecDeque<Instant>,
}

static SEEN: Mutex<Seen> = Mutex::new(Seen {
    guard_since: None,
    writes: VecDeque::new(),
});

/// The API guard is on (an `api:` section installed) or off.
pub fn guard_active(on: bool) {
    if let Ok(mut s) = SEEN.lock() {
        match (on, s.guard_since) {
            (true, None) => s.guard_since = Some(Instant::now()),
            (false, _) => s.guard_since = None,
            (true, Some(_)) => {}
        }
    }
}

/// The guard saw a state-changing request on a silences path of a watched replica.
pub fn silence_written() {
    if let Ok(mut s) = SEEN.lock() {
        s.writes.push_back(Instant::now());
        while s.writes.len() > MAX_WRITES {
            s.writes.pop_front();
        }
    }
}

/// `f`, with the `origin` note when it is about a silence and no write explains it.
pub fn annotated(f: &Finding) -> Finding {
    let mut f = f.clone();
    let about_a_silence = matches!(
        f.finding,
        FindingKind::SilenceMatchesEverything
            | FindingKind::SilenceCoversProtected
            | FindingKind::SilenceBroadened
            | FindingKind::SilenceExtended
            | FindingKind::SilenceTooLong
    );
    if about_a_silence
        && let Ok(s) = SEEN.lock()
        && unexplained(&s, Instant::now())
    {
        f.details
            .insert("origin".into(), Value::String(NOTE.into()));
    }
    f
}

fn unexplained(s: &Seen, now: Instant) -> bool {
    let watched_long_enough = s
        .guard_since
        .is_some_and(|t| now.saturating_duration_since(t) >= WINDOW);
    watched_long_enough
        && !s
            .writes
            .iter()
            .any(|&w| now.saturating_duration_since(w) <= WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silence_is_unexplained_only_under_a_guard_that_saw_no_write() {
        let base = Instant::now();
        let at = |windows_x6: u32| base + WINDOW * windows_x6 / 6;
        let now = at(18);
        let mut s = Seen::default();
        assert!(!unexplained(&s, now), "no guard: nothing is said");
        s.guard_since = Some(at(15));
        assert!(!unexplained(&s, now), "the guard is too new to tell");
        s.guard_since = Some(at(6));
        assert!(unexplained(&s, now));
        s.writes.push_back(at(6));
        assert!(unexplained(&s, now), "a write long before explains nothing");
        s.writes.push_back(at(16));
        assert!(!unexplained(&s, now), "a recent silence write explains it");
    }
}
