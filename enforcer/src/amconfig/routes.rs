//! The routing part of an Alertmanager configuration — route tree, receivers' integrations,
//! inhibit rules, time intervals — and routing a label set through it exactly as
//! Alertmanager's `dispatch.Route.Match` does.
//!
//! Semantics (Alertmanager 0.25, `dispatch/route.go`, `config/config.go`):
//! - a route's matchers are its `match` (equality), `match_re` (anchored regex) and `matchers`
//!   (the classic matcher syntax, quoted or not); all must match;
//! - children are tried in order; a matching child ends the search unless it has
//!   `continue: true`; when no child matches, the route itself is the match;
//! - `receiver`, `group_by`, `group_wait`, `group_interval`, `repeat_interval` are inherited
//!   from the parent; `mute_time_intervals` and `active_time_intervals` are not.
//!
//! The configuration is attacker-controlled: every list and the tree are bounded
//! ([`MAX_ROUTES`], [`MAX_MATCHERS`], [`MAX_DFA_BYTES`]); beyond a bound the configuration is
//! refused with a [`RoutingError`] rather than analysed partly.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::matchers::{Matcher, MatcherError, Op};
use crate::policy::Location;
use crate::yaml::{Kind, Node};

pub use super::timeintervals::{Civil, TimeInterval};

/// Route nodes analysed; a larger tree is refused.
pub const MAX_ROUTES: usize = 2_000;
/// Matchers of routes and inhibit rules together.
pub const MAX_MATCHERS: usize = 10_000;
/// Inhibit rules analysed.
pub const MAX_INHIBIT_RULES: usize = 500;
/// Memory of every compiled matcher together (each is bounded on its own too).
pub const MAX_DFA_BYTES: usize = 128 << 20;

const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("{location}: invalid YAML: {message}")]
    Yaml { location: Location, message: String },
    #[error("{location}: {field}: {reason}")]
    Field {
        location: Location,
        field: String,
        reason: String,
    },
    #[error("{file}: {what} exceeds the analysed bound of {max}")]
    TooLarge {
        file: String,
        what: &'static str,
        max: usize,
    },
}

/// One route node, with its inherited settings resolved.
#[derive(Clone, Debug)]
pub struct Route {
    /// `route`, `route.routes[0]`, ...
    pub path: String,
    pub receiver: String,
    pub matchers: Vec<Matcher>,
    pub continues: bool,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    /// Its own (not inherited).
    pub mute_time_intervals: Vec<String>,
    pub active_time_intervals: Vec<String>,
    pub children: Vec<usize>,
}

/// One inhibit rule.
#[derive(Clone, Debug)]
pub struct InhibitRule {
    /// `inhibit_rules[3]`, or its `name`.
    pub name: String,
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

/// The routing of one configuration.
#[derive(Clone, Debug, Default)]
pub struct Routing {
    /// Index 0 is the root.
    pub routes: Vec<Route>,
    /// Receiver name → number of integrations (`*_configs` entries).
    pub receivers: BTreeMap<String, usize>,
    pub inhibit_rules: Vec<InhibitRule>,
    /// `time_intervals` and `mute_time_intervals` by name.
    pub time_intervals: BTreeMap<String, Arc<TimeInterval>>,
    /// Every label name a route matcher looks at.
    pub route_labels: BTreeSet<String>,
}

/// A label set: a missing label is `""`.
pub type Labels = BTreeMap<String, String>;

pub(super) struct Cx<'a> {
    pub text: &'a str,
    pub file: &'a str,
    matchers: usize,
    dfa_bytes: usize,
}

