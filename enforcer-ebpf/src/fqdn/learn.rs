//! `enforcer_dns_ingress`, a `cgroup_skb/ingress` program on the protected cgroup: the kernel
//! runs it on every packet delivered to one of the cgroup's sockets *before* the packet is
//! queued on the socket, so when it inserts the A/AAAA answers of a DNS response into
//! `FQDN_LEARNED_*`, the process cannot have read that response yet: its first `connect()` to a
//! fresh answer already finds the address. The program only learns: it always returns 1 (pass).
//!
//! It learns only what a strict stub resolver would accept: a response to an outstanding query
//! of the receiving socket (recorded on its way out by [`super::query`]: id, question name and
//! type; consumed by the response that teaches), complete and well-formed (TC clear, every
//! record present, no pointer loops), with a UDP checksum the kernel will accept
//! ([`super::csum`]), and from it only records of the asked type on the CNAME chain from the
//! question ([`super::answer`]). Each response refused is counted by reason.
//!
//! In scope mode only answers delivered to a target's DNS socket teach (the connect/sendmsg
//! programs mark the socket of a target's query to port 53 in `TARGET_SOCKETS`): no other
//! process on the node can add to, or crowd out, what the targets learned.
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_ktime_get_ns, bpf_skb_cgroup_id, bpf_skb_load_bytes, generated::bpf_get_socket_cookie,
    },
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use enforcer_common::{
    EventHeader,
    fqdn::{
        EVENT_LEARNED, EVENTS_WAKEUP_BYTES, FqdnEntry, FqdnSettings, LEARNED_EVENT_VERSION,
        LearnedEvent, MAX_LEARNED, QUERY_MAX_AGE_NS, counter, flags, status,
    },
    ring_record_bytes, wakeup_crossed,
};

use super::{
    FQDN_EVENTS, FQDN_LEARNED_V4, FQDN_LEARNED_V6, FQDN_QUERIES, FQDN_SETTINGS, NOTHING, answer,
    count, count_n, csum,
    parse::{
        Found, PKT_MAX, SLOT_INGRESS, Scratch, TYPE_A, TYPE_AAAA, allowlisted, at, be16, get,
        question,
    },
};
use crate::{ETH_P_IP, ETH_P_IPV6, identity::TARGET_SOCKETS};

const IPPROTO_UDP: u8 = 17;
pub(super) const DNS_PORT: u16 = 53;

#[cgroup_skb]
pub fn enforcer_dns_ingress(ctx: SkBuffContext) -> i32 {
    // The fast exit, before any map lookup or packet read: only a socket connected to port 53
    // can teach (`REQUIRE_CONNECTED_PEER`, always set), and the receiving socket's peer port
    // is a field of the context. Every other packet delivered below the attach point leaves
    // here.
    if peer_port(&ctx) != DNS_PORT {
        return 1;
    }
    let settings = FQDN_SETTINGS.get(0).copied().unwrap_or_default();
    // Scope mode: only a socket on which a target sent a DNS query can teach; every other
    // packet leaves here (one cookie read and one lookup).
    if settings.flags & flags::REQUIRE_TARGET_SOCKET != 0 {
        // SAFETY: the helper reads the socket of this program's skb.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
        // SAFETY: read-only lookup; the value is not used.
        if unsafe { TARGET_SOCKETS.get(&cookie) }.is_none() {
            return 1;
        }
    }
    if let Err(c) = learn(&ctx, &settings) {
        count(c);
    }
    // Never drop: this program only learns.
    1
}

/// The socket's peer port (host order). `remote_port` holds the network-order port, shifted
/// into the upper half on little-endian kernels.
#[inline(always)]
pub(super) fn peer_port(ctx: &SkBuffContext) -> u16 {
    let rp = ctx.skb.remote_port();
    let rp = if rp > 0xffff { rp >> 16 } else { rp };
    u16::from_be(rp as u16)
}

/// The offset of the UDP header of an unfragmented UDP packet, and whether it is IPv6.
#[inline(always)]
pub(super) fn udp_offset(ctx: &SkBuffContext) -> Option<(usize, bool)> {
    match u16::from_be(ctx.skb.protocol() as u16) {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(0).ok()?;
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return None;
            }
            let p: u8 = ctx.load(9).ok()?;
            let frag: u16 = ctx.load(6).ok()?;
            // A fragment's second part has no UDP header; DNS over UDP is rarely fragmented.
            if p != IPPROTO_UDP || u16::from_be(frag) & 0x3fff != 0 {
                return None;
            }
            Some((ihl, false))
        }
        ETH_P_IPV6 => {
            // Responses carry no extension headers in practice; those that do are not parsed.
            let next: u8 = ctx.load(6).ok()?;
            (next == IPPROTO_UDP).then_some((40, true))
        }
        _ => None,
    }
}

