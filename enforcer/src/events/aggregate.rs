//! Denial aggregation: a flood of identical denials becomes two lines per window, not one line
//! per call.
//!
//! A target hammering one blocked address (a receiver retrying in a loop, or an attacker after
//! a log bill) would otherwise write a line for every call. The first denial of its kind is
//! written at once (`count` 1) and opens a window; identical denials inside the window are only
//! counted; when the window ends, one line says how many there were (`count`, `window_ms`). A
//! denial that differs in any field of [`Key`] is never delayed or folded: it is the first of
//! its own window. Metrics count every call; only lines are folded.
//!
//! The table of open windows is bounded: a process choosing many distinct destinations cannot
//! grow it. When it is full, the oldest window is closed early (its line written at once) to
//! make room, so every denial still counts on exactly one line.
use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, Instant},
};

use super::DenyView;

/// What makes two denials identical: the line's fields except the thread, the time and the
/// FQDN the address was last answered for (those of the window's last call are written).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    /// The event name carries the mode and whether a call or a socket was refused.
    event: &'static str,
    target: String,
    pid: u32,
    uid: u32,
    gid: u32,
    comm: String,
    cgroup_id: u64,
    hook: &'static str,
    protocol: String,
    dst_ip: IpAddr,
    dst_port: u16,
    rule: String,
    rule_id: Option<u32>,
    generation: u32,
}

impl Key {
    fn of(v: &DenyView) -> Self {
        Self {
            event: v.event,
            target: v.target.clone(),
            pid: v.pid,
            uid: v.uid,
            gid: v.gid,
            comm: v.comm.clone(),
            cgroup_id: v.cgroup_id,
            hook: v.hook,
            protocol: v.protocol.clone(),
            dst_ip: v.dst_ip,
            dst_port: v.dst_port,
            rule: v.rule.clone(),
            rule_id: v.rule_id,
            generation: v.generation,
        }
    }
}

/// An open window: the line that opened it and the identical denials folded since.
struct Open {
    line: DenyView,
    folded: u64,
}

/// The open windows of identical denials.
pub struct Aggregator {
    window: Duration,
    capacity: usize,
    open: HashMap<Key, Open>,
    /// The open windows' keys with the instant each ends, oldest first (all windows are as
    /// long, so this is also the order they end in; a key leaves only from the front).
    order: VecDeque<(Instant, Key)>,
    /// Windows closed before their end because the table was full.
    closed_early: u64,
}

impl Aggregator {
    /// The default window.
    pub const WINDOW: Duration = Duration::from_secs(1);
    /// The default bound on open windows (each holds one line, a few hundred bytes).
    pub const CAPACITY: usize = 4096;

    /// Folds identical denials within `window` (zero: every denial is its own line), keeping at
    /// most `capacity` windows open.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            open: HashMap::new(),
            order: VecDeque::new(),
            closed_early: 0,
        }
    }

    /// One denial seen at `now`: `write` gets the lines due now (this denial's own line when it
    /// opens a window; before it, the line of a window closed early to make room).
    pub fn offer(&mut self, view: DenyView, now: Instant, write: &mut impl FnMut(&DenyView)) {
        if self.window.is_zero() {
            write(&view);
            return;
        }
        self.close_ended(now, write);
        let key = Key::of(&view);
        if let Some(open) = self.open.get_mut(&key) {
            open.folded += 1;
            open.line.tid = view.tid;
            open.line.fqdn = view.fqdn;
            return;
        }
        if self.open.len() >= self.capacity {
            self.closed_early += 1;
            self.close_oldest(write);
        }
        write(&view);
        self.order.push_back((now + self.window, key.clone()));
        self.open.insert(
            key,
            Open {
                line: view,
                folded: 0,
            },
        );
    }

    /// Closes the windows that ended by `now`, writing the line of each that folded a denial.
    pub fn close_ended(&mut self, now: Instant, write: &mut impl FnMut(&DenyView)) {
        while self.order.front().is_some_and(|(end, _)| *end <= now) {
            self.close_oldest(write);
        }
    }

    /// Closes every window (the agent is stopping).
    pub fn close_all(&mut self, write: &mut impl FnMut(&DenyView)) {
        while !self.order.is_empty() {
            self.close_oldest(write);
        }
    }

    /// Windows open now.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// Windows closed before their end because the table was full.
    pub fn closed_early(&self) -> u64 {
        self.closed_early
    }

    fn close_oldest(&mut self, write: &mut impl FnMut(&DenyView)) {
        let Some((_, key)) = self.order.pop_front() else {
            return;
        };
        let Some(open) = self.open.remove(&key) else {
            return;
        };
        if open.folded > 0 {
            let mut line = open.line;
            line.count = open.folded;
            line.window_ms = Some(u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX));
            write(&line);
        }
    }
}

#[cfg(test)]
mod tests;
