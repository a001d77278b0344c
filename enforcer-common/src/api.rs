//! The API guard's shared types: its per-rule-set configuration, counters and events.
//!
//! The guard is the ingress direction of the rule maps ([`crate::rules::direction::INGRESS`]):
//! a TCP SYN to a guarded port of a target is decided by the same lookup as an egress call,
//! keyed by the peer's address; the first bytes of every request on a guarded port are read
//! to report state-changing HTTP calls.
//!
//! Two surfaces are guarded: the web API ([`surface::WEB`], TCP) and the cluster port
//! ([`surface::CLUSTER`], memberlist gossip over TCP and UDP). The ingress rules carry the
//! surface as their port, so one lookup serves both; a cluster peer is also let in when it is
//! one of the receiving target's own `--cluster.peer` addresses ([`ClusterPeerKey`]).

/// Map names of the guard.
pub mod map_names {
    /// `Array<ApiConfig>`, one entry per rule set.
    pub const API_CONFIG: &str = "API_CONFIG";
    /// `PerCpuArray<u64>` indexed by [`super::counter`].
    pub const API_COUNTERS: &str = "API_COUNTERS";
    /// Ring buffer of [`super::ApiEvent`]s.
    pub const API_EVENTS: &str = "API_EVENTS";
    /// `LruHashMap<[u8; 17], PeerReport>` (address, family): when each refused peer was last
    /// reported.
    pub const API_PEERS: &str = "API_PEERS";
    /// `PerCpuArray<RateWindow>` with one entry: the refusal reports of the current second.
    pub const API_RATE: &str = "API_RATE";

    /// `HashMap<u64, u32>`: scope mode, the cgroup ids the target Alertmanager processes run
    /// in (written by the agent); a socket of one of them is guarded.
    pub const API_CGROUPS: &str = "API_CGROUPS";

    /// `HashMap<ClusterPeerKey, u32>`: each target's own literal `--cluster.peer` addresses,
    /// keyed by the target process (the receiving socket's creator) and, for a socket created
    /// before the agent marked it, by the target's cgroup (written by the agent).
    pub const API_CLUSTER_PEERS: &str = "API_CLUSTER_PEERS";

    /// `LruHashMap<[u8; 20], u64>` (address, family, local port): when each cluster peer was
    /// last seen sending a datagram (a join line for a peer not seen recently).
    pub const API_CLUSTER_SEEN: &str = "API_CLUSTER_SEEN";

    /// `SkStorage<u32>`: the sockets of the agent's own integrity watchdog (written by the
    /// agent through the socket's descriptor before it connects; nobody else can write it).
    pub const API_WATCHDOG_SOCKETS: &str = "API_WATCHDOG_SOCKETS";

    /// Every map of the guard.
    pub const ALL: [&str; 9] = [
        API_CONFIG,
        API_COUNTERS,
        API_EVENTS,
        API_PEERS,
        API_RATE,
        API_CGROUPS,
        API_CLUSTER_PEERS,
        API_CLUSTER_SEEN,
        API_WATCHDOG_SOCKETS,
    ];
}

/// Program name of the guard's decisions (cgroup_skb/ingress).
pub const PROG_NAME: &str = "enforcer_api_ingress";
/// Program name of the guard's cluster-port connection decisions (cgroup_skb/ingress).
pub const CLUSTER_PROG_NAME: &str = "enforcer_api_cluster";
/// Program name of the guard's cluster-port datagram decisions (cgroup_skb/ingress).
pub const CLUSTER_UDP_PROG_NAME: &str = "enforcer_api_cluster_udp";
/// Program name of the guard's web-port streams (cgroup_skb/ingress, attached after
/// [`PROG_NAME`]).
pub const STREAM_PROG_NAME: &str = "enforcer_api_stream";

/// Guarded ports per rule set.
pub const MAX_PORTS: usize = 8;

