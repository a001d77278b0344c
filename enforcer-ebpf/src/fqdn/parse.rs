//! The DNS message parser shared by the query recorder ([`super::query`]) and the learning
//! program ([`super::learn`]): the header, the question name (as a [`NameKey`]), and its match
//! against the allowlisted names (exact and `*.` wildcard). The answer section is walked by
//! [`super::answer`].
//!
//! Parsing works on a per-CPU copy of the DNS message; every index is masked into the buffer
//! and every loop is a `bpf_loop` callback, which is what the verifier needs. Offsets are
//! checked against the copied length before use, so stale bytes of an earlier packet are never
//! read.
use aya_ebpf::helpers::bpf_loop;
use enforcer_common::fqdn::{LearnedAnswer, MAX_LEARNED, NAME_KEY_LEN, QueryKey, counter};

use super::{FQDN_EXACT, FQDN_SCRATCH, FQDN_WILDCARD};

/// DNS messages are parsed from the first 4 KiB (larger UDP answers are refused as
/// truncated; classic DNS over UDP is at most 512 bytes, EDNS answers usually 1232).
pub(super) const PKT_MAX: usize = 4096;
const PKT_MASK: usize = PKT_MAX - 1;
const KEY_MASK: usize = NAME_KEY_LEN - 1;
/// Labels per name (a 255-byte name has at most 127).
const MAX_LABELS: usize = 128;

pub(super) const TYPE_A: u16 = 1;
pub(super) const TYPE_CNAME: u16 = 5;
pub(super) const TYPE_AAAA: u16 = 28;
pub(super) const CLASS_IN: u16 = 1;

/// Scratch slots: the learning program's (ingress, softirq) and the query recorder's (egress,
/// process context, which a softirq can interrupt on the same CPU): separate buffers.
pub(super) const SLOT_INGRESS: u32 = 0;
pub(super) const SLOT_EGRESS: u32 = 1;
pub(super) const SLOTS: u32 = 2;

#[repr(C)]
pub struct Scratch {
    pub(super) pkt: [u8; PKT_MAX],
    /// The question name as a [`NameKey`], zeroed label by label while matching.
    key: NameKey,
    /// The socket's query this message is (egress) or answers (ingress): socket cookie, id,
    /// question type and the question name as a [`NameKey`], intact (also for events).
    pub(super) query: QueryKey,
    /// The CNAME chain's current name: lower-case wire-format labels without the root label,
    /// `chain_len` bytes (the question name at first).
    pub(super) chain: [u8; NAME_KEY_LEN],
    pub(super) chain_len: u64,
    /// The parse position. Read and written with volatile accesses, so the verifier sees an
    /// unknown value at the top of every iteration (then bounded by the checks) instead of a
    /// range that differs per iteration: a callback verifies once.
    pub(super) cursor: u64,
    /// Label boundary the matching loop is heading for (volatile, like `cursor`).
    next: u64,
    /// Length of the question name's labels and where they start in the key (volatile: the
    /// verifier must not split paths per name length).
    qlen: u64,
    start: u64,
    /// Rule slots of the exact and wildcard names the question name matches (volatile: written
    /// by the `wildcard_step` callback).
    mask: u64,
    /// A/AAAA answers collected by the answer walk, learned by a second loop (keeping helper
    /// calls out of the parse loop keeps its verification small).
    pub(super) found: [Found; MAX_LEARNED],
    pub(super) n_found: u64,
    /// Answer records still to read.
    pub(super) left: u64,
    /// Bytes of the DNS message in `pkt`.
    pub(super) n: u64,
    /// How the question name's scan ended (`Q_*`, volatile).
    q_end: u64,
    /// The answer walk's state (see `super::answer`).
    pub(super) phase: u64,
    pub(super) outcome: u64,
    pub(super) rdata_end: u64,
    pub(super) qtype: u64,
    /// The name being read: bytes emitted, bytes left of the current label, the offset every
    /// compression pointer must stay below, where the record continues after a pointer, and
    /// whether the name differs from `chain`.
    pub(super) nm_out: u64,
    pub(super) nm_label: u64,
    pub(super) nm_limit: u64,
    pub(super) nm_resume: u64,
    pub(super) nm_diff: u64,
    /// Records skipped (off the chain, other type), for the counters.
    pub(super) off_chain: u64,
    pub(super) other_type: u64,
    /// The UDP checksum's running sum.
    pub(super) sum: u64,
}

/// `Scratch::q_end` values.
const Q_OPEN: usize = 0;
const Q_ENDED: usize = 1;
const Q_TRUNCATED: usize = 2;
const Q_MALFORMED: usize = 3;

