//! The agent side of the FQDN allowlist: its own resolution of every exact allowlisted name,
//! the bookkeeping of what the kernel learned, and the bounds on both.
//!
//! Addresses reach the verdict two ways, in two maps with one writer each: the kernel learns
//! the answers the protected process receives (before the process can read them, so there is
//! no race), and the agent resolves every exact name itself (so a name the process has not
//! looked up yet, or looks up over a path the kernel cannot parse, still works).
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use enforcer_common::fqdn::{FqdnEntry, counter};
use hickory_resolver::TokioResolver;
use tokio::sync::oneshot;

use crate::{
    events::AddressNames,
    kernel::{Kernel, KernelError, fqdn::FqdnMaps},
    metrics::Metrics,
    policy::{Policy, normalize_addr},
};

mod learned;
pub mod recent;
mod resolver;
mod task;

use recent::RecentNames;

/// Addresses remembered for naming denied calls.
const RECENT_CAPACITY: usize = 8192;
/// How often queued learned events are read (the kernel does not wake us per event).
const DRAIN_EVERY: Duration = Duration::from_millis(50);
/// How often the agent's entries are recomputed (expired names dropped).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often the learning program's counters are added to the metrics.
const COUNTERS_EVERY: Duration = Duration::from_millis(250);
/// Learned entries are removed only this long after they expired (the kernel ignores them
/// once expired; removal only frees the slot).
const LEARNED_SWEEP_MARGIN_NS: u64 = 10_000_000_000;
/// How often every learned entry is checked (also those whose event was lost).
const FULL_SCAN_EVERY: Duration = Duration::from_secs(60);
/// Bounds of the refresh delay.
const MIN_REFRESH: Duration = Duration::from_secs(1);
const MAX_REFRESH: Duration = Duration::from_secs(3600);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The first resolution of every name, before the programs are attached, waits this long.
const INITIAL_RESOLUTION: Duration = Duration::from_secs(3);
/// A (name, address) warning is repeated at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FqdnError {
    #[error(transparent)]
    Ebpf(#[from] KernelError),
    #[error("reading the system resolver configuration (set `dns: servers:` in the policy)")]
    ResolverConfig(#[source] hickory_resolver::ResolveError),
}

/// Totals reported when the agent stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FqdnStats {
    pub resolutions: u64,
    pub dns_failures: u64,
    pub learned_events: u64,
    /// Answers inside a block range (they allow nothing).
    pub blocked_answers: u64,
    /// Addresses dropped because a name had more than `max_addresses_per_name`.
    pub evicted_per_name: u64,
    /// Addresses dropped because there were more than `max_addresses`.
    pub evicted_total: u64,
    pub learned_removed: u64,
    pub map_errors: u64,
}

/// What deny events read while the agent runs.
pub struct FqdnShared {
    recent: Mutex<RecentNames>,
}

impl AddressNames for FqdnShared {
    /// The name `ip` (normalised) was recently answered for.
    fn name_of(&self, ip: IpAddr) -> Option<String> {
        let recent = self.recent.lock().ok()?;
        recent.get(&normalize_addr(ip)).map(str::to_owned)
    }
}

impl FqdnShared {
    fn remember(&self, ip: IpAddr, name: &str) {
        if let Ok(mut r) = self.recent.lock() {
            r.insert(ip, name);
        }
    }
}

/// The running FQDN agent task.
pub struct FqdnAgent {
    shared: Arc<FqdnShared>,
    policy: tokio::sync::watch::Sender<Arc<Policy>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<FqdnStats>>,
}

impl FqdnAgent {
    /// Takes the FQDN maps out of `enforcer`, resolves every exact name once (waiting at most a
    /// few seconds) and starts the background task. Call it before attaching.
    pub async fn start(
        enforcer: &mut Kernel,
        policy: Arc<Policy>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, FqdnError> {
        let maps = FqdnMaps::take(enforcer.object_mut())?;
        let shared = Arc::new(FqdnShared {
            recent: Mutex::new(RecentNames::new(RECENT_CAPACITY)),
        });
        // Without a usable resolver configuration the agent still runs: learning from the
        // process's own answers does not need it.
        let resolver = if policy.fqdns.iter().any(|f| !f.wildcard) {
            match resolver::resolver(&policy.dns) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        "no resolver for the allowlisted names; only the target's own DNS answers are learned"
                    );
                    None
                }
            }
        } else {
            None
        };
        let names = names_of(&policy);
        let (policy_tx, policy_rx) = tokio::sync::watch::channel(policy.clone());
        let mut state = State {
            policy,
            maps,
            resolver,
            names,
            resolved: HashMap::new(),
            learned: HashMap::new(),
            learned_by_slot: Vec::new(),
            learned_order: VecDeque::new(),
            stamp: 0,
            stats: FqdnStats::default(),
            shared: shared.clone(),
            warned: HashMap::new(),
            last_full_scan: Instant::now(),
            metrics,
            kernel_counters: [0; counter::COUNT as usize],
            metric_counters: [0; counter::COUNT as usize],
        };
        state.learned_by_slot = vec![SlotLearned::default(); state.names.len()];
        state.initial_resolution().await;
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(state.run(rx, policy_rx));
        Ok(Self {
            shared,
            policy: policy_tx,
            stop: Some(tx),
            task: Some(task),
        })
    }

    pub fn shared(&self) -> Arc<FqdnShared> {
        self.shared.clone()
    }

    /// Hands a newly installed policy to the task (call it after the kernel tables of the new
    /// policy are installed).
    pub fn update(&self, policy: Arc<Policy>) {
        let _ = self.policy.send(policy);
    }

    /// Stops the task (after a last drain of learned events) and returns its totals.
    pub async fn stop(mut self) -> FqdnStats {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => FqdnStats::default(),
        }
    }
}

