//! An Alertmanager configuration checked against a policy (`enforcer check
//! --alertmanager-config`), and a policy suggested from one (`enforcer suggest`).
//!
//! [`load`] finds every destination a notification can be sent to — each receiver's URL
//! fields, their `*_file` twins, the `global` defaults and Alertmanager's built-in ones, email
//! smarthosts, HTTP proxies and OAuth2 token endpoints. [`check`] reads each the way
//! Alertmanager's Go code does (host, port; literal addresses in any spelling) and decides it
//! with the policy. Nothing here changes the policy: a policy must never be derived live from
//! the configuration it protects; [`suggest`] only prints one for a human to review.
//!
//! Verdicts: ALLOW and DENY with the deciding rule; UNDECIDED (templated host, proxy from the
//! environment, AWS SDK endpoints) is a warning that fails only with `--strict`; INVALID
//! (unreadable `*_file`, an ambiguous URL that Go refuses or that parsers read differently, an
//! unknown receiver kind) fails like a deny. A URL sent through a proxy is decided as well as
//! the proxy (the kernel sees only the proxy connection, but `no_proxy` may bypass it).
//! Relative `*_file` paths are read from the configuration's directory (Alertmanager reads
//! them from its working directory: prefer absolute paths).
//!
//! What no static check sees, and the kernel enforcement exists for: HTTP redirects (followed
//! by default), DNS answers that change after the check, hosts templated from alert data.

mod decide;
mod destination;
mod extract;
mod gourl;
mod host;
mod report;
pub mod routes;
mod schema;
mod suggest;
mod timeintervals;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use decide::{AddressSource, AddressVerdict};
pub use destination::Destination;
pub use extract::{Endpoint, EndpointKind, Origin, Value};
pub use host::Host;
pub use suggest::suggest;

use serde_saphyr::DuplicateKeyPolicy;

use crate::policy::{Location, Policy};
use crate::yaml::{self, Kind};

/// How an Alertmanager configuration's YAML is read: duplicate keys are errors (as in
/// Alertmanager's strict yaml.v2), booleans are YAML 1.1's; merge keys (`<<`) and anchors are
/// common.
const YAML: yaml::Settings = yaml::Settings {
    duplicate_keys: DuplicateKeyPolicy::Error,
    strict_booleans: false,
    // Alertmanager's deepest paths (routes of routes) stay far below it.
    max_depth: 64,
    max_nodes: None,
    max_events: None,
    rewords: &[(
        "multiple YAML documents",
        "an Alertmanager configuration is one YAML document; remove the `---` separator",
    )],
};

/// Why an Alertmanager configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AmConfigError {
    #[error("{path}: cannot read the Alertmanager configuration")]
    Read {
        path: String,
        #[source]
        source: crate::input::ReadError,
    },
    #[error("{location}: {problem}")]
    Invalid {
        location: Location,
        problem: Problem,
    },
}

/// What is wrong at a [`Location`] of an Alertmanager configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the Alertmanager configuration is not UTF-8 text")]
    NotUtf8,
    #[error("invalid YAML: {}", crate::input::cut(message))]
    Yaml { message: String },
    #[error("the Alertmanager configuration is empty")]
    Empty,
    #[error("{what} must be {expected}, found {found}")]
    WrongType {
        what: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error(
        "unknown key \"{key}\" in {within}{}; Alertmanager refuses keys it does not know",
        suggestion.as_ref().map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default()
    )]
    UnknownKey {
        key: String,
        within: String,
        suggestion: Option<String>,
    },
    #[error(
        "no receivers: Alertmanager needs at least one (the root route's); is this an \
         alertmanager.yml?"
    )]
    NoReceivers,
}

/// The destinations of one Alertmanager configuration.
#[derive(Clone, Debug)]
pub struct AmConfig {
    /// The name it was loaded under (its path).
    pub source: String,
    /// In file order.
    pub endpoints: Vec<Endpoint>,
}

/// Reads an Alertmanager configuration; `*_file` fields are read relative to its directory.
pub fn load(path: &Path) -> Result<AmConfig, AmConfigError> {
    let name = path.display().to_string();
    let bytes = crate::input::read_capped(path, MAX_CONFIG_BYTES, "an Alertmanager configuration")
        .map_err(|source| AmConfigError::Read {
            path: name.clone(),
            source,
        })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let (line, column) = crate::input::position(e.as_bytes(), e.utf8_error().valid_up_to());
        AmConfigError::Invalid {
            location: Location {
                file: name.clone().into(),
                line,
                column,
            },
            problem: Problem::NotUtf8,
        }
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, &name, base)
}

/// The largest alertmanager.yml read.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The largest file a `*_file` field may name (a URL, a password, a token).
pub const MAX_FIELD_FILE_BYTES: u64 = 64 << 10;

