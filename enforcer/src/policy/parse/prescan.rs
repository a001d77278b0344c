//! A bounded look at a policy's text before it is parsed: counts the distinct `cidr:` prefixes
//! per family and refuses a policy whose prefixes cannot fit the kernel maps, without building
//! its YAML tree (1,000,000 `/32`s parsed into a tree take ~350 MiB, 500,000 ~310 MiB, more
//! than the DaemonSet's memory limit).
//!
//! Every distinct prefix is one map entry, so the counts are lower bounds of what the
//! compiler's capacity check ([`crate::compile::Capacity`]) counts: a refusal here is one the
//! compiler would make. Two refusals:
//!
//! - **The trie** (at the line where it becomes certain, while scanning): a `/32` (`/128`) goes
//!   to the exact map unless it has more clauses than an exact value holds, so only the
//!   full-length prefixes beyond the exact map's capacity certainly take trie entries; an IPv4
//!   /24–/31 prefix may be folded into its /24's block entry ([`crate::compile::blocks`]), so
//!   of those only one per /24 beyond the block map's capacity certainly does; every other
//!   shorter prefix does.
//! - **The exact map alone** (after the scan): a full-length prefix takes more than
//!   [`EXACT_CLAUSES`] clauses, and so a trie entry, only when it is named more than once, lies
//!   inside a shorter prefix of the text or of a preset (whose rules' clauses it inherits), or
//!   has more than [`EXACT_CLAUSES`] port ranges of its own. The last needs that many numbers
//!   in the text, so at most (numbers in the text outside `cidr:` values) / (EXACT_CLAUSES + 1)
//!   prefixes can be such. Every other full-length prefix certainly goes to the exact map;
//!   more of them than it holds is refused, naming the line of the first one beyond it. A text
//!   with YAML aliases or anchors (`*`, `&`: one port list reused by many rules) gets only the
//!   first refusal.
//!
//! Values that do not read as a prefix are left to the parser, which reports them; comment
//! lines are skipped. The sets stop growing at the first refusal, so the memory is bounded by
//! the maps' capacity.

use std::collections::{BTreeSet, HashMap, HashSet};

use enforcer_common::{EXACT_CLAUSES, MAX_BLOCKS_V4, MAX_EXACT_V4, MAX_EXACT_V6, MAX_PREFIXES};
use ipnet::IpNet;

use super::super::{Location, PolicyError, Problem, normalize_net, presets};

/// Distinct prefixes of one family seen so far.
#[derive(Default)]
struct Family {
    /// Full-length prefixes → whether named more than once.
    full: HashMap<u128, bool>,
    /// (line, column) of each distinct full-length prefix, in the order first seen.
    full_at: Vec<(u32, u32)>,
    shorter: HashSet<(u128, u8)>,
    /// Distinct shorter prefixes that no block entry can hold (all of them for IPv6).
    unfoldable: usize,
    /// The /24s of IPv4 /24–/31 prefixes.
    blocks: HashSet<u32>,
}

/// One family's limits and names.
struct Limits {
    name: &'static str,
    full_len: u8,
    exact: usize,
    /// The block map's capacity (IPv4).
    blocks: Option<usize>,
}

/// Refuses `text` when its `cidr:` values alone need more entries than the maps hold.
pub(super) fn check(text: &str, file: &str) -> Result<(), PolicyError> {
    check_with(
        text,
        file,
        MAX_PREFIXES as usize,
        [MAX_EXACT_V4 as usize, MAX_EXACT_V6 as usize],
        MAX_BLOCKS_V4 as usize,
    )
}

