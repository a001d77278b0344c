use std::net::IpAddr;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cmdline(args: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for a in args {
        out.extend_from_slice(a.as_bytes());
        out.push(0);
    }
    out
}

#[test]
fn name_servers_of_resolv_conf() {
    let text = "\
# nameserver 10.0.0.1
; nameserver 10.0.0.2
search example.com
nameserver 127.0.0.53
nameserver   fe80::1%eth0   # trailing words are ignored
nameserver bogus
nameserver
options ndots:5
nameserver ::1
nameserver 192.0.2.4
";
    assert_eq!(
        name_servers(text),
        vec![(ip("127.0.0.53"), 4), (ip("fe80::1"), 5), (ip("::1"), 9)],
        "only the first three valid ones count"
    );
    assert!(name_servers("").is_empty());
    assert!(name_servers("domain example.com\n").is_empty());
}

#[test]
fn cluster_peer_flags_in_both_forms() {
    let flags = cluster_peers(&cmdline(&[
        "/usr/bin/prometheus-alertmanager",
        "--config.file=/etc/am.yml",
        "--cluster.peer=127.0.0.2:9094",
        "--cluster.peer",
        "[fd00::3]:9095",
        "--cluster.peer=am-1.am.monitoring.svc:9094",
        "--cluster.peer=",
        "--cluster.peers=10.0.0.9:9094",
        "--cluster.peer=10.0.0.1:0",
        "--cluster.peer=[fe80::1%eth0]:9094",
        "--",
        "--cluster.peer=10.9.9.9:9094",
    ]));
    let addrs: Vec<SocketAddr> = flags.peers.iter().map(|p| p.addr).collect();
    assert_eq!(
        addrs,
        vec![
            "127.0.0.2:9094".parse().unwrap(),
            "[fd00::3]:9095".parse().unwrap(),
            "[fe80::1]:9094".parse().unwrap(),
        ]
    );
    // The column points at the value in the NUL-separated command line.
    let line = cmdline(&[
        "/usr/bin/prometheus-alertmanager",
        "--config.file=/etc/am.yml",
    ]);
    assert_eq!(
        flags.peers[0].column,
        line.len() + "--cluster.peer=".len() + 1
    );
    let unpinned: Vec<&str> = flags.unpinned.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        unpinned,
        vec![
            "--cluster.peer=am-1.am.monitoring.svc:9094",
            "--cluster.peer=10.0.0.1:0"
        ]
    );
    assert!(flags.unpinned[0].1.contains("DNS name"), "{flags:?}");
}

#[test]
fn no_peers_when_clustering_is_off() {
    let flags = cluster_peers(&cmdline(&[
        "alertmanager",
        "--cluster.peer=127.0.0.2:9094",
        "--cluster.listen-address=",
    ]));
    assert_eq!(flags, PeerFlags::default());
    let flags = cluster_peers(&cmdline(&[
        "alertmanager",
        "--cluster.listen-address",
        "",
        "--cluster.peer",
        "127.0.0.2:9094",
    ]));
    assert_eq!(flags, PeerFlags::default());
    // A later non-empty listen address turns it back on.
    let flags = cluster_peers(&cmdline(&[
        "alertmanager",
        "--cluster.listen-address=",
        "--cluster.listen-address=127.0.0.3:9094",
        "--cluster.peer=127.0.0.2:9094",
    ]));
    assert_eq!(flags.peers.len(), 1);
    // No trailing NUL, a flag without its value: no panic, no peer.
    assert_eq!(
        cluster_peers(b"alertmanager\0--cluster.peer"),
        PeerFlags::default()
    );
}

/// A fake `/proc` with Alertmanager processes, removed on drop.
struct FakeProc(PathBuf);

