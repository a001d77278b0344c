//! A bounded look at a policy's text before it is parsed: counts the distinct `cidr:` prefixes
//! per family and refuses, at the line where it becomes certain, a policy whose prefixes cannot
//! fit the kernel maps, without building its YAML tree (1,000,000 `/32`s parsed into a tree
//! take ~350 MiB, more than the DaemonSet's memory limit).
//!
//! Every distinct prefix is one map entry, so the counts are lower bounds of what the
//! compiler's capacity check ([`crate::compile::Capacity`]) counts: a refusal here is one the
//! compiler would make. A `/32` (`/128`) goes to the exact map unless it has more clauses
//! than an exact value holds, so only the `/32`s beyond the exact map's capacity certainly take
//! trie entries. Values that do not read as a prefix are left to the parser, which reports
//! them; comment lines are skipped. The sets stop growing at the first refusal, so the memory
//! is bounded by the maps' capacity.

use std::collections::HashSet;

use enforcer_common::{MAX_EXACT_V4, MAX_EXACT_V6, MAX_PREFIXES};
use ipnet::IpNet;

use super::super::{Location, PolicyError, Problem, normalize_net};

/// Distinct prefixes of one family seen so far.
#[derive(Default)]
struct Family {
    full: HashSet<u128>,
    shorter: HashSet<(u128, u8)>,
}

impl Family {
    /// Entries the trie must hold at least, given `exact` slots in the exact map.
    fn trie_at_least(&self, exact: usize) -> usize {
        self.shorter.len() + self.full.len().saturating_sub(exact)
    }
}

/// Refuses `text` when its `cidr:` values alone need more entries than the maps hold.
pub(super) fn check(text: &str, file: &str) -> Result<(), PolicyError> {
    let (mut v4, mut v6) = (Family::default(), Family::default());
    let trie = MAX_PREFIXES as usize;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("cidr:") {
            let column = line.len() - rest.len() + at + 1;
            rest = &rest[at + 5..];
            let Some(net) = prefix(rest) else { continue };
            let (family, full_len, exact, name) = match net {
                IpNet::V4(_) => (&mut v4, 32, MAX_EXACT_V4, "IPv4"),
                IpNet::V6(_) => (&mut v6, 128, MAX_EXACT_V6, "IPv6"),
            };
            let addr = match net {
                IpNet::V4(n) => u128::from(u32::from(n.network())),
                IpNet::V6(n) => u128::from(n.network()),
            };
            if net.prefix_len() == full_len {
                family.full.insert(addr);
            } else {
                family.shorter.insert((addr, net.prefix_len()));
            }
            let exact = exact as usize;
            if family.trie_at_least(exact) > trie {
                return Err(PolicyError::Invalid {
                    location: Location {
                        file: file.into(),
                        line: i + 1,
                        column,
                    },
                    problem: Problem::TooManyPrefixes {
                        family: name,
                        distinct: family.full.len() + family.shorter.len(),
                        capacity: trie + exact,
                        full_len,
                        exact,
                        trie,
                    },
                });
            }
        }
    }
    Ok(())
}

/// The prefix a `cidr:` value starts with (plain or quoted), normalised as the parser does.
fn prefix(value: &str) -> Option<IpNet> {
    let v = value.trim_start().trim_start_matches(['"', '\'']);
    let end = v
        .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '}' | ']' | '#'))
        .unwrap_or(v.len());
    let v = &v[..end];
    let net = match v.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => IpNet::from(v.parse::<std::net::IpAddr>().ok()?),
    };
    Some(normalize_net(net))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(n: u32, len: u8) -> String {
        let mut s = String::from("default: allow\nblock:\n  # - cidr: 1.2.3.4/32\n");
        for i in 0..n {
            let a = std::net::Ipv4Addr::from(0x0b00_0000 + (i << (32 - u32::from(len))));
            s.push_str(&format!("  - cidr: \"{a}/{len}\"\n"));
        }
        s
    }

    #[test]
    fn prefixes_that_cannot_fit_are_refused_at_the_line_that_proves_it() {
        let cap = (MAX_PREFIXES + MAX_EXACT_V4) as usize;
        let text = feed(cap as u32 + 1, 32);
        let e = check(&text, "feed.yaml").unwrap_err().to_string();
        // Two header lines and the comment, then the entry one past the capacity.
        assert_eq!(
            e,
            format!(
                "feed.yaml:{}:5: more than 524,288 distinct IPv4 prefixes: the kernel maps hold \
                 262,144 /32s in the exact map and 262,144 prefixes in the trie; refused before \
                 parsing the rest",
                cap + 4
            )
        );
        assert!(check(&feed(cap as u32, 32), "feed.yaml").is_ok());
        // Shorter prefixes need the trie alone.
        let e = check(&feed(MAX_PREFIXES + 1, 24), "f.yaml").unwrap_err();
        assert!(
            e.to_string().starts_with("f.yaml:262148:5: more than"),
            "{e}"
        );
        // Duplicates are one entry; flow style and bare addresses count too.
        let dup = "block:\n".to_owned() + &"  - {cidr: 10.0.0.1, ports: [1]}\n".repeat(600_000);
        assert!(check(&dup, "d.yaml").is_ok());
        assert_eq!(
            prefix(" ::ffff:10.0.0.0/104 # mapped"),
            Some("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(prefix(" not-an-address"), None);
    }
}
