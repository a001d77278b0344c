//! The API guard's events: decoding its ring-buffer records and their JSON lines.
//!
//! `api_peer_refused` / `would_refuse`: a peer outside the `api:` allow list opened a
//! connection to a guarded port (its SYN was dropped, or let through in audit mode).
//! `api_request`: a state-changing HTTP call reached a guarded port.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use enforcer_common::{
    EventHeader,
    api::{API_EVENT_VERSION, ApiEvent, HEAD_LEN, event_kind},
};
use serde::Serialize;

use super::{DecodeError, Record, emit};

impl Record for ApiEvent {
    const KINDS: &'static [u16] = &[
        event_kind::PEER_REFUSED,
        event_kind::PEER_WOULD_REFUSE,
        event_kind::REQUEST,
    ];
    const VERSION: u16 = API_EVENT_VERSION;
    fn header(&self) -> &EventHeader {
        &self.header
    }
    fn check(&self) -> Result<(), DecodeError> {
        if usize::from(self.head_len) > HEAD_LEN {
            return Err(DecodeError::Length {
                kind: self.header.kind,
                len: u32::from(self.head_len),
                need: HEAD_LEN,
            });
        }
        Ok(())
    }
}

/// What a record says, in agent terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiView {
    /// `audit`: the SYN was let through.
    Refused {
        audit: bool,
        peer_ip: IpAddr,
        peer_port: u16,
        local_ip: IpAddr,
        port: u16,
        /// Refusals of this peer since its last line that were not written (rate limit).
        suppressed: u32,
        generation: u32,
    },
    Request {
        method: String,
        /// Without the query string.
        path: String,
        peer_ip: IpAddr,
        peer_port: u16,
        local_ip: IpAddr,
        port: u16,
        cgroup_id: u64,
    },
}

fn addr(family: u16, bytes: [u8; 16]) -> IpAddr {
    if family == libc::AF_INET as u16 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    }
}

impl ApiView {
    pub fn new(ev: &ApiEvent) -> Self {
        let peer_ip = addr(ev.family, ev.peer_addr);
        let local_ip = addr(ev.family, ev.local_addr);
        if ev.header.kind == event_kind::REQUEST {
            let head = &ev.head[..usize::from(ev.head_len).min(HEAD_LEN)];
            let (method, path) = request_line(head);
            return ApiView::Request {
                method,
                path,
                peer_ip,
                peer_port: ev.peer_port,
                local_ip,
                port: ev.local_port,
                cgroup_id: ev.header.cgroup_id,
            };
        }
        ApiView::Refused {
            audit: ev.header.kind == event_kind::PEER_WOULD_REFUSE,
            peer_ip,
            peer_port: ev.peer_port,
            local_ip,
            port: ev.local_port,
            suppressed: ev.suppressed,
            generation: ev.generation,
        }
    }
}

/// Method and path (query string cut off) of a request head; the path is cut at the head's
/// end when the request line is longer than the head.
pub fn request_line(head: &[u8]) -> (String, String) {
    let line_end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let mut parts = line.splitn(3, ' ');
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("");
    let path = target.split(['?', '#']).next().unwrap_or("").to_owned();
    (method, path)
}

/// The class of a path, for metrics labels (bounded: paths carry ids).
pub fn path_class(path: &str) -> &'static str {
    if path == "/-/reload" {
        "reload"
    } else if path.contains("/silence") {
        "silences"
    } else if path.contains("/alerts") {
        "alerts"
    } else if path.starts_with("/-/") {
        "management"
    } else {
        "other"
    }
}

/// The process on this node that holds the peer's end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerProcess {
    pub pid: u32,
    pub comm: String,
    pub cgroup: String,
}

/// What one refusal line says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedView<'a> {
    /// `api_peer_refused`, or `would_refuse` in audit mode.
    pub event: &'static str,
    pub mode: &'static str,
    pub target: &'a str,
    pub peer_ip: IpAddr,
    pub peer_port: u16,
    pub local_ip: IpAddr,
    pub port: u16,
    /// Refusals of this peer since its last line that got no line (rate limit).
    pub suppressed_since_last: u32,
    pub generation: u32,
}

/// What one request line says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestView<'a> {
    pub event: &'static str,
    pub target: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub path_class: &'static str,
    pub peer_ip: IpAddr,
    pub peer_port: u16,
    /// Whether the `api:` allow list (if any) lets the peer in.
    pub peer_allowed: bool,
    pub local_ip: IpAddr,
    pub port: u16,
    /// The calling process, when it runs on this node and was still connected.
    pub peer_pid: Option<u32>,
    pub peer_comm: Option<&'a str>,
    pub peer_cgroup: Option<&'a str>,
}

/// Writes a refusal line.
pub fn log_refused(view: &ApiView, target: &str) {
    let ApiView::Refused {
        audit,
        peer_ip,
        peer_port,
        local_ip,
        port,
        suppressed,
        generation,
    } = view
    else {
        return;
    };
    emit(&RefusedView {
        event: if *audit {
            "would_refuse"
        } else {
            "api_peer_refused"
        },
        mode: if *audit { "audit" } else { "enforce" },
        target,
        peer_ip: *peer_ip,
        peer_port: *peer_port,
        local_ip: *local_ip,
        port: *port,
        suppressed_since_last: *suppressed,
        generation: *generation,
    });
}

/// Writes a request line; `peer` is the calling process when it runs on this node.
pub fn log_request(view: &ApiView, target: &str, peer_allowed: bool, peer: Option<&PeerProcess>) {
    let ApiView::Request {
        method,
        path,
        peer_ip,
        peer_port,
        local_ip,
        port,
        ..
    } = view
    else {
        return;
    };
    emit(&RequestView {
        event: "api_request",
        target,
        method,
        path,
        path_class: path_class(path),
        peer_ip: *peer_ip,
        peer_port: *peer_port,
        peer_allowed,
        local_ip: *local_ip,
        port: *port,
        peer_pid: peer.map(|p| p.pid),
        peer_comm: peer.map(|p| p.comm.as_str()),
        peer_cgroup: peer.map(|p| p.cgroup.as_str()),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_drops_the_query_string() {
        assert_eq!(
            request_line(b"POST /api/v2/silences?x=1 HTTP/1.1\r\nHost: a\r\n"),
            ("POST".to_owned(), "/api/v2/silences".to_owned())
        );
        assert_eq!(
            request_line(b"DELETE /api/v2/silence/8c1f HTTP/1.1\r\n"),
            ("DELETE".to_owned(), "/api/v2/silence/8c1f".to_owned())
        );
        assert_eq!(
            request_line(b"GET /-/reload"),
            ("GET".into(), "/-/reload".into())
        );
        assert_eq!(path_class("/api/v2/silence/8c1f"), "silences");
        assert_eq!(path_class("/api/v2/alerts"), "alerts");
        assert_eq!(path_class("/-/reload"), "reload");
        assert_eq!(path_class("/api/v2/status"), "other");
    }
}