/// The slots of `policy`, all due for resolution now.
fn names_of(policy: &Policy) -> Vec<Slot> {
    let now = Instant::now();
    policy
        .fqdns
        .iter()
        .map(|f| Slot {
            name: f.name.clone(),
            resolve: !f.wildcard,
            next: now,
            in_flight: false,
            failures: 0,
            current: Vec::new(),
        })
        .collect()
}

/// One FQDN rule slot as the agent tracks it.
struct Slot {
    name: String,
    /// Exact names are resolved by the agent; wildcards only learned.
    resolve: bool,
    /// When the next resolution is due.
    next: Instant,
    /// A resolution is running.
    in_flight: bool,
    /// Consecutive failed resolutions (0 after an answer); sets the backoff.
    failures: u32,
    /// Addresses of the last good answer (normalised, blocked ones left out).
    current: Vec<IpAddr>,
}

impl Slot {
    /// Resolution is overdue or failing: its last good answer must not age out meanwhile.
    fn stale(&self) -> bool {
        self.failures > 0 || self.in_flight
    }
}

/// A learned address as the agent last saw it in an event.
#[derive(Clone, Copy)]
struct Learned {
    /// The entry the kernel wrote (removal only happens while the map still holds it).
    entry: FqdnEntry,
    /// The stamp of the answer that carried it (see [`State::learned_order`]).
    stamp: u64,
}

/// The learned addresses of one slot, oldest first.
#[derive(Clone, Default)]
struct SlotLearned {
    /// The slot's learned addresses with the stamp of their latest answer.
    live: HashMap<IpAddr, u64>,
    /// (stamp, address) in arrival order; stale pairs (stamp no longer in `live`) are skipped.
    order: VecDeque<(u64, IpAddr)>,
}

/// Outcome of one resolution.
type Answer = Result<(Vec<IpAddr>, Instant), String>;

struct State {
    /// The installed policy (its `fqdns` define the rule slots, its `dns` the bounds).
    policy: Arc<Policy>,
    /// The kernel's FQDN maps: learned (kernel-written) and resolved (agent-written) addresses.
    maps: FqdnMaps,
    /// The resolver for the exact names; `None` when the policy has none, or when no resolver
    /// configuration could be read (then only the targets' own answers are learned).
    resolver: Option<TokioResolver>,
    /// One entry per FQDN rule slot, in the policy's order (slot i = bit i of a rule mask).
    names: Vec<Slot>,
    /// The agent's own answers: address → slot → expiry (ktime ns). The resolved map's entry
    /// of an address is derived from this (latest expiry, union of slots).
    resolved: HashMap<IpAddr, HashMap<u32, u64>>,
    /// Every learned address the agent knows of, with the entry the kernel wrote and the
    /// stamp of the event that carried it (a later event for the address has a higher stamp).
    learned: HashMap<IpAddr, Learned>,
    /// Per slot: its learned addresses, oldest first, for `max_addresses_per_name`.
    learned_by_slot: Vec<SlotLearned>,
    /// All learned (stamp, address) in arrival order, for `max_addresses`. Entries whose
    /// stamp no longer matches `learned` are stale (the address was refreshed or removed)
    /// and skipped; the queue is compacted when it grows past four times the bound.
    learned_order: VecDeque<(u64, IpAddr)>,
    /// The last stamp handed out (one per learned answer).
    stamp: u64,
    /// Totals returned when the task stops.
    stats: FqdnStats,
    /// The recent address → name memory deny events read.
    shared: Arc<FqdnShared>,
    /// When each (name, address) inside a block range was last warned about (at most 1,024
    /// pairs, each warned at most once a minute).
    warned: HashMap<(String, IpAddr), Instant>,
    /// When every learned entry in the kernel was last checked (also those whose event was
    /// lost).
    last_full_scan: Instant,
    /// The learning program's counters as last reported (increases are logged) and as last
    /// added to the metrics.
    kernel_counters: [u64; counter::COUNT as usize],
    metric_counters: [u64; counter::COUNT as usize],
    /// `enforcer_fqdn_addresses` and `enforcer_fqdn_resolution_failures_total{name}`.
    metrics: Option<Arc<Metrics>>,
}

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

/// Counters of the learning program by name, for the final summary.
pub fn kernel_counter_names() -> [(u32, &'static str); counter::COUNT as usize] {
    [
        (counter::MATCHED_RESPONSES, "matched_responses"),
        (counter::LEARNED, "learned"),
        (counter::TRUNCATED, "truncated"),
        (counter::MALFORMED, "malformed"),
        (counter::MAP_FULL, "map_full"),
        (counter::UNVERIFIED_PEER, "unverified_peer"),
        (counter::LOST_EVENTS, "lost_events"),
        (counter::TC_BIT, "tc_bit"),
        (counter::NO_QUERY, "no_query"),
        (counter::QUESTION_TYPE, "question_type"),
        (counter::BAD_CHECKSUM, "bad_checksum"),
        (counter::OFF_CHAIN, "off_chain"),
        (counter::OTHER_TYPE, "other_type"),
        (counter::CHECKSUM_OFFLOADED, "checksum_offloaded"),
        (counter::QUERIES, "queries"),
    ]
}
