//! Production lifecycle on a real kernel: fail-closed across agent restarts (pins), reload
//! without a gap, enforcement of a new target process from its first connect, metrics.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use enforcer::{cgroup::Cgroup, compile, kernel::Kernel, policy};
use integration_tests::{
    Agent, ENETUNREACH, EPERM, Outcome, PinDir, Probe, TempDir, TestCgroup, attached_programs,
    emulated, eventually, http_get, privileged, probe_bin, wait_for,
};

const BLOCK_METADATA: &str = "mode: enforce\ndefault: allow\nblock:\n  - preset: cloud-metadata\n";

/// SIGKILL the agent 20 times (5 under emulation, where each start verifies for seconds) while a
/// target hammers a blocked address: with pinned links the programs stay attached, so not one
/// call gets through; each restarted agent adopts the pins.
#[test]
fn pinned_enforcement_survives_sigkill_and_restart() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let policy = dir.write("p.yaml", BLOCK_METADATA).unwrap();
    let cg = TestCgroup::new().unwrap();
    let pins = PinDir::new();
    let args = [
        "--cgroup",
        &cg.path_str(),
        "--pin",
        "--bpffs-dir",
        &pins.path_str(),
    ];
    // The kernel frees a link whose pin or last descriptor went from a workqueue, so on a busy
    // machine the attached count reaches its value a moment later.
    let attached_settle_at = |n: usize| {
        eventually(Duration::from_secs(5), Duration::from_millis(20), || {
            (attached_programs(&cg.path).unwrap() == n).then_some(())
        })
        .is_some()
    };
    let mut agent = Agent::start_args(Some(&policy), &args).unwrap();
    let probe = Probe::spawn(&cg).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let hammer = probe.hammer("169.254.169.254", "169.254.170.2", done.clone());
    let rounds = if emulated() { 5 } else { 20 };
    for round in 0..rounds {
        agent.signal(libc::SIGKILL);
        agent.stop();
        assert_eq!(
            attached_programs(&cg.path).unwrap(),
            4,
            "round {round}: links must stay pinned"
        );
        agent = Agent::start_args(Some(&policy), &args).unwrap();
        assert!(
            agent.stderr_text().contains("adopted pinned maps"),
            "{}",
            agent.stderr_text()
        );
        // The old links go when their pins are removed.
        assert!(
            attached_settle_at(4),
            "round {round}: old links replaced, not added ({} attached)",
            attached_programs(&cg.path).unwrap()
        );
    }
    done.store(true, Ordering::Relaxed);
    let [eperm1, other1, eperm2, other2] = hammer.join().unwrap();
    assert_eq!(
        (other1, other2),
        (0, 0),
        "calls that got through: {other1} + {other2}"
    );
    assert!(eperm1 > 1000 && eperm2 > 1000, "{eperm1} {eperm2}");
    // `enforcer detach` removes everything.
    agent.stop();
    let out = std::process::Command::new(integration_tests::enforcer_bin())
        .args(["detach", "--bpffs-dir", &pins.path_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        attached_settle_at(0),
        "detach left {} programs attached",
        attached_programs(&cg.path).unwrap()
    );
    assert!(!pins.path.exists());
    let mut probe = Probe::spawn(&cg).unwrap();
    assert_eq!(
        probe.connect("tcp", "169.254.169.254", 80).unwrap(),
        Outcome::Errno(ENETUNREACH)
    );
}

#[test]
fn audit_mode_pins_behave_the_same() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let policy = dir
        .write("p.yaml", &BLOCK_METADATA.replace("enforce", "audit"))
        .unwrap();
    let cg = TestCgroup::new().unwrap();
    let pins = PinDir::new();
    let args = [
        "--cgroup",
        &cg.path_str(),
        "--pin",
        "--bpffs-dir",
        &pins.path_str(),
    ];
    let mut agent = Agent::start_args(Some(&policy), &args).unwrap();
    agent.signal(libc::SIGKILL);
    agent.stop();
    assert_eq!(attached_programs(&cg.path).unwrap(), 4);
    let mut probe = Probe::spawn(&cg).unwrap();
    // Still attached, still audit: the call passes, and the next agent reports it.
    assert_eq!(
        probe.connect("tcp", "169.254.169.254", 80).unwrap(),
        Outcome::Errno(ENETUNREACH)
    );
    let mut agent = Agent::start_args(Some(&policy), &args).unwrap();
    let lines = agent.take_events(1, Duration::from_secs(5));
    assert_eq!(
        lines.len(),
        1,
        "the event queued while no agent ran: {lines:?}"
    );
    assert_eq!(lines[0]["event"], "would_deny");
}

