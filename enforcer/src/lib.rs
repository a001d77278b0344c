//! The Alertmanager egress enforcer: policy file → validated policy → compiled maps → kernel
//! verdict → event → JSON line.
//!
//! `main.rs` only parses flags and dispatches; everything else lives here.

pub mod amconfig;
pub mod auto;
pub mod cgroup;
pub mod compile;
pub mod ebpf;
pub mod events;
pub mod fqdn;
pub mod logging;
pub mod metrics;
pub mod pin;
pub mod policy;
pub mod reference;
pub mod run;
pub mod targets;
mod yaml;
