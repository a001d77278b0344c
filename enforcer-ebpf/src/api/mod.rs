//! The API guard: four cgroup_skb/ingress programs on the targets' cgroup, one per [`Part`]
//! (web decisions, cluster TCP and UDP decisions, web streams), each verified on its own
//! (docs/api-guard.md, "Four programs").
//!
//! - A packet to a socket whose local port is not guarded leaves at once, on a field of the
//!   context, before any byte of the packet is read (the agent attaches the guard only to a
//!   policy with an `api:` section); in scope mode a packet of a socket outside the target
//!   Alertmanager processes' cgroups leaves after the port check. A web port guards TCP, a
//!   cluster port TCP and UDP; anything else leaves.
//! - A SYN (a new connection), and on a cluster port every UDP datagram, is decided by the
//!   verdict core in the ingress direction ([`policy::can_ingress`]) over the peer's address
//!   and the port's surface; on a cluster port the receiving target's own `--cluster.peer`
//!   addresses are let in too ([`cluster`]), on a web port the agent's own watchdog
//!   ([`watchdog`]). A refused peer's SYN or datagram is dropped, so Alertmanager never sees
//!   it. Every refusal is counted; reports are limited per peer (bounded LRU) and per second.
//! - An allowed peer that starts a gossip session is reported ([`cluster::joined`]).
//! - Every accepted connection to a web port is a stream the agent puts back together: its
//!   opening (with the SYN's sequence number and the listening target's process), each
//!   segment's payload in chunks with their sequence numbers, and the peer's FIN or RST
//!   ([`stream`]). The agent parses the requests out of the stream, however they are
//!   segmented or pipelined, and says so where it cannot.

mod cluster;
mod watchdog;

use core::ptr::addr_of_mut;

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_skb_cgroup_id, bpf_skb_load_bytes},
    },
    macros::{cgroup_skb, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::SkBuffContext,
};
use enforcer_common::{
    ACTIVE_SETS, EventHeader,
    api::{
        API_EVENT_VERSION, API_EVENTS_BYTES, ApiConfig, ApiEvent, HEAD_LEN, MAX_API_CGROUPS,
        MAX_PEERS, PEER_REPORT_INTERVAL_NS, PeerReport, REPORTS_PER_SECOND, RateWindow,
        STREAM_CHUNKS, counter, event_kind, surface,
    },
    mode, proto,
};

use enforcer_common::proto::{IPPROTO_TCP, IPPROTO_UDP};

use crate::{Dst, ETH_P_IP, ETH_P_IPV6, active_config, policy};

#[map]
static API_CONFIG: Array<ApiConfig> = Array::with_max_entries(ACTIVE_SETS, 0);
#[map]
static API_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
static API_EVENTS: RingBuf = RingBuf::with_byte_size(API_EVENTS_BYTES, 0);
#[map]
static API_PEERS: LruHashMap<[u8; 17], PeerReport> = LruHashMap::with_max_entries(MAX_PEERS, 0);
#[map]
static API_RATE: PerCpuArray<RateWindow> = PerCpuArray::with_max_entries(1, 0);
#[map]
static API_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_API_CGROUPS, 0);

const PASS: i32 = 1;
const DROP: i32 = 0;
const TCP_SYN: u8 = 0x02;
/// [`Segment::protocol`] of an IPv6 packet whose transport header sits behind extension
/// headers the guard does not follow.
const UNPARSED: u8 = 0;
const TCP_ACK: u8 = 0x10;
const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;

/// The decisions: a SYN, a datagram, an unparsed IPv6 packet to a guarded port.
#[cgroup_skb(ingress)]
pub fn enforcer_api_ingress(ctx: SkBuffContext) -> i32 {
    guard::<{ Part::WEB }>(&ctx)
}

/// The cluster port's decisions: a SYN or a datagram; a program of its own (see
/// [`enforcer_api_stream`]).
#[cgroup_skb(ingress)]
pub fn enforcer_api_cluster(ctx: SkBuffContext) -> i32 {
    guard::<{ Part::CLUSTER }>(&ctx)
}

