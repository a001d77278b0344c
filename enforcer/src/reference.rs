//! The reference evaluator: the decision order of docs/design.md, read straight off a [`Policy`].
//!
//! It shares nothing with the compiler on purpose: it is the oracle the compiled maps (and the
//! kernel programs that read them) are tested against. Slow and obvious beats fast here.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use enforcer_common::{proto, rule_id, verdict};

use crate::policy::{DefaultVerdict, Policy, Rule, RuleAction};

/// The verdict for one destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// `rule` is the allow rule that matched, `None` when the default allowed.
    Allow { rule: Option<u32> },
    /// `rule` is the block rule that matched, or [`rule_id::DEFAULT`] for `default: deny`.
    Deny { rule: u32 },
}

impl Decision {
    /// The [`enforcer_common::verdict`] code.
    pub fn verdict(self) -> u32 {
        match self {
            Decision::Allow { .. } => verdict::ALLOW,
            Decision::Deny { .. } => verdict::DENY,
        }
    }

    /// The rule id as the kernel reports it ([`rule_id::DEFAULT`] when the default decided).
    pub fn rule_id(self) -> u32 {
        match self {
            Decision::Allow { rule } => rule.unwrap_or(rule_id::DEFAULT),
            Decision::Deny { rule } => rule,
        }
    }
}

/// Decides a destination. `ip_protocol` is the socket's IP protocol number (6 TCP, 17 UDP,
/// anything else is "other"). Audit mode is the caller's business: the would-be verdict is
/// returned.
pub fn evaluate(policy: &Policy, addr: IpAddr, port: u16, ip_protocol: u8) -> Decision {
    evaluate_with(policy, &FqdnFacts::default(), addr, port, ip_protocol)
}

/// What is known about FQDN answers: (normalised) address → the `fqdn` rules (indexes into
/// [`Policy::fqdns`]) it was answered for, unexpired.
#[derive(Clone, Debug, Default)]
pub struct FqdnFacts {
    pub answered: HashMap<IpAddr, Vec<usize>>,
}

impl FqdnFacts {
    pub fn add(&mut self, addr: IpAddr, fqdn: usize) {
        let rules = self.answered.entry(normalise(addr)).or_default();
        if !rules.contains(&fqdn) {
            rules.push(fqdn);
            rules.sort_unstable();
        }
    }
}

/// [`evaluate`] with step 4: an address answered for an `fqdn` rule whose ports and protocols
/// match is allowed (that rule's id is `policy.rules.len() + index`), unless step 2 or 3 decided.
pub fn evaluate_with(
    policy: &Policy,
    facts: &FqdnFacts,
    addr: IpAddr,
    port: u16,
    ip_protocol: u8,
) -> Decision {
    // 1. Normalise IPv6 spellings of an IPv4 address (mapped, SIIT, NAT64, IPv4-compatible).
    let addr = normalise(addr);
    let protocol = match ip_protocol {
        6 => proto::TCP,
        // UDP-Lite is UDP for the policy.
        17 | 136 => proto::UDP,
        _ => proto::OTHER,
    };
    let matching = |action: RuleAction| {
        policy.rules.iter().enumerate().filter(move |(_, rule)| {
            rule.action == action && rule.net.contains(&addr) && matches(rule, port, protocol)
        })
    };
    // 2. The first matching allow rule.
    if let Some((id, _)) = matching(RuleAction::Allow).next() {
        return Decision::Allow {
            rule: Some(id_of(id)),
        };
    }
    // 3. The most specific matching block rule; the first one among equally specific rules.
    let mut best: Option<(usize, &Rule)> = None;
    for (id, rule) in matching(RuleAction::Block) {
        if best.is_none_or(|(_, b)| rule.net.prefix_len() > b.net.prefix_len()) {
            best = Some((id, rule));
        }
    }
    if let Some((id, _)) = best {
        return Decision::Deny { rule: id_of(id) };
    }
    // 4. Addresses answered for an allowlisted name, on that rule's ports and protocols.
    if let Some(fqdns) = facts.answered.get(&addr) {
        for &i in fqdns {
            let Some(f) = policy.fqdns.get(i) else {
                continue;
            };
            let port_ok = f.ports.is_empty() || f.ports.iter().any(|r| r.contains(port));
            if port_ok && f.protocols & protocol != 0 {
                return Decision::Allow {
                    rule: Some(id_of(policy.rules.len() + i)),
                };
            }
        }
    }
    // 5. The default.
    match policy.default {
        DefaultVerdict::Allow => Decision::Allow { rule: None },
        DefaultVerdict::Deny => Decision::Deny {
            rule: rule_id::DEFAULT,
        },
    }
}

