//! The API guard's events: decoding its ring-buffer records and their JSON lines.
//!
//! `api_peer_refused` / `would_refuse`: a peer outside the `api:` allow list opened a
//! connection to a guarded port (its SYN was dropped, or let through in audit mode), or, on a
//! cluster port, sent a datagram; `surface` says which (`web` or `cluster`).
//! `api_request`: a state-changing HTTP call reached a guarded port (parsed by the agent out of
//! the connection's stream, `agent::api_stream`); `api_connection`: an accepted connection to
//! a web port opened or closed (bytes, requests); `api_request_unparsed`: where the stream
//! could not be followed.
//! `cluster_join`: an allowed peer started a gossip session on a cluster port (a TCP
//! connection, or a datagram from an address not seen recently).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use enforcer_common::{
    EventHeader,
    api::{API_EVENT_VERSION, ApiEvent, HEAD_LEN, event_kind, surface},
    proto::{IPPROTO_TCP, IPPROTO_UDP},
};
use serde::Serialize;

use super::{DecodeError, Record, emit};

impl Record for ApiEvent {
    const KINDS: &'static [u16] = &[
        event_kind::PEER_REFUSED,
        event_kind::PEER_WOULD_REFUSE,
        event_kind::CLUSTER_JOIN,
        event_kind::STREAM_OPEN,
        event_kind::STREAM_DATA,
        event_kind::STREAM_CLOSE,
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
        /// `web` or `cluster`.
        surface: &'static str,
        /// `tcp`, `udp`, or `unparsed` (an IPv6 packet with extension headers).
        protocol: &'static str,
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
    /// A piece of a web port's stream ([`event_kind::STREAM_OPEN`], `STREAM_DATA`,
    /// `STREAM_CLOSE`), for the agent's reassembly.
    Stream {
        kind: u16,
        peer_ip: IpAddr,
        peer_port: u16,
        local_ip: IpAddr,
        port: u16,
        cgroup_id: u64,
        seq: u32,
        chunk: u8,
        payload_len: u32,
        rst: bool,
        pid: Option<u32>,
        data: Vec<u8>,
    },
    ClusterJoin {
        protocol: &'static str,
        peer_ip: IpAddr,
        peer_port: u16,
        local_ip: IpAddr,
        port: u16,
        /// The target process that received it (its socket's creator); `None` when the socket
        /// carries no mark.
        pid: Option<u32>,
        generation: u32,
    },
}

/// The name of an IP protocol number of a guard event.
fn protocol_name(p: u8) -> &'static str {
    match p {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        _ => "unparsed",
    }
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
        if matches!(
            ev.header.kind,
            event_kind::STREAM_OPEN | event_kind::STREAM_DATA | event_kind::STREAM_CLOSE
        ) {
            return ApiView::Stream {
                kind: ev.header.kind,
                peer_ip,
                peer_port: ev.peer_port,
                local_ip,
                port: ev.local_port,
                cgroup_id: ev.header.cgroup_id,
                seq: ev.seq,
                chunk: ev.chunk,
                payload_len: ev.payload_len,
                rst: ev.tcp_flags & 0x04 != 0,
                pid: (ev.owner_tgid != 0).then_some(ev.owner_tgid),
                data: ev.head[..usize::from(ev.head_len).min(HEAD_LEN)].to_vec(),
            };
        }
        if ev.header.kind == event_kind::CLUSTER_JOIN {
            return ApiView::ClusterJoin {
                protocol: protocol_name(ev.protocol),
                peer_ip,
                peer_port: ev.peer_port,
                local_ip,
                port: ev.local_port,
                pid: (ev.owner_tgid != 0).then_some(ev.owner_tgid),
                generation: ev.generation,
            };
        }
        ApiView::Refused {
            audit: ev.header.kind == event_kind::PEER_WOULD_REFUSE,
            surface: surface::name(u16::from(ev.surface)),
            protocol: protocol_name(ev.protocol),
            peer_ip,
            peer_port: ev.peer_port,
            local_ip,
            port: ev.local_port,
            suppressed: ev.suppressed,
            generation: ev.generation,
        }
    }
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
    /// `web` (the HTTP API) or `cluster` (the gossip port).
    pub surface: &'static str,
    /// `tcp` (a SYN), `udp` (a datagram), `unparsed` (IPv6 extension headers).
    pub protocol: &'static str,
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
        surface,
        protocol,
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
        surface,
        protocol,
        peer_ip: *peer_ip,
        peer_port: *peer_port,
        local_ip: *local_ip,
        port: *port,
        suppressed_since_last: *suppressed,
        generation: *generation,
    });
}

/// What one cluster join line says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterJoinView<'a> {
    pub event: &'static str,
    pub target: &'a str,
    /// `tcp` (a push/pull or reliable-message session) or `udp` (a datagram from a peer not
    /// seen recently).
    pub protocol: &'static str,
    pub peer_ip: IpAddr,
    pub peer_port: u16,
    pub local_ip: IpAddr,
    pub port: u16,
    /// The Alertmanager process whose gossip socket received it.
    pub pid: Option<u32>,
    pub generation: u32,
}

/// Writes a cluster join line.
pub fn log_cluster_join(view: &ApiView, target: &str) {
    let ApiView::ClusterJoin {
        protocol,
        peer_ip,
        peer_port,
        local_ip,
        port,
        pid,
        generation,
    } = view
    else {
        return;
    };
    emit(&ClusterJoinView {
        event: "cluster_join",
        target,
        protocol,
        peer_ip: *peer_ip,
        peer_port: *peer_port,
        local_ip: *local_ip,
        port: *port,
        pid: *pid,
        generation: *generation,
    });
}

/// One `api_connection` line: an accepted connection to a web port opened or closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionView<'a> {
    pub event: &'static str,
    /// `open` or `close`.
    pub state: &'static str,
    pub target: &'a str,
    pub peer_ip: IpAddr,
    pub peer_port: u16,
    pub local_ip: IpAddr,
    pub port: u16,
    /// The Alertmanager process listening (its socket's creator).
    pub pid: Option<u32>,
    /// Close: `fin`, `rst` or `idle`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how: Option<&'static str>,
    /// Close: bytes the peer sent, and the requests parsed from them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u32>,
}

/// One `api_request_unparsed` line: where a web port's stream could not be followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnparsedView<'a> {
    pub event: &'static str,
    pub target: &'a str,
    pub peer_ip: IpAddr,
    pub peer_port: u16,
    pub local_ip: IpAddr,
    pub port: u16,
    pub reason: &'static str,
    /// Bytes of the connection's stream before that point.
    pub at_byte: u64,
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
    fn path_classes() {
        assert_eq!(path_class("/api/v2/silence/8c1f"), "silences");
        assert_eq!(path_class("/api/v2/alerts"), "alerts");
        assert_eq!(path_class("/-/reload"), "reload");
        assert_eq!(path_class("/api/v2/status"), "other");
    }
}