/// The cluster port's datagrams (UDP); a program of its own (see [`enforcer_api_stream`]).
#[cgroup_skb(ingress)]
pub fn enforcer_api_cluster_udp(ctx: SkBuffContext) -> i32 {
    guard::<{ Part::CLUSTER_UDP }>(&ctx)
}

/// The web port's streams: every later segment of an accepted connection (its payload and
/// its FIN or RST), queued for the agent. A program of its own, so that neither program's
/// verification walks the other's paths.
#[cgroup_skb(ingress)]
pub fn enforcer_api_stream(ctx: SkBuffContext) -> i32 {
    guard::<{ Part::STREAM }>(&ctx)
}

/// Which part of the guard a program is: each is verified on its own, with the surface a
/// constant, so no program's verification walks another part's paths.
struct Part;

impl Part {
    /// A web port's new connections (SYN), the watchdog's included.
    const WEB: u8 = 0;
    /// A cluster port's new connections (TCP).
    const CLUSTER: u8 = 1;
    /// A cluster port's datagrams (UDP).
    const CLUSTER_UDP: u8 = 3;

    /// Whether `part` decides the cluster port.
    const fn cluster(part: u8) -> bool {
        part == Self::CLUSTER || part == Self::CLUSTER_UDP
    }

    /// The one transport protocol `part` carries.
    const fn protocol(part: u8) -> u8 {
        if part == Self::CLUSTER_UDP {
            IPPROTO_UDP
        } else {
            IPPROTO_TCP
        }
    }
    /// A web port's accepted connections: their later segments.
    const STREAM: u8 = 2;
}

/// A TCP segment or UDP datagram as the guard sees it.
struct Segment {
    family: u16,
    /// IPPROTO_TCP or IPPROTO_UDP.
    protocol: u8,
    /// [`surface`] of the local port.
    surface: u16,
    peer: [u8; 16],
    local: [u8; 16],
    peer_port: u16,
    local_port: u16,
    flags: u8,
    /// TCP sequence number of the segment (host order; 0 for UDP).
    seq: u32,
    payload_off: usize,
    payload_len: usize,
}

/// The guard's part `PART` ([`Part`]).
#[inline(always)]
fn guard<const PART: u8>(ctx: &SkBuffContext) -> i32 {
    let want = if Part::cluster(PART) {
        surface::CLUSTER
    } else {
        surface::WEB
    };
    // The fast exit, before any packet byte is read: the receiving socket's local port (a
    // field of the context, host order) must be a guarded port of the active rule set (two
    // array lookups the verifier inlines), and in scope mode the socket a target's.
    let Some((set, _)) = active_config() else {
        return PASS;
    };
    let Some(api) = API_CONFIG.get(set) else {
        return PASS;
    };
    // SAFETY: the kernel hands every cgroup_skb program a valid `__sk_buff`.
    let local_port = unsafe { (*ctx.skb.skb).local_port };
    if local_port > 0xffff {
        return PASS;
    }
    if api.surface(local_port as u16) != want {
        return PASS;
    }
    let surface = want;
    if crate::scoped() && !is_target_socket(ctx) {
        return PASS;
    }
    let Some(mut seg) = segment(ctx, surface, Part::protocol(PART)) else {
        return PASS;
    };
    if PART == Part::CLUSTER_UDP && seg.protocol == UNPARSED {
        // Refused (and counted) once, by the cluster's TCP program.
        return PASS;
    }
    if PART == Part::STREAM {
        // The stream part never branches on the family, and the header lengths only bound the
        // copies: kept out of LLVM's sight, they do not multiply the unrolled chunk loop.
        seg.family = opaque(usize::from(seg.family)) as u16;
        seg.payload_off = opaque(seg.payload_off);
        seg.payload_len = opaque(seg.payload_len);
    }
    if seg.protocol != UNPARSED && api.surface(seg.local_port) != surface {
        return PASS;
    }
    let opening = seg.protocol != IPPROTO_TCP || seg.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if PART != Part::STREAM && opening {
        // The rules' verdict first, with nothing of the parse alive across the lookup but
        // the protocol class: the verifier walks the rule lookup (the costliest code here)
        // once per peer family, not once per combination of what the parse proved (TCP or
        // UDP, header lengths, ports), which it would otherwise carry through it. The
        // segment is parsed again for the report.
        let unparsed = seg.protocol == UNPARSED;
        let refused = unparsed || rules_refuse::<PART>(ctx, set, api);
        let Some(seg) = segment(ctx, surface, Part::protocol(PART)) else {
            return PASS;
        };
        return decide_peer::<PART>(ctx, api, &seg, refused, unparsed);
    }
    if PART == Part::STREAM && !opening {
        stream(ctx, api, &seg);
    }
    PASS
}

