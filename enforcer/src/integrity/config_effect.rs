//! What the running configuration does to protected alerts, judged by routing them: each
//! protected selector (as a representative label set) and each protected alert firing now is
//! routed through the running route tree as Alertmanager routes it.
//!
//! - `config_drops_protected`: every route it reaches ends at a receiver without integrations,
//!   is muted now by a time interval, or holds notifications back with a timer beyond the
//!   bound (`integrity.effect.max_*`);
//! - `inhibit_rule_risky`: an inhibit rule whose target covers a protected selector, or whose
//!   source is always firing (matches every alert, or an alert firing longer than
//!   `always_firing_after`, or the dead-man's switch: a protected selector on `alertname`
//!   alone);
//! - the `config_changed` summary: receivers renamed (same definition, new name), routes only
//!   re-ordered, and where the routing of the protected and firing alerts changed.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::config::Running;
use super::effect::{Alert, route_state};
use super::finding::{Finding, FindingKind, Source};
use super::silences::covers;
use crate::amconfig::routes::{Labels, Routing, matches_labels};
use crate::details;
use crate::matchers::{self, ALERTNAME, Answer, Op};
use crate::policy::IntegritySettings;

/// Firing alerts whose routing is compared in a `config_changed` summary.
const MAX_PROBES: usize = 200;

/// A label set routed to judge the configuration.
pub struct Probe {
    /// `selector:severity="critical"` or `alert:<fingerprint>`.
    pub subject: String,
    pub alertname: String,
    pub labels: Labels,
}

/// A representative label set of a selector: a value each matcher accepts.
pub fn representative(matchers: &[crate::matchers::Matcher]) -> Labels {
    let mut labels = Labels::new();
    for m in matchers {
        if labels.contains_key(&m.name) {
            continue;
        }
        let together: Vec<_> = matchers.iter().filter(|o| o.name == m.name).collect();
        let value = together
            .iter()
            .filter_map(|o| o.example())
            .find(|v| together.iter().all(|o| o.matches(v)));
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            labels.insert(m.name.clone(), v);
        }
    }
    labels
}

/// The protected selectors and the protected alerts firing now.
pub fn probes(settings: &IntegritySettings, alerts: &[Alert]) -> Vec<Probe> {
    let mut out: Vec<Probe> = settings
        .protected
        .iter()
        .map(|p| {
            let labels = representative(&p.matchers);
            Probe {
                subject: format!("selector:{}", p.text),
                alertname: labels.get(ALERTNAME).cloned().unwrap_or_default(),
                labels,
            }
        })
        .collect();
    out.extend(
        alerts
            .iter()
            .filter(|a| {
                settings
                    .protected
                    .iter()
                    .any(|p| matches_labels(&p.matchers, &a.labels))
            })
            .take(MAX_PROBES)
            .map(|a| Probe {
                subject: format!("alert:{}", a.fingerprint),
                alertname: a.name().to_owned(),
                labels: a.labels.clone(),
            }),
    );
    out
}

