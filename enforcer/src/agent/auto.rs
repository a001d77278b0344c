//! What a running Alertmanager itself needs, read through `/proc/<pid>/` and turned into
//! ordinary allow [`Rule`]s appended to the policy the agent installs:
//!
//! - the `nameserver`s of the process's own `/etc/resolv.conf` (read inside its mount
//!   namespace), on port 53, TCP and UDP (`alertmanager.allow_own_dns`);
//! - the literal addresses of its `--cluster.peer` flags, on their ports, TCP and UDP
//!   (`alertmanager.allow_cluster_peers`).
//!
//! A peer given by DNS name cannot be pinned to an address here; it is reported as a
//! [`Warning`] and needs an explicit `allow` rule. Each rule is held for the one process it
//! was read from ([`admit`]): an `AUTO_ALLOW` entry keyed by its tgid, an explicit allow of
//! that process only (decision step 2), opening exactly that address + port + protocol
//! combination, also inside blocked ranges, never a `cloud-metadata` destination. Rules are
//! not part of the installed policy: the file's rules and their ids stay as they are.
use std::{
    collections::BTreeSet,
    ffi::CString,
    fs::File,
    io::Read as _,
    net::{IpAddr, SocketAddr},
    os::{
        fd::{AsRawFd as _, FromRawFd as _},
        unix::{ffi::OsStrExt as _, fs::OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

use enforcer_common::proto;
use ipnet::IpNet;

use crate::{
    agent::targets::{TargetSet, exe_name},
    kernel::comm_key,
    policy::{
        AlertmanagerSettings, AutoKind, Location, PortRange, Rule, RuleAction, RuleSource,
        normalize_net,
    },
};

/// Executable names of Alertmanager (upstream and Debian's package).
pub const ALERTMANAGER_NAMES: [&str; 2] = ["alertmanager", "prometheus-alertmanager"];

/// The resolver reads at most this many name servers (Go's and glibc's limit).
const MAX_NAME_SERVERS: usize = 3;
/// More than any real resolv.conf; a bigger file is read only this far.
const MAX_RESOLV_CONF: u64 = 64 * 1024;
/// Bound on the command line read (Linux allows 2 MiB of arguments).
const MAX_CMDLINE: u64 = 4 * 1024 * 1024;
/// Bound on the cgroup directories walked below a `--cgroup` in direct mode.
const MAX_CGROUP_DIRS: usize = 10_000;

/// Something a target needs that did not become a rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Warning {
    pub pid: u32,
    /// The flag as given (`--cluster.peer=am-1.am:9094`), or the resolv.conf path.
    pub subject: String,
    pub reason: String,
}

/// The rules for a set of Alertmanager processes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Derived {
    /// Sorted (name servers before peers); one rule per (kind, address, port, pid).
    pub rules: Vec<Rule>,
    pub warnings: Vec<Warning>,
}

/// Reads what the Alertmanager processes `pids` need (under `proc_root`, normally `/proc`).
/// Processes that are not Alertmanager, or that went away, contribute nothing.
pub fn derive(proc_root: &Path, pids: &[u32], settings: AlertmanagerSettings) -> Derived {
    let mut out = Derived::default();
    if !settings.allow_own_dns && !settings.allow_cluster_peers {
        return out;
    }
    let mut seen = BTreeSet::new();
    let mut pids = pids.to_vec();
    pids.sort_unstable();
    pids.dedup();
    for pid in pids {
        let dir = proc_root.join(pid.to_string());
        if !is_alertmanager(&dir) {
            continue;
        }
        let mut rules = Vec::new();
        if settings.allow_own_dns {
            let root = dir.join("root");
            let file = root.join("etc/resolv.conf").display().to_string();
            match read_in_root(&root, "etc/resolv.conf") {
                Ok(text) => {
                    for (addr, line) in name_servers(&text) {
                        let at = Location {
                            file: file.clone().into(),
                            line,
                            column: 1,
                        };
                        rules.push(rule(AutoKind::ResolvConf, addr, 53, pid, at));
                    }
                }
                // No resolv.conf (or the process just exited): nothing to allow.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => out.warnings.push(Warning {
                    pid,
                    subject: file,
                    reason: format!("cannot read it: {e}"),
                }),
            }
        }
        if settings.allow_cluster_peers
            && let Ok(cmdline) = read_limited(&dir.join("cmdline"), MAX_CMDLINE)
        {
            let flags = cluster_peers(&cmdline);
            let file = dir.join("cmdline").display().to_string();
            for peer in flags.peers {
                let at = Location {
                    file: file.clone().into(),
                    line: 1,
                    column: peer.column,
                };
                let addr = peer.addr;
                rules.push(rule(AutoKind::ClusterPeer, addr.ip(), addr.port(), pid, at));
            }
            out.warnings
                .extend(flags.unpinned.into_iter().map(|(flag, reason)| Warning {
                    pid,
                    subject: flag,
                    reason: reason.to_owned(),
                }));
        }
        for r in rules {
            if seen.insert((auto_kind(&r), r.net, r.ports.clone(), pid)) {
                out.rules.push(r);
            }
        }
    }
    out.rules.sort_by(|a, b| {
        (auto_kind(a), a.net, &a.ports, auto_pid(a)).cmp(&(
            auto_kind(b),
            b.net,
            &b.ports,
            auto_pid(b),
        ))
    });
    out
}

