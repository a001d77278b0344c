//! The FQDN allowlist's compile step (decision order, step 4): policy → allowlisted names and
//! per-rule clauses for the kernel. Part of the compile stage; [`crate::compile`] carries the
//! result in [`Compiled`](crate::compile::Compiled).
//!
//! - [`tables`]: the tables the kernel reads (names, port and protocol clauses).
//! - [`names`]: the wire-format keys of names.
//!
//! The DNS-learning program and the FQDN maps are in [`crate::kernel::fqdn`]; the agent's own
//! resolution and the bookkeeping of learned addresses in [`crate::agent::fqdn`].
pub mod names;
pub mod tables;

pub use tables::{FqdnCompileError, FqdnTables};
