//! The `dns:` section: how the agent resolves the `fqdn` rules.
//!
//! ```yaml
//! dns:
//!   servers: ["127.0.0.1:5353"]   # default: the system resolver configuration
//!   grace_period: 5m              # default 5m; seconds or ms/s/m/h
//!   max_addresses_per_name: 64    # default 64
//!   max_addresses: 4096           # default 4096
//! ```
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{Cx, DnsSettings, PolicyError, Problem};
use crate::yaml::{Kind, Node};

const DNS_KEYS: &[&str] = &[
    "servers",
    "grace_period",
    "max_addresses_per_name",
    "max_addresses",
];
const DNS_EXPECTED: &str = "servers, grace_period, max_addresses_per_name, max_addresses";

impl Cx<'_> {
    pub(super) fn dns(&self, node: &Node) -> Result<DnsSettings, PolicyError> {
        let mut dns = DnsSettings::default();
        if let Kind::Null = node.kind {
            return Ok(dns);
        }
        for field in self.fields(node, "dns", DNS_KEYS, DNS_EXPECTED)? {
            let value = field.value;
            match field.name {
                "servers" => {
                    let items = self.list(value, "servers")?;
                    if items.is_empty() {
                        return Err(self.err(value, Problem::EmptyValue { what: "servers" }));
                    }
                    dns.servers = items
                        .into_iter()
                        .map(|item| self.server(item))
                        .collect::<Result<_, _>>()?;
                }
                "grace_period" => {
                    let grace = self.duration(value, "grace_period")?;
                    if grace > DnsSettings::MAX_GRACE {
                        return Err(self.out_of_range(
                            value,
                            "grace_period",
                            format!("{}s", DnsSettings::MAX_GRACE.as_secs()),
                        ));
                    }
                    dns.grace_period = grace;
                }
                "max_addresses_per_name" => {
                    dns.max_addresses_per_name = self.count(
                        value,
                        "max_addresses_per_name",
                        DnsSettings::MAX_ADDRESSES_LIMIT,
                    )?;
                }
                _ => {
                    dns.max_addresses =
                        self.count(value, "max_addresses", DnsSettings::MAX_ADDRESSES_LIMIT)?;
                }
            }
        }
        Ok(dns)
    }

    fn server(&self, node: &Node) -> Result<SocketAddr, PolicyError> {
        let value = self.text(node, "a name server", "an address such as 127.0.0.1:5353")?;
        let trimmed = value.trim();
        let parsed = trimmed.parse::<SocketAddr>().ok().or_else(|| {
            trimmed
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        });
        match parsed {
            Some(sa) if sa.port() != 0 => Ok(sa),
            _ => Err(self.err(node, Problem::InvalidServer { value })),
        }
    }

    pub(super) fn duration(
        &self,
        node: &Node,
        what: &'static str,
    ) -> Result<Duration, PolicyError> {
        let value = self.text(node, what, "a duration such as 300 or 5m")?;
        let invalid = || {
            self.err(
                node,
                Problem::InvalidDuration {
                    value: value.clone(),
                },
            )
        };
        let t = value.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        if digits.is_empty() {
            return Err(invalid());
        }
        let n: u64 = digits.parse().map_err(|_| invalid())?;
        let ms_per = match unit.trim() {
            "" | "s" => 1_000,
            "ms" => 1,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(invalid()),
        };
        n.checked_mul(ms_per)
            .map(Duration::from_millis)
            .ok_or_else(|| {
                self.out_of_range(node, what, format!("{}s", DnsSettings::MAX_GRACE.as_secs()))
            })
    }

    fn count(&self, node: &Node, what: &'static str, max: usize) -> Result<usize, PolicyError> {
        let Kind::Int(v) = node.kind else {
            return Err(self.wrong_type(node, what, "a whole number"));
        };
        match usize::try_from(v) {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(self.out_of_range(node, what, max.to_string())),
        }
    }

    fn out_of_range(&self, node: &Node, what: &'static str, max: String) -> PolicyError {
        let value = self.scalar_text(node).unwrap_or_default();
        let min = if what == "grace_period" { "0" } else { "1" };
        let range = format!("{min}..={max}");
        self.err(node, Problem::OutOfRange { what, value, range })
    }
}
