//! Upgrades, downgrades and two agents on one bpffs directory (docs/deployment.md, "Upgrades"):
//! a release takes over from the pins of an earlier one (a real earlier release, built once
//! by `scripts/test`, see `integration_tests::earlier`) with no gap and nothing left behind,
//! refuses the pins of a newer one, and a second agent waits for the first.
use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use enforcer_common::PIN_LAYOUT_VERSION;
use integration_tests::{
    Agent, ChildGuard, ENETUNREACH, EPERM, Outcome, PinDir, Probe, TempDir, TestCgroup,
    cgroup_programs, earlier, enforcer_bin, eventually, privileged, run_enforcer,
};

/// The earlier release's policy (A) and this release's (B): both block 203.0.113.0/24, only A
/// blocks 192.0.2.0/24, only B 198.51.100.0/24.
const POLICY_A: &str =
    "mode: enforce\ndefault: allow\nblock:\n  - cidr: 192.0.2.0/24\n  - cidr: 203.0.113.0/24\n";
const POLICY_B: &str =
    "mode: enforce\ndefault: allow\nblock:\n  - cidr: 198.51.100.0/24\n  - cidr: 203.0.113.0/24\n";

/// Waits (up to 5 s: the kernel frees a detached link from a workqueue) until every program on
/// `cgroup` is attached once, and returns them.
fn one_set(cgroup: &std::path::Path) -> Vec<(String, String)> {
    let settled = eventually(Duration::from_secs(5), Duration::from_millis(20), || {
        let p = cgroup_programs(cgroup).unwrap();
        let mut unique = p.clone();
        unique.dedup();
        (unique == p).then_some(p)
    });
    settled.unwrap_or_else(|| {
        panic!(
            "programs attached twice: {:?}",
            cgroup_programs(cgroup).unwrap()
        )
    })
}

/// Runs `enforcer <args>` for at most 60 s: its exit code (`None`: still running, then killed)
/// and its stderr.
fn run_bounded(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let dir = TempDir::new().unwrap();
    let log = dir.path.join("stderr.log");
    let mut child =
        ChildGuard::spawn_logged("enforcer", Command::new(enforcer_bin()).args(args), &log)
            .unwrap();
    let status = eventually(Duration::from_secs(60), Duration::from_millis(20), || {
        child.try_wait().unwrap()
    });
    (
        status.map(|s| s.code().unwrap_or(-1)),
        std::fs::read_to_string(&log).unwrap(),
    )
}

/// `enforcer detach` leaves no program on `cgroup` and no pin.
fn detach_leaves_nothing(pins: &PinDir, cgroup: &std::path::Path) {
    let (code, out, err) = run_enforcer(&["detach", "--bpffs-dir", &pins.path_str()]);
    assert_eq!(code, 0, "{out}{err}");
    let empty = eventually(Duration::from_secs(5), Duration::from_millis(20), || {
        cgroup_programs(cgroup).unwrap().is_empty().then_some(())
    });
    assert!(
        empty.is_some(),
        "detach left programs attached: {:?}",
        cgroup_programs(cgroup).unwrap()
    );
    assert!(!pins.path.exists(), "detach left pins");
}

