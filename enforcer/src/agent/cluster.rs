//! The API guard's cluster (gossip) surface in the agent: each Alertmanager target's
//! `--cluster.listen-address` port (guarded when the `api:` section names no `cluster_ports`)
//! and its own literal `--cluster.peer` addresses, which the kernel lets in on that target's
//! cluster port ([`ClusterPeerKey`]: by the process that created the socket, and by its cgroup
//! for a socket created before the agent attached).
use std::{io::Read as _, net::IpAddr, path::Path};

use enforcer_common::api::{ClusterPeerKey, owner};

use super::auto::{cluster_peers, is_alertmanager};
use crate::policy::{api::ALERTMANAGER_DEFAULT_CLUSTER_PORT, normalize_addr};

/// Bound on the command line read.
const MAX_CMDLINE: u64 = 4 * 1024 * 1024;

/// The command line of `pid` when it is an Alertmanager process.
fn alertmanager_cmdline(proc_root: &Path, pid: u32) -> Option<Vec<u8>> {
    let dir = proc_root.join(pid.to_string());
    if !is_alertmanager(&dir) {
        return None;
    }
    let mut cmdline = Vec::new();
    std::fs::File::open(dir.join("cmdline"))
        .ok()?
        .take(MAX_CMDLINE)
        .read_to_end(&mut cmdline)
        .ok()?;
    Some(cmdline)
}

/// The values of every `--NAME=value` and `--NAME value` in a NUL-separated command line
/// (argv[0] first; nothing after `--`).
pub fn flag_values(cmdline: &[u8], name: &str) -> Vec<String> {
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if arg == "--" {
            break;
        }
        if let Some(v) = arg.strip_prefix(name).and_then(|v| v.strip_prefix('=')) {
            out.push(v.to_owned());
        } else if arg == name {
            i += 1;
            out.push(args.get(i).cloned().unwrap_or_default());
        }
        i += 1;
    }
    out
}

/// The gossip port of one Alertmanager command line: its last `--cluster.listen-address`
/// (9094 without one); `None` when clustering is off (an empty value) or the value has no
/// port.
pub fn cluster_listen_port(cmdline: &[u8]) -> Option<u16> {
    match flag_values(cmdline, "--cluster.listen-address").pop() {
        None => Some(ALERTMANAGER_DEFAULT_CLUSTER_PORT),
        Some(v) if v.is_empty() => None,
        Some(v) => v.rsplit_once(':').and_then(|(_, p)| p.parse().ok()),
    }
}

/// The gossip ports of the Alertmanager processes among `pids`, sorted, unique; `None` when
/// none of them is an Alertmanager process (the guard then watches the default 9094).
pub fn listen_ports(proc_root: &Path, pids: &[u32]) -> Option<Vec<u16>> {
    let mut found = false;
    let mut ports = Vec::new();
    for &pid in pids {
        let Some(cmdline) = alertmanager_cmdline(proc_root, pid) else {
            continue;
        };
        found = true;
        ports.extend(cluster_listen_port(&cmdline));
    }
    ports.sort_unstable();
    ports.dedup();
    found.then_some(ports)
}

/// The `API_CLUSTER_PEERS` keys of the Alertmanager processes among `pids`: each literal
/// `--cluster.peer` address keyed by the process, and by its cgroup (`cgroup_id` of a pid;
/// `None`: unknown, no cgroup key), sorted, unique. A mapped IPv6 spelling is keyed as IPv4,
/// as the kernel looks it up.
pub fn peer_keys(
    proc_root: &Path,
    pids: &[u32],
    cgroup_id: impl Fn(u32) -> Option<u64>,
) -> Vec<ClusterPeerKey> {
    let mut keys = Vec::new();
    for &pid in pids {
        let Some(cmdline) = alertmanager_cmdline(proc_root, pid) else {
            continue;
        };
        let cgroup = cgroup_id(pid);
        for peer in cluster_peers(&cmdline).peers {
            let (v4, addr) = match normalize_addr(peer.addr.ip()) {
                IpAddr::V4(a) => {
                    let mut b = [0u8; 16];
                    b[..4].copy_from_slice(&a.octets());
                    (1, b)
                }
                IpAddr::V6(a) => (0, a.octets()),
            };
            let key = |owner, kind| ClusterPeerKey {
                owner,
                kind,
                v4,
                addr,
            };
            keys.push(key(u64::from(pid), owner::PROCESS));
            if let Some(id) = cgroup {
                keys.push(key(id, owner::CGROUP));
            }
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gossip_port_of_a_command_line() {
        let am = |args: &str| format!("alertmanager\0{}", args.replace(' ', "\0")).into_bytes();
        assert_eq!(cluster_listen_port(&am("--config.file=a")), Some(9094));
        assert_eq!(
            cluster_listen_port(&am("--cluster.listen-address=127.0.0.2:9194")),
            Some(9194)
        );
        assert_eq!(
            cluster_listen_port(&am("--cluster.listen-address [::1]:7946")),
            Some(7946)
        );
        assert_eq!(cluster_listen_port(&am("--cluster.listen-address=")), None);
        assert_eq!(
            cluster_listen_port(&am(
                "--cluster.listen-address=:1 --cluster.listen-address=:2 -- --cluster.listen-address=:3"
            )),
            Some(2),
            "the last flag before `--` counts"
        );
    }

    #[test]
    fn peer_keys_of_a_fake_proc() {
        let dir = std::env::temp_dir().join(format!("enforcer-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = dir.join("42");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join("cmdline"),
            b"alertmanager\0--cluster.peer=10.0.0.2:9094\0--cluster.peer\0[::ffff:10.0.0.3]:9094\0--cluster.peer=am-1.am:9094\0",
        )
        .unwrap();
        std::os::unix::fs::symlink("/usr/bin/alertmanager", p.join("exe")).unwrap();
        let keys = peer_keys(&dir, &[42, 7], |_| Some(99));
        let _ = std::fs::remove_dir_all(&dir);
        let mut want = Vec::new();
        for last in [2u8, 3] {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&[10, 0, 0, last]);
            for (owner, kind) in [(42, owner::PROCESS), (99, owner::CGROUP)] {
                want.push(ClusterPeerKey {
                    owner,
                    kind,
                    v4: 1,
                    addr,
                });
            }
        }
        want.sort_unstable();
        assert_eq!(
            keys, want,
            "literal peers only, mapped as IPv4, both owners"
        );
    }
}
