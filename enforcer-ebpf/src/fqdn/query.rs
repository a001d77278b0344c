//! `enforcer_dns_egress`, a `cgroup_skb/egress` program on the protected cgroup: it records
//! each DNS query (IN A or IN AAAA) a target's socket sends in `FQDN_QUERIES`, keyed by the
//! socket's cookie, the message id, the question type and the question name (lower case).
//! The learning program learns only from a response that matches one of these outstanding
//! queries, and consumes it.
//!
//! Cost for everything else: one context field read (the socket's peer port) and a return.
use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{bpf_ktime_get_ns, bpf_skb_load_bytes, generated::bpf_get_socket_cookie},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use enforcer_common::fqdn::{counter, flags};

use super::{
    FQDN_QUERIES, FQDN_SETTINGS, count,
    learn::{DNS_PORT, peer_port, udp_offset},
    parse::{SLOT_EGRESS, at, question},
};
use crate::identity::TARGET_SOCKETS;

/// Bytes of a query copied: a question name is at most 255 bytes, so the question ends
/// before byte 12 + 255 + 4.
const QUERY_COPY: usize = 512;

#[cgroup_skb]
pub fn enforcer_dns_egress(ctx: SkBuffContext) -> i32 {
    // The fast exit: only a socket connected to port 53 can learn (the learning program
    // requires it), so only its queries are worth recording.
    if peer_port(&ctx) != DNS_PORT {
        return 1;
    }
    record(&ctx);
    // Never drop: this program only records.
    1
}

#[inline(always)]
fn record(ctx: &SkBuffContext) {
    // SAFETY: the helper reads the socket of this program's skb.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    let settings = FQDN_SETTINGS.get(0).copied().unwrap_or_default();
    // Scope mode: only a target's DNS socket (marked by the connect/sendmsg programs) counts.
    // SAFETY: read-only lookup; the value is not used.
    if settings.flags & flags::REQUIRE_TARGET_SOCKET != 0
        && unsafe { TARGET_SOCKETS.get(&cookie) }.is_none()
    {
        return;
    }
    let Some((udp, _)) = udp_offset(ctx) else {
        return;
    };
    let Ok(dport) = ctx.load::<u16>(udp + 2) else {
        return;
    };
    let Ok(udp_len) = ctx.load::<u16>(udp + 4) else {
        return;
    };
    if u16::from_be(dport) != DNS_PORT {
        return;
    }
    let payload = udp + 8;
    let avail = (ctx.skb.len() as usize).saturating_sub(payload);
    let n = (u16::from_be(udp_len) as usize)
        .saturating_sub(8)
        .min(avail)
        .min(QUERY_COPY);
    if n < 17 {
        return;
    }
    let Some(p) = super::FQDN_SCRATCH.get_ptr_mut(SLOT_EGRESS) else {
        return;
    };
    // SAFETY: `n` is in 17..=QUERY_COPY, below the scratch buffer's size; `p` is this CPU's
    // egress scratch value, written through the raw pointer (no reference is live).
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            payload as u32,
            core::ptr::addr_of_mut!((*p).pkt).cast(),
            (n & (QUERY_COPY * 2 - 1)) as u32,
        )
    };
    if r != 0 {
        return;
    }
    {
        // SAFETY: this CPU's egress scratch value; the reference ends before `question`.
        let s = unsafe { &*p };
        let flags_hi = at(&s.pkt, 2);
        // A query (QR clear), standard (opcode 0).
        if flags_hi & 0x80 != 0 || (flags_hi >> 3) & 0x0f != 0 {
            return;
        }
    }
    if question(p, SLOT_EGRESS, n).is_err() {
        return;
    }
    // SAFETY: `question` returned; this is the only reference to the scratch value now.
    let s = unsafe { &mut *p };
    let qtype = s.query.qtype;
    if qtype != super::parse::TYPE_A && qtype != super::parse::TYPE_AAAA {
        return;
    }
    s.query.cookie = cookie;
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if FQDN_QUERIES.insert(&s.query, &now, BPF_ANY as u64).is_ok() {
        count(counter::QUERIES);
    }
}