/// The ingress direction (the API guard): what a TCP connection from `peer` to a guarded web
/// port of a target gets. `None` when the policy has no `api:` section (nothing is guarded).
/// Step 1 and step 2 of the egress order, over the section's `allow` list (rule id = index),
/// then the section's default: refused when it has an `allow` list.
pub fn evaluate_ingress(policy: &Policy, peer: IpAddr) -> Option<Decision> {
    let api = policy.api.as_ref()?;
    let peer = normalise(peer);
    let allowed = api.rules().iter().position(|rule| rule.net.contains(&peer));
    Some(match (allowed, api.default_verdict()) {
        (Some(id), _) => Decision::Allow {
            rule: Some(id_of(id)),
        },
        (None, DefaultVerdict::Allow) => Decision::Allow { rule: None },
        (None, DefaultVerdict::Deny) => Decision::Deny {
            rule: rule_id::DEFAULT,
        },
    })
}

/// The cluster surface of the API guard: what a TCP connection or UDP datagram from `peer` to
/// a guarded gossip port of a target gets, before the target's own `--cluster.peer`s (which
/// the kernel adds per target). `None` without an `api:` section. The section's
/// `cluster_allow` list (rule id = its index after the `allow` list), else refused.
pub fn evaluate_cluster(policy: &Policy, peer: IpAddr) -> Option<Decision> {
    let api = policy.api.as_ref()?;
    let peer = normalise(peer);
    let first = api.rules().len();
    Some(
        match api
            .cluster_allow
            .iter()
            .position(|rule| rule.net.contains(&peer))
        {
            Some(i) => Decision::Allow {
                rule: Some(id_of(first + i)),
            },
            None => Decision::Deny {
                rule: rule_id::DEFAULT,
            },
        },
    )
}

fn matches(rule: &Rule, port: u16, protocol: u8) -> bool {
    let port_ok = rule.ports.is_empty() || rule.ports.iter().any(|r| r.lo <= port && port <= r.hi);
    port_ok && rule.protocols & protocol != 0
}

fn id_of(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(rule_id::DEFAULT)
}

