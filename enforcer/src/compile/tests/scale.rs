//! Large policies: compile time, and the capacity check `check` and `run` share.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use enforcer_common::{
    EXACT_CLAUSES, MAX_BLOCKS_V4, MAX_EXACT_V4, MAX_EXACT_V6, MAX_PREFIXES, proto,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{assert_agree, net, policy, rule};
use crate::compile::{CapacityError, CompileError, capacity::grouped, compile, render};
use crate::policy::{
    DefaultVerdict, PortRange, Rule, RuleAction, default_policy, normalize_net, parse_policy,
};

#[test]
fn large_policies_compile_fast() {
    let mut rng = StdRng::seed_from_u64(100_000);
    let mut rules: Vec<Rule> = default_policy().rules;
    for _ in 0..100_000 {
        let len = rng.random_range(16..=32);
        let n = Ipv4Net::new(Ipv4Addr::from(rng.random::<u32>()), len)
            .unwrap()
            .trunc();
        rules.push(rule(RuleAction::Block, IpNet::V4(n), vec![], proto::ALL));
    }
    for _ in 0..10_000 {
        let len = rng.random_range(32..=128);
        let n = Ipv6Net::new(Ipv6Addr::from(rng.random::<u128>()), len)
            .unwrap()
            .trunc();
        rules.push(rule(
            RuleAction::Block,
            normalize_net(IpNet::V6(n)),
            vec![PortRange::single(443)],
            proto::TCP,
        ));
    }
    rules.push(rule(
        RuleAction::Allow,
        net("0.0.0.0/1"),
        vec![PortRange::single(443)],
        proto::TCP,
    ));
    let p = policy(DefaultVerdict::Allow, rules);
    let start = Instant::now();
    let c = compile(&p).unwrap();
    let elapsed = start.elapsed();
    eprintln!(
        "compiled {} rules into {} + {} entries in {:?}",
        p.rules.len(),
        c.v4.len(),
        c.v6.len(),
        elapsed
    );
    // One entry per distinct rule prefix, no more, no fewer.
    let distinct = |v4: bool| {
        p.rules
            .iter()
            .filter(|r| matches!(r.net, IpNet::V4(_)) == v4)
            .map(|r| r.net)
            .collect::<HashSet<_>>()
            .len()
    };
    assert_eq!(c.v6.len(), distinct(false));
    // An IPv4 prefix is an entry of the exact map or the trie, or folded into its /24's block
    // entry (then /24 or longer).
    let v4_nets: HashSet<IpNet> = p
        .rules
        .iter()
        .map(|r| r.net)
        .filter(|n| matches!(n, IpNet::V4(_)))
        .collect();
    let mut kept = 0;
    for n in &v4_nets {
        let IpNet::V4(n) = *n else { unreachable!() };
        if c.v4.find_by(|e| e.cmp(&n)).is_some() {
            kept += 1;
        } else {
            assert!(
                n.prefix_len() >= 24 && c.v4_blocks.find(n.network()).is_some(),
                "{n}"
            );
        }
    }
    assert_eq!(kept, c.v4.len());
    assert!(c.v4_blocks.len() > 40_000, "{}", c.v4_blocks.len());
    assert_eq!(c.capacity.v4.used + c.capacity.v4_exact.used, c.v4.len());
    assert_eq!(c.capacity.v4_blocks.used, c.v4_blocks.len());
    // O(n log n): 110,000 rules take well under a second in a release build; the bound leaves
    // room for a debug build on a loaded machine and still catches a quadratic walk.
    assert!(elapsed < COMPILE_BOUND, "{elapsed:?}");
    for r in p.rules.iter().step_by(5_000) {
        let addr = r.net.network();
        assert_agree(&p, &c, addr, 443, 6);
        assert_agree(&p, &c, addr, 80, 17);
    }
}

const COMPILE_BOUND: Duration = Duration::from_secs(if cfg!(debug_assertions) { 20 } else { 3 });

/// `n` distinct IPv4 /32 blocks (or IPv6 /128s), as a threat feed lists them; with `shorter`,
/// /23s (/127s) instead, which the tries hold (an IPv4 prefix of /24 or longer may be folded
/// into a block entry instead).
fn host_blocks(n: usize, v6: bool, shorter: bool) -> Vec<Rule> {
    let (len4, len6) = if shorter { (23, 127) } else { (32, 128) };
    (0..n as u128)
        .map(|i| {
            let net = if v6 {
                let a = (0x2001_0db8u128 << 96) | (i << (128 - u32::from(len6)));
                IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), len6).unwrap())
            } else {
                let a = 0x0b00_0000 + ((i as u32) << (32 - u32::from(len4)));
                IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len4).unwrap())
            };
            rule(RuleAction::Block, net, vec![], proto::ALL)
        })
        .collect()
}

