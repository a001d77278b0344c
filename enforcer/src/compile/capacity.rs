//! What fits the kernel maps: the one check that `enforcer check` and `enforcer run` (with its
//! automatic rules added) both go through, inside [`super::compile`].

use std::fmt;

use enforcer_common::{
    MAX_BLOCKS_V4, MAX_EXACT_V4, MAX_EXACT_V6, MAX_PREFIXES,
    fqdn::{MAX_RULES as MAX_FQDN_RULES, PORTS_PER_SET},
};

use crate::policy::{Location, Policy};

/// Entries used and available in one map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub used: usize,
    pub available: usize,
}

impl Usage {
    fn fits(self) -> bool {
        self.used <= self.available
    }
}

/// Map entries a compiled policy needs, per family, next to what the maps hold. Full-length
/// entries of at most [`enforcer_common::EXACT_CLAUSES`] clauses go to the exact hash maps
/// ([`enforcer_common::is_exact`]), IPv4 /24–/31 entries folded into /24 blocks to the block
/// map ([`super::blocks`]; at most its capacity are folded, so it never overflows), the others
/// to the LPM tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Entries of the IPv4 LPM trie (per rule set; there are two, for reloads).
    pub v4: Usage,
    /// Entries of the IPv4 exact hash map (`/32`s).
    pub v4_exact: Usage,
    /// Entries of the IPv4 block hash map (/24 blocks).
    pub v4_blocks: Usage,
    /// Entries of the IPv6 LPM trie.
    pub v6: Usage,
    /// Entries of the IPv6 exact hash map (`/128`s).
    pub v6_exact: Usage,
    /// `fqdn` rules (one bit each in the kernel's FQDN tables).
    pub fqdn: Usage,
    /// (protocol class, port) entries of the `fqdn` rules' port table (`FQDN_PORTS`).
    pub fqdn_ports: Usage,
    /// The `fqdn` rule (slot) whose ports take the table past its capacity.
    fqdn_ports_over: Option<usize>,
}

/// A policy that does not fit the kernel maps.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    #[error(
        "{file}: the policy needs {} {family} map entries, more than the {} the kernel map \
         holds; remove at least {} {family} prefixes (adjacent prefixes may be merged into \
         shorter ones)",
        grouped(*used), grouped(*available), grouped(used - available)
    )]
    Prefixes {
        file: String,
        family: &'static str,
        used: usize,
        available: usize,
    },
    #[error(
        "{location}: field `ports`: this rule's ports take the fqdn port table past its \
         capacity: the fqdn rules need {} (protocol, port) entries, the kernel's table holds {} \
         per rule set (each port of a range counts once per protocol; a rule without ports, or \
         with 1-65535, takes none)",
        grouped(*used), grouped(*available)
    )]
    FqdnPorts {
        /// The rule whose ports pass the capacity.
        location: Location,
        used: usize,
        available: usize,
    },
    #[error("{location}: {count} fqdn rules; at most {max} are supported")]
    FqdnRules {
        /// The first rule beyond the limit.
        location: Location,
        count: usize,
        max: usize,
    },
}

/// Entries of one family: LPM trie, exact hash map, block hash map (IPv4 only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FamilyEntries {
    pub trie: usize,
    pub exact: usize,
    pub blocks: usize,
}

impl Capacity {
    pub fn of(v4: FamilyEntries, v6: FamilyEntries, policy: &Policy) -> Self {
        let usage = |used: usize, available: u32| Usage {
            used,
            available: available as usize,
        };
        let (ports, fqdn_ports_over) = fqdn_port_entries(policy, PORTS_PER_SET as usize);
        let fqdn_rules = policy.fqdns.len();
        Self {
            fqdn_ports: usage(ports, PORTS_PER_SET),
            fqdn_ports_over,
            v4: usage(v4.trie, MAX_PREFIXES),
            v4_exact: usage(v4.exact, MAX_EXACT_V4),
            v4_blocks: usage(v4.blocks, MAX_BLOCKS_V4),
            v6: usage(v6.trie, MAX_PREFIXES),
            v6_exact: usage(v6.exact, MAX_EXACT_V6),
            fqdn: Usage {
                used: fqdn_rules,
                available: MAX_FQDN_RULES as usize,
            },
        }
    }

