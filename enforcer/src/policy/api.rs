//! `api:` — the API guard: which peers may connect to a target's API port and to its cluster
//! (gossip) port, decided in the kernel on the target's listening side (the ingress direction
//! of the rule maps).
//!
//! ```yaml
//! api:
//!   mode: enforce           # or audit; default: the policy's `mode`
//!   ports: [9093]           # default: the port of each target's --web.listen-address
//!   allow:                  # peers that may connect; without `allow` nobody is refused
//!     - cidr: 127.0.0.1/32
//!     - cidr: 10.244.3.0/24
//!   cluster_ports: [9094]   # default: the port of each target's --cluster.listen-address
//!   cluster_allow:          # gossip peers besides each target's own --cluster.peer addresses
//!     - cidr: 10.244.0.0/16
//! ```
//!
//! The cluster port is always guarded with an `api:` section: only the target's own literal
//! `--cluster.peer` addresses and `cluster_allow` may gossip with it (TCP and UDP).

use std::fmt::{self, Write as _};

use enforcer_common::api::surface;

use super::{DefaultVerdict, Location, Mode, PortRange, Rule};

/// At most this many guarded ports (the kernel's `ApiConfig` holds them inline).
pub use enforcer_common::api::MAX_PORTS;

/// The port Alertmanager listens on when `--web.listen-address` does not say.
pub const ALERTMANAGER_DEFAULT_PORT: u16 = 9093;

/// The gossip port Alertmanager listens on when `--cluster.listen-address` does not say.
pub const ALERTMANAGER_DEFAULT_CLUSTER_PORT: u16 = 9094;

/// The port an ingress rule of the web surface matches (see [`surface`]).
pub const WEB_RULE_PORTS: PortRange = PortRange::single(surface::WEB);
/// The port an ingress rule of the cluster surface matches.
pub const CLUSTER_RULE_PORTS: PortRange = PortRange::single(surface::CLUSTER);

/// A validated `api:` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiGuard {
    /// `mode:`; the policy's own mode when the section does not give one.
    pub mode: Mode,
    /// `ports:` — the guarded listening ports, sorted, unique. Empty: each target's
    /// `--web.listen-address` port (the agent reads it; 9093 when the flag is absent).
    pub ports: Vec<u16>,
    /// `allow:` — peers that may connect, as ingress rules (port [`WEB_RULE_PORTS`], TCP);
    /// rule id = index. `None`: no `allow` list, nobody is refused (every call is still logged).
    pub allow: Option<Vec<Rule>>,
    /// `cluster_ports:` — the guarded gossip ports, sorted, unique. Empty: each target's
    /// `--cluster.listen-address` port (9094 when the flag is absent, none when it is empty).
    pub cluster_ports: Vec<u16>,
    /// `cluster_allow:` — gossip peers allowed besides each target's own `--cluster.peer`s, as
    /// ingress rules (port [`CLUSTER_RULE_PORTS`], TCP and UDP); rule id = index after `allow`.
    pub cluster_allow: Vec<Rule>,
    /// Where the section starts.
    pub location: Location,
}

impl ApiGuard {
    /// The web ingress rules (empty without an `allow` list).
    pub fn rules(&self) -> &[Rule] {
        self.allow.as_deref().unwrap_or(&[])
    }

    /// Every ingress rule, web then cluster: a rule's id is its index here.
    pub fn ingress_rules(&self) -> Vec<Rule> {
        let mut all = self.rules().to_vec();
        all.extend(self.cluster_allow.iter().cloned());
        all
    }

    /// What a peer no rule allows gets: refused when there is an `allow` list.
    pub fn default_verdict(&self) -> DefaultVerdict {
        if self.allow.is_some() {
            DefaultVerdict::Deny
        } else {
            DefaultVerdict::Allow
        }
    }

