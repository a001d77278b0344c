//! The workload of the integration tests. It moves itself into the cgroup given with
//! `--cgroup` *before* creating any socket (a socket belongs to the cgroup of the task that
//! created it), enters a fresh network namespace with only `lo` up (so nothing can leave the
//! machine: a non-loopback destination fails with ENETUNREACH unless the enforcer says EPERM
//! first), prints `ready`, then runs one command per stdin line and answers one line each:
//!
//! ```text
//! connect tcp|udp|udplite ADDR PORT → ok | errno N
//! sendto udp|udplite ADDR PORT        → ok | errno N     (unconnected, the sendmsg hooks)
//! listen tcp ADDR PORT        → ok PORT          (a listener inside the namespace)
//! flood tcp|udp ADDR PORT N    → ok EPERM_COUNT OTHER_COUNT   (N connects in a tight loop)
//! flood-for tcp|udp ADDR PORT MS → ok EPERM_COUNT OTHER_COUNT  (connects in a tight loop for
//!                                 MS milliseconds)
//! resolve NAME a|aaaa SERVER PORT → ok ADDR...  | error TEXT
//!                              (a DNS query over a connected UDP socket, as glibc and Go do)
//! rounds NAME SERVER PORT CPORT N → ok ADDRS EPERM REFUSED OTHER FAILED_QUERIES
//!                              (N times: resolve A, then TCP connect() to every answer)
//! alternate udp A1 A2 PORT MS  → ok EPERM1 OTHER1 EPERM2 OTHER2  (connects to A1, A2, A1, ...
//!                                 for MS milliseconds)
//! uring connect|sendmsg ADDR PORT async|sqpoll → ok | errno N
//!                              (TCP connect / UDP sendmsg through io_uring, on an io-wq worker
//!                               or the ring's SQPOLL thread)
//! attack ...                   → (see `integration_tests::attack`: routing headers, source
//!                                 routes, ping and raw sockets)
//! hold N                       → ok N | errno E after I   (opens N UDP sockets and keeps them
//!                                 open, raising the soft RLIMIT_NOFILE up to the hard one)
//! release                      → ok N   (closes the held sockets)
//! ```
//! With `--first-connect tcp|udp ADDR PORT` it does that one call right after entering the
//! namespace and exits with the result on stdout instead of reading commands; `--first CMD`
//! does the same for any one command line. Before that command: `--rename NAME` renames the
//! process (prctl PR_SET_NAME), `--reexec` re-executes it through `/proc/self/exe` (comm
//! `exe`), `--exec PATH` executes PATH (another probe binary) in its place, `--spawn PATH` runs the command in a child that execs PATH (another probe binary). With
//! `--netns PATH` (e.g. `/proc/PID/ns/net` of another probe) it joins that empty namespace
//! instead of creating one (creating a namespace per process is slow). Arguments
//! `--cluster.*=VALUE` are ignored (Alertmanager's flags, which the agent reads). With
//! `--as-pid PID` the probe first forks a child with that exact PID (`clone3` with `set_tid`;
//! exit status 17 when the PID is taken), which does the rest while the parent waits for it
//! and exits with its status: how tests place processes at chosen tgids.
use std::{
    io::{BufRead, Write},
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    time::Duration,
};

use integration_tests::dns;

fn main() {
    if let Err(e) = real_main() {
        eprintln!("probe: {e}");
        std::process::exit(2);
    }
}

