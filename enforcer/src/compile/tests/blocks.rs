//! IPv4 block entries, by hand: what a block holds, in which order, what stays in the trie,
//! and every address of the blocks decided as the reference evaluator decides it.

use std::net::{IpAddr, Ipv4Addr};

use enforcer_common::{BLOCK_CLAUSES, Clause, EXACT_CLAUSES, action, proto};
use ipnet::Ipv4Net;

use super::{assert_agree, net, policy, rule};
use crate::compile::{Compiled, blocks, compile, render};
use crate::policy::{DefaultVerdict, Policy, PortRange, RuleAction};

fn v4(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

/// Every address of `block` on a few ports and both protocols, and the block's neighbours.
fn agree_on_block(p: &Policy, c: &Compiled, block: Ipv4Net) {
    let base = u32::from(block.network());
    for host in (0..256u32).chain([256, u32::MAX]) {
        let a = IpAddr::V4(Ipv4Addr::from(base.wrapping_add(host)));
        for port in [53, 443, 8443] {
            assert_agree(p, c, a, port, proto::IPPROTO_TCP);
            assert_agree(p, c, a, port, proto::IPPROTO_UDP);
        }
    }
}

fn clause(rule_id: u32, ports: (u16, u16), protocols: u8, act: u8, hosts: [u8; 2]) -> Clause {
    Clause {
        rule_id,
        port_lo: ports.0,
        port_hi: ports.1,
        protocols,
        action: act,
        hosts,
    }
}

/// A /16 around a /24 with a /28 allow, a /30 with ports and an exact /32: one block entry,
/// clauses in the order every entry follows, the /24–/30 entries out of the trie.
#[test]
fn a_block_holds_every_rule_over_its_hosts_in_entry_order() {
    let p = policy(
        DefaultVerdict::Allow,
        vec![
            rule(RuleAction::Block, net("198.51.0.0/16"), vec![], proto::TCP),
            rule(
                RuleAction::Block,
                net("198.51.100.0/24"),
                vec![PortRange::single(443)],
                proto::ALL,
            ),
            rule(
                RuleAction::Allow,
                net("198.51.100.16/28"),
                vec![PortRange::single(443)],
                proto::TCP,
            ),
            rule(
                RuleAction::Block,
                net("198.51.100.32/30"),
                vec![PortRange { lo: 50, hi: 60 }],
                proto::UDP,
            ),
            rule(
                RuleAction::Block,
                net("198.51.100.7/32"),
                vec![],
                proto::ALL,
            ),
        ],
    );
    let c = compile(&p).unwrap();
    let nets: Vec<Ipv4Net> = (0..c.v4.len()).map(|i| c.v4.net(i)).collect();
    assert_eq!(nets, [v4("198.51.0.0/16"), v4("198.51.100.7/32")]);
    assert_eq!(c.v4_blocks.len(), 1);
    assert_eq!(c.v4_blocks.net(0), v4("198.51.100.0/24"));
    let all = (0, u16::MAX);
    assert_eq!(
        c.v4_blocks.clauses(0),
        [
            clause(2, (443, 443), proto::TCP, action::ALLOW, [16, 31]),
            clause(3, (50, 60), proto::UDP, action::BLOCK, [32, 35]),
            clause(1, (443, 443), proto::ALL, action::BLOCK, [0, 255]),
            clause(0, all, proto::TCP, action::BLOCK, [0, 255]),
        ]
    );
    assert_eq!((c.capacity.v4.used, c.capacity.v4_exact.used), (1, 1));
    assert_eq!(c.capacity.v4_blocks.used, 1);
    agree_on_block(&p, &c, v4("198.51.100.0/24"));
    let text = render(&p, &c);
    assert!(
        text.contains("IPv4 /24 block entries (1; each clause applies to the hosts it names):\n  198.51.100.0/24\n     1. allow rule 2 hosts .16-.31 ports 443 protocols tcp\n"),
        "{text}"
    );
}

/// A catch-all clause over the whole block ends the list: nothing after it can be reached.
#[test]
fn a_catch_all_over_the_block_ends_its_clauses() {
    let p = policy(
        DefaultVerdict::Deny,
        vec![
            rule(RuleAction::Allow, net("203.0.113.0/24"), vec![], proto::ALL),
            rule(
                RuleAction::Block,
                net("203.0.113.128/25"),
                vec![],
                proto::ALL,
            ),
            rule(
                RuleAction::Allow,
                net("203.0.113.200/29"),
                vec![PortRange::single(22)],
                proto::TCP,
            ),
        ],
    );
    let c = compile(&p).unwrap();
    assert!(c.v4.is_empty());
    assert_eq!(c.v4_blocks.clauses(0).len(), 1, "{}", render(&p, &c));
    agree_on_block(&p, &c, v4("203.0.113.0/24"));
}

/// What a block entry cannot stand for stays in the trie, whole: a /32 whose clauses do not fit
/// the exact map, a block with more clauses than a block entry holds; a block of exact /32s
/// alone gets no entry.
#[test]
fn blocks_that_cannot_be_folded_keep_their_entries_in_the_trie() {
    let ports = |n: usize| {
        (0..n as u16)
            .map(|i| PortRange::single(1000 + 2 * i))
            .collect()
    };
    let p = policy(
        DefaultVerdict::Allow,
        vec![
            // 192.0.2.0/24: a /32 with more clauses than an exact entry holds.
            rule(RuleAction::Block, net("192.0.2.0/25"), vec![], proto::UDP),
            rule(
                RuleAction::Block,
                net("192.0.2.9/32"),
                ports(EXACT_CLAUSES),
                proto::TCP,
            ),
            // 198.18.0.0/24: more clauses than a block entry holds.
            rule(
                RuleAction::Block,
                net("198.18.0.0/26"),
                ports(BLOCK_CLAUSES / 2 + 1),
                proto::TCP,
            ),
            rule(
                RuleAction::Block,
                net("198.18.0.64/26"),
                ports(BLOCK_CLAUSES / 2),
                proto::TCP,
            ),
            // 198.18.1.0/24: exact /32s only.
            rule(RuleAction::Block, net("198.18.1.1/32"), vec![], proto::ALL),
            rule(RuleAction::Block, net("198.18.1.2/32"), vec![], proto::ALL),
            // 198.18.2.0/24: folds.
            rule(RuleAction::Block, net("198.18.2.0/31"), vec![], proto::ALL),
        ],
    );
    let c = compile(&p).unwrap();
    assert_eq!(c.v4_blocks.len(), 1, "{}", render(&p, &c));
    assert_eq!(c.v4_blocks.net(0), v4("198.18.2.0/24"));
    assert_eq!(c.v4.len(), 6);
    assert_eq!((c.capacity.v4.used, c.capacity.v4_exact.used), (4, 2));
    for b in [
        "192.0.2.0/24",
        "198.18.0.0/24",
        "198.18.1.0/24",
        "198.18.2.0/24",
    ] {
        agree_on_block(&p, &c, v4(b));
    }
}

/// At most `budget` blocks are folded (the block map's capacity, shared by both directions);
/// the rest stay in the trie and decide the same.
#[test]
fn blocks_beyond_the_budget_stay_in_the_trie() {
    let p = policy(
        DefaultVerdict::Allow,
        vec![
            rule(RuleAction::Block, net("10.0.0.0/8"), vec![], proto::UDP),
            rule(RuleAction::Block, net("10.1.1.0/24"), vec![], proto::TCP),
            rule(RuleAction::Allow, net("10.1.2.4/30"), vec![], proto::ALL),
            rule(RuleAction::Block, net("10.1.3.128/25"), vec![], proto::ALL),
        ],
    );
    let mut c = compile(&p).unwrap();
    assert_eq!((c.v4_blocks.len(), c.v4.len()), (3, 1));
    let mut all = crate::compile::tests::entries_of(&p);
    let folded = blocks::fold(&mut all, |id| p.rules[id as usize].net.prefix_len(), 2);
    assert_eq!(folded.len(), 2);
    assert_eq!(folded.net(1), v4("10.1.2.0/24"));
    let nets: Vec<Ipv4Net> = (0..all.len()).map(|i| all.net(i)).collect();
    assert_eq!(nets, [v4("10.0.0.0/8"), v4("10.1.3.128/25")]);
    (c.v4, c.v4_blocks) = (all, folded);
    for b in ["10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24", "10.1.4.0/24"] {
        agree_on_block(&p, &c, v4(b));
    }
}
