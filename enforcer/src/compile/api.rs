//! The `api:` section → the ingress direction of the rule maps and the guard's configuration.
//!
//! An `allow` CIDR becomes an ALLOW clause (port [`surface::WEB`], TCP) on the entries of the
//! ingress direction, a `cluster_allow` CIDR one on port [`surface::CLUSTER`] (TCP and UDP),
//! built by the same code as the egress entries; a web peer no entry allows gets the section's
//! default (refused when there is an `allow` list), a cluster peer is refused unless it is one
//! of the receiving target's own `--cluster.peer`s. The kernel consults the ingress entries
//! only for a SYN to a guarded port of a target, and for a datagram to a cluster port.

use std::net::IpAddr;

use enforcer_common::{
    action,
    api::{ApiConfig, surface},
    rule_id, verdict,
};
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
    /// The section's `cluster_ports`; empty means each target's `--cluster.listen-address`
    /// port, which the agent fills in.
    pub cluster_ports: Vec<u16>,
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
    let rules = api.ingress_rules();
    if rules.len() >= rule_id::DEFAULT as usize {
        return Err(CompileError::TooManyRules {
            count: rules.len(),
            max: rule_id::DEFAULT,
        });
    }
    let source = &api.location.file;
    let (mut v4, v6) = super::entries(&rules, source)?;
    let v4_blocks = blocks::fold(
        &mut v4,
        |id| rules[id as usize].net.prefix_len(),
        block_budget,
    );
    Ok(CompiledApi {
        mode: api.mode.code(),
        default_verdict: api.default_verdict().code(),
        ports: api.ports.clone(),
        cluster_ports: api.cluster_ports.clone(),
        v4,
        v4_blocks,
        v6,
    })
}

impl CompiledApi {
    /// The kernel's configuration for `web` and `cluster` ports (the section's own, or the
    /// targets' listening ports when it names none); at most
    /// [`enforcer_common::api::MAX_PORTS`] of each are kept.
    pub fn config(&self, web: &[u16], cluster: &[u16], generation: u32) -> ApiConfig {
        let mut c = ApiConfig {
            mode: self.mode,
            default_verdict: self.default_verdict,
            generation,
            ..ApiConfig::default()
        };
        c.n_ports = fill(&mut c.ports, web);
        // A port that is a web port is decided as one (the kernel asks the web list first).
        let cluster: Vec<u16> = cluster
            .iter()
            .copied()
            .filter(|p| !web.contains(p))
            .collect();
        c.n_cluster_ports = fill(&mut c.cluster_ports, &cluster);
        c
    }

    /// What the kernel's rules decide for a SYN (or, on the cluster surface, a datagram of
    /// `proto_class`) from `peer` to a port of surface `surf`, in userspace: (verdict code,
    /// rule id), [`rule_id::DEFAULT`] when no rule matched. A cluster peer's own-peer check is
    /// not part of it.
    pub fn lookup(&self, peer: IpAddr, surf: u16, proto_class: u8) -> (u32, u32) {
        let maps = (&self.v4, &self.v4_blocks, &self.v6);
        let default = if surf == surface::CLUSTER {
            verdict::DENY
        } else {
            self.default_verdict
        };
        match access(maps, normalize_addr(peer), surf, proto_class) {
            Some(c) if c.action == action::ALLOW => (verdict::ALLOW, c.rule_id),
            Some(c) => (verdict::DENY, c.rule_id),
            None => (default, rule_id::DEFAULT),
        }
    }
}

/// Writes `ports` (sorted, unique) into `slots`; returns how many fit.
fn fill(slots: &mut [u16; enforcer_common::api::MAX_PORTS], ports: &[u16]) -> u32 {
    let mut sorted = ports.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for (slot, port) in slots.iter_mut().zip(&sorted) {
        *slot = *port;
    }
    sorted.len().min(slots.len()) as u32
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use enforcer_common::{rule_id, verdict};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use enforcer_common::{api::surface, proto};

    use crate::{
        compile::compile,
        policy::parse_policy,
        reference::{Decision, evaluate_cluster, evaluate_ingress},
    };

    fn api_policy(allow: &[String], cluster: &[String], audit: bool) -> String {
        let mut y = String::from("default: allow\nblock:\n  - preset: cloud-metadata\napi:\n");
        if audit {
            y += "  mode: audit\n";
        }
        y += "  ports: [9093]\n";
        for (key, list) in [("allow", allow), ("cluster_allow", cluster)] {
            if !list.is_empty() {
                y += &format!("  {key}:\n");
                for a in list {
                    y += &format!("    - cidr: {a}\n");
                }
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
            let pick = |rng: &mut StdRng| -> Vec<String> {
                let n = rng.random_range(0..4);
                (0..n)
                    .map(|_| cidrs[rng.random_range(0..cidrs.len())].to_owned())
                    .collect()
            };
            let allow = pick(&mut rng);
            let cluster = pick(&mut rng);
            let yaml = api_policy(&allow, &cluster, case % 3 == 0);
            let policy = parse_policy(&yaml, "api.yaml").unwrap();
            let compiled = compile(&policy).unwrap();
            let api = compiled.api.as_ref().expect("api section compiled");
            for _ in 0..40 {
                let peer = random_peer(&mut rng);
                let want = evaluate_ingress(&policy, peer).unwrap();
                let got = api.lookup(peer, surface::WEB, proto::TCP);
                assert_eq!(got, (want.verdict(), want.rule_id()), "{peer}\n{yaml}");
                refused += u32::from(matches!(want, Decision::Deny { .. }));
                let want = evaluate_cluster(&policy, peer).unwrap();
                for p in [proto::TCP, proto::UDP] {
                    let got = api.lookup(peer, surface::CLUSTER, p);
                    assert_eq!(got, (want.verdict(), want.rule_id()), "{peer}\n{yaml}");
                }
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
        let c = api.config(&[9093, 9093, 8080], &[9094, 8080], 7);
        assert_eq!(
            (c.n_ports, &c.ports[..2], c.generation),
            (2, &[8080, 9093][..], 7)
        );
        assert_eq!(
            (c.n_cluster_ports, c.cluster_ports[0]),
            (1, 9094),
            "a web port is not also a cluster port"
        );
        // A web allow rule does not open the cluster port, nor the other way round.
        let p = parse_policy(
            "default: allow\napi:\n  allow:\n    - cidr: 10.0.0.0/8\n  cluster_allow:\n    - cidr: 10.1.0.0/16\n",
            "a",
        )
        .unwrap();
        let api = compile(&p).unwrap().api.unwrap();
        let ten: IpAddr = "10.2.3.4".parse().unwrap();
        let ten_one: IpAddr = "10.1.3.4".parse().unwrap();
        assert_eq!(
            api.lookup(ten, surface::WEB, proto::TCP),
            (verdict::ALLOW, 0)
        );
        assert_eq!(
            api.lookup(ten, surface::CLUSTER, proto::UDP),
            (verdict::DENY, rule_id::DEFAULT)
        );
        assert_eq!(
            api.lookup(ten_one, surface::CLUSTER, proto::UDP),
            (verdict::ALLOW, 1)
        );
        assert_eq!(
            api.lookup(ten_one, surface::WEB, proto::TCP),
            (verdict::ALLOW, 0)
        );
    }
}
