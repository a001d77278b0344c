//! Types shared by the kernel programs (`enforcer-ebpf`) and the agent (`enforcer`).
//!
//! Everything here is `#[repr(C)]` with explicit padding and integer flags; userspace decodes
//! codes with checked conversions (see the `from_u8` helpers), never by transmuting.
#![no_std]

pub mod api;
pub mod fqdn;
pub mod identity;
pub mod rules;
pub mod sockets;

pub use rules::{V4_KEY_LEN, V6_KEY_LEN, direction};

/// Map names, as the kernel object declares them and the agent looks them up.
pub mod map_names {
    /// IPv4 LPM tries; the suffix is the rule set (0 or 1) — see [`crate::ACTIVE_SETS`].
    pub const V4_RULES: [&str; 2] = ["V4_RULES_0", "V4_RULES_1"];
    /// IPv6 LPM tries, one per rule set.
    pub const V6_RULES: [&str; 2] = ["V6_RULES_0", "V6_RULES_1"];
    /// `Array<Config>` with one entry per rule set.
    pub const CONFIG: &str = "CONFIG";
    /// `Array<u32>` with one entry: the rule set programs read now.
    pub const ACTIVE: &str = "ACTIVE";
    /// `PerCpuArray<u64>` of verdict counters, indexed by [`crate::counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Ring buffer of [`crate::DenyEvent`]s.
    pub const EVENTS: &str = "EVENTS";
    /// `Array<V4Filter>`, one entry per rule set: the IPv4 /24 blocks any LPM entry touches.
    pub const V4_FILTER: &str = "V4_FILTER";
    /// `HashMap<AutoKey, u32>`: automatic rules, per target process (see [`crate::AutoKey`]).
    pub const AUTO_ALLOW: &str = "AUTO_ALLOW";
    /// `Array<u64>` of [`crate::AUTO_PORT_WORDS`] words: bit `port` set when some
    /// `AUTO_ALLOW` entry names that port, so a denial to any other port skips the lookup.
    pub const AUTO_PORTS: &str = "AUTO_PORTS";
    /// `PerCpuArray<u64>` with one entry: deny records this CPU queued (see
    /// [`crate::wake_every`]).
    pub const EVENTS_QUEUED: &str = "EVENTS_QUEUED";
    /// IPv4 exact entries (`/32`s, see [`crate::ExactValue`]), one hash map per rule set,
    /// looked up before the trie.
    pub const V4_EXACT: [&str; 2] = ["V4_EXACT_0", "V4_EXACT_1"];
    /// IPv6 exact entries (`/128`s), one hash map per rule set.
    pub const V6_EXACT: [&str; 2] = ["V6_EXACT_0", "V6_EXACT_1"];
    /// IPv4 block entries (see [`crate::BlockValue`]), one hash map per rule set, looked up
    /// after the exact map and before the trie.
    pub const V4_BLOCKS: [&str; 2] = ["V4_BLOCKS_0", "V4_BLOCKS_1"];

    /// Every map of this module (all are pinned when the agent runs with pinning; so are
    /// [`crate::identity::map_names::ALL`] and [`crate::fqdn::map_names::ALL`]).
    pub const ALL: [&str; 18] = [
        V4_RULES[0],
        V4_RULES[1],
        V6_RULES[0],
        V6_RULES[1],
        V4_EXACT[0],
        V4_EXACT[1],
        V6_EXACT[0],
        V6_EXACT[1],
        V4_BLOCKS[0],
        V4_BLOCKS[1],
        CONFIG,
        ACTIVE,
        COUNTERS,
        EVENTS,
        AUTO_ALLOW,
        AUTO_PORTS,
        EVENTS_QUEUED,
        V4_FILTER,
    ];
}

/// Version of the pinned-object layout (map key/value types, map set). Bump it whenever any
/// pinned map changes shape: an agent only adopts pins of its own layout version, takes over
/// from any earlier one (an upgrade) and refuses to start over a newer one.
/// v14: the first layout whose agents hold the bpffs directory's lock and hand over from other
/// layouts.
pub const PIN_LAYOUT_VERSION: u32 = 14;

