//! The policy: what the YAML file says, validated once into plain types.
//!
//! [`parse_policy`] turns the file's text into a [`Policy`] or a [`PolicyError`] whose
//! `Display` is `file:line:column: sentence`. Nothing downstream re-validates: rule CIDRs are
//! normalised (mapped and NAT64 IPv6 ranges become IPv4), port lists are sorted and merged,
//! presets are expanded into one [`Rule`] per range. A rule's index in [`Policy::rules`] is
//! its id in the kernel maps and in events.

pub mod api;
mod error;
mod integrity;
pub mod lint;
mod parse;
mod presets;
pub mod targets;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use enforcer_common::{action, mode, proto, rule_id, verdict};
use ipnet::{IpNet, Ipv4Net};

pub use error::{PolicyError, Problem};
pub use integrity::{
    ApiSettings, BasicAuth, EffectSettings, IntegritySettings, NotifyUrl, Selector, TlsSettings,
};
pub use presets::{PRESETS_VERSION, Preset, PresetEntry, preset, presets, render_presets};

/// `mode:` — whether a deny verdict is enforced or only logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }

    /// The [`enforcer_common::mode`] code.
    pub fn code(self) -> u32 {
        match self {
            Mode::Enforce => mode::ENFORCE,
            Mode::Audit => mode::AUDIT,
        }
    }
}

/// `default:` — the verdict when no rule decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultVerdict {
    Allow,
    Deny,
}

impl DefaultVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultVerdict::Allow => "allow",
            DefaultVerdict::Deny => "deny",
        }
    }

    /// The [`enforcer_common::verdict`] code.
    pub fn code(self) -> u32 {
        match self {
            DefaultVerdict::Allow => verdict::ALLOW,
            DefaultVerdict::Deny => verdict::DENY,
        }
    }
}

/// Which list a rule came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    Allow,
    Block,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Allow => "allow",
            RuleAction::Block => "block",
        }
    }

    /// The [`enforcer_common::action`] code.
    pub fn code(self) -> u8 {
        match self {
            RuleAction::Allow => action::ALLOW,
            RuleAction::Block => action::BLOCK,
        }
    }
}

/// An inclusive port range; a single port is `lo == hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// Every port, including 0 (what a rule without `ports` matches).
    pub const ALL: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };

    pub const fn single(port: u16) -> Self {
        PortRange { lo: port, hi: port }
    }

    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Sorts port ranges and merges overlapping or adjacent ones.
pub fn merge_port_ranges(ranges: &[PortRange]) -> Vec<PortRange> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if r.lo as u32 <= last.hi as u32 + 1 => last.hi = last.hi.max(r.hi),
            _ => out.push(r),
        }
    }
    out
}

/// Where something is in a policy file (1-based line and column, in characters).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// The name the file was loaded under (its path, or `<built-in default>`), shared by the
    /// locations of one file: a policy of 10^5 rules keeps one copy, not 10^5.
    pub file: std::sync::Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Where a rule's range came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleSource {
    Cidr,
    Preset(&'static str),
    /// Derived by the agent from a running Alertmanager (`alertmanager:` settings), not
    /// written in the file: `pid` is the process it was read from.
    Auto {
        kind: AutoKind,
        pid: u32,
    },
}

/// What an automatic rule lets a running Alertmanager reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AutoKind {
    /// A `nameserver` of the process's own `/etc/resolv.conf`, on port 53.
    ResolvConf,
    /// A literal address of a `--cluster.peer` flag, on the peer's port.
    ClusterPeer,
}

impl AutoKind {
    /// `resolv.conf` / `cluster.peer`, as in `allow auto:resolv.conf 10.96.0.10/32 ...`.
    pub fn as_str(self) -> &'static str {
        match self {
            AutoKind::ResolvConf => "resolv.conf",
            AutoKind::ClusterPeer => "cluster.peer",
        }
    }
}

/// `alertmanager:` — whether the agent allows what a running Alertmanager target itself
/// needs (both default to true).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertmanagerSettings {
    /// `allow_own_dns`: the name servers of the target's own resolv.conf, port 53, TCP+UDP.
    pub allow_own_dns: bool,
    /// `allow_cluster_peers`: the literal addresses of its `--cluster.peer` flags, on their
    /// ports, TCP+UDP.
    pub allow_cluster_peers: bool,
}

impl Default for AlertmanagerSettings {
    fn default() -> Self {
        Self {
            allow_own_dns: true,
            allow_cluster_peers: true,
        }
    }
}

