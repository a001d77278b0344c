//! Warnings about a valid policy that probably does not do what its author meant: it blocks
//! nothing, an `allow` CIDR overrides every block, or an `fqdn` rule names a public suffix.
//! `enforcer check` prints them; `enforcer run` logs them at every load.

use std::fmt;

use ipnet::IpNet;

use super::{DefaultVerdict, Location, Policy, RuleAction, RuleSource};

/// A warning about one place of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Public suffixes beyond single labels (`com`, `io`, every top-level domain) that webhook
/// hosts commonly sit under: a wildcard over one of them allows anyone's host. Not the whole
/// Public Suffix List, only the part a receiver allowlist is likely to meet.
const SHARED_SUFFIXES: &[&str] = &[
    "co.uk",
    "org.uk",
    "ac.uk",
    "gov.uk",
    "com.au",
    "net.au",
    "co.jp",
    "co.nz",
    "co.za",
    "com.br",
    "com.cn",
    "co.in",
    "co.kr",
    "com.mx",
    "com.tr",
    "com.sg",
    "com.hk",
    "com.tw",
    "github.io",
    "gitlab.io",
    "herokuapp.com",
    "appspot.com",
    "azurewebsites.net",
    "cloudfront.net",
    "amazonaws.com",
    "execute-api.amazonaws.com",
    "lambda-url.amazonaws.com",
    "blogspot.com",
    "firebaseapp.com",
    "web.app",
    "vercel.app",
    "netlify.app",
    "pages.dev",
    "workers.dev",
    "trycloudflare.com",
    "ngrok.io",
    "ngrok-free.app",
    "ngrok.app",
    "onrender.com",
    "fly.dev",
    "glitch.me",
    "repl.co",
    "azurestaticapps.net",
];

/// Whether `name` (lower case, no trailing dot) is a public suffix: a single label, or a
/// listed shared one.
pub fn is_public_suffix(name: &str) -> bool {
    !name.contains('.') || SHARED_SUFFIXES.contains(&name)
}

/// Every warning for `policy`, in file order of the rules they concern.
pub fn warnings(policy: &Policy) -> Vec<Warning> {
    let mut out = Vec::new();
    let blocks: Vec<IpNet> = policy
        .rules
        .iter()
        .filter(|r| r.action == RuleAction::Block)
        .map(|r| r.net)
        .collect();
    let file_rules = || {
        policy
            .rules
            .iter()
            .filter(|r| !matches!(r.source, RuleSource::Auto { .. }))
    };
    if policy.default == DefaultVerdict::Allow && blocks.is_empty() {
        out.push(Warning {
            location: Location {
                file: policy.source.clone().into(),
                line: 1,
                column: 1,
            },
            message: "this policy enforces nothing: `default: allow` and no `block` rule, so \
                      every destination is allowed (add `block:` entries such as `- preset: \
                      cloud-metadata`, or `default: deny`)"
                .to_owned(),
        });
    }
    for rule in file_rules().filter(|r| r.action == RuleAction::Allow) {
        let same_family: Vec<&IpNet> = blocks
            .iter()
            .filter(|b| b.network().is_ipv4() == rule.net.network().is_ipv4())
            .collect();
        let covers_all =
            !same_family.is_empty() && same_family.iter().all(|b| rule.net.contains(*b));
        if !covers_all
            && rule.net.prefix_len() <= 1
            && same_family.iter().any(|b| rule.net.contains(*b))
        {
            out.push(Warning {
                location: rule.location.clone(),
                message: format!(
                    "allow {} covers half of all addresses or more and overrides every block \
                     inside it (allow rules win over blocks); allow the destinations that are \
                     needed instead",
                    rule.net
                ),
            });
        }
        if covers_all {
            let scope = if rule.ports.is_empty() && rule.protocols == enforcer_common::proto::ALL {
                "every port and protocol".to_owned()
            } else {
                "the ports and protocols it names".to_owned()
            };
            out.push(Warning {
                location: rule.location.clone(),
                message: format!(
                    "allow {} contains every {} block range, so it overrides every block \
                     for {scope} (allow rules win over blocks); allow the destinations \
                     that are needed instead",
                    rule.net,
                    if rule.net.network().is_ipv4() {
                        "IPv4"
                    } else {
                        "IPv6"
                    }
                ),
            });
        }
    }
    for f in &policy.fqdns {
        if is_public_suffix(&f.name) {
            let shown = if f.wildcard {
                format!("*.{}", f.name)
            } else {
                f.name.clone()
            };
            out.push(Warning {
                location: f.location.clone(),
                message: format!(
                    "fqdn {} names a public suffix: anyone can register a name below it, so \
                     this allows hosts of anyone's choosing; name the service's own domain",
                    crate::input::quote(&shown)
                ),
            });
        }
    }
    out
}
