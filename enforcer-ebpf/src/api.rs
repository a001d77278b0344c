//! The API guard: a cgroup_skb/ingress program on the targets' cgroup.
//!
//! - A packet to a socket whose local port is not guarded leaves at once, on a field of the
//!   context, before any byte of the packet is read (the agent attaches the guard only to a
//!   policy with an `api:` section); in scope mode a packet of a socket outside the target
//!   Alertmanager processes' cgroups leaves after the port check, and so does what is not TCP.
//! - A SYN (a new connection) is decided by the verdict core in the ingress direction
//!   ([`policy::can_ingress`]) over the peer's address; a refused peer's SYN is dropped, so
//!   the API never answers it. Every refusal is counted; reports are limited per peer
//!   (bounded LRU) and per second.
//! - A segment that starts an HTTP request is classified by its method: state-changing calls
//!   (POST, PUT, DELETE, PATCH, anything on `/-/reload`) are reported with the head of the
//!   request, read-only calls only counted.

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
        MAX_PEERS, PEER_REPORT_INTERVAL_NS, PeerReport, REPORTS_PER_SECOND, RateWindow, counter,
        event_kind,
    },
    mode,
};

use enforcer_common::proto::IPPROTO_TCP;

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
const TCP_ACK: u8 = 0x10;
/// Bytes of the payload read to classify a request ("GET / HTTP/1.1\r\n" is 16).
const CLASSIFY_LEN: usize = 16;

#[cgroup_skb(ingress)]
pub fn enforcer_api_ingress(ctx: SkBuffContext) -> i32 {
    guard(&ctx)
}

/// A TCP segment as the guard sees it.
struct Segment {
    family: u16,
    peer: [u8; 16],
    local: [u8; 16],
    peer_port: u16,
    local_port: u16,
    flags: u8,
    payload_off: usize,
    payload_len: usize,
}

#[inline(always)]
fn guard(ctx: &SkBuffContext) -> i32 {
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
    if local_port > 0xffff || !api.guards(local_port as u16) {
        return PASS;
    }
    if crate::scoped() && !is_target_socket(ctx) {
        return PASS;
    }
    let Some(seg) = segment(ctx) else {
        return PASS;
    };
    if !api.guards(seg.local_port) {
        return PASS;
    }
    if seg.flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        return decide_peer(ctx, set, api, &seg);
    }
    if seg.payload_len >= CLASSIFY_LEN {
        classify_request(ctx, api, &seg);
    }
    PASS
}

