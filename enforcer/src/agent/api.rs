//! The API guard in the agent: the targets' listening ports (the guard's default ports), the
//! guard's event lines (with the calling process when it runs on this node) and its metrics.
use std::{
    io::Read as _,
    net::{IpAddr, SocketAddr},
    path::Path,
};

use aya::maps::{MapData, RingBuf};
use std::time::Instant;

use enforcer_common::{
    api::{ApiEvent, event_kind, surface},
    proto, verdict,
};

use super::{
    api_stream::{ConnKey, Out, Streams},
    auto::is_alertmanager,
};
use crate::{
    compile::CompiledApi,
    events::api::{self as api_events, ApiView, ConnectionView, PeerProcess, UnparsedView},
    kernel::{Kernel, KernelError},
    metrics::{LoggedLabels, Metrics, api::RequestLabels},
};

/// Bound on the command line read for `--web.listen-address`.
const MAX_CMDLINE: u64 = 1024 * 1024;

/// The guard's ring and what the agent needs to describe its events.
pub struct ApiGuard {
    ring: RingBuf<MapData>,
    /// The installed `api:` section (for `peer_allowed`); `None`: no section.
    api: Option<CompiledApi>,
    /// The web ports' connections, put back together.
    streams: Streams,
}

impl ApiGuard {
    pub fn start(kernel: &mut Kernel) -> Result<Self, KernelError> {
        Ok(Self {
            ring: kernel.take_api_events()?,
            api: None,
            streams: Streams::default(),
        })
    }

    /// The section now installed.
    pub fn update(&mut self, api: Option<&CompiledApi>) {
        self.api = api.cloned();
        crate::integrity::origin::guard_active(api.is_some());
    }

    /// Takes every queued event out of the ring (undecodable records are logged and skipped).
    pub fn take(&mut self) -> Vec<ApiEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            match crate::events::decode::<ApiEvent>(&item) {
                Ok(ev) => out.push(ev),
                Err(e) => tracing::error!(error = %e, "undecodable API guard event"),
            }
        }
        out
    }

    /// Writes what one event says as JSON lines, attributed to `target`; `netns_pids` are
    /// processes of the targets, in whose network namespace a peer process's socket is looked
    /// up. Stream events go through the reassembly first.
    pub fn report(&mut self, ev: &ApiEvent, target: &str, metrics: &Metrics, netns_pids: &[u32]) {
        let view = ApiView::new(ev);
        let ApiView::Stream {
            kind,
            peer_ip,
            peer_port,
            local_ip,
            port,
            cgroup_id,
            seq,
            chunk,
            payload_len,
            rst,
            pid,
            data,
        } = &view
        else {
            api_events::log_refused(&view, target);
            api_events::log_cluster_join(&view, target);
            return;
        };
        let key = ConnKey {
            cgroup: *cgroup_id,
            peer: SocketAddr::new(*peer_ip, *peer_port),
            local: SocketAddr::new(*local_ip, *port),
        };
        let now = Instant::now();
        let outs = match *kind {
            event_kind::STREAM_OPEN => self.streams.open(key, *pid, *seq, now),
            event_kind::STREAM_DATA => {
                self.streams
                    .data(key, *seq, *chunk, *payload_len, data, now)
            }
            _ => self.streams.close(key, *rst, *seq),
        };
        for out in &outs {
            self.write(out, target, metrics, netns_pids);
        }
    }

    /// Closes the connections idle for [`super::api_stream::IDLE`] (each an [`Out::Closed`]
    /// for [`ApiGuard::write`]).
    pub fn expire(&mut self) -> Vec<Out> {
        self.streams.expire(Instant::now())
    }

    /// One line (and its metrics) for what the reassembly found.
    pub fn write(&self, out: &Out, target: &str, metrics: &Metrics, netns_pids: &[u32]) {
        match out {
            Out::Opened { key, pid } => connection_line(key, target, "open", *pid, None),
            Out::Closed {
                key,
                pid,
                how,
                bytes,
                requests,
            } => connection_line(key, target, "close", *pid, Some((how, *bytes, *requests))),
            Out::Unparsed {
                key,
                reason,
                at_byte,
            } => {
                metrics.api.unparsed.inc();
                crate::events::emit(&UnparsedView {
                    event: "api_request_unparsed",
                    target,
                    peer_ip: key.peer.ip(),
                    peer_port: key.peer.port(),
                    local_ip: key.local.ip(),
                    port: key.local.port(),
                    reason,
                    at_byte: *at_byte,
                });
            }
            Out::Request {
                key,
                method,
                path,
                write,
            } => {
                let kind = if *write { "write" } else { "read" };
                metrics
                    .api
                    .requests
                    .get_or_create(&RequestLabels { kind })
                    .inc();
                if *write {
                    self.log_write(key, method, path, target, metrics, netns_pids);
                }
            }
        }
    }

    /// A state-changing request: its line, with the calling process when it runs on this node.
    fn log_write(
        &self,
        key: &ConnKey,
        method: &str,
        path: &str,
        target: &str,
        metrics: &Metrics,
        netns_pids: &[u32],
    ) {
        let allowed = self
            .api
            .as_ref()
            .is_none_or(|a| a.lookup(key.peer.ip(), surface::WEB, proto::TCP).0 == verdict::ALLOW);
        if api_events::path_class(path) == "silences" {
            crate::integrity::origin::silence_written();
        }
        let peer = peer_process(Path::new("/proc"), netns_pids, key.peer, key.local);
        metrics
            .api
            .logged_requests
            .get_or_create(&LoggedLabels {
                method: method.to_owned(),
                path_class: api_events::path_class(path),
                peer_allowed: if allowed { "true" } else { "false" },
            })
            .inc();
        let view = ApiView::Request {
            method: method.to_owned(),
            path: path.to_owned(),
            peer_ip: key.peer.ip(),
            peer_port: key.peer.port(),
            local_ip: key.local.ip(),
            port: key.local.port(),
            cgroup_id: key.cgroup,
        };
        api_events::log_request(&view, target, allowed, peer.as_ref());
    }
}

