//! The benchmark's policies: `default: allow` plus N random distinct IPv4 block prefixes
//! (/24../32, spread over the unicast space), compiled by the enforcer's own parser and
//! compiler, and destinations whose verdict the reference lookup confirms.
use std::{collections::HashSet, fmt::Write as _, net::Ipv4Addr};

use anyhow::{Context as _, ensure};
use enforcer::compile::{self, Compiled};
use enforcer_common::{proto, verdict};

/// Destination port of the per-call loops (UDP, so the port only feeds the clause scan).
pub const PORT: u16 = 9;

/// A small deterministic generator (splitmix64): the same seed gives the same policy.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A unicast address outside 0/8 and 127/8 (loopback stays reachable in the workload's
    /// namespace) and below 224/3 (multicast, reserved).
    pub fn unicast(&mut self) -> u32 {
        loop {
            let a = self.next_u64() as u32;
            let first = a >> 24;
            if first != 0 && first != 127 && first < 224 {
                return a;
            }
        }
    }
}

/// One benchmark policy and its destinations.
pub struct BenchPolicy {
    pub compiled: Compiled,
    /// Not covered by any block prefix: the allow path (`default: allow`).
    pub allow_dsts: Vec<Ipv4Addr>,
    /// Inside a /24–/31 block prefix: the deny path through the block map (the trie when the
    /// compiler could not fold its /24).
    pub deny_dsts: Vec<Ipv4Addr>,
    /// A blocked /32 (a feed's entry): the deny path through the exact hash map.
    pub deny_host_dsts: Vec<Ipv4Addr>,
}

/// Builds a policy with `n` block prefixes and `n_dsts` destinations of each kind.
pub fn generate(rng: &mut Rng, n: usize, n_dsts: usize) -> anyhow::Result<BenchPolicy> {
    let mut seen = HashSet::with_capacity(n);
    let mut nets = Vec::with_capacity(n);
    while nets.len() < n {
        let len = 24 + rng.below(9) as u32;
        let addr = rng.unicast() & (u32::MAX << (32 - len));
        if seen.insert((addr, len)) {
            nets.push((addr, len));
        }
    }
    // Both deny paths need their prefixes: at least one /32 and one shorter prefix.
    if !nets.iter().any(|&(_, len)| len == 32) {
        let last = nets.len() - 1;
        nets[last].1 = 32;
    }
    if nets.iter().all(|&(_, len)| len == 32) {
        nets[0] = (nets[0].0 & 0xffff_ff00, 24);
    }
    let mut yaml = String::with_capacity(n * 28 + 64);
    yaml.push_str("mode: enforce\ndefault: allow\nblock:\n");
    for &(addr, len) in &nets {
        let _ = writeln!(yaml, "  - cidr: {}/{len}", Ipv4Addr::from(addr));
    }
    let name = format!("<bench {n} prefixes>");
    let policy =
        enforcer::policy::parse_policy(&yaml, &name).with_context(|| format!("parsing {name}"))?;
    let compiled = compile::compile(&policy).with_context(|| format!("compiling {name}"))?;

    let verdict_of = |a: Ipv4Addr| compile::lookup(&compiled, a.into(), PORT, proto::IPPROTO_UDP).0;
    let mut allow_dsts = Vec::with_capacity(n_dsts);
    while allow_dsts.len() < n_dsts {
        let a = Ipv4Addr::from(rng.unicast());
        if verdict_of(a) == verdict::ALLOW {
            allow_dsts.push(a);
        }
    }
    let (hosts, shorter): (Vec<_>, Vec<_>) = nets.iter().partition(|&&(_, len)| len == 32);
    let mut pick = |from: &[(u32, u32)]| -> anyhow::Result<Vec<Ipv4Addr>> {
        let mut dsts = Vec::with_capacity(n_dsts);
        for _ in 0..n_dsts {
            let (addr, len) = from[rng.below(from.len() as u64) as usize];
            let host_bits = if len == 32 {
                0
            } else {
                rng.next_u64() as u32 & (u32::MAX >> len)
            };
            let a = Ipv4Addr::from(addr | host_bits);
            ensure!(
                verdict_of(a) == verdict::DENY,
                "{a} inside a block prefix is not denied"
            );
            dsts.push(a);
        }
        Ok(dsts)
    };
    let deny_dsts = pick(&shorter)?;
    let deny_host_dsts = pick(&hosts)?;
    Ok(BenchPolicy {
        compiled,
        allow_dsts,
        deny_dsts,
        deny_host_dsts,
    })
}