impl Cx<'_> {
    pub fn err(&self, node: &Node, field: &str, reason: impl Into<String>) -> RoutingError {
        RoutingError::Field {
            location: Location {
                file: self.file.into(),
                line: node.line,
                column: node.column,
            },
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    pub fn string(&self, node: &Node, field: &str) -> Result<String, RoutingError> {
        node.text(self.text).ok_or_else(|| {
            self.err(
                node,
                field,
                format!("must be a string, found {}", node.found()),
            )
        })
    }

    pub fn list<'n>(&self, node: &'n Node, field: &str) -> Result<&'n [Node], RoutingError> {
        match &node.kind {
            Kind::Seq(items) => Ok(items),
            Kind::Null => Ok(&[]),
            _ => Err(self.err(
                node,
                field,
                format!("must be a list, found {}", node.found()),
            )),
        }
    }

    pub fn strings(&self, node: Option<&Node>, field: &str) -> Result<Vec<String>, RoutingError> {
        let Some(node) = node else {
            return Ok(Vec::new());
        };
        self.list(node, field)?
            .iter()
            .map(|n| self.string(n, field))
            .collect()
    }

    fn matcher(
        &mut self,
        node: &Node,
        field: &str,
        m: Result<Matcher, MatcherError>,
    ) -> Result<Matcher, RoutingError> {
        let m = m.map_err(|e| self.err(node, field, e.to_string()))?;
        self.matchers += 1;
        self.dfa_bytes = self.dfa_bytes.saturating_add(m.memory_usage());
        if self.matchers > MAX_MATCHERS {
            return Err(self.too_large("the number of matchers", MAX_MATCHERS));
        }
        if self.dfa_bytes > MAX_DFA_BYTES {
            return Err(self.too_large("the memory of the compiled matchers", MAX_DFA_BYTES));
        }
        Ok(m)
    }

    fn too_large(&self, what: &'static str, max: usize) -> RoutingError {
        RoutingError::TooLarge {
            file: self.file.to_owned(),
            what,
            max,
        }
    }

    /// `match`, `match_re` and `matchers` (prefixed for inhibit rules: `source_`, `target_`).
    fn matchers(&mut self, node: &Node, prefix: &str) -> Result<Vec<Matcher>, RoutingError> {
        let mut out = Vec::new();
        for (key, op) in [("match", Op::Equal), ("match_re", Op::Regex)] {
            let field = format!("{prefix}{key}");
            let Some(map) = node.value(&field) else {
                continue;
            };
            let Kind::Map(entries) = &map.kind else {
                return Err(self.err(map, &field, "must be a mapping of label to value"));
            };
            for (k, v) in entries {
                let name = self.string(k, &field)?;
                let value = self.string(v, &field)?;
                let m = Matcher::new(&name, op, &value);
                out.push(self.matcher(v, &field, m)?);
            }
        }
        let field = format!("{prefix}matchers");
        if let Some(list) = node.value(&field) {
            for item in self.list(list, &field)? {
                let text = self.string(item, &field)?;
                for m in parse_matchers(&text) {
                    out.push(self.matcher(item, &field, m)?);
                }
            }
        }
        Ok(out)
    }
}

/// Parses Alertmanager's classic matcher syntax (`pkg/labels/parse.go`): `{a="b", c=~d}`,
/// values quoted (with `\"`, `\\`, `\n` escapes) or bare.
pub fn parse_matchers(text: &str) -> Vec<Result<Matcher, MatcherError>> {
    let syntax = |reason| {
        Err(MatcherError::Syntax {
            text: crate::input::cut(text).into_owned(),
            reason,
        })
    };
    let s = text.strip_prefix('{').unwrap_or(text);
    let s = s.strip_suffix('}').unwrap_or(s);
    let mut tokens = Vec::new();
    let (mut token, mut quoted, mut escaped) = (String::new(), false, false);
    for c in s.chars() {
        if !quoted && c == ',' {
            tokens.push(std::mem::take(&mut token));
            continue;
        }
        token.push(c);
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        }
    }
    if !token.trim().is_empty() {
        tokens.push(token);
    }
    tokens
        .iter()
        .map(|t| {
            let t = t.trim();
            let name_end = t
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(t.len());
            let (name, rest) = t.split_at(name_end);
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                return syntax("expected a label name");
            }
            let rest = rest.trim_start();
            let (op, raw) = [
                ("=~", Op::Regex),
                ("!=", Op::NotEqual),
                ("!~", Op::NotRegex),
                ("=", Op::Equal),
            ]
            .iter()
            .find_map(|(p, op)| rest.strip_prefix(p).map(|r| (*op, r.trim())))
            .map_or_else(|| (None, ""), |(op, r)| (Some(op), r));
            let Some(op) = op else {
                return syntax("expected =, !=, =~ or !~ after the label name");
            };
            let (raw, mut expect_quote) = match raw.strip_prefix('"') {
                Some(r) => (r, true),
                None => (raw, false),
            };
            let mut value = String::new();
            let mut chars = raw.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' if i + 1 < raw.len() => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, e @ ('"' | '\\'))) => value.push(e),
                        Some((_, e)) => {
                            value.push('\\');
                            value.push(e);
                        }
                        None => value.push('\\'),
                    },
                    '"' if expect_quote && i + 1 == raw.len() => expect_quote = false,
                    '"' => return syntax("the value contains an unescaped double quote"),
                    c => value.push(c),
                }
            }
            if expect_quote {
                return syntax("the value has no closing double quote");
            }
            Matcher::new(name, op, &value)
        })
        .collect()
}