fn real_main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cgroup = None;
    let mut first = None;
    let mut netns = None;
    let mut rename = None;
    let mut reexec = false;
    let mut exec = None;
    let mut spawn = None;
    let mut as_pid = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--cgroup" => {
                cgroup = args.get(i + 1).cloned();
                i += 2;
            }
            "--netns" => {
                netns = args.get(i + 1).cloned();
                i += 2;
            }
            "--first-connect" => {
                first = Some(format!(
                    "connect {}",
                    args.get(i + 1..i + 4)
                        .ok_or("--first-connect PROTO ADDR PORT")?
                        .join(" ")
                ));
                i += 4;
            }
            "--first" => {
                first = Some(args.get(i + 1).ok_or("--first CMD")?.clone());
                i += 2;
            }
            "--rename" => {
                rename = args.get(i + 1).cloned();
                i += 2;
            }
            "--reexec" => {
                reexec = true;
                i += 1;
            }
            "--exec" => {
                exec = args.get(i + 1).cloned();
                i += 2;
            }
            "--spawn" => {
                spawn = args.get(i + 1).cloned();
                i += 2;
            }
            "--as-pid" => {
                let pid = args.get(i + 1).and_then(|p| p.parse::<i32>().ok());
                as_pid = Some(pid.ok_or("--as-pid PID")?);
                i += 2;
            }
            // Alertmanager's cluster flags, for the agent to read from the command line.
            flag if flag.starts_with("--cluster.") => i += 1,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if let Some(pid) = as_pid {
        fork_as(pid)?;
    }
    if let Some(cg) = cgroup {
        std::fs::write(format!("{cg}/cgroup.procs"), std::process::id().to_string())
            .map_err(|e| format!("joining cgroup {cg}: {e}"))?;
    }
    match netns {
        Some(path) => join_netns(&path)?,
        None => enter_empty_netns()?,
    }
    let mut listeners = Vec::new();
    if let Some(cmd) = first {
        if let Some(name) = rename {
            let c = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
            // SAFETY: PR_SET_NAME with a NUL-terminated string.
            unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
        }
        let again = ["--netns", "/proc/self/ns/net", "--first", &cmd];
        if reexec || exec.is_some() {
            use std::os::unix::process::CommandExt as _;
            let path = exec.unwrap_or_else(|| "/proc/self/exe".to_owned());
            let e = std::process::Command::new(&path).args(again).exec();
            return Err(format!("exec {path}: {e}"));
        }
        if let Some(path) = spawn {
            let out = std::process::Command::new(&path)
                .args(again)
                .output()
                .map_err(|e| format!("{path}: {e}"))?;
            print!("{}", String::from_utf8_lossy(&out.stdout));
            return Ok(());
        }
        println!("{}", run(&cmd, &mut listeners));
        return Ok(());
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "ready").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let reply = run(&line, &mut listeners);
        writeln!(out, "{reply}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `struct clone_args` of clone3(2), up to `set_tid_size` (CLONE_ARGS_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
}

/// Forks a child with PID `pid` (in this, the initial PID namespace) and returns in it; the
/// parent waits for the child and exits with its status (17 when `pid` is in use). The probe
/// is single-threaded here, so the child may go on running Rust code.
fn fork_as(pid: i32) -> Result<(), String> {
    let tid = [pid];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM (a fork); `args` and `tid` outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EEXIST) {
            eprintln!("probe: pid {pid} is taken");
            std::process::exit(17);
        }
        return Err(format!("clone3 with pid {pid}: {e}"));
    }
    if r == 0 {
        return Ok(());
    }
    let mut status = 0;
    // SAFETY: waits for the child just created.
    unsafe { libc::waitpid(r as i32, &mut status, 0) };
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    std::process::exit(code);
}

