//! The benchmark's workload: `xtask bench workload-udp|workload-tcp`, started by the benchmark
//! itself (`current_exe()`). It joins its cgroup *before* creating any socket (a socket belongs
//! to the cgroup of the task that created it), enters a fresh network namespace with only `lo`
//! up — so no packet can leave the machine — runs its loop and prints one result line per
//! measurement as `key=value` words.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};

use super::sys;

#[derive(clap::Subcommand)]
pub enum Workload {
    /// N UDP connect() calls on one socket, cycling through the destinations (no packet is
    /// sent); every call must fail with errno `--expect` (EPERM denied, ENETUNREACH allowed).
    #[command(name = "workload-udp", hide = true)]
    Udp {
        #[arg(long)]
        cgroup: PathBuf,
        #[arg(long)]
        calls: u64,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        expect: i32,
        /// Comma-separated IPv4 addresses.
        #[arg(long, value_delimiter = ',')]
        dsts: Vec<Ipv4Addr>,
    },
    /// Rounds of N TCP connect()+accept()+close() to a loopback listener, alternately from the
    /// cgroup with the enforcer and from the cgroup without anything attached (ABBA order).
    #[command(name = "workload-tcp", hide = true)]
    Tcp {
        #[arg(long)]
        with: PathBuf,
        #[arg(long)]
        without: PathBuf,
        #[arg(long)]
        connects: u64,
        #[arg(long)]
        rounds: usize,
    },
    /// Rounds of N 64-byte UDP datagrams sent (unconnected `sendto`) to and received by a
    /// socket on loopback, in each cgroup in turn (ABBA order with two); prints the nanoseconds
    /// of each side per round and the datagrams sent in all.
    #[command(name = "workload-dgram", hide = true)]
    Dgram {
        #[arg(long, value_delimiter = ',')]
        cgroups: Vec<PathBuf>,
        #[arg(long)]
        packets: u64,
        #[arg(long)]
        rounds: usize,
        /// Datagrams per cgroup before the first round (caches, socket slabs).
        #[arg(long, default_value_t = 0)]
        warmup: u64,
    },
    /// A target's DNS traffic: a responder socket created in `--responder-cgroup` (outside the
    /// scope, so no program sees its packets), then the process moves into the target cgroup,
    /// connects a UDP socket to the responder's port 53 and asks N queries for `--name`; each
    /// answer (one A record, `--addr`) is delivered to the target's socket.
    #[command(name = "workload-dns", hide = true)]
    Dns {
        #[arg(long)]
        responder_cgroup: PathBuf,
        #[arg(long)]
        target_cgroup: PathBuf,
        #[arg(long)]
        answers: u64,
        #[arg(long)]
        name: String,
        #[arg(long)]
        addr: Ipv4Addr,
    },
}

pub fn run(w: &Workload) -> anyhow::Result<()> {
    match w {
        Workload::Udp {
            cgroup,
            calls,
            port,
            expect,
            dsts,
        } => {
            sys::join_cgroup(cgroup)?;
            enter_empty_netns()?;
            udp_loop(*calls, *port, *expect, dsts)
        }
        Workload::Tcp {
            with,
            without,
            connects,
            rounds,
        } => {
            sys::join_cgroup(with)?;
            enter_empty_netns()?;
            tcp_rounds(with, without, *connects, *rounds)
        }
        Workload::Dgram {
            cgroups,
            packets,
            rounds,
            warmup,
        } => {
            let first = cgroups.first().context("no cgroup")?;
            sys::join_cgroup(first)?;
            enter_empty_netns()?;
            super::scope_workload::dgram_rounds(cgroups, *packets, *rounds, *warmup)
        }
        Workload::Dns {
            responder_cgroup,
            target_cgroup,
            answers,
            name,
            addr,
        } => {
            sys::join_cgroup(responder_cgroup)?;
            enter_empty_netns()?;
            super::scope_workload::dns_answers(target_cgroup, *answers, name, *addr)
        }
    }
}

pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

pub(super) fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

pub(super) const SOCKADDR_LEN: libc::socklen_t =
    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

