//! The Alertmanager egress enforcer: policy file → validated policy → compiled maps → kernel
//! verdict → event → JSON line.
//!
//! `main.rs` only parses flags and dispatches; everything else lives here.

pub mod cgroup;
pub mod compile;
pub mod ebpf;
pub mod events;
pub mod fqdn;
pub mod logging;
pub mod policy;
pub mod reference;
pub mod run;
