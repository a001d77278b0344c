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
//!
//! [`Compiled`] owns every step between a validated policy and the kernel maps: the LPM entries
//! ([`build`]), the IPv4 /24 prefilter ([`prefilter`]), the IPv4 block entries that take the
//! /24–/31 entries out of the trie ([`blocks`]), the FQDN tables, and the capacity check
//! ([`capacity`]) that `enforcer check` and `enforcer run` share. It is computed once and carried
//! to the loader, which only copies it into the maps.

pub mod api;
pub mod blocks;
mod build;
pub mod capacity;
mod entries;
mod json;
pub mod prefilter;
mod render;
#[cfg(test)]
mod tests;

pub use api::CompiledApi;
pub use blocks::Blocks;
pub use capacity::{Capacity, CapacityError, FamilyEntries, Usage};
pub use entries::Entries;
pub use json::{refused_json, render_json};
pub use prefilter::V4Prefilter;
pub use render::render;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use enforcer_common::{Clause, MAX_BLOCKS_V4, action, is_exact, proto, rule_id, verdict};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::policy::{Location, Policy, Rule, normalize_addr};

/// What goes into the kernel maps for one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// [`enforcer_common::mode`] code.
    pub mode: u32,
    /// [`enforcer_common::verdict`] code used when no clause matches.
    pub default_verdict: u32,
    /// IPv4 entries of the exact map and the trie, sorted by (network address, prefix length).
    pub v4: Entries<Ipv4Net>,
    /// IPv4 block entries: the /24 blocks whose entries left `v4` ([`blocks`]).
    pub v4_blocks: Blocks,
    /// IPv6 entries, sorted by (network address, prefix length).
    pub v6: Entries<Ipv6Net>,
    /// The IPv4 prefilter: every /24 block that an entry of `v4` touches.
    pub v4_filter: V4Prefilter,
    /// Entries used and available per map, checked against the kernel maps' sizes.
    pub capacity: Capacity,
    /// The `fqdn` rules: allowlisted names and per-rule clauses (step 4).
    pub fqdn: crate::fqdn::FqdnTables,
    /// The `api:` section: the ingress direction of the same maps.
    pub api: Option<CompiledApi>,
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
    Capacity(#[from] CapacityError),
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
    let (mut v4, v6) = entries(&policy.rules, &policy.source)?;
    // The prefilter marks every block an entry touches, folded or not.
    let v4_filter = V4Prefilter::of((0..v4.len()).map(|i| v4.net(i)));
    let rules = &policy.rules;
    let v4_blocks = blocks::fold(
        &mut v4,
        |id| rules[id as usize].net.prefix_len(),
        MAX_BLOCKS_V4 as usize,
    );
    let budget = MAX_BLOCKS_V4 as usize - v4_blocks.len();
    let api = policy
        .api
        .as_ref()
        .map(|a| api::compile(a, budget))
        .transpose()?;
    let api_v4 = api.as_ref().map(|a| &a.v4);
    let api_v6 = api.as_ref().map(|a| &a.v6);
    let mut v4_entries = family_entries([Some(&v4), api_v4], 32, |n| n.prefix_len());
    v4_entries.blocks = v4_blocks.len() + api.as_ref().map_or(0, |a| a.v4_blocks.len());
    let capacity = Capacity::of(
        v4_entries,
        family_entries([Some(&v6), api_v6], 128, |n| n.prefix_len()),
        policy,
    );
    capacity.check(policy)?;
    Ok(Compiled {
        mode: policy.mode.code(),
        default_verdict: policy.default.code(),
        v4_filter,
        v4,
        v4_blocks,
        v6,
        capacity,
        fqdn: crate::fqdn::tables::compile(policy)?,
        api,
    })
}

/// How many of one family's entries (both directions) go to the trie and how many to the
/// exact hash map: the rule the kernel writer follows ([`enforcer_common::is_exact`]).
fn family_entries<N: Copy>(
    entries: [Option<&Entries<N>>; 2],
    full_len: u8,
    len: impl Fn(N) -> u8,
) -> FamilyEntries {
    let mut out = FamilyEntries::default();
    for e in entries.into_iter().flatten() {
        for i in 0..e.len() {
            if is_exact(len(e.net(i)), full_len, e.clauses(i).len()) {
                out.exact += 1;
            } else {
                out.trie += 1;
            }
        }
    }
    out
}