/// Number of rule sets. The agent fills the inactive one and then flips [`map_names::ACTIVE`],
/// so a program never sees a half-written policy.
pub const ACTIVE_SETS: u32 = 2;

/// Program names (the function names in the eBPF object).
pub mod prog_names {
    pub const CONNECT4: &str = "enforcer_connect4";
    pub const CONNECT6: &str = "enforcer_connect6";
    pub const SENDMSG4: &str = "enforcer_sendmsg4";
    pub const SENDMSG6: &str = "enforcer_sendmsg6";
    /// `cgroup/sock_create`: refuses to targets the sockets no connect hook decides (UDP-Lite,
    /// ping, raw) and marks the others for the backstop (see [`crate::sockets`]).
    pub const SOCK_CREATE: &str = "enforcer_sock_create";
}

/// The object's global (`.rodata`) the agent sets at load to 1 in scope mode: the sock_addr
/// programs' first and, for a process that is not a target, only question is then one inlined
/// array lookup of its tgid in `TARGET_TGIDS` (see [`crate::identity`]); in direct mode they
/// ask none.
pub const SCOPED_GLOBAL: &str = "SCOPED";

/// Hooks, as carried in events and counters.
pub mod hook {
    pub const CONNECT4: u8 = 0;
    pub const CONNECT6: u8 = 1;
    pub const SENDMSG4: u8 = 2;
    pub const SENDMSG6: u8 = 3;
    /// A socket refused at creation (`cgroup/sock_create`).
    pub const SOCK_CREATE: u8 = 4;
    /// A socket option refused (`cgroup/setsockopt`).
    pub const SETSOCKOPT: u8 = 5;
    /// A packet dropped by the packet-layer backstop (`cgroup_skb/egress`).
    pub const PACKET_EGRESS: u8 = 6;
    pub const COUNT: usize = 7;

    pub fn name(hook: u8) -> Option<&'static str> {
        match hook {
            CONNECT4 => Some("connect4"),
            CONNECT6 => Some("connect6"),
            SENDMSG4 => Some("sendmsg4"),
            SENDMSG6 => Some("sendmsg6"),
            SOCK_CREATE => Some("sock_create"),
            SETSOCKOPT => Some("setsockopt"),
            PACKET_EGRESS => Some("packet_egress"),
            _ => None,
        }
    }
}

/// Protocol classes a clause can match, as a bit mask.
pub mod proto {
    pub const TCP: u8 = 1 << 0;
    pub const UDP: u8 = 1 << 1;
    /// Anything else a cgroup sock_addr hook sees (ICMP ping sockets, SCTP, ...).
    pub const OTHER: u8 = 1 << 2;
    pub const ALL: u8 = TCP | UDP | OTHER;

    pub const IPPROTO_TCP: u8 = 6;
    pub const IPPROTO_UDP: u8 = 17;
    /// UDP-Lite (RFC 3828): UDP with a partial checksum, same ports, same sendmsg path. A
    /// `protocols: [udp]` rule covers it, or blocking UDP would leave a second UDP open.
    pub const IPPROTO_UDPLITE: u8 = 136;

    /// The class bit of an IP protocol number.
    #[inline(always)]
    pub fn class(ip_protocol: u32) -> u8 {
        match ip_protocol {
            6 => TCP,
            17 | 136 => UDP,
            _ => OTHER,
        }
    }
}