/// `2h`, `5m`, `30s`.
fn shown(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// The configuration's findings at `now` (ms since the epoch).
pub fn judge(
    analysed: &Analysed,
    settings: &IntegritySettings,
    alerts: &[Alert],
    now: i64,
    hash: &str,
    at: &Source,
) -> Vec<Finding> {
    let routing = &analysed.routing;
    let civil = super::time::civil(now);
    let e = &settings.effect;
    let mut out = Vec::new();
    for probe in probes(settings, alerts) {
        let routes = routing.route(&probe.labels);
        let mut judged = Vec::new();
        let mut delivers = false;
        for &i in &routes {
            let r = &routing.routes[i];
            let state = route_state(routing, i, &civil);
            let mut problems: Vec<Value> = state.muted_by;
            if state.integrations == 0 {
                problems.push(json!({"receiver_without_integrations": r.receiver}));
            }
            for (name, value, max) in [
                ("group_wait", r.group_wait, e.max_group_wait),
                ("group_interval", r.group_interval, e.max_group_interval),
                ("repeat_interval", r.repeat_interval, e.max_repeat_interval),
            ] {
                if value > max {
                    problems.push(json!({"timer": name, "value": shown(value), "max": shown(max)}));
                }
            }
            delivers |= problems.is_empty();
            judged.push(json!({"route": r.path, "receiver": r.receiver, "problems": problems}));
        }
        if delivers || routes.is_empty() {
            continue;
        }
        out.push(Finding::new(
            FindingKind::ConfigDropsProtected,
            at,
            // What is wrong is part of its identity: another problem is another finding.
            &format!("{}|{}", probe.subject, Value::Array(judged.clone())),
            details! {
                "subject" => probe.subject, "alertname" => probe.alertname,
                "labels" => probe.labels, "routes" => judged, "config_hash" => hash,
            },
        ));
    }
    for (rule, known) in routing.inhibit_rules.iter().zip(&analysed.inhibit) {
        let mut reasons: Vec<Value> = known
            .covers
            .iter()
            .map(|p| json!({"target_covers_protected": p}))
            .collect();
        if known.source_matches_everything {
            reasons.push(json!({"source_always_firing": "matches every alert"}));
        } else {
            let after = i64::try_from(e.always_firing_after.as_millis()).unwrap_or(i64::MAX);
            let deadman = |a: &Alert| {
                settings.protected.iter().any(|p| {
                    !p.matchers.is_empty()
                        && p.matchers
                            .iter()
                            .all(|m| m.name == ALERTNAME && m.op == Op::Equal)
                        && matches_labels(&p.matchers, &a.labels)
                })
            };
            if let Some(a) = alerts.iter().find(|a| {
                matches_labels(&rule.source, &a.labels)
                    && (deadman(a) || (a.starts_at > 0 && now - a.starts_at >= after))
            }) {
                reasons
                    .push(json!({"source_always_firing": a.name(), "fingerprint": a.fingerprint}));
            }
        }
        if reasons.is_empty() {
            continue;
        }
        let text = format!(
            "{}|{}|{}|{}",
            rule.name,
            matchers::render(&rule.source),
            matchers::render(&rule.target),
            rule.equal.join(",")
        );
        out.push(Finding::new(
            FindingKind::InhibitRuleRisky,
            at,
            &text,
            details! {
                "inhibit_rule" => rule.name,
                "source_matchers" => matchers::render(&rule.source),
                "target_matchers" => matchers::render(&rule.target),
                "equal" => rule.equal, "reasons" => reasons, "config_hash" => hash,
            },
        ));
    }
    out
}

/// A receiver's definition without its name.
fn unnamed(definition: &str) -> Value {
    let mut v: Value = serde_json::from_str(definition).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("name");
    }
    v
}