/// One CIDR with its ports and protocols. A preset entry expands into one rule per range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub action: RuleAction,
    /// Normalised ([`normalize_net`]): IPv6 ranges embedding IPv4 at a fixed place are IPv4.
    pub net: IpNet,
    /// Sorted and merged; empty means every port.
    pub ports: Vec<PortRange>,
    /// [`enforcer_common::proto`] mask; [`proto::ALL`] when the file gives no `protocols`.
    pub protocols: u8,
    pub source: RuleSource,
    /// The list entry the rule comes from.
    pub location: Location,
}

impl Rule {
    /// The one-line description used in `enforcer check` and in JSON events, e.g.
    /// `allow cidr 10.96.0.10/32 ports 53 protocols tcp,udp`.
    pub fn describe(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.action.as_str())?;
        match self.source {
            RuleSource::Cidr => write!(f, "cidr {}", self.net)?,
            RuleSource::Preset(name) => write!(f, "preset:{name} {}", self.net)?,
            RuleSource::Auto { kind, .. } => write!(f, "auto:{} {}", kind.as_str(), self.net)?,
        }
        write_ports_protocols(f, &self.ports, self.protocols)?;
        if let RuleSource::Auto { pid, .. } = self.source {
            write!(f, " (pid {pid})")?;
        }
        Ok(())
    }
}

/// An allowlisted DNS name. Compiles to nothing in the LPM maps; the agent resolves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FqdnRule {
    /// Lower case, without a trailing dot and without the `*.` of a wildcard.
    pub name: String,
    /// `*.name`: every name below `name` (not `name` itself).
    pub wildcard: bool,
    /// Sorted and merged; empty means every port.
    pub ports: Vec<PortRange>,
    /// [`enforcer_common::proto`] mask.
    pub protocols: u8,
    pub location: Location,
}

impl FqdnRule {
    /// Whether the rule covers `name` (lower case, no trailing dot): an exact rule only its
    /// name, a `*.name` rule every name one or more labels below `name`, never `name` itself.
    pub fn covers(&self, name: &str) -> bool {
        if self.wildcard {
            name.strip_suffix(self.name.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            name == self.name
        }
    }
}

impl fmt::Display for FqdnRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let star = if self.wildcard { "*." } else { "" };
        write!(f, "allow fqdn {star}{}", self.name)?;
        write_ports_protocols(f, &self.ports, self.protocols)
    }
}

fn write_ports_protocols(
    f: &mut fmt::Formatter<'_>,
    ports: &[PortRange],
    protocols: u8,
) -> fmt::Result {
    if !ports.is_empty() {
        f.write_str(" ports ")?;
        for (i, r) in ports.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
    }
    if protocols & proto::ALL != proto::ALL {
        f.write_str(" protocols ")?;
        let names = [
            (proto::TCP, "tcp"),
            (proto::UDP, "udp"),
            (proto::OTHER, "other"),
        ];
        let mut first = true;
        for (bit, name) in names {
            if protocols & bit != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
    }
    Ok(())
}

/// A process set the policy applies to (`targets:`), kept as written for the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `cgroup: PATH`
    Cgroup { path: String, location: Location },
    /// `systemd_unit: NAME`
    SystemdUnit { name: String, location: Location },
    /// `process: [NAME, ...]` (executable names)
    Process {
        names: Vec<String>,
        location: Location,
    },
}

/// A validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The name the policy was loaded under (file path or `<built-in default>`).
    pub source: String,
    pub mode: Mode,
    pub default: DefaultVerdict,
    /// Rule id = index.
    pub rules: Vec<Rule>,
    pub fqdns: Vec<FqdnRule>,
    pub targets: Vec<Target>,
    /// `alertmanager:` — automatic rules for what Alertmanager itself needs.
    pub alertmanager: AlertmanagerSettings,
    /// `dns:` — how the agent resolves the `fqdn` rules.
    pub dns: DnsSettings,
    /// `integrity:` — the watchdog of the Alertmanager targets' APIs.
    pub integrity: IntegritySettings,
    /// `api:` — the API guard (ingress rules); `None` when the section is absent.
    pub api: Option<api::ApiGuard>,
}

/// `dns:` — the agent's resolution of allowlisted names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// Name servers (`servers:`); empty = the system's resolver configuration.
    pub servers: Vec<std::net::SocketAddr>,
    /// How long an address stays allowed after its TTL ran out (it left the answers, or the
    /// name servers stopped answering).
    pub grace_period: std::time::Duration,
    /// Addresses kept per name; the oldest beyond this are dropped (and counted).
    pub max_addresses_per_name: usize,
    /// Addresses the agent keeps over all names.
    pub max_addresses: usize,
}