/// 1,000 policy switches (250 under emulation, where each costs ~100 ms) between two different
/// policies while the target alternates between an address both block and one both allow: the
/// blocked one never passes, the allowed one is never denied.
#[test]
fn one_thousand_reloads_never_open_a_gap() {
    if !privileged() {
        return;
    }
    let a = policy::parse_policy(
        "default: allow\nblock:\n  - cidr: 10.0.0.0/8\n  - preset: cloud-metadata\n",
        "a.yaml",
    )
    .unwrap();
    let b = policy::parse_policy(
        "default: deny\nblock:\n  - cidr: 10.1.0.0/16\n  - cidr: 10.1.2.0/24\n    ports: [80]\nallow:\n  - cidr: 127.0.0.0/8\n  - cidr: 192.0.2.0/24\n",
        "b.yaml",
    )
    .unwrap();
    let (ca, cb) = (compile::compile(&a).unwrap(), compile::compile(&b).unwrap());
    let cg = TestCgroup::new().unwrap();
    let mut enforcer = Kernel::load().unwrap();
    enforcer.install(&ca, 1).unwrap();
    enforcer.attach(&Cgroup::open(&cg.path).unwrap()).unwrap();
    let probe = Probe::spawn(&cg).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let hammer = probe.hammer("10.1.2.3", "127.0.0.1", done.clone());
    let reloads: u32 = if emulated() { 250 } else { 1000 };
    let started = Instant::now();
    for generation in 2..=reloads + 1 {
        let c = if generation % 2 == 0 { &cb } else { &ca };
        enforcer.install(c, generation).unwrap();
    }
    let reload_time = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let [
        blocked_denied,
        blocked_passed,
        allowed_denied,
        allowed_passed,
    ] = hammer.join().unwrap();
    eprintln!(
        "{reloads} reloads in {reload_time:?}; {blocked_denied} denied, {allowed_passed} allowed"
    );
    assert_eq!(blocked_passed, 0, "a blocked call passed during a reload");
    assert_eq!(
        allowed_denied, 0,
        "an allowed call was denied during a reload"
    );
    assert!(blocked_denied > reloads as u64 && allowed_passed > reloads as u64);
}

/// SIGHUP and a change of the file reload; a rejected policy keeps the running one and says
/// where it is wrong.
#[test]
fn reload_by_signal_and_file_change_and_rejected_policy_keeps_the_old_one() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let policy = dir.write("p.yaml", BLOCK_METADATA).unwrap();
    let cg = TestCgroup::new().unwrap();
    let mut agent = Agent::start(Some(&policy), &cg).unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    assert_eq!(
        probe.connect("udp", "192.0.2.1", 53).unwrap(),
        Outcome::Errno(ENETUNREACH)
    );

    // A broken policy: rejected with file:line:column, the old one stays.
    std::fs::write(&policy, "default: allow\nblock:\n  - cidr: 192.0.2.0/33\n").unwrap();
    // The slow tick may see the change first; wait for the SIGHUP's own rejection, so that the
    // signal is not handled after the next write (it would then load that one).
    agent.signal(libc::SIGHUP);
    let log = wait_for(Duration::from_secs(30), "the SIGHUP's rejection", || {
        let log = agent.stderr_text();
        log.lines()
            .any(|l| l.contains("policy rejected") && l.contains("\"reason\":\"SIGHUP\""))
            .then_some(log)
    });
    assert!(log.contains(&format!("{}:3:11", policy.display())), "{log}");
    assert_eq!(
        probe.connect("udp", "169.254.169.254", 80).unwrap(),
        Outcome::Errno(EPERM)
    );
    assert_eq!(
        probe.connect("udp", "192.0.2.1", 53).unwrap(),
        Outcome::Errno(ENETUNREACH)
    );

    // A valid change is picked up without a signal.
    std::fs::write(&policy, "default: allow\nblock:\n  - cidr: 192.0.2.0/24\n").unwrap();
    agent.wait_for_stderr("\"reason\":\"policy file changed\",\"generation\":2");
    assert_eq!(
        probe.connect("udp", "192.0.2.1", 53).unwrap(),
        Outcome::Errno(EPERM)
    );
    assert_eq!(
        probe.connect("udp", "169.254.169.254", 80).unwrap(),
        Outcome::Errno(ENETUNREACH)
    );
    let lines = agent.take_events(1, Duration::from_secs(5));
    assert_eq!(lines.last().unwrap()["rule"], "block cidr 192.0.2.0/24");
}