fn udp_loop(calls: u64, port: u16, expect: i32, dsts: &[Ipv4Addr]) -> anyhow::Result<()> {
    if dsts.is_empty() {
        bail!("no destinations");
    }
    let addrs: Vec<libc::sockaddr_in> = dsts
        .iter()
        .map(|ip| sockaddr(SocketAddrV4::new(*ip, port)))
        .collect();
    // SAFETY: plain socket syscall; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: errno {}", errno());
    }
    let mut unexpected = 0u64;
    let mut first_unexpected = 0;
    let start = Instant::now();
    for i in 0..calls {
        let sa = &addrs[(i % addrs.len() as u64) as usize];
        // SAFETY: `sa` is a valid sockaddr_in of SOCKADDR_LEN bytes.
        let r = unsafe { libc::connect(fd, (sa as *const libc::sockaddr_in).cast(), SOCKADDR_LEN) };
        let e = if r == 0 { 0 } else { errno() };
        if e != expect {
            if unexpected == 0 {
                first_unexpected = e;
            }
            unexpected += 1;
        }
    }
    let elapsed = start.elapsed();
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    println!(
        "calls={calls} elapsed_ns={} unexpected={unexpected} first_unexpected_errno={first_unexpected}",
        elapsed.as_nanos()
    );
    Ok(())
}

fn tcp_rounds(with: &Path, without: &Path, connects: u64, rounds: usize) -> anyhow::Result<()> {
    // SAFETY: plain socket syscalls on descriptors this function owns.
    let listener =
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if listener < 0 {
        bail!("socket: errno {}", errno());
    }
    let mut addr = sockaddr(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
    let mut len = SOCKADDR_LEN;
    // SAFETY: valid sockaddr_in buffers of `len` bytes.
    unsafe {
        if libc::bind(listener, (&raw const addr).cast(), len) != 0
            || libc::listen(listener, 1024) != 0
            || libc::getsockname(listener, (&raw mut addr).cast(), &mut len) != 0
        {
            bail!("loopback listener: errno {}", errno());
        }
    }
    let sides = [(with, "with"), (without, "without")];
    // Warm-up on both sides (caches, the trie path, socket slabs).
    for (cgroup, _) in sides {
        sys::join_cgroup(cgroup)?;
        connect_loop(listener, &addr, (connects / 10).max(100))?;
    }
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [sides[0], sides[1]]
        } else {
            [sides[1], sides[0]]
        };
        let mut ns = [0u128; 2];
        for (cgroup, name) in order {
            sys::join_cgroup(cgroup)?;
            let t = connect_loop(listener, &addr, connects)?;
            ns[usize::from(name == "without")] = t;
        }
        println!(
            "round={round} connects={connects} with_ns={} without_ns={}",
            ns[0], ns[1]
        );
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(listener) };
    Ok(())
}

/// `n` times: socket, connect to the listener, accept, close both (client with SO_LINGER 0, so
/// it resets instead of leaving TIME_WAIT sockets that would exhaust the ephemeral ports).
/// Returns the elapsed nanoseconds.
fn connect_loop(listener: i32, addr: &libc::sockaddr_in, n: u64) -> anyhow::Result<u128> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: plain socket syscalls with valid arguments on descriptors closed here.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                bail!("socket: errno {}", errno());
            }
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
            if libc::connect(fd, (addr as *const libc::sockaddr_in).cast(), SOCKADDR_LEN) != 0 {
                let e = errno();
                libc::close(fd);
                bail!("connect to the loopback listener: errno {e}");
            }
            let conn = libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            );
            if conn < 0 {
                let e = errno();
                libc::close(fd);
                bail!("accept: errno {e}");
            }
            libc::close(fd);
            libc::close(conn);
        }
    }
    Ok(start.elapsed().as_nanos())
}

/// unshare(CLONE_NEWNET) and bring `lo` up (as tests/src/bin/probe.rs does): the namespace has
/// no other interface and no route out of this machine.
fn enter_empty_netns() -> anyhow::Result<()> {
    // SAFETY: unshare/socket/ioctl with valid arguments; the ifreq is fully initialised.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            bail!("unshare(CLONE_NEWNET): errno {}", errno());
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: errno {}", errno());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            let e = errno();
            libc::close(fd);
            bail!("SIOCGIFFLAGS lo: errno {e}");
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        let r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        let e = errno();
        libc::close(fd);
        if r != 0 {
            bail!("SIOCSIFFLAGS lo up: errno {e}");
        }
    }
    Ok(())
}

/// Runs one workload (this binary, `bench <args>`) and reads its `key=value` result lines.
pub(super) fn run_child(
    args: &[String],
) -> anyhow::Result<Vec<std::collections::BTreeMap<String, u64>>> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let out = std::process::Command::new(&exe)
        .arg("bench")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {} bench {}", exe.display(), args[0]))?;
    ensure!(
        out.status.success(),
        "bench {} failed: {}",
        args[0],
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(|kv| {
                    let (k, v) = kv
                        .split_once('=')
                        .with_context(|| format!("bad workload output {line:?}"))?;
                    Ok((
                        k.to_owned(),
                        v.parse::<u64>()
                            .with_context(|| format!("bad workload output {line:?}"))?,
                    ))
                })
                .collect()
        })
        .collect()
}
