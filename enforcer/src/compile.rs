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

use crate::policy::{Location, Policy, PortRange, Rule, RuleAction, merge_port_ranges, normalize_addr};

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
        write!(f, "rule {} ({}) at {}", self.id, self.description, self.location)
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
}

fn join(rules: &[RuleRef]) -> String {
    rules.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Compiles a policy into LPM entries.
pub fn compile(policy: &Policy) -> Result<Compiled, CompileError> {
    if policy.rules.len() >= rule_id::DEFAULT as usize {
        return Err(CompileError::TooManyRules { count: policy.rules.len(), max: rule_id::DEFAULT });
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
            let net = Ipv4Net::new(Ipv4Addr::from((addr >> 96) as u32), len - 96);
            (net.expect("IPv4 prefix length <= 32"), value)
        })
        .collect();
    let v6 = build(policy, v6_items, false)?
        .into_iter()
        .map(|(addr, len, value)| (Ipv6Net::new(Ipv6Addr::from(addr), len).expect("IPv6 prefix length <= 128"), value))
        .collect();
    Ok(Compiled { mode: policy.mode.code(), default_verdict: policy.default.code(), v4, v6 })
}

/// IPv4 addresses live in the top 32 bits of a 128-bit key, with prefix lengths plus 96, so
/// one implementation serves both families.
fn key4(addr: Ipv4Addr) -> u128 {
    (u32::from(addr) as u128) << 96
}

fn mask(len: u8) -> u128 {
    if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) }
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
        let split = parent.iter().position(|c| c.action != action::ALLOW).unwrap_or(parent.len());
        let (parent_allow, parent_block) = parent.split_at(split);
        let mut clauses: Vec<Clause> = Vec::with_capacity(MAX_CLAUSES + 1);
        merge_by_rule_id(parent_allow, &own_allow, &mut clauses);
        clauses.extend_from_slice(&own_block);
        clauses.extend_from_slice(parent_block);
        if let Some(catch_all) = clauses.iter().position(is_catch_all) {
            clauses.truncate(catch_all + 1);
        }
        if clauses.len() > MAX_CLAUSES {
            return Err(too_many_clauses(policy, addr, len, is_v4, clauses.len()));
        }
        let mut value = LpmValue { n_clauses: clauses.len() as u32, ..LpmValue::default() };
        value.clauses[..clauses.len()].copy_from_slice(&clauses);
        out.push((addr, len, value));
        stack.push(out.len() - 1);
        i = end;
    }
    Ok(out)
}

/// One clause per (merged) port range of `rule`.
fn push_clauses(out: &mut Vec<Clause>, rule: &Rule, id: u32) {
    let ranges = if rule.ports.is_empty() { vec![PortRange::ALL] } else { merge_port_ranges(&rule.ports) };
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

fn too_many_clauses(policy: &Policy, addr: u128, len: u8, is_v4: bool, clauses: usize) -> CompileError {
    let prefix = if is_v4 {
        IpNet::V4(Ipv4Net::new(Ipv4Addr::from((addr >> 96) as u32), len - 96).expect("IPv4 prefix length <= 32"))
    } else {
        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).expect("IPv6 prefix length <= 128"))
    };
    let mut covering: Vec<(usize, &Rule)> =
        policy.rules.iter().enumerate().filter(|(_, r)| r.net.contains(&prefix)).collect();
    covering.sort_by_key(|(id, r)| (std::cmp::Reverse(r.net.prefix_len()), *id));
    let rules: Vec<RuleRef> = covering
        .iter()
        .map(|(id, r)| RuleRef { id: *id as u32, description: r.describe(), location: r.location.clone() })
        .collect();
    let location = rules.first().map(|r| r.location.clone()).unwrap_or_else(|| Location {
        file: policy.source.clone(),
        line: 1,
        column: 1,
    });
    CompileError::TooManyClauses { location, prefix, clauses, max: MAX_CLAUSES, rules }
}

/// What the kernel does with the maps, in userspace: normalise the address, take the longest
/// matching prefix, and let the first matching clause decide; otherwise the default.
/// Returns (verdict code, rule id); a default verdict reports [`rule_id::DEFAULT`].
pub fn lookup(compiled: &Compiled, addr: IpAddr, port: u16, ip_protocol: u8) -> (u32, u32) {
    let value = match normalize_addr(addr) {
        IpAddr::V4(a) => (0..=32u8).rev().find_map(|len| {
            let net = Ipv4Net::new(a, len).ok()?.trunc();
            let i = compiled.v4.binary_search_by(|(n, _)| (n.network(), n.prefix_len()).cmp(&(net.network(), len))).ok()?;
            Some(&compiled.v4[i].1)
        }),
        IpAddr::V6(a) => (0..=128u8).rev().find_map(|len| {
            let net = Ipv6Net::new(a, len).ok()?.trunc();
            let i = compiled.v6.binary_search_by(|(n, _)| (n.network(), n.prefix_len()).cmp(&(net.network(), len))).ok()?;
            Some(&compiled.v6[i].1)
        }),
    };
    let class = proto::class(ip_protocol as u32);
    if let Some(value) = value {
        let n = (value.n_clauses as usize).min(MAX_CLAUSES);
        for c in &value.clauses[..n] {
            if c.port_lo <= port && port <= c.port_hi && c.protocols & class != 0 {
                let verdict = if c.action == action::ALLOW { verdict::ALLOW } else { verdict::DENY };
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
        let _ = writeln!(out, "\nFQDN rules ({}, resolved by the agent):", policy.fqdns.len());
        for f in &policy.fqdns {
            let _ = writeln!(out, "        {f}  ({})", f.location);
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
        let act = if c.action == action::ALLOW { "allow" } else { "block" };
        let ports = if c.port_lo == c.port_hi { c.port_lo.to_string() } else { format!("{}-{}", c.port_lo, c.port_hi) };
        let names: Vec<&str> = [(proto::TCP, "tcp"), (proto::UDP, "udp"), (proto::OTHER, "other")]
            .into_iter()
            .filter(|(bit, _)| c.protocols & bit != 0)
            .map(|(_, name)| name)
            .collect();
        let _ = writeln!(out, "    {:>2}. {act} rule {} ports {ports} protocols {}", i + 1, c.rule_id, names.join(","));
    }
}

#[cfg(test)]
mod tests {}
