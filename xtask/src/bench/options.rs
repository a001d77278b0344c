//! The benchmark's command line and the sizes every section shares.
use std::time::Duration;

use super::workload;

/// Block-list sizes measured.
pub(super) const SMALL: usize = 10;
pub(super) const LARGE: usize = 100_000;
/// How often the event consumer drains without a wakeup (the agent's default).
pub(super) const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// connect() calls per run of a per-call measurement.
    #[arg(long, default_value_t = 200_000)]
    pub(super) calls: u64,
    /// Runs of each per-call measurement (interleaved; the median is reported).
    #[arg(long, default_value_t = 5)]
    pub(super) runs: usize,
    /// Distinct destinations each per-call loop cycles through (1 = one cache-hot trie path).
    #[arg(long, default_value_t = 1024)]
    pub(super) destinations: usize,
    /// TCP connect()s per side and round of the connect() loop.
    #[arg(long, default_value_t = 5_000)]
    pub(super) connects: u64,
    /// Rounds of the connect() loop (with and without the enforcer, ABBA order); short rounds
    /// paired closely in time keep the ratio robust against load from other processes.
    #[arg(long, default_value_t = 40)]
    pub(super) rounds: usize,
    /// Seed of the generated prefixes and destinations.
    #[arg(long, default_value_t = 1)]
    pub(super) seed: u64,
    /// Only the scope-mode section (its floors included); no release build of the agent.
    #[arg(long)]
    pub(super) scope_only: bool,
    /// Only the per-call section (floor, allow, deny + event at both sizes); no connect()
    /// loop, scope mode or agent (for comparing builds of the programs).
    #[arg(long, conflicts_with = "scope_only")]
    pub(super) per_call_only: bool,
    #[command(subcommand)]
    pub(super) workload: Option<workload::Workload>,
}
