//! Validation of the YAML tree into a [`Policy`]; every error points at a key or value.

use std::net::IpAddr;

use enforcer_common::proto;
use ipnet::IpNet;
use serde_saphyr::DuplicateKeyPolicy;

use crate::yaml::{self, Kind, Node};
mod alertmanager;
mod api;
mod dns;
mod integrity;
mod prescan;
mod targets;

use super::{
    DefaultVerdict, DnsSettings, FqdnRule, Location, Mode, Policy, PolicyError, PortRange, Problem,
    Rule, RuleAction, RuleSource, Target, merge_port_ranges, normalize_net, presets,
};

const TOP_KEYS: &[&str] = &[
    "mode",
    "default",
    "block",
    "allow",
    "targets",
    "alertmanager",
    "dns",
    "integrity",
    "api",
];
const TOP_EXPECTED: &str =
    "mode, default, block, allow, targets, alertmanager, dns, integrity, api";
const NO_RULE_KEYS: &[&str] = &["targets", "alertmanager", "dns", "integrity", "api"];
const ENTRY_KEYS: &[&str] = &["cidr", "preset", "fqdn", "ports", "protocols"];
const BLOCK_EXPECTED: &str = "cidr, preset, ports, protocols";
const ALLOW_EXPECTED: &str = "cidr, preset, fqdn, ports, protocols";
const TARGET_KEYS: &[&str] = &["cgroup", "systemd_unit", "process"];
const TARGET_EXPECTED: &str = "cgroup, systemd_unit, process";
const PORT_EXPECTED: &str = "a number 1..=65535 or a range like \"8000-8080\"";

/// How a policy's YAML is read.
const YAML: yaml::Settings = yaml::Settings {
    // The validator reports duplicates itself, with both positions.
    duplicate_keys: DuplicateKeyPolicy::LastWins,
    // `yes`/`on` stay strings, so `mode: yes` is "unknown mode" rather than a type error.
    strict_booleans: true,
    // A policy needs four levels.
    max_depth: 32,
    // Room for large generated blocklists (a `cidr` entry is three nodes, four events).
    max_nodes: Some(2_000_000),
    max_events: Some(5_000_000),
    rewords: &[
        (
            "multiple YAML documents",
            "a policy is one YAML document; remove the `---` separator",
        ),
        (
            "Recursive references",
            "an alias refers to a node that contains it",
        ),
        (
            "more than 2000000 YAML nodes",
            "policy too large (over 2,000,000 YAML nodes); the kernel maps hold 262,144 \
             prefixes per family",
        ),
    ],
};

pub(super) fn parse(text: &str, file: &str) -> Result<Policy, PolicyError> {
    prescan::check(text, file)?;
    let cx = Cx {
        text,
        file,
        shared: std::sync::Arc::from(file),
    };
    let root = yaml::parse(text, &YAML).map_err(|e| PolicyError::Invalid {
        location: cx.location(e.line, e.column),
        problem: Problem::Yaml { message: e.message },
    })?;
    if let Kind::Null = root.kind {
        return Err(PolicyError::Invalid {
            location: cx.location(1, 1),
            problem: Problem::Empty,
        });
    }
    let fields = cx.fields(&root, "the policy", TOP_KEYS, TOP_EXPECTED)?;
    if fields.iter().all(|f| NO_RULE_KEYS.contains(&f.name)) {
        return Err(cx.err(&root, Problem::Empty));
    }
    let mut policy = Policy {
        source: file.to_owned(),
        mode: Mode::Enforce,
        default: DefaultVerdict::Allow,
        rules: Vec::new(),
        fqdns: Vec::new(),
        targets: Vec::new(),
        alertmanager: Default::default(),
        dns: DnsSettings::default(),
        integrity: super::IntegritySettings::with_defaults(file),
        api: None,
    };
    let mut api_node = None; // `api:` defaults to the policy's mode, which may come later
    for field in fields {
        let value = field.value;
        match field.name {
            "mode" => {
                policy.mode = match cx.text(value, "mode", "enforce or audit")?.as_str() {
                    "enforce" => Mode::Enforce,
                    "audit" => Mode::Audit,
                    other => {
                        return Err(cx.err(
                            value,
                            Problem::UnknownMode {
                                value: other.to_owned(),
                            },
                        ));
                    }
                }
            }
            "default" => {
                policy.default = match cx.text(value, "default", "allow or deny")?.as_str() {
                    "allow" => DefaultVerdict::Allow,
                    "deny" => DefaultVerdict::Deny,
                    other => {
                        return Err(cx.err(
                            value,
                            Problem::UnknownDefault {
                                value: other.to_owned(),
                            },
                        ));
                    }
                }
            }
            name @ ("block" | "allow") => {
                let action = [RuleAction::Allow, RuleAction::Block][usize::from(name == "block")];
                let entries = cx.entries(value, name)?;
                policy.rules.reserve(entries.len());
                for entry in entries {
                    cx.rule_entry(entry, action, &mut policy)?;
                }
            }
            "alertmanager" => policy.alertmanager = cx.alertmanager(value)?,
            "dns" => policy.dns = cx.dns(value)?,
            "integrity" => policy.integrity = cx.integrity(value)?,
            "api" => api_node = Some(value),
            _ => {
                for entry in cx.entries(value, "targets")? {
                    policy.targets.push(cx.target(entry)?);
                }
            }
        }
    }
    policy.api = api_node.map(|n| cx.api_guard(n, policy.mode)).transpose()?;
    Ok(policy)
}

