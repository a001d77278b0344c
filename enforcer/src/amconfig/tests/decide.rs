//! Verdicts: FQDN rules, the default, literal addresses, resolution, the report.

use std::io;
use std::net::IpAddr;

use super::{config, policy};
use crate::amconfig::decide::{AddressSource, decide, decide_with, fqdn_rule};
use crate::amconfig::destination::{Destination, Reading, read_url};
use crate::amconfig::extract::EndpointKind;
use crate::amconfig::{CheckOptions, Status, check};

const POLICY: &str = "default: deny\nblock:\n  - preset: private\n  - preset: cloud-metadata\n\
                      allow:\n  - fqdn: hooks.slack.com\n    ports: [443]\n  - fqdn: \"*.example.com\"\n  \
                      - cidr: 10.1.2.3/32\n    ports: [25]\n";

fn dest(url: &str) -> Destination {
    match read_url(url, EndpointKind::Http) {
        Reading::Decided { primary, .. } => primary,
        other => panic!("{other:?}"),
    }
}

#[test]
fn fqdn_rules_match_exact_names_and_wildcards_on_their_ports() {
    let p = policy(POLICY);
    assert!(fqdn_rule(&p, "hooks.slack.com", 443).is_some());
    assert!(fqdn_rule(&p, "hooks.slack.com", 80).is_none());
    assert!(fqdn_rule(&p, "evil.hooks.slack.com", 443).is_none());
    assert!(fqdn_rule(&p, "a.example.com", 1).is_some());
    assert!(fqdn_rule(&p, "a.b.example.com", 1).is_some());
    assert!(fqdn_rule(&p, "example.com", 443).is_none());
    assert!(fqdn_rule(&p, "badexample.com", 443).is_none());
    let udp_only = policy("allow:\n  - fqdn: a.example\n    protocols: [udp]\n");
    assert!(fqdn_rule(&udp_only, "a.example", 443).is_none());
}

#[test]
fn names_are_decided_by_fqdn_rules_or_the_default() {
    let p = policy(POLICY);
    let v = decide(&p, &dest("https://hooks.slack.com/services/x"), false);
    assert!(v.allow);
    assert_eq!(v.rule, "allow fqdn hooks.slack.com ports 443");
    let v = decide(&p, &dest("http://hooks.slack.com/"), false);
    assert!(!v.allow);
    assert_eq!(v.rule, "default deny");
    assert!(
        v.notes
            .iter()
            .any(|n| n.contains("not covered by any fqdn rule"))
    );
    let open = policy("default: allow\nblock:\n  - preset: private\n");
    assert!(decide(&open, &dest("https://anything.example.org/"), false).allow);
}

#[test]
fn literal_addresses_go_through_the_decision_order() {
    let p = policy(POLICY);
    let v = decide(&p, &dest("http://0xa9fea9fe/"), false);
    assert!(!v.allow);
    assert_eq!(v.rule, "block preset:cloud-metadata 169.254.169.254/32");
    let v = decide(&p, &dest("http://[::ffff:10.0.0.1]/"), false);
    assert_eq!(v.rule, "block preset:private 10.0.0.0/8");
    assert_eq!(
        v.addresses[0].decided_as,
        "10.0.0.1".parse::<IpAddr>().unwrap()
    );
    // An allow CIDR rule comes before the blocks, on its port only.
    let v = decide(&p, &dest("http://10.1.2.3:25/"), false);
    assert!(v.allow, "{v:?}");
    assert!(!decide(&p, &dest("http://10.1.2.3/"), false).allow);
    // Public addresses fall to the default.
    assert_eq!(
        decide(&p, &dest("https://203.0.113.9/"), false).rule,
        "default deny"
    );
}

#[test]
fn localhost_and_empty_hosts_are_loopback_without_dns() {
    let open = policy("default: allow\nblock:\n  - preset: private\n");
    for url in [
        "http://localhost:9093/-/quit",
        "http://a.localhost/",
        "http://:9093/",
        "http://0/",
    ] {
        let v = decide(&open, &dest(url), false);
        assert!(!v.allow, "{url}: {v:?}");
        assert!(
            v.rule.starts_with("block preset:private"),
            "{url}: {}",
            v.rule
        );
        assert!(
            v.addresses
                .iter()
                .any(|a| a.source == AddressSource::Loopback),
            "{url}"
        );
    }
}

