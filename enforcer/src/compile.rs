//! Policy → LPM map entries.
//!
//! The kernel does one longest-prefix lookup per call and walks that entry's clauses in order,
//! so the entry of every distinct rule prefix `P` carries the clauses of every rule whose CIDR
//! contains `P` (rule CIDRs that contain one address are always nested):
//!
//! - every ALLOW clause first, by rule id (the first matching allow rule decides);
//! - then BLOCK clauses from the most specific rule prefix to the least, ties by rule id.
//!
//! Prefixes are sorted by (address, length), which visits every prefix after the prefixes
//! containing it; a stack of the enclosing entries gives each prefix its parent's clause list,
//! so an entry costs O(own rules + [`MAX_CLAUSES`]) and the whole compile O(n log n).
//! Clauses after a catch-all clause (every port, every protocol) can never match and are left
//! out.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use enforcer_common::{Clause, LpmValue, MAX_CLAUSES, action, proto, rule_id, verdict};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::policy::{
    Location, Policy, PortRange, Rule, RuleAction, merge_port_ranges, normalize_addr,
};

/// What goes into the kernel maps for one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// [`enforcer_common::mode`] code.
    pub mode: u32,
    /// [`enforcer_common::verdict`] code used when no clause matches.
    pub default_verdict: u32,
    /// IPv4 entries, sorted by (network address, prefix length).
    pub v4: Vec<(Ipv4Net, LpmValue)>,
    /// IPv6 entries, sorted by (network address, prefix length).
    pub v6: Vec<(Ipv6Net, LpmValue)>,
    /// The `fqdn` rules: allowlisted names and per-rule clauses (step 4).
    pub fqdn: crate::fqdn::FqdnTables,
}

/// A rule named in a [`CompileError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    pub id: u32,
    pub description: String,
    pub location: Location,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule {} ({}) at {}",
            self.id, self.description, self.location
        )
    }
}

/// Why a valid policy does not fit the kernel maps.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(
        "{location}: addresses in {prefix} need {clauses} clauses, more than the {max} a map entry \
         holds; rules covering {prefix}: {}",
        join(rules)
    )]
    TooManyClauses {
        /// Where the most specific rule covering the prefix is.
        location: Location,
        prefix: IpNet,
        clauses: usize,
        max: usize,
        /// Every rule whose CIDR contains the prefix, most specific first.
        rules: Vec<RuleRef>,
    },
    #[error("{count} rules; rule ids must stay below {max}")]
    TooManyRules { count: usize, max: u32 },
    #[error(transparent)]
    Fqdn(#[from] crate::fqdn::FqdnCompileError),
}