/// An `api_connection` line; `closed`: (how, bytes, requests).
fn connection_line(
    key: &ConnKey,
    target: &str,
    state: &'static str,
    pid: Option<u32>,
    closed: Option<(&&'static str, u64, u32)>,
) {
    crate::events::emit(&ConnectionView {
        event: "api_connection",
        state,
        target,
        peer_ip: key.peer.ip(),
        peer_port: key.peer.port(),
        local_ip: key.local.ip(),
        port: key.local.port(),
        pid,
        how: closed.map(|c| *c.0),
        bytes: closed.map(|c| c.1),
        requests: closed.map(|c| c.2),
    });
}

/// The ports of the `--web.listen-address` flags of the Alertmanager processes among `pids`
/// (9093 for one without the flag).
pub fn listen_ports(proc_root: &Path, pids: &[u32]) -> Vec<u16> {
    let mut ports = Vec::new();
    for pid in pids {
        let dir = proc_root.join(pid.to_string());
        if !is_alertmanager(&dir) {
            continue;
        }
        let mut cmdline = Vec::new();
        let Ok(file) = std::fs::File::open(dir.join("cmdline")) else {
            continue;
        };
        if file.take(MAX_CMDLINE).read_to_end(&mut cmdline).is_err() {
            continue;
        }
        let found = web_listen_ports(&cmdline);
        if found.is_empty() {
            ports.push(crate::policy::api::ALERTMANAGER_DEFAULT_PORT);
        }
        ports.extend(found);
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The cgroup ids (inode numbers of their cgroup2 directories) of the processes `pids`, sorted
/// and unique; processes that are gone or outside the cgroup2 mount are left out.
pub fn cgroup_ids(proc_root: &Path, pids: &[u32]) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(mount) = crate::cgroup::cgroup2_mount() else {
        return Vec::new();
    };
    let mut ids: Vec<u64> = pids
        .iter()
        .filter_map(|pid| {
            let text =
                std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
            let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
            std::fs::metadata(mount.join(rel.trim_start_matches('/')))
                .ok()
                .map(|m| m.ino())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The ports of every `--web.listen-address` in a NUL-separated command line.
pub fn web_listen_ports(cmdline: &[u8]) -> Vec<u16> {
    super::cluster::flag_values(cmdline, "--web.listen-address")
        .iter()
        .filter_map(|v| v.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .collect()
}

/// The process on this node holding the socket `peer` → `local` (the caller's end of a
/// connection to a target), found in the connection table of a target's network namespace
/// and the file descriptors of every process.
pub fn peer_process(
    proc_root: &Path,
    netns_pids: &[u32],
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<PeerProcess> {
    let inode = netns_pids.iter().find_map(|pid| {
        let net = proc_root.join(pid.to_string()).join("net");
        ["tcp", "tcp6"]
            .iter()
            .find_map(|f| socket_inode(&std::fs::read_to_string(net.join(f)).ok()?, peer, local))
    })?;
    let needle = format!("socket:[{inode}]");
    for entry in std::fs::read_dir(proc_root).ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == needle.as_str())
        });
        if holds {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            let cgroup = cgroup
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("")
                .to_owned();
            return Some(PeerProcess {
                pid,
                comm: comm.trim_end().to_owned(),
                cgroup,
            });
        }
    }
    None
}

/// The inode of the socket whose local end is `peer` and remote end `local`, in the text of
/// `/proc/<pid>/net/tcp` or `tcp6`.
pub fn socket_inode(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<u64> {
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        if same(parse_endpoint(f[1]), peer) && same(parse_endpoint(f[2]), local) {
            return f[9].parse().ok().filter(|&i| i != 0);
        }
    }
    None
}

fn same(a: Option<SocketAddr>, b: SocketAddr) -> bool {
    a.is_some_and(|a| {
        a.port() == b.port()
            && crate::policy::normalize_addr(a.ip()) == crate::policy::normalize_addr(b.ip())
    })
}

/// `0100007F:2385` (IPv4) or 32 hex digits `:PORT` (IPv6): the kernel prints each 32-bit word
/// of the address as a native-order number.
fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::from(word(addr)?),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(&addr[i * 8..i * 8 + 8])?);
            }
            IpAddr::from(b)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_ports_from_the_command_line() {
        let cmd = b"alertmanager\0--web.listen-address=127.0.0.1:9093\0--web.listen-address\0[::1]:9095\0--\0--web.listen-address=:1\0";
        assert_eq!(web_listen_ports(cmd), vec![9093, 9095]);
        assert!(web_listen_ports(b"alertmanager\0--config.file=a\0").is_empty());
    }

    #[test]
    fn socket_of_a_connection_in_the_tcp_table() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 4200007F:A1B2 0100007F:2385 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1\n";
        let peer: SocketAddr = "127.0.0.66:41394".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9093".parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(socket_inode(v4, peer, local), Some(4242));
            let v6 = "header\n   0: 00000000000000000000000001000000:A1B2 00000000000000000000000001000000:2385 01 0:0 0:0 0 0 0 77 1\n";
            let peer6: SocketAddr = "[::1]:41394".parse().unwrap();
            let local6: SocketAddr = "[::1]:9093".parse().unwrap();
            assert_eq!(socket_inode(v6, peer6, local6), Some(77));
        }
        assert_eq!(socket_inode(v4, local, peer), None);
    }
}
