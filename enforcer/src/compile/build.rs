//! The LPM entries of one address family: the rule prefixes sorted by (address, length), each
//! entry given its own clauses and those of the entries that contain it (see the module above).

use std::net::{Ipv4Addr, Ipv6Addr};

use enforcer_common::{Clause, MAX_CLAUSES, action, proto};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{CompileError, Entries, RuleRef};
use crate::policy::{Location, PortRange, Rule, RuleAction, merge_port_ranges};

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// Builds the entries of one family from (address key, prefix length, rule id) items; a rule
/// id indexes `rules` (one direction's rules, from the file `source`).
pub(super) fn build(
    rules: &[Rule],
    source: &str,
    mut items: Vec<(u128, u8, u32)>,
    is_v4: bool,
) -> Result<Entries<(u128, u8)>, CompileError> {
    items.sort_unstable();
    let mut out: Entries<(u128, u8)> = Entries::default();
    // Indexes into `out` of the entries enclosing the current one, least specific first.
    let mut stack: Vec<usize> = Vec::new();
    let mut own_allow = Vec::new();
    let mut own_block = Vec::new();
    let mut clauses: Vec<Clause> = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let (addr, len, _) = items[i];
        let mut end = i;
        while end < items.len() && items[end].0 == addr && items[end].1 == len {
            end += 1;
        }
        while let Some(&top) = stack.last() {
            let (top_addr, top_len) = out.net(top);
            if top_len <= len && (addr ^ top_addr) & mask(top_len) == 0 {
                break;
            }
            stack.pop();
        }
        own_allow.clear();
        own_block.clear();
        for &(_, _, id) in &items[i..end] {
            let rule = &rules[id as usize];
            match rule.action {
                RuleAction::Allow => push_clauses(&mut own_allow, rule, id),
                RuleAction::Block => push_clauses(&mut own_block, rule, id),
            }
        }
        let parent: &[Clause] = match stack.last() {
            Some(&top) => out.clauses(top),
            None => &[],
        };
        let split = parent
            .iter()
            .position(|c| c.action != action::ALLOW)
            .unwrap_or(parent.len());
        let (parent_allow, parent_block) = parent.split_at(split);
        clauses.clear();
        merge_by_rule_id(parent_allow, &own_allow, &mut clauses);
        clauses.extend_from_slice(&own_block);
        clauses.extend_from_slice(parent_block);
        if let Some(catch_all) = clauses.iter().position(is_catch_all) {
            clauses.truncate(catch_all + 1);
        }
        if clauses.len() > MAX_CLAUSES {
            return Err(too_many_clauses(
                rules,
                source,
                addr,
                len,
                is_v4,
                clauses.len(),
            ));
        }
        out.push((addr, len), &clauses);
        stack.push(out.len() - 1);
        i = end;
    }
    out.shrink_to_fit();
    Ok(out)
}

/// One clause per (merged) port range of `rule`.
fn push_clauses(out: &mut Vec<Clause>, rule: &Rule, id: u32) {
    let merged;
    let ranges: &[PortRange] = if rule.ports.is_empty() {
        &[PortRange::ALL]
    } else if rule
        .ports
        .windows(2)
        .all(|w| w[0].hi < w[1].lo.saturating_sub(1))
    {
        // Already sorted and merged, as the parser leaves them.
        &rule.ports
    } else {
        merged = merge_port_ranges(&rule.ports);
        &merged
    };
    for r in ranges {
        out.push(Clause {
            rule_id: id,
            port_lo: r.lo,
            port_hi: r.hi,
            protocols: rule.protocols,
            action: rule.action.code(),
            hosts: [0; 2],
        });
    }
}

/// Merges two clause lists sorted by rule id (no id is in both), keeping each rule's clauses
/// together.
fn merge_by_rule_id(a: &[Clause], b: &[Clause], out: &mut Vec<Clause>) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].rule_id <= b[j].rule_id {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
}

/// Every port, every protocol: nothing after such a clause can be reached.
pub(super) fn is_catch_all(c: &Clause) -> bool {
    c.port_lo == 0 && c.port_hi == u16::MAX && c.protocols & proto::ALL == proto::ALL
}

fn too_many_clauses(
    rules: &[Rule],
    source: &str,
    addr: u128,
    len: u8,
    is_v4: bool,
    clauses: usize,
) -> CompileError {
    let prefix = if is_v4 {
        IpNet::V4(
            Ipv4Net::new(Ipv4Addr::from(addr as u32), len - 96).expect("IPv4 prefix length <= 32"),
        )
    } else {
        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).expect("IPv6 prefix length <= 128"))
    };
    let mut covering: Vec<(usize, &Rule)> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.net.contains(&prefix))
        .collect();
    covering.sort_by_key(|(id, r)| (std::cmp::Reverse(r.net.prefix_len()), *id));
    let rules: Vec<RuleRef> = covering
        .iter()
        .map(|(id, r)| RuleRef {
            id: *id as u32,
            description: r.describe(),
            location: r.location.clone(),
        })
        .collect();
    let location = rules
        .first()
        .map(|r| r.location.clone())
        .unwrap_or_else(|| Location {
            file: source.into(),
            line: 1,
            column: 1,
        });
    CompileError::TooManyClauses {
        location,
        prefix,
        clauses,
        max: MAX_CLAUSES,
        rules,
    }
}