fn join(rules: &[RuleRef]) -> String {
    rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Compiles a policy into LPM entries.
pub fn compile(policy: &Policy) -> Result<Compiled, CompileError> {
    if policy.rules.len() + policy.fqdns.len() >= rule_id::DEFAULT as usize {
        return Err(CompileError::TooManyRules {
            count: policy.rules.len(),
            max: rule_id::DEFAULT,
        });
    }
    let mut v4_items = Vec::new();
    let mut v6_items = Vec::new();
    for (id, rule) in policy.rules.iter().enumerate() {
        // Checked above: every index fits below rule_id::DEFAULT.
        let id = id as u32;
        match rule.net {
            IpNet::V4(net) => v4_items.push((key4(net.network()), net.prefix_len() + 96, id)),
            IpNet::V6(net) => v6_items.push((u128::from(net.network()), net.prefix_len(), id)),
        }
    }
    let v4 = build(policy, v4_items, true)?
        .into_iter()
        .map(|(addr, len, value)| {
            let net = Ipv4Net::new(Ipv4Addr::from(addr as u32), len - 96);
            (net.expect("IPv4 prefix length <= 32"), value)
        })
        .collect();
    let v6 = build(policy, v6_items, false)?
        .into_iter()
        .map(|(addr, len, value)| {
            (
                Ipv6Net::new(Ipv6Addr::from(addr), len).expect("IPv6 prefix length <= 128"),
                value,
            )
        })
        .collect();
    Ok(Compiled {
        mode: policy.mode.code(),
        default_verdict: policy.default.code(),
        v4,
        v6,
        fqdn: crate::fqdn::tables::compile(policy)?,
    })
}

/// IPv4 addresses are keyed like `::a.b.c.d/(96 + len)`, so one implementation serves both
/// families.
fn key4(addr: Ipv4Addr) -> u128 {
    u32::from(addr) as u128
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// Builds the entries of one family from (address key, prefix length, rule id) items.
fn build(
    policy: &Policy,
    mut items: Vec<(u128, u8, u32)>,
    is_v4: bool,
) -> Result<Vec<(u128, u8, LpmValue)>, CompileError> {
    items.sort_unstable();
    let mut out: Vec<(u128, u8, LpmValue)> = Vec::new();
    // Indexes into `out` of the entries enclosing the current one, least specific first.
    let mut stack: Vec<usize> = Vec::new();
    let mut own_allow = Vec::new();
    let mut own_block = Vec::new();
    let mut clauses: Vec<Clause> = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let (addr, len, _) = items[i];
        let mut end = i;
        while end < items.len() && items[end].0 == addr && items[end].1 == len {
            end += 1;
        }
        while let Some(&top) = stack.last() {
            let (top_addr, top_len, _) = out[top];
            if top_len <= len && (addr ^ top_addr) & mask(top_len) == 0 {
                break;
            }
            stack.pop();
        }
        own_allow.clear();
        own_block.clear();
        for &(_, _, id) in &items[i..end] {
            let rule = &policy.rules[id as usize];
            match rule.action {
                RuleAction::Allow => push_clauses(&mut own_allow, rule, id),
                RuleAction::Block => push_clauses(&mut own_block, rule, id),
            }
        }
        let parent: &[Clause] = match stack.last() {
            Some(&top) => {
                let value = &out[top].2;
                &value.clauses[..value.n_clauses as usize]
            }
            None => &[],
        };
        let split = parent
            .iter()
            .position(|c| c.action != action::ALLOW)
            .unwrap_or(parent.len());
        let (parent_allow, parent_block) = parent.split_at(split);
        clauses.clear();
        merge_by_rule_id(parent_allow, &own_allow, &mut clauses);
        clauses.extend_from_slice(&own_block);
        clauses.extend_from_slice(parent_block);
        if let Some(catch_all) = clauses.iter().position(is_catch_all) {
            clauses.truncate(catch_all + 1);
        }
        if clauses.len() > MAX_CLAUSES {
            return Err(too_many_clauses(policy, addr, len, is_v4, clauses.len()));
        }
        let mut value = LpmValue {
            n_clauses: clauses.len() as u32,
            ..LpmValue::default()
        };
        value.clauses[..clauses.len()].copy_from_slice(&clauses);
        out.push((addr, len, value));
        stack.push(out.len() - 1);
        i = end;
    }
    Ok(out)
}

/// One clause per (merged) port range of `rule`.
fn push_clauses(out: &mut Vec<Clause>, rule: &Rule, id: u32) {
    let merged;
    let ranges: &[PortRange] = if rule.ports.is_empty() {
        &[PortRange::ALL]
    } else if rule
        .ports
        .windows(2)
        .all(|w| w[0].hi < w[1].lo.saturating_sub(1))
    {
        // Already sorted and merged, as the parser leaves them.
        &rule.ports
    } else {
        merged = merge_port_ranges(&rule.ports);
        &merged
    };
    for r in ranges {
        out.push(Clause {
            rule_id: id,
            port_lo: r.lo,
            port_hi: r.hi,
            protocols: rule.protocols,
            action: rule.action.code(),
            _pad: [0; 2],
        });
    }
}

/// Merges two clause lists sorted by rule id (no id is in both), keeping each rule's clauses
/// together.
fn merge_by_rule_id(a: &[Clause], b: &[Clause], out: &mut Vec<Clause>) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].rule_id <= b[j].rule_id {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
}

fn is_catch_all(c: &Clause) -> bool {
    c.port_lo == 0 && c.port_hi == u16::MAX && c.protocols & proto::ALL == proto::ALL
}