    /// Refuses what the kernel maps cannot hold (the loader would fail with ENOSPC).
    pub fn check(&self, policy: &Policy) -> Result<(), CapacityError> {
        for (family, usage) in [
            ("IPv4 /32", self.v4_exact),
            ("IPv4", self.v4),
            ("IPv6 /128", self.v6_exact),
            ("IPv6", self.v6),
        ] {
            if !usage.fits() {
                return Err(CapacityError::Prefixes {
                    file: policy.source.clone(),
                    family,
                    used: usage.used,
                    available: usage.available,
                });
            }
        }
        if let (false, Some(slot)) = (self.fqdn_ports.fits(), self.fqdn_ports_over) {
            return Err(CapacityError::FqdnPorts {
                location: policy.fqdns[slot].location.clone(),
                used: self.fqdn_ports.used,
                available: self.fqdn_ports.available,
            });
        }
        if !self.fqdn.fits() {
            return Err(CapacityError::FqdnRules {
                location: policy.fqdns[self.fqdn.available].location.clone(),
                count: self.fqdn.used,
                max: self.fqdn.available,
            });
        }
        Ok(())
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |u: Usage| format!("{} of {}", grouped(u.used), grouped(u.available));
        write!(
            f,
            "IPv4 entries {}, /32 entries {}, /24 block entries {}; IPv6 entries {}, /128 \
             entries {}; fqdn rules {}, fqdn port entries {}",
            line(self.v4),
            line(self.v4_exact),
            line(self.v4_blocks),
            line(self.v6),
            line(self.v6_exact),
            line(self.fqdn),
            line(self.fqdn_ports)
        )
    }
}

pub use crate::input::grouped;

/// The `FQDN_PORTS` entries the policy's `fqdn` rules need (distinct (class, port) pairs, as
/// [`crate::fqdn::tables::for_each_port_entry`] lists them), and the slot of the rule that
/// takes the count past `available`. Counted in a 24 KiB bit set, whatever the ranges.
fn fqdn_port_entries(policy: &Policy, available: usize) -> (usize, Option<usize>) {
    let mut seen = vec![0u64; 3 * 65_536 / 64];
    let mut used = 0;
    let mut over = None;
    for (slot, rule) in policy.fqdns.iter().enumerate() {
        crate::fqdn::tables::for_each_port_entry(rule, |class, port| {
            let Some(port) = port else { return };
            let bit = usize::from(class) * 65_536 + usize::from(port);
            let (word, mask) = (bit / 64, 1u64 << (bit % 64));
            if seen[word] & mask == 0 {
                seen[word] |= mask;
                used += 1;
            }
        });
        if used > available && over.is_none() {
            over = Some(slot);
        }
    }
    (used, over)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The port table holds `PORTS_PER_SET` (class, port) entries per rule set; `check` and
    /// `run` (both through `compile`) refuse a policy beyond it at the rule that passes it,
    /// naming the field, instead of the loader failing with E2BIG.
    #[test]
    fn fqdn_port_entries_beyond_the_table_are_refused_at_the_rule() {
        use crate::compile::{CompileError, compile};
        use crate::policy::parse_policy;
        let per_set = PORTS_PER_SET as usize;
        let policy = |first: &str, second: &str| {
            parse_policy(
                &format!(
                    "default: deny\nallow:\n  - fqdn: a.example\n    ports: [\"{first}\"]\n    \
                     protocols: [tcp]\n  - fqdn: b.example\n    ports: [{second}]\n  \
                     - fqdn: c.example\n"
                ),
                "p.yaml",
            )
            .unwrap()
        };
        // 10,924 tcp ports, then 1-2730 on three classes (tcp ones the first rule has): the
        // table exactly full.
        let c = compile(&policy("1-10924", "\"1-2730\"")).unwrap();
        assert_eq!(
            c.capacity.fqdn_ports,
            Usage {
                used: per_set,
                available: per_set
            }
        );
        assert_eq!(c.fqdn.ports.len(), per_set);
        assert!(
            c.capacity
                .to_string()
                .ends_with("fqdn rules 3 of 64, fqdn port entries 16,384 of 16,384"),
            "{}",
            c.capacity
        );
        // One port more, on three classes.
        let e = compile(&policy("1-10924", "\"1-2730\", 20000")).unwrap_err();
        assert!(
            matches!(&e, CompileError::Capacity(CapacityError::FqdnPorts { used, available, .. })
                if *used == per_set + 3 && *available == per_set),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "p.yaml:6:5: field `ports`: this rule's ports take the fqdn port table past its \
             capacity: the fqdn rules need 16,387 (protocol, port) entries, the kernel's table \
             holds 16,384 per rule set (each port of a range counts once per protocol; a rule \
             without ports, or with 1-65535, takes none)"
        );
        // Every port is the any-port mask, not entries.
        let every = compile(&policy("1-10924", "\"1-65535\"")).unwrap();
        assert_eq!(every.capacity.fqdn_ports.used, 10_924);
    }

    #[test]
    fn thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(262_144), "262,144");
        assert_eq!(grouped(1_000_000), "1,000,000");
    }
}
