//! `enforcer check`'s listing of a compiled policy.

use std::fmt::Write as _;

use enforcer_common::{Clause, action, proto};
use ipnet::IpNet;

use super::Compiled;
use crate::policy::Policy;

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
    if let Some(api) = &policy.api {
        let _ = write!(out, "\n{api}");
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
    crate::policy::targets::render(&mut out, policy);
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
    let _ = writeln!(
        out,
        "\ncapacity (used of available, per rule set): {}",
        compiled.capacity
    );
    let _ = writeln!(out, "\nIPv4 map entries ({}):", compiled.v4.len());
    for i in 0..compiled.v4.len() {
        render_entry(
            &mut out,
            &IpNet::V4(compiled.v4.net(i)),
            compiled.v4.clauses(i),
            false,
        );
    }
    let blocks = &compiled.v4_blocks;
    let _ = writeln!(
        out,
        "\nIPv4 /24 block entries ({}; each clause applies to the hosts it names):",
        blocks.len()
    );
    for i in 0..blocks.len() {
        render_entry(&mut out, &IpNet::V4(blocks.net(i)), blocks.clauses(i), true);
    }
    let _ = writeln!(out, "\nIPv6 map entries ({}):", compiled.v6.len());
    for i in 0..compiled.v6.len() {
        render_entry(
            &mut out,
            &IpNet::V6(compiled.v6.net(i)),
            compiled.v6.clauses(i),
            false,
        );
    }
    out
}

fn render_entry(out: &mut String, net: &IpNet, clauses: &[Clause], hosts: bool) {
    let _ = writeln!(out, "  {net}");
    for (i, c) in clauses.iter().enumerate() {
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
        let within = if hosts {
            format!(" hosts .{}-.{}", c.hosts[0], c.hosts[1])
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "    {:>2}. {act} rule {}{within} ports {ports} protocols {}",
            i + 1,
            c.rule_id,
            names.join(",")
        );
    }
}