/// A rolling update from a real earlier release (another pin layout) under a storm of blocked
/// connects: not one blocked call gets through, then exactly the new policy holds with one set
/// of programs attached, the earlier release's pins are gone, and `detach` leaves nothing.
#[test]
fn upgrade_from_an_earlier_release_without_a_gap_or_leftovers() {
    if !privileged() {
        return;
    }
    // Built by scripts/test before nextest runs (here only when missing): before any timing.
    let rev = earlier::earlier_release();
    let (old_bin, _) = earlier::earlier_release_bin(&rev).unwrap();
    let old_layout = earlier::earlier_release_layout(&rev).unwrap();
    assert_ne!(
        old_layout, PIN_LAYOUT_VERSION,
        "the earlier release must have another pin layout: pick an older EARLIER_RELEASE"
    );
    let dir = TempDir::new().unwrap();
    let (a, b) = (
        dir.write("a.yaml", POLICY_A).unwrap(),
        dir.write("b.yaml", POLICY_B).unwrap(),
    );
    let cg = TestCgroup::new().unwrap();
    let pins = PinDir::new();
    let args = [
        "--cgroup",
        &cg.path_str(),
        "--pin",
        "--bpffs-dir",
        &pins.path_str(),
    ];
    let started = Instant::now();
    // The earlier release enforces A, pinned; the rolling update stops it (SIGTERM). Its
    // metrics flag: `--metrics-address`, which releases before `--web.listen-address` know.
    let old_args: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--metrics-address", "none"])
        .collect();
    let mut old = Agent::start_bin(&old_bin, Some(&a), &old_args).unwrap();
    old.stop();
    let old_set = one_set(&cg.path);
    assert!(!old_set.is_empty());
    assert!(pins.path.join(format!("v{old_layout}")).exists());

    let probe = Probe::spawn(&cg).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let storm = probe.hammer("203.0.113.1", "203.0.113.77", done.clone());
    std::thread::sleep(Duration::from_millis(300));
    let new = Agent::start_args(Some(&b), &args).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::Relaxed);
    let [eperm1, through1, eperm2, through2] = storm.join().unwrap();
    assert_eq!(
        (through1, through2),
        (0, 0),
        "blocked calls that got through during the hand-over"
    );
    assert!(eperm1 > 100 && eperm2 > 100, "{eperm1} {eperm2}");

    // Exactly the new policy: A's own range is open again, B's is closed.
    let mut probe = Probe::spawn(&cg).unwrap();
    let outcomes = [
        ("192.0.2.1", ENETUNREACH),
        ("198.51.100.1", EPERM),
        ("203.0.113.1", EPERM),
    ];
    for (addr, errno) in outcomes {
        assert_eq!(
            probe.connect("tcp", addr, 80).unwrap(),
            Outcome::Errno(errno),
            "{addr}"
        );
        assert_eq!(
            probe.connect("udp", addr, 53).unwrap(),
            Outcome::Errno(errno),
            "{addr} udp"
        );
    }
    // One set of programs, the earlier release's pins gone, and the log says what went.
    let new_set = one_set(&cg.path);
    assert!(!new_set.is_empty());
    assert!(!pins.path.join(format!("v{old_layout}")).exists());
    let log = new.stderr_text();
    assert!(
        log.contains("replaced the pins of an earlier release")
            && log.contains(&format!("\"layout\":{old_layout}")),
        "{log}"
    );
    for line in log.lines().filter(|l| l.contains("earlier release")) {
        eprintln!("{line}");
    }
    assert!(
        log.contains("counters are carried over") || log.contains("counters are dropped"),
        "{log}"
    );
    let (code, status, err) = run_enforcer(&["status", "--bpffs-dir", &pins.path_str()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        status.contains(&format!("layout v{PIN_LAYOUT_VERSION} (this release)"))
            && !status.contains(&format!("layout v{old_layout}"))
            && status.contains(&cg.path_str()),
        "{status}"
    );
    drop(new);
    detach_leaves_nothing(&pins, &cg.path);
    eprintln!("upgrade test in {:?}", started.elapsed());
}