fn too_many_clauses(
    policy: &Policy,
    addr: u128,
    len: u8,
    is_v4: bool,
    clauses: usize,
) -> CompileError {
    let prefix = if is_v4 {
        IpNet::V4(
            Ipv4Net::new(Ipv4Addr::from(addr as u32), len - 96).expect("IPv4 prefix length <= 32"),
        )
    } else {
        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).expect("IPv6 prefix length <= 128"))
    };
    let mut covering: Vec<(usize, &Rule)> = policy
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.net.contains(&prefix))
        .collect();
    covering.sort_by_key(|(id, r)| (std::cmp::Reverse(r.net.prefix_len()), *id));
    let rules: Vec<RuleRef> = covering
        .iter()
        .map(|(id, r)| RuleRef {
            id: *id as u32,
            description: r.describe(),
            location: r.location.clone(),
        })
        .collect();
    let location = rules
        .first()
        .map(|r| r.location.clone())
        .unwrap_or_else(|| Location {
            file: policy.source.clone(),
            line: 1,
            column: 1,
        });
    CompileError::TooManyClauses {
        location,
        prefix,
        clauses,
        max: MAX_CLAUSES,
        rules,
    }
}

/// What the kernel does with the maps, in userspace: normalise the address, take the longest
/// matching prefix, and let the first matching clause decide; otherwise the default.
/// Returns (verdict code, rule id); a default verdict reports [`rule_id::DEFAULT`].
pub fn lookup(compiled: &Compiled, addr: IpAddr, port: u16, ip_protocol: u8) -> (u32, u32) {
    let value = match normalize_addr(addr) {
        IpAddr::V4(a) => (0..=32u8).rev().find_map(|len| {
            let net = Ipv4Net::new(a, len).ok()?.trunc();
            let i = compiled
                .v4
                .binary_search_by(|(n, _)| (n.network(), n.prefix_len()).cmp(&(net.network(), len)))
                .ok()?;
            Some(&compiled.v4[i].1)
        }),
        IpAddr::V6(a) => (0..=128u8).rev().find_map(|len| {
            let net = Ipv6Net::new(a, len).ok()?.trunc();
            let i = compiled
                .v6
                .binary_search_by(|(n, _)| (n.network(), n.prefix_len()).cmp(&(net.network(), len)))
                .ok()?;
            Some(&compiled.v6[i].1)
        }),
    };
    let class = proto::class(ip_protocol as u32);
    if let Some(value) = value {
        let n = (value.n_clauses as usize).min(MAX_CLAUSES);
        for c in &value.clauses[..n] {
            if c.port_lo <= port && port <= c.port_hi && c.protocols & class != 0 {
                let verdict = if c.action == action::ALLOW {
                    verdict::ALLOW
                } else {
                    verdict::DENY
                };
                return (verdict, c.rule_id);
            }
        }
    }
    (compiled.default_verdict, rule_id::DEFAULT)
}