/// Parses an Alertmanager configuration's text; `source_name` names it in locations.
pub fn parse(text: &str, source_name: &str, base: &Path) -> Result<AmConfig, AmConfigError> {
    let root = yaml::parse(text, &YAML).map_err(|e| AmConfigError::Invalid {
        location: Location {
            file: source_name.into(),
            line: e.line,
            column: e.column,
        },
        problem: Problem::Yaml { message: e.message },
    })?;
    if let Kind::Map(_) = root.kind {
        schema::check(source_name, &root)?;
    }
    let cx = extract::Cx {
        text,
        file: source_name,
        base,
    };
    Ok(AmConfig {
        source: source_name.to_owned(),
        endpoints: extract::endpoints(&cx, &root)?,
    })
}

/// The outcome for one destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Allow,
    Deny,
    /// Cannot be decided from the file (templated host, proxy from the environment, ...):
    /// a warning, a failure only with `--strict`.
    Undecided,
    /// Unreadable `*_file`, ambiguous or invalid URL, unknown receiver kind: a failure.
    Invalid,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Allow => "allow",
            Status::Deny => "deny",
            Status::Undecided => "undecided",
            Status::Invalid => "invalid",
        }
    }
}

/// One destination and its verdict.
#[derive(Clone, Debug)]
pub struct Finding {
    pub receiver: String,
    pub field: String,
    pub origin: Origin,
    pub location: Location,
    /// `scheme://host:port` (never userinfo, path or query), when it could be read.
    pub destination: Option<Destination>,
    pub status: Status,
    /// The deciding rule (`allow fqdn ...`, `block preset:... CIDR`, `default deny`), or why
    /// it could not be decided.
    pub reason: String,
    pub addresses: Vec<AddressVerdict>,
    pub notes: Vec<String>,
}

/// Options of [`check`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// Also resolve host names with the system resolver and decide every address.
    pub resolve: bool,
    /// Undecidable destinations fail the check too.
    pub strict: bool,
}

/// The result of [`check`].
#[derive(Clone, Debug)]
pub struct Report {
    pub config: String,
    pub policy: String,
    pub mode: &'static str,
    pub default: &'static str,
    pub options: CheckOptions,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn count(&self, status: Status) -> usize {
        self.findings.iter().filter(|f| f.status == status).count()
    }

    /// True when every destination is allowed (undecidable ones too, unless `strict`).
    pub fn passed(&self) -> bool {
        self.count(Status::Deny) == 0
            && self.count(Status::Invalid) == 0
            && (!self.options.strict || self.count(Status::Undecided) == 0)
    }

    /// One line per destination, then a summary.
    pub fn to_text(&self) -> String {
        report::text(self)
    }

    /// The report as one JSON document.
    pub fn to_json(&self) -> String {
        report::json(self)
    }
}

/// Decides every destination of `config` with `policy`.
pub fn check(config: &AmConfig, policy: &Policy, options: CheckOptions) -> Report {
    let findings = config
        .endpoints
        .iter()
        .map(|e| finding(e, policy, options))
        .collect();
    Report {
        config: config.source.clone(),
        policy: policy.source.clone(),
        mode: policy.mode.as_str(),
        default: policy.default.as_str(),
        options,
        findings,
    }
}

fn finding(endpoint: &Endpoint, policy: &Policy, options: CheckOptions) -> Finding {
    let mut f = Finding {
        receiver: endpoint.receiver.clone(),
        field: endpoint.field.clone(),
        origin: endpoint.origin.clone(),
        location: endpoint.location.clone(),
        destination: None,
        status: Status::Invalid,
        reason: String::new(),
        addresses: Vec::new(),
        notes: Vec::new(),
    };
    match destination::read(endpoint) {
        destination::Reading::Decided {
            primary,
            others,
            notes,
        } => {
            let mut verdict = decide::decide(policy, &primary, options.resolve);
            f.notes = notes;
            for other in &others {
                let v = decide::decide(policy, other, options.resolve);
                if verdict.allow && !v.allow {
                    verdict.allow = false;
                    verdict.rule = format!("{} (as {other})", v.rule);
                }
                verdict.addresses.extend(v.addresses);
            }
            f.status = if verdict.allow {
                Status::Allow
            } else {
                Status::Deny
            };
            f.reason = verdict.rule;
            f.addresses = verdict.addresses;
            f.notes.extend(verdict.notes);
            f.destination = Some(primary);
        }
        destination::Reading::Templated => {
            f.status = Status::Undecided;
            f.reason = "templated: cannot be decided statically".to_owned();
        }
        destination::Reading::Undecidable(why) => {
            f.status = Status::Undecided;
            f.reason = format!("cannot be decided statically: {why}");
        }
        destination::Reading::Invalid(why) => f.reason = why,
    }
    if let Some(proxy) = &endpoint.via_proxy {
        f.notes.push(format!(
            "sent through the proxy in {proxy}: the kernel sees the proxy connection"
        ));
    }
    f
}