    /// What a peer outside the `allow` list gets, as `enforcer check` says it: in audit mode
    /// it is answered and only logged, so it "would be refused".
    pub fn other_peers(&self) -> &'static str {
        match (&self.allow, self.mode) {
            (None, _) => "allowed (no allow list; every call is logged)",
            (Some(_), Mode::Enforce) => "refused (its SYN is dropped)",
            (Some(_), Mode::Audit) => "would be refused (audit mode: answered, logged)",
        }
    }

    /// `enforcer check`'s listing of the section.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "api guard ({}): mode {}, ports ",
            self.location,
            self.mode.as_str()
        );
        if self.ports.is_empty() {
            out.push_str("each target's --web.listen-address port");
        } else {
            let ports: Vec<String> = self.ports.iter().map(ToString::to_string).collect();
            out.push_str(&ports.join(","));
        }
        out.push('\n');
        match &self.allow {
            None => out.push_str("  no allow list: every peer may connect; every call is logged\n"),
            Some(rules) => {
                for (id, rule) in rules.iter().enumerate() {
                    let _ = writeln!(out, "  [{id}] allow peer {} ({})", rule.net, rule.location);
                }
                let _ = writeln!(out, "  any other peer: {}", self.other_peers());
            }
        }
        out.push_str("cluster guard: ports ");
        if self.cluster_ports.is_empty() {
            out.push_str("each target's --cluster.listen-address port");
        } else {
            let ports: Vec<String> = self.cluster_ports.iter().map(ToString::to_string).collect();
            out.push_str(&ports.join(","));
        }
        out.push_str(" (TCP and UDP)\n");
        out.push_str(
            "  allow each target's own literal --cluster.peer addresses (a peer given by DNS name \
             needs cluster_allow)\n",
        );
        let first = self.rules().len();
        for (i, rule) in self.cluster_allow.iter().enumerate() {
            let _ = writeln!(
                out,
                "  [{}] allow cluster peer {} ({})",
                first + i,
                rule.net,
                rule.location
            );
        }
        out.push_str(match self.mode {
            Mode::Enforce => "  any other peer: refused (its SYN and datagrams are dropped)\n",
            Mode::Audit => "  any other peer: would be refused (audit mode: answered, logged)\n",
        });
        out
    }
}

