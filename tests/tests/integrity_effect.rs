//! Integrity judged by effect (issue 30), against the real Alertmanager 0.25 with firing
//! alerts posted to its API: the watchdog names every silence and configuration change that
//! keeps a firing protected alert from a human, with the cause — and stays quiet on ordinary
//! maintenance (a narrow silence, a receiver renamed with the same destination, routes
//! re-ordered with the same outcome).
//!
//! Alertmanager runs in a network namespace of the test's own (only `lo` up), in a child
//! cgroup the agent is attached to (`--cgroup`); the agent reads its API every second.
//! Firing: the dead-man's switch `Watchdog`, a critical `NodeDown`, warnings `DiskFull` and
//! `HighLoad` (the default `protected` selectors: `alertname="Watchdog"`, `severity="critical"`).
use std::{
    path::Path,
    time::{Duration, Instant},
};

use enforcer::integrity::time::{now_ms, rfc3339};
use integration_tests::alertmanager::{Findings, Watched, agent_metric, am_api, amtool_silence};
use integration_tests::{NetNs, installed, privileged};
use serde_json::{Value, json};

/// The findings judged by effect (any of them during a quiet phase is a false alarm).
const EFFECT_KINDS: [&str; 7] = [
    "protected_alert_suppressed",
    "protected_alert_undelivered",
    "silences_mute_firing",
    "protected_alerts_gone",
    "config_drops_protected",
    "inhibit_rule_risky",
    "config_not_analysed",
];

const RECEIVERS: &str = "receivers:
  - name: team
    webhook_configs: [{url: 'http://127.0.0.1:5001/alerts'}]
  - name: deadman
    webhook_configs: [{url: 'http://127.0.0.1:5002/deadman'}]
";

/// The base configuration; `extra_routes` go first among the root's children.
fn config(extra_routes: &str, rest: &str) -> String {
    format!(
        "route:
  receiver: team
  group_wait: 1s
  group_interval: 1s
  routes:
{extra_routes}    - matchers: [alertname=Watchdog]
      receiver: deadman
    - matchers: [team=db]
      receiver: team
{RECEIVERS}{rest}"
    )
}

fn policy(notify_port: u16) -> String {
    format!(
        "mode: enforce\ndefault: allow\nblock:\n  - preset: private\n  - preset: cloud-metadata\n\
         allow:\n  - cidr: 127.0.0.1/32\n    ports: [5001, 5002]\n    protocols: [tcp]\n\
         integrity:\n  interval: 1s\n  notify:\n    - url: http://127.0.0.1:{notify_port}/hook\n"
    )
}

const ALERTS: [(&str, &str); 4] = [
    ("Watchdog", "none"),
    ("NodeDown", "critical"),
    ("DiskFull", "warning"),
    ("HighLoad", "warning"),
];

/// Posts alerts (`alertname`, `severity`) ending at `ends` (ms since the epoch).
fn post_alerts(ns: &NetNs, alerts: &[(&str, &str)], ends: i64) {
    let body: Vec<Value> = alerts
        .iter()
        .map(|(name, severity)| {
            json!({"labels": {"alertname": name, "severity": severity, "instance": "node-1"},
                   "endsAt": rfc3339(ends)})
        })
        .collect();
    let (status, answer) = am_api(
        ns,
        "POST",
        "/api/v2/alerts",
        &Value::Array(body).to_string(),
    );
    assert_eq!(status, 200, "{answer}");
}

/// Alertmanager with `initial` configuration, the agent, and the four alerts firing (seen by
/// the watchdog, nothing found).
fn setup(name: &str, initial: &str) -> Option<Watched> {
    let setup = "scripts/setup.sh installs Debian's prometheus-alertmanager";
    if !privileged()
        || !installed("/usr/bin/prometheus-alertmanager", setup)
        || !installed("/usr/bin/amtool", setup)
    {
        return None;
    }
    let s = Watched::start(name, policy, initial);
    post_alerts(&s.ns, &ALERTS, now_ms() + 3_600_000);
    let series = format!(
        "enforcer_integrity_alerts{{target=\"cgroup:{}\",pid=\"{}\",kind=\"firing\"}}",
        s.cg.path.display(),
        s.am.pid()
    );
    integration_tests::wait_for(Duration::from_secs(10), "the four alerts read", || {
        (agent_metric(&s.metrics, &series) == Some(4.0)).then_some(())
    });
    Some(s)
}

