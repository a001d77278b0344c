//! Integrity judged by effect: what the silences, inhibit rules, time intervals and receivers
//! of a watched Alertmanager do to the alerts that are firing now.
//!
//! Each read takes `GET /api/v2/alerts` (every firing alert with its state, `silencedBy`,
//! `inhibitedBy`) and `GET /api/v2/alerts/groups` (the receiver of each group). Alertmanager
//! 0.25 applies time intervals while notifying and does not show them in the API, so those
//! (and a receiver's integrations) come from routing the alert through the running route tree
//! ([`crate::amconfig::routes`]). Findings:
//! - `protected_alert_suppressed`: a firing protected alert silenced, inhibited (naming the
//!   inhibit rule and the inhibiting alert) or muted by a time interval on every route;
//! - `protected_alert_undelivered`: a firing protected alert whose every route ends at a
//!   receiver without integrations;
//! - `silences_mute_firing`: silences created close together that mute most firing alerts, or
//!   every firing alert of a protected selector;
//! - `protected_alerts_gone`: the protected set fires nothing while it did before.
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use serde_json::{Value, json};

use super::finding::{Finding, FindingKind, Source};
use super::silences::Silence;
use super::time::{parse_rfc3339, rfc3339};
use crate::amconfig::routes::{Civil, Labels, Routing, matches_labels};
use crate::details;
use crate::policy::IntegritySettings;