fn rule(kind: AutoKind, addr: IpAddr, port: u16, pid: u32, location: Location) -> Rule {
    Rule {
        action: RuleAction::Allow,
        net: normalize_net(IpNet::from(addr)),
        ports: vec![PortRange::single(port)],
        protocols: proto::TCP | proto::UDP,
        source: RuleSource::Auto { kind, pid },
        location,
    }
}

/// The kind of an automatic rule (`None` for the file's rules).
pub fn auto_kind(rule: &Rule) -> Option<AutoKind> {
    match rule.source {
        RuleSource::Auto { kind, .. } => Some(kind),
        _ => None,
    }
}

/// The pid an automatic rule was read from (`None` for the file's rules).
pub fn auto_pid(rule: &Rule) -> Option<u32> {
    match rule.source {
        RuleSource::Auto { pid, .. } => Some(pid),
        _ => None,
    }
}

/// Whether `/proc/<pid>` (`proc_dir`) is an Alertmanager process, by executable name.
pub fn is_alertmanager(proc_dir: &Path) -> bool {
    exe_name(proc_dir).is_some_and(|n| ALERTMANAGER_NAMES.contains(&n.as_str()))
}

/// Direct mode: the processes in the `--cgroup` directories and their descendants (whose
/// calls the programs attached there decide too).
pub fn cgroup_pids(cgroups: &[PathBuf]) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack: Vec<PathBuf> = cgroups.to_vec();
    let mut walked = 0;
    while let Some(dir) = stack.pop() {
        walked += 1;
        if walked > MAX_CGROUP_DIRS {
            break;
        }
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Scope mode: the Alertmanager processes that are targets — their comm is a `process:`
/// name, or their cgroup or an ancestor of it is a target cgroup — and run below `scope` (the
/// cgroup the programs are attached at; processes elsewhere are not enforced and must not
/// widen the policy).
pub fn scope_pids(proc_root: &Path, mount: &Path, scope: &Path, targets: &TargetSet) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return pids;
    };
    let comms: Vec<_> = targets.comms.iter().map(|c| comm_key(c)).collect();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let dir = e.path();
        if !is_alertmanager(&dir) {
            continue;
        }
        let Some(cgroup) = cgroup_dir(&dir, mount) else {
            continue;
        };
        if !cgroup.starts_with(scope) {
            continue;
        }
        let by_comm = std::fs::read_to_string(dir.join("comm"))
            .is_ok_and(|c| comms.contains(&comm_key(c.trim_end_matches('\n'))));
        if by_comm || in_target_cgroup(cgroup, mount, targets) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// The cgroup v2 directory of a process (`/proc/<pid>/cgroup`'s `0::` line under `mount`).
fn cgroup_dir(proc_dir: &Path, mount: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(proc_dir.join("cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(rel.trim_start_matches('/')))
}

/// Whether `cgroup` or an ancestor of it (up to `mount`) is a target cgroup.
fn in_target_cgroup(mut path: PathBuf, mount: &Path, targets: &TargetSet) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    if targets.cgroups.is_empty() {
        return false;
    }
    loop {
        if std::fs::metadata(&path).is_ok_and(|m| targets.cgroups.contains_key(&m.ino())) {
            return true;
        }
        if path == mount || !path.pop() {
            return false;
        }
    }
}

/// The name servers of a resolv.conf, with their line numbers: `nameserver ADDR` lines, an
/// IPv6 zone (`%eth0`) dropped, at most the first [`MAX_NAME_SERVERS`] valid ones (what the
/// resolver uses).
pub fn name_servers(text: &str) -> Vec<(IpAddr, usize)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(word) = words.next() else { continue };
        let addr = word.split_once('%').map_or(word, |(a, _)| a);
        if let Ok(ip) = addr.parse::<IpAddr>() {
            out.push((ip, i + 1));
            if out.len() == MAX_NAME_SERVERS {
                break;
            }
        }
    }
    out
}

/// One literal `--cluster.peer` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// 1-based byte column of the flag's value in the NUL-separated command line.
    pub column: usize,
}

/// The `--cluster.peer` flags of a command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerFlags {
    pub peers: Vec<Peer>,
    /// Flags that name no literal address: (flag as given, why).
    pub unpinned: Vec<(String, &'static str)>,
}

