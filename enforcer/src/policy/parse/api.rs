//! The `api:` section (see [`crate::policy::api`]).
use enforcer_common::proto;

use super::{Cx, Mode, PolicyError, Problem, Rule, RuleAction, RuleSource};
use crate::policy::api::{ApiGuard, CLUSTER_RULE_PORTS, MAX_PORTS, WEB_RULE_PORTS};
use crate::yaml::{Kind, Node};

const API_KEYS: &[&str] = &["mode", "ports", "allow", "cluster_ports", "cluster_allow"];
const API_EXPECTED: &str = "mode, ports, allow, cluster_ports, cluster_allow";
const API_ALLOW_KEYS: &[&str] = &["cidr"];

impl Cx<'_> {
    /// `policy_mode` is the policy's own `mode` (the section's default).
    pub(super) fn api_guard(
        &self,
        node: &Node,
        policy_mode: Mode,
    ) -> Result<ApiGuard, PolicyError> {
        let mut api = ApiGuard {
            mode: policy_mode,
            ports: Vec::new(),
            allow: None,
            cluster_ports: Vec::new(),
            cluster_allow: Vec::new(),
            location: self.at(node),
        };
        if let Kind::Null = node.kind {
            return Ok(api);
        }
        for field in self.fields(node, "api", API_KEYS, API_EXPECTED)? {
            let value = field.value;
            match field.name {
                "mode" => {
                    api.mode = match self.text(value, "mode", "enforce or audit")?.as_str() {
                        "enforce" => Mode::Enforce,
                        "audit" => Mode::Audit,
                        other => {
                            let value_text = other.to_owned();
                            return Err(self.err(value, Problem::UnknownMode { value: value_text }));
                        }
                    }
                }
                "ports" => api.ports = self.api_ports(value, "the number of api ports")?,
                "cluster_ports" => {
                    api.cluster_ports = self.api_ports(value, "the number of api cluster ports")?;
                }
                "cluster_allow" => {
                    let entries = self.entries(value, "cluster_allow")?;
                    if entries.is_empty() {
                        return Err(self.err(value, Problem::EmptyClusterAllow));
                    }
                    let mut rules = Vec::with_capacity(entries.len());
                    for entry in entries {
                        rules.push(self.api_allow(entry, true)?);
                    }
                    api.cluster_allow = rules;
                }
                _ => {
                    let entries = self.entries(value, "allow")?;
                    if entries.is_empty() {
                        return Err(self.err(
                            value,
                            Problem::EmptyList {
                                what: "allow",
                                item: "peer",
                            },
                        ));
                    }
                    let mut rules = Vec::with_capacity(entries.len());
                    for entry in entries {
                        rules.push(self.api_allow(entry, false)?);
                    }
                    api.allow = Some(rules);
                }
            }
        }
        Ok(api)
    }

    /// A port list of the section: every port of its ranges, sorted, unique, at most
    /// [`MAX_PORTS`].
    fn api_ports(&self, value: &Node, what: &'static str) -> Result<Vec<u16>, PolicyError> {
        let mut ports = Vec::new();
        for range in self.ports(value)? {
            for port in range.lo..=range.hi {
                ports.push(port);
                if ports.len() > MAX_PORTS {
                    return Err(self.err(
                        value,
                        Problem::OutOfRange {
                            what,
                            value: format!("{}+", ports.len()),
                            range: format!("1..={MAX_PORTS}"),
                        },
                    ));
                }
            }
        }
        ports.sort_unstable();
        ports.dedup();
        Ok(ports)
    }

    /// One `allow` (web: TCP) or `cluster_allow` (`cluster`: TCP and UDP) entry.
    fn api_allow(&self, entry: &Node, cluster: bool) -> Result<Rule, PolicyError> {
        let what = if cluster {
            "an api cluster_allow entry"
        } else {
            "an api allow entry"
        };
        if !matches!(entry.kind, Kind::Map(_)) {
            return Err(self.wrong_type(entry, what, "a mapping such as `cidr: 127.0.0.1/32`"));
        }
        let fields = self.fields(entry, what, API_ALLOW_KEYS, "cidr")?;
        let Some(cidr) = fields.first() else {
            return Err(self.err(entry, Problem::MissingKey { expected: "cidr" }));
        };
        let (ports, protocols) = if cluster {
            (CLUSTER_RULE_PORTS, proto::TCP | proto::UDP)
        } else {
            (WEB_RULE_PORTS, proto::TCP)
        };
        Ok(Rule {
            action: RuleAction::Allow,
            net: self.cidr(cidr.value)?,
            ports: vec![ports],
            protocols,
            source: RuleSource::Cidr,
            location: self.at(entry),
        })
    }
}