/// The surfaces of a target the guard watches. An ingress rule's port is its surface: a web
/// `allow` entry is a clause on port [`WEB`] (TCP), a `cluster_allow` entry one on port
/// [`CLUSTER`] (TCP and UDP).
pub mod surface {
    /// Not guarded.
    pub const NONE: u16 = 0;
    /// The HTTP API (`--web.listen-address`).
    pub const WEB: u16 = 1;
    /// The gossip port (`--cluster.listen-address`, TCP and UDP).
    pub const CLUSTER: u16 = 2;

    pub fn name(s: u16) -> &'static str {
        match s {
            WEB => "web",
            CLUSTER => "cluster",
            _ => "none",
        }
    }
}

/// Per-rule-set configuration of the guard. `n_ports == 0 && n_cluster_ports == 0`: the guard
/// is off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApiConfig {
    /// Guarded web ports, host order; the first `n_ports` count.
    pub ports: [u16; MAX_PORTS],
    /// Guarded cluster (gossip) ports, host order; the first `n_cluster_ports` count.
    pub cluster_ports: [u16; MAX_PORTS],
    pub n_ports: u32,
    pub n_cluster_ports: u32,
    /// [`crate::mode`] code.
    pub mode: u32,
    /// [`crate::verdict`] code for a web peer no ingress rule allows (a cluster peer no rule
    /// and no `--cluster.peer` allows is always refused).
    pub default_verdict: u32,
    /// Policy generation, echoed in events.
    pub generation: u32,
    pub _pad: u32,
}

/// Whether `port` is one of the first `n` of `ports`. Every slot is compared, without an early
/// exit: the loop has a constant trip count and unrolls, so no verifier has to bound a loop
/// over `n` (Linux 6.1's cannot).
#[inline(always)]
fn listed(ports: &[u16; MAX_PORTS], n: u32, port: u16) -> bool {
    let n = n as usize;
    let mut hit = false;
    for (i, p) in ports.iter().enumerate() {
        hit |= i < n && *p == port;
    }
    hit
}

impl ApiConfig {
    /// Whether `port` (host order) is a guarded web port.
    #[inline(always)]
    pub fn guards(&self, port: u16) -> bool {
        listed(&self.ports, self.n_ports, port)
    }

    /// The [`surface`] of local port `port` (host order): a web port first.
    #[inline(always)]
    pub fn surface(&self, port: u16) -> u16 {
        if self.guards(port) {
            surface::WEB
        } else if listed(&self.cluster_ports, self.n_cluster_ports, port) {
            surface::CLUSTER
        } else {
            surface::NONE
        }
    }
}

/// `API_CLUSTER_PEERS` key: one literal `--cluster.peer` address of one target.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterPeerKey {
    /// The target process's tgid ([`owner::PROCESS`]) or its cgroup id ([`owner::CGROUP`]).
    pub owner: u64,
    pub kind: u32,
    /// 1: IPv4 address in the first 4 bytes of `addr` (the rest zero); 0: IPv6.
    pub v4: u32,
    /// Network order; an IPv4-mapped spelling is stored (and looked up) as IPv4.
    pub addr: [u8; 16],
}

/// [`ClusterPeerKey::kind`].
pub mod owner {
    /// Keyed by the tgid of the process that created the receiving socket (its socket mark).
    pub const PROCESS: u32 = 1;
    /// Keyed by the receiving socket's cgroup: for a socket without a mark (created before the
    /// agent attached), the peers of every Alertmanager target of that cgroup.
    pub const CGROUP: u32 = 2;
}

/// Capacity of `API_CLUSTER_PEERS`.
pub const MAX_CLUSTER_PEERS: u32 = 4096;
/// Cluster peers remembered for join lines (least recently seen are forgotten).
pub const MAX_CLUSTER_SEEN: u32 = 4096;
/// A datagram from a peer not seen for this long is a join line.
pub const CLUSTER_REJOIN_NS: u64 = 300_000_000_000;
/// A peer's last-seen time is rewritten at most this often (not on every datagram).
pub const CLUSTER_SEEN_REFRESH_NS: u64 = 10_000_000_000;

