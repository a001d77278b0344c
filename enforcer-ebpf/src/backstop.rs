//! The packet-layer backstop (`cgroup_skb/egress`): the real destination of a target socket's
//! packet, decided by the shared verdict core when it is not the peer a connect hook decided.
//!
//! - A packet whose socket is connected to the packet's IP destination leaves at once: the
//!   connect hook decided that address (this is also every reply of an accepted connection).
//!   So does a packet of a listening TCP socket (its SYN-ACKs and resets answer a peer that
//!   connected to it), and a packet of a socket without a mark (`PACKET_SOCKETS`, set by `sock_create` for
//!   the sockets targets create), i.e. every packet of a process that is not a target.
//! - A target's IPv6 packet with a routing header is dropped (the header sends it to its first
//!   segment, and through the others). Any other packet of a marked socket is decided on its
//!   IP destination, L4 port and protocol by [`policy::can_egress`] (with the creator's
//!   automatic rules), as the sendmsg hooks decide an unconnected send: dropped when denied,
//!   reported with hook `packet_egress`.
use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_sk_fullsock, bpf_skb_cgroup_id},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use enforcer_common::{
    Config, counter, event_kind, hook, mode, proto, rule_id, sockets::SocketMark,
};

use crate::{
    ALLOW, DENY, Dst, ETH_P_IP, ETH_P_IPV6, Record, Who, active_config, auto, count, emit, policy,
    sock,
};

/// `BPF_TCP_LISTEN` in `bpf_sock.state`.
const TCP_LISTEN: u32 = 10;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_DEST: u8 = 60;

#[cgroup_skb(egress)]
pub fn enforcer_packet_egress(ctx: SkBuffContext) -> i32 {
    check(&ctx)
}

/// A packet as the backstop decides it.
struct Packet {
    family: u16,
    /// The IP destination, as on the wire (IPv4 in the first 4 bytes).
    raw: [u8; 16],
    dst: Dst,
    /// IP protocol of the transport header (0 when not reached).
    protocol: u8,
    port: u16,
    /// An IPv6 routing header is present.
    routed: bool,
}

#[inline(always)]
fn check(ctx: &SkBuffContext) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: the kernel hands every cgroup_skb program a valid `__sk_buff`.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return ALLOW;
    }
    // SAFETY: `__sk_buff.protocol` holds the 16-bit network-order EtherType.
    let ethertype = u16::from_be(unsafe { (*skb).protocol } as u16);
    // First, with no helper call: a packet to its socket's peer (every packet of a connected
    // socket, a SYN-ACK of a request socket) leaves here.
    match to_peer(ctx, ethertype) {
        Some(false) => {}
        Some(true) | None => return ALLOW,
    }
    // SAFETY: helper on the packet's own socket pointer.
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() {
        return ALLOW;
    }
    // SAFETY: `full` is a full socket the helper returned, valid for this run.
    let sk = unsafe { &*full };
    // A listening TCP socket sends only answers to peers that connected to it (SYN-ACKs,
    // resets): the peer chose the address, no connect hook decided it, and the options that
    // could redirect such a packet are refused to targets by the setsockopt guard.
    if sk.protocol == u32::from(proto::IPPROTO_TCP) && sk.state == TCP_LISTEN {
        return ALLOW;
    }
    // SAFETY: the helper reads the cookie of the packet's socket.
    let cookie = unsafe { bpf_get_socket_cookie(skb.cast()) };
    // SAFETY: the mark is plain data, read while the map entry lives (this run).
    let Some(mark) = (unsafe { sock::PACKET_SOCKETS.get(&cookie) }) else {
        return ALLOW;
    };
    let Some((set, cfg)) = active_config() else {
        return DENY;
    };
    let Some(pkt) = packet(ctx, ethertype) else {
        return ALLOW;
    };
    let proto_class = proto::class(u32::from(pkt.protocol));
    let denied_by = if pkt.routed {
        Some(rule_id::ROUTING_HEADER)
    } else {
        policy::can_egress(set, cfg, &pkt.dst, pkt.port, proto_class)
            .filter(|_| !auto::allows(mark.tgid, &pkt.dst, pkt.port, proto_class))
    };
    report(ctx, cfg, mark, &pkt, denied_by)
}

