//! The FQDN allowlist (DESIGN.md decision order, step 4).
//!
//! - [`tables`]: policy → allowlisted names and per-rule clauses for the kernel.
//! - [`kernel`]: the DNS-learning `cgroup_skb/ingress` program and the FQDN maps.
//! - [`agent`]: the agent's own resolution (hickory-resolver), the bookkeeping of learned
//!   addresses (bounds, sweeping, rebinding warnings) and the recent address → name memory
//!   that deny events use.
//!
//! Addresses reach the verdict two ways, in two maps with one writer each: the kernel learns
//! the answers the protected process receives (before the process can read them, so there is
//! no race), and the agent resolves every exact name itself (so a name the process has not
//! looked up yet, or looks up over a path the kernel cannot parse, still works).
pub mod agent;
pub mod kernel;
pub mod names;
pub mod recent;
pub mod tables;

pub use agent::{FqdnAgent, FqdnError, FqdnShared, FqdnStats};
pub use tables::{FqdnCompileError, FqdnTables};

/// `bpf_ktime_get_ns()` as userspace reads it (CLOCK_MONOTONIC), in nanoseconds.
pub fn ktime_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
