//! Which automatic rules reach the kernel, and as what: each one opens its address and port
//! for the one process it was read from (an `AUTO_ALLOW` entry keyed by that process's tgid),
//! never a destination of the `cloud-metadata` preset, and at most [`MAX_PER_PROCESS`] per
//! process. What is refused is reported (logged and counted by the agent); one process's
//! refused or excessive rules never touch another process's.
use std::{collections::BTreeMap, net::IpAddr};

use enforcer_common::AutoKey;

use crate::policy::{Rule, preset};

/// Rules one process may hold: its (at most three) name servers and a generous number of
/// literal peers. More is refused, so a process with absurd flags cannot fill the map that
/// every other process's rules live in.
pub const MAX_PER_PROCESS: usize = 16;

/// Why an automatic rule was not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// Its destination is in the `cloud-metadata` preset.
    CloudMetadata,
    /// The process already holds [`MAX_PER_PROCESS`] rules.
    PerProcessLimit,
    /// The kernel map (`AUTO_ALLOW`) is full.
    MapFull,
}

impl Refusal {
    /// The metric label and log reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::CloudMetadata => "cloud_metadata",
            Refusal::PerProcessLimit => "per_process_limit",
            Refusal::MapFull => "map_full",
        }
    }
}

/// The rules to install and the ones refused, with why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admitted {
    pub rules: Vec<Rule>,
    pub refused: Vec<(Rule, Refusal)>,
}

/// Sorts `rules` (each read from one process, see `derive`) into admitted and refused. A
/// process's name servers come before its peers (the order `derive` gives), so a flood of peer
/// flags cannot push its DNS out.
pub fn admit(rules: Vec<Rule>) -> Admitted {
    let mut out = Admitted::default();
    let mut held: BTreeMap<u32, usize> = BTreeMap::new();
    for rule in rules {
        if in_cloud_metadata(&rule) {
            out.refused.push((rule, Refusal::CloudMetadata));
            continue;
        }
        let n = held.entry(super::auto_pid(&rule).unwrap_or(0)).or_default();
        if *n >= MAX_PER_PROCESS {
            out.refused.push((rule, Refusal::PerProcessLimit));
            continue;
        }
        *n += 1;
        out.rules.push(rule);
    }
    out
}

/// Whether the rule's address and port are in the `cloud-metadata` preset (a preset entry
/// limited to some ports covers only those: Azure's WireServer stays reachable on 53).
/// Without the preset (it is shipped, so never) everything counts as inside: fail closed.
fn in_cloud_metadata(rule: &Rule) -> bool {
    let Some(p) = preset("cloud-metadata") else {
        return true;
    };
    let addr = rule.net.addr();
    let ports: Vec<u16> = rule.ports.iter().flat_map(|r| [r.lo, r.hi]).collect();
    p.entries.iter().any(|e| {
        e.net.contains(&addr)
            && (e.ports.is_empty() || e.ports.iter().any(|r| ports.iter().any(|&p| r.contains(p))))
    })
}

/// The `AUTO_ALLOW` entry of an admitted rule: (tgid, port, address) → protocol mask.
pub fn entry(rule: &Rule) -> (AutoKey, u32) {
    let mut key = AutoKey {
        tgid: super::auto_pid(rule).unwrap_or(0),
        port: rule.ports.first().map_or(0, |r| r.lo),
        ..AutoKey::default()
    };
    match rule.net.addr() {
        IpAddr::V4(a) => {
            key.v4 = 1;
            key.addr[..4].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => key.addr = a.octets(),
    }
    (key, u32::from(rule.protocols))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AutoKind, Location, PortRange, RuleAction, RuleSource};

    fn rule(kind: AutoKind, addr: &str, port: u16, pid: u32) -> Rule {
        Rule {
            action: RuleAction::Allow,
            net: crate::policy::normalize_net(ipnet::IpNet::from(addr.parse::<IpAddr>().unwrap())),
            ports: vec![PortRange::single(port)],
            protocols: enforcer_common::proto::TCP | enforcer_common::proto::UDP,
            source: RuleSource::Auto { kind, pid },
            location: Location {
                file: "x".into(),
                line: 1,
                column: 1,
            },
        }
    }

    #[test]
    fn metadata_destinations_are_refused_on_their_ports_only() {
        let a = admit(vec![
            rule(AutoKind::ClusterPeer, "169.254.169.254", 80, 1),
            rule(AutoKind::ResolvConf, "169.254.169.254", 53, 1),
            rule(AutoKind::ResolvConf, "::ffff:169.254.170.2", 53, 1),
            rule(AutoKind::ResolvConf, "fd00:ec2::254", 53, 1),
            rule(AutoKind::ClusterPeer, "168.63.129.16", 80, 1),
            // Azure's WireServer is in the preset on 80 and 32526 only: its DNS stays open.
            rule(AutoKind::ResolvConf, "168.63.129.16", 53, 1),
            rule(AutoKind::ResolvConf, "127.0.0.53", 53, 1),
        ]);
        let kept: Vec<String> = a.rules.iter().map(|r| r.net.to_string()).collect();
        assert_eq!(kept, ["168.63.129.16/32", "127.0.0.53/32"]);
        assert_eq!(a.refused.len(), 5);
        assert!(
            a.refused
                .iter()
                .all(|(_, why)| *why == Refusal::CloudMetadata)
        );
    }

    #[test]
    fn each_process_is_bounded_on_its_own() {
        let mut rules = vec![rule(AutoKind::ResolvConf, "127.0.0.53", 53, 7)];
        for i in 0..20 {
            rules.push(rule(AutoKind::ClusterPeer, &format!("10.0.0.{i}"), 9094, 7));
        }
        rules.push(rule(AutoKind::ResolvConf, "127.0.0.53", 53, 8));
        let a = admit(rules);
        let of = |pid| {
            a.rules
                .iter()
                .filter(|r| super::super::auto_pid(r) == Some(pid))
                .count()
        };
        assert_eq!(of(7), MAX_PER_PROCESS);
        assert_eq!(of(8), 1, "another process keeps its rule");
        assert!(
            a.rules
                .iter()
                .any(|r| r.net.to_string() == "127.0.0.53/32"
                    && super::super::auto_pid(r) == Some(7)),
            "name servers first"
        );
        assert_eq!(a.refused.len(), 21 - MAX_PER_PROCESS);
        assert!(
            a.refused
                .iter()
                .all(|(_, why)| *why == Refusal::PerProcessLimit)
        );
    }

    #[test]
    fn entries_are_keyed_by_process_port_and_address() {
        let (k, mask) = entry(&rule(AutoKind::ClusterPeer, "::ffff:10.1.2.3", 9094, 42));
        assert_eq!((k.tgid, k.port, k.v4), (42, 9094, 1));
        assert_eq!(&k.addr[..4], &[10, 1, 2, 3]);
        assert!(k.addr[4..].iter().all(|&b| b == 0));
        assert_eq!(
            mask,
            u32::from(enforcer_common::proto::TCP | enforcer_common::proto::UDP)
        );
        let (k, _) = entry(&rule(AutoKind::ResolvConf, "fd00::53", 53, 42));
        assert_eq!(k.v4, 0);
        assert_eq!(
            k.addr,
            "fd00::53".parse::<std::net::Ipv6Addr>().unwrap().octets()
        );
    }
}
