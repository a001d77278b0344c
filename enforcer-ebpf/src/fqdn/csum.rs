//! The UDP checksum of a response, so that nothing is learned from a datagram the UDP layer
//! drops. The kernel checks datagrams of up to 76 bytes before delivery (the learning program
//! never sees a bad one) but defers longer ones to `recvmsg()`, after this program ran.
//!
//! A datagram sent on this host over loopback carries `CHECKSUM_PARTIAL`: its check field holds
//! only the pseudo-header sum (the rest is left to an "offload" that loopback never performs),
//! and the kernel treats it as verified. The program cannot read `ip_summed`; it accepts
//! such a field only on a datagram received on the loopback device (ifindex 1 in every network
//! namespace), where only a local sender can put it. Everything else must carry a checksum
//! that verifies (or, IPv4 only, none).
use aya_ebpf::programs::SkBuffContext;
use enforcer_common::fqdn::counter;

use super::parse::{PKT_MAX, Scratch, at, get, opaque, put, run, slot_of};

/// Bytes summed per `bpf_loop` step.
const CHUNK: usize = 64;
const LOOPBACK_IFINDEX: u32 = 1;
const IPPROTO_UDP: u32 = 17;

/// The verdict on a response's checksum.
pub(super) enum Checksum {
    /// The sum verifies (or IPv4 without a checksum).
    Verified,
    /// A loopback datagram whose check field holds the pseudo-header sum only.
    Offloaded,
}

/// Checks the UDP checksum of the datagram whose UDP header is at `udp` and whose payload (`n`
/// bytes, all of it) is in the scratch of `slot`. `Err(counter)` when it fails.
pub(super) fn check(
    ctx: &SkBuffContext,
    p: *mut Scratch,
    slot: u32,
    udp: usize,
    v6: bool,
    n: usize,
) -> Result<Checksum, u32> {
    let hdr: [u8; 8] = ctx.load(udp).map_err(|_| counter::MALFORMED)?;
    let word = |i: usize| (u32::from(hdr[i]) << 8) | u32::from(hdr[i + 1]);
    let (sport, dport, len, check) = (word(0), word(2), word(4), word(6));
    if len as usize != n + 8 {
        return Err(counter::TRUNCATED);
    }
    // The pseudo header: addresses, protocol, UDP length.
    let mut pseudo: u64 = u64::from(IPPROTO_UDP) + u64::from(len);
    if v6 {
        let a: [u8; 32] = ctx.load(8).map_err(|_| counter::MALFORMED)?;
        for i in 0..16 {
            pseudo += (u64::from(a[2 * i]) << 8) | u64::from(a[2 * i + 1]);
        }
    } else {
        let a: [u8; 8] = ctx.load(12).map_err(|_| counter::MALFORMED)?;
        for i in 0..4 {
            pseudo += (u64::from(a[2 * i]) << 8) | u64::from(a[2 * i + 1]);
        }
    }
    if check == 0 {
        // No checksum: allowed for IPv4, dropped by IPv6.
        return if v6 {
            Err(counter::BAD_CHECKSUM)
        } else {
            Ok(Checksum::Verified)
        };
    }
    {
        // SAFETY: this CPU's scratch value; this reference ends before `bpf_loop`.
        let s = unsafe { &mut *p };
        put(&mut s.sum, 0);
        put(&mut s.n, n);
    }
    run(PKT_MAX / CHUNK, sum_step, slot);
    // SAFETY: the callbacks' references ended with `bpf_loop`.
    let s = unsafe { &mut *p };
    let payload = get(&s.sum) as u64;
    let total = pseudo + u64::from(sport) + u64::from(dport) + u64::from(len) + u64::from(check);
    if fold(total + payload) == 0xffff {
        return Ok(Checksum::Verified);
    }
    // SAFETY: reads a field of this program's context.
    let ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    if ifindex == LOOPBACK_IFINDEX && u64::from(check) == fold(pseudo) {
        return Ok(Checksum::Offloaded);
    }
    Err(counter::BAD_CHECKSUM)
}

/// The ones' complement sum folded to 16 bits.
#[inline(always)]
fn fold(mut x: u64) -> u64 {
    x = (x & 0xffff_ffff) + (x >> 32);
    x = (x & 0xffff) + (x >> 16);
    x = (x & 0xffff) + (x >> 16);
    (x & 0xffff) + (x >> 16)
}

/// Adds one 64-byte chunk of the payload to `Scratch::sum` (a `bpf_loop` callback, chunk
/// `index`); bytes past `Scratch::n` count as zero.
#[inline(never)]
extern "C" fn sum_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let Some(p) = slot_of(ctx) else {
        return 1;
    };
    // SAFETY: this CPU's scratch value; no other reference to it is live while a callback
    // runs (see `slot_of`).
    let s = unsafe { &mut *p };
    let n = get(&s.n);
    let base = opaque(index as usize * CHUNK);
    if base >= n || base >= PKT_MAX {
        return 1;
    }
    // Branch-free: a byte at or past `n` is masked to zero instead of skipped by an `if`. Two
    // data-dependent branches per byte pair made the verifier walk every combination of them
    // (over a million instructions with LLVM 22); masks keep one path through the chunk.
    let mut sum = 0u64;
    let mut i = 0;
    while i < CHUNK {
        let k = base + i;
        let hi = u64::from(at(&s.pkt, k)) & below(k, n);
        let lo = u64::from(at(&s.pkt, k + 1)) & below(k + 1, n);
        sum += (hi << 8) | lo;
        i += 2;
    }
    let v = get(&s.sum) + sum as usize;
    put(&mut s.sum, v);
    0
}

/// All ones when `k < n`, else zero, without a branch (both are below 2^13 here).
#[inline(always)]
fn below(k: usize, n: usize) -> u64 {
    ((k as i64 - n as i64) >> 63) as u64
}
