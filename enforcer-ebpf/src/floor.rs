//! The benchmark's floors: programs that allow every call (or pass every packet) and do nothing
//! else, one per hook the benchmark measures (cgroup/connect4, cgroup/sendmsg4, cgroup_skb
//! ingress), and a connect4 floor that also asks the caller's tgid (one helper call).
//! `cargo xtask bench` measures them exactly like the enforcer's programs on the same hook, so
//! the difference is what the enforcer's logic costs on top of the kernel's per-program
//! overhead (the run itself plus the `bpf_stats` bookkeeping).
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{cgroup_skb, cgroup_sock_addr},
    programs::{SkBuffContext, SockAddrContext},
};

#[cgroup_sock_addr(connect4)]
pub fn bench_floor_connect4(_ctx: SockAddrContext) -> i32 {
    1
}

/// The connect4 floor plus the one helper call any per-process decision needs (the caller's
/// tgid; no context field of a sock_addr program holds it): what asking "who calls" costs on
/// this kernel and CPU, whatever is done with the answer.
#[cgroup_sock_addr(connect4)]
pub fn bench_floor_connect4_tgid(_ctx: SockAddrContext) -> i32 {
    // The branch keeps the call: no process has tgid 0.
    if bpf_get_current_pid_tgid() >> 32 == 0 {
        0
    } else {
        1
    }
}

#[cgroup_sock_addr(sendmsg4)]
pub fn bench_floor_sendmsg4(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_skb]
pub fn bench_floor_ingress(_ctx: SkBuffContext) -> i32 {
    1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