/// Step 1 of the decision order, one definition for the kernel programs and the agent: the
/// IPv4 address an IPv6 destination really reaches, when its spelling embeds one at a fixed
/// place. `w` holds the address as four network-order words (as `bpf_sock_addr.user_ip6`
/// does); the result is the IPv4 address as a network-order word.
///
/// - `::ffff:a.b.c.d` (IPv4-mapped): the socket sends IPv4.
/// - `::ffff:0:a.b.c.d` (SIIT "IPv4-translated", RFC 2765/7915): a stateless translator
///   sends it to `a.b.c.d`.
/// - `64:ff9b::a.b.c.d` (the NAT64 well-known prefix, RFC 6052): a NAT64 sends it there.
/// - `::a.b.c.d` (IPv4-compatible, deprecated by RFC 4291): Linux's `sit0` tunnels it to
///   `a.b.c.d`. Except `::` and `::1`, which are the unspecified and loopback addresses.
///
/// The local-use NAT64 prefix `64:ff9b:1::/48` (RFC 8215) is not here: the operator picks
/// where inside it the IPv4 address sits (RFC 6052 allows six prefix lengths), so no fixed
/// rule can read it; the presets block the whole /48 instead.
#[inline(always)]
pub fn embedded_ipv4(w: [u32; 4]) -> Option<u32> {
    let ffff = 0x0000_ffffu32.to_be();
    let siit = 0xffff_0000u32.to_be();
    let nat64 = 0x0064_ff9bu32.to_be();
    let zero_head = w[0] == 0 && w[1] == 0;
    let embeds = (zero_head && (w[2] == ffff || w[2] == siit))
        || (w[0] == nat64 && w[1] == 0 && w[2] == 0)
        || (zero_head && w[2] == 0 && u32::from_be(w[3]) > 1);
    if embeds { Some(w[3]) } else { None }
}

/// [`embedded_ipv4`] over address bytes (network order), for userspace.
pub fn embedded_ipv4_octets(o: [u8; 16]) -> Option<[u8; 4]> {
    let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
    embedded_ipv4([word(0), word(4), word(8), word(12)]).map(u32::to_ne_bytes)
}

/// What a clause does when it matches.
pub mod action {
    pub const ALLOW: u8 = 1;
    pub const BLOCK: u8 = 2;
}

/// Policy mode (`Config::mode`).
pub mod mode {
    pub const ENFORCE: u32 = 0;
    pub const AUDIT: u32 = 1;
}

/// Verdicts (`Config::default_verdict`, counters).
pub mod verdict {
    pub const ALLOW: u32 = 0;
    pub const DENY: u32 = 1;
}

/// Rule ids with a fixed meaning; ids below these index the agent's rule table.
pub mod rule_id {
    /// The policy's `default: deny` decided.
    pub const DEFAULT: u32 = u32::MAX;
    /// A UDP-Lite socket (no connect hook runs for it), refused to a target.
    pub const UDPLITE_SOCKET: u32 = u32::MAX - 1;
    /// An ICMP/ICMPv6 ping socket (no hook decides its echo requests), refused to a target.
    pub const PING_SOCKET: u32 = u32::MAX - 2;
    /// A raw socket (no hook decides its packets), refused to a target.
    pub const RAW_SOCKET: u32 = u32::MAX - 3;
    /// The kernel could not allocate a target socket's mark (socket-local storage): the
    /// socket is refused rather than left unmarked.
    pub const SOCKET_MARK_FAILED: u32 = u32::MAX - 4;
    /// A routing header (`IPV6_RTHDR` and its RFC 2292 spellings; on a packet: a routing
    /// extension header), which sends the packet to its first segment.
    pub const ROUTING_HEADER: u32 = u32::MAX - 5;
    /// `IP_OPTIONS` (source routes send the packet to their first hop).
    pub const IP_OPTIONS: u32 = u32::MAX - 6;

    /// What a fixed rule id stands for in a log line; `None` for ids of policy rules.
    pub fn fixed(id: u32) -> Option<&'static str> {
        match id {
            DEFAULT => Some("default deny"),
            UDPLITE_SOCKET => Some("udplite socket (no connect hook decides it)"),
            PING_SOCKET => Some("icmp ping socket (no hook decides its echo requests)"),
            RAW_SOCKET => Some("raw socket (no hook decides its packets)"),
            SOCKET_MARK_FAILED => Some("no memory for the packet backstop's socket mark"),
            ROUTING_HEADER => {
                Some("routing header (sends to its first segment, not the decided address)")
            }
            IP_OPTIONS => {
                Some("ip options (a source route sends to its first hop, not the decided address)")
            }
            _ => None,
        }
    }
}