/// A Prometheus duration (`30s`, `1h30m`, `2d`, `1w`, `1y`, `500ms`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(n.checked_mul(ms)?)?;
    }
    Some(Duration::from_millis(total))
}

/// Reads the routing part of a configuration's text (`file` names it in errors).
pub fn parse_routing(text: &str, file: &str) -> Result<Routing, RoutingError> {
    let root = crate::yaml::parse(text, &super::YAML).map_err(|e| RoutingError::Yaml {
        location: Location {
            file: file.into(),
            line: e.line,
            column: e.column,
        },
        message: e.message,
    })?;
    let mut cx = Cx {
        text,
        file,
        matchers: 0,
        dfa_bytes: 0,
    };
    let mut routing = Routing::default();
    if let Some(list) = root.value("receivers") {
        for r in cx.list(list, "receivers")? {
            let name = r
                .value("name")
                .map_or(Ok(String::new()), |n| cx.string(n, "receivers[].name"))?;
            let mut integrations = 0;
            if let Kind::Map(entries) = &r.kind {
                for (k, v) in entries {
                    if matches!(&k.kind, Kind::Str(s) if s.ends_with("_configs")) {
                        integrations += cx.list(v, "receivers[]._configs")?.len();
                    }
                }
            }
            routing.receivers.insert(name, integrations);
        }
    }
    for key in ["time_intervals", "mute_time_intervals"] {
        if let Some(list) = root.value(key) {
            for t in cx.list(list, key)? {
                let ti = super::timeintervals::parse(&cx, t, key)?;
                routing.time_intervals.insert(ti.name.clone(), Arc::new(ti));
            }
        }
    }
    if let Some(list) = root.value("inhibit_rules") {
        let rules = cx.list(list, "inhibit_rules")?;
        if rules.len() > MAX_INHIBIT_RULES {
            return Err(cx.too_large("the number of inhibit rules", MAX_INHIBIT_RULES));
        }
        for (i, rule) in rules.iter().enumerate() {
            let name = match rule.value("name") {
                Some(n) => cx.string(n, "inhibit_rules[].name")?,
                None => format!("inhibit_rules[{i}]"),
            };
            routing.inhibit_rules.push(InhibitRule {
                name,
                source: cx.matchers(rule, "source_")?,
                target: cx.matchers(rule, "target_")?,
                equal: cx.strings(rule.value("equal"), "equal")?,
            });
        }
    }
    if let Some(node) = root.value("route") {
        let parent = Route {
            path: String::new(),
            receiver: String::new(),
            matchers: Vec::new(),
            continues: false,
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            mute_time_intervals: Vec::new(),
            active_time_intervals: Vec::new(),
            children: Vec::new(),
        };
        build(
            &mut cx,
            node,
            "route".to_owned(),
            &parent,
            &mut routing.routes,
        )?;
    }
    routing.route_labels = routing
        .routes
        .iter()
        .flat_map(|r| r.matchers.iter().map(|m| m.name.clone()))
        .collect();
    Ok(routing)
}

