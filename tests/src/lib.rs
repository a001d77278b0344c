//! Harness of the integration tests: a child cgroup that is always removed, the `probe`
//! workload (in that cgroup, in an empty network namespace), and the `enforcer run` agent.
//!
//! Tests here touch kernel state; they must run one at a time (`.config/nextest.toml` puts
//! them in a serial group) and need root.
//!
//! One module per concern, every item re-exported here (tests import `integration_tests::X`):
//! privilege (may a kernel test run here: [`privileged`]), binaries under test, cgroups,
//! network namespaces, bpffs pins, the probe workload, the agent, child processes and
//! threads, HTTP, polling, temporary directories, and [`dns`].
use std::sync::atomic::{AtomicU32, Ordering};

mod agent;
pub mod alertmanager;
pub mod attack;
mod bins;
mod bpffs;
mod cgroup;
mod child;
pub mod deploy;
pub mod dns;
pub mod earlier;
mod http;
mod netns;
pub mod podman;
mod poll;
mod privilege;
mod tempdir;
pub mod uring;
mod workload;

pub use agent::{Agent, denied_calls, lost_events};
pub use bins::{enforcer_bin, probe_bin, run_enforcer};
pub use bpffs::PinDir;
pub use cgroup::{TestCgroup, attached_programs, cgroup_programs, ingress_programs};
pub use child::{Background, ChildGuard};
pub use http::{HttpSink, Request, http_get, status_and_body};
pub use netns::{NetNs, PROXY_VARS, enter_netns};
pub use poll::{eventually, wait_for};
pub use privilege::{
    ALLOW_SKIP_VAR, SKIP_LOG_VAR, cannot_run, emulated, fqdn_learning_supported, installed,
    privileged, skip_allowed,
};
pub use tempdir::TempDir;
pub use workload::{Outcome, Probe};

pub const EPERM: i32 = libc::EPERM;
pub const ENETUNREACH: i32 = libc::ENETUNREACH;
pub const ECONNREFUSED: i32 = libc::ECONNREFUSED;

/// Whether `name` is one that [`unique`] gave a test process that no longer runs
/// (`enforcer-…-PID-N`, no `/proc/PID`): what a test killed by a signal, whose guards never
/// ran, left behind. A live PID (even one reused by another process) keeps its objects.
pub fn left_by_dead_test(name: &str) -> bool {
    if !name.starts_with("enforcer-") {
        return false;
    }
    let mut parts = name.rsplit('-');
    let (Some(n), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    n.parse::<u32>().is_ok()
        && pid.parse::<u32>().is_ok_and(|pid| {
            pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        })
}

/// A unique name for this test process's kernel objects.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
