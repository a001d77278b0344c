//! The `api:` section → the ingress direction of the rule maps and the guard's configuration.
//!
//! An `allow` CIDR becomes an ALLOW clause (every port, TCP) on the entries of the ingress
//! direction, built by the same code as the egress entries; a peer no entry allows gets the
//! section's default (refused when there is an `allow` list). The kernel consults the ingress
//! entries only for a SYN to a guarded port of a target.

use std::net::IpAddr;

use enforcer_common::{action, api::ApiConfig, proto, rule_id, verdict};
use ipnet::{Ipv4Net, Ipv6Net};

use super::{Blocks, CompileError, access, blocks};
use crate::policy::{api::ApiGuard, normalize_addr};

/// What the kernel holds for the `api:` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledApi {
    /// [`enforcer_common::mode`] code.
    pub mode: u32,
    /// [`enforcer_common::verdict`] code for a peer no rule allows.
    pub default_verdict: u32,
    /// The section's `ports`; empty means each target's `--web.listen-address` port, which
    /// the agent fills in ([`CompiledApi::config`] takes the ports to guard).
    pub ports: Vec<u16>,
    /// Ingress entries, sorted by (network address, prefix length); rule id = index into the
    /// section's `allow` list.
    pub v4: super::Entries<Ipv4Net>,
    /// Ingress IPv4 block entries ([`blocks`]).
    pub v4_blocks: Blocks,
    pub v6: super::Entries<Ipv6Net>,
}

/// Compiles the section, with at most `block_budget` block entries (what egress left of the
/// shared block map).
pub(super) fn compile(api: &ApiGuard, block_budget: usize) -> Result<CompiledApi, CompileError> {
    let rules = api.rules();
    if rules.len() >= rule_id::DEFAULT as usize {
        return Err(CompileError::TooManyRules {
            count: rules.len(),
            max: rule_id::DEFAULT,
        });
    }
    let source = &api.location.file;
    let (mut v4, v6) = super::entries(rules, source)?;
    let v4_blocks = blocks::fold(
        &mut v4,
        |id| rules[id as usize].net.prefix_len(),
        block_budget,
    );
    Ok(CompiledApi {
        mode: api.mode.code(),
        default_verdict: api.default_verdict().code(),
        ports: api.ports.clone(),
        v4,
        v4_blocks,
        v6,
    })
}

impl CompiledApi {
    /// The kernel's configuration for `ports` (the section's own, or the targets' listening
    /// ports when it names none); at most [`enforcer_common::api::MAX_PORTS`] are kept.
    pub fn config(&self, ports: &[u16], generation: u32) -> ApiConfig {
        let mut c = ApiConfig {
            mode: self.mode,
            default_verdict: self.default_verdict,
            generation,
            ..ApiConfig::default()
        };
        let mut sorted = ports.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        for (slot, port) in c.ports.iter_mut().zip(&sorted) {
            *slot = *port;
        }
        c.n_ports = sorted.len().min(c.ports.len()) as u32;
        c
    }

    /// What the kernel decides for a SYN from `peer`, in userspace: (verdict code, rule id),
    /// [`rule_id::DEFAULT`] when no rule matched.
    pub fn lookup(&self, peer: IpAddr) -> (u32, u32) {
        let maps = (&self.v4, &self.v4_blocks, &self.v6);
        match access(maps, normalize_addr(peer), 0, proto::TCP) {
            Some(c) if c.action == action::ALLOW => (verdict::ALLOW, c.rule_id),
            Some(c) => (verdict::DENY, c.rule_id),
            None => (self.default_verdict, rule_id::DEFAULT),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use rand::{Rng, SeedableRng, rngs::StdRng};

    use crate::{
        compile::compile,
        policy::parse_policy,
        reference::{Decision, evaluate_ingress},
    };

    fn api_policy(allow: &[String], audit: bool) -> String {
        let mut y = String::from("default: allow\nblock:\n  - preset: cloud-metadata\napi:\n");
        if audit {
            y += "  mode: audit\n";
        }
        y += "  ports: [9093]\n";
        if !allow.is_empty() {
            y += "  allow:\n";
            for a in allow {
                y += &format!("    - cidr: {a}\n");
            }
        }
        y
    }

    fn random_peer(rng: &mut StdRng) -> IpAddr {
        match rng.random_range(0..4) {
            0 => IpAddr::V4(Ipv4Addr::new(127, 0, 0, rng.random_range(0..4))),
            1 => IpAddr::V4(Ipv4Addr::new(10, 244, rng.random_range(2..5), rng.random())),
            2 => IpAddr::V6(Ipv4Addr::new(127, 0, 0, rng.random_range(0..4)).to_ipv6_mapped()),
            _ => IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, rng.random_range(0..3))),
        }
    }

    /// The ingress entries the compiler writes give the reference evaluator's verdict for
    /// every peer: nested, overlapping and mapped-address allow lists, with and without a list.
    #[test]
    fn ingress_entries_agree_with_the_reference() {
        let cidrs = [
            "127.0.0.1/32",
            "127.0.0.0/30",
            "10.244.3.0/24",
            "10.244.0.0/16",
            "::1/128",
            "::/127",
            "::ffff:127.0.0.2/128",
        ];
        let mut rng = StdRng::seed_from_u64(14);
        let mut refused = 0;
        for case in 0..300 {
            let n = rng.random_range(0..4);
            let allow: Vec<String> = (0..n)
                .map(|_| cidrs[rng.random_range(0..cidrs.len())].to_owned())
                .collect();
            let yaml = api_policy(&allow, case % 3 == 0);
            let policy = parse_policy(&yaml, "api.yaml").unwrap();
            let compiled = compile(&policy).unwrap();
            let api = compiled.api.as_ref().expect("api section compiled");
            for _ in 0..40 {
                let peer = random_peer(&mut rng);
                let want = evaluate_ingress(&policy, peer).unwrap();
                let got = api.lookup(peer);
                assert_eq!(got, (want.verdict(), want.rule_id()), "{peer}\n{yaml}");
                refused += u32::from(matches!(want, Decision::Deny { .. }));
            }
        }
        assert!(refused > 1000, "{refused} refusals only");
    }

    #[test]
    fn the_egress_entries_do_not_change_with_an_api_section() {
        let plain = parse_policy("default: allow\nblock:\n  - cidr: 10.0.0.0/8\n", "a").unwrap();
        let with_api = parse_policy(
            "default: allow\nblock:\n  - cidr: 10.0.0.0/8\napi:\n  allow:\n    - cidr: 10.0.0.0/8\n",
            "a",
        )
        .unwrap();
        let (a, b) = (compile(&plain).unwrap(), compile(&with_api).unwrap());
        assert_eq!((&a.v4, &a.v6), (&b.v4, &b.v6));
        assert!(a.api.is_none());
        let api = b.api.unwrap();
        assert_eq!(api.v4.len(), 1);
        assert!(api.ports.is_empty(), "no ports: the targets' listen ports");
        let c = api.config(&[9093, 9093, 8080], 7);
        assert_eq!(
            (c.n_ports, &c.ports[..2], c.generation),
            (2, &[8080, 9093][..], 7)
        );
    }
}
