//! The benchmark's floor: a cgroup/connect4 program that allows every call and does nothing
//! else. `cargo xtask bench` measures it exactly like the enforcer's connect4, so the difference
//! is what the verdict logic costs on top of the kernel's per-program overhead (the run itself
//! plus the `bpf_stats` bookkeeping).
#![no_std]
#![no_main]

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(connect4)]
pub fn bench_floor_connect4(_ctx: SockAddrContext) -> i32 {
    1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
