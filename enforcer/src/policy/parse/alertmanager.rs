//! The `alertmanager:` section: whether the agent allows what a running Alertmanager target
//! itself needs.
//!
//! ```yaml
//! alertmanager:
//!   allow_own_dns: true         # the name servers of its own resolv.conf, port 53 (default true)
//!   allow_cluster_peers: true   # its --cluster.peer addresses, on their ports (default true)
//! ```
use super::{Cx, PolicyError};
use crate::policy::AlertmanagerSettings;
use crate::yaml::{Kind, Node};

const KEYS: &[&str] = &["allow_own_dns", "allow_cluster_peers"];
const EXPECTED: &str = "allow_own_dns, allow_cluster_peers";

impl Cx<'_> {
    pub(super) fn alertmanager(&self, node: &Node) -> Result<AlertmanagerSettings, PolicyError> {
        let mut settings = AlertmanagerSettings::default();
        if let Kind::Null = node.kind {
            return Ok(settings);
        }
        for field in self.fields(node, "alertmanager", KEYS, EXPECTED)? {
            let Kind::Bool(value) = field.value.kind else {
                return Err(self.wrong_type(field.value, field.name, "true or false"));
            };
            match field.name {
                "allow_own_dns" => settings.allow_own_dns = value,
                _ => settings.allow_cluster_peers = value,
            }
        }
        Ok(settings)
    }
}
