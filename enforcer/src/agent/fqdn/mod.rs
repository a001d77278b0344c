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
use hickory_resolver::{
    TokioResolver,
    config::{
        LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig,
    },
    name_server::TokioConnectionProvider,
    proto::xfer::Protocol,
};
use tokio::{sync::oneshot, task::JoinSet};

use crate::{
    events::{
        AddressNames,
        learned::{self, AnswerView, LearnedView},
    },
    kernel::{Kernel, KernelError, fqdn::FqdnMaps},
    metrics::{Metrics, NameLabels},
    policy::{DnsSettings, Policy, RuleAction, normalize_addr},
};

pub mod recent;

use recent::RecentNames;

/// Addresses remembered for naming denied calls.
const RECENT_CAPACITY: usize = 8192;
/// How often queued learned events are read (the kernel does not wake us per event).
const DRAIN_EVERY: Duration = Duration::from_millis(50);
/// How often the agent's entries are recomputed (expired names dropped).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
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
            match resolver(&policy.dns) {
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
fn names_of(policy: &Policy) -> Vec<Name> {
    let now = Instant::now();
    policy
        .fqdns
        .iter()
        .map(|f| Name {
            name: f.name.clone(),
            resolve: !f.wildcard,
            next: now,
            in_flight: false,
            failures: 0,
            current: Vec::new(),
        })
        .collect()
}

fn resolver(dns: &DnsSettings) -> Result<TokioResolver, FqdnError> {
    let mut builder = if dns.servers.is_empty() {
        TokioResolver::builder_tokio().map_err(FqdnError::ResolverConfig)?
    } else {
        let mut group = NameServerConfigGroup::new();
        for &server in &dns.servers {
            group.push(NameServerConfig::new(server, Protocol::Udp));
            group.push(NameServerConfig::new(server, Protocol::Tcp));
        }
        let config = ResolverConfig::from_parts(None, vec![], group);
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
    };
    let opts = builder.options_mut();
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 1;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // The target reads its own hosts file; the agent's would only add confusion.
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ndots = 0;
    Ok(builder.build())
}

/// One FQDN rule slot as the agent tracks it.
struct Name {
    name: String,
    /// Exact names are resolved by the agent; wildcards only learned.
    resolve: bool,
    next: Instant,
    in_flight: bool,
    failures: u32,
    /// Addresses of the last good answer (normalised, blocked ones left out).
    current: Vec<IpAddr>,
}

impl Name {
    /// Resolution is overdue or failing: its last good answer must not age out meanwhile.
    fn stale(&self) -> bool {
        self.failures > 0 || self.in_flight
    }
}

/// A learned address as the agent last saw it in an event.
#[derive(Clone, Copy)]
struct Learned {
    entry: FqdnEntry,
    stamp: u64,
}

/// The learned addresses of one slot, oldest first.
#[derive(Clone, Default)]
struct SlotLearned {
    live: HashMap<IpAddr, u64>,
    order: VecDeque<(u64, IpAddr)>,
}

/// Outcome of one resolution.
type Answer = Result<(Vec<IpAddr>, Instant), String>;

struct State {
    policy: Arc<Policy>,
    maps: FqdnMaps,
    resolver: Option<TokioResolver>,
    names: Vec<Name>,
    /// The agent's own answers: address → slot → expiry (ktime ns).
    resolved: HashMap<IpAddr, HashMap<u32, u64>>,
    learned: HashMap<IpAddr, Learned>,
    learned_by_slot: Vec<SlotLearned>,
    learned_order: VecDeque<(u64, IpAddr)>,
    stamp: u64,
    stats: FqdnStats,
    shared: Arc<FqdnShared>,
    warned: HashMap<(String, IpAddr), Instant>,
    last_full_scan: Instant,
    kernel_counters: [u64; counter::COUNT as usize],
    /// `enforcer_fqdn_addresses` and `enforcer_fqdn_resolution_failures_total{name}`.
    metrics: Option<Arc<Metrics>>,
}

impl State {
    async fn initial_resolution(&mut self) {
        let Some(resolver) = self.resolver.clone() else {
            return;
        };
        let mut jobs = JoinSet::new();
        for (slot, n) in self.names.iter().enumerate().filter(|(_, n)| n.resolve) {
            jobs.spawn(resolve(resolver.clone(), slot, n.name.clone()));
        }
        let deadline = tokio::time::Instant::now() + INITIAL_RESOLUTION;
        while let Ok(Some(done)) = tokio::time::timeout_at(deadline, jobs.join_next()).await {
            if let Ok((slot, answer)) = done {
                self.on_answer(slot, answer);
            }
        }
        // Names still resolving are retried by the task.
    }

    async fn run(
        mut self,
        mut stop: oneshot::Receiver<()>,
        mut policy: tokio::sync::watch::Receiver<Arc<Policy>>,
    ) -> FqdnStats {
        let mut drain = tokio::time::interval(DRAIN_EVERY);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut jobs: JoinSet<(usize, Answer)> = JoinSet::new();
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
        // the AsyncFd owns the ring buffer.
        let mut ring = match self.maps.events.take().map(|r| {
            // SAFETY: as above.
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(r, tokio::io::Interest::READABLE)
            }
            .map_err(|e| e.to_string())
        }) {
            Some(Ok(ring)) => Some(ring),
            Some(Err(e)) => {
                tracing::error!(error = %e, "polling the learned-event ring buffer; draining on the timer only");
                None
            }
            None => None,
        };
        loop {
            let now = Instant::now();
            if let Some(resolver) = &self.resolver {
                for (slot, n) in self.names.iter_mut().enumerate() {
                    if n.resolve && !n.in_flight && n.next <= now {
                        n.in_flight = true;
                        jobs.spawn(resolve(resolver.clone(), slot, n.name.clone()));
                    }
                }
            }
            let next = self
                .names
                .iter()
                .filter(|n| n.resolve && !n.in_flight)
                .map(|n| n.next)
                .min()
                .unwrap_or(now + MAX_REFRESH);
            tokio::select! {
                _ = &mut stop => break,
                changed = policy.changed() => {
                    if changed.is_ok() {
                        let new = policy.borrow_and_update().clone();
                        jobs.abort_all();
                        self.on_policy(new);
                    }
                }
                guard = async { ring.as_mut()?.readable_mut().await.ok() }, if ring.is_some() => {
                    if let Some(mut guard) = guard {
                        let events = learned::read_all(guard.get_inner_mut());
                        guard.clear_ready();
                        self.on_events(events);
                    }
                }
                _ = drain.tick() => {
                    if let Some(r) = ring.as_mut() {
                        let events = learned::read_all(r.get_mut());
                        self.on_events(events);
                    }
                }
                _ = sweep.tick() => self.sweep(),
                Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                    if let Ok((slot, answer)) = done {
                        self.on_answer(slot, answer);
                    }
                }
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
        jobs.abort_all();
        let totals = self.maps.counters();
        let kernel: Vec<String> = kernel_counter_names()
            .iter()
            .map(|(i, name)| format!("{name}={}", totals[*i as usize]))
            .collect();
        tracing::info!(kernel = %kernel.join(" "), "DNS learning totals");
        if let Some(r) = ring.as_mut() {
            let events = learned::read_all(r.get_mut());
            self.on_events(events);
        }
        self.report_kernel_counters();
        self.stats
    }

    /// A reloaded policy. Same names in the same order: the slots keep their meaning, only
    /// ports, protocols, blocks and DNS settings change. Otherwise the slots were renumbered,
    /// so every learned and resolved address is forgotten (removed from the kernel maps) and
    /// the names are resolved again; the process's next resolution re-learns its answers.
    fn on_policy(&mut self, new: Arc<Policy>) {
        let key = |p: &Policy| -> Vec<(String, bool)> {
            p.fqdns
                .iter()
                .map(|f| (f.name.clone(), f.wildcard))
                .collect()
        };
        let same_names = key(&self.policy) == key(&new);
        let servers_changed = self.policy.dns.servers != new.dns.servers;
        self.policy = new;
        if servers_changed || self.resolver.is_none() {
            self.resolver = if self.policy.fqdns.iter().any(|f| !f.wildcard) {
                match resolver(&self.policy.dns) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::error!(error = %e, "building the resolver for the reloaded policy");
                        None
                    }
                }
            } else {
                None
            };
        }
        if same_names {
            for n in &mut self.names {
                n.in_flight = false;
                n.next = Instant::now();
            }
            return;
        }
        let resolved: Vec<IpAddr> = self.resolved.keys().copied().collect();
        self.resolved.clear();
        for &ip in &resolved {
            self.write_resolved(ip);
        }
        let mut learned = 0u64;
        for (ip, entry) in self.maps.learned_entries() {
            if self.maps.remove_learned_if(ip, entry) {
                learned += 1;
            }
        }
        self.stats.learned_removed += learned;
        self.learned.clear();
        self.learned_order.clear();
        self.names = names_of(&self.policy);
        self.learned_by_slot = vec![SlotLearned::default(); self.names.len()];
        // Logged once the kernel maps no longer hold them (tests and operators may act on it).
        tracing::warn!(
            learned_removed = learned,
            resolved_removed = resolved.len(),
            "the fqdn rules changed: learned and resolved addresses are forgotten and resolved again"
        );
    }

    fn on_answer(&mut self, slot: usize, answer: Answer) {
        let now = Instant::now();
        let grace_ns = self.policy.dns.grace_period.as_nanos() as u64;
        let ktime = ktime_now_ns();
        let Some(n) = self.names.get_mut(slot) else {
            return;
        };
        n.in_flight = false;
        let name = n.name.clone();
        match answer {
            Ok((ips, valid_until)) => {
                self.stats.resolutions += 1;
                n.failures = 0;
                n.current.clear();
                let ttl = valid_until.saturating_duration_since(now);
                n.next = now + (ttl * 3 / 4).clamp(MIN_REFRESH, MAX_REFRESH);
                let expires = ktime + ttl.as_nanos() as u64 + grace_ns;
                // Addresses that left the answer set stay for the grace period at most.
                let left: Vec<IpAddr> = self
                    .resolved
                    .iter_mut()
                    .filter_map(|(ip, slots)| {
                        if ips.iter().any(|a| normalize_addr(*a) == *ip) {
                            return None;
                        }
                        let e = slots.get_mut(&(slot as u32))?;
                        (*e > ktime + grace_ns).then(|| {
                            *e = ktime + grace_ns;
                            *ip
                        })
                    })
                    .collect();
                for ip in left {
                    self.write_resolved(ip);
                }
                for ip in ips {
                    let ip = normalize_addr(ip);
                    self.shared.remember(ip, &name);
                    if self.warn_if_blocked(&name, ip) {
                        continue;
                    }
                    self.names[slot].current.push(ip);
                    let slots = self.resolved.entry(ip).or_default();
                    let e = slots.entry(slot as u32).or_default();
                    *e = (*e).max(expires);
                    self.write_resolved(ip);
                }
                self.bound_resolved(slot);
            }
            Err(error) => {
                self.stats.dns_failures += 1;
                if let Some(m) = &self.metrics {
                    m.fqdn_resolution_failures
                        .get_or_create(&NameLabels { name: name.clone() })
                        .inc();
                }
                n.failures += 1;
                let backoff = MIN_REFRESH * 2u32.saturating_pow(n.failures.min(8));
                n.next = now + backoff.min(MAX_BACKOFF);
                let kept = n.current.len();
                // Keep the last good answer while the name servers fail: never flush it (the
                // sweep keeps extending it by the grace period until an answer comes).
                self.keep_current(slot, ktime + grace_ns);
                tracing::warn!(
                    fqdn = %name,
                    error = %error,
                    failures = self.stats.dns_failures,
                    kept_addresses = kept,
                    "resolving an allowlisted name failed; keeping its last answers"
                );
            }
        }
    }

    /// Drops the oldest addresses of `slot` beyond `max_addresses_per_name`, then the
    /// soonest-expiring beyond `max_addresses`.
    fn bound_resolved(&mut self, slot: usize) {
        let slot = slot as u32;
        let mut of_slot: Vec<(u64, IpAddr)> = self
            .resolved
            .iter()
            .filter_map(|(ip, s)| s.get(&slot).map(|e| (*e, *ip)))
            .collect();
        let max = self.policy.dns.max_addresses_per_name;
        if of_slot.len() > max {
            of_slot.sort_unstable();
            let excess = of_slot.len() - max;
            for &(_, ip) in &of_slot[..excess] {
                if let Some(s) = self.resolved.get_mut(&ip) {
                    s.remove(&slot);
                }
                self.write_resolved(ip);
            }
            self.stats.evicted_per_name += excess as u64;
            tracing::warn!(fqdn = %self.names[slot as usize].name, dropped = excess, max, "name has more addresses than max_addresses_per_name; dropped the oldest");
        }
        let total = self.policy.dns.max_addresses;
        if self.resolved.len() > total {
            let mut all: Vec<(u64, IpAddr)> = self
                .resolved
                .iter()
                .map(|(ip, s)| (s.values().copied().max().unwrap_or(0), *ip))
                .collect();
            all.sort_unstable();
            let excess = all.len() - total;
            for &(_, ip) in &all[..excess] {
                self.resolved.remove(&ip);
                self.write_resolved(ip);
            }
            self.stats.evicted_total += excess as u64;
            tracing::warn!(
                dropped = excess,
                max = total,
                "more resolved addresses than max_addresses; dropped the soonest-expiring"
            );
        }
    }

    /// Writes the agent's map entry of `ip` from its slots (removing it when none is left).
    fn write_resolved(&mut self, ip: IpAddr) {
        let entry = match self.resolved.get(&ip) {
            Some(slots) if !slots.is_empty() => Some(FqdnEntry {
                expires_ns: slots.values().copied().max().unwrap_or(0),
                rules: slots.keys().fold(0u64, |m, s| m | (1u64 << s)),
            }),
            _ => {
                self.resolved.remove(&ip);
                None
            }
        };
        if let Err(e) = self.maps.set_resolved(ip, entry) {
            self.stats.map_errors += 1;
            tracing::error!(address = %ip, error = %e, "writing the resolved-address map");
        }
    }

    /// Warns (at most once a minute per name and address) when `ip` is inside a block range;
    /// returns whether it is.
    fn warn_if_blocked(&mut self, name: &str, ip: IpAddr) -> bool {
        let Some(rule) = self
            .policy
            .rules
            .iter()
            .filter(|r| r.action == RuleAction::Block && r.net.contains(&ip))
            .max_by_key(|r| r.net.prefix_len())
        else {
            return false;
        };
        self.stats.blocked_answers += 1;
        let key = (name.to_owned(), ip);
        let now = Instant::now();
        if self
            .warned
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < WARN_EVERY)
        {
            return true;
        }
        if self.warned.len() >= 1024 {
            self.warned
                .retain(|_, t| now.duration_since(*t) < WARN_EVERY);
        }
        if self.warned.len() < 1024 {
            self.warned.insert(key, now);
        }
        tracing::warn!(
            fqdn = %name,
            address = %ip,
            rule = %rule,
            "DNS answer for an allowlisted name is inside a blocked range (possible DNS rebinding); it allows nothing"
        );
        true
    }

    fn on_events(&mut self, events: Vec<LearnedView>) {
        for ev in events {
            self.on_learned(&ev);
        }
    }

    fn on_learned(&mut self, ev: &LearnedView) {
        self.stats.learned_events += 1;
        let name = &ev.name;
        for &AnswerView {
            ip,
            map_full,
            entry,
        } in &ev.answers
        {
            self.shared.remember(ip, name);
            self.warn_if_blocked(name, ip);
            if map_full {
                tracing::warn!(fqdn = %name, address = %ip, "learned-address map is full; this answer was not stored");
                continue;
            }
            self.stamp += 1;
            let stamp = self.stamp;
            self.learned.insert(ip, Learned { entry, stamp });
            self.learned_order.push_back((stamp, ip));
            for slot in 0..self.learned_by_slot.len() {
                if ev.rules & (1u64 << slot) != 0 {
                    let s = &mut self.learned_by_slot[slot];
                    s.live.insert(ip, stamp);
                    s.order.push_back((stamp, ip));
                }
            }
        }
        self.bound_learned(ev.rules);
    }

    /// Applies `max_addresses_per_name` (to the slots in `touched`) and `max_addresses` to the
    /// learned addresses: the oldest are removed from the kernel map, but only when their entry
    /// is unchanged since the agent saw it and belongs to that one name.
    fn bound_learned(&mut self, touched: u64) {
        let max = self.policy.dns.max_addresses_per_name;
        for slot in 0..self.learned_by_slot.len() {
            if touched & (1u64 << slot) == 0 {
                continue;
            }
            let mut dropped = 0u64;
            while self.learned_by_slot[slot].live.len() > max {
                let s = &mut self.learned_by_slot[slot];
                let Some((stamp, ip)) = s.order.pop_front() else {
                    break;
                };
                if s.live.get(&ip) != Some(&stamp) {
                    continue;
                }
                s.live.remove(&ip);
                dropped += 1;
                self.evict_learned(ip, Some(slot));
            }
            let s = &mut self.learned_by_slot[slot];
            if s.order.len() > 4 * max.max(16) {
                let live = &s.live;
                s.order.retain(|(stamp, ip)| live.get(ip) == Some(stamp));
            }
            if dropped > 0 {
                self.stats.evicted_per_name += dropped;
                tracing::warn!(fqdn = %self.names[slot].name, dropped, max, "name has more learned addresses than max_addresses_per_name; removed the oldest");
            }
        }
        let total = self.policy.dns.max_addresses;
        let mut dropped = 0u64;
        while self.learned.len() > total {
            let Some((stamp, ip)) = self.learned_order.pop_front() else {
                break;
            };
            if self.learned.get(&ip).map(|l| l.stamp) != Some(stamp) {
                continue;
            }
            dropped += 1;
            self.evict_learned(ip, None);
        }
        if self.learned_order.len() > 4 * total.max(16) {
            let learned = &self.learned;
            self.learned_order
                .retain(|(stamp, ip)| learned.get(ip).map(|l| l.stamp) == Some(*stamp));
        }
        if dropped > 0 {
            self.stats.evicted_total += dropped;
            tracing::warn!(
                dropped,
                max = total,
                "more learned addresses than max_addresses; removed the oldest"
            );
        }
    }

    /// Forgets `ip` and removes its kernel entry if that entry is still what the agent saw and
    /// holds no other name than `slot` (`None`: any).
    fn evict_learned(&mut self, ip: IpAddr, slot: Option<usize>) {
        let Some(l) = self.learned.get(&ip).copied() else {
            return;
        };
        let only_this = slot.is_none_or(|s| l.entry.rules == 1u64 << s);
        if only_this && self.maps.remove_learned_if(ip, l.entry) {
            self.stats.learned_removed += 1;
        }
        if only_this {
            self.forget_learned(ip, l.entry.rules);
        }
    }

    fn forget_learned(&mut self, ip: IpAddr, rules: u64) {
        self.learned.remove(&ip);
        for (slot, s) in self.learned_by_slot.iter_mut().enumerate() {
            if rules & (1u64 << slot) != 0 {
                s.live.remove(&ip);
            }
        }
    }

    /// Extends the expiry of `slot`'s last good answer to at least `until`.
    fn keep_current(&mut self, slot: usize, until: u64) {
        let ips = self.names[slot].current.clone();
        for ip in ips {
            let Some(e) = self
                .resolved
                .get_mut(&ip)
                .and_then(|s| s.get_mut(&(slot as u32)))
            else {
                continue;
            };
            if *e < until {
                *e = until;
                self.write_resolved(ip);
            }
        }
    }

    fn sweep(&mut self) {
        let now = ktime_now_ns();
        let grace_ns = self.policy.dns.grace_period.as_nanos() as u64;
        for slot in 0..self.names.len() {
            if self.names[slot].stale() {
                self.keep_current(slot, now + grace_ns.max(2 * SWEEP_EVERY.as_nanos() as u64));
            }
        }
        // The agent's entries: drop names whose answers (and grace) ran out.
        let expired: Vec<IpAddr> = self
            .resolved
            .iter_mut()
            .filter_map(|(ip, slots)| {
                let before = slots.len();
                slots.retain(|_, e| *e > now);
                (slots.len() != before).then_some(*ip)
            })
            .collect();
        for ip in expired {
            self.write_resolved(ip);
        }
        // Learned entries long expired: the kernel ignores them; removing frees their slot.
        let stale: Vec<(IpAddr, FqdnEntry)> = self
            .learned
            .iter()
            .filter(|(_, l)| l.entry.expires_ns + LEARNED_SWEEP_MARGIN_NS < now)
            .map(|(ip, l)| (*ip, l.entry))
            .collect();
        for (ip, seen) in stale {
            match self.maps.learned(ip) {
                Some(current) if current != seen => {
                    // Refreshed by the kernel after the event we saw (its event is queued).
                    if let Some(l) = self.learned.get_mut(&ip) {
                        l.entry = current;
                    }
                }
                Some(_) => {
                    if self.maps.remove_learned_if(ip, seen) {
                        self.stats.learned_removed += 1;
                    }
                    self.forget_learned(ip, seen.rules);
                }
                None => self.forget_learned(ip, seen.rules),
            }
        }
        if self.last_full_scan.elapsed() >= FULL_SCAN_EVERY {
            self.last_full_scan = Instant::now();
            for (ip, entry) in self.maps.learned_entries() {
                if entry.expires_ns + LEARNED_SWEEP_MARGIN_NS < now
                    && !self.learned.contains_key(&ip)
                    && self.maps.remove_learned_if(ip, entry)
                {
                    self.stats.learned_removed += 1;
                }
            }
        }
        self.report_kernel_counters();
        if let Some(m) = &self.metrics {
            let mut all: std::collections::HashSet<IpAddr> =
                self.resolved.keys().copied().collect();
            all.extend(self.learned.keys().copied());
            m.fqdn_addresses.set(all.len() as i64);
        }
    }

    /// Logs increases of the learning program's trouble counters.
    fn report_kernel_counters(&mut self) {
        let now = self.maps.counters();
        // Every counter but the two that count success.
        let trouble = kernel_counter_names()
            .into_iter()
            .filter(|(i, _)| ![counter::MATCHED_RESPONSES, counter::LEARNED].contains(i));
        for (i, what) in trouble {
            let (old, new) = (self.kernel_counters[i as usize], now[i as usize]);
            if new > old {
                tracing::warn!(
                    counter = what,
                    new = new - old,
                    total = new,
                    "DNS learning: responses not (fully) learned"
                );
            }
        }
        self.kernel_counters = now;
    }
}

async fn resolve(resolver: TokioResolver, slot: usize, name: String) -> (usize, Answer) {
    resolver.clear_cache();
    let answer = match resolver.lookup_ip(format!("{name}.")).await {
        Ok(lookup) => Ok((lookup.iter().collect(), lookup.valid_until())),
        // NXDOMAIN / no A or AAAA: an answer with no addresses (the old ones age out).
        Err(e) if e.is_no_records_found() => {
            Ok((Vec::new(), Instant::now() + Duration::from_secs(30)))
        }
        Err(e) => Err(e.to_string()),
    };
    (slot, answer)
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
    ]
}
