//! The LPM entries of one family as the agent keeps them: each entry's clauses are a range of
//! one shared clause vector, so an entry costs its prefix, one index and its own clauses
//! (a blocked /32 is 5 + 4 + 12 bytes) instead of a fixed [`LpmValue`] of
//! [`MAX_CLAUSES`] clauses (196 bytes). The kernel's value is built only while it is written.

use enforcer_common::{Clause, LpmValue, MAX_CLAUSES};

/// Entries sorted by (network address, prefix length), as the compiler emits them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entries<N> {
    nets: Vec<N>,
    /// `clauses[ends[i - 1]..ends[i]]` are entry `i`'s clauses.
    ends: Vec<u32>,
    clauses: Vec<Clause>,
}

impl<N> Default for Entries<N> {
    fn default() -> Self {
        Self {
            nets: Vec::new(),
            ends: Vec::new(),
            clauses: Vec::new(),
        }
    }
}

impl<N: Copy> Entries<N> {
    /// Appends an entry (at most [`MAX_CLAUSES`] clauses; the compiler checks that first).
    pub(super) fn push(&mut self, net: N, clauses: &[Clause]) {
        debug_assert!(clauses.len() <= MAX_CLAUSES);
        self.clauses.extend_from_slice(clauses);
        self.nets.push(net);
        let end = u32::try_from(self.clauses.len()).expect("fewer than 2^32 clauses");
        self.ends.push(end);
    }

    pub fn len(&self) -> usize {
        self.nets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Entry `i`'s prefix.
    pub fn net(&self, i: usize) -> N {
        self.nets[i]
    }

    /// Entry `i`'s clauses, in the order the kernel walks them.
    pub fn clauses(&self, i: usize) -> &[Clause] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.clauses[start..self.ends[i] as usize]
    }

    /// Entry `i` as the kernel's trie holds it.
    pub fn value(&self, i: usize) -> LpmValue {
        LpmValue::of(self.clauses(i))
    }

    /// (prefix, kernel value) of every entry, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (N, LpmValue)> + '_ {
        (0..self.len()).map(|i| (self.nets[i], self.value(i)))
    }

    /// The index of the entry whose prefix compares equal under `cmp` (binary search over the
    /// sorted prefixes).
    pub fn find_by(&self, cmp: impl FnMut(&N) -> std::cmp::Ordering) -> Option<usize> {
        self.nets.binary_search_by(cmp).ok()
    }

    /// The same entries with their prefixes converted (the compiler's integer keys to nets).
    pub(super) fn map_nets<M>(self, f: impl FnMut(N) -> M) -> Entries<M> {
        Entries {
            nets: self.nets.into_iter().map(f).collect(),
            ends: self.ends,
            clauses: self.clauses,
        }
    }

    /// Keeps the entries whose index `keep` accepts, in order.
    pub(super) fn retain(&mut self, keep: impl Fn(usize) -> bool) {
        let mut out = Self::default();
        for i in (0..self.len()).filter(|&i| keep(i)) {
            out.push(self.nets[i], self.clauses(i));
        }
        out.shrink_to_fit();
        *self = out;
    }

    /// Gives back the spare capacity of the vectors (a policy is compiled once and kept).
    pub(super) fn shrink_to_fit(&mut self) {
        self.nets.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.clauses.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(rule_id: u32) -> Clause {
        Clause {
            rule_id,
            port_hi: u16::MAX,
            protocols: 7,
            action: 2,
            ..Clause::default()
        }
    }

    #[test]
    fn entries_keep_their_own_clauses_and_rebuild_the_kernel_value() {
        let mut e = Entries::default();
        e.push(1u8, &[clause(3)]);
        e.push(2u8, &[]);
        e.push(3u8, &[clause(4), clause(5)]);
        assert_eq!(e.len(), 3);
        assert_eq!(e.clauses(0), &[clause(3)]);
        assert!(e.clauses(1).is_empty());
        assert_eq!(e.clauses(2), &[clause(4), clause(5)]);
        let v = e.value(2);
        assert_eq!(v.n_clauses, 2);
        assert_eq!(&v.clauses[..2], &[clause(4), clause(5)]);
        assert_eq!(v.clauses[2], Clause::default());
        assert_eq!(e.find_by(|n| n.cmp(&3)), Some(2));
        assert_eq!(e.find_by(|n| n.cmp(&9)), None);
        let mut kept = e.clone();
        kept.retain(|i| i != 1);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept.clauses(0), &[clause(3)]);
        assert_eq!(kept.clauses(1), &[clause(4), clause(5)]);
        assert_eq!(kept.find_by(|n| n.cmp(&2)), None);
        let mapped = e.map_nets(u32::from);
        assert_eq!(
            mapped
                .iter()
                .map(|(n, v)| (n, v.n_clauses))
                .collect::<Vec<_>>(),
            [(1, 1), (2, 0), (3, 2)]
        );
    }
}
