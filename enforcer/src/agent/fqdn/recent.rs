//! A bounded memory of which name an address was recently answered for, so a denied call's
//! event can say "this was hooks.slack.com" (its answer expired, or a block rule caught it).
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// At most `capacity` addresses; the one named longest ago is forgotten first.
pub struct RecentNames {
    capacity: usize,
    names: HashMap<IpAddr, (String, u64)>,
    /// (address, stamp) in insertion order; entries whose stamp is no longer current are skipped.
    order: VecDeque<(IpAddr, u64)>,
    stamp: u64,
}

impl RecentNames {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            names: HashMap::new(),
            order: VecDeque::new(),
            stamp: 0,
        }
    }

    pub fn insert(&mut self, ip: IpAddr, name: &str) {
        self.stamp += 1;
        match self.names.get_mut(&ip) {
            Some(entry) if entry.0 == name => entry.1 = self.stamp,
            _ => {
                self.names.insert(ip, (name.to_owned(), self.stamp));
            }
        }
        self.order.push_back((ip, self.stamp));
        while self.names.len() > self.capacity || self.order.len() > 4 * self.capacity {
            let Some((old, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.names.get(&old).is_some_and(|e| e.1 == stamp) {
                self.names.remove(&old);
            }
        }
    }

    pub fn get(&self, ip: &IpAddr) -> Option<&str> {
        self.names.get(ip).map(|e| e.0.as_str())
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_keeps_the_most_recent() {
        let mut r = RecentNames::new(3);
        let ip = |i: u8| IpAddr::from([127, 0, 0, i]);
        for i in 0..100u8 {
            r.insert(ip(i), &format!("n{i}.test"));
            r.insert(ip(0), "zero.test");
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.get(&ip(0)), Some("zero.test"));
        assert_eq!(r.get(&ip(99)), Some("n99.test"));
        assert_eq!(r.get(&ip(1)), None);
        assert!(r.order.len() <= 12);
    }
}