/// The IP and TCP headers of the packet (`None` when it is not TCP, or a later fragment).
#[inline(always)]
fn segment(ctx: &SkBuffContext) -> Option<Segment> {
    // SAFETY: the kernel hands every cgroup_skb program a valid `__sk_buff`; `protocol` holds
    // the 16-bit network-order EtherType.
    let protocol = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    let mut peer = [0u8; 16];
    let mut local = [0u8; 16];
    let (family, l4) = if protocol == ETH_P_IP {
        let vihl: u8 = ctx.load(0).ok()?;
        let frag: u16 = ctx.load(6).ok()?;
        let proto: u8 = ctx.load(9).ok()?;
        if proto != IPPROTO_TCP || u16::from_be(frag) & 0x1fff != 0 {
            return None;
        }
        let src: [u8; 4] = ctx.load(12).ok()?;
        let dst: [u8; 4] = ctx.load(16).ok()?;
        peer[..4].copy_from_slice(&src);
        local[..4].copy_from_slice(&dst);
        (2u16, usize::from(vihl & 0x0f) * 4)
    } else if protocol == ETH_P_IPV6 {
        // Extension headers before TCP are not followed: such a packet is not guarded.
        let next: u8 = ctx.load(6).ok()?;
        if next != IPPROTO_TCP {
            return None;
        }
        peer = ctx.load(8).ok()?;
        local = ctx.load(24).ok()?;
        (10u16, 40)
    } else {
        return None;
    };
    let ports: [u8; 4] = ctx.load(l4).ok()?;
    let doff: u8 = ctx.load(l4 + 12).ok()?;
    let flags: u8 = ctx.load(l4 + 13).ok()?;
    let payload_off = l4 + usize::from(doff >> 4) * 4;
    let len = ctx.len() as usize;
    Some(Segment {
        family,
        peer,
        local,
        peer_port: u16::from_be_bytes([ports[0], ports[1]]),
        local_port: u16::from_be_bytes([ports[2], ports[3]]),
        flags,
        payload_off,
        payload_len: len.saturating_sub(payload_off),
    })
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

/// A new connection: the peer's verdict, counted; a refused peer's SYN is dropped (enforce).
#[inline(always)]
fn decide_peer(ctx: &SkBuffContext, set: u32, api: &ApiConfig, seg: &Segment) -> i32 {
    let peer = if seg.family == 2 {
        Dst::V4([seg.peer[0], seg.peer[1], seg.peer[2], seg.peer[3]])
    } else {
        policy::normalise_v6(seg.peer)
    };
    if policy::can_ingress(set, api, &peer, seg.local_port).is_none() {
        count(counter::ACCEPTED);
        return PASS;
    }
    let audit = api.mode == mode::AUDIT;
    count(if audit {
        counter::WOULD_REFUSE
    } else {
        counter::REFUSED
    });
    if let Some(suppressed) = may_report(seg) {
        let kind = if audit {
            event_kind::PEER_WOULD_REFUSE
        } else {
            event_kind::PEER_REFUSED
        };
        emit(ctx, false, kind, api, seg, suppressed);
    }
    if audit { PASS } else { DROP }
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
    if let Some(w) = API_RATE.get_ptr_mut(0) {
        // SAFETY: per-CPU slot; this program cannot be preempted by itself on this CPU.
        let w = unsafe { &mut *w };
        if now.wrapping_sub(w.start_ns) >= 1_000_000_000 {
            w.start_ns = now;
            w.reports = 0;
        }
        if w.reports >= REPORTS_PER_SECOND {
            count(counter::REPORTS_SUPPRESSED);
            return None;
        }
        w.reports += 1;
    }
    let report = PeerReport {
        reported_ns: now,
        suppressed: 0,
    };
    // A full LRU evicts its least recently used peer; failure only loses the rate limit.
    let _ = API_PEERS.insert(&key, &report, 0);
    Some(suppressed.min(u64::from(u32::MAX)) as u32)
}

/// A segment that starts an HTTP request: reported when it changes state, counted otherwise.
#[inline(always)]
fn classify_request(ctx: &SkBuffContext, api: &ApiConfig, seg: &Segment) {
    let Ok(start) = ctx.load::<[u8; CLASSIFY_LEN]>(seg.payload_off) else {
        return;
    };
    let write = start.starts_with(b"POST ")
        || start.starts_with(b"PUT ")
        || start.starts_with(b"DELETE ")
        || start.starts_with(b"PATCH ");
    let read =
        start.starts_with(b"GET ") || start.starts_with(b"HEAD ") || start.starts_with(b"OPTIONS ");
    if write || (read && is_reload(ctx, seg, &start)) {
        count(counter::WRITES);
        emit(ctx, true, event_kind::REQUEST, api, seg, 0);
    } else if read {
        count(counter::READS);
    }
}

/// Whether a read-only method's path is `/-/reload`: Alertmanager reloads only on POST, but a
/// GET or HEAD there is still an attempt on the reload endpoint worth a line.
#[inline(always)]
fn is_reload(ctx: &SkBuffContext, seg: &Segment, start: &[u8; CLASSIFY_LEN]) -> bool {
    let skip = if start.starts_with(b"GET ") {
        4
    } else if start.starts_with(b"HEAD ") {
        5
    } else {
        8
    };
    ctx.load::<[u8; 9]>(seg.payload_off + skip)
        .is_ok_and(|p| &p == b"/-/reload")
}

/// Queues one event; counts it as lost when the ring is full. `head`: copy the request head.
#[inline(always)]
fn emit(
    ctx: &SkBuffContext,
    head: bool,
    kind: u16,
    api: &ApiConfig,
    seg: &Segment,
    suppressed: u32,
) {
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
        if head {
            head_len = copy_head(ctx, seg, addr_of_mut!((*p).head));
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
        addr_of_mut!((*p).suppressed).write(suppressed);
        addr_of_mut!((*p).peer_addr).write(seg.peer);
        addr_of_mut!((*p).local_addr).write(seg.local);
    }
    // The agent drains this ring on a short timer: no wakeup per event.
    slot.submit(BPF_RB_NO_WAKEUP as u64);
}

/// Copies up to [`HEAD_LEN`] bytes of the payload straight into the reserved record (one
/// helper call, no stack copy); returns how many were copied.
#[inline(always)]
fn copy_head(ctx: &SkBuffContext, seg: &Segment, head: *mut [u8; HEAD_LEN]) -> u16 {
    let want = if seg.payload_len > HEAD_LEN {
        HEAD_LEN
    } else {
        seg.payload_len
    } as u32;
    // The bound is checked on the very register the helper gets: a volatile read keeps LLVM
    // from folding the check into the `min` above and from reloading the length from a stack
    // slot after it (Linux 6.1's verifier does not carry a register's bound to a reload).
    // SAFETY: a read of a local.
    let len = unsafe { core::ptr::read_volatile(&raw const want) };
    if len == 0 || len > HEAD_LEN as u32 {
        return 0;
    }
    // SAFETY: `head` is HEAD_LEN writable bytes of the reserved record and `len` <= HEAD_LEN;
    // the helper copies from the program's own skb.
    let r =
        unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), seg.payload_off as u32, head.cast(), len) };
    if r == 0 { len as u16 } else { 0 }
}

#[inline(always)]
fn count(index: u32) {
    if let Some(p) = API_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; this program cannot be preempted by itself on this CPU.
        unsafe { *p += 1 };
    }
}