/// A process of a `process:` target that starts while the agent runs is enforced from its very
/// first connect(): the programs sit at the scope cgroup and recognise the task by its comm,
/// which the kernel sets at exec. 200 fresh processes, 200 × EPERM; a process of another name
/// in the same scope is left alone.
#[test]
fn a_new_target_process_is_enforced_from_its_first_connect() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let exe = dir.path.join("alertmanager");
    std::fs::copy(probe_bin(), &exe).unwrap();
    let policy = dir
        .write("p.yaml", "default: allow\nblock:\n  - preset: cloud-metadata\ntargets:\n  - process: [alertmanager]\n")
        .unwrap();
    let scope = TestCgroup::new().unwrap();
    let workload = scope.child("workload").unwrap();
    let mut agent = Agent::start_args(Some(&policy), &["--scope", &scope.path_str()]).unwrap();
    // One empty namespace for all 200 processes (creating one per process is slow).
    let holder = Probe::spawn(&workload).unwrap();
    let netns = format!("/proc/{}/ns/net", holder.pid());
    let first_connect = |exe: &std::path::Path| {
        let out = std::process::Command::new(exe)
            .args(["--cgroup", &workload.path_str(), "--netns", &netns])
            .args(["--first-connect", "tcp", "169.254.169.254", "80"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    for i in 0..200 {
        assert_eq!(first_connect(&exe), format!("errno {EPERM}"), "process {i}");
    }
    assert_eq!(
        first_connect(&probe_bin()),
        format!("errno {ENETUNREACH}"),
        "not a target"
    );
    let lines = agent.take_events(200, Duration::from_secs(10));
    assert_eq!(lines.len(), 200);
    assert!(
        lines
            .iter()
            .all(|l| l["comm"] == "alertmanager" && l["target"] == "process:alertmanager"),
        "{:?}",
        lines[0]
    );
}

#[test]
fn metrics_endpoint_reports_decisions_denials_and_health() {
    if !privileged() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let cg = TestCgroup::new().unwrap();
    let mut agent = Agent::start_args(
        None,
        &["--cgroup", &cg.path_str(), "--metrics-address", &addr],
    )
    .unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    assert_eq!(
        probe.connect("tcp", "169.254.169.254", 80).unwrap(),
        Outcome::Errno(EPERM)
    );
    assert_eq!(agent.take_events(1, Duration::from_secs(5)).len(), 1);
    assert!(
        http_get(&addr, "/healthz")
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        http_get(&addr, "/readyz")
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    let m = http_get(&addr, "/metrics").unwrap();
    for needle in [
        "enforcer_decisions_total{verdict=\"denied\",hook=\"connect4\"} 1",
        "enforcer_denials_total{rule=\"block preset:cloud-metadata 169.254.169.254/32\",target=\"cgroup:",
        "enforcer_lost_events_total 0",
        "enforcer_targets_attached 1",
        "enforcer_policy_generation 1",
        "enforcer_policy_last_reload_success 1",
        "enforcer_build_info{version=",
    ] {
        assert!(m.contains(needle), "{needle} missing in:\n{m}");
    }
}
