//! The shipped deployment (`deploy/`), checked by the tools that will read it: the alert rules by
//! `promtool check rules` / `promtool test rules`, every alert tested firing and silent.
//! No root, no kernel state.
//!
//! A missing tool fails the test with the command that installs it (CI installs them all in
//! `scripts/setup.sh`); nothing is skipped silently.
use std::collections::BTreeSet;

use integration_tests::deploy::{INSTALL_PROMTOOL, deploy, run, text, yaml_doc};
use serde_json::Value;

#[test]
fn alert_rules_pass_promtool_check_and_test() {
    let rules = deploy("prometheus/enforcer-rules.yml");
    let tests = deploy("prometheus/enforcer-rules.test.yml");
    let out = run(
        "promtool",
        &["check", "rules", rules.to_str().unwrap()],
        INSTALL_PROMTOOL,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        "promtool",
        &["test", "rules", tests.to_str().unwrap()],
        INSTALL_PROMTOOL,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("SUCCESS"), "{}", text(&out));

    // Every alert is tested both firing and not firing.
    let rules = yaml_doc(&rules);
    let alerts: BTreeSet<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect();
    let tests = yaml_doc(&tests);
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .collect();
    for alert in &alerts {
        let of = |firing: bool| {
            cases.iter().any(|c| {
                c["alertname"] == alert.as_str()
                    && c["exp_alerts"]
                        .as_array()
                        .is_some_and(|a| a.is_empty() != firing)
            })
        };
        assert!(of(true), "{alert}: no test case where it fires");
        assert!(of(false), "{alert}: no test case where it stays silent");
    }
    for required in [
        "enforcer_denials_total",
        "enforcer_lost_events_total",
        "absent(enforcer_build_info)",
        "last_over_time(enforcer_build_info[1d])",
        "enforcer_target_attached",
        "enforcer_fqdn_resolution_failures_total",
        "enforcer_policy_last_reload_success",
        "enforcer_integrity_active_findings",
        "enforcer_integrity_findings_total",
        "enforcer_integrity_notifications_total",
        "enforcer_api_connections_total{verdict=\"refused\"}",
        "enforcer_api_logged_requests_total{peer_allowed=\"false\"}",
    ] {
        assert!(
            rules.to_string().contains(&required.replace('"', "\\\"")),
            "no alert rule uses {required}"
        );
    }
    // No rule assumes a scrape job name (the annotation-based kubernetes-pods job is as good as
    // the PodMonitor's), and every aggregation keeps the node, not the pod's address.
    let text = rules.to_string();
    assert!(!text.contains("job=\\\""), "a rule selects a job name");
    for by in text.split("by (").skip(1) {
        let labels = &by[..by.find(')').unwrap()];
        assert!(
            !labels.contains("instance"),
            "aggregation by instance: by ({labels})"
        );
        assert!(
            labels.contains("node") || labels == "job, target",
            "aggregation without the node: by ({labels})"
        );
    }
    // A rule that links a runbook links the page of its own name, and the page exists.
    let prefix = "https://github.com/alertmanager-enforcer/enforcer/blob/main/docs/runbooks/";
    for rule in rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        let Some(url) = rule["annotations"]["runbook_url"].as_str() else {
            continue;
        };
        let name = rule["alert"].as_str().unwrap();
        assert_eq!(url, format!("{prefix}{name}.md"), "{name}");
        let page = deploy("..")
            .join("docs/runbooks")
            .join(format!("{name}.md"));
        assert!(page.is_file(), "{name}: no {}", page.display());
    }
}
