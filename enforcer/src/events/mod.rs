//! Decoding ring-buffer records into deny events and writing them as JSON lines.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use enforcer_common::{DenyEvent, EVENT_VERSION, event_kind, hook, rule_id};

use crate::policy::{Mode, Policy};

/// IPv4-mapped and NAT64 (64:ff9b::/96) IPv6 addresses stand for their IPv4 address (the
/// policy's [`normalize_addr`](crate::policy::normalize_addr), under the name the event and
/// FQDN code use).
use crate::policy::normalize_addr;

/// tracing target of the event lines; the logging setup sends exactly this target to stdout.
pub const TARGET: &str = "enforcer::events";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event record of {len} bytes is shorter than the {need}-byte event")]
    Short { len: usize, need: usize },
    #[error("event version {found}, this agent reads version {EVENT_VERSION}")]
    Version { found: u16 },
    #[error("unknown event kind {kind}")]
    Kind { kind: u16 },
    #[error("unknown hook code {hook}")]
    Hook { hook: u8 },
}

/// Reads one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<DenyEvent, DecodeError> {
    let need = std::mem::size_of::<DenyEvent>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked above; DenyEvent is plain integers, any bit pattern is valid.
    let ev: DenyEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    if ev.header.version != EVENT_VERSION {
        return Err(DecodeError::Version {
            found: ev.header.version,
        });
    }
    if !matches!(ev.header.kind, event_kind::DENIED | event_kind::WOULD_DENY) {
        return Err(DecodeError::Kind {
            kind: ev.header.kind,
        });
    }
    if hook::name(ev.hook).is_none() {
        return Err(DecodeError::Hook { hook: ev.hook });
    }
    Ok(ev)
}

/// The policies events may refer to, by generation (the running one and the ones before it
/// whose events may still be queued).
#[derive(Default)]
pub struct RuleBook {
    by_generation: BTreeMap<u32, Arc<Policy>>,
    /// Recently answered names of addresses (while the FQDN agent runs).
    fqdn: Option<Arc<crate::agent::fqdn::FqdnShared>>,
}

impl RuleBook {
    const KEEP: usize = 4;

    pub fn insert(&mut self, generation: u32, policy: Arc<Policy>) {
        self.by_generation.insert(generation, policy);
        while self.by_generation.len() > Self::KEEP {
            self.by_generation.pop_first();
        }
    }

    /// Lets deny events name the FQDN their address was recently answered for.
    pub fn set_fqdn(&mut self, shared: Arc<crate::agent::fqdn::FqdnShared>) {
        self.fqdn = Some(shared);
    }

    /// The name `ip` was recently answered for, if any.
    pub fn fqdn_of(&self, ip: IpAddr) -> Option<String> {
        self.fqdn.as_ref()?.name_of(ip)
    }

    /// The words naming `rule` of `generation`'s policy (FQDN rules follow the CIDR rules).
    pub fn describe(&self, generation: u32, rule: u32) -> String {
        if rule == rule_id::DEFAULT {
            return "default deny".to_owned();
        }
        let policy = self.by_generation.get(&generation);
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

    pub fn mode(&self, generation: u32) -> Option<Mode> {
        self.by_generation.get(&generation).map(|p| p.mode)
    }
}

/// What one JSON line says (the `#[repr(C)]` event stays free of formatting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyView {
    pub event: &'static str,
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
    pub rule_id: Option<u32>,
    pub generation: u32,
    /// The allowlisted name the address was recently answered for (its answer expired, it is
    /// used on another port, or a block rule caught a rebinding answer).
    pub fqdn: Option<String>,
}

impl DenyView {
    pub fn new(ev: &DenyEvent, rules: &RuleBook) -> Self {
        let audit = ev.header.kind == event_kind::WOULD_DENY;
        let dst_ip = if ev.family == libc::AF_INET as u16 {
            let mut a = [0u8; 4];
            a.copy_from_slice(&ev.dst_addr[..4]);
            IpAddr::V4(Ipv4Addr::from(a))
        } else {
            IpAddr::V6(Ipv6Addr::from(ev.dst_addr))
        };
        let decided_as = normalize_addr(dst_ip);
        Self {
            event: if audit {
                "would_deny"
            } else {
                "connect_denied"
            },
            mode: if audit { "audit" } else { "enforce" },
            pid: ev.tgid,
            tid: ev.tid,
            uid: ev.uid,
            gid: ev.gid,
            comm: crate::kernel::comm_text(&ev.comm),
            cgroup_id: ev.header.cgroup_id,
            hook: hook::name(ev.hook).unwrap_or("unknown"),
            family: if dst_ip.is_ipv4() { "ipv4" } else { "ipv6" },
            protocol: protocol_name(ev.protocol),
            dst_ip,
            decided_as,
            dst_port: ev.dst_port,
            rule: rules.describe(ev.generation, ev.rule_id),
            rule_id: (ev.rule_id != rule_id::DEFAULT).then_some(ev.rule_id),
            generation: ev.generation,
            fqdn: rules.fqdn_of(decided_as),
        }
    }

    /// Writes the line (target [`TARGET`], which goes to stdout as JSON); `enforced_target`
    /// names the policy target the task belongs to.
    pub fn log(&self, enforced_target: &str) {
        tracing::warn!(
            target: TARGET,
            event = self.event,
            target = enforced_target,
            mode = self.mode,
            pid = self.pid,
            tid = self.tid,
            uid = self.uid,
            gid = self.gid,
            comm = %self.comm,
            cgroup_id = self.cgroup_id,
            hook = self.hook,
            family = self.family,
            protocol = %self.protocol,
            dst_ip = %self.dst_ip,
            decided_as = %self.decided_as,
            dst_port = self.dst_port,
            rule = %self.rule,
            rule_id = self.rule_id,
            generation = self.generation,
            fqdn = self.fqdn.as_deref(),
        );
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
