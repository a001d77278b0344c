//! The packet-layer backstop (`cgroup_skb/egress`): the real destination of a target socket's
//! packet, decided by the shared verdict core when it is not the peer a connect hook decided.
//!
//! - A packet whose socket is connected to the packet's IP destination leaves at once, before
//!   any helper call: the connect hook decided that address (this is also every reply of an
//!   accepted connection).
//! - Then the socket's mark ([`sock::mark_of`]: socket-local storage that `sock_create` gives
//!   every socket a target creates, read with one helper, no cookie and no hash): a packet of a
//!   socket without one leaves — in scope mode every packet of a process that is not a target,
//!   in both modes request and timewait sockets (not full sockets). So does a packet of a
//!   listening TCP socket (its SYN-ACKs and resets answer a peer that connected to it).
//! - A target's IPv6 packet with a routing header is dropped (the header sends it to its first
//!   segment, and through the others). Any other packet of a marked socket is decided on its
//!   IP destination, L4 port and protocol by [`policy::can_egress`] (with the creator's
//!   automatic rules), as the sendmsg hooks decide an unconnected send: dropped when denied,
//!   reported with hook `packet_egress` as the socket's creator.
//!
//! ## Why the test is the socket's creator, not the current task
//!
//! Scope mode could leave first on `!identity::is_target(current tgid)`, as the sock_addr
//! hooks do. For the packets the backstop exists for — an unconnected send whose packet goes
//! elsewhere than the sendmsg hook decided (`IP_RETOPTS` or a routing header as ancillary data)
//! — egress does run in the sending task's context: `udp_sendmsg`/`rawv6_sendmsg` →
//! `ip_send_skb`/`ip6_local_out` → the cgroup egress hook in `ip_finish_output`, before the
//! qdisc, in the `sendmsg()` caller (an io_uring worker or SQPOLL thread is a thread of the
//! target, with its tgid). But that is not every packet of a target socket:
//!
//! 1. **TCP segments sent outside any system call**: retransmissions (RTO, tail-loss probes),
//!    SYN retransmissions, data released by an incoming ACK, keepalives and delayed ACKs are
//!    sent from timers and softirq, where `current` is whatever task the interrupt found — the
//!    idle task (tgid 0) or any process of the node. They normally go to the connected peer
//!    and leave at the first test; a TCP socket carrying a routing header or IP options does
//!    not. The setsockopt guard refuses those options to targets, but the kernel runs no
//!    `cgroup/setsockopt` program for a 32-bit (compat) `setsockopt()` — and a 64-bit process
//!    reaches that ABI with `int 0x80`, no privilege needed for `IPV6_RTHDR`. A target that
//!    does so and connects: its first SYN (sent by `connect()`, target context) is dropped,
//!    but with a current-task test every retransmitted SYN, sent from the retransmit timer,
//!    would leave with the routing header for its first segment — a blocked address — and a
//!    connection through it would then carry data whose retransmissions leave the same way.
//!    Test: `retransmissions_of_a_target_socket_sent_from_timers_are_still_decided` — with a
//!    build that left first on the current task (Linux 6.18, which offers the helper), it
//!    failed: one `packet_egress` line (the SYN of `connect()`), the retransmissions let out.
//! 2. **Corked UDP** (`UDP_CORK`/`MSG_MORE`): the queued datagram is sent by whichever task
//!    uncorks or sends the last part — any task holding the descriptor.
//! 3. **Descriptors passed** (`SCM_RIGHTS`, `pidfd_getfd`) to a process that is not a target:
//!    its sends on the target's socket would go undecided (a cooperating non-target can send
//!    what it likes from its own sockets anyway, so this one matters less).
//!
//! Can a target driven only by a hostile `alertmanager.yml` do any of this? No: the
//! configuration chooses URLs, SMTP servers and templates, not socket options, the system
//! call ABI or descriptor passing; Alertmanager's sockets are plain connected TCP (HTTP, SMTP)
//! and connected UDP/TCP DNS, all to-peer. The backstop exists for the stronger attacker of
//! the README's table (code running as a target), and for that one (1) is a bypass. The
//! socket's mark has none of these gaps — it names the creator whatever the context — and it
//! costs a non-target no more: one helper that finds no storage on the socket. (And the
//! current-task test would not load on Linux 6.1: `cgroup_skb` programs get
//! `bpf_get_current_pid_tgid` only from commit eb166e522c77, "bpf: Allow helper
//! bpf_get_[ns_]current_pid_tgid() for all prog types", in 6.10 — not even in 6.6 stable.)
//!
//! What the mark does not cover: a socket a target *received* from a process that is not a
//! target (no mark: its connects and unconnected sends are decided by the sock_addr hooks in
//! the target's context, but ancillary routing data on it is not seen here), and sockets a
//! target had before the agent attached.
use aya_ebpf::{
    helpers::generated::{bpf_sk_fullsock, bpf_skb_cgroup_id},
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
    // Then the socket's own mark: one helper that reads the socket's storage list (no cookie,
    // no hash); `None` for every socket no target created (and for request and timewait
    // sockets, which are not full sockets).
    // SAFETY: `sk` is the packet's socket (`__sk_buff.sk`, checked non-null above).
    let Some(mark) = (unsafe { sock::mark_of(sk) }) else {
        return ALLOW;
    };
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
            .filter(|_| !auto::allows(|| mark.tgid, &pkt.dst, pkt.port, proto_class))
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