#[test]
fn resolved_addresses_are_decided_too_and_never_override_a_block() {
    let p = policy(POLICY);
    let rebinding = |name: &str, _: u16| -> io::Result<Vec<IpAddr>> {
        assert_eq!(name, "hooks.slack.com");
        Ok(vec![
            "203.0.113.7".parse().unwrap(),
            "169.254.169.254".parse().unwrap(),
        ])
    };
    let v = decide_with(&p, &dest("https://hooks.slack.com/x"), Some(&rebinding));
    assert!(!v.allow);
    assert_eq!(v.rule, "block preset:cloud-metadata 169.254.169.254/32");
    assert_eq!(v.addresses.len(), 2);
    assert!(v.addresses[0].allow && v.addresses[0].source == AddressSource::Resolved);
    assert_eq!(v.addresses[0].rule, "allow fqdn hooks.slack.com ports 443");
    let public =
        |_: &str, _: u16| -> io::Result<Vec<IpAddr>> { Ok(vec!["203.0.113.7".parse().unwrap()]) };
    assert!(decide_with(&p, &dest("https://hooks.slack.com/x"), Some(&public)).allow);
    let failing =
        |_: &str, _: u16| -> io::Result<Vec<IpAddr>> { Err(io::Error::other("NXDOMAIN")) };
    let v = decide_with(&p, &dest("https://hooks.slack.com/x"), Some(&failing));
    assert!(v.allow && v.unresolved);
    assert!(v.notes.iter().any(|n| n.contains("could not resolve")));
    // A name is never resolved without a resolver, and localhost never needs one.
    let never = |_: &str, _: u16| -> io::Result<Vec<IpAddr>> { panic!("resolved") };
    decide_with(&p, &dest("http://localhost/"), Some(&never));
}

const AM: &str = "route:\n  receiver: ok\nreceivers:\n\
                  - name: ok\n  slack_configs:\n  - api_url: https://alice:pw@hooks.slack.com/services/T/B/SECRET?x=y\n\
                  - name: evil\n  webhook_configs:\n  - url: http://2852039166/latest/meta-data/\n\
                  - name: tmpl\n  webhook_configs:\n  - url: 'http://{{ .CommonLabels.host }}/'\n";

#[test]
fn the_report_fails_on_denied_and_passes_warnings_unless_strict() {
    let p = policy(POLICY);
    let r = check(&config(AM), &p, CheckOptions::default());
    let status: Vec<_> = r.findings.iter().map(|f| f.status).collect();
    assert_eq!(status, [Status::Allow, Status::Deny, Status::Undecided]);
    assert_eq!(
        r.findings[2].reason,
        "templated: cannot be decided statically"
    );
    assert!(!r.passed());
    let only_warning = "route:\n  receiver: tmpl\nreceivers:\n\
                        - name: tmpl\n  webhook_configs:\n  - url: 'http://{{ .X }}/'\n";
    let lenient = check(&config(only_warning), &p, CheckOptions::default());
    assert_eq!(
        lenient.count(Status::Undecided),
        1,
        "{:?}",
        lenient.findings
    );
    assert!(lenient.passed());
    let strict = CheckOptions {
        strict: true,
        ..CheckOptions::default()
    };
    assert!(!check(&config(only_warning), &p, strict).passed());
}

#[test]
fn reports_never_show_secrets() {
    let r = check(&config(AM), &policy(POLICY), CheckOptions::default());
    for out in [r.to_text(), r.to_json()] {
        for secret in ["alice", ":pw", "SECRET", "x=y", "meta-data"] {
            assert!(!out.contains(secret), "{secret} shown in:\n{out}");
        }
    }
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["passed"], false);
    assert_eq!(json["summary"]["deny"], 1);
    let evil = &json["destinations"][1];
    assert_eq!(evil["receiver"], "evil");
    assert_eq!(evil["host"], "169.254.169.254");
    assert_eq!(evil["port"], 80);
    assert_eq!(evil["status"], "deny");
    assert_eq!(
        evil["reason"],
        "block preset:cloud-metadata 169.254.169.254/32"
    );
    assert_eq!(evil["line"], 9);
}