impl DnsSettings {
    pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(300);
    pub const DEFAULT_MAX_PER_NAME: usize = 64;
    pub const DEFAULT_MAX_ADDRESSES: usize = 4096;
    /// Upper bound of `max_addresses` (the capacity of the agent's kernel maps).
    pub const MAX_ADDRESSES_LIMIT: usize = enforcer_common::fqdn::RESOLVED_CAPACITY as usize;
    /// Upper bound of `grace_period`.
    pub const MAX_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            grace_period: Self::DEFAULT_GRACE,
            max_addresses_per_name: Self::DEFAULT_MAX_PER_NAME,
            max_addresses: Self::DEFAULT_MAX_ADDRESSES,
        }
    }
}

impl Policy {
    /// The rule an event's `rule_id` names.
    pub fn rule(&self, id: u32) -> Option<&Rule> {
        self.rules.get(usize::try_from(id).ok()?)
    }

    /// What an event's `rule_id` means, for logs: the rule's description,
    /// `default deny`/`default allow` for [`rule_id::DEFAULT`], `unknown rule N` otherwise.
    pub fn describe_rule(&self, id: u32) -> String {
        if id == rule_id::DEFAULT {
            return format!("default {}", self.default.as_str());
        }
        match self.rule(id) {
            Some(rule) => rule.describe(),
            None => format!("unknown rule {id}"),
        }
    }
}

/// Parses and validates a policy; `source_name` is what locations in errors and rules name.
pub fn parse_policy(text: &str, source_name: &str) -> Result<Policy, PolicyError> {
    parse::parse(text, source_name)
}

/// The largest policy file read (twice what two full maps of /32 lines take).
pub const MAX_POLICY_BYTES: u64 = 32 << 20;

/// Reads and parses a policy file: a regular file of at most [`MAX_POLICY_BYTES`], opened
/// without blocking.
pub fn load_policy(path: &Path) -> Result<Policy, PolicyError> {
    let name = path.display().to_string();
    let bytes =
        crate::input::read_capped(path, MAX_POLICY_BYTES, "a policy file").map_err(|source| {
            PolicyError::Read {
                path: name.clone(),
                source,
            }
        })?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let (line, column) = crate::input::position(e.as_bytes(), e.utf8_error().valid_up_to());
            return Err(PolicyError::Invalid {
                location: Location {
                    file: name.into(),
                    line,
                    column,
                },
                problem: Problem::NotUtf8,
            });
        }
    };
    parse_policy(&text, &name)
}

/// The name [`default_policy`] reports in locations.
pub const DEFAULT_POLICY_NAME: &str = "<built-in default>";

/// The embedded YAML of [`default_policy`].
pub const DEFAULT_POLICY_YAML: &str = include_str!("default.yaml");

/// The embedded default: enforce, default allow, block the `private` and `cloud-metadata`
/// presets.
pub fn default_policy() -> Policy {
    // The embedded file is checked by a unit test; failing here is a build defect.
    parse_policy(DEFAULT_POLICY_YAML, DEFAULT_POLICY_NAME)
        .expect("embedded default policy is valid")
}

/// The address the kernel decides: `::ffff:a.b.c.d`, `::ffff:0:a.b.c.d`, `64:ff9b::a.b.c.d`
/// and `::a.b.c.d` (not `::`, `::1`) become `a.b.c.d`, everything else is unchanged.
pub fn normalize_addr(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => IpAddr::V4(v4),
            None => addr,
        },
    }
}

/// A CIDR as the kernel sees it: an IPv6 range inside `::ffff:0:0/96`, `::ffff:0:0:0/96`,
/// `64:ff9b::/96` or `::/96` (prefix length at least 96) becomes the IPv4 range it embeds.
/// A range of `::/96` that holds `::` or `::1` stays IPv6 (those two are not IPv4 spellings,
/// so it matches only them: its other addresses are decided as IPv4). Host bits are cleared.
pub fn normalize_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V4(v4) => IpNet::V4(v4.trunc()),
        IpNet::V6(v6) => {
            let v6 = v6.trunc();
            match embedded_ipv4(v6.network()) {
                Some(v4) if v6.prefix_len() >= 96 => {
                    // prefix_len - 96 <= 32, so this cannot fail.
                    Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(IpNet::V6(v6), IpNet::V4)
                }
                _ => IpNet::V6(v6),
            }
        }
    }
}

/// The IPv4 address an IPv6 address is decided as (mapped, SIIT, NAT64 well-known prefix,
/// IPv4-compatible except `::` and `::1`): the kernel's own rule,
/// [`enforcer_common::embedded_ipv4`].
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    enforcer_common::embedded_ipv4_octets(v6.octets()).map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests;