pub(super) type Found = LearnedAnswer;
type NameKey = enforcer_common::fqdn::NameKey;

/// The scratch value of the slot a `bpf_loop` callback's context points at, as a raw pointer.
///
/// Aliasing: a slot is used by one program type, which is not preempted by another run of
/// itself on the same CPU. Within a run, the caller and each callback turn the pointer into a
/// `&mut Scratch` only for a stretch of code that calls no `bpf_loop`: a callback's reference
/// and the caller's never live at the same time.
#[inline(always)]
pub(super) fn slot_of(ctx: *mut core::ffi::c_void) -> Option<*mut Scratch> {
    if ctx.is_null() {
        return None;
    }
    // SAFETY: every `bpf_loop` of this module passes a pointer to the caller's `u32` slot.
    let slot = unsafe { *(ctx as *const u32) };
    FQDN_SCRATCH.get_ptr_mut(slot)
}

/// Runs `step` up to `n` times over the scratch of `slot` (a `bpf_loop`: the verifier checks
/// the callback once, whatever the count).
#[inline(always)]
pub(super) fn run(n: usize, step: extern "C" fn(u64, *mut core::ffi::c_void) -> i64, slot: u32) {
    let mut slot = slot;
    // SAFETY: `step` has the callback signature bpf_loop expects; its context is a pointer to
    // `slot` on this stack frame, alive during the call.
    unsafe {
        bpf_loop(
            n as u32,
            step as *const () as *mut core::ffi::c_void,
            core::ptr::addr_of_mut!(slot).cast(),
            0,
        )
    };
}

/// One label of the question name (a `bpf_loop` callback): returns 0 to go on, 1 to stop with
/// `Scratch::q_end` saying why.
#[inline(never)]
extern "C" fn qname_step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let Some(p) = slot_of(ctx) else {
        return 1;
    };
    // SAFETY: this CPU's scratch value; no other reference to it is live while a callback
    // runs (see `slot_of`).
    let s = unsafe { &mut *p };
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

/// Byte `p` (0..NAME_KEY_LEN) of `Scratch::key` and `Scratch::query.name` (a `bpf_loop`
/// callback): the question name's bytes lower-cased from `Scratch::start` on, zero before;
/// the name's bytes also start the CNAME chain (`Scratch::chain`).
#[inline(never)]
extern "C" fn key_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let Some(p) = slot_of(ctx) else {
        return 1;
    };
    // SAFETY: this CPU's scratch value; no other reference to it is live while a callback
    // runs (see `slot_of`).
    let s = unsafe { &mut *p };
    let p = index as usize;
    if p >= NAME_KEY_LEN {
        return 1;
    }
    let start = get(&s.start);
    let b = if p >= start && p - start < get(&s.qlen) {
        let b = lower(at(&s.pkt, 12 + (p - start)));
        s.chain[opaque(p - start) & KEY_MASK] = b;
        b
    } else {
        0
    };
    let i = opaque(p) & KEY_MASK;
    s.key[i] = b;
    s.query.name[i] = b;
    0
}

/// One key position `i` (1..NAME_KEY_LEN) of the wildcard match (a `bpf_loop` callback, index
/// `i - 1`): clears key byte `i - 1`, and at a label boundary looks the remaining suffix up in
/// `FQDN_WILDCARD`, OR-ing its rules into `Scratch::mask`. Returns 0 to go on, 1 to stop.
#[inline(never)]
extern "C" fn wildcard_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let Some(p) = slot_of(ctx) else {
        return 1;
    };
    // SAFETY: this CPU's scratch value; no other reference to it is live while a callback
    // runs (see `slot_of`).
    let s = unsafe { &mut *p };
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
pub(super) fn get(v: &u64) -> usize {
    // SAFETY: a plain load of a field of our per-CPU scratch value.
    unsafe { core::ptr::read_volatile(v) as usize }
}

#[inline(always)]
pub(super) fn put(v: &mut u64, x: usize) {
    // SAFETY: a plain store to a field of our per-CPU scratch value.
    unsafe { core::ptr::write_volatile(v, x as u64) }
}

/// Byte `off` of the packet copy. The offset goes through [`opaque`] before the mask: after a
/// check like `off < n` (with `n <= PKT_MAX`) LLVM knows the mask changes nothing and drops it,
/// and verifiers before Linux 6.8 or so do not learn a bound from comparing two unknown
/// registers, so the access would be refused as unbounded.
#[inline(always)]
pub(super) fn at(buf: &[u8; PKT_MAX], off: usize) -> u8 {
    buf[opaque(off) & PKT_MASK]
}