/// A recognised key of a mapping.
struct Field<'n> {
    name: &'static str,
    key: &'n Node,
    value: &'n Node,
}

/// The document being validated.
struct Cx<'a> {
    text: &'a str,
    file: &'a str,
    /// `file`, shared by every location (one allocation, not one per rule).
    shared: std::sync::Arc<str>,
}

impl Cx<'_> {
    fn location(&self, line: usize, column: usize) -> Location {
        Location {
            file: self.shared.clone(),
            line,
            column,
        }
    }

    fn at(&self, node: &Node) -> Location {
        self.location(node.line, node.column)
    }

    fn err(&self, node: &Node, problem: Problem) -> PolicyError {
        PolicyError::Invalid {
            location: self.at(node),
            problem,
        }
    }

    fn wrong_type(&self, node: &Node, what: &str, expected: &'static str) -> PolicyError {
        let what = what.to_owned();
        self.err(
            node,
            Problem::WrongType {
                what,
                expected,
                found: node.found(),
            },
        )
    }

    /// The node's source text (for plain scalars YAML typed as numbers).
    fn source(&self, node: &Node) -> Option<&str> {
        node.source(self.text).filter(|s| !s.starts_with('*'))
    }

    /// A scalar as text, whatever YAML type it has (`mode: 1` is the text "1").
    fn scalar_text(&self, node: &Node) -> Option<String> {
        match &node.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Int(v) => Some(v.to_string()),
            Kind::Bool(b) => Some(b.to_string()),
            Kind::Float(f) => Some(
                self.source(node)
                    .map_or_else(|| f.to_string(), str::to_owned),
            ),
            Kind::Null | Kind::Seq(_) | Kind::Map(_) => None,
        }
    }

    fn text(&self, node: &Node, what: &str, expected: &'static str) -> Result<String, PolicyError> {
        self.scalar_text(node)
            .ok_or_else(|| self.wrong_type(node, what, expected))
    }

    /// The keys of a mapping, checked against `keys`; duplicates and unknown keys are errors.
    fn fields<'n>(
        &self,
        node: &'n Node,
        what: &str,
        keys: &[&'static str],
        expected: &'static str,
    ) -> Result<Vec<Field<'n>>, PolicyError> {
        let Kind::Map(entries) = &node.kind else {
            return Err(self.wrong_type(node, what, "a mapping"));
        };
        let mut fields: Vec<Field<'n>> = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let text = self.text(key, "a key", "a name")?;
            let Some(&name) = keys.iter().find(|k| **k == text) else {
                return Err(self.err(
                    key,
                    Problem::UnknownKey {
                        key: text,
                        expected,
                    },
                ));
            };
            if let Some(first) = fields.iter().find(|f| f.name == name) {
                let (first_line, first_column) = (first.key.line, first.key.column);
                return Err(self.err(
                    key,
                    Problem::DuplicateKey {
                        key: text,
                        first_line,
                        first_column,
                    },
                ));
            }
            fields.push(Field { name, key, value });
        }
        Ok(fields)
    }

    /// The entries of a top-level list (`block`, `allow`, `targets`); empty when null.
    fn entries<'n>(&self, node: &'n Node, what: &str) -> Result<&'n [Node], PolicyError> {
        match &node.kind {
            Kind::Null => Ok(&[]),
            Kind::Seq(items) => Ok(items),
            _ => Err(self.wrong_type(node, what, "a list of entries")),
        }
    }

    /// A list value; a single scalar counts as a one-element list (`ports: 443`).
    fn list<'n>(&self, node: &'n Node, what: &str) -> Result<Vec<&'n Node>, PolicyError> {
        match &node.kind {
            Kind::Seq(items) => Ok(items.iter().collect()),
            Kind::Null | Kind::Map(_) => Err(self.wrong_type(node, what, "a list")),
            _ => Ok(vec![node]),
        }
    }

    /// One `block` or `allow` entry: its rules are appended to `policy`.
    fn rule_entry(
        &self,
        entry: &Node,
        action: RuleAction,
        policy: &mut Policy,
    ) -> Result<(), PolicyError> {
        let (what, expected, missing) = match action {
            RuleAction::Block => ("a block entry", BLOCK_EXPECTED, "cidr, preset"),
            RuleAction::Allow => ("an allow entry", ALLOW_EXPECTED, "cidr, preset, fqdn"),
        };
        if !matches!(entry.kind, Kind::Map(_)) {
            return Err(self.wrong_type(entry, what, "a mapping such as `cidr: 10.0.0.0/8`"));
        }
        let mut target: Option<Field<'_>> = None;
        let mut ports = Vec::new();
        let mut protocols = proto::ALL;
        for field in self.fields(entry, what, ENTRY_KEYS, expected)? {
            match field.name {
                "ports" => ports = self.ports(field.value)?,
                "protocols" => protocols = self.protocols(field.value)?,
                name => {
                    if name == "fqdn" && action == RuleAction::Block {
                        return Err(self.err(field.key, Problem::FqdnInBlock));
                    }
                    if let Some(first) = &target {
                        let problem = Problem::ConflictingKeys {
                            first: first.name,
                            second: name,
                        };
                        return Err(self.err(field.key, problem));
                    }
                    target = Some(field);
                }
            }
        }
        let Some(target) = target else {
            return Err(self.err(entry, Problem::MissingKey { expected: missing }));
        };
        let location = self.at(entry);
        match target.name {
            "cidr" => {
                let net = self.cidr(target.value)?;
                let source = RuleSource::Cidr;
                policy.rules.push(Rule {
                    action,
                    net,
                    ports,
                    protocols,
                    source,
                    location,
                });
            }
            "preset" => {
                let name = self.text(target.value, "preset", "a preset name")?;
                let Some(preset) = presets::preset(&name) else {
                    let known = presets::presets()
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(self.err(target.value, Problem::UnknownPreset { name, known }));
                };
                for e in &preset.entries {
                    // A port list on the entry narrows the preset's own ports.
                    let Some(ports) = intersect_ports(&e.ports, &ports) else {
                        continue;
                    };
                    policy.rules.push(Rule {
                        action,
                        net: normalize_net(e.net),
                        ports,
                        protocols,
                        source: RuleSource::Preset(preset.name),
                        location: location.clone(),
                    });
                }
            }
            _ => {
                let value = self.text(target.value, "fqdn", "a domain name")?;
                let (name, wildcard) = parse_fqdn(&value).map_err(|reason| {
                    self.err(
                        target.value,
                        Problem::InvalidFqdn {
                            value: value.clone(),
                            reason,
                        },
                    )
                })?;
                policy.fqdns.push(FqdnRule {
                    name,
                    wildcard,
                    ports,
                    protocols,
                    location,
                });
            }
        }
        Ok(())
    }

    fn cidr(&self, node: &Node) -> Result<IpNet, PolicyError> {
        let value = self.text(node, "cidr", "an address range such as 10.0.0.0/8")?;
        let invalid = |reason: String| {
            self.err(
                node,
                Problem::InvalidCidr {
                    value: value.clone(),
                    reason,
                },
            )
        };
        let trimmed = value.trim();
        let (addr_text, len_text) = match trimmed.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (trimmed, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            invalid(format!(
                "\"{}\" is not an IPv4 or IPv6 address",
                crate::input::cut(addr_text)
            ))
        })?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => max,
            Some(text) => {
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid(format!(
                        "prefix length \"{}\" is not a number 0..={max}",
                        crate::input::cut(text)
                    )));
                }
                match text.parse::<u8>() {
                    Ok(len) if len <= max => len,
                    _ => {
                        return Err(invalid(format!(
                            "prefix length {} is longer than {max}",
                            crate::input::cut(text)
                        )));
                    }
                }
            }
        };
        let net = IpNet::new(addr, len)
            .map_err(|_| invalid(format!("prefix length {len} is longer than {max}")))?;
        if net.trunc() != net {
            return Err(self.err(
                node,
                Problem::HostBitsSet {
                    value,
                    suggestion: net.trunc(),
                },
            ));
        }
        Ok(normalize_net(net))
    }

    fn ports(&self, node: &Node) -> Result<Vec<PortRange>, PolicyError> {
        let items = self.list(node, "ports")?;
        if items.is_empty() {
            return Err(self.err(
                node,
                Problem::EmptyList {
                    what: "ports",
                    item: "port",
                },
            ));
        }
        let ranges = items
            .into_iter()
            .map(|item| self.port_range(item))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(merge_port_ranges(&ranges))
    }

    fn port_range(&self, node: &Node) -> Result<PortRange, PolicyError> {
        let text = match &node.kind {
            Kind::Int(v) => {
                return self
                    .port_number(node, *v, &v.to_string())
                    .map(PortRange::single);
            }
            Kind::Str(_) | Kind::Float(_) => self.scalar_text(node).unwrap_or_default(),
            _ => return Err(self.wrong_type(node, "a port", PORT_EXPECTED)),
        };
        let invalid = || {
            self.err(
                node,
                Problem::InvalidPort {
                    value: text.clone(),
                },
            )
        };
        let trimmed = text.trim();
        if let Some(port) = self.port_text(node, trimmed)? {
            return Ok(PortRange::single(port));
        }
        let Some((lo, hi)) = trimmed.split_once('-') else {
            return Err(invalid());
        };
        let (Some(lo), Some(hi)) = (
            self.port_text(node, lo.trim())?,
            self.port_text(node, hi.trim())?,
        ) else {
            return Err(invalid());
        };
        if lo > hi {
            return Err(self.err(node, Problem::ReversedPortRange { lo, hi }));
        }
        Ok(PortRange { lo, hi })
    }

    /// `Some(port)` for a decimal number in range, `None` when `text` is not a number.
    fn port_text(&self, node: &Node, text: &str) -> Result<Option<u16>, PolicyError> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(None);
        }
        let value = text.parse::<i128>().unwrap_or(i128::MAX);
        self.port_number(node, value, text).map(Some)
    }

    fn port_number(&self, node: &Node, value: i128, text: &str) -> Result<u16, PolicyError> {
        match u16::try_from(value) {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(self.err(
                node,
                Problem::PortOutOfRange {
                    port: text.to_owned(),
                },
            )),
        }
    }

    fn protocols(&self, node: &Node) -> Result<u8, PolicyError> {
        let items = self.list(node, "protocols")?;
        if items.is_empty() {
            return Err(self.err(
                node,
                Problem::EmptyList {
                    what: "protocols",
                    item: "protocol",
                },
            ));
        }
        let mut mask = 0;
        for item in items {
            let value = self.text(item, "a protocol", "tcp or udp")?;
            mask |= match value.to_ascii_lowercase().as_str() {
                "tcp" => proto::TCP,
                "udp" => proto::UDP,
                _ => return Err(self.err(item, Problem::UnknownProtocol { value })),
            };
        }
        Ok(mask)
    }
}

