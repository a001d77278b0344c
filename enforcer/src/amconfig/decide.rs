//! The verdict the policy gives a destination, with the rule that decides it.
//!
//! Literal addresses go through the reference evaluator (the decision order of docs/design.md). Host
//! names are decided by the FQDN allow rules (exact name, or `*.name` for one or more labels
//! below it, on the rule's ports and protocols), else by the policy's default; block ranges
//! cannot apply to a name until it is resolved, which `--resolve` does: then every address is
//! decided too (an FQDN-learned address never overrides a block) and the worst verdict wins.

use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs};

use enforcer_common::{proto, rule_id};

use super::destination::Destination;
use super::host::{Host, is_localhost};
use crate::policy::{DefaultVerdict, FqdnRule, Policy, normalize_addr};
use crate::reference::{Decision, evaluate};

const TCP: u8 = 6;

/// How an address came to be decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSource {
    /// Written in the configuration.
    Literal,
    /// What Go dials for an empty or unspecified host, or a `localhost` name.
    Loopback,
    /// From the system resolver (`--resolve`).
    Resolved,
}

impl AddressSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressSource::Literal => "literal",
            AddressSource::Loopback => "loopback",
            AddressSource::Resolved => "resolved",
        }
    }
}

/// The verdict for one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressVerdict {
    pub addr: IpAddr,
    /// What the kernel decides (IPv4 for mapped and NAT64 addresses).
    pub decided_as: IpAddr,
    pub source: AddressSource,
    pub allow: bool,
    pub rule: String,
}

/// The verdict for a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allow: bool,
    /// The rule that decided (for a deny, the first denying one).
    pub rule: String,
    pub addresses: Vec<AddressVerdict>,
    pub notes: Vec<String>,
    /// `--resolve` was asked for and the name did not resolve.
    pub unresolved: bool,
}

/// Looks a host name up: `(name, port)` to addresses.
pub type Resolver<'a> = &'a dyn Fn(&str, u16) -> std::io::Result<Vec<IpAddr>>;

/// The system resolver (getaddrinfo, with /etc/hosts and the machine's DNS).
pub fn system_resolver(name: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
    Ok((name, port).to_socket_addrs()?.map(|a| a.ip()).collect())
}

/// Decides a destination. With `resolve`, host names are also looked up with the system
/// resolver.
pub fn decide(policy: &Policy, dest: &Destination, resolve: bool) -> Verdict {
    let resolver: Resolver<'_> = &system_resolver;
    decide_with(policy, dest, resolve.then_some(resolver))
}

/// [`decide`] with a given resolver (`None`: names are not resolved).
pub fn decide_with(policy: &Policy, dest: &Destination, resolver: Option<Resolver<'_>>) -> Verdict {
    let port = dest.port;
    let name = match &dest.host {
        Host::Name(n) => Some(n.as_str()),
        _ => None,
    };
    let mut verdict = Verdict {
        allow: true,
        rule: String::new(),
        addresses: Vec::new(),
        notes: Vec::new(),
        unresolved: false,
    };
    // A name first: the FQDN rules, else the default.
    if let Some(n) = name {
        match fqdn_rule(policy, n, port) {
            Some(rule) => verdict.rule = rule.to_string(),
            None => {
                verdict.allow = policy.default == DefaultVerdict::Allow;
                verdict.rule = format!("default {}", policy.default.as_str());
                verdict
                    .notes
                    .push("host name not covered by any fqdn rule".to_owned());
            }
        }
    }
    let literal = match &dest.host {
        Host::Ip { addr, .. } => Some(*addr),
        _ => None,
    };
    let mut seen = BTreeSet::new();
    for addr in dest.host.static_addresses() {
        let source = if Some(addr) == literal {
            AddressSource::Literal
        } else {
            AddressSource::Loopback
        };
        if seen.insert(addr) {
            verdict
                .addresses
                .push(address_verdict(policy, addr, port, name, source));
        }
    }
    if let (Some(resolve), Some(n)) = (resolver, name.filter(|n| !is_localhost(n))) {
        match resolve(n, port) {
            Ok(addrs) => {
                for addr in addrs {
                    if seen.insert(addr) {
                        let source = AddressSource::Resolved;
                        verdict
                            .addresses
                            .push(address_verdict(policy, addr, port, name, source));
                    }
                }
            }
            Err(e) => {
                verdict.unresolved = true;
                verdict.notes.push(format!("could not resolve {n}: {e}"));
            }
        }
    }
    // The worst verdict wins; a denied address names its (more telling) rule first.
    if let Some(denied) = verdict.addresses.iter().find(|a| !a.allow) {
        verdict.allow = false;
        verdict.rule = denied.rule.clone();
    } else if name.is_none()
        && let Some(first) = verdict.addresses.first()
    {
        verdict.rule = first.rule.clone();
    }
    verdict
}

/// One address, in the decision order of docs/design.md; `name` is the host name it was resolved from (its
/// FQDN rule allows it where no CIDR rule decides, never over a block).
fn address_verdict(
    policy: &Policy,
    addr: IpAddr,
    port: u16,
    name: Option<&str>,
    source: AddressSource,
) -> AddressVerdict {
    let (allow, rule) = match evaluate(policy, addr, port, TCP) {
        Decision::Allow { rule: Some(id) } => (true, policy.describe_rule(id)),
        Decision::Deny { rule } if rule != rule_id::DEFAULT => (false, policy.describe_rule(rule)),
        _ => match name.and_then(|n| fqdn_rule(policy, n, port)) {
            Some(rule) => (true, rule.to_string()),
            None => (
                policy.default == DefaultVerdict::Allow,
                format!("default {}", policy.default.as_str()),
            ),
        },
    };
    AddressVerdict {
        addr,
        decided_as: normalize_addr(addr),
        source,
        allow,
        rule,
    }
}

/// The first FQDN allow rule that covers `name` (lower case, no trailing dot) on `port`/TCP.
pub fn fqdn_rule<'p>(policy: &'p Policy, name: &str, port: u16) -> Option<&'p FqdnRule> {
    policy.fqdns.iter().find(|r| {
        let port_ok = r.ports.is_empty() || r.ports.iter().any(|p| p.contains(port));
        r.covers(name) && port_ok && r.protocols & proto::TCP != 0
    })
}
