//! IPv4 block entries: the /24 blocks whose entries the kernel answers for with one hash lookup
//! instead of the trie's walk.
//!
//! A threat feed's /24–/31 prefixes sit in distinct /24 blocks (100,000 random ones share
//! almost none), and each one in the trie costs a pointer chase per level, cache-cold, on every
//! denied call inside it (~1 µs at 100,000 prefixes). A block entry ([`BlockValue`]) holds the
//! clauses of every rule that covers an address of its /24, each with the host range it covers
//! (the rule's prefix cut to the block), in the order every entry's clauses follow (allow before
//! block, allows by rule id, blocks from the most specific rule prefix to the least, ties by
//! rule id; a rule's own clauses in its order). An entry's clauses are exactly those of the
//! rules containing it in that order (cut after a catch-all, which nothing after can pass), so
//! for any address of the block the first clause whose range holds it and that matches is the
//! clause its longest-prefix entry gives.
//!
//! A block is folded when it holds an entry of /24–/31 and every entry inside it (prefix length
//! 24 and longer) is one the block can stand for: /24–/31 entries, and /32 entries that the
//! exact map holds (looked up before the block, and left out of it). A block with a /32 that
//! the exact map does not hold (more than [`enforcer_common::EXACT_CLAUSES`] clauses), whose
//! clauses do not fit [`BLOCK_CLAUSES`], or beyond the block map's capacity keeps its entries in
//! the trie. Folded entries leave the family's [`Entries`]: what stays is what the exact map and
//! the trie hold.

use std::net::Ipv4Addr;

use enforcer_common::{BLOCK_CLAUSES, BlockValue, Clause, action, is_exact};
use ipnet::Ipv4Net;

use super::{Entries, build::is_catch_all};

/// Prefix length of a block.
pub const BLOCK_LEN: u8 = 24;

/// The block entries of one direction, sorted by block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blocks {
    /// Block numbers (the address shifted right by 8), ascending.
    numbers: Vec<u32>,
    /// `clauses[ends[i - 1]..ends[i]]` are block `i`'s clauses.
    ends: Vec<u32>,
    clauses: Vec<Clause>,
}

impl Blocks {
    pub fn len(&self) -> usize {
        self.numbers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty()
    }

    /// Block `i` as a /24.
    pub fn net(&self, i: usize) -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::from(self.numbers[i] << 8), BLOCK_LEN).expect("/24")
    }

    /// Block `i`'s clauses, in the order the kernel walks them.
    pub fn clauses(&self, i: usize) -> &[Clause] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.clauses[start..self.ends[i] as usize]
    }

    /// Block `i` as the kernel's block map holds it.
    pub fn value(&self, i: usize) -> BlockValue {
        BlockValue::of(self.clauses(i))
    }

    /// The index of the block holding `addr`.
    pub fn find(&self, addr: Ipv4Addr) -> Option<usize> {
        self.numbers.binary_search(&(u32::from(addr) >> 8)).ok()
    }

    fn push(&mut self, block: u32, clauses: &[Clause]) {
        debug_assert!(clauses.len() <= BLOCK_CLAUSES);
        self.clauses.extend_from_slice(clauses);
        self.numbers.push(block);
        self.ends
            .push(u32::try_from(self.clauses.len()).expect("fewer than 2^32 clauses"));
    }

    fn shrink_to_fit(&mut self) {
        self.numbers.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.clauses.shrink_to_fit();
    }
}

/// Folds the blocks of `entries` (one direction's IPv4 entries, sorted) into block entries, at
/// most `budget` of them, and takes the folded entries out of `entries`. `rule_len` gives a
/// rule id's prefix length (the rules the entries were built from).
pub(super) fn fold(
    entries: &mut Entries<Ipv4Net>,
    rule_len: impl Fn(u32) -> u8,
    budget: usize,
) -> Blocks {
    let mut blocks = Blocks::default();
    let mut folded = vec![false; entries.len()];
    // Entries shorter than a block enclosing the current position, least specific first.
    let mut stack: Vec<usize> = Vec::new();
    let mut list: Vec<Clause> = Vec::new();
    let n = entries.len();
    let mut i = 0;
    while i < n {
        let net = entries.net(i);
        while let Some(&top) = stack.last() {
            if entries.net(top).contains(&net) {
                break;
            }
            stack.pop();
        }
        if net.prefix_len() < BLOCK_LEN {
            stack.push(i);
            i += 1;
            continue;
        }
        // Entries of /24 and longer inside one block are consecutive: an entry shorter than a
        // block starts at a block boundary and sorts before the block's own entries.
        let block = u32::from(net.network()) >> 8;
        let mut end = i + 1;
        while end < n && u32::from(entries.net(end).network()) >> 8 == block {
            end += 1;
        }
        if blocks.len() < budget && fold_one(entries, i..end, stack.last(), &rule_len, &mut list) {
            blocks.push(block, &list);
            for (j, f) in folded.iter_mut().enumerate().take(end).skip(i) {
                *f = !is_exact_entry(entries, j);
            }
        }
        i = end;
    }
    if folded.iter().any(|&f| f) {
        entries.retain(|j| !folded[j]);
    }
    blocks.shrink_to_fit();
    blocks
}

fn is_exact_entry(entries: &Entries<Ipv4Net>, j: usize) -> bool {
    is_exact(entries.net(j).prefix_len(), 32, entries.clauses(j).len())
}

/// The clause list of the block whose entries are `range` (all of /24 and longer, in one
/// block) under the enclosing entry `parent`, into `list`; false when the block cannot be
/// folded.
fn fold_one(
    entries: &Entries<Ipv4Net>,
    range: std::ops::Range<usize>,
    parent: Option<&usize>,
    rule_len: &impl Fn(u32) -> u8,
    list: &mut Vec<Clause>,
) -> bool {
    list.clear();
    let mut any = false;
    for j in range.clone() {
        let len = entries.net(j).prefix_len();
        if len == 32 {
            // The exact map answers for it first; one it does not hold keeps the block in the
            // trie.
            if !is_exact_entry(entries, j) {
                return false;
            }
        } else {
            any = true;
        }
    }
    if !any {
        // Only exact /32s: the trie's walk for the rest of the block is what it was.
        return false;
    }
    if let Some(&p) = parent {
        list.extend(entries.clauses(p).iter().map(|c| with_hosts(*c, 0, 255)));
    }
    for j in range {
        let net = entries.net(j);
        let len = net.prefix_len();
        if len == 32 {
            continue;
        }
        let first = net.network().octets()[3];
        let last = net.broadcast().octets()[3];
        // An entry's own clauses are those of rules of its own prefix length (a rule that
        // contains the entry and is as long is the entry's prefix).
        let own = entries
            .clauses(j)
            .iter()
            .filter(|c| rule_len(c.rule_id) == len);
        list.extend(own.map(|c| with_hosts(*c, first, last)));
    }
    // The order every entry's clauses follow; stable, so a rule's clauses keep theirs.
    list.sort_by_key(|c| {
        if c.action == action::ALLOW {
            (0, 0, c.rule_id)
        } else {
            (1, u8::MAX - rule_len(c.rule_id), c.rule_id)
        }
    });
    if let Some(k) = list
        .iter()
        .position(|c| c.hosts == [0, 255] && is_catch_all(c))
    {
        list.truncate(k + 1);
    }
    list.len() <= BLOCK_CLAUSES
}

fn with_hosts(mut c: Clause, first: u8, last: u8) -> Clause {
    c.hosts = [first, last];
    c
}
