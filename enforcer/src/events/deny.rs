//! Deny events: what one JSON line on stdout says about a denied (or, in audit mode, would-be
//! denied) call, and the policies that name its rule.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use enforcer_common::{DenyEvent, event_kind, hook, rule_id};
use serde::Serialize;

use crate::{
    kernel::comm_text,
    policy::{Policy, normalize_addr},
};

/// The names addresses were recently answered for by DNS (the FQDN agent keeps them).
pub trait AddressNames: Send + Sync {
    /// The allowlisted name `ip` was recently answered for, if any.
    fn name_of(&self, ip: IpAddr) -> Option<String>;
}

/// The policies events may refer to, by generation (the running one and the ones before it
/// whose events may still be queued). A superseded policy is kept only for
/// [`RuleBook::RETAIN`] after the flip: the agent drains the ring far more often than that, and
/// a large policy (10^5 rules, ~14 MiB) is not kept alive by the events it can no longer get.
#[derive(Default)]
pub struct RuleBook {
    /// Each policy with the time it was superseded (`None` for the running one).
    by_generation: BTreeMap<u32, (Arc<Policy>, Option<Instant>)>,
    /// Recently answered names of addresses (while the FQDN agent runs).
    names: Option<Arc<dyn AddressNames>>,
}

impl RuleBook {
    const KEEP: usize = 4;
    /// How long events of a superseded generation can still be named.
    pub const RETAIN: Duration = Duration::from_secs(2);

    pub fn insert(&mut self, generation: u32, policy: Arc<Policy>) {
        let now = Instant::now();
        for (_, superseded) in self.by_generation.values_mut() {
            superseded.get_or_insert(now);
        }
        self.by_generation.insert(generation, (policy, None));
        while self.by_generation.len() > Self::KEEP {
            self.by_generation.pop_first();
        }
    }

    /// Forgets the policies superseded more than [`Self::RETAIN`] before `now`.
    pub fn prune(&mut self, now: Instant) {
        self.by_generation.retain(|_, (_, superseded)| {
            superseded.is_none_or(|at| now.saturating_duration_since(at) < Self::RETAIN)
        });
    }

    /// The generations whose rules events can still name, oldest first.
    pub fn generations(&self) -> Vec<u32> {
        self.by_generation.keys().copied().collect()
    }

    /// Lets deny events name the FQDN their address was recently answered for.
    pub fn set_names(&mut self, names: Arc<dyn AddressNames>) {
        self.names = Some(names);
    }

    /// The name `ip` was recently answered for, if any.
    pub fn fqdn_of(&self, ip: IpAddr) -> Option<String> {
        self.names.as_ref()?.name_of(ip)
    }

    /// The words naming `rule` of `generation`'s policy (FQDN rules follow the CIDR rules).
    pub fn describe(&self, generation: u32, rule: u32) -> String {
        if let Some(fixed) = rule_id::fixed(rule) {
            return fixed.to_owned();
        }
        let policy = self.by_generation.get(&generation).map(|(p, _)| p);
        let cidr = policy
            .and_then(|p| p.rules.get(rule as usize))
            .map(ToString::to_string);
        let fqdn = || {
            let p = policy?;
            p.fqdns
                .get((rule as usize).checked_sub(p.rules.len())?)
                .map(ToString::to_string)
        };
        cidr.or_else(fqdn)
            .unwrap_or_else(|| format!("rule #{rule} of policy generation {generation}"))
    }
}

/// What one deny line says, field by field in the order of the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DenyView {
    /// `connect_denied` (`would_deny` in audit mode); for a socket or socket option refused at
    /// `sock_create` or `setsockopt`, `socket_refused` (`would_refuse`).
    pub event: &'static str,
    /// The policy target the task belongs to.
    pub target: String,
    pub mode: &'static str,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub hook: &'static str,
    pub family: &'static str,
    pub protocol: String,
    /// The address as the caller gave it.
    pub dst_ip: IpAddr,
    /// The address the verdict was taken on (IPv4 for mapped and NAT64 IPv6).
    pub decided_as: IpAddr,
    pub dst_port: u16,
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<u32>,
    pub generation: u32,
    /// The allowlisted name the address was recently answered for (its answer expired, it is
    /// used on another port, or a block rule caught a rebinding answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<String>,
    /// How many denied calls the line stands for: 1 for a call written when it happened; on
    /// the line closing an aggregation window, the identical calls folded into it (see
    /// [`super::aggregate`]).
    pub count: u64,
    /// Only on the line closing an aggregation window: the window's length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
}

impl DenyView {
    /// The view of `ev`; `target_of` names the target of a task from its cgroup id and comm.
    pub fn new(
        ev: &DenyEvent,
        rules: &RuleBook,
        target_of: impl FnOnce(u64, &str) -> String,
    ) -> Self {
        let audit = ev.header.kind == event_kind::WOULD_DENY;
        let dst_ip = if ev.family == libc::AF_INET as u16 {
            let mut a = [0u8; 4];
            a.copy_from_slice(&ev.dst_addr[..4]);
            IpAddr::V4(Ipv4Addr::from(a))
        } else {
            IpAddr::V6(Ipv6Addr::from(ev.dst_addr))
        };
        let decided_as = normalize_addr(dst_ip);
        let comm = comm_text(&ev.comm);
        Self {
            event: event_name(ev.hook, audit),
            target: target_of(ev.header.cgroup_id, &comm),
            mode: if audit { "audit" } else { "enforce" },
            pid: ev.tgid,
            tid: ev.tid,
            uid: ev.uid,
            gid: ev.gid,
            comm,
            cgroup_id: ev.header.cgroup_id,
            hook: hook::name(ev.hook).unwrap_or("unknown"),
            family: if dst_ip.is_ipv4() { "ipv4" } else { "ipv6" },
            protocol: protocol_name(ev.protocol),
            dst_ip,
            decided_as,
            dst_port: ev.dst_port,
            rule: rules.describe(ev.generation, ev.rule_id),
            rule_id: rule_id::fixed(ev.rule_id).is_none().then_some(ev.rule_id),
            generation: ev.generation,
            fqdn: rules.fqdn_of(decided_as),
            count: 1,
            window_ms: None,
        }
    }
}

/// The line written when the event ring buffer was full and events were lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LostView {
    /// Always `events_lost`.
    pub event: &'static str,
    /// Lost since the last such line.
    pub lost: u64,
    /// Lost since the maps were created.
    pub lost_total: u64,
}

impl LostView {
    pub fn new(lost: u64, lost_total: u64) -> Self {
        Self {
            event: "events_lost",
            lost,
            lost_total,
        }
    }
}

/// The line's `event`: a refused socket or option is not a denied call to an address.
fn event_name(h: u8, audit: bool) -> &'static str {
    let refusal = h == hook::SOCK_CREATE || h == hook::SETSOCKOPT;
    match (refusal, audit) {
        (false, false) => "connect_denied",
        (false, true) => "would_deny",
        (true, false) => "socket_refused",
        (true, true) => "would_refuse",
    }
}

fn protocol_name(p: u8) -> String {
    match p {
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        1 => "icmp".to_owned(),
        58 => "icmpv6".to_owned(),
        132 => "sctp".to_owned(),
        136 => "udplite".to_owned(),
        n => n.to_string(),
    }
}
