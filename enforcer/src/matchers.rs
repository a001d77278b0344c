//! Alertmanager's label matchers, decided as Alertmanager decides them, and what a set of them
//! mutes.
//!
//! A matcher is `name op value` with `op` one of `=`, `!=`, `=~`, `!~`. Alertmanager compiles a
//! regex matcher as the anchored RE2 expression `^(?:value)$`; an equality matcher compares the
//! whole value. A label an alert does not have has the value `""`, so a matcher that matches
//! the empty string also matches alerts without that label. A silence mutes an alert when all
//! its matchers match.
//!
//! Breadth questions ("does this silence mute every alert?", "could it mute an alert a protected
//! selector names?", "does the new silence mute something the old one did not?") are answered
//! exactly, not by trying examples: each matcher becomes a DFA (regex-automata; an equality
//! value is an escaped literal), and [`exists`] walks the product of the DFAs of one label,
//! together with a UTF-8 decoder, looking for a value with the wanted outcome of each matcher.
//!
//! The values considered are the label values Prometheus alerts carry: valid UTF-8 without a
//! line break (`.` does not match `\n` in RE2, so `alertname=~".+"` would otherwise not count
//! as matching everything), and for `alertname`, which every alert has, not empty. Rust's regex
//! syntax is RE2's with small differences (Go's `\d`, `\w`, `\s`, `\b` are ASCII-only); a value
//! Rust cannot compile is reported as an error, never guessed.
use std::{collections::HashSet, fmt, sync::Arc};

use regex_automata::{
    Anchored, MatchKind,
    dfa::{Automaton as _, StartKind, dense},
    nfa::thompson,
    util::{primitives::StateID, start},
};

/// The label every alert has, never empty.
pub const ALERTNAME: &str = "alertname";

/// Bound on a compiled DFA (and its determinization): a pathological regex in a silence must
/// not make the agent allocate without limit.
const DFA_SIZE_LIMIT: usize = 4 << 20;
/// Bound on the NFA a regex compiles to, before any DFA: `(.{0,1000}){1000}` must fail fast,
/// not build a billion-state NFA first.
const NFA_SIZE_LIMIT: usize = 1 << 20;
/// Bound on the product states [`exists`] visits; beyond it the answer is [`Answer::Unknown`].
const MAX_PRODUCT_STATES: usize = 50_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Equal => "=",
            Op::NotEqual => "!=",
            Op::Regex => "=~",
            Op::NotRegex => "!~",
        }
    }

    fn negated(self) -> bool {
        matches!(self, Op::NotEqual | Op::NotRegex)
    }

    fn regex(self) -> bool {
        matches!(self, Op::Regex | Op::NotRegex)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error("invalid regex in matcher {name}=~\"{value}\": {reason}")]
    Regex {
        name: String,
        value: String,
        reason: String,
    },
    #[error("invalid matcher \"{text}\": {reason}")]
    Syntax { text: String, reason: &'static str },
}

/// One compiled matcher.
#[derive(Clone)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
    dfa: Arc<dense::DFA<Vec<u32>>>,
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl Eq for Matcher {}

impl fmt::Display for Matcher {
    /// `name="value"`, the value quoted as Alertmanager prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

impl Matcher {
    pub fn new(name: &str, op: Op, value: &str) -> Result<Self, MatcherError> {
        let pattern = if op.regex() {
            format!("^(?:{value})$")
        } else {
            format!("^{}$", regex_syntax::escape(value))
        };
        let config = dense::Config::new()
            .start_kind(StartKind::Anchored)
            .match_kind(MatchKind::All)
            .unicode_word_boundary(true)
            .dfa_size_limit(Some(DFA_SIZE_LIMIT))
            .determinize_size_limit(Some(DFA_SIZE_LIMIT));
        let dfa = dense::Builder::new()
            .configure(config)
            .thompson(thompson::Config::new().nfa_size_limit(Some(NFA_SIZE_LIMIT)))
            .build(&pattern)
            .map_err(|e| MatcherError::Regex {
                name: name.to_owned(),
                value: value.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            dfa: Arc::new(dfa),
        })
    }

    /// Whether the matcher matches a label value (`""` for a label the alert does not have).
    pub fn matches(&self, value: &str) -> bool {
        let mut s = self.start();
        for &b in value.as_bytes() {
            s = self.dfa.next_state(s, b);
        }
        let accepted = self.dfa.is_match_state(self.dfa.next_eoi_state(s));
        accepted != self.op.negated()
    }

