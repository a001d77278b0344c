//! Step 4 of the decision order (FQDN-learned addresses) and the program that learns them.
//!
//! `enforcer_dns_ingress` is a `cgroup_skb/ingress` program on the protected cgroup. The kernel
//! runs it on every packet delivered to one of the cgroup's sockets *before* the packet is
//! queued on the socket, so when it inserts the A/AAAA answers of a DNS response into
//! `FQDN_LEARNED_*`, the process cannot have read that response yet: its first `connect()` to a
//! fresh answer already finds the address. The program only learns: it always returns 1 (pass).
//!
//! Parsing works on a per-CPU copy of the DNS message; every index is masked into the buffer
//! and every loop has a constant bound, which is what the verifier needs. Offsets are checked
//! against the copied length before use, so stale bytes of an earlier packet are never read.
use aya_ebpf::{
    bindings::{
        BPF_ANY, BPF_F_NO_PREALLOC, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
    },
    helpers::{bpf_ktime_get_ns, bpf_loop, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    macros::{cgroup_skb, map},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::SkBuffContext,
};
use enforcer_common::{
    ACTIVE_SETS, EventHeader,
    fqdn::{
        EVENT_LEARNED, EVENTS_BYTES, EVENTS_WAKEUP_BYTES, FqdnEntry, FqdnSettings,
        LEARNED_CAPACITY, LEARNED_EVENT_VERSION, LearnedAnswer, LearnedEvent, MAX_LEARNED,
        MAX_RULES, NAME_KEY_LEN, NameKey, PORTS_CAPACITY, PortKey, RESOLVED_CAPACITY, class_index,
        counter, flags, status,
    },
    ring_record_bytes, wakeup_crossed,
};

use crate::Dst;

#[map]
static FQDN_LEARNED_V4: HashMap<[u8; 4], FqdnEntry> =
    HashMap::with_max_entries(LEARNED_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
static FQDN_LEARNED_V6: HashMap<[u8; 16], FqdnEntry> =
    HashMap::with_max_entries(LEARNED_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
static FQDN_RESOLVED_V4: HashMap<[u8; 4], FqdnEntry> =
    HashMap::with_max_entries(RESOLVED_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
static FQDN_RESOLVED_V6: HashMap<[u8; 16], FqdnEntry> =
    HashMap::with_max_entries(RESOLVED_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
static FQDN_EXACT: HashMap<NameKey, u64> = HashMap::with_max_entries(MAX_RULES, 0);
#[map]
static FQDN_WILDCARD: HashMap<NameKey, u64> = HashMap::with_max_entries(MAX_RULES, 0);
#[map]
static FQDN_ANY_PORT: Array<u64> = Array::with_max_entries(ACTIVE_SETS * 3, 0);
#[map]
static FQDN_PORTS: HashMap<PortKey, u64> =
    HashMap::with_max_entries(PORTS_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
static FQDN_SETTINGS: Array<FqdnSettings> = Array::with_max_entries(1, 0);
#[map]
static FQDN_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
static FQDN_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);
#[map]
static FQDN_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// DNS messages are parsed from the first 4 KiB (UDP answers beyond that are counted as
/// truncated; classic DNS over UDP is at most 512 bytes, EDNS answers usually 1232).
const PKT_MAX: usize = 4096;
const PKT_MASK: usize = PKT_MAX - 1;
const KEY_MASK: usize = NAME_KEY_LEN - 1;
/// Steps of the answer-section loop: one per owner-name label (a compressed owner name is one
/// step) and one per record body, so about 128 records with compressed owners.
const MAX_STEPS: usize = 256;
/// Labels per name (a 255-byte name has at most 127).
const MAX_LABELS: usize = 128;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_UDP: u8 = 17;
const DNS_PORT: u16 = 53;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

#[repr(C)]
pub struct Scratch {
    pkt: [u8; PKT_MAX],
    /// The question name as a [`NameKey`], zeroed label by label while matching.
    key: NameKey,
    /// The question name as a [`NameKey`], intact (for events).
    name: NameKey,
    /// The parse position between answer records. Read and written with volatile accesses, so
    /// the verifier sees an unknown value at the top of every iteration (then bounded by the
    /// checks) instead of a range that differs per iteration: the loop verifies in a few
    /// iterations instead of exploding into one state per record and label.
    cursor: u64,
    /// Label boundary the matching loop is heading for (volatile, like `cursor`).
    next: u64,
    /// Length of the question name's labels and where they start in the key (volatile: the
    /// verifier must not split paths per name length).
    qlen: u64,
    start: u64,
    /// Rule slots of the exact and wildcard names the question name matches (volatile: written
    /// by the `wildcard_step` callback).
    mask: u64,
    /// A/AAAA answers collected by the parse loop, learned by a second loop (keeping helper
    /// calls out of the parse loop keeps its verification small).
    found: [Found; MAX_LEARNED],
    n_found: u64,
    /// Answer records still to read, and how the last owner name ended (volatile).
    left: u64,
    name_state: u64,
    /// Bytes of the DNS message in `pkt`.
    n: u64,
    /// How the question name's scan ended (`Q_*`, volatile).
    q_end: u64,
}

/// `Scratch::q_end` values.
const Q_OPEN: usize = 0;
const Q_ENDED: usize = 1;
const Q_TRUNCATED: usize = 2;
const Q_MALFORMED: usize = 3;

/// `Scratch::name_state` values.
const NAME_OPEN: usize = 0;
const NAME_ENDED: usize = 1;

type Found = LearnedAnswer;

/// This CPU's scratch value, for the `bpf_loop` callbacks (they take no context).
#[inline(always)]
fn scratch() -> Option<&'static mut Scratch> {
    let s = FQDN_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the per-CPU scratch value of this CPU; a cgroup_skb program is not preempted
    // by another run of itself on the same CPU, so nothing else uses it while we do.
    Some(unsafe { &mut *s })
}

/// One step of the answer section (a `bpf_loop` callback): returns 0 to go on, 1 to stop.
#[inline(never)]
extern "C" fn answer_step(_index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let n = get(&s.n);
    let left = get(&s.left);
    if left == 0 || n > PKT_MAX {
        return 1;
    }
    let off = get(&s.cursor);
    if get(&s.name_state) == NAME_OPEN {
        // One label of the owner name: the root label or a compression pointer ends it.
        if off >= n {
            return 1;
        }
        let l = at(&s.pkt, off) as usize;
        if l == 0 {
            put(&mut s.cursor, off + 1);
            put(&mut s.name_state, NAME_ENDED);
        } else if l & 0xc0 == 0xc0 {
            put(&mut s.cursor, off + 2);
            put(&mut s.name_state, NAME_ENDED);
        } else if l & 0xc0 != 0 {
            return 1;
        } else {
            put(&mut s.cursor, off + l + 1);
        }
        return 0;
    }
    // The record after its owner name.
    if off + 10 > n {
        return 1;
    }
    let rtype = be16(&s.pkt, off);
    let class = be16(&s.pkt, off + 2);
    let ttl = ((be16(&s.pkt, off + 4) as u32) << 16) | be16(&s.pkt, off + 6) as u32;
    let rdlen = be16(&s.pkt, off + 8) as usize;
    let off = off + 10;
    if off + rdlen > n {
        return 1;
    }
    put(&mut s.cursor, off + rdlen);
    put(&mut s.left, left - 1);
    put(&mut s.name_state, NAME_OPEN);
    let v4 = rtype == TYPE_A && rdlen == 4;
    if class != CLASS_IN || !(v4 || rtype == TYPE_AAAA && rdlen == 16) {
        return 0;
    }
    let k = get(&s.n_found);
    if k >= MAX_LEARNED {
        return 0;
    }
    let w = |k: usize| {
        u32::from_ne_bytes([
            at(&s.pkt, off + 4 * k),
            at(&s.pkt, off + 4 * k + 1),
            at(&s.pkt, off + 4 * k + 2),
            at(&s.pkt, off + 4 * k + 3),
        ])
    };
    let f = if v4 {
        Found {
            addr: [w(0), 0, 0, 0],
            ttl,
            v4: 1,
            ..Found::default()
        }
    } else {
        let a = [w(0), w(1), w(2), w(3)];
        // The verdict decides IPv4-mapped and NAT64 (DNS64) addresses as the IPv4 address they
        // carry: learn them there, so step 4 finds them and step 3 judges the real target.
        let mapped = a[0] == 0 && a[1] == 0 && a[2] == 0x0000_ffffu32.to_be();
        let nat64 = a[0] == 0x0064_ff9bu32.to_be() && a[1] == 0 && a[2] == 0;
        if mapped || nat64 {
            Found {
                addr: [a[3], 0, 0, 0],
                ttl,
                v4: 1,
                ..Found::default()
            }
        } else {
            Found {
                addr: a,
                ttl,
                v4: 0,
                ..Found::default()
            }
        }
    };
    s.found[k % MAX_LEARNED] = f;
    put(&mut s.n_found, k + 1);
    0
}

/// One label of the question name (a `bpf_loop` callback): returns 0 to go on, 1 to stop with
/// `Scratch::q_end` saying why.
#[inline(never)]
extern "C" fn qname_step(_index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let off = get(&s.cursor);
    if off >= get(&s.n) {
        put(&mut s.q_end, Q_TRUNCATED);
        return 1;
    }
    let l = at(&s.pkt, off) as usize;
    if l == 0 {
        put(&mut s.q_end, Q_ENDED);
        return 1;
    }
    if l & 0xc0 != 0 {
        put(&mut s.q_end, Q_MALFORMED);
        return 1;
    }
    put(&mut s.cursor, off + l + 1);
    0
}

/// Byte `p` (0..NAME_KEY_LEN) of `Scratch::key` and `Scratch::name` (a `bpf_loop` callback):
/// the question name's bytes lower-cased from `Scratch::start` on, zero before.
#[inline(never)]
extern "C" fn key_step(index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let p = index as usize;
    if p >= NAME_KEY_LEN {
        return 1;
    }
    let start = get(&s.start);
    let b = if p >= start && p - start < get(&s.qlen) {
        lower(at(&s.pkt, 12 + (p - start)))
    } else {
        0
    };
    let i = opaque(p) & KEY_MASK;
    s.key[i] = b;
    s.name[i] = b;
    0
}

/// One key position `i` (1..NAME_KEY_LEN) of the wildcard match (a `bpf_loop` callback, index
/// `i - 1`): clears key byte `i - 1`, and at a label boundary looks the remaining suffix up in
/// `FQDN_WILDCARD`, OR-ing its rules into `Scratch::mask`. Returns 0 to go on, 1 to stop.
#[inline(never)]
extern "C" fn wildcard_step(index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(s) = scratch() else {
        return 1;
    };
    let i = index as usize + 1;
    if i >= NAME_KEY_LEN {
        return 1;
    }
    if i <= get(&s.start) {
        return 0;
    }
    // Clear byte i-1: every byte before `i` is now zero. (Indices go through `opaque`, see
    // `at`: LLVM would index with the unbounded `index` register instead.)
    s.key[opaque(i - 1) & KEY_MASK] = 0;
    if i == get(&s.next) {
        // SAFETY: the value is a plain u64 mask, copied out at once.
        let m = unsafe { FQDN_WILDCARD.get(&s.key) }.copied().unwrap_or(0);
        let mask = get(&s.mask) | m as usize;
        put(&mut s.mask, mask);
        put(&mut s.next, i + s.key[opaque(i) & KEY_MASK] as usize + 1);
    }
    0
}

/// Reads a loop-carried value from the scratch (opaque to the verifier, see `Scratch::cursor`).
#[inline(always)]
fn get(v: &u64) -> usize {
    // SAFETY: a plain load of a field of our per-CPU scratch value.
    unsafe { core::ptr::read_volatile(v) as usize }
}

#[inline(always)]
fn put(v: &mut u64, x: usize) {
    // SAFETY: a plain store to a field of our per-CPU scratch value.
    unsafe { core::ptr::write_volatile(v, x as u64) }
}

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

#[cgroup_skb]
pub fn enforcer_dns_ingress(ctx: SkBuffContext) -> i32 {
    if let Err(c) = learn(&ctx) {
        count(c);
    }
    // Never drop: this program only learns.
    1
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

fn learn(ctx: &SkBuffContext) -> Result<(), u32> {
    let skb = &ctx.skb;
    let proto = u16::from_be(skb.protocol() as u16);
    let (udp, v6_packet) = match proto {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(0).map_err(|_| NOTHING)?;
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return Err(NOTHING);
            }
            let p: u8 = ctx.load(9).map_err(|_| NOTHING)?;
            let frag: u16 = ctx.load(6).map_err(|_| NOTHING)?;
            // A fragment's second part has no UDP header; DNS over UDP is rarely fragmented.
            if p != IPPROTO_UDP || u16::from_be(frag) & 0x3fff != 0 {
                return Err(NOTHING);
            }
            (ihl, false)
        }
        ETH_P_IPV6 => {
            // Responses carry no extension headers in practice; those that do are not parsed.
            let next: u8 = ctx.load(6).map_err(|_| NOTHING)?;
            if next != IPPROTO_UDP {
                return Err(NOTHING);
            }
            (40, true)
        }
        _ => return Err(NOTHING),
    };
    let sport: u16 = ctx.load(udp).map_err(|_| NOTHING)?;
    if u16::from_be(sport) != DNS_PORT {
        return Err(NOTHING);
    }
    let settings = FQDN_SETTINGS.get(0).copied().unwrap_or_default();
    if settings.flags & flags::REQUIRE_CONNECTED_PEER != 0 && !from_connected_peer(ctx, v6_packet)?
    {
        return Err(counter::UNVERIFIED_PEER);
    }
    let udp_len: u16 = ctx.load(udp + 4).map_err(|_| NOTHING)?;
    let payload = udp + 8;
    let avail = (skb.len() as usize).saturating_sub(payload);
    let n = (u16::from_be(udp_len) as usize)
        .saturating_sub(8)
        .min(avail);
    if n < 12 {
        return Err(NOTHING);
    }
    let truncated = n > PKT_MAX;
    let n = if truncated { PKT_MAX } else { n };
    let scratch = FQDN_SCRATCH.get_ptr_mut(0).ok_or(NOTHING)?;
    // SAFETY: the per-CPU scratch value of this CPU; nothing else runs here while we do.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: `n` is in 12..=PKT_MAX and the buffer holds PKT_MAX bytes.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            payload as u32,
            scratch.pkt.as_mut_ptr().cast(),
            (n & (2 * PKT_MAX - 1)) as u32,
        )
    };
    if r != 0 {
        return Err(NOTHING);
    }
    parse(ctx, scratch, n, truncated, &settings)
}

/// True when the socket is connected (UDP `connect()`) to the packet's source address and
/// port: the answer comes from the server this socket queried, which our connect hook allowed.
#[inline(always)]
fn from_connected_peer(ctx: &SkBuffContext, v6_packet: bool) -> Result<bool, u32> {
    let skb = &ctx.skb;
    // `remote_port` holds the network-order port, shifted into the upper half on
    // little-endian kernels.
    let rp = skb.remote_port();
    let rp = if rp > 0xffff { rp >> 16 } else { rp };
    if u16::from_be(rp as u16) != DNS_PORT {
        return Ok(false);
    }
    if v6_packet {
        let src: [u32; 4] = ctx.load(8).map_err(|_| NOTHING)?;
        let peer = skb.remote_ipv6();
        Ok(src[0] == peer[0] && src[1] == peer[1] && src[2] == peer[2] && src[3] == peer[3])
    } else {
        let src: u32 = ctx.load(12).map_err(|_| NOTHING)?;
        Ok(src == skb.remote_ipv4())
    }
}

/// Byte `off` of the packet copy. The offset goes through [`opaque`] before the mask: after a
/// check like `off < n` (with `n <= PKT_MAX`) LLVM knows the mask changes nothing and drops it,
/// and verifiers before Linux 6.8 or so do not learn a bound from comparing two unknown
/// registers, so the access would be refused as unbounded.
#[inline(always)]
fn at(buf: &[u8; PKT_MAX], off: usize) -> u8 {
    buf[opaque(off) & PKT_MASK]
}

/// `x`, with every fact LLVM knew about it forgotten (a volatile round trip through the stack).
#[inline(always)]
fn opaque(x: usize) -> usize {
    let mut v = 0usize;
    // SAFETY: volatile accesses of a local.
    unsafe {
        core::ptr::write_volatile(&mut v, x);
        core::ptr::read_volatile(&v)
    }
}

#[inline(always)]
fn be16(buf: &[u8; PKT_MAX], off: usize) -> u16 {
    ((at(buf, off) as u16) << 8) | at(buf, off + 1) as u16
}

fn parse(
    ctx: &SkBuffContext,
    s: &mut Scratch,
    n: usize,
    truncated: bool,
    settings: &FqdnSettings,
) -> Result<(), u32> {
    let flags_hi = at(&s.pkt, 2);
    let flags_lo = at(&s.pkt, 3);
    // A response (QR), standard query (opcode 0), NOERROR, one question.
    if flags_hi & 0x80 == 0 || (flags_hi >> 3) & 0x0f != 0 || flags_lo & 0x0f != 0 {
        return Err(NOTHING);
    }
    if be16(&s.pkt, 4) != 1 {
        return Err(NOTHING);
    }
    let answers = be16(&s.pkt, 6) as usize;

    // The question name: plain labels (a compression pointer in the question is malformed),
    // one label per `bpf_loop` step (`qname_step`). The loops of this function are `bpf_loop`
    // callbacks, verified once: Linux 6.1's verifier walks a plain loop iteration by iteration
    // (and refuses a loop whose back-edge is a non-jump instruction's fall-through).
    put(&mut s.cursor, 12);
    put(&mut s.n, n);
    put(&mut s.q_end, Q_OPEN);
    // SAFETY: `qname_step` has the callback signature bpf_loop expects; it takes no context.
    unsafe {
        bpf_loop(
            MAX_LABELS as u32,
            qname_step as *const () as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    match get(&s.q_end) {
        Q_ENDED => {}
        Q_TRUNCATED => return Err(counter::TRUNCATED),
        _ => return Err(counter::MALFORMED),
    }
    let off = get(&s.cursor);
    if off <= 12 || off - 12 > NAME_KEY_LEN - 2 {
        return Err(counter::MALFORMED);
    }
    put(&mut s.qlen, off - 12);
    put(&mut s.start, NAME_KEY_LEN - (off - 12));
    // `key` and `name`: the name right-aligned, lower-cased, zeros before it (`key_step`).
    // SAFETY: `key_step` has the callback signature bpf_loop expects; it takes no context.
    unsafe {
        bpf_loop(
            NAME_KEY_LEN as u32,
            key_step as *const () as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        )
    };

    // Match: the whole name against exact names, then every proper suffix (zero the leading
    // label, look up what remains) against wildcard names, one key position per `bpf_loop`
    // step (`wildcard_step`). A `for` loop here ended its body with the map lookup, which
    // Linux 6.1's CFG check refuses as a back-edge from a non-jump instruction.
    // SAFETY: the value is a plain u64 mask, copied out at once.
    let exact = unsafe { FQDN_EXACT.get(&s.key) }.copied().unwrap_or(0);
    put(&mut s.mask, exact as usize);
    let start = get(&s.start);
    put(&mut s.next, start + s.key[start & KEY_MASK] as usize + 1);
    // SAFETY: `wildcard_step` has the callback signature bpf_loop expects; it takes no context.
    unsafe {
        bpf_loop(
            (NAME_KEY_LEN - 1) as u32,
            wildcard_step as *const () as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    let mask = get(&s.mask) as u64;
    if mask == 0 {
        return Ok(());
    }
    count(counter::MATCHED_RESPONSES);
    if flags_hi & 0x02 != 0 {
        count(counter::TC_BIT);
    }

    // Past the root label, QTYPE and QCLASS. Every loop-carried value lives in the scratch.
    put(&mut s.cursor, off + 1 + 4);
    put(&mut s.left, answers);
    put(&mut s.n_found, 0);
    // The answer section, one owner-name label or one record body per `bpf_loop` step: the
    // verifier checks the step once instead of walking every iteration of a loop.
    put(&mut s.name_state, NAME_OPEN);
    // SAFETY: `answer_step` has the callback signature bpf_loop expects; it takes no context.
    unsafe {
        bpf_loop(
            MAX_STEPS as u32,
            answer_step as *const () as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    if get(&s.left) != 0 || truncated {
        count(counter::TRUNCATED);
    }

    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    for k in 0..MAX_LEARNED {
        if k >= get(&s.n_found) {
            break;
        }
        store(&mut s.found[k], mask, now, settings);
    }
    emit(ctx, s, mask);
    Ok(())
}

#[inline(always)]
fn lower(b: u8) -> u8 {
    // Length bytes are <= 63, below 'A': only letters change.
    if b.is_ascii_uppercase() { b | 0x20 } else { b }
}

/// The merged entry: an unexpired old entry keeps its rules and (if later) its expiry; an
/// expired one is replaced, so rules of long-gone answers never come back.
#[inline(always)]
fn merged(old: Option<*const FqdnEntry>, mask: u64, expires: u64, now: u64) -> FqdnEntry {
    if let Some(p) = old {
        // SAFETY: pointer from a lookup of a no-prealloc hash map, valid for this run.
        let old = unsafe { *p };
        if old.expires_ns > now {
            return FqdnEntry {
                expires_ns: if old.expires_ns > expires {
                    old.expires_ns
                } else {
                    expires
                },
                rules: old.rules | mask,
            };
        }
    }
    FqdnEntry {
        expires_ns: expires,
        rules: mask,
    }
}

/// Writes one answer into the learned map of its family (read-merge-write: the kernel is the
/// only writer of these maps) and records the outcome in `f`.
#[inline(never)]
fn store(f: &mut Found, mask: u64, now: u64, settings: &FqdnSettings) {
    let ttl_ns = (f.ttl as u64 * 1_000_000_000).min(settings.max_ttl_ns);
    let expires = now + ttl_ns + settings.grace_ns;
    let (entry, inserted) = if f.v4 != 0 {
        let key = f.addr[0].to_ne_bytes();
        let entry = merged(FQDN_LEARNED_V4.get_ptr(&key), mask, expires, now);
        (
            entry,
            FQDN_LEARNED_V4.insert(&key, &entry, BPF_ANY as u64).is_ok(),
        )
    } else {
        let a = f.addr;
        let mut key = [0u8; 16];
        key[0..4].copy_from_slice(&a[0].to_ne_bytes());
        key[4..8].copy_from_slice(&a[1].to_ne_bytes());
        key[8..12].copy_from_slice(&a[2].to_ne_bytes());
        key[12..16].copy_from_slice(&a[3].to_ne_bytes());
        let entry = merged(FQDN_LEARNED_V6.get_ptr(&key), mask, expires, now);
        (
            entry,
            FQDN_LEARNED_V6.insert(&key, &entry, BPF_ANY as u64).is_ok(),
        )
    };
    f.entry_expires_ns = entry.expires_ns;
    f.entry_rules = entry.rules;
    f.status = if inserted {
        status::INSERTED
    } else {
        status::MAP_FULL
    } as u32;
    count(if inserted {
        counter::LEARNED
    } else {
        counter::MAP_FULL
    });
}

/// Queues one event for the response, waking the agent only once a batch is queued (it also
/// drains on a timer). The event's cgroup is the receiving socket's (`bpf_skb_cgroup_id`):
/// `bpf_get_current_cgroup_id` is not offered to cgroup_skb programs before Linux 6.2, and on
/// the ingress path `current` is whatever task the softirq interrupted anyway.
#[inline(always)]
fn emit(ctx: &SkBuffContext, s: &Scratch, rules: u64) {
    let Some(mut slot) = FQDN_EVENTS.reserve::<LearnedEvent>(0) else {
        count(counter::LOST_EVENTS);
        return;
    };
    let p = slot.as_mut_ptr();
    // SAFETY: `p` points at a reserved, exclusively owned ring-buffer record of this size;
    // every field is written before submit.
    unsafe {
        (*p).header = EventHeader {
            kind: EVENT_LEARNED,
            version: LEARNED_EVENT_VERSION,
            len: core::mem::size_of::<LearnedEvent>() as u32,
            ts_ns: bpf_ktime_get_ns(),
            cgroup_id: bpf_skb_cgroup_id(ctx.skb.skb),
        };
        (*p).rules = rules;
        (*p).count = get(&s.n_found) as u32;
        (*p)._pad = 0;
        (*p).name = s.name;
        (*p).answers = s.found;
    }
    // One wakeup per EVENTS_WAKEUP_BYTES queued, as on the deny path.
    let avail = FQDN_EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let record = ring_record_bytes(core::mem::size_of::<LearnedEvent>());
    let flags = if wakeup_crossed(avail, record, EVENTS_WAKEUP_BYTES) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    slot.submit(flags as u64);
}
