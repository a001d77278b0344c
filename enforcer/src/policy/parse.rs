//! Validation of the YAML tree into a [`Policy`]; every error points at a key or value.

use serde_saphyr::DuplicateKeyPolicy;

use crate::yaml::{self, Kind, Node};
mod alertmanager;
mod api;
mod dns;
mod integrity;
mod prescan;
mod rules;

#[cfg(test)]
pub(super) use rules::parse_fqdn;
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
}
