//! The running configuration (`GET /api/v2/status`, `config.original`): its hash, its
//! receivers and routes by name, and the destinations the policy denies.
//!
//! The destinations are decided by [`crate::amconfig::check`] — the code path of `enforcer
//! check --alertmanager-config` — on the configuration as Alertmanager runs it, not on the
//! file on disk (which may have changed since the last reload, or never been reloaded).
use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::finding::{Finding, FindingKind, Source};
use crate::amconfig::{self, CheckOptions, Status};
use crate::details;
use crate::policy::Policy;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the status is not the JSON Alertmanager's API returns: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Deserialize)]
struct ApiStatus {
    config: ApiConfig,
}

#[derive(Deserialize)]
struct ApiConfig {
    original: String,
}

/// One read of the running configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    pub text: String,
    /// SHA-256 of the text, hex.
    pub hash: String,
    /// Receiver name → its definition (canonical JSON).
    pub receivers: BTreeMap<String, String>,
    /// Route path (`route`, `route.routes[0]`, ...) with its receiver → its own settings
    /// (canonical JSON, child routes left out).
    pub routes: BTreeMap<String, String>,
}

/// Reads `GET /api/v2/status`.
pub fn parse_status(body: &[u8]) -> Result<Running, ConfigError> {
    let status: ApiStatus = serde_json::from_slice(body)?;
    Ok(running(status.config.original))
}

/// Hash, receivers and routes of a configuration's text. A text YAML cannot read still has a
/// hash (and no receivers or routes).
pub fn running(text: String) -> Running {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let hash = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let tree: Value = serde_saphyr::from_str(&text).unwrap_or(Value::Null);
    let mut receivers = BTreeMap::new();
    if let Some(list) = tree.get("receivers").and_then(Value::as_array) {
        for r in list {
            let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
            receivers.insert(name.to_owned(), r.to_string());
        }
    }
    let mut routes = BTreeMap::new();
    if let Some(root) = tree.get("route") {
        walk_routes(root, "route".to_owned(), &mut routes);
    }
    Running {
        text,
        hash,
        receivers,
        routes,
    }
}

fn walk_routes(route: &Value, path: String, out: &mut BTreeMap<String, String>) {
    let mut own = route.clone();
    let children = own
        .as_object_mut()
        .and_then(|o| o.remove("routes"))
        .unwrap_or(Value::Null);
    let receiver = route.get("receiver").and_then(Value::as_str).unwrap_or("");
    let name = if receiver.is_empty() {
        path.clone()
    } else {
        format!("{path} (receiver {receiver})")
    };
    out.insert(name, own.to_string());
    if let Some(list) = children.as_array() {
        for (i, child) in list.iter().enumerate() {
            walk_routes(child, format!("{path}.routes[{i}]"), out);
        }
    }
}

