//! What Go reads from a URL or a `host:port`: Alertmanager is a Go program, so its
//! destinations are what Go's `net/url.Parse` and `net.SplitHostPort` make of the text, not
//! what a browser (WHATWG) parser would. This follows Go's algorithm step by step where it
//! decides the host and port (`net/url/url.go`: `Parse`, `getScheme`, `parseAuthority`,
//! `parseHost`, `unescape`, `validUserinfo`, `validOptionalPort`, `URL.Hostname`,
//! `URL.Port`; `net/ipsock.go`: `SplitHostPort`), and rejects what Go rejects.

use std::fmt;

/// Why Go would refuse a URL or address (Alertmanager then refuses the configuration, or the
/// notification fails before any connection).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GoUrlError {
    #[error("control character in URL")]
    ControlCharacter,
    #[error("missing protocol scheme")]
    MissingScheme,
    #[error("invalid userinfo (Go's net/url rejects the character {0:?} before '@')")]
    InvalidUserinfo(char),
    #[error("missing ']' in host")]
    MissingBracket,
    #[error("invalid port {0:?} after host")]
    InvalidPort(String),
    #[error("invalid URL escape {0:?}")]
    InvalidEscape(String),
    #[error("invalid character {0:?} in host name")]
    InvalidHostCharacter(char),
    #[error("missing port in address")]
    MissingPort,
    #[error("too many colons in address")]
    TooManyColons,
    #[error("unexpected '[' or ']' in address")]
    UnexpectedBracket,
}

/// The parts of a URL that decide where Go connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoUrl {
    /// Lower case, as Go stores it.
    pub scheme: String,
    /// `url.URL.Host` after unescaping: `host`, `host:port`, `[v6%zone]:port`.
    pub host: String,
    /// There was `user[:password]@` before the host (never printed).
    pub userinfo: bool,
    /// `scheme:opaque` without `//` (Go then has no host).
    pub opaque: bool,
}

impl GoUrl {
    /// `url.URL.Hostname()`: the host without port and brackets, zone kept (`fe80::1%eth0`).
    pub fn hostname(&self) -> &str {
        split_host_port_lenient(&self.host).0
    }

    /// `url.URL.Port()`: the digits after the host, empty when absent.
    pub fn port(&self) -> &str {
        split_host_port_lenient(&self.host).1
    }
}

impl fmt::Display for GoUrl {
    /// `scheme://host`, without userinfo, path, query or fragment (they may carry secrets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)
    }
}

/// `net/url.Parse`, as far as scheme, userinfo and host go (path, query and fragment are
/// checked for bad escapes only, as Go does).
pub fn parse_url(raw: &str) -> Result<GoUrl, GoUrlError> {
    let (without_fragment, fragment) = match raw.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (raw, None),
    };
    if without_fragment.bytes().any(|b| b < b' ' || b == 0x7f) {
        return Err(GoUrlError::ControlCharacter);
    }
    let (scheme, rest) = get_scheme(without_fragment)?;
    let scheme = scheme.to_ascii_lowercase();
    let rest = if rest.ends_with('?') && rest.matches('?').count() == 1 {
        &rest[..rest.len() - 1]
    } else {
        rest.split_once('?').map_or(rest, |(r, _)| r)
    };
    let mut url = GoUrl {
        scheme,
        host: String::new(),
        userinfo: false,
        opaque: false,
    };
    if !rest.starts_with('/') {
        if !url.scheme.is_empty() {
            url.opaque = true;
        }
        return Ok(url);
    }
    let mut path = rest;
    if rest.starts_with("//") && (!url.scheme.is_empty() || !rest.starts_with("///")) {
        let authority_and_path = &rest[2..];
        let (authority, p) = match authority_and_path.find('/') {
            Some(i) => authority_and_path.split_at(i),
            None => (authority_and_path, ""),
        };
        path = p;
        let (userinfo, host) = parse_authority(authority)?;
        url.userinfo = userinfo;
        url.host = host;
    }
    unescape(path, Mode::Path)?;
    if let Some(fragment) = fragment {
        unescape(fragment, Mode::Fragment)?;
    }
    Ok(url)
}

/// `getScheme`: letters, then letters, digits, `+-.` up to `:`. No valid scheme → none.
fn get_scheme(raw: &str) -> Result<(&str, &str), GoUrlError> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err(GoUrlError::MissingScheme),
            b':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

/// `parseAuthority`: the host is after the *last* `@`.
fn parse_authority(authority: &str) -> Result<(bool, String), GoUrlError> {
    let Some(at) = authority.rfind('@') else {
        return Ok((false, parse_host(authority)?));
    };
    let host = parse_host(&authority[at + 1..])?;
    let userinfo = &authority[..at];
    if let Some(bad) = userinfo.chars().find(|&c| !valid_userinfo_char(c)) {
        return Err(GoUrlError::InvalidUserinfo(bad));
    }
    unescape(userinfo, Mode::UserPassword)?;
    Ok((true, host))
}

fn valid_userinfo_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c)
}