/// Indexes into the `COUNTERS` per-CPU array.
pub mod counter {
    use super::hook;
    /// Calls allowed, per hook.
    pub const ALLOWED: u32 = 0;
    /// Calls denied (enforce mode), per hook.
    pub const DENIED: u32 = hook::COUNT as u32;
    /// Calls that would have been denied (audit mode), per hook.
    pub const WOULD_DENY: u32 = 2 * hook::COUNT as u32;
    /// Events that did not fit into the ring buffer.
    pub const LOST_EVENTS: u32 = 3 * hook::COUNT as u32;
    /// Size of the array.
    pub const COUNT: u32 = LOST_EVENTS + 1;

    #[inline(always)]
    pub fn index(base: u32, hook: u8) -> u32 {
        base + hook as u32
    }
}

/// Upper bound on the clauses of one LPM entry (the flattened rules covering one prefix).
pub const MAX_CLAUSES: usize = 16;

/// One flattened rule inside an LPM entry: matches a port range and a protocol mask.
/// `port_lo..=port_hi` in host byte order; a rule without ports is `0..=65535`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clause {
    pub rule_id: u32,
    pub port_lo: u16,
    pub port_hi: u16,
    /// [`proto`] bit mask.
    pub protocols: u8,
    /// [`action`] code.
    pub action: u8,
    /// In a block entry ([`BlockValue`]): the last octets `hosts[0]..=hosts[1]` of the /24 the
    /// clause applies to. Zero and ignored in trie and exact entries.
    pub hosts: [u8; 2],
}

/// The clauses of one map entry, in the order the kernel walks them. Clauses are ordered:
/// every ALLOW clause before every BLOCK clause, BLOCK clauses from the most specific rule to
/// the least; the first match decides, no match falls through to the FQDN map and the default.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClauseList<const N: usize> {
    pub n_clauses: u32,
    pub clauses: [Clause; N],
}

/// Value of an LPM trie entry: up to [`MAX_CLAUSES`] clauses.
pub type LpmValue = ClauseList<MAX_CLAUSES>;

/// Clauses an exact entry holds: a `/32` or `/128` entry with at most this many clauses lives
/// in the exact hash map of its family ([`map_names::V4_EXACT`], [`map_names::V6_EXACT`]),
/// every other entry in the LPM trie. A blocked address of a feed is one clause; a metadata
/// address inside `private` with ports two or three.
pub const EXACT_CLAUSES: usize = 4;

/// Value of an exact (full-length) entry: a hash lookup instead of the trie's walk. An address
/// that has an exact entry would get that same entry from the trie (nothing is longer than a
/// full-length prefix), so the programs look it up first and, on a hit, never walk the trie —
/// also when none of its clauses matches (the trie would not fall back to a shorter prefix
/// either).
pub type ExactValue = ClauseList<EXACT_CLAUSES>;

/// Clauses a /24 block entry holds ([`BlockValue`]).
pub const BLOCK_CLAUSES: usize = 8;

/// Value of an IPv4 block entry (`V4_BLOCKS`, keyed by direction and /24 block): every clause
/// of every rule that covers an address of the block, each with the host range it covers
/// ([`Clause::hosts`]), in the kernel's clause order. The first clause whose host range holds
/// the address and that matches port and protocol is the clause the longest-prefix entry of
/// that address would give: an entry's clauses are those of the rules containing it, in one
/// order shared by every entry (allow before block, allow by rule id, block from the most
/// specific rule to the least). So a block entry answers for every address of its /24 without
/// the trie's walk; only exact (/32) entries come before it.
pub type BlockValue = ClauseList<BLOCK_CLAUSES>;

impl BlockValue {
    /// The first clause covering last octet `host` that matches `port` (host order) and the
    /// protocol class bit `proto_class`.
    #[inline(always)]
    pub fn first_match_host(&self, host: u8, port: u16, proto_class: u8) -> Option<&Clause> {
        let n = self.n_clauses as usize;
        for i in 0..BLOCK_CLAUSES {
            if i >= n {
                break;
            }
            let c = &self.clauses[i];
            if host >= c.hosts[0]
                && host <= c.hosts[1]
                && c.protocols & proto_class != 0
                && port >= c.port_lo
                && port <= c.port_hi
            {
                return Some(c);
            }
        }
        None
    }
}

