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
pub mod kernel;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod reference;
mod yaml;
