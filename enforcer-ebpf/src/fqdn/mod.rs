//! Step 4 of the decision order (FQDN-learned addresses): its maps and the verdict's lookup
//! ([`allows`]). The learning program is [`learn`] (with [`answer`] and [`csum`]), the query
//! recorder [`query`], their DNS parser [`parse`].
mod answer;
mod csum;
mod learn;
mod parse;
mod query;

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use enforcer_common::{
    ACTIVE_SETS,
    fqdn::{
        EVENTS_BYTES, FqdnEntry, FqdnSettings, LEARNED_CAPACITY, MAX_RULES, NameKey,
        PORTS_CAPACITY, PortKey, QUERIES_CAPACITY, QueryKey, RESOLVED_CAPACITY, class_index,
        counter,
    },
};

use crate::Dst;
use parse::Scratch;

#[map]
pub(super) static FQDN_LEARNED_V4: HashMap<[u8; 4], FqdnEntry> =
    HashMap::with_max_entries(LEARNED_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
pub(super) static FQDN_LEARNED_V6: HashMap<[u8; 16], FqdnEntry> =
    HashMap::with_max_entries(LEARNED_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
pub(super) static FQDN_RESOLVED_V4: HashMap<[u8; 4], FqdnEntry> =
    HashMap::with_max_entries(RESOLVED_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
pub(super) static FQDN_RESOLVED_V6: HashMap<[u8; 16], FqdnEntry> =
    HashMap::with_max_entries(RESOLVED_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
pub(super) static FQDN_EXACT: HashMap<NameKey, u64> = HashMap::with_max_entries(MAX_RULES, 0);
#[map]
pub(super) static FQDN_WILDCARD: HashMap<NameKey, u64> = HashMap::with_max_entries(MAX_RULES, 0);
#[map]
pub(super) static FQDN_ANY_PORT: Array<u64> = Array::with_max_entries(ACTIVE_SETS * 3, 0);
#[map]
pub(super) static FQDN_PORTS: HashMap<PortKey, u64> =
    HashMap::with_max_entries(PORTS_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
pub(super) static FQDN_SETTINGS: Array<FqdnSettings> = Array::with_max_entries(1, 0);
#[map]
pub(super) static FQDN_COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
pub(super) static FQDN_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);
#[map]
pub(super) static FQDN_SCRATCH: PerCpuArray<Scratch> =
    PerCpuArray::with_max_entries(parse::SLOTS, 0);
#[map]
pub(super) static FQDN_QUERIES: LruHashMap<QueryKey, u64> =
    LruHashMap::with_max_entries(QUERIES_CAPACITY, 0);

/// Step 4: an unexpired learned or resolved entry for the destination whose rule slots allow
/// `port`/`proto_class`. No loops: the slots allowing this port and protocol come from one or
/// two lookups, and an AND with the entry's slots decides. The resolved map is consulted only
/// when the learned one does not allow (the process resolved the name itself, the common case,
/// costs one address lookup).
#[inline(always)]
pub fn allows(dst: &Dst, set: u32, port: u16, proto_class: u8) -> bool {
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let learned = match dst {
        Dst::V4(a) => FQDN_LEARNED_V4.get_ptr(a),
        Dst::V6(a) => FQDN_LEARNED_V6.get_ptr(a),
    };
    if slots_allow(live_rules(learned, now), set, port, proto_class) {
        return true;
    }
    let resolved = match dst {
        Dst::V4(a) => FQDN_RESOLVED_V4.get_ptr(a),
        Dst::V6(a) => FQDN_RESOLVED_V6.get_ptr(a),
    };
    slots_allow(live_rules(resolved, now), set, port, proto_class)
}

/// Whether one of the rule slots in `rules` allows `port` with `proto_class` in rule set `set`.
#[inline(always)]
fn slots_allow(rules: u64, set: u32, port: u16, proto_class: u8) -> bool {
    if rules == 0 {
        return false;
    }
    let set = set % ACTIVE_SETS;
    let class = class_index(proto_class);
    let any = FQDN_ANY_PORT.get(set * 3 + class).copied().unwrap_or(0);
    if rules & any != 0 {
        return true;
    }
    let key = PortKey {
        set: set as u8,
        class: class as u8,
        port,
    };
    // SAFETY: the value is a plain u64, copied out at once.
    let on_port = unsafe { FQDN_PORTS.get(&key) }.copied().unwrap_or(0);
    rules & on_port != 0
}

/// The rule slots of an unexpired entry (0 when absent or expired).
#[inline(always)]
fn live_rules(entry: Option<*const FqdnEntry>, now: u64) -> u64 {
    let Some(p) = entry else { return 0 };
    // SAFETY: a pointer from a map lookup of a no-prealloc hash map: valid (RCU) for this run.
    let e = unsafe { *p };
    if e.expires_ns > now { e.rules } else { 0 }
}

/// Why a packet taught nothing, as a counter index; `NOTHING` is not counted.
const NOTHING: u32 = u32::MAX;

#[inline(always)]
fn count(index: u32) {
    if index == NOTHING {
        return;
    }
    if let Some(p) = FQDN_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; this program cannot be preempted by itself on this CPU.
        unsafe { *p += 1 };
    }
}

/// Adds `n` to counter `index`.
#[inline(always)]
fn count_n(index: u32, n: u64) {
    if n == 0 {
        return;
    }
    if let Some(p) = FQDN_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; this program cannot be preempted by itself on this CPU.
        unsafe { *p += n };
    }
}