/// Indexes into `API_COUNTERS`.
pub mod counter {
    /// Connections (SYNs) from allowed peers to a guarded port.
    pub const ACCEPTED: u32 = 0;
    /// SYNs dropped: the peer is not allowed (enforce mode).
    pub const REFUSED: u32 = 1;
    /// SYNs let through that would have been dropped (audit mode).
    pub const WOULD_REFUSE: u32 = 2;
    /// Refusal reports left out by the per-peer or per-second limit (the counters above
    /// still count every SYN).
    pub const REPORTS_SUPPRESSED: u32 = 3;
    /// Web port: segments with a payload queued for the agent's stream reassembly.
    pub const STREAM_SEGMENTS: u32 = 4;
    /// Web port: segments longer than [`super::STREAM_CHUNKS`] chunks (their tail was not
    /// queued; the agent reports a request head it cannot see).
    pub const STREAM_CUT: u32 = 5;
    /// Events that did not fit into the ring buffer.
    pub const LOST_EVENTS: u32 = 6;
    /// Cluster port, TCP: SYNs of allowed peers (each a gossip session).
    pub const CLUSTER_TCP_ACCEPTED: u32 = 7;
    /// Cluster port, TCP: SYNs dropped / let through in audit mode.
    pub const CLUSTER_TCP_REFUSED: u32 = 8;
    pub const CLUSTER_TCP_WOULD_REFUSE: u32 = 9;
    /// Cluster port, UDP: datagrams of allowed peers.
    pub const CLUSTER_UDP_ACCEPTED: u32 = 10;
    /// Cluster port, UDP: datagrams dropped / let through in audit mode.
    pub const CLUSTER_UDP_REFUSED: u32 = 11;
    pub const CLUSTER_UDP_WOULD_REFUSE: u32 = 12;
    /// Web port: SYNs of the agent's own watchdog that the allow list would have refused.
    pub const WATCHDOG_ACCEPTED: u32 = 13;
    /// Join lines queued (TCP sessions and datagrams of peers not seen recently).
    pub const CLUSTER_JOINS: u32 = 14;
    pub const COUNT: u32 = 15;
}

/// Event kinds of the guard's ring buffer.
pub mod event_kind {
    /// A peer's SYN was dropped.
    pub const PEER_REFUSED: u16 = 16;
    /// A peer's SYN would have been dropped (audit mode).
    pub const PEER_WOULD_REFUSE: u16 = 17;
    /// Kind 18 (a request head, layout 1) is no longer queued: requests are parsed by the
    /// agent out of the stream events below.
    /// An accepted connection to a web port: `seq` is the SYN's sequence number.
    pub const STREAM_OPEN: u16 = 20;
    /// Bytes of a web port's stream: `head` holds `head_len` bytes at sequence number `seq`
    /// (chunk `chunk` of a segment whose payload is `payload_len` bytes).
    pub const STREAM_DATA: u16 = 21;
    /// The peer's FIN or RST (`tcp_flags`) on a web port's stream, at sequence `seq`.
    pub const STREAM_CLOSE: u16 = 22;
    /// An allowed peer started a gossip session on a cluster port: a TCP connection, or a
    /// datagram from an address not seen recently.
    pub const CLUSTER_JOIN: u16 = 19;
}

/// Version of [`ApiEvent`]'s layout.
pub const API_EVENT_VERSION: u16 = 2;

/// Bytes of stream data carried in one [`event_kind::STREAM_DATA`] event.
pub const HEAD_LEN: usize = 256;
/// Chunks of one segment queued at most (the first `STREAM_CHUNKS * HEAD_LEN` bytes).
pub const STREAM_CHUNKS: usize = 8;

