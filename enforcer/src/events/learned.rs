//! Learned events: the answers the DNS-learning program stored (or could not store) for one
//! DNS response of a target, as the FQDN agent reads them.
use std::net::IpAddr;

use enforcer_common::{
    EventHeader,
    fqdn::{EVENT_LEARNED, FqdnEntry, LEARNED_EVENT_VERSION, LearnedAnswer, LearnedEvent, status},
};

use super::{Record, decode};
use crate::fqdn::names::key_name;

impl Record for LearnedEvent {
    const KINDS: &'static [u16] = &[EVENT_LEARNED];
    const VERSION: u16 = LEARNED_EVENT_VERSION;
    fn header(&self) -> &EventHeader {
        &self.header
    }
}

/// One learned DNS response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedView {
    /// The question name.
    pub name: String,
    /// Rule slots the question matched.
    pub rules: u64,
    pub answers: Vec<AnswerView>,
}

/// One A/AAAA answer of a [`LearnedView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerView {
    /// The address (IPv4 also for mapped and NAT64 AAAA answers, as the kernel stores them).
    pub ip: IpAddr,
    /// The learned-address map was full: the answer was not stored.
    pub map_full: bool,
    /// The entry the kernel wrote for `ip`.
    pub entry: FqdnEntry,
}

impl LearnedView {
    pub fn new(ev: &LearnedEvent) -> Self {
        let count = (ev.count as usize).min(ev.answers.len());
        Self {
            name: key_name(&ev.name),
            rules: ev.rules,
            answers: ev.answers[..count].iter().map(AnswerView::new).collect(),
        }
    }
}

impl AnswerView {
    fn new(a: &LearnedAnswer) -> Self {
        let ip = if a.v4 != 0 {
            IpAddr::from(a.addr[0].to_ne_bytes())
        } else {
            let mut b = [0u8; 16];
            for (chunk, w) in b.chunks_exact_mut(4).zip(a.addr) {
                chunk.copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::from(b)
        };
        Self {
            ip,
            map_full: a.status == u32::from(status::MAP_FULL),
            entry: FqdnEntry {
                expires_ns: a.entry_expires_ns,
                rules: a.entry_rules,
            },
        }
    }
}

/// Every queued learned event that decodes (a record of another kind or version is skipped).
pub fn read_all(ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> Vec<LearnedView> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        if let Ok(ev) = decode::<LearnedEvent>(&item) {
            out.push(LearnedView::new(&ev));
        }
    }
    out
}