/// Whether an entry of `prefix_len` bits (of `full_len`: 32 or 128) with `n_clauses` clauses
/// goes into the exact hash map rather than the trie (one rule for the agent's writer and its
/// capacity check).
#[inline(always)]
pub const fn is_exact(prefix_len: u8, full_len: u8, n_clauses: usize) -> bool {
    prefix_len == full_len && n_clauses <= EXACT_CLAUSES
}

impl<const N: usize> Default for ClauseList<N> {
    fn default() -> Self {
        Self {
            n_clauses: 0,
            clauses: [Clause::default(); N],
        }
    }
}

impl<const N: usize> ClauseList<N> {
    /// The first clause matching `port` (host order) and the protocol class bit `proto_class`.
    /// This is the clause scan of the kernel verdict; the agent's map emulation uses it too.
    #[inline(always)]
    pub fn first_match(&self, port: u16, proto_class: u8) -> Option<&Clause> {
        let n = self.n_clauses as usize;
        // A constant bound keeps the verifier happy; `n` ends the walk early.
        for i in 0..N {
            if i >= n {
                break;
            }
            let c = &self.clauses[i];
            if c.protocols & proto_class != 0 && port >= c.port_lo && port <= c.port_hi {
                return Some(c);
            }
        }
        None
    }

    /// The list holding `own` (at most `N` clauses; the caller checks).
    pub fn of(own: &[Clause]) -> Self {
        let mut value = Self {
            n_clauses: own.len() as u32,
            ..Self::default()
        };
        value.clauses[..own.len()].copy_from_slice(own);
        value
    }
}

/// Words of the IPv4 prefilter: one bit per /24 block (2^24 bits, 2 MiB).
pub const V4_FILTER_WORDS: usize = 1 << 18;

/// The IPv4 prefilter: bit `n` is set when some LPM entry of the rule set contains addresses
/// of the /24 block `n` (`address >> 8`). A clear bit proves that no entry can match, so the
/// LPM walk (a pointer chase per trie level, the dominant cost with 100k prefixes) is skipped.
pub type V4Filter = [u64; V4_FILTER_WORDS];

/// Word index and bit mask of `addr` (network byte order) in a [`V4Filter`].
#[inline(always)]
pub fn v4_filter_pos(addr: [u8; 4]) -> (usize, u64) {
    let block = u32::from_be_bytes(addr) >> 8;
    (
        (block >> 6) as usize & (V4_FILTER_WORDS - 1),
        1u64 << (block & 63),
    )
}

/// Capacity of each LPM trie (prefixes per family per rule set).
pub const MAX_PREFIXES: u32 = 262_144;

/// Capacity of each IPv4 exact hash map (`/32` entries per rule set). Hash maps are created
/// without preallocation: entries cost memory as they are written; the bucket array (16 bytes
/// per slot, a power of two) is allocated whole.
pub const MAX_EXACT_V4: u32 = 262_144;

/// Capacity of each IPv4 block hash map (/24 blocks per rule set, both directions). Blocks
/// beyond it keep their entries in the trie (slower, not refused).
pub const MAX_BLOCKS_V4: u32 = 131_072;

/// Capacity of each IPv6 exact hash map (`/128` entries per rule set).
pub const MAX_EXACT_V6: u32 = 65_536;

/// Size of the event ring buffer in bytes (power of two, multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 20;

/// Programs skip the userspace wakeup until about this much is queued; the agent also drains
/// the ring on a short timer. A wakeup per event costs ~2.6 µs per denied call, no wakeup
/// ~170 ns. A power of two. The deny programs wake the agent on every [`wake_every`]-th record
/// a CPU queues, which bounds the records queued without a wakeup by this many bytes.
pub const EVENTS_WAKEUP_BYTES: u64 = (EVENTS_BYTES as u64) / 4;

