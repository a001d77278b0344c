//! The FQDN allowlist (docs/design.md decision order, step 4): shared map names, layouts and codes.
//!
//! Two address maps per family feed step 4, both keyed by the destination address as the
//! verdict sees it (IPv4 for mapped and NAT64 IPv6):
//!
//! - `LEARNED_*`: written only by the kernel. The `cgroup_skb/ingress` program of the protected
//!   cgroup reads every DNS response delivered to it and inserts the A/AAAA answers of an
//!   allowlisted question *before* the packet reaches the socket, so the process can never
//!   connect to an answer the map does not hold yet.
//! - `RESOLVED_*`: written only by the agent, from its own resolution of every allowlisted name.
//!
//! One writer per map: the agent never rewrites a value the kernel may be rewriting at the same
//! moment, and the other way round.
use crate::EventHeader;

/// Map names, as the kernel object declares them.
pub mod map_names {
    /// `HashMap<[u8; 4], FqdnEntry>` of addresses learned from DNS answers (kernel writes).
    pub const LEARNED_V4: &str = "FQDN_LEARNED_V4";
    /// `HashMap<[u8; 16], FqdnEntry>`, IPv6 counterpart of [`LEARNED_V4`].
    pub const LEARNED_V6: &str = "FQDN_LEARNED_V6";
    /// `HashMap<[u8; 4], FqdnEntry>` of addresses the agent resolved (agent writes).
    pub const RESOLVED_V4: &str = "FQDN_RESOLVED_V4";
    /// `HashMap<[u8; 16], FqdnEntry>`, IPv6 counterpart of [`RESOLVED_V4`].
    pub const RESOLVED_V6: &str = "FQDN_RESOLVED_V6";
    /// `HashMap<NameKey, u64>`: exact allowlisted names → rule-slot mask.
    pub const EXACT: &str = "FQDN_EXACT";
    /// `HashMap<NameKey, u64>`: `*.name` entries (keyed by `name`) → rule-slot mask.
    pub const WILDCARD: &str = "FQDN_WILDCARD";
    /// `Array<u64>` of [`crate::ACTIVE_SETS`] × 3 entries (rule set × protocol class): the
    /// rule slots that allow every port of that protocol.
    pub const ANY_PORT: &str = "FQDN_ANY_PORT";
    /// `HashMap<PortKey, u64>`: the rule slots that allow one port of one protocol class.
    pub const PORTS: &str = "FQDN_PORTS";
    /// `Array<FqdnSettings>` with one entry.
    pub const SETTINGS: &str = "FQDN_SETTINGS";
    /// `PerCpuArray<u64>` indexed by [`super::counter`].
    pub const COUNTERS: &str = "FQDN_COUNTERS";
    /// Ring buffer of [`super::LearnedEvent`]s.
    pub const EVENTS: &str = "FQDN_EVENTS";
    /// Per-CPU parse buffers of the learning and query programs.
    pub const SCRATCH: &str = "FQDN_SCRATCH";
    /// `LruHashMap<QueryKey, u64>`: the DNS queries targets' sockets sent and that no accepted
    /// response consumed yet → when they were sent (`bpf_ktime_get_ns`).
    pub const QUERIES: &str = "FQDN_QUERIES";

    /// Every FQDN map (pinned with the others when the agent runs with pinning).
    pub const ALL: [&str; 13] = [
        LEARNED_V4,
        LEARNED_V6,
        RESOLVED_V4,
        RESOLVED_V6,
        EXACT,
        WILDCARD,
        ANY_PORT,
        PORTS,
        SETTINGS,
        COUNTERS,
        EVENTS,
        SCRATCH,
        QUERIES,
    ];
}

/// The `cgroup_skb/ingress` program that learns from DNS answers.
pub const PROG_DNS_INGRESS: &str = "enforcer_dns_ingress";
/// The `cgroup_skb/egress` program that records the DNS queries the answers must match.
pub const PROG_DNS_EGRESS: &str = "enforcer_dns_egress";

/// Outstanding queries kept (LRU): a socket's query evicted before its answer came teaches
/// nothing (fail closed).
pub const QUERIES_CAPACITY: u32 = 4096;
/// A query older than this is no longer outstanding (stub resolvers give up after 5 s per
/// attempt; Go and glibc retry with a new id).
pub const QUERY_MAX_AGE_NS: u64 = 30_000_000_000;

/// Key of `FQDN_QUERIES`: one query a socket sent. `qtype` is host order, `id` as on the wire
/// (network order bytes read as a native u16); `name` is the question as a [`NameKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryKey {
    pub cookie: u64,
    pub id: u16,
    pub qtype: u16,
    pub _pad: u32,
    pub name: NameKey,
}

