//! The compiler against the reference evaluator, by scenario: random policies (`emulation`),
//! hand-checked entries and limits (`entries`), IPv4 block entries (`blocks`), and large
//! policies and capacity (`scale`).

mod blocks;
mod emulation;
mod entries;
mod scale;

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Compiled, lookup, render};
use crate::policy::{
    DefaultVerdict, Location, Mode, Policy, PortRange, Rule, RuleAction, RuleSource,
};
use crate::reference::evaluate;

pub(super) fn location(line: usize) -> Location {
    Location {
        file: "t.yaml".into(),
        line,
        column: 5,
    }
}

pub(super) fn rule(action: RuleAction, net: IpNet, ports: Vec<PortRange>, protocols: u8) -> Rule {
    let line = 1;
    Rule {
        action,
        net,
        ports,
        protocols,
        source: RuleSource::Cidr,
        location: location(line),
    }
}

pub(super) fn policy(default: DefaultVerdict, mut rules: Vec<Rule>) -> Policy {
    for (i, r) in rules.iter_mut().enumerate() {
        r.location.line = i + 1;
    }
    Policy {
        source: "t.yaml".into(),
        mode: Mode::Enforce,
        default,
        rules,
        fqdns: vec![],
        targets: vec![],
        alertmanager: Default::default(),
        dns: Default::default(),
        integrity: Default::default(),
        api: None,
    }
}

pub(super) fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// The compiled maps and the reference evaluator agree on one destination.
pub(super) fn assert_agree(p: &Policy, c: &Compiled, addr: IpAddr, port: u16, ip_protocol: u8) {
    let expected = evaluate(p, addr, port, ip_protocol);
    let got = lookup(c, addr, port, ip_protocol);
    assert_eq!(
        got,
        (expected.verdict(), expected.rule_id()),
        "destination {addr} port {port} protocol {ip_protocol}: reference says {expected:?}\n{}",
        render(p, c)
    );
}

/// One direction's IPv4 entries of `p`, before any block is folded.
pub(super) fn entries_of(p: &Policy) -> super::Entries<ipnet::Ipv4Net> {
    super::entries(&p.rules, &p.source).unwrap().0
}