/// The ports two lists both allow (an empty list allows every port); `None` when disjoint.
fn intersect_ports(a: &[PortRange], b: &[PortRange]) -> Option<Vec<PortRange>> {
    if a.is_empty() || b.is_empty() {
        return Some(if a.is_empty() { b.to_vec() } else { a.to_vec() });
    }
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let (lo, hi) = (x.lo.max(y.lo), x.hi.min(y.hi));
            if lo <= hi {
                out.push(PortRange { lo, hi });
            }
        }
    }
    (!out.is_empty()).then(|| merge_port_ranges(&out))
}

/// Checks a DNS name (`name`, `name.`, `*.name`); returns it lower-cased without the
/// trailing dot and the `*.`, and whether it was a wildcard.
pub(super) fn parse_fqdn(value: &str) -> Result<(String, bool), String> {
    let without_dot = value.strip_suffix('.').unwrap_or(value);
    let (wildcard, name) = match without_dot.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, without_dot),
    };
    if name.is_empty() {
        return Err("the name is empty".to_owned());
    }
    if without_dot.len() > 253 {
        return Err(format!("{} characters, more than 253", without_dot.len()));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err("this is an IP address; use `cidr`".to_owned());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a dot at the start)".to_owned());
        }
        if label.contains('*') {
            return Err(
                "`*` is only allowed as the whole first label, as in *.example.com".to_owned(),
            );
        }
        if label.len() > 63 {
            return Err(format!(
                "label \"{}\" is longer than 63 characters",
                crate::input::cut(label)
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "label \"{}\" may only contain letters, digits and '-'",
                crate::input::cut(label)
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "label \"{}\" starts or ends with '-'",
                crate::input::cut(label)
            ));
        }
    }
    Ok((name.to_ascii_lowercase(), wildcard))
}