/// The LPM entries of one direction's rules (rule id = index into `rules`).
type Directed = (Entries<Ipv4Net>, Entries<Ipv6Net>);

fn entries(rules: &[Rule], source: &str) -> Result<Directed, CompileError> {
    let mut v4_items = Vec::new();
    let mut v6_items = Vec::new();
    for (id, rule) in rules.iter().enumerate() {
        // Checked by the callers: every index fits below rule_id::DEFAULT.
        let id = id as u32;
        match rule.net {
            IpNet::V4(net) => v4_items.push((key4(net.network()), net.prefix_len() + 96, id)),
            IpNet::V6(net) => v6_items.push((u128::from(net.network()), net.prefix_len(), id)),
        }
    }
    let v4 = build::build(rules, source, v4_items, true)?.map_nets(|(addr, len)| {
        Ipv4Net::new(Ipv4Addr::from(addr as u32), len - 96).expect("IPv4 prefix length <= 32")
    });
    let v6 = build::build(rules, source, v6_items, false)?.map_nets(|(addr, len)| {
        Ipv6Net::new(Ipv6Addr::from(addr), len).expect("IPv6 prefix length <= 128")
    });
    Ok((v4, v6))
}

/// IPv4 addresses are keyed like `::a.b.c.d/(96 + len)`, so one implementation serves both
/// families.
fn key4(addr: Ipv4Addr) -> u128 {
    u32::from(addr) as u128
}

/// What the kernel does with the maps, in userspace: normalise the address, skip the lookups
/// for an IPv4 address whose /24 block the prefilter does not mark, find the clause
/// ([`access`]), and let it decide; otherwise the default. Returns (verdict code, rule id); a
/// default verdict reports [`rule_id::DEFAULT`].
pub fn lookup(compiled: &Compiled, addr: IpAddr, port: u16, ip_protocol: u8) -> (u32, u32) {
    let class = proto::class(u32::from(ip_protocol));
    let clause = match normalize_addr(addr) {
        IpAddr::V4(a) if !compiled.v4_filter.covers(a) => None,
        addr => access(
            (&compiled.v4, &compiled.v4_blocks, &compiled.v6),
            addr,
            port,
            class,
        ),
    };
    match clause {
        Some(c) if c.action == action::ALLOW => (verdict::ALLOW, c.rule_id),
        Some(c) => (verdict::DENY, c.rule_id),
        None => (compiled.default_verdict, rule_id::DEFAULT),
    }
}

/// One direction's maps as the agent keeps them: IPv4 exact and trie entries, IPv4 blocks,
/// IPv6 exact and trie entries.
type Maps<'a> = (&'a Entries<Ipv4Net>, &'a Blocks, &'a Entries<Ipv6Net>);

/// The kernel's `can_access` in userspace, map by map, with the kernel's own clause scans
/// ([`enforcer_common::ClauseList::first_match`], [`enforcer_common::BlockValue::first_match_host`]):
/// the exact entry of a normalised address, else (IPv4) its block's entry, else the trie's
/// longest prefix.
fn access((v4, blocks, v6): Maps<'_>, addr: IpAddr, port: u16, class: u8) -> Option<Clause> {
    match addr {
        IpAddr::V4(a) => {
            let at = |len: u8| {
                let net = Ipv4Net::new(a, len).ok()?.trunc();
                v4.find_by(|n| (n.network(), n.prefix_len()).cmp(&(net.network(), len)))
            };
            if let Some(i) = at(32).filter(|&i| is_exact(32, 32, v4.clauses(i).len())) {
                return v4.value(i).first_match(port, class).copied();
            }
            if let Some(b) = blocks.find(a) {
                return blocks
                    .value(b)
                    .first_match_host(a.octets()[3], port, class)
                    .copied();
            }
            let i = (0..=32u8).rev().find_map(at)?;
            v4.value(i).first_match(port, class).copied()
        }
        IpAddr::V6(a) => {
            let i = (0..=128u8).rev().find_map(|len| {
                let net = Ipv6Net::new(a, len).ok()?.trunc();
                v6.find_by(|n| (n.network(), n.prefix_len()).cmp(&(net.network(), len)))
            })?;
            v6.value(i).first_match(port, class).copied()
        }
    }
}
