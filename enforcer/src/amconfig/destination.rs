//! From a configured value to the (host, port) Alertmanager connects to.

use std::fmt;
use std::net::IpAddr;

use super::extract::{Endpoint, EndpointKind, Value};
use super::gourl::{self, GoUrl};
use super::host::{self, Host};

/// Where the kernel will see a connection go (TCP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// `http`, `https`, `socks5`, `smtp`: what is spoken, shown to humans.
    pub scheme: String,
    pub host: Host,
    pub port: u16,
}

impl fmt::Display for Destination {
    /// `scheme://host:port`: never userinfo, path or query (they carry tokens).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        match &self.host {
            Host::Local => {}
            Host::Ip {
                addr: IpAddr::V6(a),
                zone,
                ..
            } => match zone {
                Some(z) => write!(f, "[{a}%{}]", z.escape_debug())?,
                None => write!(f, "[{a}]")?,
            },
            Host::Ip {
                addr: IpAddr::V4(a),
                ..
            } => write!(f, "{a}")?,
            Host::Name(n) => f.write_str(n)?,
        }
        write!(f, ":{}", self.port)
    }
}

/// What a configured value means for the destination check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading {
    /// Decidable: Go's reading first; `others` are different readings of the same text by
    /// other URL parsers, decided too (the worst verdict wins).
    Decided {
        primary: Destination,
        others: Vec<Destination>,
        notes: Vec<String>,
    },
    /// Templated where the host is: filled in per alert.
    Templated,
    /// Goes somewhere the configuration does not say.
    Undecidable(String),
    /// Cannot be read unambiguously (or not at all).
    Invalid(String),
}

/// Reads an endpoint's value.
pub fn read(endpoint: &Endpoint) -> Reading {
    match &endpoint.value {
        Value::Text(text) => read_text(text, endpoint.kind),
        Value::File {
            path,
            content: Ok(text),
        } => match read_text(text, endpoint.kind) {
            Reading::Decided {
                primary,
                others,
                mut notes,
            } => {
                notes.insert(0, format!("read from {}", path.escape_debug()));
                Reading::Decided {
                    primary,
                    others,
                    notes,
                }
            }
            other => other,
        },
        Value::File {
            content: Err(e), ..
        } => Reading::Invalid(format!("unreadable file: {e}")),
        Value::Undecidable(why) => Reading::Undecidable(why.clone()),
        Value::Invalid(why) => Reading::Invalid(why.clone()),
    }
}

fn read_text(text: &str, kind: EndpointKind) -> Reading {
    match kind {
        EndpointKind::Smtp => read_smarthost(text),
        EndpointKind::Http | EndpointKind::Proxy => read_url(text, kind),
    }
}

/// A URL as Alertmanager's Go HTTP client dials it.
pub fn read_url(text: &str, kind: EndpointKind) -> Reading {
    if text == "<secret>" {
        return Reading::Invalid(
            "the URL is redacted as <secret> (a configuration dumped from Alertmanager's API)"
                .to_owned(),
        );
    }
    let mut notes = Vec::new();
    let text = match text.find("{{") {
        None => text,
        Some(i) => match static_authority(&text[..i]) {
            Some(prefix) => {
                notes.push("templated after the host: the host and port are fixed".to_owned());
                prefix
            }
            None => return Reading::Templated,
        },
    };
    let url = match gourl::parse_url(text) {
        Ok(u) => u,
        Err(e) => {
            return Reading::Invalid(format!(
                "ambiguous URL: Go's net/url rejects it ({e}), so Alertmanager refuses it, \
                 while other parsers read some host from it"
            ));
        }
    };
    let primary = match go_destination(&url, kind) {
        Ok(d) => d,
        Err(why) => return Reading::Invalid(why),
    };
    if url.userinfo {
        notes.push(format!(
            "the text before '@' is userinfo (not shown), the host is {}",
            primary.host
        ));
    }
    notes.extend(host_notes(&primary.host));
    let mut others = Vec::new();
    if let Some(other) = whatwg_destination(text)
        && !same_place(&other, &primary)
    {
        notes.push(format!(
            "ambiguous URL: a WHATWG parser (browsers, many proxies) reads {other}; decided too"
        ));
        others.push(other);
    }
    Reading::Decided {
        primary,
        others,
        notes,
    }
}