/// `enforcer check`'s listing: the rules with ids and locations, then the map entries.
pub fn render(policy: &Policy, compiled: &Compiled) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "policy {}: mode {}, default {}",
        policy.source,
        policy.mode.as_str(),
        policy.default.as_str()
    );
    let _ = writeln!(out, "\nrules ({}):", policy.rules.len());
    for (id, rule) in policy.rules.iter().enumerate() {
        let _ = writeln!(out, "  {id:>4}  {rule}  ({})", rule.location);
    }
    if !policy.fqdns.is_empty() {
        let _ = writeln!(
            out,
            "\nFQDN rules ({}; learned from the target's DNS answers and resolved by the agent):",
            policy.fqdns.len()
        );
        let servers = if policy.dns.servers.is_empty() {
            "system resolver configuration".to_owned()
        } else {
            let list: Vec<String> = policy.dns.servers.iter().map(ToString::to_string).collect();
            list.join(", ")
        };
        let _ = writeln!(
            out,
            "  dns: servers {servers}; grace period {}s; max {} addresses per name, {} in all",
            policy.dns.grace_period.as_secs(),
            policy.dns.max_addresses_per_name,
            policy.dns.max_addresses
        );
        for (slot, f) in policy.fqdns.iter().enumerate() {
            let id = crate::fqdn::tables::rule_id(policy, slot);
            let _ = writeln!(out, "  {id:>4}  {f}  ({})", f.location);
        }
    }
    let am = policy.alertmanager;
    if am.allow_own_dns || am.allow_cluster_peers {
        let _ = writeln!(
            out,
            "\nautomatic rules (`alertmanager:`), added by `enforcer run` for every running \
             Alertmanager target:"
        );
        if am.allow_own_dns {
            let _ = writeln!(
                out,
                "        allow auto:resolv.conf <each nameserver of its resolv.conf> ports 53 \
                 protocols tcp,udp (pid N)"
            );
        }
        if am.allow_cluster_peers {
            let _ = writeln!(
                out,
                "        allow auto:cluster.peer <each literal --cluster.peer address> ports \
                 <its port> protocols tcp,udp (pid N)"
            );
        }
    }
    let _ = writeln!(out, "\nIPv4 map entries ({}):", compiled.v4.len());
    for (net, value) in &compiled.v4 {
        render_entry(&mut out, &IpNet::V4(*net), value);
    }
    let _ = writeln!(out, "\nIPv6 map entries ({}):", compiled.v6.len());
    for (net, value) in &compiled.v6 {
        render_entry(&mut out, &IpNet::V6(*net), value);
    }
    out
}

fn render_entry(out: &mut String, net: &IpNet, value: &LpmValue) {
    let _ = writeln!(out, "  {net}");
    let n = (value.n_clauses as usize).min(MAX_CLAUSES);
    for (i, c) in value.clauses[..n].iter().enumerate() {
        let act = if c.action == action::ALLOW {
            "allow"
        } else {
            "block"
        };
        let ports = if c.port_lo == c.port_hi {
            c.port_lo.to_string()
        } else {
            format!("{}-{}", c.port_lo, c.port_hi)
        };
        let names: Vec<&str> = [
            (proto::TCP, "tcp"),
            (proto::UDP, "udp"),
            (proto::OTHER, "other"),
        ]
        .into_iter()
        .filter(|(bit, _)| c.protocols & bit != 0)
        .map(|(_, name)| name)
        .collect();
        let _ = writeln!(
            out,
            "    {:>2}. {act} rule {} ports {ports} protocols {}",
            i + 1,
            c.rule_id,
            names.join(",")
        );
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Instant;

    use enforcer_common::{action, proto, rule_id, verdict};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::policy::{
        DefaultVerdict, Mode, RuleSource, default_policy, normalize_net, parse_policy,
    };
    use crate::reference::evaluate;

    fn location(line: usize) -> Location {
        Location {
            file: "t.yaml".into(),
            line,
            column: 5,
        }
    }

    fn rule(action: RuleAction, net: IpNet, ports: Vec<PortRange>, protocols: u8) -> Rule {
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

    fn policy(default: DefaultVerdict, mut rules: Vec<Rule>) -> Policy {
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
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// The compiled maps and the reference evaluator agree on one destination.
    fn assert_agree(p: &Policy, c: &Compiled, addr: IpAddr, port: u16, ip_protocol: u8) {
        let expected = evaluate(p, addr, port, ip_protocol);
        let got = lookup(c, addr, port, ip_protocol);
        assert_eq!(
            got,
            (expected.verdict(), expected.rule_id()),
            "destination {addr} port {port} protocol {ip_protocol}: reference says {expected:?}\n{}",
            render(p, c)
        );
    }

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
                pairs += 1;
            }
        }
        assert!(
            too_big * 100 < policies,
            "{too_big} of {policies} policies did not fit"
        );
    }

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
        eprintln!(
            "compiled {} rules into {} + {} entries in {:?}",
            p.rules.len(),
            c.v4.len(),
            c.v6.len(),
            start.elapsed()
        );
        assert!(c.v4.len() > 90_000);
        for r in p.rules.iter().step_by(5_000) {
            let addr = r.net.network();
            assert_agree(&p, &c, addr, 443, 6);
            assert_agree(&p, &c, addr, 80, 17);
        }
    }
}
