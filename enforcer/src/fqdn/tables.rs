//! Policy → the FQDN tables of the kernel: allowlisted names (exact and wildcard) with the rule
//! slots they stand for, and each slot's ports/protocols clauses.
use std::collections::BTreeMap;

use enforcer_common::{
    fqdn::{FqdnSettings, MAX_RULES, NameKey, class_index, flags},
    proto,
};

use super::names::name_key;
use crate::policy::{FqdnRule, Location, Policy, PortRange};

/// Answers' TTLs are capped to a day: a longer-lived answer is re-resolved (or re-learned).
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// What the kernel holds for the `fqdn` rules of one policy. Slot `i` is `policy.fqdns[i]`;
/// its rule id (in events and the reference evaluator) is `policy.rules.len() + i`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FqdnTables {
    pub exact: BTreeMap<NameKey, u64>,
    pub wildcard: BTreeMap<NameKey, u64>,
    /// Per protocol class (see [`class_index`]): the slots allowing every port.
    pub any_port: [u64; 3],
    /// (class index, port) → the slots allowing that port (rules with a port list).
    pub ports: BTreeMap<(u8, u16), u64>,
    pub settings: FqdnSettings,
}

impl FqdnTables {
    /// Whether the policy allowlists any name (the DNS-learning program has work only then).
    pub fn has_names(&self) -> bool {
        !self.exact.is_empty() || !self.wildcard.is_empty()
    }

    /// Whether a slot in `rules` allows `port` with the protocol class bit `class` — what the
    /// kernel computes from these tables.
    pub fn allows(&self, rules: u64, port: u16, class: u8) -> bool {
        let c = class_index(class) as usize;
        let on_port = self.ports.get(&(c as u8, port)).copied().unwrap_or(0);
        rules & (self.any_port[c] | on_port) != 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FqdnCompileError {
    #[error("{location}: fqdn {name} does not fit a DNS name")]
    Name { location: Location, name: String },
}

/// The rule id of FQDN slot `slot` of `policy`.
pub fn rule_id(policy: &Policy, slot: usize) -> u32 {
    (policy.rules.len() + slot) as u32
}

/// The FQDN tables of `policy`, whose rule count [`crate::compile::Capacity::check`] has
/// checked against [`MAX_RULES`] (one bit per rule).
pub fn compile(policy: &Policy) -> Result<FqdnTables, FqdnCompileError> {
    debug_assert!(policy.fqdns.len() <= MAX_RULES as usize);
    let mut tables = FqdnTables {
        settings: FqdnSettings {
            grace_ns: policy.dns.grace_period.as_nanos() as u64,
            max_ttl_ns: MAX_TTL.as_nanos() as u64,
            flags: flags::REQUIRE_CONNECTED_PEER,
            _pad: 0,
        },
        ..FqdnTables::default()
    };
    for (slot, rule) in policy.fqdns.iter().enumerate() {
        let key = name_key(&rule.name).ok_or_else(|| FqdnCompileError::Name {
            location: rule.location.clone(),
            name: rule.name.clone(),
        })?;
        let names = if rule.wildcard {
            &mut tables.wildcard
        } else {
            &mut tables.exact
        };
        *names.entry(key).or_default() |= 1u64 << slot;
        let bit = 1u64 << slot;
        for_each_port_entry(rule, |c, port| match port {
            None => tables.any_port[c as usize] |= bit,
            Some(port) => *tables.ports.entry((c, port)).or_default() |= bit,
        });
    }
    Ok(tables)
}

/// What one `fqdn` rule needs in the port tables, per protocol class index ([`class_index`]):
/// `None` for the class's any-port mask, else one `FQDN_PORTS` entry per port. The one
/// definition for the tables and the capacity check ([`crate::compile::Capacity`]).
pub fn for_each_port_entry(rule: &FqdnRule, mut f: impl FnMut(u8, Option<u16>)) {
    for class in [proto::TCP, proto::UDP, proto::OTHER] {
        if rule.protocols & class == 0 {
            continue;
        }
        let c = class_index(class) as u8;
        if covers_every_port(&rule.ports) {
            f(c, None);
            continue;
        }
        for r in &rule.ports {
            for port in r.lo..=r.hi {
                f(c, Some(port));
            }
        }
    }
}

/// No port list, or one covering 1-65535 (port 0 is never a real destination).
fn covers_every_port(ports: &[PortRange]) -> bool {
    ports.is_empty() || ports.iter().any(|r| r.lo <= 1 && r.hi == u16::MAX)
}

#[cfg(test)]
mod tests {
    use enforcer_common::proto;

    use super::*;
    use crate::fqdn::names::name_key;
    use crate::policy::parse_policy;

    #[test]
    fn names_slots_ports_and_protocols() {
        let p = parse_policy(
            "default: deny
block:
  - cidr: 10.0.0.0/8
allow:
  - fqdn: hooks.slack.com
    ports: [443, \"8000-8002\"]
  - fqdn: \"*.slack.com\"
    protocols: [udp]
  - fqdn: Hooks.Slack.com.
    ports: [80]
    protocols: [tcp]
  - fqdn: any.test
    ports: [\"1-65535\"]
dns:
  grace_period: 2m
",
            "t.yaml",
        )
        .unwrap();
        let t = compile(&p).unwrap();
        let hooks = name_key("hooks.slack.com").unwrap();
        assert_eq!(t.exact.get(&hooks), Some(&0b101));
        assert_eq!(
            t.wildcard.get(&name_key("slack.com").unwrap()),
            Some(&0b010)
        );
        assert_eq!(t.exact.len(), 2);
        let (tcp, udp, other) = (proto::TCP, proto::UDP, proto::OTHER);
        assert!(t.allows(0b001, 443, tcp) && t.allows(0b001, 8001, udp));
        assert!(!t.allows(0b001, 80, tcp) && !t.allows(0b001, 8003, tcp));
        assert!(t.allows(0b010, 1, udp) && !t.allows(0b010, 443, tcp));
        assert!(t.allows(0b100, 80, tcp) && !t.allows(0b100, 80, udp));
        assert!(t.allows(0b1000, 9, other), "1-65535 is every port");
        assert!(!t.allows(0, 443, tcp));
        assert_eq!(
            t.ports.len(),
            4 * 3 + 1,
            "443 and 8000-8002 on three classes, 80 on tcp"
        );
        assert_eq!(t.settings.grace_ns, 120_000_000_000);
        assert_eq!(rule_id(&p, 1), 2);
    }
}