#[test]
fn a_full_map_fits_and_one_more_entry_is_refused() {
    // (IPv6, trie?, capacity, what check prints, what the error names)
    let cases = [
        (false, true, MAX_PREFIXES, "IPv4 entries", "IPv4"),
        (false, false, MAX_EXACT_V4, "/32 entries", "IPv4 /32"),
        (true, true, MAX_PREFIXES, "IPv6 entries", "IPv6"),
        (true, false, MAX_EXACT_V6, "/128 entries", "IPv6 /128"),
    ];
    for (v6, trie, max, shown, family) in cases {
        let max = max as usize;
        let p = policy(DefaultVerdict::Allow, host_blocks(max, v6, trie));
        let c = compile(&p).unwrap();
        let usage = match (v6, trie) {
            (false, true) => c.capacity.v4,
            (false, false) => c.capacity.v4_exact,
            (true, true) => c.capacity.v6,
            (true, false) => c.capacity.v6_exact,
        };
        assert_eq!((usage.used, usage.available), (max, max));
        let text = render(&p, &c);
        let max_text = grouped(max);
        assert!(
            text.contains(&format!("{shown} {max_text} of {max_text}")),
            "{}",
            &text[..text.len().min(2_000)]
        );
        let p = policy(DefaultVerdict::Allow, host_blocks(max + 1, v6, trie));
        let e = compile(&p).unwrap_err();
        assert!(
            matches!(
                &e,
                CompileError::Capacity(CapacityError::Prefixes { family: f, used, available, .. })
                    if *f == family && *used == max + 1 && *available == max
            ),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "t.yaml: the policy needs {} {family} map entries, more than the {max_text} \
                 the kernel map holds; remove at least 1 {family} prefixes (adjacent prefixes \
                 may be merged into shorter ones)",
                grouped(max + 1)
            )
        );
    }
}

/// The block map takes the first blocks (by address) up to its capacity; the blocks after
/// them keep their entries in the trie, counted there, and decide the same.
#[test]
fn blocks_beyond_the_block_map_are_counted_in_the_trie() {
    let max = MAX_BLOCKS_V4 as usize;
    let rules = (0..=max as u32)
        .map(|i| {
            let a = Ipv4Addr::from(0x0b00_0000 + (i << 8) + 64);
            let n = IpNet::V4(Ipv4Net::new(a, 26).unwrap());
            rule(RuleAction::Block, n, vec![], proto::ALL)
        })
        .collect();
    let p = policy(DefaultVerdict::Allow, rules);
    let c = compile(&p).unwrap();
    assert_eq!(
        (c.capacity.v4_blocks.used, c.capacity.v4_blocks.available),
        (max, max)
    );
    assert_eq!((c.capacity.v4.used, c.v4.len()), (1, 1));
    let last = p.rules[max].net;
    assert_eq!(IpNet::V4(c.v4.net(0)), last);
    let text = render(&p, &c);
    assert!(
        text.contains("IPv4 entries 1 of 262,144, /32 entries 0 of 262,144, /24 block entries 131,072 of 131,072;"),
        "{}",
        &text[..text.len().min(2_000)]
    );
    for r in [&p.rules[0], &p.rules[max - 1], &p.rules[max]] {
        let a = r.net.network();
        assert_agree(&p, &c, a, 443, 6);
        let IpAddr::V4(v4) = a else { unreachable!() };
        assert_agree(
            &p,
            &c,
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) - 1)),
            443,
            6,
        );
    }
}

/// A full-length entry with more clauses than an exact value holds stays in the trie.
#[test]
fn a_host_entry_with_many_clauses_is_counted_in_the_trie() {
    let ports = |n: u16| (0..n).map(|i| PortRange::single(100 + 2 * i)).collect();
    let rules = vec![
        rule(
            RuleAction::Block,
            net("192.0.2.1/32"),
            ports(EXACT_CLAUSES as u16),
            proto::ALL,
        ),
        rule(
            RuleAction::Block,
            net("192.0.2.2/32"),
            ports(EXACT_CLAUSES as u16 + 1),
            proto::ALL,
        ),
        rule(
            RuleAction::Block,
            net("2001:db8::1/128"),
            vec![],
            proto::TCP,
        ),
    ];
    let c = compile(&policy(DefaultVerdict::Allow, rules)).unwrap();
    assert_eq!((c.capacity.v4.used, c.capacity.v4_exact.used), (1, 1));
    assert_eq!((c.capacity.v6.used, c.capacity.v6_exact.used), (0, 1));
}

#[test]
fn the_issue_policy_of_270000_host_blocks_is_refused_by_check() {
    // Issue 13 item 5 / issue 17: `check` used to accept what `run` then failed to load.
    let mut yaml = String::from("default: allow\nblock:\n");
    for i in 0..270_000u32 {
        let a = Ipv4Addr::from(0x0b00_0000 + i);
        yaml.push_str(&format!("  - cidr: {a}/32\n"));
    }
    // The file is refused by the pre-scan, before its YAML tree is built ...
    let e = parse_policy(&yaml, "feed.yaml").unwrap_err().to_string();
    assert!(
        e.starts_with(
            "feed.yaml:262147:5: 270,000 distinct IPv4 /32s certainly go to the exact map"
        ),
        "{e}"
    );
    // ... and the same rules by the compiler's capacity check (the one `run` makes too).
    let mut p = policy(DefaultVerdict::Allow, host_blocks(270_000, false, false));
    p.source = "feed.yaml".into();
    let e = compile(&p).unwrap_err().to_string();
    assert!(
        e.starts_with(
            "feed.yaml: the policy needs 270,000 IPv4 /32 map entries, more than the 262,144"
        ),
        "{e}"
    );
    assert!(e.contains("remove at least 7,856 IPv4 /32 prefixes"), "{e}");
}

#[test]
fn more_fqdn_rules_than_the_kernel_tables_hold_are_refused_at_the_first_extra_rule() {
    let mut yaml = String::from("allow:\n");
    for i in 0..65 {
        yaml.push_str(&format!("  - fqdn: host{i}.example.com\n"));
    }
    let p = parse_policy(&yaml, "f.yaml").unwrap();
    let e = compile(&p).unwrap_err().to_string();
    assert_eq!(e, "f.yaml:66:5: 65 fqdn rules; at most 64 are supported");
    yaml.truncate(yaml.rfind("  - fqdn").unwrap());
    let p = parse_policy(&yaml, "f.yaml").unwrap();
    assert_eq!(compile(&p).unwrap().capacity.fqdn.used, 64);
}