/// Reads `--cluster.peer=HOST:PORT` and `--cluster.peer HOST:PORT` (repeatable) from a
/// `/proc/<pid>/cmdline` (NUL-separated, argv[0] first), as Alertmanager's flag parser does:
/// arguments after `--` are not flags. No peer is needed when clustering is off
/// (`--cluster.listen-address=""`).
pub fn cluster_peers(cmdline: &[u8]) -> PeerFlags {
    let mut out = PeerFlags::default();
    let mut args = Vec::new();
    let mut offset = 0;
    for arg in cmdline.split(|&b| b == 0) {
        args.push((String::from_utf8_lossy(arg).into_owned(), offset));
        offset += arg.len() + 1;
    }
    if cmdline.last() == Some(&0) {
        args.pop();
    }
    let mut listen_off = false;
    let mut i = 1;
    while i < args.len() {
        if args[i].0 == "--" {
            break;
        }
        if let Some(v) = flag_value(&args, i, "--cluster.listen-address") {
            listen_off = v.value.is_empty();
            i = v.next;
            continue;
        }
        if let Some(v) = flag_value(&args, i, "--cluster.peer") {
            i = v.next;
            if v.value.is_empty() {
                continue;
            }
            match parse_peer(&v.value) {
                Ok(addr) => out.peers.push(Peer {
                    addr,
                    column: v.at + 1,
                }),
                Err(reason) => out.unpinned.push((v.flag, reason)),
            }
            continue;
        }
        i += 1;
    }
    if listen_off {
        out.peers.clear();
        out.unpinned.clear();
    }
    out
}

/// A flag's value in a command line.
struct FlagValue {
    value: String,
    /// Byte offset of the value in the command line.
    at: usize,
    /// The flag as given (`--name=value` or `--name value`).
    flag: String,
    /// Index of the next argument.
    next: usize,
}

/// `args[i]` as `--name=value`, or `--name` followed by the value.
fn flag_value(args: &[(String, usize)], i: usize, name: &str) -> Option<FlagValue> {
    let (arg, at) = &args[i];
    if let Some(value) = arg.strip_prefix(name).and_then(|v| v.strip_prefix('=')) {
        return Some(FlagValue {
            value: value.to_owned(),
            at: at + name.len() + 1,
            flag: arg.clone(),
            next: i + 1,
        });
    }
    if arg != name {
        return None;
    }
    let (value, at) = args.get(i + 1).cloned().unwrap_or_default();
    Some(FlagValue {
        flag: format!("{name} {value}"),
        value,
        at,
        next: i + 2,
    })
}

/// `HOST:PORT` with a literal host (`192.0.2.1:9094`, `[2001:db8::1]:9094`, an IPv6 zone is
/// dropped); the error says why it cannot be pinned.
fn parse_peer(value: &str) -> Result<SocketAddr, &'static str> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err("not HOST:PORT");
    };
    let port: u16 = match port.parse() {
        Ok(p) if p != 0 => p,
        _ => return Err("invalid port"),
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = host.split_once('%').map_or(host, |(h, _)| h);
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, port)),
        Err(_) if host.is_empty() => Err("no host"),
        Err(_) => Err(
            "peer given by DNS name: its addresses cannot be pinned; allow them with an explicit \
             allow rule (cidr and port)",
        ),
    }
}

/// Reads `rel` inside the filesystem root `root` (`/proc/<pid>/root`): symlinks resolve
/// within that root, as they do for the process itself (`openat2(RESOLVE_IN_ROOT)`). Only a
/// regular file is read (a FIFO could block the agent), at most [`MAX_RESOLV_CONF`] bytes.
fn read_in_root(root: &Path, rel: &str) -> std::io::Result<String> {
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    let root_dir = File::open(root)?;
    let c_rel = CString::new(rel).map_err(std::io::Error::other)?;
    // SAFETY: open_how is plain integers; zero is a valid value of every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with a directory fd we hold, a NUL-terminated path and the size of `how`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_dir.as_raw_fd(),
            c_rel.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    let file = if fd >= 0 {
        // SAFETY: openat2 returned a new fd that nothing else owns.
        unsafe { File::from_raw_fd(fd as i32) }
    } else {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(e);
        }
        // Kernels before 5.6: the path through the magic link (absolute symlinks inside
        // would resolve in the agent's root instead).
        let path = root.join(std::ffi::OsStr::from_bytes(rel.as_bytes()));
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)?
    };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_RESOLV_CONF).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn read_limited(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    File::open(path)?.take(max).read_to_end(&mut out)?;
    Ok(out)
}

mod admit;
pub use admit::{Admitted, MAX_PER_PROCESS, Refusal, admit, entry};

#[cfg(test)]
mod tests;
