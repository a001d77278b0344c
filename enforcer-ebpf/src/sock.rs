//! Socket-level guards (see `enforcer_common::sockets`): the sockets and socket options that
//! would send a target's packets where no connect/sendmsg hook decides are refused at creation
//! or when set, with a `socket_refused` line; every other socket a target creates is marked for
//! the packet-layer backstop (`backstop.rs`).
//!
//! The mark is socket-local storage (`BPF_MAP_TYPE_SK_STORAGE`, [`SOCKET_MARKS`]): the kernel
//! keeps it in the socket itself and frees it with the socket, whoever drops the last
//! reference. There is no table to fill, no entry to delete when a socket closes (so no
//! `sock_release` program runs on every close below the scope) and nothing to leak. It is a
//! BTF-defined map (`.maps` section, `aya_ebpf::btf_maps`): the kernel creates socket storage
//! only with BTF for its key (`int`) and value, which bpf-linker emits (`--btf`, set by
//! aya-build) and aya passes to `BPF_MAP_CREATE`.
use core::ptr;

use aya_ebpf::{
    bindings::BPF_SK_STORAGE_GET_F_CREATE,
    btf_maps::SkStorage,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::bpf_sk_storage_get,
    },
    macros::{btf_map, cgroup_sock, cgroup_sockopt},
    programs::{SockContext, SockoptContext},
};
use enforcer_common::{
    hook, proto, rule_id,
    sockets::{SocketMark, kind, option},
};

use crate::{ALLOW, DENY, active_config, identity, refuse, scoped};

/// Who created each target socket (`enforcer_common::sockets::map_names::SOCKET_MARKS`).
#[btf_map]
pub(crate) static SOCKET_MARKS: SkStorage<SocketMark> = SkStorage::new();

/// The map as the storage helpers take it.
#[inline(always)]
fn marks() -> *mut aya_ebpf::cty::c_void {
    ptr::from_ref(&SOCKET_MARKS).cast_mut().cast()
}

/// The mark of socket `sk` (any socket pointer the verifier accepts for the helper: a full
/// socket, or `__sk_buff.sk`, for which the helper answers `None` when it is not a full socket);
/// `None` for a socket no target created.
///
/// # Safety
/// `sk` must be a socket pointer of the program's context.
#[inline(always)]
pub(crate) unsafe fn mark_of<'a, T>(sk: *mut T) -> Option<&'a SocketMark> {
    // SAFETY: lookup without create; the storage lives as long as the socket, which outlives
    // this program's run.
    unsafe {
        bpf_sk_storage_get(marks(), sk.cast(), ptr::null_mut(), 0)
            .cast::<SocketMark>()
            .as_ref()
    }
}

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
/// Audit mode lets every socket be (and logs `would_refuse`). A socket whose mark the kernel
/// cannot allocate is refused: unmarked, its packets would go undecided.
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
            rule_id::SOCKET_MARK_FAILED,
        )
    }
}

/// Records who created the socket, in the socket, for the backstop; false when the kernel
/// could not allocate the storage.
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
    let mut value = value;
    // SAFETY: the socket is this program's context (the cgroup_sock variant of the helper takes
    // the context itself); `value` is initialised stack memory of the map's value size, copied
    // into the new storage.
    let stored = unsafe {
        bpf_sk_storage_get(
            marks(),
            ctx.sock.cast(),
            ptr::from_mut(&mut value).cast(),
            u64::from(BPF_SK_STORAGE_GET_F_CREATE),
        )
    };
    !stored.is_null()
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
