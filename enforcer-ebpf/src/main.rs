//! cgroup sock_addr programs: every connect() and unconnected sendmsg() of the protected cgroup
//! gets one verdict from [`decide`], the composition of three steps of the decision order:
//! [`normalise`] (IPv4-mapped, SIIT, NAT64, IPv4-compatible) → [`policy::can_egress`] (LPM entry clauses over a
//! direction-tagged key, allow before block, then FQDN-learned addresses ([`fqdn`]) and the
//! policy default) → [`report`]. Denials (or would-be denials in audit mode) are counted and
//! queued on a ring buffer without a userspace wakeup per event.
#![no_std]
#![no_main]

mod api;
mod auto;
mod backstop;
mod fqdn;
mod identity;
mod policy;
mod sock;

use core::ptr::addr_of_mut;

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, bpf_sock_addr},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated,
    },
    macros::{cgroup_sock_addr, map},
    maps::{Array, PerCpuArray, RingBuf},
    programs::SockAddrContext,
};
use enforcer_common::{
    ACTIVE_SETS, COMM_LEN, Config, DenyEvent, EVENT_VERSION, EVENTS_BYTES, EventHeader, counter,
    embedded_ipv4, event_kind, hook, mode, proto, sockets::SocketMark, wakes,
};

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(ACTIVE_SETS, 0);
#[map]
static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);
/// Records this CPU queued on `EVENTS`, for the wakeup (see [`emit`]).
#[map]
static EVENTS_QUEUED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

pub(crate) const ALLOW: i32 = 1;
pub(crate) const DENY: i32 = 0;

/// Scope mode, fixed when the agent loads the object (`enforcer_common::SCOPED_GLOBAL`): a
/// constant to the verifier, so direct mode has no identity lookup at all and scope mode asks
/// exactly one before anything else.
#[unsafe(no_mangle)]
static SCOPED: u32 = 0;

/// Every how many records a CPU queues it wakes the agent
/// ([`enforcer_common::wake_every`] for this machine, `WAKE_EVERY_GLOBAL`), written at load.
#[unsafe(no_mangle)]
static WAKE_EVERY: u32 = 1;

/// Whether the object was loaded for scope mode (see [`SCOPED`]).
#[inline(always)]
pub fn scoped() -> bool {
    // SAFETY: a read of a constant the loader wrote; volatile so the compiler keeps the load.
    unsafe { core::ptr::read_volatile(&SCOPED) != 0 }
}
/// EtherTypes (`__sk_buff.protocol`, host order after `from_be`) of the packet programs.
pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[cgroup_sock_addr(connect4)]
pub fn enforcer_connect4(ctx: SockAddrContext) -> i32 {
    enter::<{ hook::CONNECT4 }>(&ctx)
}