/// Findings of one kind reported per read and target; the rest are counted in the last one.
pub const MAX_FINDINGS_PER_KIND: usize = 50;
/// Protected alerts routed through the route tree per read (each route walk is bounded by
/// the tree's bounds; this bounds their number).
const MAX_ROUTED: usize = 200;
/// Silences named in one finding.
const MAX_NAMED: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum EffectError {
    #[error("the alerts are not the JSON Alertmanager's API returns: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiAlert {
    fingerprint: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    status: ApiAlertStatus,
    #[serde(default)]
    starts_at: String,
    #[serde(default)]
    receivers: Vec<ApiReceiver>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiAlertStatus {
    state: String,
    #[serde(default)]
    silenced_by: Vec<String>,
    #[serde(default)]
    inhibited_by: Vec<String>,
}

#[derive(Deserialize)]
struct ApiReceiver {
    name: String,
}

#[derive(Deserialize)]
struct ApiGroup {
    #[serde(default)]
    alerts: Vec<GroupAlert>,
    receiver: ApiReceiver,
}

#[derive(Deserialize)]
struct GroupAlert {
    fingerprint: String,
}

/// One firing alert as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub fingerprint: String,
    pub labels: Labels,
    /// `active`, `suppressed` or `unprocessed`.
    pub state: String,
    pub silenced_by: Vec<String>,
    pub inhibited_by: Vec<String>,
    pub starts_at: i64,
    /// From the groups (else the alert's own list).
    pub receivers: Vec<String>,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// Reads `GET /api/v2/alerts` and `GET /api/v2/alerts/groups`.
pub fn parse_alerts(alerts: &[u8], groups: &[u8]) -> Result<Vec<Alert>, EffectError> {
    let api: Vec<ApiAlert> = serde_json::from_slice(alerts)?;
    let groups: Vec<ApiGroup> = serde_json::from_slice(groups)?;
    let mut by_fp: HashMap<String, Vec<String>> = HashMap::new();
    for g in groups {
        for a in g.alerts {
            let list = by_fp.entry(a.fingerprint).or_default();
            if !list.contains(&g.receiver.name) {
                list.push(g.receiver.name.clone());
            }
        }
    }
    Ok(api
        .into_iter()
        .map(|a| Alert {
            receivers: by_fp
                .remove(&a.fingerprint)
                .unwrap_or_else(|| a.receivers.into_iter().map(|r| r.name).collect()),
            fingerprint: a.fingerprint,
            labels: a.labels,
            state: a.status.state,
            silenced_by: a.status.silenced_by,
            inhibited_by: a.status.inhibited_by,
            starts_at: parse_rfc3339(&a.starts_at).unwrap_or(0),
        })
        .collect())
}

/// What the watchdog remembers between reads of one target.
#[derive(Default)]
pub struct EffectMemory {
    /// The protected alerts (names) of the last read in which any fired, and when.
    protected_seen: Option<(Vec<String>, i64)>,
}

/// One read, judged.
pub struct Judged {
    pub states: Vec<Finding>,
    pub firing: usize,
    pub suppressed: usize,
    pub protected_firing: usize,
}

/// How a route delivers now: the time intervals that mute it, and its receiver's integrations.
pub struct RouteState {
    pub muted_by: Vec<Value>,
    pub integrations: usize,
}

/// Whether route `i` is muted at `now` (its `mute_time_intervals` containing it, or its
/// `active_time_intervals` not) and how many integrations its receiver has.
pub fn route_state(routing: &Routing, i: usize, now: &Civil) -> RouteState {
    let r = &routing.routes[i];
    let mut muted_by = Vec::new();
    for name in &r.mute_time_intervals {
        if let Some(t) = routing.time_intervals.get(name)
            && t.contains(now)
        {
            muted_by.push(json!({"mute_time_interval": name, "route": r.path, "zone_assumed_utc": t.zone_assumed}));
        }
    }
    let active: Vec<_> = r
        .active_time_intervals
        .iter()
        .filter_map(|n| routing.time_intervals.get(n))
        .collect();
    if !r.active_time_intervals.is_empty() && !active.iter().any(|t| t.contains(now)) {
        muted_by.push(json!({"active_time_intervals": r.active_time_intervals, "route": r.path, "inactive_now": true}));
    }
    RouteState {
        muted_by,
        integrations: routing.integrations(&r.receiver),
    }
}

fn silence_view(s: &Silence) -> Value {
    json!({
        "silence_id": s.id, "matchers": s.rendered, "created_by": s.created_by,
        "comment": s.comment, "starts_at": rfc3339(s.starts_at), "ends_at": rfc3339(s.ends_at),
    })
}

/// Judges one read. `routing` is the running configuration's (absent when it could not be
/// analysed); `now` in ms since the epoch.
pub fn judge(
    alerts: &[Alert],
    silences: &[Silence],
    routing: Option<&Routing>,
    settings: &IntegritySettings,
    memory: &mut EffectMemory,
    now: i64,
    at: &Source,
) -> Judged {
    let cx = Cx {
        by_fp: alerts.iter().map(|a| (a.fingerprint.as_str(), a)).collect(),
        silence_by_id: silences.iter().map(|s| (s.id.as_str(), s)).collect(),
        routing,
        civil: super::time::civil(now),
        at,
    };
    let protected_of = |a: &Alert| -> Vec<String> {
        settings
            .protected
            .iter()
            .filter(|p| matches_labels(&p.matchers, &a.labels))
            .map(|p| p.text.clone())
            .collect()
    };
    let mut suppressed = Vec::new();
    let mut undelivered = Vec::new();
    let mut protected_names = Vec::new();
    let mut routed = 0;
    let mut sorted: Vec<&Alert> = alerts.iter().collect();
    sorted.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    for a in &sorted {
        let protected = protected_of(a);
        if protected.is_empty() {
            continue;
        }
        protected_names.push(a.name().to_owned());
        if !a.silenced_by.is_empty() || !a.inhibited_by.is_empty() {
            suppressed.push(by_api(a, protected, &cx));
            continue;
        }
        routed += 1;
        if routed > MAX_ROUTED {
            continue;
        }
        match by_routing(a, protected, &cx) {
            Some(f) if f.finding == FindingKind::ProtectedAlertUndelivered => undelivered.push(f),
            Some(f) => suppressed.push(f),
            None => {}
        }
    }
    let mut states = Vec::new();
    states.extend(cap(suppressed));
    states.extend(cap(undelivered));
    states.extend(cap(silence_sets(
        alerts,
        silences,
        settings,
        &protected_of,
        at,
    )));
    protected_names.sort();
    protected_names.dedup();
    if protected_names.is_empty() {
        if let Some((names, when)) = &memory.protected_seen {
            states.push(Finding::new(
                FindingKind::ProtectedAlertsGone,
                at,
                "",
                details! {
                    "previously_firing" => names, "last_seen" => rfc3339(*when),
                    "firing" => alerts.len(),
                    "protected" => settings.protected.iter().map(|p| &p.text).collect::<Vec<_>>(),
                },
            ));
        }
    } else {
        memory.protected_seen = Some((protected_names, now));
    }
    Judged {
        states,
        firing: alerts.len(),
        suppressed: alerts.iter().filter(|a| a.state == "suppressed").count(),
        protected_firing: alerts
            .iter()
            .filter(|a| !protected_of(a).is_empty())
            .count(),
    }
}

/// What a judgement of one read looks things up in.
struct Cx<'a> {
    by_fp: HashMap<&'a str, &'a Alert>,
    silence_by_id: HashMap<&'a str, &'a Silence>,
    routing: Option<&'a Routing>,
    civil: Civil,
    at: &'a Source,
}

