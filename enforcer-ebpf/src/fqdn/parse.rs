//! The DNS response parser of the learning program: the question name against the
//! allowlisted names (exact and `*.` wildcard), then the A/AAAA answers.
//!
//! Parsing works on a per-CPU copy of the DNS message; every index is masked into the buffer
//! and every loop is a `bpf_loop` callback or has a constant bound, which is what the verifier
//! needs. Offsets are checked against the copied length before use, so stale bytes of an
//! earlier packet are never read.
use aya_ebpf::helpers::bpf_loop;
use enforcer_common::fqdn::{LearnedAnswer, MAX_LEARNED, NAME_KEY_LEN, NameKey, counter};

use super::{FQDN_EXACT, FQDN_SCRATCH, FQDN_WILDCARD, NOTHING, count};

/// DNS messages are parsed from the first 4 KiB (UDP answers beyond that are counted as
/// truncated; classic DNS over UDP is at most 512 bytes, EDNS answers usually 1232).
pub(super) const PKT_MAX: usize = 4096;
const PKT_MASK: usize = PKT_MAX - 1;
const KEY_MASK: usize = NAME_KEY_LEN - 1;
/// Steps of the answer-section loop: one per owner-name label (a compressed owner name is one
/// step) and one per record body, so about 128 records with compressed owners.
const MAX_STEPS: usize = 256;
/// Labels per name (a 255-byte name has at most 127).
const MAX_LABELS: usize = 128;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

#[repr(C)]
pub struct Scratch {
    pub(super) pkt: [u8; PKT_MAX],
    /// The question name as a [`NameKey`], zeroed label by label while matching.
    key: NameKey,
    /// The question name as a [`NameKey`], intact (for events).
    pub(super) name: NameKey,
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
    pub(super) found: [Found; MAX_LEARNED],
    pub(super) n_found: u64,
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

pub(super) type Found = LearnedAnswer;

/// This CPU's scratch value, as a raw pointer (the `bpf_loop` callbacks take no context).
///
/// Aliasing: a cgroup_skb program is not preempted by another run of itself on the same CPU,
/// so only this run uses the value. Within the run, [`parse`] and each callback turn the
/// pointer into a `&mut Scratch` only for a stretch of code that calls no `bpf_loop`: a
/// callback's reference and the caller's never live at the same time.
#[inline(always)]
pub(super) fn scratch() -> Option<*mut Scratch> {
    FQDN_SCRATCH.get_ptr_mut(0)
}

/// One step of the answer section (a `bpf_loop` callback): returns 0 to go on, 1 to stop.
#[inline(never)]
extern "C" fn answer_step(_index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(p) = scratch() else {
        return 1;
    };
    // SAFETY: this CPU's scratch value; no other reference to it is live while a callback
    // runs (see `scratch`).
    let s = unsafe { &mut *p };
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
        // The verdict decides IPv6 spellings that embed an IPv4 address (mapped, SIIT, NAT64 —
        // DNS64 —, IPv4-compatible) as that IPv4 address: learn them there, so step 4 finds
        // them and step 3 judges the real target.
        match enforcer_common::embedded_ipv4(a) {
            Some(v4) => Found {
                addr: [v4, 0, 0, 0],
                ttl,
                v4: 1,
                ..Found::default()
            },
            None => Found {
                addr: a,
                ttl,
                v4: 0,
                ..Found::default()
            },
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
    let Some(p) = scratch() else {
        return 1;
    };
    // SAFETY: this CPU's scratch value; no other reference to it is live while a callback
    // runs (see `scratch`).
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

/// Byte `p` (0..NAME_KEY_LEN) of `Scratch::key` and `Scratch::name` (a `bpf_loop` callback):
/// the question name's bytes lower-cased from `Scratch::start` on, zero before.
#[inline(never)]
extern "C" fn key_step(index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(p) = scratch() else {
        return 1;
    };
    // SAFETY: this CPU's scratch value; no other reference to it is live while a callback
    // runs (see `scratch`).
    let s = unsafe { &mut *p };
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
    let Some(p) = scratch() else {
        return 1;
    };
    // SAFETY: this CPU's scratch value; no other reference to it is live while a callback
    // runs (see `scratch`).
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
fn put(v: &mut u64, x: usize) {
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

/// Parses the DNS message copied into the scratch (`n` bytes; `truncated` when the datagram
/// was longer): a standard NOERROR response with one question whose name is allowlisted.
/// Returns the rule slots the name matched (0: nothing to learn) with the A/AAAA answers
/// collected in `Scratch::found`.
pub(super) fn parse(p: *mut Scratch, n: usize, truncated: bool) -> Result<u64, u32> {
    // SAFETY: this CPU's scratch value; this reference ends before the first `bpf_loop`.
    let s = unsafe { &mut *p };
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
    // SAFETY: the callbacks' references ended with `bpf_loop`; this one lives until the next.
    let s = unsafe { &mut *p };
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
    // SAFETY: the callbacks' references ended with `bpf_loop`; this one lives until the next.
    let s = unsafe { &mut *p };

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
    // SAFETY: the callbacks' references ended with `bpf_loop`; this one lives until the next.
    let s = unsafe { &mut *p };
    let mask = get(&s.mask) as u64;
    if mask == 0 {
        return Ok(0);
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
    // SAFETY: the callbacks' references ended with `bpf_loop`; this one lives until the next.
    let s = unsafe { &mut *p };
    if get(&s.left) != 0 || truncated {
        count(counter::TRUNCATED);
    }

    Ok(mask)
}

#[inline(always)]
fn lower(b: u8) -> u8 {
    // Length bytes are <= 63, below 'A': only letters change.
    if b.is_ascii_uppercase() { b | 0x20 } else { b }
}