impl FakeProc {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("enforcer-auto-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A process with an executable `exe`, a resolv.conf `resolv` (through an absolute
    /// symlink, which must resolve inside the process's root) and a command line.
    fn process(&self, pid: u32, exe: &str, resolv: &str, args: &[&str]) {
        let p = self.0.join(pid.to_string());
        std::fs::create_dir_all(p.join("root/etc")).unwrap();
        std::fs::create_dir_all(p.join("root/run")).unwrap();
        std::os::unix::fs::symlink(exe, p.join("exe")).unwrap();
        std::fs::write(p.join("root/run/resolv.conf"), resolv).unwrap();
        std::os::unix::fs::symlink("/run/resolv.conf", p.join("root/etc/resolv.conf")).unwrap();
        std::fs::write(p.join("cmdline"), cmdline(args)).unwrap();
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn describe(d: &Derived) -> Vec<String> {
    d.rules.iter().map(ToString::to_string).collect()
}

#[test]
fn derives_rules_from_proc() {
    let fake = FakeProc::new("derive");
    fake.process(
        4242,
        "/usr/bin/prometheus-alertmanager",
        "nameserver 127.0.0.53\n",
        &[
            "prometheus-alertmanager",
            "--cluster.peer=127.0.0.3:9094",
            "--cluster.peer=am-2.example:9094",
        ],
    );
    // The second replica: same name server, its own peer.
    fake.process(
        4343,
        "/opt/am/alertmanager",
        "nameserver 127.0.0.53\nnameserver ::ffff:192.0.2.53\n",
        &["alertmanager", "--cluster.peer", "127.0.0.2:9094"],
    );
    // Not Alertmanager: ignored whatever it says.
    fake.process(
        4444,
        "/usr/bin/curl",
        "nameserver 10.0.0.1\n",
        &["curl", "--cluster.peer=10.0.0.2:9094"],
    );
    let all = AlertmanagerSettings::default();
    let d = derive(&fake.0, &[4444, 4343, 4242, 4999], all);
    assert_eq!(
        describe(&d),
        vec![
            "allow auto:resolv.conf 127.0.0.53/32 ports 53 protocols tcp,udp (pid 4242)",
            "allow auto:resolv.conf 127.0.0.53/32 ports 53 protocols tcp,udp (pid 4343)",
            "allow auto:resolv.conf 192.0.2.53/32 ports 53 protocols tcp,udp (pid 4343)",
            "allow auto:cluster.peer 127.0.0.2/32 ports 9094 protocols tcp,udp (pid 4343)",
            "allow auto:cluster.peer 127.0.0.3/32 ports 9094 protocols tcp,udp (pid 4242)",
        ]
    );
    assert_eq!(
        d.rules[0].location.to_string(),
        format!("{}/4242/root/etc/resolv.conf:1:1", fake.0.display())
    );
    assert_eq!(
        d.warnings,
        vec![Warning {
            pid: 4242,
            subject: "--cluster.peer=am-2.example:9094".to_owned(),
            reason: d.warnings[0].reason.clone(),
        }]
    );
    assert!(d.warnings[0].reason.contains("DNS name"), "{d:?}");

    let dns_only = AlertmanagerSettings {
        allow_own_dns: true,
        allow_cluster_peers: false,
    };
    let d = derive(&fake.0, &[4242], dns_only);
    assert_eq!(
        describe(&d),
        vec!["allow auto:resolv.conf 127.0.0.53/32 ports 53 protocols tcp,udp (pid 4242)"]
    );
    assert!(d.warnings.is_empty());
    let peers_only = AlertmanagerSettings {
        allow_own_dns: false,
        allow_cluster_peers: true,
    };
    assert_eq!(
        describe(&derive(&fake.0, &[4242], peers_only)),
        vec!["allow auto:cluster.peer 127.0.0.3/32 ports 9094 protocols tcp,udp (pid 4242)"]
    );
    let none = AlertmanagerSettings {
        allow_own_dns: false,
        allow_cluster_peers: false,
    };
    assert_eq!(derive(&fake.0, &[4242, 4343], none), Derived::default());
}

#[test]
fn a_fifo_resolv_conf_is_not_read() {
    let fake = FakeProc::new("fifo");
    fake.process(5000, "/usr/bin/alertmanager", "", &["alertmanager"]);
    let conf = fake.0.join("5000/root/run/resolv.conf");
    std::fs::remove_file(&conf).unwrap();
    let c = CString::new(conf.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let d = derive(&fake.0, &[5000], AlertmanagerSettings::default());
    assert!(d.rules.is_empty(), "{d:?}");
    assert_eq!(d.warnings.len(), 1, "{d:?}");
    assert!(
        d.warnings[0]
            .subject
            .ends_with("/5000/root/etc/resolv.conf")
            && d.warnings[0].reason.contains("not a regular file"),
        "{d:?}"
    );
    // No resolv.conf at all: nothing to allow, nothing to warn about.
    std::fs::remove_file(&conf).unwrap();
    assert_eq!(
        derive(&fake.0, &[5000], AlertmanagerSettings::default()),
        Derived::default()
    );
}

#[test]
fn scope_pids_are_alertmanager_targets() {
    let fake = FakeProc::new("scope");
    fake.process(6000, "/usr/bin/alertmanager", "", &["alertmanager"]);
    std::fs::write(fake.0.join("6000/comm"), "alertmanager\n").unwrap();
    std::fs::write(fake.0.join("6000/cgroup"), "0::/user.slice\n").unwrap();
    fake.process(6001, "/usr/bin/prometheus-alertmanager", "", &["am"]);
    std::fs::write(fake.0.join("6001/comm"), "prometheus-aler\n").unwrap();
    std::fs::write(fake.0.join("6001/cgroup"), "0::/user.slice\n").unwrap();
    let mut targets = TargetSet {
        comms: vec!["prometheus-alertmanager".to_owned()],
        ..TargetSet::default()
    };
    let mount = Path::new("/nonexistent-cgroup-mount");
    assert_eq!(scope_pids(&fake.0, mount, mount, &targets), vec![6001]);
    targets.comms.push("alertmanager".to_owned());
    assert_eq!(
        scope_pids(&fake.0, mount, mount, &targets),
        vec![6000, 6001]
    );
    // Outside the scope: not enforced, so not read.
    let scope = mount.join("system.slice");
    assert!(scope_pids(&fake.0, mount, &scope, &targets).is_empty());
    std::fs::write(
        fake.0.join("6001/cgroup"),
        "0::/system.slice/prometheus-alertmanager.service\n",
    )
    .unwrap();
    assert_eq!(scope_pids(&fake.0, mount, &scope, &targets), vec![6001]);
}