/// The IP and TCP (or, on a cluster port, UDP) headers of the packet (`None` for another
/// protocol, or a later fragment).
#[inline(always)]
fn segment(ctx: &SkBuffContext, surface: u16, carried_protocol: u8) -> Option<Segment> {
    let carried = |p: u8| p == carried_protocol;
    // SAFETY: the kernel hands every cgroup_skb program a valid `__sk_buff`; `protocol` holds
    // the 16-bit network-order EtherType.
    let protocol = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    let mut peer = [0u8; 16];
    let mut local = [0u8; 16];
    let (family, ip_proto, l4) = if protocol == ETH_P_IP {
        let vihl: u8 = ctx.load(0).ok()?;
        let frag: u16 = ctx.load(6).ok()?;
        let ip_proto: u8 = ctx.load(9).ok()?;
        if !carried(ip_proto) || u16::from_be(frag) & 0x1fff != 0 {
            return None;
        }
        let src: [u8; 4] = ctx.load(12).ok()?;
        let dst: [u8; 4] = ctx.load(16).ok()?;
        peer[..4].copy_from_slice(&src);
        local[..4].copy_from_slice(&dst);
        (2u16, ip_proto, usize::from(vihl & 0x0f) * 4)
    } else if protocol == ETH_P_IPV6 {
        // Extension headers before TCP/UDP are not followed: a packet that carries one to a
        // guarded port is "unparsed" (protocol 0) and refused, whatever it holds (no legitimate
        // peer of an API or gossip port needs them; following them is a loop).
        let next: u8 = ctx.load(6).ok()?;
        peer = ctx.load(8).ok()?;
        local = ctx.load(24).ok()?;
        if is_ipv6_extension(next) {
            return Some(Segment {
                family: 10,
                protocol: UNPARSED,
                surface,
                peer,
                local,
                peer_port: 0,
                local_port: 0,
                flags: 0,
                seq: 0,
                payload_off: 0,
                payload_len: 0,
            });
        }
        if !carried(next) {
            return None;
        }
        (10u16, next, 40)
    } else {
        return None;
    };
    let ports: [u8; 4] = ctx.load(l4).ok()?;
    let (flags, seq, payload_off) = if ip_proto == IPPROTO_TCP {
        let seq: u32 = ctx.load(l4 + 4).ok()?;
        let doff: u8 = ctx.load(l4 + 12).ok()?;
        let flags: u8 = ctx.load(l4 + 13).ok()?;
        (flags, u32::from_be(seq), l4 + usize::from(doff >> 4) * 4)
    } else {
        (0, 0, l4 + 8)
    };
    let len = ctx.len() as usize;
    Some(Segment {
        family,
        protocol: ip_proto,
        surface,
        peer,
        local,
        peer_port: u16::from_be_bytes([ports[0], ports[1]]),
        local_port: u16::from_be_bytes([ports[2], ports[3]]),
        flags,
        seq,
        payload_off,
        payload_len: len.saturating_sub(payload_off),
    })
}

/// Hop-by-hop, routing, fragment, destination options, authentication header, mobility, HIP,
/// shim6: the IPv6 extension headers that may come before a transport header.
#[inline(always)]
fn is_ipv6_extension(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 60 | 51 | 135 | 139 | 140)
}

/// Scope mode: whether the packet's socket was created in the cgroup of a target
/// Alertmanager process (`API_CGROUPS`, written by the agent for every kind of target).
#[inline(always)]
fn is_target_socket(ctx: &SkBuffContext) -> bool {
    // SAFETY: plain helper call on the program's own skb.
    let own = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    // SAFETY: read-only lookup; the value is not used.
    unsafe { API_CGROUPS.get(&own) }.is_some()
}

