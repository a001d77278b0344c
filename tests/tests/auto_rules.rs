//! Automatic rules (a target's own name servers, its literal `--cluster.peer`s) in scope mode,
//! as the DaemonSet runs: read only from processes the kernel holds as targets, held for the
//! process they were read from, never a `cloud-metadata` destination, bounded per process.
//! Calls run in empty network namespaces: EPERM means the enforcer denied, ENETUNREACH (101)
//! or `ok` that the call went through.
use std::{os::unix::fs::PermissionsExt as _, process::Command};

use integration_tests::{
    Agent, NetNs, Outcome, Probe, TempDir, TestCgroup, http_get, privileged, probe_bin,
};

const UNREACHABLE: Outcome = Outcome::Errno(101);

#[test]
fn a_forged_alertmanagers_flags_and_resolv_conf_open_nothing_for_the_real_target() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new().unwrap();
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path.join("alertmanager");
    std::fs::copy(probe_bin(), &exe).unwrap();
    let policy = dir
        .write(
            "p.yaml",
            "default: allow\nblock:\n  - preset: private\n  - preset: cloud-metadata\n\
             targets:\n  - process: [alertmanager]\n",
        )
        .unwrap();
    let forged_rc = dir
        .write("resolv.conf", "nameserver 169.254.169.254\n")
        .unwrap();
    std::fs::set_permissions(&forged_rc, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let scope = TestCgroup::new().unwrap();
    let real_cg = scope.child("real").unwrap();
    let forged_cg = scope.child("forged").unwrap();
    let agent = Agent::start_args(
        Some(&policy),
        &["--scope", &scope.path_str(), "--metrics-address", &metrics],
    )
    .unwrap();

    // The real Alertmanager: its namespace's resolv.conf names 127.0.0.53, one literal peer.
    let mut ns = NetNs::new("enforcer-auto").unwrap();
    ns.resolv_conf("nameserver 127.0.0.53\n").unwrap();
    let mut cmd = ns.command_in_cgroup(&real_cg, &exe);
    cmd.args([
        "--netns",
        "/proc/self/ns/net",
        "--cluster.peer=127.0.0.2:9094",
    ]);
    let mut real = Probe::spawn_command(cmd).unwrap();

    // The forged one: unprivileged (uid 65534), another cgroup below the scope, a user+mount
    // namespace with its own resolv.conf, the metadata service as a peer, and twenty peers.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"echo $$ > "$1/cgroup.procs" && rc="$2" && shift 2 && exec setpriv --reuid=65534 --regid=65534 --clear-groups unshare --user --map-root-user --mount sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$rc" "$@""#,
        "sh",
    ])
    .arg(&forged_cg.path)
    .arg(&forged_rc)
    .arg(&exe)
    .arg("--cluster.peer=169.254.169.254:80");
    for i in 1..=20 {
        cmd.arg(format!("--cluster.peer=10.9.0.{i}:9094"));
    }
    let mut forged = Probe::spawn_command(cmd).unwrap();

    let real_pid = real.pid();
    agent.wait_for_stderr(&format!(
        "\"rule\":\"allow auto:cluster.peer 127.0.0.2/32 ports 9094 protocols tcp,udp (pid {real_pid})\""
    ));
    agent.wait_for_stderr(&format!(
        "\"rule\":\"allow auto:resolv.conf 127.0.0.53/32 ports 53 protocols tcp,udp (pid {real_pid})\""
    ));
    let forged_pid = forged.pid();
    agent.wait_for_stderr(&format!(
        "169.254.169.254/32 ports 80 protocols tcp,udp (pid {forged_pid})"
    ));
    agent.wait_for_stderr("automatic rule refused (per_process_limit)");

    // The real target: the metadata service stays denied on 80 and 53, the forged peers too;
    // its own name server and peer work.
    for (proto, addr, port) in [
        ("tcp", "169.254.169.254", 80),
        ("udp", "169.254.169.254", 53),
        ("tcp", "169.254.169.254", 53),
        ("tcp", "10.9.0.1", 9094),
        ("tcp", "127.0.0.53", 80),
    ] {
        assert!(
            real.connect(proto, addr, port).unwrap().denied(),
            "real target {proto} {addr}:{port}"
        );
    }
    assert!(real.sendto("169.254.169.254", 53).unwrap().denied());
    assert_eq!(
        real.sendto("127.0.0.53", 53).unwrap(),
        Outcome::Ok,
        "its DNS"
    );
    assert_eq!(real.connect("udp", "127.0.0.53", 53).unwrap(), Outcome::Ok);
    assert_eq!(real.connect("udp", "127.0.0.2", 9094).unwrap(), Outcome::Ok);

    // The forged process holds its own admitted peers, never the metadata service.
    assert!(
        forged
            .connect("tcp", "169.254.169.254", 80)
            .unwrap()
            .denied()
    );
    assert!(forged.sendto("169.254.169.254", 53).unwrap().denied());
    assert_eq!(
        forged.connect("tcp", "10.9.0.1", 9094).unwrap(),
        UNREACHABLE
    );
    // Past its bound (16 rules), its last peers were refused.
    assert!(forged.connect("tcp", "10.9.0.20", 9094).unwrap().denied());

    let m = http_get(&metrics, "/metrics").unwrap();
    let value = |reason: &str| -> u64 {
        let needle = format!("enforcer_auto_rules_refused_total{{reason=\"{reason}\"}}");
        m.lines()
            .find(|l| l.starts_with(&needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(value("cloud_metadata"), 2, "{m}");
    assert_eq!(value("per_process_limit"), 4, "{m}");
    drop((real, forged, agent));
}