/// How long a refused peer stays quiet after it was reported (its SYNs are still counted).
pub const PEER_REPORT_INTERVAL_NS: u64 = 60_000_000_000;
/// Refusal reports per CPU and second, over all peers (a scan from many addresses).
pub const REPORTS_PER_SECOND: u64 = 20;
/// Capacity of `API_CGROUPS`.
pub const MAX_API_CGROUPS: u32 = 1024;
/// Refused peers remembered for the per-peer limit (least recently seen are forgotten).
pub const MAX_PEERS: u32 = 4096;

/// `API_PEERS` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerReport {
    /// `bpf_ktime_get_ns()` of the last report.
    pub reported_ns: u64,
    /// SYNs refused since then that were not reported.
    pub suppressed: u64,
}

/// `API_RATE` value: reports in the current one-second window of this CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RateWindow {
    pub start_ns: u64,
    pub reports: u64,
}

/// One event of the guard.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ApiEvent {
    pub header: crate::EventHeader,
    /// [`ApiConfig::generation`] of the rule set that decided.
    pub generation: u32,
    /// 2 (AF_INET) or 10 (AF_INET6): the packet's family.
    pub family: u16,
    pub peer_port: u16,
    pub local_port: u16,
    /// Bytes of `head` that hold the request (request events).
    pub head_len: u16,
    /// For refusals: the peer's earlier SYNs not reported (per-peer limit).
    pub suppressed: u32,
    /// IP protocol of the packet (6 TCP, 17 UDP).
    pub protocol: u8,
    /// [`surface`] of the local port (as u8).
    pub surface: u8,
    /// TCP flags of the segment.
    pub tcp_flags: u8,
    /// Stream data: the chunk's index within its segment.
    pub chunk: u8,
    /// The tgid that created the receiving socket (its socket mark), 0 when unmarked or not
    /// asked (refusals and data on a web port).
    pub owner_tgid: u32,
    /// Stream events: the TCP sequence number (see [`event_kind`]).
    pub seq: u32,
    /// Stream data: the whole segment's payload length.
    pub payload_len: u32,
    /// Network order; IPv4 in the first 4 bytes.
    pub peer_addr: [u8; 16],
    pub local_addr: [u8; 16],
    /// Request events: the first bytes of the TCP payload (method, path, ...).
    pub head: [u8; HEAD_LEN],
}

/// Size of the guard's ring buffer (stream data of a busy API: 3,500 chunks).
pub const API_EVENTS_BYTES: u32 = 1 << 20;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: a #[repr(C)] struct of integers without implicit padding; any bit pattern is
    // valid.
    unsafe impl aya::Pod for super::ApiConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PeerReport {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RateWindow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ClusterPeerKey {}
    // SAFETY: as above (the header, too, is plain integers without padding).
    unsafe impl aya::Pod for super::ApiEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_only_the_configured_ports() {
        let mut c = ApiConfig::default();
        assert!(!c.guards(9093));
        c.ports[0] = 9093;
        c.ports[1] = 8080;
        c.n_ports = 1;
        assert!(c.guards(9093));
        assert!(!c.guards(8080));
        c.n_ports = 2;
        assert!(c.guards(8080));
        assert_eq!(c.surface(8080), surface::WEB);
        c.cluster_ports[0] = 9094;
        assert_eq!(c.surface(9094), surface::NONE, "n_cluster_ports is 0");
        c.n_cluster_ports = 1;
        assert_eq!(c.surface(9094), surface::CLUSTER);
        assert!(!c.guards(9094));
        assert_eq!(c.surface(9095), surface::NONE);
        assert_eq!(core::mem::size_of::<ApiConfig>(), 56);
        assert_eq!(core::mem::size_of::<ApiEvent>(), 24 + 32 + 32 + HEAD_LEN);
        assert_eq!(core::mem::size_of::<ClusterPeerKey>(), 32);
    }
}