/// Added, removed and changed names between two maps.
fn diff(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> [Vec<String>; 3] {
    let added = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .cloned()
        .collect();
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    let changed = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
        .map(|(k, _)| k.clone())
        .collect();
    [added, removed, changed]
}

/// The `config_changed` finding between two reads. Names only: a receiver's definition may
/// hold secrets.
pub fn changed(old: &Running, new: &Running, at: &Source) -> Finding {
    let [r_added, r_removed, r_changed] = diff(&old.receivers, &new.receivers);
    let [t_added, t_removed, t_changed] = diff(&old.routes, &new.routes);
    let d = details! {
        "hash" => new.hash,
        "previous_hash" => old.hash,
        "receivers_added" => r_added,
        "receivers_removed" => r_removed,
        "receivers_changed" => r_changed,
        "routes_added" => t_added,
        "routes_removed" => t_removed,
        "routes_changed" => t_changed,
    };
    Finding::new(FindingKind::ConfigChanged, at, &new.hash, d)
}

/// One `receiver_denied` finding per destination of the running configuration the policy
/// denies (or that cannot be read: Alertmanager would still use it). `base` is where relative
/// `*_file` paths are read (the process's configuration directory, through its root).
pub fn denied(config: &Running, policy: &Policy, base: &Path, at: &Source) -> Vec<Finding> {
    let name = format!("running configuration of pid {}", at.pid);
    let parsed = match amconfig::parse(&config.text, &name, base) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(pid = at.pid, error = %e, "the running configuration cannot be checked");
            return Vec::new();
        }
    };
    let report = amconfig::check(&parsed, policy, CheckOptions::default());
    report
        .findings
        .iter()
        .filter(|f| f.status == Status::Deny)
        .map(|f| {
            let destination = f.destination.as_ref().map(ToString::to_string);
            let d = details! {
                "receiver" => f.receiver,
                "field" => f.field,
                "destination" => destination,
                "rule" => f.reason,
                "config_hash" => config.hash,
            };
            // Not the configuration's hash: an unrelated change (a rename elsewhere, a route
            // re-ordered) must not raise the same denied receiver again.
            let subject = format!(
                "{}|{}|{}",
                f.receiver,
                f.field,
                destination.as_deref().unwrap_or("")
            );
            Finding::new(FindingKind::ReceiverDenied, at, &subject, d)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Source {
        Source {
            target: "t".into(),
            pid: 1,
            api: "http://127.0.0.1:9093/".into(),
        }
    }

    const BEFORE: &str = "route:\n  receiver: team\n  routes:\n    - receiver: team\n      matchers: ['a=\"b\"']\nreceivers:\n- name: team\n  webhook_configs:\n  - url: http://127.0.0.1:5001/alerts\n";

    #[test]
    fn changes_are_named_not_shown() {
        let old = running(BEFORE.to_owned());
        let after = BEFORE.replace("'a=\"b\"'", "'a=\"c\"'")
            + "- name: evil\n  webhook_configs:\n  - url: http://169.254.169.254/latest/?token=s3cret\n";
        let new = running(after);
        assert_ne!(old.hash, new.hash);
        let f = changed(&old, &new, &at());
        assert_eq!(f.details["receivers_added"][0], "evil");
        assert_eq!(
            f.details["routes_changed"][0],
            "route.routes[0] (receiver team)"
        );
        assert_eq!(f.details["receivers_changed"].as_array().unwrap().len(), 0);
        assert!(!f.to_json().contains("s3cret"), "{}", f.to_json());
    }

    #[test]
    fn denied_receivers_are_decided_as_enforcer_check_decides_them() {
        let text = BEFORE.to_owned()
            + "- name: evil\n  webhook_configs:\n  - url: http://169.254.169.254/latest/meta-data/\n";
        let policy = crate::policy::default_policy();
        let found = denied(&running(text), &policy, Path::new("/nonexistent"), &at());
        assert_eq!(
            found.len(),
            2,
            "127.0.0.1 (private) and the metadata service: {found:?}"
        );
        let evil = found
            .iter()
            .find(|f| f.details["receiver"] == "evil")
            .unwrap();
        assert_eq!(evil.details["field"], "webhook_configs[0].url");
        assert_eq!(evil.details["destination"], "http://169.254.169.254:80");
        assert!(
            evil.details["rule"]
                .as_str()
                .unwrap()
                .contains("cloud-metadata"),
            "{evil:?}"
        );
    }

    #[test]
    fn a_denied_receiver_is_the_same_finding_across_unrelated_changes() {
        let text = BEFORE.to_owned()
            + "- name: evil\n  webhook_configs:\n  - url: http://169.254.169.254/latest/meta-data/\n";
        let policy = crate::policy::default_policy();
        let keys = |t: String| -> Vec<String> {
            let mut k: Vec<String> = denied(&running(t), &policy, Path::new("/nonexistent"), &at())
                .into_iter()
                .map(|f| f.key)
                .collect();
            k.sort();
            k
        };
        let renamed = text.replace(
            "receiver: team\n      matchers",
            "receiver: team\n      continue: true\n      matchers",
        );
        assert_ne!(running(text.clone()).hash, running(renamed.clone()).hash);
        assert_eq!(keys(text), keys(renamed));
    }
}
