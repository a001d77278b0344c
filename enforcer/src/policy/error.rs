//! Why a policy is rejected: a read error, or a [`Problem`] at a [`Location`] of the file.

use ipnet::IpNet;

use super::Location;

/// Why a policy was rejected.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: cannot read the policy")]
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

impl PolicyError {
    /// Where in the file the problem is (`None` for read errors).
    pub fn location(&self) -> Option<&Location> {
        match self {
            PolicyError::Read { .. } => None,
            PolicyError::Invalid { location, .. } => Some(location),
        }
    }

    /// What is wrong (`None` for read errors).
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            PolicyError::Read { .. } => None,
            PolicyError::Invalid { problem, .. } => Some(problem),
        }
    }
}

/// What is wrong at a [`Location`] of a policy file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("policy is not UTF-8 text")]
    NotUtf8,
    #[error("invalid YAML: {}", crate::input::cut(message))]
    Yaml { message: String },
    #[error(
        "policy is empty: it needs at least `default: allow|deny` and a `block` or `allow` list"
    )]
    Empty,
    #[error("{what} must be {expected}, found {found}")]
    WrongType {
        what: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error(
        "unknown key \"{}\" (expected one of: {expected})",
        crate::input::cut(key)
    )]
    UnknownKey { key: String, expected: &'static str },
    #[error(
        "duplicate key \"{}\" (first given at line {first_line}, column {first_column})",
        crate::input::cut(key)
    )]
    DuplicateKey {
        key: String,
        first_line: usize,
        first_column: usize,
    },
    #[error(
        "unknown mode \"{}\" (expected enforce or audit)",
        crate::input::cut(value)
    )]
    UnknownMode { value: String },
    #[error(
        "unknown default \"{}\" (expected allow or deny)",
        crate::input::cut(value)
    )]
    UnknownDefault { value: String },
    #[error(
        "more than {} {family} prefixes certainly take trie entries, all the trie holds: the \
         prefixes shorter than /{}, the /{full_len}s beyond the {} the exact map holds{}; \
         refused before parsing the rest",
        crate::input::grouped(*trie), blocks.map_or(*full_len, |_| 24),
        crate::input::grouped(*exact),
        blocks.map_or(String::new(), |b| format!(
            ", and one for each /24 with /24-/31 prefixes beyond the {} /24s the block map \
             holds", crate::input::grouped(b)))
    )]
    TooManyPrefixes {
        family: &'static str,
        /// Distinct prefixes of the family so far.
        distinct: usize,
        full_len: u8,
        exact: usize,
        trie: usize,
        /// The block map's capacity (IPv4).
        blocks: Option<usize>,
    },
    #[error(
        "{} distinct {family} /{full_len}s certainly go to the exact map, which holds {} per \
         rule set (a /{full_len} takes a trie entry only when it has more than {clauses} \
         clauses: named twice, inside a shorter prefix or preset, or with more than {clauses} \
         port ranges); this one is the first beyond it; refused before parsing the rest",
        crate::input::grouped(*certain), crate::input::grouped(*exact)
    )]
    TooManyExact {
        family: &'static str,
        full_len: u8,
        /// Full-length prefixes that can only go to the exact map.
        certain: usize,
        exact: usize,
        clauses: usize,
    },
    #[error("invalid CIDR \"{}\": {reason}", crate::input::cut(value))]
    InvalidCidr { value: String, reason: String },
    #[error(
        "CIDR \"{}\" has host bits set; did you mean {suggestion}?",
        crate::input::cut(value)
    )]
    HostBitsSet { value: String, suggestion: IpNet },
    #[error("unknown preset \"{}\" (known: {known})", crate::input::cut(name))]
    UnknownPreset { name: String, known: String },
    #[error("port {port} out of range 1..=65535")]
    PortOutOfRange { port: String },
    #[error(
        "invalid port \"{}\": expected a number 1..=65535 or a range like \"8000-8080\"",
        crate::input::cut(value)
    )]
    InvalidPort { value: String },
    #[error("port range {lo}-{hi} is reversed (did you mean {hi}-{lo}?)")]
    ReversedPortRange { lo: u16, hi: u16 },
    #[error(
        "unknown protocol \"{}\" (expected tcp or udp)",
        crate::input::cut(value)
    )]
    UnknownProtocol { value: String },
    #[error("{what} is empty; leave `{what}` out to match every {item}")]
    EmptyList {
        what: &'static str,
        item: &'static str,
    },
    #[error(
        "cluster_allow is empty; leave `cluster_allow` out to allow only each target's own \
         --cluster.peer addresses"
    )]
    EmptyClusterAllow,
    #[error("entry has both \"{first}\" and \"{second}\"; give exactly one")]
    ConflictingKeys {
        first: &'static str,
        second: &'static str,
    },
    #[error("entry needs one of: {expected}")]
    MissingKey { expected: &'static str },
    #[error("\"fqdn\" is only allowed in `allow`; block addresses with `cidr` or `preset`")]
    FqdnInBlock,
    #[error("invalid domain name \"{}\": {reason}", crate::input::cut(value))]
    InvalidFqdn { value: String, reason: String },
    #[error("{what} must not be empty")]
    EmptyValue { what: &'static str },
    #[error("invalid target \"{}\": {reason}", crate::input::cut(value))]
    InvalidTarget { value: String, reason: String },
    #[error(
        "invalid name server \"{}\": expected an address with an optional port, such as 127.0.0.1:5353 or [::1]:53",
        crate::input::cut(value)
    )]
    InvalidServer { value: String },
    #[error(
        "invalid duration \"{}\": expected seconds or a number with a unit (ms, s, m, h), such as 300 or 5m",
        crate::input::cut(value)
    )]
    InvalidDuration { value: String },
    #[error("{what} {} is out of range {range}", crate::input::cut(value))]
    OutOfRange {
        what: &'static str,
        value: String,
        /// Such as `1..=65536`.
        range: String,
    },
    #[error("invalid protected selector: {reason}")]
    InvalidSelector { reason: String },
    #[error("invalid notify url: {reason} (the URL is not repeated here: it may hold a secret)")]
    InvalidNotifyUrl { reason: &'static str },
}