/// FQDN rules per policy: a rule is one bit of [`FqdnEntry::rules`].
pub const MAX_RULES: u32 = 64;

/// Size of a [`NameKey`].
pub const NAME_KEY_LEN: usize = 256;

/// A DNS name as a map key: its labels in wire format (length byte, then the bytes), lower
/// case, without the root label, **right-aligned** in 256 zero bytes. Right alignment makes
/// every suffix of a name a valid key of its own: zeroing the leading labels of a name's key
/// gives the key of its parent, which is how the kernel checks `*.` wildcards with no copying.
pub type NameKey = [u8; NAME_KEY_LEN];

/// Key of the `FQDN_PORTS` map. `class` is the index of the [`crate::proto`] class bit
/// (0 TCP, 1 UDP, 2 other); `port` is in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub set: u8,
    pub class: u8,
    pub port: u16,
}

/// (protocol class, port) entries of `FQDN_PORTS` one rule set may use: the ports that `fqdn`
/// rules with a port list allow, counted once per protocol class (a rule allowing every port
/// takes none, see `FQDN_ANY_PORT`). The agent's capacity check refuses a policy beyond it.
pub const PORTS_PER_SET: u32 = 16_384;

/// Capacity of `FQDN_PORTS`: [`PORTS_PER_SET`] for each rule set (a reload writes the inactive
/// set while the active one stays). 32,768 entries: 512 KiB of hash buckets, where room for
/// every port of every class (393,216 entries) took 8 MiB.
pub const PORTS_CAPACITY: u32 = crate::ACTIVE_SETS * PORTS_PER_SET;

/// The index of a [`crate::proto`] class bit in [`PortKey::class`] and `FQDN_ANY_PORT`.
#[inline(always)]
pub fn class_index(class_bit: u8) -> u32 {
    match class_bit {
        crate::proto::TCP => 0,
        crate::proto::UDP => 1,
        _ => 2,
    }
}

/// Capacity of each learned and resolved map (entries per family).
pub const LEARNED_CAPACITY: u32 = 65_536;
pub const RESOLVED_CAPACITY: u32 = 65_536;

/// Size of the learned-event ring buffer.
pub const EVENTS_BYTES: u32 = 1 << 20;

/// The learning program wakes the agent once per this much queued (a power of two, see
/// [`crate::wakeup_crossed`]); the agent also drains on a short timer.
pub const EVENTS_WAKEUP_BYTES: u64 = (EVENTS_BYTES as u64) / 4;

/// Value of the address maps: which FQDN rule slots the address was answered for, and until
/// when (`bpf_ktime_get_ns()`, CLOCK_MONOTONIC). Every rule of an entry shares its expiry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FqdnEntry {
    pub expires_ns: u64,
    /// Bit `i` = rule slot `i`.
    pub rules: u64,
}

/// Kernel-side settings of the learning program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FqdnSettings {
    /// Added to an answer's TTL: how long an address stays allowed after its TTL ran out.
    pub grace_ns: u64,
    /// Answers' TTLs are capped to this.
    pub max_ttl_ns: u64,
    /// [`flags`] bits.
    pub flags: u32,
    pub _pad: u32,
}

/// [`FqdnSettings::flags`].
pub mod flags {
    /// Learn only from responses delivered to a connected UDP socket whose peer is the
    /// response's source (the name server the socket queried; our connect hook vetted it).
    pub const REQUIRE_CONNECTED_PEER: u32 = 1;
    /// Scope mode: learn only from a socket on which a target sent a DNS query (marked by the
    /// connect/sendmsg programs in `TARGET_SOCKETS`); every other packet leaves at once.
    pub const REQUIRE_TARGET_SOCKET: u32 = 2;
}