/// Collects for three intervals and fails on any effect finding.
fn quiet(findings: &mut Findings<'_>, what: &str) {
    let from = findings.seen.len();
    std::thread::sleep(Duration::from_secs(3));
    findings.collect();
    let noise: Vec<&Value> = findings.seen[from..]
        .iter()
        .filter(|f| EFFECT_KINDS.contains(&f["finding"].as_str().unwrap_or("")))
        .collect();
    assert!(noise.is_empty(), "{what} raised {noise:#?}");
}

fn reload(ns: &NetNs, path: &Path, text: &str) -> Instant {
    std::fs::write(path, text).unwrap();
    let t = Instant::now();
    let (status, answer) = am_api(ns, "POST", "/-/reload", "");
    assert_eq!(status, 200, "{answer}");
    t
}

fn expire(ns: &NetNs, ids: &[&str]) {
    for id in ids {
        let (status, _) = am_api(ns, "DELETE", &format!("/api/v2/silence/{id}"), "");
        assert_eq!(status, 200);
    }
}

#[test]
fn silences_are_judged_by_what_they_mute() {
    let Some(mut s) = setup("enforcer-effect-sil", &config("", "")) else {
        return;
    };
    let ns = &s.ns;
    let mut findings = Findings {
        agent: &mut s.agent,
        seen: Vec::new(),
    };
    quiet(&mut findings, "four firing alerts");

    // A narrow maintenance silence: nothing beyond what it is.
    let maintenance = amtool_silence(ns, "alertname=\"DiskFull\"", "1h");
    quiet(&mut findings, "a narrow maintenance silence");

    // Every alert but the dead-man's switch: the matchers name no protected label.
    let t = Instant::now();
    let all_but = amtool_silence(ns, "alertname!=\"Watchdog\"", "2h");
    let f = findings.expect("protected_alert_suppressed", t, |f| {
        f["alertname"] == "NodeDown" && f["silenced_by"][0]["silence_id"] == all_but.as_str()
    });
    assert_eq!(f["protected"], json!(["severity=\"critical\""]), "{f}");
    assert_eq!(f["silenced_by"][0]["created_by"], "mallory", "{f}");
    let f = findings.expect("silences_mute_firing", t, |f| {
        f["silence_ids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == all_but.as_str())
    });
    assert_eq!(f["muted"], 3, "{f}");
    assert_eq!(f["firing"], 4, "{f}");
    assert_eq!(
        f["every_firing_alert_of"],
        json!(["severity=\"critical\""]),
        "{f}"
    );
    expire(ns, &[&all_but]);

    // Several narrow silences that together mute every firing alert.
    let t = Instant::now();
    let narrow: Vec<String> = ["NodeDown", "HighLoad", "Watchdog"]
        .iter()
        .map(|n| amtool_silence(ns, &format!("alertname=\"{n}\""), "1h"))
        .collect();
    let f = findings.expect("silences_mute_firing", t, |f| {
        let ids = f["silence_ids"].as_array().unwrap();
        narrow.iter().all(|n| ids.iter().any(|i| i == n.as_str()))
    });
    assert_eq!(f["muted"], 4, "{f}");
    assert!(
        f["silence_ids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == maintenance.as_str()),
        "{f}"
    );
    findings.expect("protected_alert_suppressed", t, |f| {
        f["alertname"] == "Watchdog" && f["silenced_by"][0]["silence_id"] == narrow[2].as_str()
    });
    let ids: Vec<&str> = narrow.iter().map(String::as_str).collect();
    expire(ns, &ids);

    // The dead-man's switch: the protected alerts resolved behind the humans' back.
    let t = Instant::now();
    post_alerts(ns, &ALERTS[..2], now_ms() - 1_000);
    let f = findings.expect("protected_alerts_gone", t, |_| true);
    assert_eq!(
        f["previously_firing"],
        json!(["NodeDown", "Watchdog"]),
        "{f}"
    );
    assert_eq!(f["firing"], 2, "{f}");
    let stderr = findings.agent.stderr_text();
    drop(findings);
    assert!(!stderr.contains("panicked"), "{stderr}");
    s.agent.stop();
}

#[test]
fn configuration_changes_are_judged_by_where_protected_alerts_go() {
    let Some(mut s) = setup("enforcer-effect-cfg", &config("", "")) else {
        return;
    };
    let (ns, path) = (&s.ns, s.config.clone());
    let mut findings = Findings {
        agent: &mut s.agent,
        seen: Vec::new(),
    };
    quiet(&mut findings, "the base configuration");

    // A receiver renamed, same destination.
    let renamed = config("", "")
        .replace("receiver: deadman", "receiver: deadmans-switch")
        .replace("name: deadman", "name: deadmans-switch");
    let t = reload(ns, &path, &renamed);
    let f = findings.expect("config_changed", t, |_| true);
    assert_eq!(
        f["receivers_renamed"],
        json!([{"from": "deadman", "to": "deadmans-switch"}]),
        "{f}"
    );
    assert_eq!(f["receivers_added"], json!([]), "{f}");
    assert_eq!(f["routing_changed"], json!([]), "{f}");
    quiet(&mut findings, "a receiver renamed");

    // Routes re-ordered, same outcome.
    let reordered = renamed.replace(
        "    - matchers: [alertname=Watchdog]\n      receiver: deadmans-switch\n    - matchers: [team=db]\n      receiver: team\n",
        "    - matchers: [team=db]\n      receiver: team\n    - matchers: [alertname=Watchdog]\n      receiver: deadmans-switch\n",
    );
    assert_ne!(reordered, renamed);
    let t = reload(ns, &path, &reordered);
    let f = findings.expect("config_changed", t, |f| f["routes_reordered"] == true);
    assert_eq!(f["routing_changed"], json!([]), "{f}");
    assert_eq!(f["routes_changed"], json!([]), "{f}");
    quiet(&mut findings, "routes re-ordered");

    // Critical alerts routed to a receiver with no integrations.
    let null = config(
        "    - matchers: [severity=critical]\n      receiver: blackhole\n",
        "",
    )
    .replace("receivers:\n", "receivers:\n  - name: blackhole\n");
    let t = reload(ns, &path, &null);
    let f = findings.expect("config_changed", t, |f| {
        f["receivers_added"] == json!(["blackhole"])
    });
    assert!(
        f["routing_changed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["after"] == json!(["blackhole"])),
        "{f}"
    );
    let f = findings.expect("config_drops_protected", t, |f| {
        f["subject"] == "selector:severity=\"critical\""
    });
    assert_eq!(
        f["routes"][0]["problems"][0]["receiver_without_integrations"], "blackhole",
        "{f}"
    );
    let f = findings.expect("protected_alert_undelivered", t, |f| {
        f["alertname"] == "NodeDown"
    });
    assert_eq!(
        f["receivers_without_integrations"],
        json!(["blackhole"]),
        "{f}"
    );

    // An inhibit rule fed by the dead-man's switch, aimed at critical alerts.
    let inhibit = config(
        "",
        "inhibit_rules:\n  - source_matchers: [alertname=Watchdog]\n    target_matchers: [severity=critical]\n",
    );
    let t = reload(ns, &path, &inhibit);
    let f = findings.expect("inhibit_rule_risky", t, |_| true);
    let reasons = f["reasons"].to_string();
    assert!(
        reasons.contains("target_covers_protected") && reasons.contains("source_always_firing"),
        "{f}"
    );
    let f = findings.expect("protected_alert_suppressed", t, |f| {
        f["alertname"] == "NodeDown" && f["inhibit_rules"] == json!(["inhibit_rules[0]"])
    });
    assert_eq!(f["inhibited_by"][0]["alertname"], "Watchdog", "{f}");

    // A mute interval that covers all time on the critical route.
    let muted = config(
        "    - matchers: [severity=critical]\n      receiver: team\n      mute_time_intervals: [always]\n",
        "time_intervals:\n  - name: always\n    time_intervals:\n      - times: [{start_time: '00:00', end_time: '24:00'}]\n",
    );
    let t = reload(ns, &path, &muted);
    let f = findings.expect("protected_alert_suppressed", t, |f| {
        f["alertname"] == "NodeDown" && f["muted_by"].is_array()
    });
    assert_eq!(f["muted_by"][0]["mute_time_interval"], "always", "{f}");
    findings.expect("config_drops_protected", t, |f| {
        f["routes"]
            .to_string()
            .contains("\"mute_time_interval\":\"always\"")
    });

    // Timers that hold critical notifications for weeks.
    let slow = config(
        "    - matchers: [severity=critical]\n      receiver: team\n      group_wait: 500h\n      repeat_interval: 2000h\n",
        "",
    );
    let t = reload(ns, &path, &slow);
    let f = findings.expect("config_drops_protected", t, |f| {
        f["routes"].to_string().contains("group_wait")
    });
    assert!(f["routes"].to_string().contains("repeat_interval"), "{f}");

    // A configuration Alertmanager runs but that is beyond what the watchdog analyses is a
    // finding itself, not a silent pass.
    let wide: String = (0..2_100)
        .map(|i| format!("    - matchers: ['instance=\"n{i}\"']\n      receiver: team\n"))
        .collect();
    let t = reload(ns, &path, &config(&wide, ""));
    let f = findings.expect("config_not_analysed", t, |_| true);
    assert!(
        f["error"].as_str().unwrap().contains("number of routes"),
        "{f}"
    );
    drop(findings);
    s.agent.stop();
}
