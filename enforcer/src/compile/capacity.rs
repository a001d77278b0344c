//! What fits the kernel maps: the one check that `enforcer check` and `enforcer run` (with its
//! automatic rules added) both go through, inside [`super::compile`].

use std::fmt;

use enforcer_common::{
    MAX_EXACT_V4, MAX_EXACT_V6, MAX_PREFIXES, fqdn::MAX_RULES as MAX_FQDN_RULES,
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
/// entries of at most [`enforcer_common::EXACT_CLAUSES`] clauses go to the exact hash maps,
/// the others to the LPM tries ([`enforcer_common::is_exact`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Entries of the IPv4 LPM trie (per rule set; there are two, for reloads).
    pub v4: Usage,
    /// Entries of the IPv4 exact hash map (`/32`s).
    pub v4_exact: Usage,
    /// Entries of the IPv6 LPM trie.
    pub v6: Usage,
    /// Entries of the IPv6 exact hash map (`/128`s).
    pub v6_exact: Usage,
    /// `fqdn` rules (one bit each in the kernel's FQDN tables).
    pub fqdn: Usage,
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
    #[error("{location}: {count} fqdn rules; at most {max} are supported")]
    FqdnRules {
        /// The first rule beyond the limit.
        location: Location,
        count: usize,
        max: usize,
    },
}

/// Entries of one family: (LPM trie, exact hash map).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FamilyEntries {
    pub trie: usize,
    pub exact: usize,
}

impl Capacity {
    pub fn of(v4: FamilyEntries, v6: FamilyEntries, fqdn_rules: usize) -> Self {
        let usage = |used: usize, available: u32| Usage {
            used,
            available: available as usize,
        };
        Self {
            v4: usage(v4.trie, MAX_PREFIXES),
            v4_exact: usage(v4.exact, MAX_EXACT_V4),
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
            "IPv4 entries {}, /32 entries {}; IPv6 entries {}, /128 entries {}; fqdn rules {}",
            line(self.v4),
            line(self.v4_exact),
            line(self.v6),
            line(self.v6_exact),
            line(self.fqdn)
        )
    }
}

pub use crate::input::grouped;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(262_144), "262,144");
        assert_eq!(grouped(1_000_000), "1,000,000");
    }
}
