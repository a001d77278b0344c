//! Warnings for valid policies that probably do not do what was meant (issue 11 case 7).

use super::*;
use crate::policy::lint::{is_public_suffix, warnings};

fn messages(yaml: &str) -> Vec<String> {
    warnings(&ok(yaml))
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_policy_that_enforces_nothing() {
    let w = messages("mode: enforce\n");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("p.yaml:1:1: this policy enforces nothing"),
        "{w:?}"
    );
    assert_eq!(
        messages("mode: enforce\ndefault: allow\nallow:\n  - cidr: 10.0.0.0/8\n").len(),
        1
    );
    assert!(messages("default: deny\n").is_empty());
    assert!(messages("block:\n  - preset: cloud-metadata\n").is_empty());
    assert!(warnings(&default_policy()).is_empty());
}

#[test]
fn allows_that_override_every_block() {
    for all in ["0.0.0.0/0", "0.0.0.0/1\n  - cidr: 128.0.0.0/1"] {
        let w = messages(&format!(
            "block:\n  - preset: private\n  - preset: cloud-metadata\nallow:\n  - cidr: {all}\n"
        ));
        assert!(!w.is_empty(), "{all}");
        assert!(w[0].starts_with("p.yaml:5:5: allow 0.0.0.0/"), "{w:?}");
        assert!(
            w.iter().all(|m| m.contains("overrides every block")),
            "{w:?}"
        );
    }
    let w = messages("block:\n  - preset: private\nallow:\n  - cidr: ::/0\n    ports: [443]\n");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("allow ::/0 contains every IPv6 block range"),
        "{w:?}"
    );
    assert!(
        w[0].contains("for the ports and protocols it names"),
        "{w:?}"
    );
    // A hole in a block is what allow rules are for.
    assert!(
        messages("block:\n  - preset: private\nallow:\n  - cidr: 10.96.0.10/32\n    ports: [53]\n")
            .is_empty()
    );
}

#[test]
fn fqdns_naming_a_public_suffix() {
    let w = messages(
        "default: deny\nallow:\n  - fqdn: \"*.com\"\n  - fqdn: \"*.github.io\"\n  - fqdn: \"*.slack.com\"\n  - fqdn: hooks.slack.com\n",
    );
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].starts_with("p.yaml:3:5: fqdn \"*.com\" names a public suffix"),
        "{w:?}"
    );
    assert!(
        w[1].starts_with("p.yaml:4:5: fqdn \"*.github.io\""),
        "{w:?}"
    );
    assert!(is_public_suffix("com") && is_public_suffix("co.uk"));
    assert!(!is_public_suffix("slack.com"));
}