    /// A shortest printable-ASCII value the matcher matches (`""` first), if one is found
    /// within a bounded search: a representative label value for routing a selector.
    pub fn example(&self) -> Option<String> {
        if self.matches("") {
            return Some(String::new());
        }
        let mut seen = HashSet::new();
        let mut queue = std::collections::VecDeque::from([(self.start(), Vec::new())]);
        while let Some((s, text)) = queue.pop_front() {
            if seen.len() > MAX_PRODUCT_STATES || text.len() > 256 {
                return None;
            }
            for b in 0x20..0x7f_u8 {
                let t = self.dfa.next_state(s, b);
                if self.dfa.is_quit_state(t) || !seen.insert(t) {
                    continue;
                }
                let mut next: Vec<u8> = text.clone();
                next.push(b);
                let accepted = self.dfa.is_match_state(self.dfa.next_eoi_state(t));
                if accepted != self.op.negated() {
                    return String::from_utf8(next).ok();
                }
                queue.push_back((t, next));
            }
        }
        None
    }

    /// Heap memory of the compiled automaton.
    pub fn memory_usage(&self) -> usize {
        self.dfa.memory_usage()
    }

    fn start(&self) -> StateID {
        let config = start::Config::new().anchored(Anchored::Yes);
        // An anchored start state exists: the DFA is built with StartKind::Anchored.
        self.dfa.start_state(&config).unwrap_or(StateID::ZERO)
    }
}

/// Parses a selector as written in the policy: one or more matchers, comma separated,
/// optionally in braces: `alertname="Watchdog"`, `{severity=~"critical|page", team="sec"}`.
/// Values are double-quoted with Go's escapes (`\"`, `\\`, `\n`).
pub fn parse_selector(text: &str) -> Result<Vec<Matcher>, MatcherError> {
    let syntax = |reason| MatcherError::Syntax {
        text: text.to_owned(),
        reason,
    };
    let mut rest = text.trim();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner
            .strip_suffix('}')
            .ok_or_else(|| syntax("no closing }"))?;
    }
    let mut out = Vec::new();
    let mut chars = rest.trim().chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(syntax("expected a label name"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let op = match (chars.next(), chars.peek().copied()) {
            (Some('='), Some('~')) => Op::Regex,
            (Some('='), _) => Op::Equal,
            (Some('!'), Some('=')) => Op::NotEqual,
            (Some('!'), Some('~')) => Op::NotRegex,
            _ => return Err(syntax("expected =, !=, =~ or !~ after the label name")),
        };
        if op != Op::Equal {
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('"') {
            return Err(syntax("the value must be in double quotes"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                None => return Err(syntax("unterminated quoted value")),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(c @ ('"' | '\\')) => value.push(c),
                    _ => return Err(syntax("unknown escape in the value")),
                },
                Some(c) => value.push(c),
            }
        }
        out.push(Matcher::new(&name, op, &value)?);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some(',') => {}
            Some(_) => return Err(syntax("expected a comma between matchers")),
        }
    }
    Ok(out)
}

/// The answer to a breadth question; `Unknown` when the product of the automata is too large
/// to walk (or a Unicode word boundary met non-ASCII input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Yes,
    No,
    Unknown,
}

impl Answer {
    fn not(self) -> Self {
        match self {
            Answer::Yes => Answer::No,
            Answer::No => Answer::Yes,
            Answer::Unknown => Answer::Unknown,
        }
    }
}

/// Where the UTF-8 decoder is: between characters, or expecting `left` more continuation
/// bytes, the next one in `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Utf8 {
    Boundary,
    Cont { left: u8, lo: u8, hi: u8 },
}

impl Utf8 {
    /// The decoder after `b`, or `None` when `b` cannot come next in valid UTF-8 (or is `\n`).
    fn step(self, b: u8) -> Option<Utf8> {
        let cont = |left, lo, hi| Some(Utf8::Cont { left, lo, hi });
        match self {
            Utf8::Boundary => match b {
                b'\n' => None,
                0x00..=0x7F => Some(Utf8::Boundary),
                0xC2..=0xDF => cont(1, 0x80, 0xBF),
                0xE0 => cont(2, 0xA0, 0xBF),
                0xE1..=0xEC | 0xEE..=0xEF => cont(2, 0x80, 0xBF),
                0xED => cont(2, 0x80, 0x9F),
                0xF0 => cont(3, 0x90, 0xBF),
                0xF1..=0xF3 => cont(3, 0x80, 0xBF),
                0xF4 => cont(3, 0x80, 0x8F),
                _ => None,
            },
            Utf8::Cont { left, lo, hi } if (lo..=hi).contains(&b) => {
                if left == 1 {
                    Some(Utf8::Boundary)
                } else {
                    cont(left - 1, 0x80, 0xBF)
                }
            }
            Utf8::Cont { .. } => None,
        }
    }
}