/// `x`, with every fact LLVM knew about it forgotten (a volatile round trip through the stack).
#[inline(always)]
pub(super) fn opaque(x: usize) -> usize {
    let mut v = 0usize;
    // SAFETY: volatile accesses of a local.
    unsafe {
        core::ptr::write_volatile(&mut v, x);
        core::ptr::read_volatile(&v)
    }
}

#[inline(always)]
pub(super) fn be16(buf: &[u8; PKT_MAX], off: usize) -> u16 {
    ((at(buf, off) as u16) << 8) | at(buf, off + 1) as u16
}

/// The question of the message copied into the scratch of `slot` (`n` bytes): one question,
/// plain labels (a compression pointer in the question is malformed), class IN. Fills
/// `Scratch::query` (id, type, name; not the cookie), `Scratch::chain` and the matching key,
/// and returns the offset after the question. `Err(None)`: not a message to look at further;
/// `Err(Some(c))`: malformed, counted as `c` by callers that care.
pub(super) fn question(p: *mut Scratch, slot: u32, n: usize) -> Result<usize, Option<u32>> {
    // SAFETY: this CPU's scratch value; this reference ends before the first `bpf_loop`.
    let s = unsafe { &mut *p };
    if be16(&s.pkt, 4) != 1 {
        return Err(None);
    }
    // One label per `bpf_loop` step (`qname_step`). The loops of this module are `bpf_loop`
    // callbacks, verified once: Linux 6.1's verifier walks a plain loop iteration by iteration
    // (and refuses a loop whose back-edge is a non-jump instruction's fall-through).
    put(&mut s.cursor, 12);
    put(&mut s.n, n);
    put(&mut s.q_end, Q_OPEN);
    run(MAX_LABELS, qname_step, slot);
    // SAFETY: the callbacks' references ended with `bpf_loop`; this one lives until the next.
    let s = unsafe { &mut *p };
    match get(&s.q_end) {
        Q_ENDED => {}
        Q_TRUNCATED => return Err(Some(counter::TRUNCATED)),
        _ => return Err(Some(counter::MALFORMED)),
    }
    let off = get(&s.cursor);
    if off <= 12 || off - 12 > NAME_KEY_LEN - 2 {
        return Err(Some(counter::MALFORMED));
    }
    if off + 5 > n {
        return Err(Some(counter::TRUNCATED));
    }
    let qtype = be16(&s.pkt, off + 1);
    let qclass = be16(&s.pkt, off + 3);
    if qclass != CLASS_IN {
        return Err(Some(counter::QUESTION_TYPE));
    }
    s.query.id = u16::from_ne_bytes([at(&s.pkt, 0), at(&s.pkt, 1)]);
    s.query.qtype = qtype;
    s.query._pad = 0;
    put(&mut s.qtype, qtype as usize);
    put(&mut s.qlen, off - 12);
    put(&mut s.chain_len, off - 12);
    put(&mut s.start, NAME_KEY_LEN - (off - 12));
    // `key`, `query.name` and `chain`: the name right-aligned (chain: left-aligned),
    // lower-cased, zeros before it (`key_step`).
    run(NAME_KEY_LEN, key_step, slot);
    Ok(off + 5)
}

/// The rule slots of the exact and wildcard names the question (see [`question`]) matches:
/// the whole name against exact names, then every proper suffix (zero the leading label, look
/// up what remains) against wildcard names, one key position per `bpf_loop` step
/// (`wildcard_step`). A `for` loop here ended its body with the map lookup, which Linux 6.1's
/// CFG check refuses as a back-edge from a non-jump instruction.
pub(super) fn allowlisted(p: *mut Scratch, slot: u32) -> u64 {
    // SAFETY: this CPU's scratch value; this reference ends before the first `bpf_loop`.
    let s = unsafe { &mut *p };
    // SAFETY: the value is a plain u64 mask, copied out at once.
    let exact = unsafe { FQDN_EXACT.get(&s.key) }.copied().unwrap_or(0);
    put(&mut s.mask, exact as usize);
    let start = get(&s.start);
    put(&mut s.next, start + s.key[start & KEY_MASK] as usize + 1);
    run(NAME_KEY_LEN - 1, wildcard_step, slot);
    // SAFETY: the callbacks' references ended with `bpf_loop`.
    let s = unsafe { &mut *p };
    get(&s.mask) as u64
}

#[inline(always)]
pub(super) fn lower(b: u8) -> u8 {
    // Length bytes are <= 63, below 'A': only letters change.
    if b.is_ascii_uppercase() { b | 0x20 } else { b }
}