impl fmt::Display for ApiGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::{DefaultVerdict, Mode, parse_policy};

    fn err(yaml: &str) -> String {
        parse_policy(yaml, "p.yaml").unwrap_err().to_string()
    }

    #[test]
    fn section_defaults_and_values() {
        let p = parse_policy("default: allow\napi:\n", "p.yaml").unwrap();
        let api = p.api.unwrap();
        assert_eq!(api.mode, Mode::Enforce);
        assert!(api.ports.is_empty());
        assert_eq!(
            api.default_verdict(),
            DefaultVerdict::Allow,
            "no allow list"
        );

        // The section's mode defaults to the policy's, even when `mode` comes after it.
        let p = parse_policy(
            "api:\n  ports: [9093, \"9100-9101\"]\n  allow:\n    - cidr: 127.0.0.1/32\n    - cidr: ::ffff:10.0.0.0/104\nmode: audit\ndefault: allow\n",
            "p.yaml",
        )
        .unwrap();
        let api = p.api.unwrap();
        assert_eq!(api.mode, Mode::Audit);
        assert_eq!(api.ports, vec![9093, 9100, 9101]);
        assert_eq!(api.default_verdict(), DefaultVerdict::Deny);
        let nets: Vec<String> = api.rules().iter().map(|r| r.net.to_string()).collect();
        assert_eq!(
            nets,
            ["127.0.0.1/32", "10.0.0.0/8"],
            "mapped ranges become IPv4"
        );
        assert_eq!(api.rules()[1].location.line, 5);

        let p = parse_policy("mode: audit\ndefault: allow\napi:\n  mode: enforce\n", "p").unwrap();
        assert_eq!(p.api.unwrap().mode, Mode::Enforce);
        assert!(parse_policy("default: allow\n", "p").unwrap().api.is_none());
    }

    #[test]
    fn check_says_audit_mode_would_refuse_and_enforce_mode_refuses() {
        let section = |mode: &str| {
            parse_policy(
                &format!(
                    "mode: {mode}\ndefault: allow\napi:\n  allow:\n    - cidr: 127.0.0.1/32\n"
                ),
                "p.yaml",
            )
            .unwrap()
            .api
            .unwrap()
            .render()
        };
        let enforce = section("enforce");
        assert!(
            enforce.contains("any other peer: refused (its SYN is dropped)"),
            "{enforce}"
        );
        let audit = section("audit");
        assert!(
            audit.contains("any other peer: would be refused (audit mode: answered, logged)"),
            "{audit}"
        );
        assert!(!audit.contains(": refused"), "{audit}");
        let open = parse_policy("default: allow\napi:\n", "p")
            .unwrap()
            .api
            .unwrap();
        assert!(open.render().contains("no allow list"), "{}", open.render());
    }

    #[test]
    fn check_lists_the_cluster_guard() {
        let p = parse_policy(
            "default: allow\napi:\n  allow:\n    - cidr: 10.0.0.0/8\n  cluster_ports: [9094, 7946]\n  cluster_allow:\n    - cidr: 10.244.0.0/16\n",
            "p.yaml",
        )
        .unwrap();
        let api = p.api.unwrap();
        assert_eq!(api.cluster_ports, vec![7946, 9094]);
        let rules = api.ingress_rules();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].ports, vec![super::CLUSTER_RULE_PORTS]);
        let text = api.render();
        assert!(
            text.contains("cluster guard: ports 7946,9094 (TCP and UDP)"),
            "{text}"
        );
        assert!(
            text.contains("[1] allow cluster peer 10.244.0.0/16 (p.yaml:7:7)"),
            "{text}"
        );
        let default = parse_policy("default: allow\napi:\n", "p")
            .unwrap()
            .api
            .unwrap();
        assert!(
            default
                .render()
                .contains("cluster guard: ports each target's --cluster.listen-address port"),
            "{}",
            default.render()
        );
    }

    #[test]
    fn mistakes_name_file_line_column_and_field() {
        assert_eq!(
            err("default: allow\napi:\n  allow: []\n"),
            "p.yaml:3:10: allow is empty; leave `allow` out to match every peer"
        );
        assert_eq!(
            err("default: allow\napi:\n  allow:\n    - fqdn: a.example\n"),
            "p.yaml:4:7: unknown key \"fqdn\" (expected one of: cidr)"
        );
        assert_eq!(
            err("default: allow\napi:\n  allow:\n    - cidr: 10.0.0.1/8\n"),
            "p.yaml:4:13: CIDR \"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?"
        );
        assert_eq!(
            err("default: allow\napi:\n  mode: block\n"),
            "p.yaml:3:9: unknown mode \"block\" (expected enforce or audit)"
        );
        assert_eq!(
            err("default: allow\napi:\n  ports: [\"9000-9100\"]\n"),
            "p.yaml:3:10: the number of api ports 9+ is out of range 1..=8"
        );
        assert_eq!(
            err("default: allow\napi:\n  port: 9093\n"),
            "p.yaml:3:3: unknown key \"port\" (expected one of: mode, ports, allow, \
             cluster_ports, cluster_allow)"
        );
        assert_eq!(
            err("default: allow\napi:\n  cluster_allow: []\n"),
            "p.yaml:3:18: cluster_allow is empty; leave `cluster_allow` out to allow only each \
             target's own --cluster.peer addresses"
        );
        assert_eq!(
            err("default: allow\napi:\n  cluster_allow:\n    - cidr: 10.0.0.1/8\n"),
            "p.yaml:4:13: CIDR \"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?"
        );
        assert_eq!(
            err("default: allow\napi:\n  cluster_ports: [\"9000-9100\"]\n"),
            "p.yaml:3:18: the number of api cluster ports 9+ is out of range 1..=8"
        );
        assert!(err("default: allow\napi: [1]\n").starts_with("p.yaml:2:6: api must be a mapping"));
    }
}
