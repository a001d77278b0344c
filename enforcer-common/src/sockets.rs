//! Socket-level guards and the packet-layer backstop (issue 13): what the programs below the
//! connect/sendmsg hooks refuse or drop for targets, and the per-socket mark the backstop reads.
//!
//! - `cgroup/sock_create` refuses to targets the sockets no connect/sendmsg hook decides:
//!   UDP-Lite (no `pre_connect`), ICMP/ICMPv6 ping sockets and raw sockets. Every other socket a
//!   target creates gets a [`SocketMark`] in [`map_names::SOCKET_MARKS`], socket-local storage
//!   that lives and dies with the socket.
//! - `cgroup/setsockopt` refuses to targets the options that send a packet to an address other
//!   than the one the hook decided: `IPV6_RTHDR`, `IPV6_2292RTHDR`, `IPV6_2292PKTOPTIONS` (a
//!   routing header), `IP_OPTIONS` (source routes).
//! - `cgroup_skb/egress` (the backstop) decides a marked socket's packet whose IP destination is
//!   not the socket's connected peer (unconnected sends, routing headers and source routes
//!   passed as ancillary data) with the shared verdict core, and drops a target's IPv6 packet
//!   that carries a routing header.

/// Map names.
pub mod map_names {
    /// `SkStorage<SocketMark>` (`BPF_MAP_TYPE_SK_STORAGE`, key: the socket): who created it
    /// (target sockets only). No capacity: the kernel allocates the mark in the socket and
    /// frees it with the socket.
    pub const SOCKET_MARKS: &str = "SOCKET_MARKS";

    pub const ALL: [&str; 1] = [SOCKET_MARKS];
}

/// Program names.
pub mod prog_names {
    /// `cgroup/setsockopt`: refuses packet-redirecting options to targets.
    pub const SETSOCKOPT: &str = "enforcer_setsockopt";
    /// `cgroup_skb/egress`: the packet-layer backstop.
    pub const PACKET_EGRESS: &str = "enforcer_packet_egress";
}

/// Who created a target socket, recorded at creation: the backstop runs in softirq or in
/// another task's context, so the event's process fields come from here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketMark {
    pub tgid: u32,
    pub uid: u32,
    pub gid: u32,
    pub _pad: u32,
    pub comm: [u8; crate::COMM_LEN],
}

/// Socket types and protocols the `sock_create` guard refuses.
pub mod kind {
    pub const SOCK_RAW: u32 = 3;
    pub const IPPROTO_ICMP: u32 = 1;
    pub const IPPROTO_ICMPV6: u32 = 58;
}

/// Socket options the `setsockopt` guard refuses (level, name).
pub mod option {
    pub const SOL_IP: i32 = 0;
    pub const SOL_IPV6: i32 = 41;
    pub const IP_OPTIONS: i32 = 4;
    pub const IPV6_2292RTHDR: i32 = 5;
    pub const IPV6_2292PKTOPTIONS: i32 = 6;
    pub const IPV6_RTHDR: i32 = 57;
}

#[cfg(feature = "user")]
// SAFETY: SocketMark is #[repr(C)] integers only (padding explicit).
unsafe impl aya::Pod for SocketMark {}
