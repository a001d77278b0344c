use super::*;
use crate::amconfig::routes::parse_routing;
use crate::integrity::config::running;
use crate::integrity::config_effect;
use crate::integrity::time::parse_rfc3339;

fn at() -> Source {
    Source {
        target: "cgroup:/t".into(),
        pid: 7,
        api: "http://127.0.0.1:9093/".into(),
    }
}

const NOW: &str = "2026-12-08T10:30:00Z";

fn now() -> i64 {
    parse_rfc3339(NOW).unwrap()
}

fn alert(fp: &str, labels: &[(&str, &str)], silenced: &[&str], inhibited: &[&str]) -> Alert {
    Alert {
        fingerprint: fp.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        state: if silenced.is_empty() && inhibited.is_empty() {
            "active"
        } else {
            "suppressed"
        }
        .into(),
        silenced_by: silenced.iter().map(|s| (*s).into()).collect(),
        inhibited_by: inhibited.iter().map(|s| (*s).into()).collect(),
        starts_at: now() - 60_000,
        receivers: Vec::new(),
    }
}

fn silence(id: &str, matchers: &str, created: i64) -> Silence {
    let text = format!(
        r#"[{{"id":"{id}","status":{{"state":"active"}},"updatedAt":"{}","comment":"c","createdBy":"eve",
        "startsAt":"{}","endsAt":"2026-12-09T00:00:00Z","matchers":[{{"name":"alertname","value":"{matchers}","isRegex":true}}]}}]"#,
        rfc3339(created),
        rfc3339(created)
    );
    super::super::silences::parse(text.as_bytes())
        .unwrap()
        .remove(0)
}

/// Watchdog, one critical and two warnings.
fn firing(silenced: [&[&str]; 4]) -> Vec<Alert> {
    vec![
        alert(
            "f0",
            &[("alertname", "Watchdog"), ("severity", "none")],
            silenced[0],
            &[],
        ),
        alert(
            "f1",
            &[("alertname", "NodeDown"), ("severity", "critical")],
            silenced[1],
            &[],
        ),
        alert(
            "f2",
            &[("alertname", "DiskFull"), ("severity", "warning")],
            silenced[2],
            &[],
        ),
        alert(
            "f3",
            &[("alertname", "HighLoad"), ("severity", "warning")],
            silenced[3],
            &[],
        ),
    ]
}

const CONFIG: &str = "route:
  receiver: team
  routes:
    - matchers: [alertname=Watchdog]
      receiver: deadman
receivers:
  - {name: team, webhook_configs: [{url: 'http://127.0.0.1:5001/'}]}
  - {name: deadman, webhook_configs: [{url: 'http://127.0.0.1:5002/'}]}
";

/// CONFIG with `routes` added to the root's and `rest` at the end.
fn with(routes: &str, rest: &str) -> String {
    let at = CONFIG.find("receivers:").unwrap();
    format!("{}{routes}{}{rest}", &CONFIG[..at], &CONFIG[at..])
}

fn judged(
    alerts: &[Alert],
    silences: &[Silence],
    config: &str,
    memory: &mut EffectMemory,
) -> Vec<Finding> {
    let routing = parse_routing(config, "am.yml").unwrap();
    let settings = IntegritySettings::default();
    judge(
        alerts,
        silences,
        Some(&routing),
        &settings,
        memory,
        now(),
        &at(),
    )
    .states
}

fn kinds(found: &[Finding]) -> Vec<&'static str> {
    found.iter().map(|f| f.finding.as_str()).collect()
}

