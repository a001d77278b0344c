//! `enforcer suggest`: a policy for a human to review, from where a configuration sends today.
//!
//! Allowlist mode (`default: deny`) with the `private` and `cloud-metadata` presets blocked,
//! one `fqdn` rule per host name and one `cidr` rule per public literal address, each with the
//! ports seen. Literal addresses inside the blocked ranges, templated, undecidable and invalid
//! destinations are written as commented-out entries under a warning: allowing them would
//! open exactly what the policy is for. Everything copied from the configuration into a
//! comment is escaped, so a receiver name cannot end a comment and inject a rule.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use enforcer_common::rule_id;
use ipnet::IpNet;

use super::destination::{self, Reading};
use super::host::{Host, is_localhost};
use super::{AmConfig, Endpoint};
use crate::policy::{Policy, parse_policy};
use crate::reference::{Decision, evaluate};

const BASE: &str = "default: deny\nblock:\n  - preset: private\n  - preset: cloud-metadata\n";

/// What goes into the `allow` list.
#[derive(Default)]
struct Allowed {
    ports: BTreeSet<u16>,
    users: Vec<String>,
}

/// Prints a suggested policy (YAML with comments) for the destinations of `config`.
pub fn suggest(config: &AmConfig) -> String {
    // The embedded presets are valid by construction (unit-tested); fall back to nothing.
    let base = parse_policy(BASE, "<suggested base>").ok();
    let mut names: BTreeMap<String, Allowed> = BTreeMap::new();
    let mut cidrs: BTreeMap<IpNet, Allowed> = BTreeMap::new();
    let mut left_out: Vec<String> = Vec::new();
    for e in &config.endpoints {
        let user = format!("{}: {}", clean(&e.receiver), clean(&e.field));
        match destination::read(e) {
            Reading::Decided { primary, others, .. } if others.is_empty() => {
                place(&primary, &user, base.as_ref(), &mut names, &mut cidrs, &mut left_out);
            }
            Reading::Decided { primary, .. } => left_out.push(warning(
                e,
                &format!("its URL reads differently in different parsers (Go: {primary}); write the rule by hand"),
                None,
            )),
            Reading::Templated => left_out.push(warning(
                e,
                "the URL is templated: the host is filled in per alert; list the hosts it can take",
                Some("- fqdn: HOST.EXAMPLE.COM\n  ports: [443]\n  protocols: [tcp]"),
            )),
            Reading::Undecidable(why) => left_out.push(warning(
                e,
                &format!("{why}: cannot be decided from the file"),
                None,
            )),
            Reading::Invalid(why) => left_out.push(warning(e, &clean(&why), None)),
        }
    }
    render(config, &names, &cidrs, &left_out)
}

/// Files one decided destination under a name, a CIDR, or the left-out warnings.
fn place(
    dest: &destination::Destination,
    user: &str,
    base: Option<&Policy>,
    names: &mut BTreeMap<String, Allowed>,
    cidrs: &mut BTreeMap<IpNet, Allowed>,
    left_out: &mut Vec<String>,
) {
    let port = dest.port;
    match &dest.host {
        Host::Name(n) if !is_localhost(n) => {
            if valid_fqdn(n) {
                let a = names.entry(n.clone()).or_default();
                a.ports.insert(port);
                a.users.push(user.to_owned());
            } else {
                left_out.push(format!(
                    "# WARNING: {user} goes to {}, which is not a name an fqdn rule accepts.\n",
                    clean(&dest.to_string())
                ));
            }
        }
        host => {
            let addrs = host.static_addresses();
            let blocked = addrs.iter().find_map(|a| blocked_by(base, *a, port));
            if let (None, Host::Ip { addr, .. }) = (&blocked, host) {
                let a = cidrs.entry(IpNet::from(*addr)).or_default();
                a.ports.insert(port);
                a.users.push(user.to_owned());
                return;
            }
            let why = blocked.unwrap_or_else(|| "loopback".to_owned());
            let mut s = format!(
                "# WARNING: {user} goes to {}, inside a blocked range ({why}).\n\
                 # Left out on purpose: allowing it would open that range to Alertmanager.\n",
                clean(&dest.to_string())
            );
            for addr in addrs {
                let _ = writeln!(s, "# - cidr: {}", IpNet::from(addr));
                let _ = writeln!(s, "#   ports: [{port}]");
                let _ = writeln!(s, "#   protocols: [tcp]");
            }
            left_out.push(s);
        }
    }
}