/// Bytes a record of `size` bytes takes in a BPF ring buffer: the ring's 8-byte header, the
/// whole rounded up to 8.
pub const fn ring_record_bytes(size: usize) -> u64 {
    (size as u64 + 8).div_ceil(8) * 8
}

/// Bytes one [`DenyEvent`] takes in the ring.
pub const DENY_RECORD_BYTES: u64 = ring_record_bytes(core::mem::size_of::<DenyEvent>());

/// The global (a constant the agent writes when it loads the object, like [`SCOPED_GLOBAL`])
/// holding [`wake_every`] for this machine's possible CPUs.
pub const WAKE_EVERY_GLOBAL: &str = "WAKE_EVERY";

/// How many deny records one CPU queues per wakeup of the agent: the largest power of two `k`
/// with `cpus × k × record ≤ step` (at least 1). Every CPU wakes the agent on its `k`-th,
/// `2k`-th, … record, so the records that have not caused a wakeup are fewer than `k` per CPU:
/// less than `step` bytes in all, as a count of the ring's queued bytes would give, without the
/// kernel call that asks the ring for it (one of the deny path's costs, issue 17).
pub const fn wake_every(cpus: u32, record: u64, step: u64) -> u32 {
    let cpus = if cpus == 0 { 1 } else { cpus as u64 };
    let record = if record == 0 { 1 } else { record };
    let most = step / (cpus * record);
    if most <= 1 {
        1
    } else {
        // Largest power of two ≤ most, and never above 2^31.
        let k = 1u64 << most.ilog2();
        if k > 1 << 31 { 1 << 31 } else { k as u32 }
    }
}

/// Whether the `queued`-th record a CPU queued (counting from 1) wakes the agent, with
/// `every` from [`wake_every`] (a power of two).
#[inline(always)]
pub fn wakes(queued: u64, every: u32) -> bool {
    queued & (u64::from(every) - 1) == 0
}

/// Words of `AUTO_PORTS` (one bit per port).
pub const AUTO_PORT_WORDS: u32 = 65_536 / 64;

/// Where port `port`'s bit is in `AUTO_PORTS`: word index and mask.
#[inline(always)]
pub fn auto_port_pos(port: u16) -> (u32, u64) {
    (u32::from(port) / 64, 1u64 << (port % 64))
}

/// Whether queuing a record of `record` bytes, after which `avail` bytes are queued, crossed a
/// multiple of `step` (a power of two): the one record of each such step that wakes the
/// consumer. Waking on every record past a threshold instead costs a wakeup per record during
/// a flood, until the consumer has drained (measured on the deny path: ~350 ns per denial
/// instead of ~270 ns).
#[inline(always)]
pub fn wakeup_crossed(avail: u64, record: u64, step: u64) -> bool {
    avail / step != avail.saturating_sub(record) / step
}

/// Per-rule-set configuration.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// [`mode`] code.
    pub mode: u32,
    /// [`verdict`] code used when no rule matches.
    pub default_verdict: u32,
    /// Policy generation, echoed in events so userspace names the rule of the right policy.
    pub generation: u32,
    /// Nonzero: the programs are attached at a scope cgroup and decide only calls of target
    /// processes (tgid marked in `TARGET_TGIDS`, see [`crate::identity`]); every other call passes
    /// untouched and uncounted.
    pub scoped: u32,
}

/// Length of a task's comm (TASK_COMM_LEN), as events carry it.
pub const COMM_LEN: usize = 16;

/// Key of `AUTO_ALLOW`: an automatic rule (a name server of a target's own resolv.conf on
/// port 53, a literal `--cluster.peer` on its port) opens this address and port for the one
/// process it was read from, `tgid`. The value is the [`proto`] mask allowed. The programs
/// consult it only for a call the policy would deny, as an explicit allow of that process
/// (decision step 2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AutoKey {
    pub tgid: u32,
    /// Host order.
    pub port: u16,
    /// 1: IPv4 address in the first 4 bytes of `addr` (the rest zero); 0: IPv6.
    pub v4: u8,
    pub _pad: u8,
    /// Network order.
    pub addr: [u8; 16],
}