#[test]
fn a_narrow_maintenance_silence_is_quiet() {
    let t = now() - 600_000;
    let s = [silence("m", "DiskFull", t)];
    let found = judged(
        &firing([&[], &[], &["m"], &[]]),
        &s,
        CONFIG,
        &mut EffectMemory::default(),
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn a_silence_of_everything_but_the_deadmans_switch_is_named() {
    let t = now() - 600_000;
    let s = [silence("x", "(?:[^W].*|W[^a].*)", t)];
    let found = judged(
        &firing([&[], &["x"], &["x"], &["x"]]),
        &s,
        CONFIG,
        &mut EffectMemory::default(),
    );
    assert_eq!(
        kinds(&found),
        ["protected_alert_suppressed", "silences_mute_firing"],
        "{found:#?}"
    );
    assert_eq!(found[0].details["alertname"], "NodeDown");
    assert_eq!(found[0].details["silenced_by"][0]["silence_id"], "x");
    assert_eq!(found[1].details["silence_ids"], json!(["x"]));
    assert_eq!(found[1].details["muted"], 3);
    assert_eq!(
        found[1].details["every_firing_alert_of"],
        json!(["severity=\"critical\""])
    );
}

#[test]
fn narrow_silences_created_together_are_one_set() {
    let t = now() - 600_000;
    let s = [
        silence("a", "DiskFull", t),
        silence("b", "HighLoad", t + 60_000),
        silence("c", "Watchdog", t + 120_000),
    ];
    let alerts = firing([&["c"], &[], &["a"], &["b"]]);
    let found = judged(&alerts, &s, CONFIG, &mut EffectMemory::default());
    assert_eq!(
        kinds(&found),
        ["protected_alert_suppressed", "silences_mute_firing"],
        "{found:#?}"
    );
    assert_eq!(found[1].details["silence_ids"], json!(["a", "b", "c"]));
    // The same silences a day apart are three narrow ones; only the Watchdog one is named.
    let s = [
        silence("a", "DiskFull", t - 2 * 86_400_000),
        silence("b", "HighLoad", t - 86_400_000),
        silence("c", "Watchdog", t),
    ];
    let found = judged(&alerts, &s, CONFIG, &mut EffectMemory::default());
    assert_eq!(
        kinds(&found),
        ["protected_alert_suppressed", "silences_mute_firing"],
        "{found:#?}"
    );
    assert_eq!(found[1].details["silence_ids"], json!(["c"]));
    assert_eq!(
        found[1].details["every_firing_alert_of"],
        json!(["alertname=\"Watchdog\""])
    );
}

#[test]
fn an_inhibited_protected_alert_names_the_rule_and_its_source() {
    let config = format!(
        "{CONFIG}inhibit_rules:\n  - source_matchers: [alertname=Watchdog]\n    target_matchers: [severity=critical]\n"
    );
    let mut alerts = firing([&[], &[], &[], &[]]);
    alerts[1] = alert(
        "f1",
        &[("alertname", "NodeDown"), ("severity", "critical")],
        &[],
        &["f0"],
    );
    let found = judged(&alerts, &[], &config, &mut EffectMemory::default());
    assert_eq!(kinds(&found), ["protected_alert_suppressed"], "{found:#?}");
    assert_eq!(
        found[0].details["inhibit_rules"],
        json!(["inhibit_rules[0]"])
    );
    assert_eq!(found[0].details["inhibited_by"][0]["alertname"], "Watchdog");
}

#[test]
fn time_intervals_and_empty_receivers_are_found_by_routing() {
    let muted = with(
        "    - matchers: [severity=critical]\n      receiver: team\n      mute_time_intervals: [always]\n",
        "time_intervals:\n  - name: always\n    time_intervals: [{}]\n",
    );
    let found = judged(
        &firing([&[], &[], &[], &[]]),
        &[],
        &muted,
        &mut EffectMemory::default(),
    );
    assert_eq!(kinds(&found), ["protected_alert_suppressed"], "{found:#?}");
    assert_eq!(
        found[0].details["muted_by"][0]["mute_time_interval"],
        "always"
    );
    let dropped = CONFIG.replace(
        "{name: deadman, webhook_configs: [{url: 'http://127.0.0.1:5002/'}]}",
        "{name: deadman}",
    );
    let found = judged(
        &firing([&[], &[], &[], &[]]),
        &[],
        &dropped,
        &mut EffectMemory::default(),
    );
    assert_eq!(kinds(&found), ["protected_alert_undelivered"], "{found:#?}");
    assert_eq!(
        found[0].details["receivers_without_integrations"],
        json!(["deadman"])
    );
    // An office-hours route is muted on Tuesday 10:30 only when its interval is inactive.
    let office = |hours: &str| {
        with(
            "    - matchers: [severity=critical]\n      receiver: team\n      active_time_intervals: [office]\n",
            &format!(
                "time_intervals:\n  - name: office\n    time_intervals: [{{times: [{hours}]}}]\n"
            ),
        )
    };
    let open = office("{start_time: '09:00', end_time: '17:00'}");
    assert!(
        judged(
            &firing([&[], &[], &[], &[]]),
            &[],
            &open,
            &mut EffectMemory::default()
        )
        .is_empty()
    );
    let closed = office("{start_time: '18:00', end_time: '19:00'}");
    let found = judged(
        &firing([&[], &[], &[], &[]]),
        &[],
        &closed,
        &mut EffectMemory::default(),
    );
    assert_eq!(kinds(&found), ["protected_alert_suppressed"], "{found:#?}");
}

#[test]
fn the_protected_set_going_silent_is_the_deadmans_switch() {
    let mut memory = EffectMemory::default();
    assert!(
        judged(&[], &[], CONFIG, &mut memory).is_empty(),
        "never seen firing: quiet"
    );
    assert!(judged(&firing([&[], &[], &[], &[]]), &[], CONFIG, &mut memory).is_empty());
    let rest = &firing([&[], &[], &[], &[]])[2..];
    let found = judged(rest, &[], CONFIG, &mut memory);
    assert_eq!(kinds(&found), ["protected_alerts_gone"], "{found:#?}");
    assert_eq!(
        found[0].details["previously_firing"],
        json!(["NodeDown", "Watchdog"])
    );
    assert!(judged(&firing([&[], &[], &[], &[]]), &[], CONFIG, &mut memory).is_empty());
}

#[test]
fn the_api_answers_are_read() {
    let alerts = br#"[{"fingerprint":"f1","labels":{"alertname":"A"},"startsAt":"2026-12-08T10:00:00Z",
        "status":{"state":"suppressed","silencedBy":["s"],"inhibitedBy":[]},"receivers":[{"name":"own"}]},
        {"fingerprint":"f2","labels":{"alertname":"B"},"status":{"state":"active"},"receivers":[{"name":"own"}]}]"#;
    let groups = br#"[{"labels":{},"receiver":{"name":"g"},"alerts":[{"fingerprint":"f1"}]}]"#;
    let a = parse_alerts(alerts, groups).unwrap();
    assert_eq!(a[0].receivers, ["g"]);
    assert_eq!(a[1].receivers, ["own"]);
    assert_eq!(a[0].silenced_by, ["s"]);
    assert_eq!(
        a[0].starts_at,
        parse_rfc3339("2026-12-08T10:00:00Z").unwrap()
    );
    assert!(parse_alerts(b"{}", b"[]").is_err());
    assert!(parse_alerts(b"[]", b"[{\"receiver\":1}]").is_err());
}