/// Whether the rules refuse the packet's peer (the section's `allow` or `cluster_allow`, its
/// default; on a cluster port the receiving target's own `--cluster.peer`s are let in). Reads
/// the peer's address from the packet itself.
#[inline(always)]
fn rules_refuse<const PART: u8>(ctx: &SkBuffContext, set: u32, api: &ApiConfig) -> bool {
    let cluster = Part::cluster(PART);
    // The protocol class is a constant too: a web port carries TCP alone, and every clause on
    // the cluster surface is a `cluster_allow` entry's, for TCP and UDP alike (as a per-packet
    // value, TCP and UDP would each walk the lookup).
    let (surf, class) = if cluster {
        (surface::CLUSTER, proto::TCP | proto::UDP)
    } else {
        (surface::WEB, proto::TCP)
    };
    // SAFETY: the kernel hands every cgroup_skb program a valid `__sk_buff`.
    let protocol = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    let peer = if protocol == ETH_P_IP {
        let Ok(a) = ctx.load::<[u8; 4]>(12) else {
            return true;
        };
        Dst::V4(a)
    } else {
        let Ok(a) = ctx.load::<[u8; 16]>(8) else {
            return true;
        };
        policy::normalise_v6(a)
    };
    if policy::can_ingress(set, api, &peer, surf, class).is_none() {
        return false;
    }
    !(cluster && cluster::own_peer(ctx, cluster::owner(ctx), &peer))
}

/// A new connection (or, on a cluster port, a datagram): the peer's verdict, counted; a
/// refused peer's SYN or datagram is dropped (enforce).
#[inline(always)]
fn decide_peer<const PART: u8>(
    ctx: &SkBuffContext,
    api: &ApiConfig,
    seg: &Segment,
    refused: bool,
    unparsed: bool,
) -> i32 {
    let cluster = Part::cluster(PART);
    // The receiving target (the creator of the listening or UDP socket), asked only on a
    // cluster port, where its joins are reported.
    let owner = if cluster { cluster::owner(ctx) } else { 0 };
    let mut refused = refused;
    if refused && !unparsed && !cluster && watchdog::is_own(ctx, seg) {
        count(counter::WATCHDOG_ACCEPTED);
        refused = false;
    }
    let (accepted, refused_index, would_index) = counters(seg);
    if !refused {
        count(accepted);
        if cluster {
            cluster::joined(ctx, api, seg, owner);
        } else {
            opened(ctx, api, seg);
        }
        return PASS;
    }
    let audit = api.mode == mode::AUDIT;
    count(if audit { would_index } else { refused_index });
    if let Some(suppressed) = may_report(seg) {
        let kind = if audit {
            event_kind::PEER_WOULD_REFUSE
        } else {
            event_kind::PEER_REFUSED
        };
        emit(ctx, kind, api, seg, &Meta::report(suppressed, owner));
    }
    if !audit {
        return DROP;
    }
    if !cluster && seg.protocol == IPPROTO_TCP {
        opened(ctx, api, seg);
    }
    PASS
}

/// A connection to a web port let through: its stream starts (every byte after the SYN's
/// sequence number is the peer's request stream), with the listening target's process.
#[inline(always)]
fn opened(ctx: &SkBuffContext, api: &ApiConfig, seg: &Segment) {
    let meta = Meta {
        owner_tgid: cluster::owner(ctx),
        seq: seg.seq,
        ..Meta::default()
    };
    emit(ctx, event_kind::STREAM_OPEN, api, seg, &meta);
}

