//! The answer section of an accepted response, walked the way a strict stub resolver reads
//! it: every one of ANCOUNT records must be present and parseable within the datagram; owner
//! names (compressed or not) are compared case-insensitively with the CNAME chain from the
//! question; a CNAME owned by the chain's current name moves the chain to its target; only
//! records of the asked type owned by the chain's current name are collected. Records owned by
//! other names, or of other types (an A record in an AAAA answer, RRSIGs), are skipped and
//! counted, never learned.
//!
//! Names are read one byte per `bpf_loop` step. Compression pointers must point strictly
//! before the previous jump (the first one before the name's own start), so every name walk
//! ends (no pointer loops), and a name is at most 255 bytes.
use enforcer_common::fqdn::{MAX_LEARNED, NAME_KEY_LEN};

use super::parse::{
    CLASS_IN, Found, PKT_MAX, Scratch, TYPE_A, TYPE_CNAME, at, be16, get, lower, opaque, put, run,
    slot_of,
};

/// Steps of the walk: one per name byte read and one per record body, so a 4 KiB message
/// fits even when every owner name is a pointer to a long name.
const MAX_STEPS: usize = 16_384;
const CHAIN_MASK: usize = NAME_KEY_LEN - 1;
/// Longest name in the flat form (labels without the root label).
const NAME_MAX: usize = 254;

/// `Scratch::phase`: reading an owner name, a record's fixed part, a CNAME's target.
const PH_OWNER: usize = 0;
const PH_RECORD: usize = 1;
const PH_TARGET: usize = 2;

/// `Scratch::outcome`.
pub(super) const OPEN: usize = 0;
pub(super) const DONE: usize = 1;
pub(super) const TRUNCATED: usize = 2;
pub(super) const MALFORMED: usize = 3;

const MORE: i64 = 0;
const STOP: i64 = 1;

/// Walks the `answers` records from offset `off` of the message in the scratch of `slot`
/// (whose question filled `chain` and `qtype`). Returns the outcome; on [`DONE`] the records
/// to learn are in `Scratch::found`.
pub(super) fn walk(p: *mut Scratch, slot: u32, off: usize, answers: usize) -> usize {
    {
        // SAFETY: this CPU's scratch value; this reference ends before `bpf_loop`.
        let s = unsafe { &mut *p };
        put(&mut s.left, answers);
        put(&mut s.n_found, 0);
        put(&mut s.off_chain, 0);
        put(&mut s.other_type, 0);
        if answers == 0 {
            put(&mut s.outcome, DONE);
            return DONE;
        }
        put(&mut s.outcome, OPEN);
        put(&mut s.phase, PH_OWNER);
        start_name(s, off);
    }
    run(MAX_STEPS, answer_step, slot);
    // SAFETY: the callbacks' references ended with `bpf_loop`.
    let s = unsafe { &mut *p };
    match get(&s.outcome) {
        // Out of steps: more records than the walk can read.
        OPEN => MALFORMED,
        o => o,
    }
}

#[inline(always)]
fn start_name(s: &mut Scratch, off: usize) {
    put(&mut s.cursor, off);
    put(&mut s.nm_out, 0);
    put(&mut s.nm_label, 0);
    put(&mut s.nm_limit, off);
    put(&mut s.nm_resume, 0);
    put(&mut s.nm_diff, 0);
}

#[inline(always)]
fn fail(s: &mut Scratch, outcome: usize) -> i64 {
    put(&mut s.outcome, outcome);
    STOP
}

/// One step of the walk (a `bpf_loop` callback): returns 0 to go on, 1 to stop with
/// `Scratch::outcome` set.
#[inline(never)]
extern "C" fn answer_step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let Some(p) = slot_of(ctx) else {
        return STOP;
    };
    // SAFETY: this CPU's scratch value; no other reference to it is live while a callback
    // runs (see `slot_of`).
    let s = unsafe { &mut *p };
    let n = get(&s.n);
    if n > PKT_MAX {
        return fail(s, MALFORMED);
    }
    let phase = get(&s.phase);
    if phase == PH_RECORD {
        return record(s, n);
    }
    let copy = phase == PH_TARGET;
    match name_byte(s, n, copy) {
        NAME_MORE => MORE,
        NAME_END if copy => {
            // The CNAME's target must fill its RDATA exactly.
            if get(&s.cursor) != get(&s.rdata_end) {
                return fail(s, MALFORMED);
            }
            next_record(s)
        }
        NAME_END => {
            put(&mut s.phase, PH_RECORD);
            MORE
        }
        NAME_TRUNCATED => fail(s, TRUNCATED),
        _ => fail(s, MALFORMED),
    }
}

const NAME_MORE: u32 = 0;
const NAME_END: u32 = 1;
const NAME_TRUNCATED: u32 = 2;
const NAME_MALFORMED: u32 = 3;