fn run(line: &str, listeners: &mut Vec<TcpListener>) -> String {
    let parts: Vec<&str> = line.split_whitespace().collect();
    // `zombie`: a child that exits at once and stays unreaped until `reap PID`; the reply is
    // its pid.
    if let ["zombie"] = parts[..] {
        // SAFETY: the child calls only _exit (async-signal-safe) after the fork.
        return match unsafe { libc::fork() } {
            // SAFETY: ends the forked child at once, running nothing of the parent's state.
            0 => unsafe { libc::_exit(0) },
            -1 => format!("error fork: {}", std::io::Error::last_os_error()),
            pid => pid.to_string(),
        };
    }
    if let ["reap", pid] = parts[..] {
        let Ok(pid) = pid.parse::<i32>() else {
            return format!("bad command {line:?}");
        };
        let mut status = 0;
        // SAFETY: waits for a child of this process.
        return if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            "reaped".to_owned()
        } else {
            format!("error waitpid: {}", std::io::Error::last_os_error())
        };
    }
    if let [verb @ ("flood" | "flood-for"), proto, addr, port, n] = parts[..] {
        let ty = if proto == "tcp" {
            libc::SOCK_STREAM
        } else {
            libc::SOCK_DGRAM
        };
        let (Ok(ip), Ok(port), Ok(n)) = (
            addr.parse::<IpAddr>(),
            port.parse::<u16>(),
            n.parse::<u64>(),
        ) else {
            return format!("bad command {line:?}");
        };
        // `flood`: n calls; `flood-for`: calls until n milliseconds have passed.
        let end = std::time::Instant::now() + Duration::from_millis(n);
        let (mut eperm, mut other) = (0u64, 0u64);
        // The clock is read every 64 calls, so it costs the loop nothing.
        let done = |calls: u64| match verb {
            "flood" => calls >= n,
            _ => calls.is_multiple_of(64) && std::time::Instant::now() >= end,
        };
        let mut calls = 0u64;
        while !done(calls) {
            calls += 1;
            match syscall_connect(ty, SocketAddr::new(ip, port)) {
                Err(libc::EPERM) => eperm += 1,
                _ => other += 1,
            }
        }
        return format!("ok {eperm} {other}");
    }
    if let ["resolve", name, qtype, server, port, ref linger @ ..] = parts[..] {
        // An optional linger (ms): the socket stays open that long after the answer, so
        // datagrams the server sends after it still reach the socket.
        let linger = linger.first().and_then(|l| l.parse::<u64>().ok());
        let qtype = match qtype {
            "aaaa" => dns::TYPE_AAAA,
            "txt" => dns::TYPE_TXT,
            _ => dns::TYPE_A,
        };
        let Ok(server) = format!("{server}:{port}")
            .parse::<SocketAddr>()
            .or_else(|_| format!("[{server}]:{port}").parse())
        else {
            return format!("bad server {server}");
        };
        return match resolve(name, qtype, server, linger) {
            Ok(addrs) => {
                let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                format!("ok {}", list.join(" ")).trim_end().to_owned()
            }
            Err(e) => format!("error {e}"),
        };
    }
    if let ["rounds", name, server, port, cport, n] = parts[..] {
        let (Ok(server), Ok(cport), Ok(n)) = (
            format!("{server}:{port}").parse::<SocketAddr>(),
            cport.parse::<u16>(),
            n.parse::<u64>(),
        ) else {
            return format!("bad command {line:?}");
        };
        let (mut addrs, mut eperm, mut refused, mut other, mut failed) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        for _ in 0..n {
            match resolve(name, dns::TYPE_A, server, None) {
                Ok(list) if !list.is_empty() => {
                    for ip in list {
                        addrs += 1;
                        match syscall_connect(libc::SOCK_STREAM, SocketAddr::new(ip, cport)) {
                            Err(libc::EPERM) => eperm += 1,
                            Err(libc::ECONNREFUSED) => refused += 1,
                            _ => other += 1,
                        }
                    }
                }
                _ => failed += 1,
            }
        }
        return format!("ok {addrs} {eperm} {refused} {other} {failed}");
    }
    if let ["alternate", "udp", a1, a2, port, ms] = parts[..] {
        let (Ok(a1), Ok(a2), Ok(port), Ok(ms)) = (
            a1.parse::<IpAddr>(),
            a2.parse::<IpAddr>(),
            port.parse::<u16>(),
            ms.parse::<u64>(),
        ) else {
            return format!("bad command {line:?}");
        };
        let mut counts = [0u64; 4];
        let end = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        while std::time::Instant::now() < end {
            for (i, a) in [a1, a2].into_iter().enumerate() {
                match syscall_connect(libc::SOCK_DGRAM, SocketAddr::new(a, port)) {
                    Err(libc::EPERM) => counts[2 * i] += 1,
                    _ => counts[2 * i + 1] += 1,
                }
            }
        }
        return format!("ok {} {} {} {}", counts[0], counts[1], counts[2], counts[3]);
    }
    if let ["hold", n] = parts[..] {
        let Ok(n) = n.parse::<usize>() else {
            return format!("bad command {line:?}");
        };
        return hold(n);
    }
    if parts[..] == ["release"] {
        let mut held = HELD
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = held.len();
        held.clear();
        return format!("ok {n}");
    }
    if let ["attack", rest @ ..] = &parts[..] {
        return integration_tests::attack::run(rest);
    }
    if let ["uring", op, addr, port, mode] = parts[..] {
        use integration_tests::uring;
        let (Ok(ip), Ok(port)) = (addr.parse::<IpAddr>(), port.parse::<u16>()) else {
            return format!("bad address {addr} {port}");
        };
        let op = match op {
            "connect" => uring::Op::Connect,
            "sendmsg" => uring::Op::SendMsg,
            _ => return format!("bad command {line:?}"),
        };
        let mode = match mode {
            "async" => uring::Mode::Async,
            "sqpoll" => uring::Mode::SqPoll,
            _ => return format!("bad command {line:?}"),
        };
        return reply(uring::run(op, mode, SocketAddr::new(ip, port)));
    }
    let [verb, proto, addr, port] = parts[..] else {
        return format!("bad command {line:?}");
    };
    let (Ok(ip), Ok(port)) = (addr.parse::<IpAddr>(), port.parse::<u16>()) else {
        return format!("bad address {addr} {port}");
    };
    let sa = SocketAddr::new(ip, port);
    match (verb, proto) {
        ("connect", "tcp") => reply(syscall_connect(libc::SOCK_STREAM, sa)),
        ("connect", "udp") => reply(syscall_connect(libc::SOCK_DGRAM, sa)),
        ("connect", "udplite") => reply(syscall_connect_proto(
            libc::SOCK_DGRAM,
            libc::IPPROTO_UDPLITE,
            sa,
        )),
        ("sendto", "udp") => reply(syscall_sendto(sa, 0)),
        ("sendto", "udplite") => reply(syscall_sendto(sa, libc::IPPROTO_UDPLITE)),
        ("listen", "tcp") => match TcpListener::bind(sa) {
            Ok(l) => {
                let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                listeners.push(l);
                format!("ok {port}")
            }
            Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
        },
        _ => format!("bad command {line:?}"),
    }
}