#[cgroup_sock_addr(connect6)]
pub fn enforcer_connect6(ctx: SockAddrContext) -> i32 {
    enter::<{ hook::CONNECT6 }>(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn enforcer_sendmsg4(ctx: SockAddrContext) -> i32 {
    enter::<{ hook::SENDMSG4 }>(&ctx)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn enforcer_sendmsg6(ctx: SockAddrContext) -> i32 {
    enter::<{ hook::SENDMSG6 }>(&ctx)
}

/// An address after normalisation: IPv4 (also for IPv6 spellings embedding one) or IPv6.
pub enum Dst {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// One egress call, normalised once.
struct Call {
    dst: Dst,
    /// The destination as the caller passed it (IPv4 in the first 4 bytes), for the event.
    raw: [u8; 16],
    port: u16,
    /// IP protocol number of the socket.
    protocol: u32,
}

/// The program's own body: in scope mode, the caller's tgid and its byte in `TARGET_TGIDS`,
/// and `return ALLOW` for every process that is not a target — a few contiguous instructions
/// and one helper call. Everything else is [`decide`], a BPF subprogram of its own (the JIT
/// compiles it into a separate image), so a non-target's call never touches its instructions.
/// In direct mode (`SCOPED` a constant 0 to the verifier) every call is decided, so the
/// decision ([`decision`]) is inlined instead.
#[inline(always)]
fn enter<const HOOK: u8>(ctx: &SockAddrContext) -> i32 {
    if scoped() {
        let asked = bpf_get_current_pid_tgid();
        if !identity::is_target((asked >> 32) as u32) {
            return ALLOW;
        }
        decide::<HOOK>(ctx, asked)
    } else {
        // Direct mode: every call is decided, so the decision is inlined here (no subprogram
        // call and return); the verifier drops the scope-mode branch as dead code.
        decision::<HOOK>(ctx, 0)
    }
}

/// The calling task's `bpf_get_current_pid_tgid()`, asked of the kernel at most once per call
/// and only where something needs it (each helper call is one of the path's costs).
pub(crate) struct Caller(u64);

impl Caller {
    /// `pid_tgid` as already asked, or 0 when not yet (no task of a process has pid_tgid 0:
    /// tgid 0 is the idle task, which makes no system calls).
    #[inline(always)]
    pub(crate) fn new(pid_tgid: u64) -> Self {
        Self(pid_tgid)
    }

    #[inline(always)]
    pub(crate) fn pid_tgid(&mut self) -> u64 {
        if self.0 == 0 {
            self.0 = bpf_get_current_pid_tgid();
        }
        self.0
    }

    /// The calling process.
    #[inline(always)]
    pub(crate) fn tgid(&mut self) -> u32 {
        (self.pid_tgid() >> 32) as u32
    }
}

/// Scope mode's decision for a target (one subprogram per hook, behind the non-target exit):
/// see [`enter`] and [`decision`].
#[inline(never)]
fn decide<const HOOK: u8>(ctx: &SockAddrContext, asked: u64) -> i32 {
    decision::<HOOK>(ctx, asked)
}

/// The one verdict function of all four egress hooks, for a caller [`enter`] did not let
/// through: normalise → rule verdict → report. The caller's tgid is asked for only where it
/// is needed (a target's DNS socket, a denial an automatic rule may lift, the event), and
/// once ([`Caller`]; scope mode's [`enter`] passes the one it asked, 0 otherwise), so direct
/// mode's allow path makes no helper call.
#[inline(always)]
fn decision<const HOOK: u8>(ctx: &SockAddrContext, asked: u64) -> i32 {
    let mut caller = Caller::new(asked);
    let Some((set, cfg)) = active_config() else {
        // Unreachable for an array index below max_entries; deny rather than guess.
        return DENY;
    };
    // SAFETY: the kernel hands every sock_addr program a valid `bpf_sock_addr`.
    let call = normalise(unsafe { &*ctx.sock_addr }, HOOK);
    let proto_class = proto::class(call.protocol);
    if scoped() {
        identity::mark_dns_socket(ctx, call.port, proto_class, &mut caller);
    }
    let denied_by = policy::can_egress(set, cfg, &call.dst, call.port, proto_class)
        .filter(|_| !auto::allows(|| caller.tgid(), &call.dst, call.port, proto_class));
    report(HOOK, cfg, &call, denied_by, &mut caller)
}

/// The rule set programs read now and its configuration.
#[inline(always)]
pub fn active_config() -> Option<(u32, &'static Config)> {
    let set = match ACTIVE.get(0) {
        Some(s) => *s % ACTIVE_SETS,
        None => 0,
    };
    CONFIG.get(set).map(|cfg| (set, cfg))
}

/// Step 1 of the decision order: the destination as one address; IPv6 spellings that embed an
/// IPv4 address at a fixed place (mapped, SIIT, NAT64, IPv4-compatible:
/// [`enforcer_common::embedded_ipv4`]) as that IPv4 address.
#[inline(always)]
fn normalise(sa: &bpf_sock_addr, hook: u8) -> Call {
    let port = u16::from_be(sa.user_port as u16);
    // `hook` is a constant in each inlined copy: an IPv4 program never touches user_ip6 (the
    // verifier rejects that context access for connect4/sendmsg4), and vice versa.
    let (dst, raw) = if is_v4_hook(hook) {
        let w = sa.user_ip4;
        (Dst::V4(w.to_ne_bytes()), words_to_bytes([w, 0, 0, 0]))
    } else {
        // Each u32 of user_ip6 is loaded on its own: the verifier wants aligned 4-byte loads.
        let w = [
            sa.user_ip6[0],
            sa.user_ip6[1],
            sa.user_ip6[2],
            sa.user_ip6[3],
        ];
        let raw = words_to_bytes(w);
        match embedded_ipv4(w) {
            Some(v4) => (Dst::V4(v4.to_ne_bytes()), raw),
            None => (Dst::V6(raw), raw),
        }
    };
    Call {
        dst,
        raw,
        port,
        protocol: sa.protocol,
    }
}

/// Four words as the 16 bytes they are in memory (each in native order, as `to_ne_bytes`).
/// Written as whole words: a zeroed byte array filled in part makes the compiler call a
/// `memset` subprogram (a BPF call and return on every decided call).
#[inline(always)]
pub(crate) fn words_to_bytes(w: [u32; 4]) -> [u8; 16] {
    // SAFETY: [u32; 4] and [u8; 16] have the same size, and every bit pattern is a valid
    // [u8; 16].
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(w) }
}

#[inline(always)]
fn is_v4_hook(hook: u8) -> bool {
    hook == hook::CONNECT4 || hook == hook::SENDMSG4
}

/// Counts the verdict, queues an event for a denial (or would-be denial in audit mode) and
/// returns what the hook answers.
#[inline(always)]
fn report(hook: u8, cfg: &Config, call: &Call, denied_by: Option<u32>, caller: &mut Caller) -> i32 {
    let Some(rule) = denied_by else {
        count(counter::index(counter::ALLOWED, hook));
        return ALLOW;
    };
    let audit = cfg.mode == mode::AUDIT;
    let (base, kind) = if audit {
        (counter::WOULD_DENY, event_kind::WOULD_DENY)
    } else {
        (counter::DENIED, event_kind::DENIED)
    };
    count(counter::index(base, hook));
    let family = if is_v4_hook(hook) { AF_INET } else { AF_INET6 };
    emit(
        &Record {
            hook,
            family,
            dst_addr: call.raw,
            protocol: call.protocol as u8,
            kind,
            rule,
            generation: cfg.generation,
            port: call.port,
        },
        &Who::Current(caller.pid_tgid()),
    );
    if audit { ALLOW } else { DENY }
}

/// A socket or socket option refused to the calling target (`rule` is one of the fixed
/// [`enforcer_common::rule_id`]s): counted and reported like a denial; audit mode allows it.
#[inline(always)]
pub(crate) fn refuse(hook: u8, cfg: &Config, family: u16, protocol: u8, rule: u32) -> i32 {
    let audit = cfg.mode == mode::AUDIT;
    let (base, kind) = if audit {
        (counter::WOULD_DENY, event_kind::WOULD_DENY)
    } else {
        (counter::DENIED, event_kind::DENIED)
    };
    count(counter::index(base, hook));
    emit(
        &Record {
            hook,
            family,
            dst_addr: [0; 16],
            protocol,
            kind,
            rule,
            generation: cfg.generation,
            port: 0,
        },
        &Who::Current(bpf_get_current_pid_tgid()),
    );
    if audit { ALLOW } else { DENY }
}

#[inline(always)]
pub(crate) fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; this program cannot be preempted by itself on this CPU.
        unsafe { *p += 1 };
    }
}

/// What an event says about the call or packet.
pub(crate) struct Record {
    pub hook: u8,
    pub family: u16,
    pub dst_addr: [u8; 16],
    pub protocol: u8,
    pub kind: u16,
    pub rule: u32,
    pub generation: u32,
    pub port: u16,
}

/// Whose call it was: the current task (connect, sendmsg, socket, setsockopt run in the
/// caller's context), with its `bpf_get_current_pid_tgid()`, or the creator of a marked socket
/// (the packet layer runs in softirq or another task's context), with the socket's cgroup.
pub(crate) enum Who<'a> {
    Current(u64),
    Socket(&'a SocketMark, u64),
}

/// Queue one event; count it as lost when the ring buffer is full.
#[inline(always)]
pub(crate) fn emit(r: &Record, who: &Who) {
    let Some(mut slot) = EVENTS.reserve::<DenyEvent>(0) else {
        count(counter::LOST_EVENTS);
        return;
    };
    let (tgid, tid, uid, gid, cgroup_id) = match who {
        Who::Current(pid_tgid) => {
            let pid_tgid = *pid_tgid;
            let uid_gid = bpf_get_current_uid_gid();
            (
                (pid_tgid >> 32) as u32,
                pid_tgid as u32,
                uid_gid as u32,
                (uid_gid >> 32) as u32,
                // SAFETY: plain helper call.
                unsafe { bpf_get_current_cgroup_id() },
            )
        }
        Who::Socket(m, cgroup) => (m.tgid, m.tgid, m.uid, m.gid, *cgroup),
    };
    let p = slot.as_mut_ptr();
    // SAFETY: `p` points at the reserved record, which this program owns until it submits;
    // every field is written (in place: no copy of the whole event through the stack).
    unsafe {
        addr_of_mut!((*p).header).write(EventHeader {
            kind: r.kind,
            version: EVENT_VERSION,
            len: core::mem::size_of::<DenyEvent>() as u32,
            // Not stamped: nothing reads a deny record's time (the agent's JSON line carries
            // the time it drained the record, at most one drain interval later), and the
            // helper is one of the deny path's costs (issue 17).
            ts_ns: 0,
            cgroup_id,
        });
        addr_of_mut!((*p).tgid).write(tgid);
        addr_of_mut!((*p).tid).write(tid);
        addr_of_mut!((*p).uid).write(uid);
        addr_of_mut!((*p).gid).write(gid);
        addr_of_mut!((*p).rule_id).write(r.rule);
        addr_of_mut!((*p).generation).write(r.generation);
        addr_of_mut!((*p).dst_port).write(r.port);
        addr_of_mut!((*p).hook).write(r.hook);
        addr_of_mut!((*p).protocol).write(r.protocol);
        addr_of_mut!((*p).family).write(r.family);
        addr_of_mut!((*p)._pad).write(0);
        addr_of_mut!((*p).dst_addr).write(r.dst_addr);
        let comm = addr_of_mut!((*p).comm);
        match who {
            // The helper writes the comm straight into the record (zero-filled on failure).
            Who::Current(_) => {
                if generated::bpf_get_current_comm(comm.cast(), COMM_LEN as u32) != 0 {
                    comm.write([0u8; 16]);
                }
            }
            Who::Socket(m, _) => comm.write(m.comm),
        }
    }
    // Wake the agent on every WAKE_EVERY-th record this CPU queues (fewer than
    // EVENTS_WAKEUP_BYTES in all stay queued without a wakeup; see `wake_every`); it drains on
    // a short timer otherwise. A per-CPU count in place of asking the ring how much it holds:
    // one kernel call less per event.
    let queued = match EVENTS_QUEUED.get_ptr_mut(0) {
        // SAFETY: per-CPU slot; this program cannot be preempted by itself on this CPU.
        Some(n) => unsafe {
            *n += 1;
            *n
        },
        None => 0,
    };
    // SAFETY: a read of a constant the loader wrote; volatile so the compiler keeps the load.
    let every = unsafe { core::ptr::read_volatile(&WAKE_EVERY) };
    let flags = if queued != 0 && wakes(queued, every) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    slot.submit(flags as u64);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
