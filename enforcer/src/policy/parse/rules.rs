//! The `block` and `allow` entries: CIDRs and presets, ports, protocols and `fqdn` names.

use std::net::IpAddr;

use enforcer_common::proto;
use ipnet::IpNet;

use super::{
    ALLOW_EXPECTED, BLOCK_EXPECTED, Cx, ENTRY_KEYS, Field, FqdnRule, PORT_EXPECTED, Policy,
    PolicyError, PortRange, Problem, Rule, RuleAction, RuleSource, merge_port_ranges,
    normalize_net, presets,
};
use crate::yaml::{Kind, Node};

impl Cx<'_> {
    /// One `block` or `allow` entry: its rules are appended to `policy`.
    pub(super) fn rule_entry(
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

    pub(super) fn cidr(&self, node: &Node) -> Result<IpNet, PolicyError> {
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

    pub(super) fn ports(&self, node: &Node) -> Result<Vec<PortRange>, PolicyError> {
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

    pub(super) fn port_range(&self, node: &Node) -> Result<PortRange, PolicyError> {
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
    pub(super) fn port_text(&self, node: &Node, text: &str) -> Result<Option<u16>, PolicyError> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(None);
        }
        let value = text.parse::<i128>().unwrap_or(i128::MAX);
        self.port_number(node, value, text).map(Some)
    }

    pub(super) fn port_number(
        &self,
        node: &Node,
        value: i128,
        text: &str,
    ) -> Result<u16, PolicyError> {
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

    pub(super) fn protocols(&self, node: &Node) -> Result<u8, PolicyError> {
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
pub(in crate::policy) fn parse_fqdn(value: &str) -> Result<(String, bool), String> {
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
