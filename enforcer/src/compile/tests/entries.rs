//! Entries checked by hand: clause order, the default policy, the clause limit.

use std::net::IpAddr;

use enforcer_common::{MAX_CLAUSES, action, proto, rule_id, verdict};
use ipnet::Ipv4Net;

use super::{assert_agree, net, policy, rule};
use crate::compile::{CompileError, compile, lookup, render};
use crate::policy::{
    DefaultVerdict, Location, Policy, PortRange, Rule, RuleAction, default_policy, parse_policy,
};

#[test]
fn clause_order() {
    let p = parse_policy(
        "default: deny
block:
  - cidr: 10.0.0.0/8
    ports: [22]
  - cidr: 10.1.0.0/16
    protocols: [udp]
  - cidr: 10.1.0.0/16
    ports: [1-5, 7]
allow:
  - cidr: 0.0.0.0/0
    ports: [443]
  - cidr: 10.1.0.0/16
    ports: [53]
    protocols: [udp]
",
        "t.yaml",
    )
    .unwrap();
    let c = compile(&p).unwrap();
    assert_eq!(
        (c.mode, c.default_verdict),
        (enforcer_common::mode::ENFORCE, verdict::DENY)
    );
    let entry = |s: &str| {
        let n: Ipv4Net = s.parse().unwrap();
        let (_, v) = c.v4.iter().find(|(m, _)| *m == n).unwrap();
        v.clauses[..v.n_clauses as usize]
            .iter()
            .map(|c| (c.action, c.rule_id, c.port_lo, c.port_hi, c.protocols))
            .collect::<Vec<_>>()
    };
    let (a, b, all) = (action::ALLOW, action::BLOCK, proto::ALL);
    assert_eq!(entry("0.0.0.0/0"), [(a, 3, 443, 443, all)]);
    assert_eq!(
        entry("10.0.0.0/8"),
        [(a, 3, 443, 443, all), (b, 0, 22, 22, all)]
    );
    assert_eq!(
        entry("10.1.0.0/16"),
        [
            (a, 3, 443, 443, all),
            (a, 4, 53, 53, proto::UDP),
            (b, 1, 0, u16::MAX, proto::UDP),
            (b, 2, 1, 5, all),
            (b, 2, 7, 7, all),
            (b, 0, 22, 22, all),
        ]
    );
    assert_eq!(c.v4.len(), 3);
    assert!(c.v6.is_empty());
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(lookup(&c, ip("10.1.2.3"), 443, 6), (verdict::ALLOW, 3));
    assert_eq!(
        lookup(&c, ip("::ffff:10.1.2.3"), 53, 17),
        (verdict::ALLOW, 4)
    );
    assert_eq!(
        lookup(&c, ip("64:ff9b::10.1.2.3"), 54, 17),
        (verdict::DENY, 1)
    );
    assert_eq!(lookup(&c, ip("10.1.2.3"), 22, 6), (verdict::DENY, 0));
    assert_eq!(
        lookup(&c, ip("10.2.2.3"), 80, 6),
        (verdict::DENY, rule_id::DEFAULT)
    );
    assert_eq!(
        lookup(&c, ip("2001:db8::1"), 443, 6),
        (verdict::DENY, rule_id::DEFAULT)
    );
    let listing = render(&p, &c);
    for needle in [
        "policy t.yaml: mode enforce, default deny",
        "2  block cidr 10.1.0.0/16 ports 1-5,7  (t.yaml:7:5)",
        "  10.1.0.0/16\n     1. allow rule 3 ports 443 protocols tcp,udp,other\n",
        "     3. block rule 1 ports 0-65535 protocols udp\n",
        "IPv6 map entries (0):",
    ] {
        assert!(listing.contains(needle), "{needle:?} not in\n{listing}");
    }
}

#[test]
fn default_policy_compiles() {
    let p = default_policy();
    let c = compile(&p).unwrap();
    assert_eq!(c.default_verdict, verdict::ALLOW);
    let metadata: Ipv4Net = "169.254.169.254/32".parse().unwrap();
    let (_, v) = c.v4.iter().find(|(n, _)| *n == metadata).unwrap();
    // The metadata rule is a catch-all block: the private /16 behind it is cut off.
    assert_eq!(v.n_clauses, 1);
    assert_eq!(
        p.rules[v.clauses[0].rule_id as usize].to_string(),
        "block preset:cloud-metadata 169.254.169.254/32"
    );
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    for (addr, port) in [
        ("169.254.169.254", 80),
        ("168.63.129.16", 53),
        ("168.63.129.16", 32526),
        ("8.8.8.8", 53),
        ("2002:a00::1", 80),
        ("2001::1", 1),
    ] {
        assert_agree(&p, &c, ip(addr), port, 6);
    }
    assert_eq!(
        lookup(&c, ip("168.63.129.16"), 53, 17),
        (verdict::ALLOW, rule_id::DEFAULT)
    );
}

#[test]
fn too_many_clauses_names_the_prefix_and_rules() {
    // 17 nested rules, none a catch-all: the innermost entry needs 17 clauses.
    let rules: Vec<Rule> = (0..=16u8)
        .map(|i| {
            rule(
                RuleAction::Block,
                net(&format!("10.0.0.0/{}", 8 + i)),
                vec![PortRange::single(80)],
                proto::ALL,
            )
        })
        .collect();
    let p = policy(DefaultVerdict::Allow, rules);
    let e = compile(&p).unwrap_err();
    let CompileError::TooManyClauses {
        prefix,
        clauses,
        max,
        rules,
        location,
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(
        (*prefix, *clauses, *max),
        (net("10.0.0.0/24"), 17, MAX_CLAUSES)
    );
    assert_eq!(rules.len(), 17);
    assert_eq!(rules[0].id, 16);
    assert_eq!(*location, location_of(&p, 16));
    let text = e.to_string();
    assert!(
        text.starts_with("t.yaml:17:5: addresses in 10.0.0.0/24 need 17 clauses"),
        "{text}"
    );
    assert!(
        text.contains("rule 0 (block cidr 10.0.0.0/8 ports 80) at t.yaml:1:5"),
        "{text}"
    );
    // One rule with 17 port ranges.
    let ports = (1..=17).map(|i| PortRange::single(i * 2)).collect();
    let p = policy(
        DefaultVerdict::Allow,
        vec![rule(
            RuleAction::Allow,
            net("2001:db8::/32"),
            ports,
            proto::TCP,
        )],
    );
    assert!(
        matches!(compile(&p), Err(CompileError::TooManyClauses { prefix, .. }) if prefix == net("2001:db8::/32"))
    );
    // Catch-all rules end an entry, so deep nesting of plain blocks fits.
    let rules = (0..=32u8)
        .map(|i| {
            rule(
                RuleAction::Block,
                net(&format!("0.0.0.0/{i}")),
                vec![],
                proto::ALL,
            )
        })
        .collect();
    let c = compile(&policy(DefaultVerdict::Allow, rules)).unwrap();
    assert!(
        c.v4.iter()
            .all(|(n, v)| v.n_clauses == 1 && v.clauses[0].rule_id == n.prefix_len() as u32)
    );
}

fn location_of(p: &Policy, id: usize) -> Location {
    p.rules[id].location.clone()
}
