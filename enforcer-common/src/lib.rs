//! Types shared by the kernel programs (`enforcer-ebpf`) and the agent (`enforcer`).
//!
//! Everything here is `#[repr(C)]` with explicit padding and integer flags; userspace decodes
//! codes with checked conversions (see the `from_u8` helpers), never by transmuting.
#![no_std]

pub mod api;
mod clauses;
mod events;
pub mod fqdn;
pub mod identity;
pub mod rules;
pub mod sockets;

pub use clauses::*;
pub use events::*;
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
/// layouts. v15: the API guard's four programs and the watchdog's socket marks.
pub const PIN_LAYOUT_VERSION: u32 = 15;

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

/// Words of `AUTO_PORTS` (one bit per port).
pub const AUTO_PORT_WORDS: u32 = 65_536 / 64;

/// Where port `port`'s bit is in `AUTO_PORTS`: word index and mask.
#[inline(always)]
pub fn auto_port_pos(port: u16) -> (u32, u64) {
    (u32::from(port) / 64, 1u64 << (port % 64))
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