/// Adds `node` and its subtree to `out` (pre-order, iteratively bounded by [`MAX_ROUTES`]);
/// returns its index.
fn build(
    cx: &mut Cx<'_>,
    node: &Node,
    path: String,
    parent: &Route,
    out: &mut Vec<Route>,
) -> Result<usize, RoutingError> {
    if out.len() >= MAX_ROUTES {
        return Err(cx.too_large("the number of routes", MAX_ROUTES));
    }
    if !matches!(node.kind, Kind::Map(_)) {
        return Err(cx.err(
            node,
            &path,
            format!("must be a mapping, found {}", node.found()),
        ));
    }
    let timer = |cx: &Cx<'_>, key: &str, inherited: Duration| -> Result<Duration, RoutingError> {
        match node.value(key) {
            None => Ok(inherited),
            Some(v) => {
                let text = cx.string(v, key)?;
                parse_duration(&text)
                    .ok_or_else(|| cx.err(v, key, format!("{text:?} is not a duration")))
            }
        }
    };
    let receiver = match node.value("receiver") {
        Some(r) => cx.string(r, "receiver")?,
        None => parent.receiver.clone(),
    };
    let continues = match node.value("continue").map(|n| &n.kind) {
        None => false,
        Some(Kind::Bool(b)) => *b,
        Some(_) => return Err(cx.err(node, "continue", "must be true or false")),
    };
    let route = Route {
        receiver,
        matchers: cx.matchers(node, "")?,
        continues,
        group_wait: timer(cx, "group_wait", parent.group_wait)?,
        group_interval: timer(cx, "group_interval", parent.group_interval)?,
        repeat_interval: timer(cx, "repeat_interval", parent.repeat_interval)?,
        mute_time_intervals: cx
            .strings(node.value("mute_time_intervals"), "mute_time_intervals")?,
        active_time_intervals: cx
            .strings(node.value("active_time_intervals"), "active_time_intervals")?,
        children: Vec::new(),
        path: path.clone(),
    };
    let index = out.len();
    out.push(route.clone());
    if let Some(list) = node.value("routes") {
        for (i, child) in cx.list(list, "routes")?.iter().enumerate() {
            let c = build(cx, child, format!("{path}.routes[{i}]"), &route, out)?;
            out[index].children.push(c);
        }
    }
    Ok(index)
}

/// Whether every matcher matches the label set (a missing label is `""`).
pub fn matches_labels(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers
        .iter()
        .all(|m| m.matches(labels.get(&m.name).map_or("", String::as_str)))
}

impl Routing {
    /// The routes an alert with `labels` is dispatched to, in order (as `Route.Match`).
    /// Empty only when there is no route tree.
    pub fn route(&self, labels: &Labels) -> Vec<usize> {
        let mut out = Vec::new();
        if !self.routes.is_empty() {
            self.walk(0, labels, &mut out);
        }
        out
    }

    fn walk(&self, at: usize, labels: &Labels, out: &mut Vec<usize>) -> bool {
        let r = &self.routes[at];
        if !matches_labels(&r.matchers, labels) {
            return false;
        }
        let before = out.len();
        for &c in &r.children {
            if self.walk(c, labels, out) && !self.routes[c].continues {
                break;
            }
        }
        if out.len() == before {
            out.push(at);
        }
        true
    }

    /// The receivers of [`Routing::route`], deduplicated in order.
    pub fn receivers_of(&self, labels: &Labels) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for i in self.route(labels) {
            let r = &self.routes[i].receiver;
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    }

    /// Integrations of a receiver (0 for a name the configuration does not define).
    pub fn integrations(&self, receiver: &str) -> usize {
        self.receivers.get(receiver).copied().unwrap_or(0)
    }
}

#[cfg(test)]
#[path = "tests/routes.rs"]
mod tests;