/// A segment of an accepted connection to a web port: its payload, in [`HEAD_LEN`] chunks
/// (at most [`STREAM_CHUNKS`]; a longer payload's tail is left out and counted, the agent
/// knows its length from `payload_len`), and the peer's FIN or RST. Every segment is queued:
/// the agent puts the stream back together however the peer segments, pipelines or spells its
/// requests.
#[inline(always)]
fn stream(ctx: &SkBuffContext, api: &ApiConfig, seg: &Segment) {
    if seg.payload_len > 0 {
        count(counter::STREAM_SEGMENTS);
        for i in 0..STREAM_CHUNKS {
            let off = i * HEAD_LEN;
            if off >= seg.payload_len {
                break;
            }
            let meta = Meta {
                seq: seg.seq.wrapping_add(off as u32),
                chunk: i as u8,
                copy_from: off as u32,
                ..Meta::default()
            };
            emit(ctx, event_kind::STREAM_DATA, api, seg, &meta);
        }
        if seg.payload_len > STREAM_CHUNKS * HEAD_LEN {
            count(counter::STREAM_CUT);
        }
    }
    if seg.flags & (TCP_FIN | TCP_RST) != 0 {
        let meta = Meta {
            seq: seg.seq.wrapping_add(seg.payload_len as u32),
            ..Meta::default()
        };
        emit(ctx, event_kind::STREAM_CLOSE, api, seg, &meta);
    }
}

/// What an event carries besides the segment.
struct Meta {
    suppressed: u32,
    owner_tgid: u32,
    seq: u32,
    chunk: u8,
    /// Offset into the payload of the bytes to copy into `head`; [`NO_COPY`]: none.
    copy_from: u32,
}

const NO_COPY: u32 = u32::MAX;

impl Default for Meta {
    fn default() -> Self {
        Self {
            suppressed: 0,
            owner_tgid: 0,
            seq: 0,
            chunk: 0,
            copy_from: NO_COPY,
        }
    }
}

impl Meta {
    #[inline(always)]
    fn report(suppressed: u32, owner_tgid: u32) -> Self {
        Self {
            suppressed,
            owner_tgid,
            ..Self::default()
        }
    }
}

/// The (accepted, refused, would-refuse) counters of a segment's surface and protocol.
#[inline(always)]
fn counters(seg: &Segment) -> (u32, u32, u32) {
    if seg.surface != surface::CLUSTER {
        (counter::ACCEPTED, counter::REFUSED, counter::WOULD_REFUSE)
    } else if seg.protocol == IPPROTO_UDP {
        (
            counter::CLUSTER_UDP_ACCEPTED,
            counter::CLUSTER_UDP_REFUSED,
            counter::CLUSTER_UDP_WOULD_REFUSE,
        )
    } else {
        (
            counter::CLUSTER_TCP_ACCEPTED,
            counter::CLUSTER_TCP_REFUSED,
            counter::CLUSTER_TCP_WOULD_REFUSE,
        )
    }
}

/// Whether this refusal is reported: at most once per peer per [`PEER_REPORT_INTERVAL_NS`]
/// and [`REPORTS_PER_SECOND`] per CPU. `Some(n)`: report, `n` refusals of this peer went
/// unreported since its last report.
#[inline(always)]
fn may_report(seg: &Segment) -> Option<u32> {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut key = [0u8; 17];
    key[..16].copy_from_slice(&seg.peer);
    key[16] = seg.family as u8;
    let mut suppressed = 0u64;
    if let Some(p) = API_PEERS.get_ptr_mut(&key) {
        // SAFETY: a live LRU value; concurrent updates of one peer at worst miscount a report.
        let last = unsafe { &mut *p };
        if now.wrapping_sub(last.reported_ns) < PEER_REPORT_INTERVAL_NS {
            last.suppressed += 1;
            count(counter::REPORTS_SUPPRESSED);
            return None;
        }
        suppressed = last.suppressed;
    }
    if !within_rate(now) {
        return None;
    }
    let report = PeerReport {
        reported_ns: now,
        suppressed: 0,
    };
    // A full LRU evicts its least recently used peer; failure only loses the rate limit.
    let _ = API_PEERS.insert(&key, &report, 0);
    Some(suppressed.min(u64::from(u32::MAX)) as u32)
}

/// Whether one more report fits this CPU's [`REPORTS_PER_SECOND`] (counted as suppressed
/// otherwise).
#[inline(always)]
fn within_rate(now: u64) -> bool {
    if let Some(w) = API_RATE.get_ptr_mut(0) {
        // SAFETY: per-CPU slot; this program cannot be preempted by itself on this CPU.
        let w = unsafe { &mut *w };
        if now.wrapping_sub(w.start_ns) >= 1_000_000_000 {
            w.start_ns = now;
            w.reports = 0;
        }
        if w.reports >= REPORTS_PER_SECOND {
            count(counter::REPORTS_SUPPRESSED);
            return false;
        }
        w.reports += 1;
    }
    true
}