/// Adds to a `config_changed` finding's details: `receivers_renamed` (taken out of added and
/// removed), `routes_reordered` (the route lists emptied when only the order or a renamed
/// receiver changed), and `routing_changed` for the probes whose receivers differ.
pub fn summarise(
    details: &mut Map<String, Value>,
    old: (&Running, Option<&Routing>),
    new: (&Running, Option<&Routing>),
    probes: &[Probe],
) {
    let (old_run, old_routing) = old;
    let (new_run, new_routing) = new;
    let mut renamed: BTreeMap<String, String> = BTreeMap::new();
    for (name, def) in &old_run.receivers {
        if new_run.receivers.contains_key(name) {
            continue;
        }
        let d = unnamed(def);
        if let Some((to, _)) = new_run.receivers.iter().find(|(n, nd)| {
            !old_run.receivers.contains_key(*n)
                && !renamed.values().any(|v| v == *n)
                && unnamed(nd) == d
        }) {
            renamed.insert(name.clone(), to.clone());
        }
    }
    let drop = |key: &str, gone: &dyn Fn(&str) -> bool, details: &mut Map<String, Value>| {
        if let Some(Value::Array(list)) = details.get_mut(key) {
            list.retain(|v| !v.as_str().is_some_and(gone));
        }
    };
    drop("receivers_removed", &|n| renamed.contains_key(n), details);
    drop(
        "receivers_added",
        &|n| renamed.values().any(|v| v == n),
        details,
    );
    details.insert(
        "receivers_renamed".into(),
        Value::Array(
            renamed
                .iter()
                .map(|(f, t)| json!({"from": f, "to": t}))
                .collect(),
        ),
    );
    // Routes by content, the old receiver names mapped to the new.
    let seq = |run: &Running, map: &BTreeMap<String, String>| -> Vec<Value> {
        run.routes
            .values()
            .map(|own| {
                let mut v: Value = serde_json::from_str(own).unwrap_or(Value::Null);
                if let Some(r) = v.get_mut("receiver")
                    && let Some(to) = r.as_str().and_then(|n| map.get(n))
                {
                    *r = Value::String(to.clone());
                }
                v
            })
            .collect()
    };
    let (a, b) = (seq(old_run, &renamed), seq(new_run, &BTreeMap::new()));
    let sorted = |mut v: Vec<Value>| {
        v.sort_by_key(ToString::to_string);
        v
    };
    let same_content = a.len() == b.len() && sorted(a.clone()) == sorted(b.clone());
    details.insert("routes_reordered".into(), json!(same_content && a != b));
    if same_content {
        for key in ["routes_added", "routes_removed", "routes_changed"] {
            details.insert(key.into(), json!([]));
        }
    }
    let mut changed = Vec::new();
    if let (Some(o), Some(n)) = (old_routing, new_routing) {
        for p in probes.iter().take(MAX_PROBES) {
            let before: Vec<String> = o
                .receivers_of(&p.labels)
                .into_iter()
                .map(|r| renamed.get(&r).cloned().unwrap_or(r))
                .collect();
            let after = n.receivers_of(&p.labels);
            if before != after {
                changed.push(json!({"subject": p.subject, "alertname": p.alertname, "before": before, "after": after}));
            }
        }
    }
    details.insert("routing_changed".into(), Value::Array(changed));
}

/// What an inhibit rule is, whatever fires: computed once per configuration (the matcher
/// algebra is bounded per question, but a configuration may ask many).
pub struct InhibitKnown {
    /// Protected selectors its target covers.
    pub covers: Vec<String>,
    pub source_matches_everything: bool,
}

/// A running configuration's routing and what its inhibit rules are.
pub struct Analysed {
    pub routing: Routing,
    pub inhibit: Vec<InhibitKnown>,
}

impl Analysed {
    pub fn new(routing: Routing, settings: &IntegritySettings) -> Self {
        let inhibit = routing
            .inhibit_rules
            .iter()
            .map(|rule| InhibitKnown {
                covers: settings
                    .protected
                    .iter()
                    .filter(|p| covers(&rule.target, &p.matchers) != Answer::No)
                    .map(|p| p.text.clone())
                    .collect(),
                source_matches_everything: matchers::matches_everything(&rule.source) != Answer::No,
            })
            .collect();
        Self { routing, inhibit }
    }
}

/// The analysis of each configuration read, by hash (the current and previous are kept).
#[derive(Default)]
pub struct RoutingCache {
    entries: HashMap<String, Result<Arc<Analysed>, String>>,
}

impl RoutingCache {
    /// The analysis of `run` (made once per hash); `keep` is the other hash to keep.
    pub fn get(
        &mut self,
        run: &Running,
        keep: Option<&str>,
        settings: &IntegritySettings,
    ) -> Result<Arc<Analysed>, String> {
        if !self.entries.contains_key(&run.hash) {
            self.entries.retain(|h, _| Some(h.as_str()) == keep);
            let parsed = crate::amconfig::routes::parse_routing(&run.text, "running configuration")
                .map(|r| Arc::new(Analysed::new(r, settings)))
                .map_err(|e| e.to_string());
            self.entries.insert(run.hash.clone(), parsed);
        }
        self.entries[&run.hash].clone()
    }
}