/// Indexes into the `FQDN_COUNTERS` per-CPU array.
pub mod counter {
    /// DNS responses whose question matched an allowlisted name.
    pub const MATCHED_RESPONSES: u32 = 0;
    /// A/AAAA answers written into the learned maps.
    pub const LEARNED: u32 = 1;
    /// Responses that ended before their header said (truncated packet or parse limits).
    pub const TRUNCATED: u32 = 2;
    /// Malformed responses (bad label, compressed question, ...).
    pub const MALFORMED: u32 = 3;
    /// Answers that did not fit: the learned map was full.
    pub const MAP_FULL: u32 = 4;
    /// Responses from port 53 not delivered to a socket connected to their source.
    pub const UNVERIFIED_PEER: u32 = 5;
    /// Learned events that did not fit into the ring buffer.
    pub const LOST_EVENTS: u32 = 6;
    /// Responses with the TC (truncated) bit: the resolver retries over TCP, which we do not see.
    pub const TC_BIT: u32 = 7;
    /// Responses matching no outstanding query of the socket (id, question name and type),
    /// or whose query an earlier accepted response consumed.
    pub const NO_QUERY: u32 = 8;
    /// Responses to a question that is not IN A or IN AAAA (a TXT answer's A records).
    pub const QUESTION_TYPE: u32 = 9;
    /// Responses whose UDP checksum is wrong: the UDP layer drops them.
    pub const BAD_CHECKSUM: u32 = 10;
    /// Answer records skipped because their owner is not on the CNAME chain from the question.
    pub const OFF_CHAIN: u32 = 11;
    /// Answer records skipped because of their type or class (not the asked type, not a CNAME).
    pub const OTHER_TYPE: u32 = 12;
    /// Responses accepted with a checksum the kernel does not verify: a datagram sent on this
    /// host over loopback, whose check field holds only the pseudo-header sum (offload).
    pub const CHECKSUM_OFFLOADED: u32 = 13;
    /// DNS queries of targets' sockets recorded (egress).
    pub const QUERIES: u32 = 14;
    pub const COUNT: u32 = 15;

    /// The counters that count a refused response, with their `reason` label.
    pub const REFUSED: [(u32, &str); 7] = [
        (NO_QUERY, "no_query"),
        (QUESTION_TYPE, "question_type"),
        (TC_BIT, "tc_bit"),
        (BAD_CHECKSUM, "bad_checksum"),
        (TRUNCATED, "truncated"),
        (MALFORMED, "malformed"),
        (UNVERIFIED_PEER, "unverified_peer"),
    ];
    /// The counters that count answer records skipped in an accepted response.
    pub const IGNORED: [(u32, &str); 2] = [(OFF_CHAIN, "off_chain"), (OTHER_TYPE, "other_type")];
}

/// [`EventHeader::kind`] of a [`LearnedEvent`].
pub const EVENT_LEARNED: u16 = 3;
/// Version of the [`LearnedEvent`] layout.
pub const LEARNED_EVENT_VERSION: u16 = 2;

/// [`LearnedAnswer::status`] codes.
pub mod status {
    pub const INSERTED: u16 = 0;
    pub const MAP_FULL: u16 = 1;
}

/// A/AAAA answers per [`LearnedEvent`] (and per response: later ones are not learned).
pub const MAX_LEARNED: usize = 16;

/// One A/AAAA answer the kernel learned (or failed to store).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearnedAnswer {
    /// The address, network order; an IPv4 address in the first word.
    pub addr: [u32; 4],
    /// TTL of the record as received, seconds.
    pub ttl: u32,
    /// 1 when `addr` holds an IPv4 address (also for IPv4-mapped and NAT64 AAAA answers,
    /// stored under their IPv4 address), 0 for IPv6.
    pub v4: u32,
    /// [`status`] code.
    pub status: u32,
    pub _pad: u32,
    /// The address's entry as written: its expiry and rule slots (the agent compares these
    /// with the map before it removes an entry, so it never removes a fresher one).
    pub entry_expires_ns: u64,
    pub entry_rules: u64,
}

/// The answers the kernel learned from one DNS response.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LearnedEvent {
    pub header: EventHeader,
    /// Rule slots the question matched.
    pub rules: u64,
    /// Valid entries of `answers`.
    pub count: u32,
    pub _pad: u32,
    /// The question name as a [`NameKey`].
    pub name: NameKey,
    pub answers: [LearnedAnswer; MAX_LEARNED],
}

#[cfg(feature = "user")]
mod pod {
    // Each type: plain #[repr(C)] integers with explicit padding, so any bit pattern is valid.
    // SAFETY: FqdnEntry is #[repr(C)] integers only (padding explicit).
    unsafe impl aya::Pod for super::FqdnEntry {}
    // SAFETY: FqdnSettings is #[repr(C)] integers only (padding explicit).
    unsafe impl aya::Pod for super::FqdnSettings {}
    // SAFETY: PortKey is #[repr(C)] integers only (padding explicit).
    unsafe impl aya::Pod for super::PortKey {}
    // SAFETY: LearnedEvent is #[repr(C)] integers only (padding explicit).
    unsafe impl aya::Pod for super::LearnedEvent {}
    // SAFETY: LearnedAnswer is #[repr(C)] integers only (padding explicit).
    unsafe impl aya::Pod for super::LearnedAnswer {}
    // SAFETY: QueryKey is #[repr(C)] integers and bytes only (padding explicit).
    unsafe impl aya::Pod for super::QueryKey {}
}
