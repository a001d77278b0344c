//! Shared by the API guard tests: a real Alertmanager in a namespace and cgroup of the test's
//! own with the agent attached, and clients that choose their source address.
#![allow(dead_code)]
use std::{
    io::{Read as _, Write as _},
    mem::size_of,
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::{FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    time::Duration,
};

use integration_tests::{Agent, ChildGuard, NetNs, TempDir, TestCgroup, wait_for};

pub const AM_PORT: u16 = 9093;

/// Alertmanager under the agent, in `ns`, member of `cg`.
pub struct Guarded {
    pub agent: Agent,
    pub am: ChildGuard,
    pub metrics: String,
    pub tmp: TempDir,
    /// Scope mode: Alertmanager's cgroup, a child of `cg` (the scope).
    pub am_cg: Option<TestCgroup>,
    pub cg: TestCgroup,
    pub ns: NetNs,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/e2e")
        .join(name)
}

impl Guarded {
    /// `api` is the policy's `api:` section, indented under it. The agent attaches to
    /// Alertmanager's cgroup (`--cgroup`).
    pub fn start(prefix: &str, api: &str) -> Self {
        Self::start_in(prefix, api, false)
    }

    /// Like [`Guarded::start`]; with `scope`, the agent runs in scope mode instead: `--scope`
    /// of the test's cgroup, Alertmanager in a child cgroup of it, a `process:` target.
    pub fn start_in(prefix: &str, api: &str, scope: bool) -> Self {
        Self::start_with(prefix, &format!("api:\n{api}"), scope)
    }

    /// The policy file [`Guarded::start_with`] writes: `sections` (e.g. an `api:` section)
    /// after a block of the cloud metadata service.
    pub fn policy_text(sections: &str, scope: bool) -> String {
        format!(
            "mode: enforce\ndefault: allow\nblock:\n  - preset: cloud-metadata\n{sections}{}",
            if scope {
                "targets:\n  - process: [prometheus-alertmanager]\n"
            } else {
                ""
            }
        )
    }

    /// Like [`Guarded::start_in`], with the policy's `sections` (`api:` and what else) given
    /// whole (none: no API guard).
    pub fn start_with(prefix: &str, sections: &str, scope: bool) -> Self {
        let ns = NetNs::new(prefix).unwrap();
        // A second IPv6 address on lo, inside the namespace only: a peer that is not ::1.
        ns.ip(&["-6", "addr", "add", "fd00::66/128", "dev", "lo"])
            .unwrap();
        let cg = TestCgroup::new().unwrap();
        let tmp = TempDir::new().unwrap();
        let policy = tmp.path.join("policy.yaml");
        std::fs::write(&policy, Self::policy_text(sections, scope)).unwrap();
        let metrics = metrics_address();
        let agent = Agent::start_args(
            Some(&policy),
            &[
                if scope { "--scope" } else { "--cgroup" },
                &cg.path_str(),
                "--metrics-address",
                &metrics,
            ],
        )
        .unwrap();
        let am_cg = scope.then(|| cg.child("am").unwrap());
        let storage = tmp.path.join("am");
        let mut cmd =
            ns.command_in_cgroup(am_cg.as_ref().unwrap_or(&cg), "prometheus-alertmanager");
        cmd.arg(format!(
            "--config.file={}",
            fixture("alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", storage.display()))
        .arg(format!("--web.listen-address=:{AM_PORT}"))
        .arg("--cluster.listen-address=");
        let log = tmp.path.join("alertmanager.log");
        let mut am = ChildGuard::spawn_logged("prometheus-alertmanager", &mut cmd, &log)
            .unwrap_or_else(|e| {
                panic!("starting Alertmanager ({e}); scripts/setup.sh installs it")
            });
        wait_for(Duration::from_secs(30), "Alertmanager's /-/ready", || {
            am.assert_alive();
            matches!(ns.http_get("127.0.0.1:9093", "/-/ready"), Ok((200, _))).then_some(())
        });
        Self {
            agent,
            am,
            metrics,
            tmp,
            am_cg,
            cg,
            ns,
        }
    }

    /// One counter series of the agent's /metrics (0 when absent).
    pub fn metric(&self, series: &str) -> u64 {
        metric(&self.metrics, series)
    }

    /// The event lines of `event` among those that arrive within `timeout`.
    pub fn events(&mut self, event: &str, timeout: Duration) -> Vec<serde_json::Value> {
        let all = self.agent.events_within(timeout);
        if all.len() > 50 {
            eprintln!(
                "{} event lines within {timeout:?}; the first: {:?}",
                all.len(),
                &all[..3]
            );
        }
        all.into_iter().filter(|e| e["event"] == event).collect()
    }
}

/// One counter series of the /metrics endpoint at `addr` (0 when absent).
pub fn metric(addr: &str, series: &str) -> u64 {
    let body = integration_tests::http_get(addr, "/metrics").unwrap_or_default();
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// A free port of 127.0.0.1 for an agent's metrics endpoint, as `127.0.0.1:PORT`.
pub fn metrics_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// A TCP socket bound to `from` (port 0) with a non-blocking connect to `to` started: the SYN
/// is sent before this returns. `from` need not be an address of the namespace
/// (`IP_FREEBIND`): with a `local` route covering it, the answer comes back to it.
pub fn start_connect(from: IpAddr, to: SocketAddr) -> std::io::Result<OwnedFd> {
    let family = if from.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a valid int option value of its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_IP,
            libc::IP_FREEBIND,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (src, src_len) = sockaddr(SocketAddr::new(from, 0));
    // SAFETY: `src` is a valid address of `src_len` bytes.
    if unsafe { libc::bind(fd, (&raw const src).cast(), src_len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (dst, dst_len) = sockaddr(to);
    // SAFETY: `dst` is a valid address of `dst_len` bytes.
    let r = unsafe { libc::connect(fd, (&raw const dst).cast(), dst_len) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(owned)
}

/// Connects from `from` to `to`; `Err(TimedOut)` when no answer came within `timeout`.
pub fn connect_from(from: IpAddr, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let fd = start_connect(from, to)?;
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&raw mut pfd, 1, timeout.as_millis() as i32) };
    if n == 0 {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    let stream = TcpStream::from(fd);
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// One HTTP request over `stream`; the response's status code.
pub fn request(mut stream: TcpStream, method: &str, path: &str, body: &str) -> u16 {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: am\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    integration_tests::status_and_body(&response).0
}