fn alert_details(a: &Alert, protected: Vec<String>) -> serde_json::Map<String, Value> {
    details! {
        "alertname" => a.name(), "fingerprint" => a.fingerprint, "labels" => a.labels,
        "protected" => protected, "state" => a.state,
    }
}

/// A protected alert that Alertmanager reports silenced or inhibited: the silences, the
/// inhibiting alerts and the inhibit rules that match them. The cause is part of the
/// finding's identity: inhibited, then silenced, is two findings, each printed when it starts.
fn by_api(a: &Alert, protected: Vec<String>, cx: &Cx<'_>) -> Finding {
    let mut d = alert_details(a, protected);
    let mut why = String::new();
    if !a.silenced_by.is_empty() {
        why = format!("silenced:{}", a.silenced_by.join(","));
        let views: Vec<Value> = a
            .silenced_by
            .iter()
            .take(MAX_NAMED)
            .map(|id| {
                cx.silence_by_id
                    .get(id.as_str())
                    .map_or_else(|| json!({"silence_id": id}), |s| silence_view(s))
            })
            .collect();
        d.insert("silenced_by".into(), Value::Array(views));
    }
    if !a.inhibited_by.is_empty() {
        let sources: Vec<&Alert> = a
            .inhibited_by
            .iter()
            .filter_map(|f| cx.by_fp.get(f.as_str()).copied())
            .collect();
        let rules: Vec<&str> = cx.routing.map_or_else(Vec::new, |r| {
            r.inhibit_rules
                .iter()
                .filter(|rule| matches_labels(&rule.target, &a.labels))
                .filter(|rule| {
                    sources.iter().any(|s| {
                        matches_labels(&rule.source, &s.labels)
                            && rule
                                .equal
                                .iter()
                                .all(|l| s.labels.get(l) == a.labels.get(l))
                    })
                })
                .map(|rule| rule.name.as_str())
                .collect()
        });
        let by: Vec<Value> = a
            .inhibited_by
            .iter()
            .take(MAX_NAMED)
            .map(|f| json!({"fingerprint": f, "alertname": cx.by_fp.get(f.as_str()).map_or("", |s| s.name())}))
            .collect();
        d.insert("inhibited_by".into(), Value::Array(by));
        why.push_str(&format!(
            "|inhibited:{}:{}",
            rules.join(","),
            a.inhibited_by.join(",")
        ));
        d.insert("inhibit_rules".into(), json!(rules));
    }
    Finding::new(
        FindingKind::ProtectedAlertSuppressed,
        cx.at,
        &format!("{}|{why}", a.fingerprint),
        d,
    )
}

/// A protected alert Alertmanager delivers as far as its API says: routed through the running
/// route tree, is every route muted now by a time interval, or at a receiver without
/// integrations?
fn by_routing(a: &Alert, protected: Vec<String>, cx: &Cx<'_>) -> Option<Finding> {
    let routing = cx.routing?;
    let routes = routing.route(&a.labels);
    let states: Vec<(usize, RouteState)> = routes
        .iter()
        .map(|&i| (i, route_state(routing, i, &cx.civil)))
        .collect();
    if states
        .iter()
        .any(|(_, s)| s.muted_by.is_empty() && s.integrations > 0)
    {
        return None;
    }
    let mut d = alert_details(a, protected);
    let muted: Vec<Value> = states
        .iter()
        .flat_map(|(_, s)| s.muted_by.clone())
        .collect();
    let empty: Vec<String> = states
        .iter()
        .filter(|(_, s)| s.integrations == 0)
        .map(|(i, _)| routing.routes[*i].receiver.clone())
        .collect();
    let paths: Vec<&String> = routes.iter().map(|&i| &routing.routes[i].path).collect();
    d.insert("routes".into(), json!(paths));
    let receivers = if a.receivers.is_empty() {
        &empty
    } else {
        &a.receivers
    };
    d.insert("receivers".into(), json!(receivers));
    d.insert("receivers_without_integrations".into(), json!(empty));
    if muted.is_empty() {
        let subject = format!("{}|{}", a.fingerprint, empty.join(","));
        return Some(Finding::new(
            FindingKind::ProtectedAlertUndelivered,
            cx.at,
            &subject,
            d,
        ));
    }
    let subject = format!("{}|muted:{}", a.fingerprint, Value::Array(muted.clone()));
    d.insert("muted_by".into(), Value::Array(muted));
    Some(Finding::new(
        FindingKind::ProtectedAlertSuppressed,
        cx.at,
        &subject,
        d,
    ))
}