/// Capacity of `AUTO_ALLOW` (the agent bounds the rules of each process far below this).
pub const MAX_AUTO_RULES: u32 = 4096;

/// Event kinds in [`EventHeader::kind`].
pub mod event_kind {
    /// A call was denied (enforce mode).
    pub const DENIED: u16 = 1;
    /// A call would have been denied (audit mode); it was allowed.
    pub const WOULD_DENY: u16 = 2;
}

/// Version of the event layout; bump when [`DenyEvent`] changes.
pub const EVENT_VERSION: u16 = 1;

/// Fixed header of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    pub kind: u16,
    pub version: u16,
    /// Size of the whole record in bytes.
    pub len: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC); 0 in a [`DenyEvent`], which the deny path does
    /// not stamp (the agent's line carries the time it drained the record).
    pub ts_ns: u64,
    pub cgroup_id: u64,
}

/// A denied (or would-be-denied) call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DenyEvent {
    pub header: EventHeader,
    /// Process id (the kernel's tgid).
    pub tgid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Rule that decided, or [`rule_id::DEFAULT`].
    pub rule_id: u32,
    /// [`Config::generation`] of the rule set that decided.
    pub generation: u32,
    /// Destination port, host byte order.
    pub dst_port: u16,
    /// [`hook`] code.
    pub hook: u8,
    /// IP protocol number of the socket (6 tcp, 17 udp, ...).
    pub protocol: u8,
    /// Address family the caller used (2 AF_INET, 10 AF_INET6).
    pub family: u16,
    pub _pad: u16,
    /// Destination as the caller passed it: IPv4 in the first 4 bytes, IPv6 in all 16,
    /// network byte order.
    pub dst_addr: [u8; 16],
    pub comm: [u8; 16],
}

#[cfg(feature = "user")]
mod pod {
    // Each type: plain #[repr(C)] integers with explicit padding, so any bit pattern is valid.
    // SAFETY: Clause is #[repr(C)] integers only (padding explicit).
    unsafe impl aya::Pod for super::Clause {}
    // SAFETY: ClauseList is #[repr(C)] integers only (padding explicit).
    unsafe impl<const N: usize> aya::Pod for super::ClauseList<N> {}
    // SAFETY: Config is #[repr(C)] integers only (padding explicit).
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: EventHeader is #[repr(C)] integers only (padding explicit).
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: DenyEvent is #[repr(C)] integers only (padding explicit).
    unsafe impl aya::Pod for super::DenyEvent {}
    // SAFETY: AutoKey is #[repr(C)] integers only (padding explicit).
    unsafe impl aya::Pod for super::AutoKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_wakeups_bound_the_unwoken_backlog() {
        let rec = DENY_RECORD_BYTES;
        for cpus in [1, 2, 3, 4, 7, 8, 64, 128, 512, 1024, 4096] {
            let k = wake_every(cpus, rec, EVENTS_WAKEUP_BYTES);
            assert!(k.is_power_of_two(), "{cpus} CPUs: {k}");
            // Fewer than k records per CPU have not woken the agent: under the step in all.
            assert!(
                u64::from(cpus) * u64::from(k - 1) * rec < EVENTS_WAKEUP_BYTES,
                "{cpus} CPUs: {k}"
            );
            // The largest such power of two (or 1 when even one record per CPU is too many).
            if k > 1 || u64::from(cpus) * rec * 2 <= EVENTS_WAKEUP_BYTES {
                assert!(u64::from(cpus) * u64::from(k) * 2 * rec > EVENTS_WAKEUP_BYTES);
            }
            // A CPU's k-th, 2k-th, … record wakes, and no other.
            let mut woke = (1..=3 * u64::from(k)).filter(|&n| wakes(n, k));
            let k = u64::from(k);
            assert_eq!(
                (woke.next(), woke.next(), woke.next(), woke.next()),
                (Some(k), Some(2 * k), Some(3 * k), None)
            );
        }
        assert_eq!(wake_every(2, 96, 1 << 18), 1024);
        assert_eq!(wake_every(64, 96, 1 << 18), 32);
        assert_eq!(wake_every(0, 0, 0), 1);
        assert_eq!(wake_every(1, 1, u64::MAX), 1 << 31);
    }

