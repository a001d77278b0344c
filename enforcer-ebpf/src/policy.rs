//! The verdict core shared by every direction, in the manner of cilium's
//! `__policy_can_access(…, dir)`: one lookup over a direction-tagged rule key
//! ([`enforcer_common::rules`]) and thin per-direction wrappers around it.
//!
//! - [`can_access`]: longest prefix of (direction, address), first clause matching port and
//!   protocol class, through three maps that together hold each rule set: the exact (/32,
//!   /128) hash map, for IPv4 the /24 block hash map, then the LPM trie. Nothing else.
//! - [`can_egress`]: what a target may reach — the IPv4 prefilter, [`can_access`] in
//!   [`direction::EGRESS`], then FQDN-learned addresses and the policy default.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, lpm_trie::Key},
};
use enforcer_common::{
    ACTIVE_SETS, BlockValue, Clause, Config, ExactValue, LpmValue, MAX_BLOCKS_V4, MAX_EXACT_V4,
    MAX_EXACT_V6, MAX_PREFIXES, V4_KEY_LEN, V4Filter, V6_KEY_LEN, action,
    api::{ApiConfig, surface},
    direction, rule_id,
    rules::{key_prefix_len, v4_block_key, v4_key, v6_key},
    v4_filter_pos, verdict,
};

use crate::{Dst, fqdn};

#[map]
static V4_RULES_0: LpmTrie<[u8; V4_KEY_LEN], LpmValue> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
#[map]
static V4_RULES_1: LpmTrie<[u8; V4_KEY_LEN], LpmValue> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
#[map]
static V6_RULES_0: LpmTrie<[u8; V6_KEY_LEN], LpmValue> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
#[map]
static V6_RULES_1: LpmTrie<[u8; V6_KEY_LEN], LpmValue> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
// Exact (full-length) entries, keyed like the tries' data (direction tag, address).
#[map]
static V4_EXACT_0: HashMap<[u8; V4_KEY_LEN], ExactValue> =
    HashMap::with_max_entries(MAX_EXACT_V4, BPF_F_NO_PREALLOC);
#[map]
static V4_EXACT_1: HashMap<[u8; V4_KEY_LEN], ExactValue> =
    HashMap::with_max_entries(MAX_EXACT_V4, BPF_F_NO_PREALLOC);
#[map]
static V6_EXACT_0: HashMap<[u8; V6_KEY_LEN], ExactValue> =
    HashMap::with_max_entries(MAX_EXACT_V6, BPF_F_NO_PREALLOC);
#[map]
static V6_EXACT_1: HashMap<[u8; V6_KEY_LEN], ExactValue> =
    HashMap::with_max_entries(MAX_EXACT_V6, BPF_F_NO_PREALLOC);
// IPv4 /24 block entries, keyed by (direction tag, first three octets).
#[map]
static V4_BLOCKS_0: HashMap<[u8; 4], BlockValue> =
    HashMap::with_max_entries(MAX_BLOCKS_V4, BPF_F_NO_PREALLOC);
#[map]
static V4_BLOCKS_1: HashMap<[u8; 4], BlockValue> =
    HashMap::with_max_entries(MAX_BLOCKS_V4, BPF_F_NO_PREALLOC);
#[map]
static V4_FILTER: Array<V4Filter> = Array::with_max_entries(ACTIVE_SETS, 0);

