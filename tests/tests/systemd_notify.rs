//! `enforcer run` as systemd starts a `Type=notify` service (deploy/systemd/enforcer.service):
//! `NOTIFY_SOCKET` names a datagram socket, and the agent sends `READY=1` there only once its
//! programs are attached, which is what lets systemd start Alertmanager (ordered after the agent)
//! no earlier. The probe's very first call after READY=1 is already denied.
use std::{
    os::unix::net::UnixDatagram,
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::{
    ChildGuard, ENETUNREACH, EPERM, Outcome, Probe, TempDir, TestCgroup, enforcer_bin, privileged,
};

/// The next datagram on `sock` (up to `timeout`).
fn receive(sock: &UnixDatagram, timeout: Duration) -> String {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 256];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("nothing on NOTIFY_SOCKET within {timeout:?}: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// `enforcer run --cgroup <cg>` with `NOTIFY_SOCKET=<socket>`, its output in `log`.
fn agent(cg: &TestCgroup, socket: &str, log: &std::path::Path) -> ChildGuard {
    let mut cmd = Command::new(enforcer_bin());
    cmd.args([
        "run",
        "--cgroup",
        &cg.path_str(),
        "--web.listen-address",
        "none",
    ])
    .env("NOTIFY_SOCKET", socket);
    ChildGuard::spawn_logged("enforcer", &mut cmd, log).unwrap()
}

#[test]
fn ready_is_sent_once_the_programs_are_attached_and_stopping_at_the_end() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let path = dir.path.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let cg = TestCgroup::new().unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    assert_eq!(
        probe.connect("tcp", "169.254.169.254", 80).unwrap(),
        Outcome::Errno(ENETUNREACH),
        "nothing enforces yet"
    );

    let log = dir.path.join("agent.log");
    let mut child = agent(&cg, path.to_str().unwrap(), &log);
    // Loading the programs takes seconds idle, minutes on a loaded 2-CPU machine.
    let ready = receive(&sock, Duration::from_secs(300));
    assert_eq!(ready, "READY=1");
    // Alertmanager would start now: its first call is already decided by the kernel.
    assert_eq!(
        probe.connect("tcp", "169.254.169.254", 80).unwrap(),
        Outcome::Errno(EPERM),
        "READY=1 came before the programs were attached"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"message\":\"ready\""), "{text}");

    // SIGTERM: STOPPING=1, then a clean exit.
    // SAFETY: kill(2) on the PID of the child this test spawned and has not reaped.
    unsafe { libc::kill(child.pid() as i32, libc::SIGTERM) };
    assert_eq!(receive(&sock, Duration::from_secs(30)), "STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the agent did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_bad_notify_socket_is_logged_and_enforcement_goes_on() {
    if !privileged() {
        return;
    }
    // A relative name is no socket systemd would give: the agent says so and still enforces
    // (systemd, whose socket it is not, would time the unit out).
    let dir = TempDir::new().unwrap();
    let cg = TestCgroup::new().unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    let log = dir.path.join("agent.log");
    let _child = agent(&cg, "relative/notify.sock", &log);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("could not notify systemd") {
            assert!(text.contains("relative/notify.sock"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no notify error logged:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        probe.connect("tcp", "169.254.169.254", 80).unwrap(),
        Outcome::Errno(EPERM)
    );
}
