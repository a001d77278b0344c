//! Socket-level guards (see `enforcer_common::sockets`): the sockets and socket options that
//! would send a target's packets where no connect/sendmsg hook decides are refused at creation
//! or when set, with a `socket_refused` line; every other socket a target creates is marked for
//! the packet-layer backstop (`backstop.rs`).
use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::bpf_get_socket_cookie,
    },
    macros::{cgroup_sock, cgroup_sockopt, map},
    maps::HashMap,
    programs::{SockContext, SockoptContext},
};
use enforcer_common::{
    hook, proto, rule_id,
    sockets::{MAX_PACKET_SOCKETS, SocketMark, kind, option},
};

use crate::{ALLOW, DENY, active_config, identity, refuse, scoped};

#[map]
pub(crate) static PACKET_SOCKETS: HashMap<u64, SocketMark> =
    HashMap::with_max_entries(MAX_PACKET_SOCKETS, 0);

/// Larger option buffers are not copied to the program; it must then set `optlen` to 0 so
/// the kernel uses the caller's buffer (kernels before 6.5 return EFAULT otherwise).
const SOCKOPT_PAGE: i32 = 4096;

/// Whether the calling process is decided (in direct mode every process of the cgroup; in
/// scope mode one lookup).
#[inline(always)]
fn decided() -> bool {
    !scoped() || identity::is_target((bpf_get_current_pid_tgid() >> 32) as u32)
}

/// `cgroup/sock_create`: refuses UDP-Lite, ping and raw sockets to targets; marks the others.
/// Audit mode lets every socket be (and logs `would_refuse`). A socket the table has no room
/// for is refused: unmarked, its packets would go undecided.
#[cgroup_sock(sock_create)]
pub fn enforcer_sock_create(ctx: SockContext) -> i32 {
    if !decided() {
        return ALLOW;
    }
    let Some((_, cfg)) = active_config() else {
        return DENY;
    };
    // SAFETY: the kernel hands every cgroup_sock program a valid `bpf_sock`.
    let sk = unsafe { &*ctx.sock };
    let (family, ty, protocol) = (sk.family, sk.type_, sk.protocol);
    let refused = if protocol == u32::from(proto::IPPROTO_UDPLITE) {
        Some(rule_id::UDPLITE_SOCKET)
    } else if ty == kind::SOCK_RAW {
        Some(rule_id::RAW_SOCKET)
    } else if protocol == kind::IPPROTO_ICMP || protocol == kind::IPPROTO_ICMPV6 {
        Some(rule_id::PING_SOCKET)
    } else {
        None
    };
    // Audit mode lets a refused kind be (`would_refuse`) and marks it like any other socket,
    // so the backstop decides its packets (`would_deny`).
    if let Some(rule) = refused
        && refuse(hook::SOCK_CREATE, cfg, family as u16, protocol as u8, rule) == DENY
    {
        return DENY;
    }
    if mark(&ctx) {
        ALLOW
    } else {
        refuse(
            hook::SOCK_CREATE,
            cfg,
            family as u16,
            protocol as u8,
            rule_id::SOCKET_TABLE_FULL,
        )
    }
}

/// Records who created the socket, for the backstop; false when the table is full.
#[inline(always)]
fn mark(ctx: &SockContext) -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let value = SocketMark {
        tgid: (pid_tgid >> 32) as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    // SAFETY: the helper reads the socket of this program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    PACKET_SOCKETS
        .insert(&cookie, &value, u64::from(BPF_ANY))
        .is_ok()
}

/// `cgroup/sock_release`: the socket's mark goes with it.
#[cgroup_sock(sock_release)]
pub fn enforcer_sock_release(ctx: SockContext) -> i32 {
    // SAFETY: the helper reads the socket of this program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    let _ = PACKET_SOCKETS.remove(&cookie);
    ALLOW
}

/// `cgroup/setsockopt`: refuses to targets the options that route a packet elsewhere than the
/// address the connect/sendmsg hook decided. Every other option passes with the caller's
/// buffer untouched.
#[cgroup_sockopt(setsockopt)]
pub fn enforcer_setsockopt(ctx: SockoptContext) -> i32 {
    // SAFETY: the kernel hands every cgroup_sockopt program a valid `bpf_sockopt`.
    let opt = unsafe { &mut *ctx.sockopt };
    let (level, name) = (opt.level, opt.optname);
    let refused = match (level, name) {
        (option::SOL_IPV6, option::IPV6_RTHDR)
        | (option::SOL_IPV6, option::IPV6_2292RTHDR)
        | (option::SOL_IPV6, option::IPV6_2292PKTOPTIONS) => Some(rule_id::ROUTING_HEADER),
        (option::SOL_IP, option::IP_OPTIONS) => Some(rule_id::IP_OPTIONS),
        _ => None,
    };
    if opt.optlen > SOCKOPT_PAGE {
        opt.optlen = 0;
    }
    let Some(rule) = refused else {
        return ALLOW;
    };
    if !decided() {
        return ALLOW;
    }
    let Some((_, cfg)) = active_config() else {
        return DENY;
    };
    // SAFETY: `sk` is the option's socket, valid for the program's run.
    let (family, protocol) = unsafe {
        let sk = opt.__bindgen_anon_1.sk;
        ((*sk).family as u16, (*sk).protocol as u8)
    };
    // Refused (enforce mode): the kernel answers EPERM and uses no buffer.
    refuse(hook::SETSOCKOPT, cfg, family, protocol, rule)
}
