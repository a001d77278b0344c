//! The API guard's shared types: its per-rule-set configuration, counters and events.
//!
//! The guard is the ingress direction of the rule maps ([`crate::rules::direction::INGRESS`]):
//! a TCP SYN to a guarded port of a target is decided by the same lookup as an egress call,
//! keyed by the peer's address; the first bytes of every request on a guarded port are read
//! to report state-changing HTTP calls.

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

    /// Every map of the guard.
    pub const ALL: [&str; 6] = [
        API_CONFIG,
        API_COUNTERS,
        API_EVENTS,
        API_PEERS,
        API_RATE,
        API_CGROUPS,
    ];
}

/// Program name of the guard (cgroup_skb/ingress).
pub const PROG_NAME: &str = "enforcer_api_ingress";

/// Guarded ports per rule set.
pub const MAX_PORTS: usize = 8;

/// Per-rule-set configuration of the guard. `n_ports == 0`: the guard is off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApiConfig {
    /// Guarded listening ports, host order; the first `n_ports` count.
    pub ports: [u16; MAX_PORTS],
    pub n_ports: u32,
    /// [`crate::mode`] code.
    pub mode: u32,
    /// [`crate::verdict`] code for a peer no ingress rule allows.
    pub default_verdict: u32,
    /// Policy generation, echoed in events.
    pub generation: u32,
}

impl ApiConfig {
    /// Whether `port` (host order) is guarded. Every slot is compared, without an early exit:
    /// the loop has a constant trip count and unrolls, so no verifier has to bound a loop over
    /// `n_ports` (Linux 6.1's cannot).
    #[inline(always)]
    pub fn guards(&self, port: u16) -> bool {
        let n = self.n_ports as usize;
        let mut hit = false;
        for i in 0..MAX_PORTS {
            hit |= i < n && self.ports[i] == port;
        }
        hit
    }
}

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
    /// State-changing requests reported.
    pub const WRITES: u32 = 4;
    /// Read-only requests (counted, not reported).
    pub const READS: u32 = 5;
    /// Events that did not fit into the ring buffer.
    pub const LOST_EVENTS: u32 = 6;
    pub const COUNT: u32 = 7;
}

/// Event kinds of the guard's ring buffer.
pub mod event_kind {
    /// A peer's SYN was dropped.
    pub const PEER_REFUSED: u16 = 16;
    /// A peer's SYN would have been dropped (audit mode).
    pub const PEER_WOULD_REFUSE: u16 = 17;
    /// A state-changing request arrived on a guarded port.
    pub const REQUEST: u16 = 18;
}

/// Version of [`ApiEvent`]'s layout.
pub const API_EVENT_VERSION: u16 = 1;

/// Bytes of a request's head carried in a [`event_kind::REQUEST`] event.
pub const HEAD_LEN: usize = 128;

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
    /// Network order; IPv4 in the first 4 bytes.
    pub peer_addr: [u8; 16],
    pub local_addr: [u8; 16],
    /// Request events: the first bytes of the TCP payload (method, path, ...).
    pub head: [u8; HEAD_LEN],
}

/// Size of the guard's ring buffer.
pub const API_EVENTS_BYTES: u32 = 1 << 18;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: a #[repr(C)] struct of integers without implicit padding; any bit pattern is
    // valid.
    unsafe impl aya::Pod for super::ApiConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PeerReport {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RateWindow {}
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
        assert_eq!(core::mem::size_of::<ApiConfig>(), 32);
        assert_eq!(core::mem::size_of::<ApiEvent>(), 24 + 16 + 32 + HEAD_LEN);
    }
}