/// `parseHost`: brackets for IPv6 (a zone is `%25zone`), an optional all-digit port, and
/// percent escapes only for non-ASCII bytes (and `%25`).
fn parse_host(host: &str) -> Result<String, GoUrlError> {
    if host.starts_with('[') {
        let close = host.rfind(']').ok_or(GoUrlError::MissingBracket)?;
        let colon_port = &host[close + 1..];
        if !valid_optional_port(colon_port) {
            return Err(GoUrlError::InvalidPort(colon_port.to_owned()));
        }
        if let Some(zone) = host[..close].find("%25") {
            let a = unescape(&host[..zone], Mode::Host)?;
            let b = unescape(&host[zone..close], Mode::Zone)?;
            let c = unescape(&host[close..], Mode::Host)?;
            return Ok(format!("{a}{b}{c}"));
        }
    } else if let Some(colon) = host.rfind(':') {
        let colon_port = &host[colon..];
        if !valid_optional_port(colon_port) {
            return Err(GoUrlError::InvalidPort(colon_port.to_owned()));
        }
    }
    unescape(host, Mode::Host)
}

/// `validOptionalPort`: empty, or `:` and digits only.
fn valid_optional_port(port: &str) -> bool {
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
}

/// `splitHostPort` of net/url (used by `Hostname` and `Port`): never fails.
fn split_host_port_lenient(host_port: &str) -> (&str, &str) {
    let (mut host, mut port) = (host_port, "");
    if let Some(colon) = host_port.rfind(':')
        && valid_optional_port(&host_port[colon..])
    {
        host = &host_port[..colon];
        port = &host_port[colon + 1..];
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        host = inner;
    }
    (host, port)
}

/// `net.SplitHostPort` (how Alertmanager reads an email `smarthost`).
pub fn split_host_port(host_port: &str) -> Result<(String, String), GoUrlError> {
    let colon = host_port.rfind(':').ok_or(GoUrlError::MissingPort)?;
    let (host, j, k);
    if host_port.starts_with('[') {
        let end = host_port.find(']').ok_or(GoUrlError::MissingBracket)?;
        if end + 1 == host_port.len() {
            return Err(GoUrlError::MissingPort);
        } else if end + 1 != colon {
            return Err(if host_port.as_bytes()[end + 1] == b':' {
                GoUrlError::TooManyColons
            } else {
                GoUrlError::MissingPort
            });
        }
        host = &host_port[1..end];
        (j, k) = (1, end + 1);
    } else {
        host = &host_port[..colon];
        if host.contains(':') {
            return Err(GoUrlError::TooManyColons);
        }
        (j, k) = (0, 0);
    }
    if host_port[j..].contains('[') || host_port[k..].contains(']') {
        return Err(GoUrlError::UnexpectedBracket);
    }
    Ok((host.to_owned(), host_port[colon + 1..].to_owned()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Host,
    Zone,
    UserPassword,
    Path,
    Fragment,
}

/// `unescape`: checks escapes (and, in a host, the characters) and decodes `%XX`.
fn unescape(s: &str, mode: Mode) -> Result<String, GoUrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let escape = || s.get(i..(i + 3).min(s.len())).unwrap_or("%").to_owned();
            let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                return Err(GoUrlError::InvalidEscape(escape()));
            };
            let (Some(h), Some(l)) = (unhex(h), unhex(l)) else {
                return Err(GoUrlError::InvalidEscape(escape()));
            };
            let is_25 = h == 2 && l == 5;
            // In a host, %-encoding is for non-ASCII bytes only (and %25 for IPv6 zones).
            if mode == Mode::Host && h < 8 && !is_25 {
                return Err(GoUrlError::InvalidEscape(escape()));
            }
            let v = h << 4 | l;
            if mode == Mode::Zone && !is_25 && v != b' ' && should_escape_in_host(v) {
                return Err(GoUrlError::InvalidEscape(escape()));
            }
            out.push(v);
            i += 3;
        } else {
            if matches!(mode, Mode::Host | Mode::Zone) && b < 0x80 && should_escape_in_host(b) {
                return Err(GoUrlError::InvalidHostCharacter(char::from(b)));
            }
            out.push(b);
            i += 1;
        }
    }
    // Non-UTF-8 bytes cannot name a host Go could resolve; keep them visible, not lost.
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn unhex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// `shouldEscape(c, encodeHost)`: what may not appear raw in a host.
fn should_escape_in_host(c: u8) -> bool {
    !(c.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"".contains(&c))
}

/// Go's built-in service names (`net/lookup.go`), which `net.Dial` accepts as ports.
pub fn service_port(name: &str) -> Option<u16> {
    Some(match name.to_ascii_lowercase().as_str() {
        "ftp" => 21,
        "ssh" => 22,
        "telnet" => 23,
        "smtp" => 25,
        "gopher" => 70,
        "http" => 80,
        "pop3" => 110,
        "imap2" => 143,
        "imap3" => 220,
        "https" => 443,
        "submissions" => 465,
        "ftps" => 990,
        "imaps" => 993,
        "pop3s" => 995,
        _ => return None,
    })
}