/// The one rule lookup of both directions: the first clause of the longest-prefix entry for
/// (`dir`, `addr`) in rule set `set` that matches `port` (host order) and `proto_class`.
///
/// The exact hash map first: an address with a full-length entry there would get that same
/// entry from the trie, so a hit decides (matching clause or none) without the trie's walk.
/// For IPv4 the block map next: a /24 with an entry there has all its rules' clauses in it
/// ([`BlockValue`]), so a hit decides too; the trie holds only what neither map answers for
/// (prefixes shorter than /24, and the blocks the compiler could not fold).
#[inline(always)]
pub fn can_access(
    set: u32,
    dir: u8,
    addr: &Dst,
    port: u16,
    proto_class: u8,
) -> Option<&'static Clause> {
    // Each map is named at its own call site: a call that sees one map only keeps the
    // verifier's inlined lookup (a register holding either of two maps would lose it).
    match addr {
        Dst::V4(a) => {
            let data = v4_key(dir, *a);
            // SAFETY: the value is read in place while this program runs (RCU read side); the
            // agent rewrites a rule set only after a grace period past its flip.
            let exact = unsafe {
                if set == 0 {
                    V4_EXACT_0.get(&data)
                } else {
                    V4_EXACT_1.get(&data)
                }
            };
            if let Some(v) = exact {
                return v.first_match(port, proto_class);
            }
            let block = v4_block_key(dir, *a);
            // SAFETY: as above.
            let folded = unsafe {
                if set == 0 {
                    V4_BLOCKS_0.get(&block)
                } else {
                    V4_BLOCKS_1.get(&block)
                }
            };
            if let Some(v) = folded {
                return v.first_match_host(a[3], port, proto_class);
            }
            let key = Key::new(key_prefix_len(32), data);
            let entry = if set == 0 {
                V4_RULES_0.get(&key)
            } else {
                V4_RULES_1.get(&key)
            };
            entry.and_then(|e| e.first_match(port, proto_class))
        }
        Dst::V6(a) => {
            let data = v6_key(dir, *a);
            // SAFETY: as above.
            let exact = unsafe {
                if set == 0 {
                    V6_EXACT_0.get(&data)
                } else {
                    V6_EXACT_1.get(&data)
                }
            };
            if let Some(v) = exact {
                return v.first_match(port, proto_class);
            }
            let key = Key::new(key_prefix_len(128), data);
            let entry = if set == 0 {
                V6_RULES_0.get(&key)
            } else {
                V6_RULES_1.get(&key)
            };
            entry.and_then(|e| e.first_match(port, proto_class))
        }
    }
}

/// Ingress (the API guard): the rule id that refuses a connection or datagram from `peer` to a
/// guarded port of [`surface`] `surf`, or `None` when the rules let the peer in. Ingress
/// entries are the `api:` section's `allow` (port [`surface::WEB`], TCP) and `cluster_allow`
/// (port [`surface::CLUSTER`], TCP and UDP) CIDRs; a web peer none of them allows gets the
/// section's default, a cluster peer is refused (its own `--cluster.peer`s are the caller's).
#[inline(always)]
pub fn can_ingress(
    set: u32,
    api: &ApiConfig,
    peer: &Dst,
    surf: u16,
    proto_class: u8,
) -> Option<u32> {
    match can_access(set, direction::INGRESS, peer, surf, proto_class) {
        Some(c) if c.action == action::ALLOW => None,
        Some(c) => Some(c.rule_id),
        None if surf == surface::CLUSTER || api.default_verdict == verdict::DENY => {
            Some(rule_id::DEFAULT)
        }
        None => None,
    }
}

/// Step 1 for an IPv6 address taken from a packet: a spelling that embeds an IPv4 address at a
/// fixed place is decided as that address, by the one definition the egress programs and the
/// agent use ([`enforcer_common::embedded_ipv4`]).
#[inline(always)]
pub fn normalise_v6(a: [u8; 16]) -> Dst {
    let word = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    match enforcer_common::embedded_ipv4([word(0), word(4), word(8), word(12)]) {
        Some(v4) => Dst::V4(v4.to_ne_bytes()),
        None => Dst::V6(a),
    }
}

/// Egress (the decision order of docs/design.md after normalisation): the rule id that denies `dst`, or
/// `None` when it is allowed.
#[inline(always)]
pub fn can_egress(set: u32, cfg: &Config, dst: &Dst, port: u16, proto_class: u8) -> Option<u32> {
    let clause = if egress_prefilter_covers(set, dst) {
        can_access(set, direction::EGRESS, dst, port, proto_class)
    } else {
        None
    };
    match clause {
        Some(c) if c.action == action::ALLOW => None,
        Some(c) => Some(c.rule_id),
        // Step 4, FQDN-learned addresses: consulted only when no clause matched and only when
        // the default would deny (otherwise the verdict is "allow" either way).
        None if cfg.default_verdict == verdict::DENY
            && !fqdn::allows(dst, set, port, proto_class) =>
        {
            Some(rule_id::DEFAULT)
        }
        None => None,
    }
}

/// The IPv4 egress prefilter: false proves no egress entry can match `dst` (its /24 block is
/// in no entry), which skips the LPM walk. IPv6 is always looked up.
#[inline(always)]
fn egress_prefilter_covers(set: u32, dst: &Dst) -> bool {
    match dst {
        Dst::V4(a) => {
            let (word, bit) = v4_filter_pos(*a);
            // A missing filter (cannot happen for an index below max_entries) means "look".
            V4_FILTER.get(set).is_none_or(|f| f[word] & bit != 0)
        }
        Dst::V6(_) => true,
    }
}