/// Whether some value of label `label` (see the module notes for which values count) gives
/// each matcher of `terms` the wanted outcome (`true`: it matches).
pub fn exists(label: &str, terms: &[(&Matcher, bool)]) -> Answer {
    let allow_empty = label != ALERTNAME;
    // The DFA's own acceptance each term needs (a negated matcher matches when its DFA does not).
    let need: Vec<bool> = terms
        .iter()
        .map(|(m, want)| *want != m.op.negated())
        .collect();
    let dfas: Vec<&dense::DFA<Vec<u32>>> = terms.iter().map(|(m, _)| &*m.dfa).collect();
    let first: Vec<StateID> = terms.iter().map(|(m, _)| m.start()).collect();
    let mut seen: HashSet<(Vec<StateID>, Utf8, bool)> = HashSet::new();
    let mut stack = vec![(first, Utf8::Boundary, false)];
    while let Some((states, utf8, nonempty)) = stack.pop() {
        if !seen.insert((states.clone(), utf8, nonempty)) {
            continue;
        }
        if seen.len() > MAX_PRODUCT_STATES {
            return Answer::Unknown;
        }
        if utf8 == Utf8::Boundary && (nonempty || allow_empty) {
            let all = states
                .iter()
                .zip(&dfas)
                .zip(&need)
                .all(|((&s, dfa), &n)| dfa.is_match_state(dfa.next_eoi_state(s)) == n);
            if all {
                return Answer::Yes;
            }
        }
        for b in 0..=255u8 {
            let Some(next_utf8) = utf8.step(b) else {
                continue;
            };
            let mut next = Vec::with_capacity(states.len());
            let mut viable = true;
            for ((&s, dfa), &n) in states.iter().zip(&dfas).zip(&need) {
                let t = dfa.next_state(s, b);
                if dfa.is_quit_state(t) {
                    return Answer::Unknown;
                }
                // A dead DFA never accepts again: fatal when acceptance is needed.
                if n && dfa.is_dead_state(t) {
                    viable = false;
                    break;
                }
                next.push(t);
            }
            if viable {
                stack.push((next, next_utf8, true));
            }
        }
    }
    Answer::No
}

/// Whether `m` matches every value of its label.
pub fn matches_all_values(m: &Matcher) -> Answer {
    exists(&m.name, &[(m, false)]).not()
}

/// Whether the matchers together match every alert (each matches every value of its label).
pub fn matches_everything(matchers: &[Matcher]) -> Answer {
    let mut answer = Answer::Yes;
    for m in matchers {
        match matches_all_values(m) {
            Answer::No => return Answer::No,
            Answer::Unknown => answer = Answer::Unknown,
            Answer::Yes => {}
        }
    }
    answer
}

/// Whether some alert is matched by all of `a` and all of `b` (labels are independent, so per
/// label some value must satisfy both sides' matchers on it).
pub fn overlap(a: &[Matcher], b: &[Matcher]) -> Answer {
    let mut answer = Answer::Yes;
    let mut labels: Vec<&str> = a.iter().chain(b).map(|m| m.name.as_str()).collect();
    labels.sort_unstable();
    labels.dedup();
    for label in labels {
        let terms: Vec<(&Matcher, bool)> = a
            .iter()
            .chain(b)
            .filter(|m| m.name == label)
            .map(|m| (m, true))
            .collect();
        match exists(label, &terms) {
            Answer::No => return Answer::No,
            Answer::Unknown => answer = Answer::Unknown,
            Answer::Yes => {}
        }
    }
    answer
}

/// Whether every alert `inner` matches, `outer` matches too (`inner` mutes nothing `outer`
/// does not). An `inner` that matches nothing is included in anything.
pub fn includes(outer: &[Matcher], inner: &[Matcher]) -> Answer {
    match overlap(inner, &[]) {
        Answer::No => return Answer::Yes,
        Answer::Unknown => return Answer::Unknown,
        Answer::Yes => {}
    }
    let mut answer = Answer::Yes;
    for o in outer {
        // Some alert matched by `inner` but not by `o`? Only `o`'s label can make it fail,
        // the other labels of `inner` are satisfiable (checked above).
        let mut terms: Vec<(&Matcher, bool)> = inner
            .iter()
            .filter(|m| m.name == o.name)
            .map(|m| (m, true))
            .collect();
        terms.push((o, false));
        match exists(&o.name, &terms) {
            Answer::Yes => return Answer::No,
            Answer::Unknown => answer = Answer::Unknown,
            Answer::No => {}
        }
    }
    answer
}

/// `{a="b", c=~"d"}`, as Alertmanager shows a silence's matchers.
pub fn render(matchers: &[Matcher]) -> String {
    let inner: Vec<String> = matchers.iter().map(ToString::to_string).collect();
    format!("{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests;
