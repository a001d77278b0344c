//! The agent's own resolution of every exact allowlisted name (hickory-resolver), and the
//! resolved-address map it writes: refresh at 3/4 of the TTL, backoff on failure (the last
//! good answer is kept meanwhile), bounds per name and in total.
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use enforcer_common::fqdn::FqdnEntry;
use hickory_resolver::{
    TokioResolver,
    config::{
        LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig,
    },
    name_server::TokioConnectionProvider,
    proto::xfer::Protocol,
};

use super::{
    Answer, FqdnError, MAX_BACKOFF, MAX_REFRESH, MIN_REFRESH, State, WARN_EVERY, ktime_now_ns,
};
use crate::{
    metrics::NameLabels,
    policy::{DnsSettings, RuleAction, normalize_addr},
};

pub(super) fn resolver(dns: &DnsSettings) -> Result<TokioResolver, FqdnError> {
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

pub(super) async fn resolve(resolver: TokioResolver, slot: usize, name: String) -> (usize, Answer) {
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

impl State {
    pub(super) fn on_answer(&mut self, slot: usize, answer: Answer) {
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
    pub(super) fn bound_resolved(&mut self, slot: usize) {
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
    pub(super) fn write_resolved(&mut self, ip: IpAddr) {
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

    /// Extends the expiry of `slot`'s last good answer to at least `until`.
    pub(super) fn keep_current(&mut self, slot: usize, until: u64) {
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

    /// Warns (at most once a minute per name and address) when `ip` is inside a block range;
    /// returns whether it is.
    pub(super) fn warn_if_blocked(&mut self, name: &str, ip: IpAddr) -> bool {
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
}
