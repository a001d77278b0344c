//! 30,000 random (policy, destination) pairs: the compiled maps, looked up as the kernel does
//! (prefilter included), give the reference evaluator's verdict and rule.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use enforcer_common::proto;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{assert_agree, policy, rule};
use crate::compile::{CompileError, compile};
use crate::policy::{
    DefaultVerdict, PortRange, Rule, RuleAction, merge_port_ranges, normalize_addr, normalize_net,
};

const V4_ANCHORS: [u32; 4] = [0x0a00_0000, 0xc0a8_0100, 0xa9fe_a9fe, 0x0000_0000];
const V6_ANCHORS: [u128; 4] = [
    0x2001_0db8_0000_0000_0000_0000_0000_0000,
    0xfd00_0ec2_0000_0000_0000_0000_0000_0254,
    0x0000_0000_0000_0000_0000_ffff_0a00_0000,
    0x0064_ff9b_0000_0000_0000_0000_0a00_0000,
];
const PROTOCOL_MASKS: [u8; 5] = [
    proto::ALL,
    proto::TCP,
    proto::UDP,
    proto::TCP | proto::UDP,
    proto::TCP | proto::OTHER,
];

/// A prefix length biased towards the long end, so prefixes nest and overlap.
fn prefix_len(rng: &mut StdRng, max: u8) -> u8 {
    match rng.random_range(0..10) {
        0 => rng.random_range(0..=max),
        _ => rng.random_range(max - max / 4..=max),
    }
}

fn random_net(rng: &mut StdRng) -> IpNet {
    let net = if rng.random_bool(0.6) {
        let anchor = V4_ANCHORS[rng.random_range(0..V4_ANCHORS.len())];
        let addr = anchor ^ (rng.random::<u32>() >> rng.random_range(20..32));
        IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), prefix_len(rng, 32)).unwrap())
    } else {
        let anchor = V6_ANCHORS[rng.random_range(0..V6_ANCHORS.len())];
        let addr = anchor ^ (rng.random::<u128>() >> rng.random_range(116..128));
        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), prefix_len(rng, 128)).unwrap())
    };
    normalize_net(net.trunc())
}

fn random_rule(rng: &mut StdRng) -> Rule {
    let action = if rng.random_bool(0.35) {
        RuleAction::Allow
    } else {
        RuleAction::Block
    };
    let ports = if rng.random_bool(0.5) {
        vec![]
    } else {
        let ranges: Vec<PortRange> = (0..rng.random_range(1..=3))
            .map(|_| {
                let lo = rng.random_range(1..=12u16);
                PortRange {
                    lo,
                    hi: lo + rng.random_range(0..3),
                }
            })
            .collect();
        merge_port_ranges(&ranges)
    };
    let protocols = PROTOCOL_MASKS[rng.random_range(0..PROTOCOL_MASKS.len())];
    rule(action, random_net(rng), ports, protocols)
}

/// Addresses at and just outside the edges of `net`, one inside, and their mapped and NAT64
/// forms for IPv4.
fn boundary_addresses(rng: &mut StdRng, net: IpNet, out: &mut Vec<IpAddr>) {
    match net {
        IpNet::V4(n) => {
            let (first, last) = (u32::from(n.network()), u32::from(n.broadcast()));
            let inside = first + rng.random_range(0..=last - first);
            for a in [
                first,
                last,
                first.wrapping_sub(1),
                last.wrapping_add(1),
                inside,
            ] {
                let v4 = Ipv4Addr::from(a);
                out.push(IpAddr::V4(v4));
                out.push(IpAddr::V6(v4.to_ipv6_mapped()));
                out.push(IpAddr::V6(Ipv6Addr::from(
                    (0x64_ff9bu128 << 96) | a as u128,
                )));
            }
        }
        IpNet::V6(n) => {
            let (first, last) = (u128::from(n.network()), u128::from(n.broadcast()));
            let inside = first + rng.random_range(0..=last - first);
            for a in [
                first,
                last,
                first.wrapping_sub(1),
                last.wrapping_add(1),
                inside,
            ] {
                out.push(IpAddr::V6(Ipv6Addr::from(a)));
            }
        }
    }
}

#[test]
fn compiled_maps_agree_with_the_reference() {
    let mut rng = StdRng::seed_from_u64(20_000);
    let (mut pairs, mut policies, mut too_big) = (0, 0, 0);
    // IPv4 destinations the prefilter answers alone (no trie walk), split by whether the
    // reference then sends them to a rule (never: that would be a hole) or to the default.
    let (mut filtered, mut walked) = (0, 0);
    let mut addresses = Vec::new();
    while pairs < 30_000 {
        let default = if rng.random_bool(0.5) {
            DefaultVerdict::Allow
        } else {
            DefaultVerdict::Deny
        };
        let rules = (0..rng.random_range(1..=8))
            .map(|_| random_rule(&mut rng))
            .collect();
        let p = policy(default, rules);
        let c = match compile(&p) {
            Ok(c) => c,
            Err(CompileError::TooManyClauses { .. }) => {
                too_big += 1;
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        policies += 1;
        addresses.clear();
        for r in &p.rules {
            boundary_addresses(&mut rng, r.net, &mut addresses);
        }
        addresses.push(IpAddr::V4(Ipv4Addr::from(rng.random::<u32>())));
        addresses.push(IpAddr::V6(Ipv6Addr::from(rng.random::<u128>())));
        for &addr in &addresses {
            let port = match rng.random_range(0..10) {
                0 => 0,
                1 => u16::MAX,
                _ => rng.random_range(1..=15),
            };
            let ip_protocol = [6, 17, 1, 132][rng.random_range(0..4)];
            assert_agree(&p, &c, addr, port, ip_protocol);
            if let IpAddr::V4(a) = normalize_addr(addr) {
                if c.v4_filter.covers(a) {
                    walked += 1;
                } else {
                    filtered += 1;
                }
            }
            pairs += 1;
        }
    }
    // Both sides of the prefilter are exercised.
    assert!(
        filtered > 1_000 && walked > 1_000,
        "{filtered} filtered, {walked} walked"
    );
    assert!(
        too_big * 100 < policies,
        "{too_big} of {policies} policies did not fit"
    );
}
