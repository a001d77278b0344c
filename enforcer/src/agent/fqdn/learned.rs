//! The bookkeeping of what the kernel learned from the targets' own DNS answers: every learned
//! address with the entry last seen for it, per rule slot and in arrival order, so the bounds
//! (`max_addresses_per_name`, `max_addresses`) remove the oldest, and never an entry the
//! kernel refreshed since.
use std::net::IpAddr;

use super::{Learned, State};
use crate::events::learned::{AnswerView, LearnedView};

impl State {
    pub(super) fn on_events(&mut self, events: Vec<LearnedView>) {
        for ev in events {
            self.on_learned(&ev);
        }
    }

    pub(super) fn on_learned(&mut self, ev: &LearnedView) {
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
    pub(super) fn bound_learned(&mut self, touched: u64) {
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
    pub(super) fn evict_learned(&mut self, ip: IpAddr, slot: Option<usize>) {
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

    pub(super) fn forget_learned(&mut self, ip: IpAddr, rules: u64) {
        self.learned.remove(&ip);
        for (slot, s) in self.learned_by_slot.iter_mut().enumerate() {
            if rules & (1u64 << slot) != 0 {
                s.live.remove(&ip);
            }
        }
    }
}