/// Sockets opened by `hold`, closed by `release` (or at exit).
static HELD: std::sync::Mutex<Vec<std::os::fd::OwnedFd>> = std::sync::Mutex::new(Vec::new());

/// Opens `n` more UDP sockets and keeps them open.
fn hold(n: usize) -> String {
    let mut held = HELD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // The soft limit up to the hard one (raising the hard limit needs CAP_SYS_RESOURCE).
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return format!("getrlimit errno {}", errno());
        }
        limit.rlim_cur = limit.rlim_max.min((held.len() + n + 1024) as libc::rlim_t);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return format!("setrlimit errno {}", errno());
        }
    }
    for i in 0..n {
        // SAFETY: plain socket(2); the descriptor is owned by the OwnedFd below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return format!("errno {} after {i}", errno());
        }
        use std::os::fd::FromRawFd as _;
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        held.push(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    }
    format!("ok {n}")
}

/// One query over a connected UDP socket (a fresh socket and id per query).
fn resolve(
    name: &str,
    qtype: u16,
    server: SocketAddr,
    linger: Option<u64>,
) -> Result<Vec<IpAddr>, String> {
    static ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    let bind: SocketAddr = if server.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    }
    .parse()
    .map_err(|_| "bind")?;
    let sock = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    sock.connect(server).map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let id = ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    sock.send(&dns::query(id, name, qtype))
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 1500];
    loop {
        let n = sock.recv(&mut buf).map_err(|e| format!("recv: {e}"))?;
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            if let Some(ms) = linger {
                std::thread::sleep(Duration::from_millis(ms));
            }
            return dns::parse_addresses(&buf[..n]).map_err(|e| e.to_string());
        }
    }
}

fn reply(r: Result<(), i32>) -> String {
    match r {
        Ok(()) => "ok".to_owned(),
        Err(errno) => format!("errno {errno}"),
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// A raw sockaddr for `sa` (IPv6 addresses stay AF_INET6, mapped ones included).
fn sockaddr(sa: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t, i32) {
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match sa {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin) };
            (
                ss,
                std::mem::size_of::<libc::sockaddr_in>() as _,
                libc::AF_INET,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            (
                ss,
                std::mem::size_of::<libc::sockaddr_in6>() as _,
                libc::AF_INET6,
            )
        }
    }
}

fn syscall_connect(ty: i32, sa: SocketAddr) -> Result<(), i32> {
    syscall_connect_proto(ty, 0, sa)
}

fn syscall_connect_proto(ty: i32, protocol: i32, sa: SocketAddr) -> Result<(), i32> {
    let (ss, len, family) = sockaddr(sa);
    // SAFETY: plain socket syscalls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::socket(family, ty | libc::SOCK_CLOEXEC, protocol);
        if fd < 0 {
            return Err(errno());
        }
        let r = libc::connect(fd, (&raw const ss).cast(), len);
        let e = errno();
        libc::close(fd);
        if r == 0 { Ok(()) } else { Err(e) }
    }
}

fn syscall_sendto(sa: SocketAddr, protocol: i32) -> Result<(), i32> {
    let (ss, len, family) = sockaddr(sa);
    let payload = b"probe";
    // SAFETY: as above.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, protocol);
        if fd < 0 {
            return Err(errno());
        }
        let r = libc::sendto(
            fd,
            payload.as_ptr().cast(),
            payload.len(),
            0,
            (&raw const ss).cast(),
            len,
        );
        let e = errno();
        libc::close(fd);
        if r >= 0 { Ok(()) } else { Err(e) }
    }
}

/// setns into the namespace at `path` (which another probe created: only `lo`, no route out).
fn join_netns(path: &str) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    use std::os::fd::AsRawFd as _;
    // SAFETY: setns on a namespace fd we hold open.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {path}: errno {}", errno()));
    }
    Ok(())
}

/// unshare(CLONE_NEWNET) and bring `lo` up: the new namespace has no other interface and no
/// route out of this machine.
fn enter_empty_netns() -> Result<(), String> {
    // SAFETY: unshare/socket/ioctl with valid arguments; the ifreq is fully initialised.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(format!("unshare(CLONE_NEWNET): errno {}", errno()));
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: errno {}", errno()));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            libc::close(fd);
            return Err(format!("SIOCGIFFLAGS lo: errno {}", errno()));
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        let r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        libc::close(fd);
        if r != 0 {
            return Err(format!("SIOCSIFFLAGS lo up: errno {}", errno()));
        }
    }
    Ok(())
}
