//! What a host name from a URL means to the kernel: an address, the local system, or a DNS
//! name decided by the policy's FQDN rules.
//!
//! Go's `net` accepts only dotted-decimal IPv4 and standard IPv6 as literals and resolves
//! anything else — and a C resolver (getaddrinfo → `inet_aton`) reads `2852039166`,
//! `0251.0376.0251.0376`, `0xa9fea9fe` or `169.254.43518` as 169.254.169.254. We decide such
//! spellings as the address they spell, whatever resolver Alertmanager was built with.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A host as the kernel will see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// No host (`http://:9093/`): Go dials the local system.
    Local,
    /// A literal address (in whatever spelling).
    Ip {
        addr: IpAddr,
        /// IPv6 zone (`fe80::1%eth0`), kept for display; the kernel decides the address.
        zone: Option<String>,
        /// How it was written, when that is not the address's usual form.
        spelled: Option<String>,
    },
    /// A DNS name: lower case, ASCII (IDNA applied), without a trailing dot.
    Name(String),
}

impl Host {
    /// The addresses the kernel sees without any DNS: an empty host, `0.0.0.0` and `::` are
    /// dialed as loopback by Go; `localhost` names resolve to loopback (RFC 6761).
    pub fn static_addresses(&self) -> Vec<IpAddr> {
        const V4_LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
        const V6_LOOPBACK: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
        match self {
            Host::Local => vec![V4_LOOPBACK, V6_LOOPBACK],
            Host::Ip { addr, .. } if addr.is_unspecified() => {
                let loopback = if addr.is_ipv4() {
                    V4_LOOPBACK
                } else {
                    V6_LOOPBACK
                };
                vec![*addr, loopback]
            }
            Host::Ip { addr, .. } => vec![*addr],
            Host::Name(n) if is_localhost(n) => vec![V4_LOOPBACK, V6_LOOPBACK],
            Host::Name(_) => Vec::new(),
        }
    }
}

/// `localhost` and `*.localhost`: loopback by RFC 6761 (and /etc/hosts, nss-myhostname).
pub fn is_localhost(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Local => f.write_str("(empty host: the local system)"),
            Host::Ip {
                addr,
                zone,
                spelled,
            } => {
                match (addr, zone) {
                    (IpAddr::V6(a), Some(z)) => write!(f, "[{a}%{z}]")?,
                    (IpAddr::V6(a), None) => write!(f, "[{a}]")?,
                    (IpAddr::V4(a), _) => write!(f, "{a}")?,
                }
                if let Some(s) = spelled {
                    write!(f, " (written {})", s.escape_debug())?;
                }
                Ok(())
            }
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// Why a host cannot be decided: it is neither a clear address nor a clear name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host {0:?} looks like an IP address but is not a valid one")]
    NumericName(String),
    #[error("host {0:?} has a zone but is not an IPv6 address")]
    ZoneWithoutIpv6(String),
    #[error("non-ASCII host {0:?} has no IDNA form")]
    Idna(String),
    #[error("empty host name {0:?}")]
    Empty(String),
}

/// Reads a host name (Go's `URL.Hostname()`, or the host of a `host:port`).
pub fn classify(hostname: &str) -> Result<Host, HostError> {
    if hostname.is_empty() {
        return Ok(Host::Local);
    }
    if !hostname.is_ascii() {
        // Go's HTTP client maps a non-ASCII host with IDNA (UTS #46) before dialing, so a
        // fullwidth `１６９.２５４.１６９.２５４` is dialed as 169.254.169.254.
        return match url::Host::parse(hostname) {
            Ok(url::Host::Domain(d)) => match classify(&d)? {
                Host::Ip { addr, zone, .. } => Ok(Host::Ip {
                    addr,
                    zone,
                    spelled: Some(hostname.to_owned()),
                }),
                other => Ok(other),
            },
            Ok(url::Host::Ipv4(v4)) => Ok(Host::Ip {
                addr: IpAddr::V4(v4),
                zone: None,
                spelled: Some(hostname.to_owned()),
            }),
            Ok(url::Host::Ipv6(v6)) => Ok(Host::Ip {
                addr: IpAddr::V6(v6),
                zone: None,
                spelled: Some(hostname.to_owned()),
            }),
            Err(_) => Err(HostError::Idna(hostname.to_owned())),
        };
    }
    if let Some((addr, zone)) = hostname.split_once('%') {
        let v6: Ipv6Addr = addr
            .parse()
            .map_err(|_| HostError::ZoneWithoutIpv6(hostname.to_owned()))?;
        return Ok(Host::Ip {
            addr: IpAddr::V6(v6),
            zone: Some(zone.to_owned()),
            spelled: spelled_if_unusual(hostname, &IpAddr::V6(v6), Some(zone)),
        });
    }
    if let Ok(addr) = hostname.parse::<IpAddr>() {
        return Ok(Host::Ip {
            addr,
            zone: None,
            spelled: spelled_if_unusual(hostname, &addr, None),
        });
    }
    if let Some(v4) = inet_aton(hostname) {
        return Ok(Host::Ip {
            addr: IpAddr::V4(v4),
            zone: None,
            spelled: Some(hostname.to_owned()),
        });
    }
    let name = hostname.strip_suffix('.').unwrap_or(hostname);
    if name.is_empty() || name.starts_with('.') {
        return Err(HostError::Empty(hostname.to_owned()));
    }
    if name.rsplit('.').next().is_some_and(looks_numeric) {
        // A browser refuses such a host; a resolver may read part of it as a number.
        return Err(HostError::NumericName(hostname.to_owned()));
    }
    Ok(Host::Name(name.to_ascii_lowercase()))
}

/// The spelling, when it differs from the address's canonical text (uppercase, zeros, ...).
fn spelled_if_unusual(written: &str, addr: &IpAddr, zone: Option<&str>) -> Option<String> {
    let canonical = match zone {
        Some(z) => format!("{addr}%{z}"),
        None => addr.to_string(),
    };
    (canonical != written).then(|| written.to_owned())
}

/// A label a resolver may take for a number: decimal digits, or `0x` and hex digits.
fn looks_numeric(label: &str) -> bool {
    let hex = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// The classic `inet_aton` (and WHATWG IPv4) reading: one to four parts, each decimal,
/// octal (leading `0`) or hex (`0x`); the last part fills the remaining bytes; one trailing
/// dot is allowed.
pub fn inet_aton(text: &str) -> Option<Ipv4Addr> {
    let text = text.strip_suffix('.').unwrap_or(text);
    if text.is_empty() {
        return None;
    }
    let parts = text
        .split('.')
        .map(inet_part)
        .collect::<Option<Vec<u64>>>()?;
    let (last, init) = parts.split_last()?;
    if init.len() > 3 || init.iter().any(|&p| p > 255) {
        return None;
    }
    let last_bits = 8 * (4 - init.len());
    if *last >= 1u64 << last_bits {
        return None;
    }
    let mut value = *last;
    for (i, part) in init.iter().enumerate() {
        value |= part << (8 * (3 - i));
    }
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

fn inet_part(part: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            if hex.is_empty() {
                return Some(0);
            }
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Anything longer overflows 32 bits in every radix; cap before parsing.
    let digits = digits.trim_start_matches('0');
    if digits.len() > 11 {
        return None;
    }
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, radix).ok()
}