/// [`check`] against tries of `trie` entries, exact maps of `exact` (IPv4, IPv6) entries and an
/// IPv4 block map of `blocks` entries.
fn check_with(
    text: &str,
    file: &str,
    trie: usize,
    exact: [usize; 2],
    blocks: usize,
) -> Result<(), PolicyError> {
    let (mut v4, mut v6) = (Family::default(), Family::default());
    let v4_limits = Limits {
        name: "IPv4",
        full_len: 32,
        exact: exact[0],
        blocks: Some(blocks),
    };
    let v6_limits = Limits {
        name: "IPv6",
        full_len: 128,
        exact: exact[1],
        blocks: None,
    };
    // Numbers outside `cidr:` values (each port range is at most two), and whether the text
    // repeats nodes by alias.
    let mut numbers = 0usize;
    let mut aliases = false;
    let at = |line: usize, column: usize| Location {
        file: file.into(),
        line,
        column,
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        aliases |= has_alias_or_anchor(line);
        let mut rest = line;
        loop {
            let found = rest.find("cidr:");
            let head = found.map_or(rest, |a| &rest[..a]);
            numbers += digit_runs(head);
            let Some(found) = found else { break };
            let column = line.len() - rest.len() + found + 1;
            rest = &rest[found + 5..];
            let Some((net, used)) = prefix(rest) else {
                continue;
            };
            rest = &rest[used..];
            let (family, limits) = match net {
                IpNet::V4(_) => (&mut v4, &v4_limits),
                IpNet::V6(_) => (&mut v6, &v6_limits),
            };
            let addr = match net {
                IpNet::V4(n) => u128::from(u32::from(n.network())),
                IpNet::V6(n) => u128::from(n.network()),
            };
            if net.prefix_len() == limits.full_len {
                match family.full.get_mut(&addr) {
                    Some(again) => *again = true,
                    None => {
                        family.full.insert(addr, false);
                        family.full_at.push((to_u32(i + 1), to_u32(column)));
                    }
                }
            } else if family.shorter.insert((addr, net.prefix_len())) {
                match limits.blocks {
                    Some(_) if net.prefix_len() >= 24 => {
                        family.blocks.insert((addr >> 8) as u32);
                    }
                    _ => family.unfoldable += 1,
                }
            }
            let unfolded = limits
                .blocks
                .map_or(0, |b| family.blocks.len().saturating_sub(b));
            let trie_at_least =
                family.unfoldable + unfolded + family.full.len().saturating_sub(limits.exact);
            if trie_at_least > trie {
                return Err(PolicyError::Invalid {
                    location: at(i + 1, column),
                    problem: Problem::TooManyPrefixes {
                        family: limits.name,
                        distinct: family.full.len() + family.shorter.len(),
                        full_len: limits.full_len,
                        exact: limits.exact,
                        trie,
                        blocks: limits.blocks,
                    },
                });
            }
        }
    }
    if aliases {
        return Ok(());
    }
    for (family, limits) in [(&v4, &v4_limits), (&v6, &v6_limits)] {
        let own_ports = numbers / (EXACT_CLAUSES + 1);
        let maybe_trie = family.covered(limits) + own_ports;
        let certain = family.full.len().saturating_sub(maybe_trie);
        if certain > limits.exact {
            let (line, column) = family.full_at[limits.exact + maybe_trie];
            return Err(PolicyError::Invalid {
                location: at(line as usize, column as usize),
                problem: Problem::TooManyExact {
                    family: limits.name,
                    full_len: limits.full_len,
                    certain,
                    exact: limits.exact,
                    clauses: EXACT_CLAUSES,
                },
            });
        }
    }
    Ok(())
}

impl Family {
    /// Full-length prefixes that may take more than [`EXACT_CLAUSES`] clauses for a reason
    /// other than their own port list: named twice, or inside a shorter prefix of the text or
    /// of a preset (a preset's own full-length entries count as a second naming).
    fn covered(&self, limits: &Limits) -> usize {
        let full_len = limits.full_len;
        let mut outer: HashSet<(u128, u8)> = HashSet::new();
        for p in presets() {
            for e in &p.entries {
                let (addr, len) = match normalize_net(e.net) {
                    IpNet::V4(n) if full_len == 32 => {
                        (u128::from(u32::from(n.network())), n.prefix_len())
                    }
                    IpNet::V6(n) if full_len == 128 => (u128::from(n.network()), n.prefix_len()),
                    _ => continue,
                };
                outer.insert((addr, len));
            }
        }
        let lengths: BTreeSet<u8> = self
            .shorter
            .iter()
            .chain(&outer)
            .map(|&(_, len)| len)
            .collect();
        let mask = |len: u8| -> u128 {
            if len == 0 {
                0
            } else {
                (u128::MAX << (128 - u32::from(len))) >> (128 - u32::from(full_len))
            }
        };
        self.full
            .iter()
            .filter(|&(&addr, &again)| {
                again
                    || lengths.iter().any(|&len| {
                        let key = (addr & mask(len), len);
                        self.shorter.contains(&key) || outer.contains(&key)
                    })
            })
            .count()
    }
}