/// One byte of the name at `Scratch::cursor`: a label length, a label byte, a compression
/// pointer or the root label. `copy`: the name becomes the chain (a CNAME's target);
/// otherwise it is compared with the chain (an owner name; `nm_diff` set on a difference).
#[inline(always)]
fn name_byte(s: &mut Scratch, n: usize, copy: bool) -> u32 {
    let off = get(&s.cursor);
    if off >= n {
        return NAME_TRUNCATED;
    }
    let b = at(&s.pkt, off) as usize;
    let label = get(&s.nm_label);
    if label == 0 {
        if b == 0 {
            let resume = get(&s.nm_resume);
            put(&mut s.cursor, if resume == 0 { off + 1 } else { resume });
            let out = get(&s.nm_out);
            if copy {
                put(&mut s.chain_len, out);
            } else if out != get(&s.chain_len) {
                put(&mut s.nm_diff, 1);
            }
            return NAME_END;
        }
        if b & 0xc0 == 0xc0 {
            if off + 1 >= n {
                return NAME_TRUNCATED;
            }
            let target = ((b & 0x3f) << 8) | at(&s.pkt, off + 1) as usize;
            // Forward progress: strictly before the last jump (or the name's start).
            if target < 12 || target >= get(&s.nm_limit) {
                return NAME_MALFORMED;
            }
            if get(&s.nm_resume) == 0 {
                put(&mut s.nm_resume, off + 2);
            }
            put(&mut s.nm_limit, target);
            put(&mut s.cursor, target);
            return NAME_MORE;
        }
        if b & 0xc0 != 0 {
            return NAME_MALFORMED;
        }
        put(&mut s.nm_label, b);
    } else {
        put(&mut s.nm_label, label - 1);
    }
    let x = if label == 0 { b as u8 } else { lower(b as u8) };
    let out = get(&s.nm_out);
    if out >= NAME_MAX {
        return NAME_MALFORMED;
    }
    let i = opaque(out) & CHAIN_MASK;
    if copy {
        s.chain[i] = x;
    } else if out >= get(&s.chain_len) || s.chain[i] != x {
        put(&mut s.nm_diff, 1);
    }
    put(&mut s.nm_out, out + 1);
    put(&mut s.cursor, off + 1);
    NAME_MORE
}

/// The record's fixed part and RDATA, after its owner name.
#[inline(always)]
fn record(s: &mut Scratch, n: usize) -> i64 {
    let off = get(&s.cursor);
    if off + 10 > n {
        return fail(s, TRUNCATED);
    }
    let rtype = be16(&s.pkt, off);
    let class = be16(&s.pkt, off + 2);
    let ttl = ((be16(&s.pkt, off + 4) as u32) << 16) | be16(&s.pkt, off + 6) as u32;
    let rdlen = be16(&s.pkt, off + 8) as usize;
    let start = off + 10;
    let end = start + rdlen;
    if end > n {
        return fail(s, TRUNCATED);
    }
    put(&mut s.rdata_end, end);
    let on_chain = get(&s.nm_diff) == 0;
    let qtype = get(&s.qtype) as u16;
    if class != CLASS_IN {
        let v = get(&s.other_type) + 1;
        put(&mut s.other_type, v);
    } else if rtype == TYPE_CNAME {
        if on_chain {
            // Follow the chain: the target (read into `chain`) is the next owner to accept.
            put(&mut s.phase, PH_TARGET);
            start_name(s, start);
            return MORE;
        }
        let v = get(&s.off_chain) + 1;
        put(&mut s.off_chain, v);
    } else if rtype == qtype {
        let want = if qtype == TYPE_A { 4 } else { 16 };
        if rdlen != want {
            return fail(s, MALFORMED);
        }
        if on_chain {
            collect(s, start, ttl, qtype == TYPE_A);
        } else {
            let v = get(&s.off_chain) + 1;
            put(&mut s.off_chain, v);
        }
    } else {
        let v = get(&s.other_type) + 1;
        put(&mut s.other_type, v);
    }
    put(&mut s.cursor, end);
    next_record(s)
}

/// One record done: the walk ends after the last, or reads the next owner name.
#[inline(always)]
fn next_record(s: &mut Scratch) -> i64 {
    let left = get(&s.left);
    if left <= 1 {
        put(&mut s.left, 0);
        put(&mut s.outcome, DONE);
        return STOP;
    }
    put(&mut s.left, left - 1);
    put(&mut s.phase, PH_OWNER);
    let end = get(&s.rdata_end);
    start_name(s, end);
    MORE
}

/// Adds the address at `off` (4 or 16 bytes) to `Scratch::found` (at most [`MAX_LEARNED`]).
#[inline(always)]
fn collect(s: &mut Scratch, off: usize, ttl: u32, v4: bool) {
    let k = get(&s.n_found);
    if k >= MAX_LEARNED {
        return;
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
}