fn config_findings(config: &str, alerts: &[Alert]) -> Vec<Finding> {
    let routing = parse_routing(config, "am.yml").unwrap();
    let settings = IntegritySettings::default();
    config_effect::judge(
        &config_effect::Analysed::new(routing, &settings),
        &IntegritySettings::default(),
        alerts,
        now(),
        "h",
        &at(),
    )
}

#[test]
fn configuration_changes_that_drop_protected_alerts_are_named() {
    let alerts = firing([&[], &[], &[], &[]]);
    assert!(config_findings(CONFIG, &alerts).is_empty());
    let null = CONFIG.replace(
        "receiver: deadman",
        "receiver: deadman\n    - matchers: [severity=critical]\n      receiver: \"null\"",
    ) + "  - name: \"null\"\n";
    let found = config_findings(&null, &alerts);
    let subjects: Vec<&Value> = found.iter().map(|f| &f.details["subject"]).collect();
    assert_eq!(
        subjects,
        [&json!("selector:severity=\"critical\""), &json!("alert:f1")],
        "{found:#?}"
    );
    assert_eq!(
        found[0].details["routes"][0]["problems"][0]["receiver_without_integrations"],
        "null"
    );
    let slow = CONFIG.replace("receiver: deadman", "receiver: deadman\n    - matchers: [severity=critical]\n      receiver: team\n      group_wait: 500h");
    let found = config_findings(&slow, &alerts);
    assert_eq!(
        found[0].details["routes"][0]["problems"][0]["timer"], "group_wait",
        "{found:#?}"
    );
    assert_eq!(
        found[0].details["routes"][0]["problems"][0]["value"],
        "500h"
    );
}

#[test]
fn inhibit_rules_fed_by_the_deadmans_switch_or_aimed_at_protected_alerts() {
    let alerts = firing([&[], &[], &[], &[]]);
    let rules = |r: &str| format!("{CONFIG}inhibit_rules:\n{r}");
    // The classic rule: criticals inhibit warnings of the same alert and instance.
    let classic = rules(
        "  - source_matchers: [severity=critical]\n    target_matchers: [severity=warning]\n    equal: [alertname, instance]\n",
    );
    assert!(config_findings(&classic, &alerts).is_empty());
    let fed = rules(
        "  - source_matchers: [alertname=Watchdog]\n    target_matchers: [severity=warning]\n",
    );
    let found = config_findings(&fed, &alerts);
    assert_eq!(kinds(&found), ["inhibit_rule_risky"]);
    assert_eq!(
        found[0].details["reasons"][0]["source_always_firing"],
        "Watchdog"
    );
    let aimed = rules(
        "  - source_matchers: [alertname=NodeDown]\n    target_matchers: ['alertname=~\".+\"']\n",
    );
    let found = config_findings(&aimed, &alerts);
    assert_eq!(
        found[0].details["reasons"].as_array().unwrap().len(),
        2,
        "{found:#?}"
    );
    let empty = rules("  - target_matchers: [team=db]\n");
    let found = config_findings(&empty, &alerts);
    assert_eq!(
        found[0].details["reasons"][0]["source_always_firing"],
        "matches every alert"
    );
}