/// A newer release's pins (here: this release's, renamed to the next layout): an agent of
/// this release refuses them with a clear message and a non-zero exit, attaching nothing; the
/// newer set keeps enforcing; `detach` removes it.
#[test]
fn a_newer_layout_is_refused_and_keeps_enforcing() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let a = dir.write("a.yaml", POLICY_A).unwrap();
    let cg = TestCgroup::new().unwrap();
    let pins = PinDir::new();
    let args = [
        "--cgroup",
        &cg.path_str(),
        "--pin",
        "--bpffs-dir",
        &pins.path_str(),
    ];
    let mut agent = Agent::start_args(Some(&a), &args).unwrap();
    agent.stop();
    let newer = PIN_LAYOUT_VERSION + 1;
    std::fs::rename(
        pins.path.join(format!("v{PIN_LAYOUT_VERSION}")),
        pins.path.join(format!("v{newer}")),
    )
    .unwrap();
    let set = one_set(&cg.path);

    let run: Vec<&std::ffi::OsStr> = ["run", "--web.listen-address", "none", "--policy"]
        .iter()
        .map(std::ffi::OsStr::new)
        .chain([a.as_os_str()])
        .chain(args.iter().map(std::ffi::OsStr::new))
        .collect();
    let (code, err) = run_bounded(&run);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("pin layout v{newer}")) && err.contains("newer enforcer release"),
        "{err}"
    );
    assert!(!pins.path.join(format!("v{PIN_LAYOUT_VERSION}")).exists());
    assert_eq!(cgroup_programs(&cg.path).unwrap(), set, "nothing attached");
    let mut probe = Probe::spawn(&cg).unwrap();
    assert_eq!(
        probe.connect("tcp", "203.0.113.1", 80).unwrap(),
        Outcome::Errno(EPERM)
    );
    let (code, status, _) = run_enforcer(&["status", "--bpffs-dir", &pins.path_str()]);
    assert_eq!(code, 0);
    assert!(
        status.contains(&format!("layout v{newer} (a newer release")),
        "{status}"
    );
    detach_leaves_nothing(&pins, &cg.path);
}

/// Two agents on one bpffs directory: the second waits for the first (one with a short
/// --lock-timeout gives up, attaching nothing), never attaches a second set, and takes over
/// the pins when the first exits.
#[test]
fn a_second_agent_waits_for_the_first() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let a = dir.write("a.yaml", POLICY_A).unwrap();
    let cg = TestCgroup::new().unwrap();
    let pins = PinDir::new();
    let args = [
        "--cgroup",
        &cg.path_str(),
        "--pin",
        "--bpffs-dir",
        &pins.path_str(),
    ];
    let mut first = Agent::start_args(Some(&a), &args).unwrap();
    let set = one_set(&cg.path);
    let (code, status, _) = run_enforcer(&["status", "--bpffs-dir", &pins.path_str()]);
    assert_eq!(code, 0);
    assert!(status.contains("an agent is running"), "{status}");

    // A second agent with a short wait gives up while the first runs.
    let run: Vec<&std::ffi::OsStr> = ["run", "--web.listen-address", "none", "--lock-timeout"]
        .iter()
        .map(std::ffi::OsStr::new)
        .chain([std::ffi::OsStr::new("1"), std::ffi::OsStr::new("--policy")])
        .chain([a.as_os_str()])
        .chain(args.iter().map(std::ffi::OsStr::new))
        .collect();
    let (code, err) = run_bounded(&run);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("waiting for it to exit") && err.contains("holds the lock"),
        "{err}"
    );
    assert_eq!(cgroup_programs(&cg.path).unwrap(), set);

    // A third one waits, attaching nothing meanwhile, and takes over once the first exits.
    let log = dir.path.join("third.log");
    let mut third = ChildGuard::spawn_logged(
        "third agent",
        Command::new(enforcer_bin())
            .args(["run", "--web.listen-address", "none", "--policy"])
            .arg(&a)
            .args(args),
        &log,
    )
    .unwrap();
    let waiting = eventually(Duration::from_secs(10), Duration::from_millis(20), || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("waiting for it to exit")
            .then_some(())
    });
    assert!(
        waiting.is_some(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    std::thread::sleep(Duration::from_millis(500));
    third.assert_alive();
    assert_eq!(
        cgroup_programs(&cg.path).unwrap(),
        set,
        "the waiting agent attached"
    );
    first.stop();
    let ready = eventually(Duration::from_secs(30), Duration::from_millis(20), || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("\"message\":\"ready\"")
            .then_some(())
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(ready.is_some(), "{text}");
    assert!(text.contains("adopted pinned maps"), "{text}");
    assert_eq!(one_set(&cg.path), set);
    let mut probe = Probe::spawn(&cg).unwrap();
    assert_eq!(
        probe.connect("tcp", "192.0.2.1", 80).unwrap(),
        Outcome::Errno(EPERM)
    );
    drop(third);
    detach_leaves_nothing(&pins, &cg.path);
}
