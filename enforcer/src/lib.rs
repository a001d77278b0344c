//! The Alertmanager egress enforcer: policy file → validated policy → compiled maps → kernel
//! verdict → event → JSON line.
//!
//! `main.rs` only parses flags and dispatches; everything else lives here.

pub mod agent;
pub mod amconfig;
pub mod cgroup;
pub mod compile;
pub mod events;
pub mod fqdn;
pub mod input;
pub mod integrity;
pub mod kernel;
pub mod logging;
pub mod matchers;
pub mod metrics;
pub mod own_sockets;
pub mod policy;
pub mod reference;
pub mod sd_notify;
pub mod time;
mod yaml;

/// The agent's version (Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit it was built from (`build.rs`; `unknown` outside a git checkout).
pub const REVISION: &str = env!("ENFORCER_REVISION");
/// The UTC date it was built (`build.rs`; SOURCE_DATE_EPOCH when set).
pub const BUILD_DATE: &str = env!("ENFORCER_BUILD_DATE");

/// An error and its sources, outermost first, joined by `": "`: the one way errors are
/// printed (each error's own message names only what it adds; its cause is its source).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::{io, path::PathBuf};

    use super::error_chain;
    use crate::{cgroup::CgroupError, kernel::KernelError};

    #[test]
    fn an_error_chain_prints_each_cause_once() {
        let io = || io::Error::new(io::ErrorKind::NotFound, "No such file or directory");
        let e = KernelError::Io {
            path: PathBuf::from("/sys/fs/bpf/x"),
            source: io(),
        };
        assert_eq!(error_chain(&e), "/sys/fs/bpf/x: No such file or directory");
        let e = CgroupError::Open {
            path: PathBuf::from("/sys/fs/cgroup/x"),
            source: io(),
        };
        assert_eq!(
            error_chain(&e),
            "cgroup /sys/fs/cgroup/x: No such file or directory"
        );
    }
}
