//! Policy → the FQDN tables of the kernel: allowlisted names (exact and wildcard) with the rule
//! slots they stand for, and each slot's ports/protocols clauses.
use std::collections::BTreeMap;

use enforcer_common::{
    Clause, LpmValue, MAX_CLAUSES, action,
    fqdn::{FqdnSettings, MAX_RULES, NameKey, flags},
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
    /// One entry per slot: ALLOW clauses carrying the slot's rule id.
    pub rules: Vec<LpmValue>,
    pub settings: FqdnSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum FqdnCompileError {
    #[error("{location}: {count} fqdn rules; at most {max} are supported")]
    TooManyRules {
        location: Location,
        count: usize,
        max: u32,
    },
    #[error("{location}: fqdn {name} has {ranges} port ranges, more than the {max} a rule holds")]
    TooManyPortRanges {
        location: Location,
        name: String,
        ranges: usize,
        max: usize,
    },
    #[error("{location}: fqdn {name} does not fit a DNS name")]
    Name { location: Location, name: String },
}

/// The rule id of FQDN slot `slot` of `policy`.
pub fn rule_id(policy: &Policy, slot: usize) -> u32 {
    (policy.rules.len() + slot) as u32
}

pub fn compile(policy: &Policy) -> Result<FqdnTables, FqdnCompileError> {
    if policy.fqdns.len() > MAX_RULES as usize {
        return Err(FqdnCompileError::TooManyRules {
            location: policy.fqdns[MAX_RULES as usize].location.clone(),
            count: policy.fqdns.len(),
            max: MAX_RULES,
        });
    }
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
        let names = if rule.wildcard { &mut tables.wildcard } else { &mut tables.exact };
        *names.entry(key).or_default() |= 1u64 << slot;
        tables.rules.push(clauses(rule, rule_id(policy, slot))?);
    }
    Ok(tables)
}

fn clauses(rule: &FqdnRule, id: u32) -> Result<LpmValue, FqdnCompileError> {
    let ranges = if rule.ports.is_empty() { vec![PortRange::ALL] } else { rule.ports.clone() };
    if ranges.len() > MAX_CLAUSES {
        return Err(FqdnCompileError::TooManyPortRanges {
            location: rule.location.clone(),
            name: rule.to_string(),
            ranges: ranges.len(),
            max: MAX_CLAUSES,
        });
    }
    let mut value = LpmValue { n_clauses: ranges.len() as u32, ..LpmValue::default() };
    for (c, r) in value.clauses.iter_mut().zip(&ranges) {
        *c = Clause {
            rule_id: id,
            port_lo: r.lo,
            port_hi: r.hi,
            protocols: rule.protocols,
            action: action::ALLOW,
            _pad: [0; 2],
        };
    }
    Ok(value)
}
