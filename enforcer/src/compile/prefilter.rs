//! The IPv4 /24 prefilter: one bit per /24 block that some IPv4 entry touches. The programs
//! skip the LPM walk for an address whose block bit is clear (no entry can match it); the
//! compiler builds it here so that [`super::lookup`]'s emulation covers it.

use std::fmt;
use std::net::Ipv4Addr;

use enforcer_common::{V4_FILTER_WORDS, V4Filter, v4_filter_pos};
use ipnet::Ipv4Net;

/// The prefilter words of one rule set (2 MiB, boxed so they never pass through the stack).
#[derive(Clone, PartialEq, Eq)]
pub struct V4Prefilter(Box<V4Filter>);

impl V4Prefilter {
    /// Marks every /24 block that one of `nets` touches.
    pub fn of(nets: impl IntoIterator<Item = Ipv4Net>) -> Self {
        let mut words: Box<V4Filter> = vec![0u64; V4_FILTER_WORDS]
            .into_boxed_slice()
            .try_into()
            .expect("V4_FILTER_WORDS words");
        for net in nets {
            let first = u64::from(u32::from(net.network()) >> 8);
            let end = first + (1u64 << 24u8.saturating_sub(net.prefix_len()));
            let mut block = first;
            while block < end {
                // Whole words at a time where the range allows (a /8 covers 65,536 blocks).
                let (w, b) = ((block >> 6) as usize, block & 63);
                if b == 0 && end - block >= 64 {
                    words[w] = u64::MAX;
                    block += 64;
                } else {
                    words[w] |= 1 << b;
                    block += 1;
                }
            }
        }
        Self(words)
    }

    /// Whether the programs walk the trie for `addr` (the kernel's own bit arithmetic).
    pub fn covers(&self, addr: Ipv4Addr) -> bool {
        let (word, bit) = v4_filter_pos(addr.octets());
        self.0[word] & bit != 0
    }

    /// The words as the `V4_FILTER` map holds them.
    pub fn words(&self) -> &V4Filter {
        &self.0
    }

    /// How many /24 blocks are marked.
    pub fn blocks(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

impl fmt::Debug for V4Prefilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "V4Prefilter({} /24 blocks)", self.blocks())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(nets: &[&str]) -> V4Prefilter {
        V4Prefilter::of(nets.iter().map(|n| n.parse::<Ipv4Net>().unwrap()))
    }

    #[test]
    fn marks_exactly_the_touched_blocks() {
        let f = filter(&["10.1.2.3/32", "192.168.0.0/23"]);
        assert_eq!(f.blocks(), 3);
        for (addr, covered) in [
            ("10.1.2.0", true),
            ("10.1.2.255", true),
            ("10.1.3.0", false),
            ("10.1.1.255", false),
            ("192.168.0.1", true),
            ("192.168.1.255", true),
            ("192.168.2.0", false),
        ] {
            assert_eq!(f.covers(addr.parse().unwrap()), covered, "{addr}");
        }
    }

    #[test]
    fn short_prefixes_fill_whole_words() {
        assert_eq!(filter(&["10.0.0.0/8"]).blocks(), 1 << 16);
        assert_eq!(filter(&["0.0.0.0/0"]).blocks(), 1 << 24);
        // A /18 is 64 blocks: exactly one word.
        let f = filter(&["10.0.64.0/18"]);
        assert_eq!(f.blocks(), 64);
        assert!(f.covers("10.0.127.255".parse().unwrap()));
        assert!(!f.covers("10.0.128.0".parse().unwrap()));
        assert_eq!(filter(&[]).blocks(), 0);
        assert_eq!(
            format!("{:?}", filter(&["1.2.3.4/32"])),
            "V4Prefilter(1 /24 blocks)"
        );
    }
}
