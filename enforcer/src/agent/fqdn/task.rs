//! The FQDN agent's task: the loop that resolves names when due, reads learned events, takes
//! reloaded policies and sweeps expired addresses.
use std::{net::IpAddr, sync::Arc, time::Instant};

use enforcer_common::fqdn::{FqdnEntry, counter};
use tokio::{sync::oneshot, task::JoinSet};

use super::{
    Answer, DRAIN_EVERY, FULL_SCAN_EVERY, FqdnStats, INITIAL_RESOLUTION, LEARNED_SWEEP_MARGIN_NS,
    MAX_REFRESH, SWEEP_EVERY, SlotLearned, State, kernel_counter_names, ktime_now_ns, names_of,
    resolver::{resolve, resolver},
};
use crate::{events::learned, policy::Policy};

impl State {
    pub(super) async fn initial_resolution(&mut self) {
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

    pub(super) async fn run(
        mut self,
        mut stop: oneshot::Receiver<()>,
        mut policy: tokio::sync::watch::Receiver<Arc<Policy>>,
    ) -> FqdnStats {
        let mut drain = tokio::time::interval(DRAIN_EVERY);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut counters = tokio::time::interval(super::COUNTERS_EVERY);
        counters.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                _ = counters.tick() => self.observe_kernel_counters(),
                Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                    if let Ok((slot, answer)) = done {
                        self.on_answer(slot, answer);
                    }
                }
                () = tokio::time::sleep_until(next.into()) => {}
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
        self.observe_kernel_counters();
        self.stats
    }

    /// A reloaded policy. Same names in the same order: the slots keep their meaning, only
    /// ports, protocols, blocks and DNS settings change. Otherwise the slots were renumbered,
    /// so every learned and resolved address is forgotten (removed from the kernel maps) and
    /// the names are resolved again; the process's next resolution re-learns its answers.
    pub(super) fn on_policy(&mut self, new: Arc<Policy>) {
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

    pub(super) fn sweep(&mut self) {
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

    /// Adds what the learning program counted since the last call to the metrics
    /// (`enforcer_dns_responses_refused_total{reason}`, `enforcer_dns_records_ignored_total`,
    /// `enforcer_dns_queries_recorded_total`).
    pub(super) fn observe_kernel_counters(&mut self) {
        let Some(m) = &self.metrics else {
            return;
        };
        let now = self.maps.counters();
        let old = self.metric_counters;
        let delta = |i: u32| now[i as usize].saturating_sub(old[i as usize]);
        for (i, reason) in counter::REFUSED {
            m.dns_responses_refused
                .get_or_create(&crate::metrics::ReasonLabels { reason })
                .inc_by(delta(i));
        }
        for (i, reason) in counter::IGNORED {
            m.dns_records_ignored
                .get_or_create(&crate::metrics::ReasonLabels { reason })
                .inc_by(delta(i));
        }
        m.dns_queries_recorded.inc_by(delta(counter::QUERIES));
        m.dns_checksum_offloaded
            .inc_by(delta(counter::CHECKSUM_OFFLOADED));
        self.metric_counters = now;
    }

    /// Logs increases of the learning program's trouble counters.
    pub(super) fn report_kernel_counters(&mut self) {
        let now = self.maps.counters();
        // Refused responses, full maps and lost events (not the counters of success, of
        // records skipped in accepted answers, of offloaded checksums or of queries).
        let trouble = kernel_counter_names().into_iter().filter(|(i, _)| {
            counter::REFUSED.iter().any(|(r, _)| r == i)
                || [counter::MAP_FULL, counter::LOST_EVENTS].contains(i)
        });
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
