//! What the rule maps hold: clauses (a rule's ports, protocols and action) in the order the
//! kernel walks them, the value types of the trie, exact and /24 block maps, the IPv4
//! prefilter, and the maps' capacities.

/// What a clause does when it matches.
pub mod action {
    pub const ALLOW: u8 = 1;
    pub const BLOCK: u8 = 2;
}

/// Upper bound on the clauses of one LPM entry (the flattened rules covering one prefix).
pub const MAX_CLAUSES: usize = 16;

/// One flattened rule inside an LPM entry: matches a port range and a protocol mask.
/// `port_lo..=port_hi` in host byte order; a rule without ports is `0..=65535`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clause {
    pub rule_id: u32,
    pub port_lo: u16,
    pub port_hi: u16,
    /// [`crate::proto`] bit mask.
    pub protocols: u8,
    /// [`action`] code.
    pub action: u8,
    /// In a block entry ([`BlockValue`]): the last octets `hosts[0]..=hosts[1]` of the /24 the
    /// clause applies to. Zero and ignored in trie and exact entries.
    pub hosts: [u8; 2],
}

/// The clauses of one map entry, in the order the kernel walks them. Clauses are ordered:
/// every ALLOW clause before every BLOCK clause, BLOCK clauses from the most specific rule to
/// the least; the first match decides, no match falls through to the FQDN map and the default.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClauseList<const N: usize> {
    pub n_clauses: u32,
    pub clauses: [Clause; N],
}

/// Value of an LPM trie entry: up to [`MAX_CLAUSES`] clauses.
pub type LpmValue = ClauseList<MAX_CLAUSES>;

/// Clauses an exact entry holds: a `/32` or `/128` entry with at most this many clauses lives
/// in the exact hash map of its family ([`crate::map_names::V4_EXACT`], [`crate::map_names::V6_EXACT`]),
/// every other entry in the LPM trie. A blocked address of a feed is one clause; a metadata
/// address inside `private` with ports two or three.
pub const EXACT_CLAUSES: usize = 4;

/// Value of an exact (full-length) entry: a hash lookup instead of the trie's walk. An address
/// that has an exact entry would get that same entry from the trie (nothing is longer than a
/// full-length prefix), so the programs look it up first and, on a hit, never walk the trie —
/// also when none of its clauses matches (the trie would not fall back to a shorter prefix
/// either).
pub type ExactValue = ClauseList<EXACT_CLAUSES>;

/// Clauses a /24 block entry holds ([`BlockValue`]).
pub const BLOCK_CLAUSES: usize = 8;

/// Value of an IPv4 block entry (`V4_BLOCKS`, keyed by direction and /24 block): every clause
/// of every rule that covers an address of the block, each with the host range it covers
/// ([`Clause::hosts`]), in the kernel's clause order. The first clause whose host range holds
/// the address and that matches port and protocol is the clause the longest-prefix entry of
/// that address would give: an entry's clauses are those of the rules containing it, in one
/// order shared by every entry (allow before block, allow by rule id, block from the most
/// specific rule to the least). So a block entry answers for every address of its /24 without
/// the trie's walk; only exact (/32) entries come before it.
pub type BlockValue = ClauseList<BLOCK_CLAUSES>;

impl BlockValue {
    /// The first clause covering last octet `host` that matches `port` (host order) and the
    /// protocol class bit `proto_class`.
    #[inline(always)]
    pub fn first_match_host(&self, host: u8, port: u16, proto_class: u8) -> Option<&Clause> {
        let n = self.n_clauses as usize;
        for i in 0..BLOCK_CLAUSES {
            if i >= n {
                break;
            }
            let c = &self.clauses[i];
            if host >= c.hosts[0]
                && host <= c.hosts[1]
                && c.protocols & proto_class != 0
                && port >= c.port_lo
                && port <= c.port_hi
            {
                return Some(c);
            }
        }
        None
    }
}

/// Whether an entry of `prefix_len` bits (of `full_len`: 32 or 128) with `n_clauses` clauses
/// goes into the exact hash map rather than the trie (one rule for the agent's writer and its
/// capacity check).
#[inline(always)]
pub const fn is_exact(prefix_len: u8, full_len: u8, n_clauses: usize) -> bool {
    prefix_len == full_len && n_clauses <= EXACT_CLAUSES
}

impl<const N: usize> Default for ClauseList<N> {
    fn default() -> Self {
        Self {
            n_clauses: 0,
            clauses: [Clause::default(); N],
        }
    }
}

impl<const N: usize> ClauseList<N> {
    /// The first clause matching `port` (host order) and the protocol class bit `proto_class`.
    /// This is the clause scan of the kernel verdict; the agent's map emulation uses it too.
    #[inline(always)]
    pub fn first_match(&self, port: u16, proto_class: u8) -> Option<&Clause> {
        let n = self.n_clauses as usize;
        // A constant bound keeps the verifier happy; `n` ends the walk early.
        for i in 0..N {
            if i >= n {
                break;
            }
            let c = &self.clauses[i];
            if c.protocols & proto_class != 0 && port >= c.port_lo && port <= c.port_hi {
                return Some(c);
            }
        }
        None
    }

    /// The list holding `own` (at most `N` clauses; the caller checks).
    pub fn of(own: &[Clause]) -> Self {
        let mut value = Self {
            n_clauses: own.len() as u32,
            ..Self::default()
        };
        value.clauses[..own.len()].copy_from_slice(own);
        value
    }
}

/// Words of the IPv4 prefilter: one bit per /24 block (2^24 bits, 2 MiB).
pub const V4_FILTER_WORDS: usize = 1 << 18;

/// The IPv4 prefilter: bit `n` is set when some LPM entry of the rule set contains addresses
/// of the /24 block `n` (`address >> 8`). A clear bit proves that no entry can match, so the
/// LPM walk (a pointer chase per trie level, the dominant cost with 100k prefixes) is skipped.
pub type V4Filter = [u64; V4_FILTER_WORDS];

/// Word index and bit mask of `addr` (network byte order) in a [`V4Filter`].
#[inline(always)]
pub fn v4_filter_pos(addr: [u8; 4]) -> (usize, u64) {
    let block = u32::from_be_bytes(addr) >> 8;
    (
        (block >> 6) as usize & (V4_FILTER_WORDS - 1),
        1u64 << (block & 63),
    )
}

/// Capacity of each LPM trie (prefixes per family per rule set).
pub const MAX_PREFIXES: u32 = 262_144;

/// Capacity of each IPv4 exact hash map (`/32` entries per rule set). Hash maps are created
/// without preallocation: entries cost memory as they are written; the bucket array (16 bytes
/// per slot, a power of two) is allocated whole.
pub const MAX_EXACT_V4: u32 = 262_144;

/// Capacity of each IPv4 block hash map (/24 blocks per rule set, both directions). Blocks
/// beyond it keep their entries in the trie (slower, not refused).
pub const MAX_BLOCKS_V4: u32 = 131_072;

/// Capacity of each IPv6 exact hash map (`/128` entries per rule set).
pub const MAX_EXACT_V6: u32 = 65_536;