/// The block rule of the suggested base policy that denies `addr`, if any.
fn blocked_by(base: Option<&Policy>, addr: IpAddr, port: u16) -> Option<String> {
    let base = base?;
    match evaluate(base, addr, port, 6) {
        Decision::Deny { rule } if rule != rule_id::DEFAULT => Some(base.describe_rule(rule)),
        _ => None,
    }
}

/// Names of cluster-internal or private zones, which usually resolve to blocked ranges.
fn internal_name(name: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        ".svc",
        ".cluster.local",
        ".local",
        ".internal",
        ".localdomain",
        ".home.arpa",
        ".lan",
    ];
    !name.contains('.') || SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// A name the policy's `fqdn:` accepts (letters, digits, `-`, dots; checked by the parser).
fn valid_fqdn(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && parse_policy(&format!("allow:\n  - fqdn: {name}\n"), "<fqdn>").is_ok()
}

fn warning(e: &Endpoint, why: &str, example: Option<&str>) -> String {
    let mut s = format!(
        "# WARNING: {}: {}: {why}.\n",
        clean(&e.receiver),
        clean(&e.field)
    );
    if let Some(example) = example {
        for line in example.lines() {
            let _ = writeln!(s, "# {line}");
        }
    }
    s
}

/// Text from the configuration, safe inside a one-line comment.
fn clean(s: &str) -> String {
    s.escape_debug().to_string()
}

fn ports(p: &BTreeSet<u16>) -> String {
    p.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
}

fn render(
    config: &AmConfig,
    names: &BTreeMap<String, Allowed>,
    cidrs: &BTreeMap<IpNet, Allowed>,
    left_out: &[String],
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "# enforcer policy suggested by `enforcer suggest` from {}.\n\
         #\n\
         # REVIEW BEFORE USE. This lists where that configuration sends notifications today;\n\
         # check that every entry is a destination you expect: anything else is what this\n\
         # policy exists to stop. Never derive a policy live from the Alertmanager configuration\n\
         # it protects: whoever can edit that configuration could then open the egress too.\n\
         #\n\
         # Alertmanager also needs its name servers (port 53) and, when clustered, its peers\n\
         # (port 9094): the agent allows the name servers of its own resolv.conf and its literal\n\
         # --cluster.peer addresses automatically (`alertmanager:` below); peers given by DNS\n\
         # name need a cidr rule (example at the end).\n\
         #\n\
         # Audit mode first: nothing is denied; each call enforce mode would deny is logged as a\n\
         # `would_deny` line. Switch to `mode: enforce` once real traffic shows none to keep.\n\
         mode: audit\n\
         default: deny\n\
         alertmanager:\n  allow_own_dns: true\n  allow_cluster_peers: true\n\
         # Whom to enforce, by executable name (upstream `alertmanager`, Debian's package\n\
         # `prometheus-alertmanager`), wherever it runs: `enforcer run` without --cgroup, as the\n\
         # Kubernetes DaemonSet and the systemd unit run it.\n\
         targets:\n  - process: [alertmanager, prometheus-alertmanager]\n\
         block:\n  - preset: private\n  - preset: cloud-metadata\n\
         allow:\n",
        clean(&config.source)
    );
    for (name, a) in names {
        for user in &a.users {
            let _ = writeln!(out, "  # {user}");
        }
        if internal_name(name) {
            let _ = writeln!(
                out,
                "  # NOTE: an internal name; if it resolves into a blocked range this rule opens\n  \
                 # nothing (an fqdn rule never overrides a block): allow its address with a cidr rule."
            );
        }
        let _ = writeln!(out, "  - fqdn: {name}");
        let _ = writeln!(out, "    ports: [{}]", ports(&a.ports));
        let _ = writeln!(out, "    protocols: [tcp]");
    }
    for (net, a) in cidrs {
        for user in &a.users {
            let _ = writeln!(out, "  # {user}");
        }
        let _ = writeln!(
            out,
            "  # (a literal address: check it is yours and stays so)"
        );
        let _ = writeln!(out, "  - cidr: {net}");
        let _ = writeln!(out, "    ports: [{}]", ports(&a.ports));
        let _ = writeln!(out, "    protocols: [tcp]");
    }
    for block in left_out {
        for line in block.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out.push_str(
        "  # Name servers and cluster peers the agent cannot find itself (uncomment and fill in):\n\
         \x20 # - cidr: 10.96.0.10/32\n\
         \x20 #   ports: [53]\n\
         \x20 #   protocols: [udp, tcp]\n\
         \x20 # - cidr: 10.244.0.0/16\n\
         \x20 #   ports: [9094]\n\
         \x20 #   protocols: [tcp, udp]\n",
    );
    out
}