/// At most [`MAX_FINDINGS_PER_KIND`]; the last kept one counts the rest.
fn cap(mut found: Vec<Finding>) -> Vec<Finding> {
    if found.len() > MAX_FINDINGS_PER_KIND {
        let more = found.len() - MAX_FINDINGS_PER_KIND;
        found.truncate(MAX_FINDINGS_PER_KIND);
        if let Some(last) = found.last_mut() {
            last.details.insert("and_more".into(), json!(more));
        }
    }
    found
}

/// Active silences, in sets created close together (each within `silence_window` of the
/// previous one); a set that mutes more than `mute_percent` of the firing alerts (at least
/// two), or every firing alert of a protected selector, is a finding naming its silences.
fn silence_sets(
    alerts: &[Alert],
    silences: &[Silence],
    settings: &IntegritySettings,
    protected_of: &dyn Fn(&Alert) -> Vec<String>,
    at: &Source,
) -> Vec<Finding> {
    let e = &settings.effect;
    let window = i64::try_from(e.silence_window.as_millis()).unwrap_or(i64::MAX);
    let mut active: Vec<&Silence> = silences.iter().filter(|s| s.state == "active").collect();
    active.sort_by_key(|s| (s.updated_at, s.id.clone()));
    let mut sets: Vec<Vec<&Silence>> = Vec::new();
    for s in active {
        match sets.last_mut() {
            Some(set)
                if set
                    .last()
                    .is_some_and(|l| s.updated_at - l.updated_at <= window) =>
            {
                set.push(s)
            }
            _ => sets.push(vec![s]),
        }
    }
    let mut out = Vec::new();
    for set in sets {
        let ids: HashSet<&str> = set.iter().map(|s| s.id.as_str()).collect();
        let muted: Vec<&Alert> = alerts
            .iter()
            .filter(|a| a.silenced_by.iter().any(|id| ids.contains(id.as_str())))
            .collect();
        // Only the silences that mute a firing alert are named.
        let used: HashSet<&str> = muted
            .iter()
            .flat_map(|a| a.silenced_by.iter().map(String::as_str))
            .filter(|id| ids.contains(id))
            .collect();
        let most = muted.len() >= 2 && muted.len() * 100 > alerts.len() * e.mute_percent;
        let protected: Vec<&str> = settings
            .protected
            .iter()
            .filter(|p| {
                let firing: Vec<&Alert> = alerts
                    .iter()
                    .filter(|a| matches_labels(&p.matchers, &a.labels))
                    .collect();
                !firing.is_empty()
                    && firing
                        .iter()
                        .all(|a| muted.iter().any(|m| m.fingerprint == a.fingerprint))
            })
            .map(|p| p.text.as_str())
            .collect();
        if !most && protected.is_empty() {
            continue;
        }
        let mut named: Vec<&Silence> = set
            .iter()
            .copied()
            .filter(|s| used.contains(s.id.as_str()))
            .collect();
        named.sort_by(|a, b| a.id.cmp(&b.id));
        let subject: Vec<&str> = named.iter().map(|s| s.id.as_str()).collect();
        let mut names: Vec<&str> = muted.iter().map(|a| a.name()).collect();
        names.sort_unstable();
        names.dedup();
        let muted_protected = muted.iter().filter(|a| !protected_of(a).is_empty()).count();
        out.push(Finding::new(
            FindingKind::SilencesMuteFiring,
            at,
            &subject.join(","),
            details! {
                "silence_ids" => subject,
                "silences" => named.iter().take(MAX_NAMED).map(|s| silence_view(s)).collect::<Vec<_>>(),
                "muted" => muted.len(), "firing" => alerts.len(),
                "muted_percent" => muted.len() * 100 / alerts.len().max(1),
                "mute_percent" => e.mute_percent,
                "muted_alertnames" => names.iter().take(MAX_NAMED).collect::<Vec<_>>(),
                "muted_protected" => muted_protected,
                "every_firing_alert_of" => protected,
            },
        ));
    }
    out
}

#[cfg(test)]
#[path = "effect_tests.rs"]
mod tests;
