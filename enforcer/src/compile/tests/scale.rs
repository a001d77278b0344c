//! Large policies: compile time, and the capacity check `check` and `run` share.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use enforcer_common::{MAX_PREFIXES, proto};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{assert_agree, net, policy, rule};
use crate::compile::{CapacityError, CompileError, compile, render};
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
    assert_eq!((c.v4.len(), c.v6.len()), (distinct(true), distinct(false)));
    assert!(c.v4.len() > 90_000);
    assert_eq!(c.capacity.v4.used, c.v4.len());
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

/// `n` distinct IPv4 /32 blocks (or IPv6 /128s), as a threat feed lists them.
fn host_blocks(n: usize, v6: bool) -> Vec<Rule> {
    (0..n as u128)
        .map(|i| {
            let net = if v6 {
                IpNet::V6(Ipv6Net::new(Ipv6Addr::from((0x2001_0db8u128 << 96) | i), 128).unwrap())
            } else {
                IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 + i as u32), 32).unwrap())
            };
            rule(RuleAction::Block, net, vec![], proto::ALL)
        })
        .collect()
}

#[test]
fn a_full_map_fits_and_one_more_entry_is_refused() {
    let max = MAX_PREFIXES as usize;
    for v6 in [false, true] {
        let p = policy(DefaultVerdict::Allow, host_blocks(max, v6));
        let c = compile(&p).unwrap();
        let usage = if v6 { c.capacity.v6 } else { c.capacity.v4 };
        assert_eq!((usage.used, usage.available), (max, max));
        let text = render(&p, &c);
        let family = if v6 { "IPv6" } else { "IPv4" };
        assert!(
            text.contains(&format!("{family} entries 262,144 of 262,144")),
            "{}",
            &text[..text.len().min(2_000)]
        );
        let p = policy(DefaultVerdict::Allow, host_blocks(max + 1, v6));
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
                "t.yaml: the policy needs 262,145 {family} map entries, more than the 262,144 \
                 the kernel map holds; remove at least 1 {family} prefixes (adjacent prefixes \
                 may be merged into shorter ones)"
            )
        );
    }
}

#[test]
fn the_issue_policy_of_270000_host_blocks_is_refused_by_check() {
    // Issue 13 item 5 / issue 17: `check` used to accept what `run` then failed to load.
    let mut yaml = String::from("default: allow\nblock:\n");
    for i in 0..270_000u32 {
        let a = Ipv4Addr::from(0x0b00_0000 + i);
        yaml.push_str(&format!("  - cidr: {a}/32\n"));
    }
    let p = parse_policy(&yaml, "feed.yaml").unwrap();
    let e = compile(&p).unwrap_err().to_string();
    assert!(
        e.starts_with(
            "feed.yaml: the policy needs 270,000 IPv4 map entries, more than the 262,144"
        ),
        "{e}"
    );
    assert!(e.contains("remove at least 7,856 IPv4 prefixes"), "{e}");
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