fn summary(before: &str, after: &str) -> serde_json::Map<String, Value> {
    let (old, new) = (running(before.to_owned()), running(after.to_owned()));
    let mut f = crate::integrity::config::changed(&old, &new, &at());
    let probes =
        config_effect::probes(&IntegritySettings::default(), &firing([&[], &[], &[], &[]]));
    let (a, b) = (
        parse_routing(before, "a").ok(),
        parse_routing(after, "b").ok(),
    );
    config_effect::summarise(
        &mut f.details,
        (&old, a.as_ref()),
        (&new, b.as_ref()),
        &probes,
    );
    f.details
}

#[test]
fn renames_and_reorders_are_said_as_what_they_are() {
    let renamed = CONFIG.replace("deadman", "deadmans-switch");
    let d = summary(CONFIG, &renamed);
    assert_eq!(
        d["receivers_renamed"],
        json!([{"from": "deadman", "to": "deadmans-switch"}])
    );
    assert_eq!(d["receivers_added"], json!([]));
    assert_eq!(d["receivers_removed"], json!([]));
    assert_eq!(d["routes_changed"], json!([]));
    assert_eq!(d["routing_changed"], json!([]));
    let two = "route:\n  receiver: team\n  routes:\n    - {matchers: [alertname=Watchdog], receiver: deadman}\n    - {matchers: [team=db], receiver: team}\n";
    let swapped = "route:\n  receiver: team\n  routes:\n    - {matchers: [team=db], receiver: team}\n    - {matchers: [alertname=Watchdog], receiver: deadman}\n";
    let receivers = &CONFIG[CONFIG.find("receivers:").unwrap()..];
    let d = summary(
        &format!("{two}{receivers}"),
        &format!("{swapped}{receivers}"),
    );
    assert_eq!(d["routes_reordered"], true);
    assert_eq!(d["routes_added"], json!([]));
    assert_eq!(d["routing_changed"], json!([]));
    // A real change of outcome is said too.
    let moved = CONFIG.replace("alertname=Watchdog", "alertname=Other");
    let d = summary(CONFIG, &moved);
    assert_eq!(d["routes_reordered"], false);
    let changed = d["routing_changed"].as_array().unwrap();
    assert_eq!(
        changed[0]["subject"], "selector:alertname=\"Watchdog\"",
        "{changed:?}"
    );
    assert_eq!(changed[0]["before"], json!(["deadman"]));
    assert_eq!(changed[0]["after"], json!(["team"]));
}

#[test]
fn a_new_cause_is_a_new_finding() {
    let mut alerts = firing([&[], &[], &[], &[]]);
    alerts[1] = alert(
        "f1",
        &[("alertname", "NodeDown"), ("severity", "critical")],
        &["s1"],
        &[],
    );
    let by_s1 = judged(&alerts, &[], CONFIG, &mut EffectMemory::default());
    alerts[1].silenced_by = vec!["s2".into()];
    let by_s2 = judged(&alerts, &[], CONFIG, &mut EffectMemory::default());
    assert_ne!(
        by_s1[0].key, by_s2[0].key,
        "the reporter would not print the second"
    );
}

#[test]
fn a_flood_of_protected_alerts_is_bounded() {
    // Anyone who reaches the API can post alerts: 5,000 critical ones, all muted.
    let alerts: Vec<Alert> = (0..5_000)
        .map(|i| {
            alert(
                &format!("{i:05}"),
                &[("alertname", "Flood"), ("severity", "critical")],
                &[],
                &[],
            )
        })
        .collect();
    let muted = with(
        "    - matchers: [severity=critical]\n      receiver: team\n      mute_time_intervals: [always]\n",
        "time_intervals:\n  - name: always\n    time_intervals: [{}]\n",
    );
    let found = judged(&alerts, &[], &muted, &mut EffectMemory::default());
    assert_eq!(found.len(), MAX_FINDINGS_PER_KIND, "{}", found.len());
    assert_eq!(
        found.last().unwrap().details["and_more"],
        MAX_ROUTED - MAX_FINDINGS_PER_KIND
    );
}