/// Whether `line` may hold a YAML alias (`*name`) or anchor (`&name`): either character at
/// the start of a token. A quoted `"*.example.com"` is not one.
fn has_alias_or_anchor(line: &str) -> bool {
    let b = line.as_bytes();
    (0..b.len()).any(|i| {
        matches!(b[i], b'*' | b'&')
            && (i == 0 || matches!(b[i - 1], b' ' | b'\t' | b'[' | b'{' | b','))
    })
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Maximal runs of ASCII digits in `s`.
fn digit_runs(s: &str) -> usize {
    let b = s.as_bytes();
    (0..b.len())
        .filter(|&i| b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_digit()))
        .count()
}

/// The prefix a `cidr:` value starts with (plain or quoted), normalised as the parser does, and
/// how many bytes of `value` the value's text takes.
fn prefix(value: &str) -> Option<(IpNet, usize)> {
    let v = value.trim_start().trim_start_matches(['"', '\'']);
    let end = v
        .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '}' | ']' | '#'))
        .unwrap_or(v.len());
    let used = value.len() - v.len() + end;
    let v = &v[..end];
    let net = match v.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => IpNet::from(v.parse::<std::net::IpAddr>().ok()?),
    };
    Some((normalize_net(net), used))
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
        // Both maps together: refused while scanning. Two header lines and the comment, then
        // the entry one past the capacity.
        let e = check(&text, "feed.yaml").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "feed.yaml:{}:5: more than 262,144 IPv4 prefixes certainly take trie entries, \
                 all the trie holds: the prefixes shorter than /24, the /32s beyond the 262,144 \
                 the exact map holds, and one for each /24 with /24-/31 prefixes beyond the \
                 131,072 /24s the block map holds; refused before parsing the rest",
                cap + 4
            )
        );
        // Prefixes shorter than /24 need the trie alone.
        let e = check(&feed(MAX_PREFIXES + 1, 23), "f.yaml").unwrap_err();
        assert!(
            e.to_string().starts_with("f.yaml:262148:5: more than"),
            "{e}"
        );
        assert!(check(&feed(MAX_PREFIXES, 23), "f.yaml").is_ok());
        // /24s in distinct blocks: the block map holds some, the trie the rest.
        let both = MAX_PREFIXES + MAX_BLOCKS_V4;
        assert!(check(&feed(both, 24), "f.yaml").is_ok());
        let e = check(&feed(both + 1, 24), "f.yaml").unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("f.yaml:{}:5: more than", both + 4)),
            "{e}"
        );
        // Many /24–/31 prefixes in one /24 need one block entry at most.
        assert!(check(&feed(MAX_PREFIXES + 1, 31), "f.yaml").is_ok());
        // IPv6 has no block map.
        let v6: String = (0..=MAX_PREFIXES)
            .map(|i| format!("  - cidr: 2001:db8:{:x}:{:x}::/64\n", i >> 16, i & 0xffff))
            .collect();
        let e = check(&v6, "f.yaml").unwrap_err().to_string();
        assert!(
            e.ends_with(
                "more than 262,144 IPv6 prefixes certainly take trie entries, all the trie \
                 holds: the prefixes shorter than /128, the /128s beyond the 65,536 the exact \
                 map holds; refused before parsing the rest"
            ),
            "{e}"
        );
        // Duplicates are one entry; flow style and bare addresses count too.
        let dup = "block:\n".to_owned() + &"  - {cidr: 10.0.0.1, ports: [1]}\n".repeat(600_000);
        assert!(check(&dup, "d.yaml").is_ok());
        assert_eq!(
            prefix(" ::ffff:10.0.0.0/104 # mapped").map(|p| p.0),
            Some("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            prefix(" \"10.0.0.1/32\", ports: [1]"),
            Some(("10.0.0.1/32".parse().unwrap(), 13))
        );
        assert_eq!(prefix(" not-an-address"), None);
    }

    /// A feed between the exact map's capacity and both maps' (500,000 `/32`s) used to be
    /// parsed whole (312 MiB) before the compiler refused it.
    #[test]
    fn full_length_prefixes_beyond_the_exact_map_are_refused_before_parsing() {
        let exact = MAX_EXACT_V4 as usize;
        assert!(check(&feed(exact as u32, 32), "feed.yaml").is_ok());
        let e = check(&feed(500_000, 32), "feed.yaml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "feed.yaml:{}:5: 500,000 distinct IPv4 /32s certainly go to the exact map, which \
                 holds 262,144 per rule set (a /32 takes a trie entry only when it has more than \
                 4 clauses: named twice, inside a shorter prefix or preset, or with more than 4 \
                 port ranges); this one is the first beyond it; refused before parsing the rest",
                exact + 4
            ),
        );
    }

    /// What lifts the exact-map bound, on small maps (1,000 `/32`s, 100,000 trie entries).
    #[test]
    fn each_way_a_full_length_prefix_can_reach_the_trie_lifts_the_bound_by_one() {
        let exact = 1_000;
        let small = |text: &str| check_with(text, "f.yaml", 100_000, [exact, exact], 1_000);
        assert!(small(&feed(exact as u32, 32)).is_ok());
        let over = feed(exact as u32 + 1, 32);
        let e = small(&over).unwrap_err().to_string();
        assert!(
            e.starts_with("f.yaml:1004:5: 1,001 distinct IPv4 /32s"),
            "{e}"
        );
        // Five numbers (port ranges of one rule) ...
        let ports = "  - {cidr: 9.9.9.0/24, ports: [1, 2, 3, 4, 5]}\n";
        assert!(small(&format!("{over}{ports}")).is_ok());
        assert!(small(&format!("{}{ports}", feed(exact as u32 + 2, 32))).is_err());
        let four = "  - {cidr: 9.9.9.0/24, ports: [1, 2, 3, 4]}\n";
        assert!(small(&format!("{over}{four}")).is_err());
        // ... a second naming, a shorter prefix around one of them ...
        for extra in [
            "  - cidr: 11.0.0.1/32\n",
            "  - cidr: 11.0.0.0/31\n",
            "  - cidr: 11.0.0.0/8\n",
        ] {
            assert!(small(&format!("{over}{extra}")).is_ok(), "{extra}");
        }
        // ... or a preset's range (private's 10.0.0.0/8, cloud-metadata's own /32).
        let at_capacity = feed(exact as u32, 32);
        for preset in ["  - cidr: 10.1.2.3/32\n", "  - cidr: 169.254.169.254/32\n"] {
            assert!(small(&format!("{at_capacity}{preset}")).is_ok(), "{preset}");
            assert!(small(&format!("{at_capacity}  - cidr: 9.9.9.9/32\n")).is_err());
        }
        // A text with aliases (one port list reused by many rules) only gets the bound of
        // both maps together; a quoted wildcard name is no alias.
        assert!(small(&format!("{over}x: &p [1]\n")).is_ok());
        assert!(small(&format!("{over}  - {{fqdn: b.example, ports: *p}}\n")).is_ok());
        assert!(small(&format!("{over}allow:\n  - fqdn: \"*.example.com\"\n")).is_err());
        // IPv6 has its own exact map.
        let mut v6 = String::from("block:\n");
        for i in 0..=exact {
            v6.push_str(&format!("  - cidr: 2001:db8::{i:x}\n"));
        }
        let e = small(&v6).unwrap_err().to_string();
        assert!(e.contains("1,001 distinct IPv6 /128s"), "{e}");
        assert!(small(&feed(exact as u32, 32)).is_ok());
    }
}