    #[test]
    fn every_port_has_its_own_auto_port_bit() {
        let mut seen = [0u64; AUTO_PORT_WORDS as usize];
        for port in 0..=u16::MAX {
            let (word, bit) = auto_port_pos(port);
            assert!(word < AUTO_PORT_WORDS && bit.is_power_of_two());
            assert_eq!(seen[word as usize] & bit, 0, "port {port}");
            seen[word as usize] |= bit;
        }
        assert!(seen.iter().all(|w| *w == u64::MAX));
    }

    #[test]
    fn one_wakeup_per_step_of_queued_bytes() {
        let rec = DENY_RECORD_BYTES;
        assert_eq!(rec % 8, 0);
        assert!(rec >= core::mem::size_of::<DenyEvent>() as u64 + 8);
        // Queue records one by one into an ever-growing backlog: exactly one record per
        // EVENTS_WAKEUP_BYTES step wakes the consumer.
        let steps = 5;
        let mut wakeups = 0;
        let mut avail = 0;
        while avail + rec <= steps * EVENTS_WAKEUP_BYTES {
            avail += rec;
            if wakeup_crossed(avail, rec, EVENTS_WAKEUP_BYTES) {
                wakeups += 1;
            }
        }
        assert_eq!(
            wakeups,
            steps - 1 + u64::from(avail == steps * EVENTS_WAKEUP_BYTES)
        );
        // A lone record in an empty ring never wakes; the one that reaches the step does.
        assert!(!wakeup_crossed(rec, rec, EVENTS_WAKEUP_BYTES));
        assert!(wakeup_crossed(
            EVENTS_WAKEUP_BYTES,
            rec,
            EVENTS_WAKEUP_BYTES
        ));
        assert!(wakeup_crossed(
            EVENTS_WAKEUP_BYTES + rec - 8,
            rec,
            EVENTS_WAKEUP_BYTES
        ));
        assert!(!wakeup_crossed(
            EVENTS_WAKEUP_BYTES + rec,
            rec,
            EVENTS_WAKEUP_BYTES
        ));
    }

    #[test]
    fn embedded_ipv4_reads_the_fixed_spellings_only() {
        let v4 = [169, 254, 169, 254];
        let at = |head: [u8; 12]| {
            let mut o = [0u8; 16];
            o[..12].copy_from_slice(&head);
            o[12..].copy_from_slice(&v4);
            embedded_ipv4_octets(o)
        };
        let mut mapped = [0u8; 12];
        mapped[10..12].copy_from_slice(&[0xff, 0xff]);
        let mut siit = [0u8; 12];
        siit[8..10].copy_from_slice(&[0xff, 0xff]);
        let mut nat64 = [0u8; 12];
        nat64[..4].copy_from_slice(&[0, 0x64, 0xff, 0x9b]);
        let mut local_nat64 = nat64;
        local_nat64[5] = 1;
        assert_eq!(at(mapped), Some(v4));
        assert_eq!(at(siit), Some(v4));
        assert_eq!(at(nat64), Some(v4));
        assert_eq!(at([0; 12]), Some(v4), "IPv4-compatible");
        assert_eq!(at(local_nat64), None, "64:ff9b:1::/48 has no fixed place");
        let mut fe = [0u8; 12];
        fe[0] = 0xfe;
        assert_eq!(at(fe), None);
        // `::` and `::1` stay the unspecified and loopback addresses; `::2` is compatible.
        for (last, want) in [(0u8, None), (1, None), (2, Some([0, 0, 0, 2]))] {
            let mut o = [0u8; 16];
            o[15] = last;
            assert_eq!(embedded_ipv4_octets(o), want, "::{last}");
        }
    }
}