/// The `scheme://authority` of a templated URL, when the template starts after the host
/// (after the first `/`, `?` or `#` that follows `//`), so no alert can change the host.
fn static_authority(prefix: &str) -> Option<&str> {
    let slashes = prefix.find("//")?;
    if !prefix[..slashes].ends_with(':') {
        return None;
    }
    let start = slashes + 2;
    let end = start + prefix[start..].find(['/', '?', '#'])?;
    Some(&prefix[..end])
}

fn go_destination(url: &GoUrl, kind: EndpointKind) -> Result<Destination, String> {
    let default_port = match (kind, url.scheme.as_str()) {
        (_, "http") => 80,
        (_, "https") => 443,
        (EndpointKind::Proxy, "socks5" | "socks5h") => 1080,
        (_, other) => return Err(format!("unsupported URL scheme {other:?}")),
    };
    if url.host.is_empty() {
        return Err("URL has no host".to_owned());
    }
    let port = match url.port() {
        "" => default_port,
        digits => parse_port(digits)?,
    };
    let host = host::classify(url.hostname()).map_err(|e| format!("ambiguous URL: {e}"))?;
    Ok(Destination {
        scheme: url.scheme.clone(),
        host,
        port,
    })
}

fn parse_port(digits: &str) -> Result<u16, String> {
    let trimmed = digits.trim_start_matches('0');
    if trimmed.len() > 5 {
        return Err(format!("port {digits} is out of range"));
    }
    match trimmed.parse::<u32>() {
        _ if trimmed.is_empty() => Ok(0),
        Ok(p) => u16::try_from(p).map_err(|_| format!("port {digits} is out of range")),
        Err(_) => Err(format!("invalid port {digits:?}")),
    }
}

/// The same text read by the WHATWG URL standard (what a browser or many proxies do).
fn whatwg_destination(text: &str) -> Option<Destination> {
    let url = url::Url::parse(text).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let host = match url.host()? {
        url::Host::Domain(d) => host::classify(d).ok()?,
        url::Host::Ipv4(a) => Host::Ip {
            addr: IpAddr::V4(a),
            zone: None,
            spelled: None,
        },
        url::Host::Ipv6(a) => Host::Ip {
            addr: IpAddr::V6(a),
            zone: None,
            spelled: None,
        },
    };
    Some(Destination {
        scheme: url.scheme().to_owned(),
        host,
        port: url.port_or_known_default()?,
    })
}

/// What a reader of the destination line should know about its host.
fn host_notes(host: &Host) -> Vec<String> {
    match host {
        Host::Local => vec!["empty host: Go dials the local system (loopback)".to_owned()],
        Host::Ip { addr, spelled, .. } => {
            let mut notes = Vec::new();
            if let Some(s) = spelled {
                notes.push(format!("host written as {}", s.escape_debug()));
            }
            if addr.is_unspecified() {
                notes.push("Go dials the unspecified address as loopback".to_owned());
            }
            notes
        }
        Host::Name(_) => Vec::new(),
    }
}

/// Same address or name and port (the spelling does not matter).
fn same_place(a: &Destination, b: &Destination) -> bool {
    let same_host = match (&a.host, &b.host) {
        (Host::Ip { addr: x, .. }, Host::Ip { addr: y, .. }) => x == y,
        (x, y) => x == y,
    };
    same_host && a.port == b.port
}

/// An email `smarthost` (`host:port`, Go's `net.SplitHostPort`; the port may be a service
/// name such as `smtp`).
pub fn read_smarthost(text: &str) -> Reading {
    let (host, port) = match gourl::split_host_port(text) {
        Ok(hp) => hp,
        Err(e) => return Reading::Invalid(format!("invalid smarthost: {e}")),
    };
    let port = if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        match parse_port(&port) {
            Ok(p) => p,
            Err(why) => return Reading::Invalid(why),
        }
    } else if let Some(p) = gourl::service_port(&port) {
        p
    } else {
        return Reading::Invalid(format!(
            "unknown port {:?}",
            port.escape_debug().to_string()
        ));
    };
    let host = match host::classify(&host) {
        Ok(h) => h,
        Err(e) => return Reading::Invalid(format!("ambiguous smarthost: {e}")),
    };
    let notes = host_notes(&host);
    Reading::Decided {
        primary: Destination {
            scheme: "smtp".to_owned(),
            host,
            port,
        },
        others: Vec::new(),
        notes,
    }
}