/// Whether the packet goes to its socket's peer (`__sk_buff.remote_ip4/6`: the connected
/// address a connect hook decided) on a plain header (no IPv4 options, no IPv6 routing header);
/// `None` for a packet that is not IP. The header is read in place (direct packet access: an
/// egress packet's IP header is in the linear data), through the helper when it is not.
#[inline(always)]
fn to_peer(ctx: &SkBuffContext, ethertype: u16) -> Option<bool> {
    let skb = ctx.skb.skb;
    // SAFETY: reads of the program's own context fields.
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    if ethertype == ETH_P_IP {
        let (vihl, daddr) = if data + 20 <= end {
            // SAFETY: bytes 0..20 of the packet, checked against `data_end` above.
            unsafe {
                (
                    *(data as *const u8),
                    core::ptr::read_unaligned((data + 16) as *const u32),
                )
            }
        } else {
            (ctx.load::<u8>(0).ok()?, ctx.load::<u32>(16).ok()?)
        };
        // SAFETY: a context field read.
        return Some(vihl & 0x0f == 5 && daddr == unsafe { (*skb).remote_ip4 });
    }
    if ethertype != ETH_P_IPV6 {
        return None;
    }
    let (next, d) = if data + 40 <= end {
        // SAFETY: bytes 0..40 of the packet, checked against `data_end` above.
        unsafe {
            (
                *((data + 6) as *const u8),
                core::ptr::read_unaligned((data + 24) as *const [u32; 4]),
            )
        }
    } else {
        (ctx.load::<u8>(6).ok()?, ctx.load::<[u32; 4]>(24).ok()?)
    };
    // SAFETY: a context field read.
    let peer = unsafe { (*skb).remote_ip6 };
    Some(next != NEXTHDR_ROUTING && d == peer)
}

/// The IP destination, transport protocol and port (through at most two extension headers
/// before a routing header or the transport header, for IPv6).
#[inline(always)]
fn packet(ctx: &SkBuffContext, ethertype: u16) -> Option<Packet> {
    let mut raw = [0u8; 16];
    if ethertype == ETH_P_IP {
        let vihl: u8 = ctx.load(0).ok()?;
        let frag: u16 = ctx.load(6).ok()?;
        let protocol: u8 = ctx.load(9).ok()?;
        let daddr: [u8; 4] = ctx.load(16).ok()?;
        raw[..4].copy_from_slice(&daddr);
        // A later fragment carries no transport header.
        let port = if u16::from_be(frag) & 0x1fff == 0 {
            l4_port(ctx, protocol, usize::from(vihl & 0x0f) * 4)
        } else {
            0
        };
        return Some(Packet {
            family: 2,
            raw,
            dst: Dst::V4(daddr),
            protocol,
            port,
            routed: false,
        });
    }
    raw = ctx.load(24).ok()?;
    let mut next: u8 = ctx.load(6).ok()?;
    let mut off = 40usize;
    let mut routed = next == NEXTHDR_ROUTING;
    for _ in 0..2 {
        if routed || (next != NEXTHDR_HOP && next != NEXTHDR_DEST) {
            break;
        }
        let hdr: [u8; 2] = ctx.load(off).ok()?;
        next = hdr[0];
        off += (usize::from(hdr[1]) + 1) * 8;
        routed = next == NEXTHDR_ROUTING;
    }
    Some(Packet {
        family: 10,
        raw,
        dst: policy::normalise_v6(raw),
        protocol: next,
        port: if routed { 0 } else { l4_port(ctx, next, off) },
        routed,
    })
}

/// The destination port of a TCP, UDP or UDP-Lite header at `off` (0 for other protocols).
#[inline(always)]
fn l4_port(ctx: &SkBuffContext, protocol: u8, off: usize) -> u16 {
    if proto::class(u32::from(protocol)) & (proto::TCP | proto::UDP) == 0 {
        return 0;
    }
    ctx.load::<[u8; 2]>(off + 2)
        .map(u16::from_be_bytes)
        .unwrap_or(0)
}

/// Counts the packet's verdict; a denied packet is reported (as its socket's creator) and
/// dropped, or let through in audit mode.
#[inline(always)]
fn report(
    ctx: &SkBuffContext,
    cfg: &Config,
    mark: &SocketMark,
    pkt: &Packet,
    denied_by: Option<u32>,
) -> i32 {
    let Some(rule) = denied_by else {
        count(counter::index(counter::ALLOWED, hook::PACKET_EGRESS));
        return ALLOW;
    };
    let audit = cfg.mode == mode::AUDIT;
    let (base, kind) = if audit {
        (counter::WOULD_DENY, event_kind::WOULD_DENY)
    } else {
        (counter::DENIED, event_kind::DENIED)
    };
    count(counter::index(base, hook::PACKET_EGRESS));
    // SAFETY: plain helper call on the program's own skb.
    let cgroup = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    emit(
        &Record {
            hook: hook::PACKET_EGRESS,
            family: pkt.family,
            dst_addr: pkt.raw,
            protocol: pkt.protocol,
            kind,
            rule,
            generation: cfg.generation,
            port: pkt.port,
        },
        &Who::Socket(mark, cgroup),
    );
    if audit { ALLOW } else { DENY }
}