fn normalise(addr: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = addr else { return addr };
    let o = v6.octets();
    let mapped = o[..10] == [0; 10] && o[10..12] == [0xff, 0xff];
    let siit = o[..8] == [0; 8] && o[8..12] == [0xff, 0xff, 0, 0];
    let nat64 = o[..12] == [0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];
    // IPv4-compatible `::a.b.c.d`, but `::` and `::1` are the unspecified and loopback addresses.
    let compatible = o[..12] == [0; 12] && u32::from_be_bytes([o[12], o[13], o[14], o[15]]) > 1;
    if mapped || siit || nat64 || compatible {
        IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
    } else {
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy;

    fn policy(yaml: &str) -> Policy {
        parse_policy(yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allow_overrides_a_more_specific_block() {
        let p = policy(
            "default: deny\nblock:\n  - cidr: 10.1.2.3/32\nallow:\n  - cidr: 10.0.0.0/8\n    ports: [443]\n",
        );
        assert_eq!(
            evaluate(&p, ip("10.1.2.3"), 443, 6),
            Decision::Allow { rule: Some(1) }
        );
        assert_eq!(
            evaluate(&p, ip("10.1.2.3"), 80, 6),
            Decision::Deny { rule: 0 }
        );
        assert_eq!(
            evaluate(&p, ip("10.1.2.4"), 80, 6),
            Decision::Deny {
                rule: rule_id::DEFAULT
            }
        );
        assert_eq!(
            evaluate(&p, ip("10.1.2.4"), 443, 17),
            Decision::Allow { rule: Some(1) }
        );
    }

    #[test]
    fn most_specific_block_wins_then_lowest_id() {
        let p = policy(
            "default: allow\nblock:\n  - cidr: 10.0.0.0/8\n  - cidr: 10.1.0.0/16\n  - cidr: 10.1.0.0/16\n",
        );
        assert_eq!(
            evaluate(&p, ip("10.1.0.1"), 1, 6),
            Decision::Deny { rule: 1 }
        );
        assert_eq!(
            evaluate(&p, ip("10.2.0.1"), 1, 6),
            Decision::Deny { rule: 0 }
        );
        assert_eq!(
            evaluate(&p, ip("11.0.0.1"), 1, 6),
            Decision::Allow { rule: None }
        );
    }

    #[test]
    fn mapped_siit_nat64_and_compatible_are_decided_as_ipv4() {
        let p = policy("default: allow\nblock:\n  - preset: cloud-metadata\n");
        for a in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "::ffff:0:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::169.254.169.254",
        ] {
            assert_eq!(
                evaluate(&p, ip(a), 80, 6),
                Decision::Deny { rule: 0 },
                "{a}"
            );
        }
        // WireServer: blocked on 80 and 32526 only.
        assert_eq!(
            evaluate(&p, ip("168.63.129.16"), 53, 17),
            Decision::Allow { rule: None }
        );
        assert_eq!(
            evaluate(&p, ip("::ffff:168.63.129.16"), 32526, 6).verdict(),
            verdict::DENY
        );
    }

    #[test]
    fn udplite_is_udp() {
        let p = policy(
            "default: deny\nblock:\n  - cidr: 192.0.2.0/24\n    protocols: [udp]\nallow:\n  - cidr: 198.51.100.0/24\n    protocols: [udp]\n",
        );
        assert_eq!(
            evaluate(&p, ip("192.0.2.1"), 53, 136),
            Decision::Deny { rule: 0 }
        );
        assert_eq!(
            evaluate(&p, ip("198.51.100.1"), 53, 136),
            Decision::Allow { rule: Some(1) }
        );
        assert_eq!(
            evaluate(&p, ip("198.51.100.1"), 53, 132),
            Decision::Deny {
                rule: rule_id::DEFAULT
            }
        );
    }

    #[test]
    fn fqdn_answers_allow_after_blocks_only_on_their_ports() {
        let p = policy(
            "default: deny\nblock:\n  - cidr: 169.254.0.0/16\nallow:\n  - fqdn: hooks.slack.com\n    ports: [443]\n  - fqdn: \"*.example.com\"\n",
        );
        let mut facts = FqdnFacts::default();
        facts.add(ip("192.0.2.1"), 0);
        facts.add(ip("::ffff:169.254.169.254"), 0);
        facts.add(ip("2001:db8::1"), 1);
        let eval = |a: &str, port, proto| evaluate_with(&p, &facts, ip(a), port, proto);
        assert_eq!(eval("192.0.2.1", 443, 6), Decision::Allow { rule: Some(1) });
        assert_eq!(
            eval("::ffff:192.0.2.1", 443, 17),
            Decision::Allow { rule: Some(1) }
        );
        assert_eq!(
            eval("192.0.2.1", 80, 6),
            Decision::Deny {
                rule: rule_id::DEFAULT
            }
        );
        assert_eq!(
            eval("192.0.2.2", 443, 6),
            Decision::Deny {
                rule: rule_id::DEFAULT
            }
        );
        // A rebinding answer never opens a blocked range.
        assert_eq!(eval("169.254.169.254", 443, 6), Decision::Deny { rule: 0 });
        assert_eq!(
            eval("2001:db8::1", 1, 132),
            Decision::Allow { rule: Some(2) }
        );
        assert_eq!(
            evaluate(&p, ip("192.0.2.1"), 443, 6).verdict(),
            verdict::DENY
        );
    }

    #[test]
    fn protocols_and_ports_restrict_a_rule() {
        let p = policy(
            "default: allow\nblock:\n  - cidr: 192.0.2.0/24\n    ports: [53, 100-200]\n    protocols: [udp]\n",
        );
        assert_eq!(
            evaluate(&p, ip("192.0.2.1"), 53, 17),
            Decision::Deny { rule: 0 }
        );
        assert_eq!(
            evaluate(&p, ip("192.0.2.1"), 150, 17),
            Decision::Deny { rule: 0 }
        );
        assert_eq!(
            evaluate(&p, ip("192.0.2.1"), 53, 6),
            Decision::Allow { rule: None }
        );
        assert_eq!(
            evaluate(&p, ip("192.0.2.1"), 201, 17),
            Decision::Allow { rule: None }
        );
        assert_eq!(
            evaluate(&p, ip("192.0.2.1"), 53, 1),
            Decision::Allow { rule: None }
        );
    }
}
