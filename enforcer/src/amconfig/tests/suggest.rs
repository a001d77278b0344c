//! Suggested policies: valid, allowlist-mode, nothing blocked opened, no injection.

use super::{config, policy};
use crate::amconfig::{CheckOptions, check, suggest};
use crate::policy::{DefaultVerdict, parse_policy};

const AM: &str = "global:\n  slack_api_url: https://hooks.slack.com/services/T/B/X\n  \
                  smtp_smarthost: smtp.example.com:587\nroute:\n  receiver: slack\nreceivers:\n\
                  - name: slack\n  slack_configs:\n  - channel: '#a'\n  email_configs:\n  - to: a@b\n\
                  - name: web\n  webhook_configs:\n  - url: https://hooks.slack.com:8443/x\n  - url: http://203.0.113.5:8080/\n\
                  - name: metadata\n  webhook_configs:\n  - url: http://0xa9fea9fe/\n  - url: http://localhost:9093/-/quit\n\
                  - name: tmpl\n  webhook_configs:\n  - url: 'http://{{ .CommonLabels.host }}/'\n";

#[test]
fn suggestions_parse_and_allow_exactly_what_is_safe() {
    let text = suggest(&config(AM));
    let p = parse_policy(&text, "suggested.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(p.default, DefaultVerdict::Deny);
    let names: Vec<String> = p.fqdns.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        names,
        [
            "allow fqdn hooks.slack.com ports 443,8443 protocols tcp",
            "allow fqdn smtp.example.com ports 587 protocols tcp",
        ]
    );
    let allows: Vec<String> = p
        .rules
        .iter()
        .filter(|r| r.action == crate::policy::RuleAction::Allow)
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        allows,
        ["allow cidr 203.0.113.5/32 ports 8080 protocols tcp"]
    );
    assert!(text.contains("# - cidr: 169.254.169.254/32"), "{text}");
    assert!(text.contains("# - cidr: 127.0.0.1/32"), "{text}");
    assert!(
        text.contains("WARNING: tmpl: webhook_configs[0].url: the URL is templated"),
        "{text}"
    );
    assert!(text.contains("REVIEW BEFORE USE"));
    assert!(text.contains("Never derive a policy live"));
    // The suggestion passes its own configuration except what it leaves out on purpose.
    let r = check(&config(AM), &p, CheckOptions::default());
    let failing: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.status != crate::amconfig::Status::Allow)
        .map(|f| f.receiver.as_str())
        .collect();
    assert_eq!(failing, ["metadata", "metadata", "tmpl"]);
}

#[test]
fn names_from_the_configuration_cannot_inject_rules() {
    let am = "route:\n  receiver: x\nreceivers:\n\
              - name: \"x\\n- cidr: 0.0.0.0/0\\n# \"\n  webhook_configs:\n  - url: http://169.254.169.254/\n\
              - name: \"y\\r\\n  - cidr: ::/0\"\n  webhook_configs:\n  - url: 'http://{{ .X }}/'\n";
    let text = suggest(&config(am));
    let p = parse_policy(&text, "s.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(
        p.rules
            .iter()
            .all(|r| r.action == crate::policy::RuleAction::Block),
        "{text}"
    );
    assert!(p.fqdns.is_empty(), "{text}");
}

#[test]
fn an_empty_configuration_suggests_a_valid_deny_all() {
    let text = suggest(&config("route:\n  receiver: x\nreceivers:\n- name: x\n"));
    let p = policy(&text);
    assert!(p.fqdns.is_empty());
}

#[test]
fn suggestions_start_in_audit_mode_and_name_their_targets() {
    let p = policy(&suggest(&config(AM)));
    assert_eq!(p.mode, crate::policy::Mode::Audit);
    let names: Vec<&str> = p
        .targets
        .iter()
        .flat_map(|t| match t {
            crate::policy::Target::Process { names, .. } => names.as_slice(),
            _ => &[],
        })
        .map(String::as_str)
        .collect();
    assert_eq!(names, ["alertmanager", "prometheus-alertmanager"]);
}