fn learn(ctx: &SkBuffContext, settings: &FqdnSettings) -> Result<(), u32> {
    let skb = &ctx.skb;
    let (udp, v6_packet) = udp_offset(ctx).ok_or(NOTHING)?;
    let sport: u16 = ctx.load(udp).map_err(|_| NOTHING)?;
    if u16::from_be(sport) != DNS_PORT {
        return Err(NOTHING);
    }
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
    let p = super::FQDN_SCRATCH
        .get_ptr_mut(SLOT_INGRESS)
        .ok_or(NOTHING)?;
    // SAFETY: `n` is in 12..=PKT_MAX and the scratch's buffer holds PKT_MAX bytes; `p` is this
    // CPU's scratch value, written through the raw pointer (no reference is live).
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            payload as u32,
            core::ptr::addr_of_mut!((*p).pkt).cast(),
            (n & (2 * PKT_MAX - 1)) as u32,
        )
    };
    if r != 0 {
        return Err(NOTHING);
    }
    let (flags_hi, flags_lo, answers) = {
        // SAFETY: this CPU's scratch value; the reference ends before `question`.
        let s = unsafe { &*p };
        (at(&s.pkt, 2), at(&s.pkt, 3), be16(&s.pkt, 6) as usize)
    };
    // A response (QR), standard query (opcode 0), NOERROR.
    if flags_hi & 0x80 == 0 || (flags_hi >> 3) & 0x0f != 0 || flags_lo & 0x0f != 0 {
        return Err(NOTHING);
    }
    let off = match question(p, SLOT_INGRESS, n) {
        Ok(off) => off,
        Err(_) => return Err(NOTHING),
    };
    let mask = allowlisted(p, SLOT_INGRESS);
    if mask == 0 {
        return Ok(());
    }
    // From here on every response that teaches nothing is counted by its reason.
    count(counter::MATCHED_RESPONSES);
    let qtype = {
        // SAFETY: the callbacks' references ended; this one ends before the next call.
        let s = unsafe { &*p };
        s.query.qtype
    };
    if qtype != TYPE_A && qtype != TYPE_AAAA {
        return Err(counter::QUESTION_TYPE);
    }
    // The resolver retries over TCP, which this program does not see.
    if flags_hi & 0x02 != 0 {
        return Err(counter::TC_BIT);
    }
    if truncated {
        return Err(counter::TRUNCATED);
    }
    // Nothing from a datagram the UDP layer will drop.
    if let csum::Checksum::Offloaded = csum::check(ctx, p, SLOT_INGRESS, udp, v6_packet, n)? {
        count(counter::CHECKSUM_OFFLOADED);
    }
    // The query this answers must be outstanding on this socket (id, name, type).
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    {
        // SAFETY: the callbacks' references ended; this one ends before the walk.
        let s = unsafe { &mut *p };
        // SAFETY: the helper reads the socket of this program's skb.
        s.query.cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
        // SAFETY: the value is a plain u64, copied out at once.
        let sent = unsafe { FQDN_QUERIES.get(&s.query) }.copied();
        match sent {
            Some(t) if now.saturating_sub(t) <= QUERY_MAX_AGE_NS => {}
            _ => return Err(counter::NO_QUERY),
        }
    }
    match answer::walk(p, SLOT_INGRESS, off, answers) {
        answer::DONE => {}
        answer::TRUNCATED => return Err(counter::TRUNCATED),
        _ => return Err(counter::MALFORMED),
    }
    // SAFETY: the walk returned; this is the only reference to the scratch value now.
    let s = unsafe { &mut *p };
    // Accepted: consume the query. Of two answers racing on two CPUs, only the one whose
    // delete succeeds teaches.
    if FQDN_QUERIES.remove(&s.query).is_err() {
        return Err(counter::NO_QUERY);
    }
    count_n(counter::OFF_CHAIN, get(&s.off_chain) as u64);
    count_n(counter::OTHER_TYPE, get(&s.other_type) as u64);
    for k in 0..MAX_LEARNED {
        if k >= get(&s.n_found) {
            break;
        }
        store(&mut s.found[k], mask, now, settings);
    }
    emit(ctx, s, mask);
    Ok(())
}

/// True when the socket is connected (UDP `connect()`) to the packet's source address and
/// port: the answer comes from the server this socket queried, which our connect hook allowed.
#[inline(always)]
fn from_connected_peer(ctx: &SkBuffContext, v6_packet: bool) -> Result<bool, u32> {
    let skb = &ctx.skb;
    if peer_port(ctx) != DNS_PORT {
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
        (*p).name = s.query.name;
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