/// Queues one event; counts it as lost when the ring is full.
#[inline(always)]
fn emit(ctx: &SkBuffContext, kind: u16, api: &ApiConfig, seg: &Segment, meta: &Meta) {
    let Some(mut slot) = API_EVENTS.reserve::<ApiEvent>(0) else {
        count(counter::LOST_EVENTS);
        return;
    };
    let p = slot.as_mut_ptr();
    let mut head_len = 0u16;
    // SAFETY: `p` points at the reserved record, which this program owns until it submits;
    // every field is written.
    unsafe {
        addr_of_mut!((*p).head).write([0u8; HEAD_LEN]);
        if meta.copy_from != NO_COPY {
            head_len = copy_head(ctx, seg, meta.copy_from as usize, addr_of_mut!((*p).head));
        }
        addr_of_mut!((*p).header).write(EventHeader {
            kind,
            version: API_EVENT_VERSION,
            len: core::mem::size_of::<ApiEvent>() as u32,
            ts_ns: bpf_ktime_get_ns(),
            cgroup_id: bpf_skb_cgroup_id(ctx.skb.skb),
        });
        addr_of_mut!((*p).generation).write(api.generation);
        addr_of_mut!((*p).family).write(seg.family);
        addr_of_mut!((*p).peer_port).write(seg.peer_port);
        addr_of_mut!((*p).local_port).write(seg.local_port);
        addr_of_mut!((*p).head_len).write(head_len);
        addr_of_mut!((*p).suppressed).write(meta.suppressed);
        addr_of_mut!((*p).protocol).write(seg.protocol);
        addr_of_mut!((*p).surface).write(seg.surface as u8);
        addr_of_mut!((*p).tcp_flags).write(seg.flags);
        addr_of_mut!((*p).chunk).write(meta.chunk);
        addr_of_mut!((*p).owner_tgid).write(meta.owner_tgid);
        addr_of_mut!((*p).seq).write(meta.seq);
        addr_of_mut!((*p).payload_len).write(seg.payload_len as u32);
        addr_of_mut!((*p).peer_addr).write(seg.peer);
        addr_of_mut!((*p).local_addr).write(seg.local);
    }
    // The agent drains this ring on a short timer: no wakeup per event.
    slot.submit(BPF_RB_NO_WAKEUP as u64);
}

/// Copies up to [`HEAD_LEN`] bytes of the payload from offset `off` straight into the
/// reserved record (one helper call, no stack copy); returns how many were copied.
#[inline(always)]
fn copy_head(ctx: &SkBuffContext, seg: &Segment, off: usize, head: *mut [u8; HEAD_LEN]) -> u16 {
    let left = seg.payload_len.saturating_sub(off);
    if left == 0 {
        return 0;
    }
    let want = if left > HEAD_LEN { HEAD_LEN } else { left };
    // The helper's length must be provably in [1, HEAD_LEN] on the very register it gets
    // (Linux 6.1 refuses a length whose minimum may be 0): an opaque copy (LLVM cannot fold
    // what follows into the `min` above), then `((want - 1) & (HEAD_LEN - 1)) + 1`, which the
    // verifier bounds to [1, HEAD_LEN] from the mask alone (HEAD_LEN is a power of two).
    const _: () = assert!(HEAD_LEN.is_power_of_two());
    let len = ((opaque(want).wrapping_sub(1) & (HEAD_LEN - 1)) + 1) as u32;
    // SAFETY: `head` is HEAD_LEN writable bytes of the reserved record and `len` <= HEAD_LEN;
    // the helper copies from the program's own skb.
    let from = (seg.payload_off + off) as u32;
    let r = unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), from, head.cast(), len) };
    if r == 0 { len as u16 } else { 0 }
}

/// `x`, through a volatile stack slot: LLVM knows nothing of the value read back.
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
fn count(index: u32) {
    if let Some(p) = API_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; this program cannot be preempted by itself on this CPU.
        unsafe { *p += 1 };
    }
}
