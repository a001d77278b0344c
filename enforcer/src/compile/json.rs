//! `enforcer check --format json` for a policy alone: what the text listing ([`super::render`])
//! says, as one JSON document a CI job can read (rules with their file positions, the API guard,
//! the FQDN rules, the targets, the map capacity used, the warnings).
use serde_json::{Value, json};

use super::{Capacity, Compiled, Usage};
use crate::policy::{Policy, Target, api::ApiGuard};

/// The document for a valid policy; `warnings` are the ones `check` prints on stderr.
pub fn render_json(policy: &Policy, compiled: &Compiled, warnings: &[String]) -> Value {
    let rules: Vec<Value> = policy
        .rules
        .iter()
        .enumerate()
        .map(|(id, r)| json!({"id": id, "rule": r.to_string(), "location": r.location.to_string()}))
        .collect();
    let fqdn: Vec<Value> = policy
        .fqdns
        .iter()
        .enumerate()
        .map(|(slot, f)| {
            json!({
                "id": crate::fqdn::tables::rule_id(policy, slot),
                "rule": f.to_string(),
                "location": f.location.to_string(),
            })
        })
        .collect();
    let targets: Vec<Value> = policy.targets.iter().map(target).collect();
    json!({
        "valid": true,
        "policy": policy.source,
        "mode": policy.mode.as_str(),
        "default": policy.default.as_str(),
        "rules": rules,
        "fqdn_rules": fqdn,
        "api": policy.api.as_ref().map(api),
        "targets": targets,
        "automatic_rules": {
            "own_dns": policy.alertmanager.allow_own_dns,
            "cluster_peers": policy.alertmanager.allow_cluster_peers,
        },
        "map_entries": {
            "ipv4": compiled.v4.len(),
            "ipv4_blocks": compiled.v4_blocks.len(),
            "ipv6": compiled.v6.len(),
        },
        "capacity": capacity(&compiled.capacity),
        "warnings": warnings,
    })
}

/// The document for a policy that was refused: the message `check` prints on stderr.
pub fn refused_json(error: &str) -> Value {
    json!({"valid": false, "error": error})
}

fn target(t: &Target) -> Value {
    match t {
        Target::Cgroup { path, location } => {
            json!({"cgroup": path, "location": location.to_string()})
        }
        Target::SystemdUnit { name, location } => {
            json!({"systemd_unit": name, "location": location.to_string()})
        }
        Target::Process { names, location } => {
            json!({"process": names, "location": location.to_string()})
        }
    }
}

fn api(a: &ApiGuard) -> Value {
    let allow: Option<Vec<Value>> = a.allow.as_ref().map(|rules| {
        rules
            .iter()
            .map(|r| json!({"cidr": r.net.to_string(), "location": r.location.to_string()}))
            .collect()
    });
    json!({
        "mode": a.mode.as_str(),
        // Empty: each target's own --web.listen-address port.
        "ports": a.ports,
        "allow": allow,
        "other_peers": a.other_peers(),
        "location": a.location.to_string(),
    })
}

fn capacity(c: &Capacity) -> Value {
    let u = |u: Usage| json!({"used": u.used, "available": u.available});
    json!({
        "ipv4_entries": u(c.v4),
        "ipv4_exact_entries": u(c.v4_exact),
        "ipv4_block_entries": u(c.v4_blocks),
        "ipv6_entries": u(c.v6),
        "ipv6_exact_entries": u(c.v6_exact),
        "fqdn_rules": u(c.fqdn),
        "fqdn_port_entries": u(c.fqdn_ports),
    })
}

#[cfg(test)]
mod tests {
    use super::{refused_json, render_json};
    use crate::{compile::compile, policy::parse_policy};

    #[test]
    fn the_document_carries_rules_api_targets_and_capacity() {
        let p = parse_policy(
            "mode: audit\ndefault: deny\nblock:\n  - preset: cloud-metadata\nallow:\n  - fqdn: hooks.slack.com\n    ports: [443]\napi:\n  allow:\n    - cidr: 127.0.0.1/32\ntargets:\n  - process: [alertmanager]\n",
            "p.yaml",
        )
        .unwrap();
        let c = compile(&p).unwrap();
        let v = render_json(&p, &c, &["p.yaml:1:1: a warning".to_owned()]);
        assert_eq!(v["valid"], true);
        assert_eq!(v["mode"], "audit");
        assert_eq!(v["default"], "deny");
        let rules = v["rules"].as_array().unwrap();
        assert_eq!(rules.len(), p.rules.len());
        assert!(
            rules
                .iter()
                .any(|r| r["rule"].as_str().unwrap().contains("169.254.169.254/32")),
            "{v}"
        );
        assert_eq!(rules[0]["location"], "p.yaml:4:5");
        assert_eq!(
            v["fqdn_rules"][0]["rule"],
            "allow fqdn hooks.slack.com ports 443"
        );
        assert_eq!(v["api"]["allow"][0]["cidr"], "127.0.0.1/32");
        // Audit mode answers every peer: the document says what enforce mode would do.
        assert_eq!(
            v["api"]["other_peers"],
            "would be refused (audit mode: answered, logged)"
        );
        assert_eq!(v["targets"][0]["process"][0], "alertmanager");
        assert_eq!(v["capacity"]["fqdn_rules"]["used"], 1);
        assert_eq!(v["capacity"]["fqdn_rules"]["available"], 64);
        assert_eq!(v["warnings"][0], "p.yaml:1:1: a warning");
        assert_eq!(refused_json("p.yaml:3:11: bad")["valid"], false);
    }
}
