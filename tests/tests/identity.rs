//! Target identity held by the kernel (scope mode): a process is a target because of what it
//! exec'd or where it lives, decided once and inherited — not because of its current comm.
//! Each test runs the workload in an empty network namespace: EPERM means the enforcer decided,
//! ENETUNREACH (101) that the call went through to a namespace with no route.
use std::{path::Path, process::Command, time::Duration};

use integration_tests::{
    Agent, PinDir, Probe, TempDir, TestCgroup, http_get, privileged, probe_bin,
};

const EPERM: &str = "errno 1";
const UNREACHABLE: &str = "errno 101";

/// Runs `exe` in `workload` (and the namespace `netns`) for one command; its reply.
fn once(exe: &Path, workload: &TestCgroup, netns: &str, args: &[&str]) -> String {
    let out = Command::new(exe)
        .args(["--cgroup", &workload.path_str(), "--netns", netns])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Fields drop in this order: the agent and the holder process before their cgroups, the
/// workload cgroup before the scope.
struct Setup {
    agent: Agent,
    _holder: Probe,
    workload: TestCgroup,
    _scope: TestCgroup,
    netns: String,
    target: std::path::PathBuf,
    dir: TempDir,
}

/// A scope with one workload cgroup, the agent in scope mode with `targets`, a holder of an
/// empty namespace, and a copy of the probe named `alertmanager`.
fn setup(targets: &str, extra: &[&str]) -> Setup {
    let dir = TempDir::new().unwrap();
    let target = dir.path.join("alertmanager");
    std::fs::copy(probe_bin(), &target).unwrap();
    let policy = dir
        .write(
            "p.yaml",
            &format!("default: allow\nblock:\n  - preset: cloud-metadata\ntargets:\n{targets}"),
        )
        .unwrap();
    let scope = TestCgroup::new().unwrap();
    let workload = scope.child("workload").unwrap();
    let mut args = vec!["--scope".to_owned(), scope.path_str()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start_args(Some(&policy), &args).unwrap();
    let holder = Probe::spawn(&workload).unwrap();
    let netns = format!("/proc/{}/ns/net", holder.pid());
    Setup {
        agent,
        _holder: holder,
        workload,
        _scope: scope,
        netns,
        target,
        dir,
    }
}

#[test]
fn io_uring_workers_and_sqpoll_threads_of_a_target_are_enforced() {
    if !privileged() {
        return;
    }
    let s = setup("  - process: [alertmanager]\n", &[]);
    for op in ["connect", "sendmsg"] {
        for mode in ["async", "sqpoll"] {
            let cmd = format!("uring {op} 169.254.169.254 80 {mode}");
            assert_eq!(
                once(&s.target, &s.workload, &s.netns, &["--first", &cmd]),
                EPERM,
                "target: {cmd}"
            );
            assert_eq!(
                once(&probe_bin(), &s.workload, &s.netns, &["--first", &cmd]),
                UNREACHABLE,
                "not a target: {cmd}"
            );
        }
    }
}

#[test]
fn a_target_stays_one_when_it_renames_reexecs_or_execs_another_binary() {
    if !privileged() {
        return;
    }
    let s = setup("  - process: [alertmanager]\n", &[]);
    let other = s.dir.path.join("helper");
    std::fs::copy(probe_bin(), &other).unwrap();
    let other = other.to_string_lossy().into_owned();
    let connect = "connect tcp 169.254.169.254 80";
    for extra in [
        vec!["--rename", "innocent"],
        vec!["--reexec"],
        vec!["--spawn", other.as_str()],
        vec!["--rename", "x", "--reexec"],
    ] {
        let mut args = extra.clone();
        args.extend(["--first", connect]);
        assert_eq!(
            once(&s.target, &s.workload, &s.netns, &args),
            EPERM,
            "{extra:?}"
        );
        // The same from a process that is not a target passes (and so proves the path works).
        assert_eq!(
            once(&probe_bin(), &s.workload, &s.netns, &args),
            UNREACHABLE,
            "not a target: {extra:?}"
        );
    }
}

#[test]
fn members_of_a_cgroup_target_are_enforced_16_and_30_levels_deep() {
    if !privileged() {
        return;
    }
    let scope = TestCgroup::new().unwrap();
    let target = scope.child("am").unwrap();
    let mut chain = vec![];
    for i in 0..30 {
        let parent = chain.last().unwrap_or(&target);
        let c = parent.child(&format!("l{i}")).unwrap();
        chain.push(c);
    }
    let dir = TempDir::new().unwrap();
    let policy = dir
        .write(
            "p.yaml",
            &format!(
                "default: allow\nblock:\n  - preset: cloud-metadata\ntargets:\n  - cgroup: {}\n",
                target.path_str()
            ),
        )
        .unwrap();
    // One process already runs 30 levels down when the agent starts (found by its scan).
    let mut early = Probe::spawn(&chain[29]).unwrap();
    let agent = Agent::start_args(Some(&policy), &["--scope", &scope.path_str()]).unwrap();
    let holder = Probe::spawn(&scope).unwrap();
    let netns = format!("/proc/{}/ns/net", holder.pid());
    let connect = ["--first-connect", "tcp", "169.254.169.254", "80"];
    for depth in [16, 30] {
        assert_eq!(
            once(&probe_bin(), &chain[depth - 1], &netns, &connect),
            EPERM,
            "{depth} levels below the target"
        );
    }
    assert!(
        early
            .connect("tcp", "169.254.169.254", 80)
            .unwrap()
            .denied(),
        "running before the agent"
    );
    // Outside the target (in the scope itself): not decided.
    let outside = scope.child("outside").unwrap();
    assert_eq!(once(&probe_bin(), &outside, &netns, &connect), UNREACHABLE);
    drop((early, holder, agent, outside));
    while let Some(c) = chain.pop() {
        drop(c);
    }
}

#[test]
fn a_non_target_below_the_scope_is_never_decided_nor_logged_whatever_its_name() {
    if !privileged() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut s = setup(
        "  - process: [alertmanager]\n",
        &["--metrics-address", &addr],
    );
    // Named like the target at run time (comm), but it exec'd something else.
    for _ in 0..20 {
        assert_eq!(
            once(
                &probe_bin(),
                &s.workload,
                &s.netns,
                &[
                    "--rename",
                    "alertmanager",
                    "--first-connect",
                    "tcp",
                    "169.254.169.254",
                    "80"
                ]
            ),
            UNREACHABLE
        );
        assert_eq!(
            once(
                &probe_bin(),
                &s.workload,
                &s.netns,
                &["--first", "sendto udp 10.0.0.1 53"]
            ),
            UNREACHABLE
        );
    }
    // One target call, so the counters are known to move.
    assert_eq!(
        once(
            &s.target,
            &s.workload,
            &s.netns,
            &["--first-connect", "tcp", "169.254.169.254", "80"]
        ),
        EPERM
    );
    let events = s.agent.take_events(2, Duration::from_secs(3));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["comm"], "alertmanager");
    std::thread::sleep(Duration::from_millis(300));
    let m = http_get(&addr, "/metrics").unwrap();
    let value = |needle: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        value("enforcer_decisions_total{verdict=\"denied\",hook=\"connect4\"}"),
        1,
        "{m}"
    );
    for hook in ["connect4", "sendmsg4"] {
        assert_eq!(
            value(&format!(
                "enforcer_decisions_total{{verdict=\"allowed\",hook=\"{hook}\"}}"
            )),
            0,
            "{m}"
        );
    }
}

/// Runs `exe --as-pid PID --cgroup … --netns … args` (the probe forks a child with that exact
/// PID, which does the rest); its reply, or `None` when the PID was taken.
fn once_as(
    exe: &Path,
    pid: u32,
    workload: &TestCgroup,
    netns: &str,
    args: &[&str],
) -> Option<String> {
    let out = Command::new(exe)
        .args(["--as-pid", &pid.to_string()])
        .args(["--cgroup", &workload.path_str(), "--netns", netns])
        .args(args)
        .output()
        .unwrap();
    if out.status.code() == Some(17) {
        return None;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A block of `TGID_BLOCK` PIDs (first PID) of which no task holds one now: the tests place
/// their processes at PIDs of it. Searched from a random block in the upper half of the PID
/// space, where the allocator (which hands PIDs out in increasing order) is least likely to be.
fn free_block() -> u32 {
    use enforcer_common::identity::TGID_BLOCK;
    let block = TGID_BLOCK as u32;
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let blocks = pid_max / block;
    let start = blocks / 2 + rand::random_range(0..blocks / 4);
    (0..blocks / 2)
        .map(|i| (start + i) % blocks)
        .filter(|&b| b > 8)
        .map(|b| b * block)
        .find(|&first| (first..first + block).all(|p| !Path::new(&format!("/proc/{p}")).exists()))
        .expect("a free block of PIDs")
}

/// Places one run of `exe` at a PID of `pids` that is free (the allocator may take one
/// meanwhile); its PID and reply.
fn once_at(
    exe: &Path,
    pids: &mut impl Iterator<Item = u32>,
    workload: &TestCgroup,
    netns: &str,
    args: &[&str],
) -> (u32, String) {
    for pid in pids {
        if let Some(reply) = once_as(exe, pid, workload, netns, args) {
            return (pid, reply);
        }
    }
    panic!("no free PID left for {}", exe.display());
}

const CONNECT: [&str; 4] = ["--first-connect", "tcp", "169.254.169.254", "80"];

/// Targets and non-targets at PIDs of one 64-PID block (one `TARGET_TGIDS` entry), started at
/// the same time: each target's byte is set by the fork tracepoint while the others' are
/// written on other CPUs, so none may be lost; no non-target is decided for sharing the block.
/// Then each PID is reused by the other kind: the free and fork tracepoints clear and set the
/// bytes again.
#[test]
fn targets_and_non_targets_sharing_a_tgid_block_are_told_apart_also_after_pid_reuse() {
    if !privileged() {
        return;
    }
    let s = setup("  - process: [alertmanager]\n", &[]);
    let first = free_block();
    let probe = probe_bin();
    for round in 0..2 {
        let threads: Vec<_> = (0..enforcer_common::identity::TGID_BLOCK as u32 / 2)
            .map(|i| {
                // Even PIDs targets in round 0, odd ones in round 1: each PID changes kind.
                let pid = first + 2 * i + (i % 2);
                let target = pid.is_multiple_of(2) == (round == 0);
                let exe = if target {
                    s.target.clone()
                } else {
                    probe.clone()
                };
                let cg = s.workload.path_str();
                let netns = s.netns.clone();
                std::thread::spawn(move || {
                    let out = Command::new(&exe)
                        .args(["--as-pid", &pid.to_string(), "--cgroup", &cg])
                        .args(["--netns", &netns])
                        .args(CONNECT)
                        .output()
                        .unwrap();
                    let reply = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                    (pid, target, out.status.code(), reply)
                })
            })
            .collect();
        let mut placed = 0;
        for t in threads {
            let (pid, target, code, reply) = t.join().unwrap();
            if code == Some(17) {
                continue; // taken by another process meanwhile
            }
            placed += 1;
            let want = if target { EPERM } else { UNREACHABLE };
            assert_eq!(reply, want, "round {round}: pid {pid}, target {target}");
        }
        assert!(
            placed >= 16,
            "round {round}: only {placed} PIDs of the block were free"
        );
    }
}

/// Every writer of the fast-path byte: a target found by the agent's scan (running before the
/// agent), made by exec of a target name (at a PID whose last user was a non-target), by fork
/// from a target, by moving itself into a target cgroup, and moved there by another task —
/// each enforced; and the pinned maps agree: a tgid is marked in `TARGET_TGIDS` exactly when
/// `TARGET_TASKS` holds it, also after the targets exited.
#[test]
fn every_identity_writer_marks_the_fast_path_and_the_two_maps_agree() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let exe = dir.path.join("alertmanager");
    std::fs::copy(probe_bin(), &exe).unwrap();
    let scope = TestCgroup::new().unwrap();
    let workload = scope.child("workload").unwrap();
    let am = scope.child("am").unwrap();
    let policy = dir
        .write(
            "p.yaml",
            &format!(
                "default: allow\nblock:\n  - preset: cloud-metadata\ntargets:\n  \
                 - process: [alertmanager]\n  - cgroup: {}\n",
                am.path_str()
            ),
        )
        .unwrap();
    // Running before the agent: only its scan can find it.
    let mut early = Probe::spawn_exe(&exe, &workload).unwrap();
    let pins = PinDir::new();
    let agent = Agent::start_args(
        Some(&policy),
        &[
            "--scope",
            &scope.path_str(),
            "--pin",
            "--bpffs-dir",
            &pins.path_str(),
        ],
    )
    .unwrap();
    let holder = Probe::spawn(&workload).unwrap();
    let netns = format!("/proc/{}/ns/net", holder.pid());
    let pin_dir = enforcer::kernel::pin::Pins::new(&pins.path);
    let marked = |pid: u32| {
        let (tasks, bytes) = enforcer::kernel::identity::pinned_targets(&pin_dir).unwrap();
        (tasks.contains(&pid), bytes.contains(&pid))
    };
    assert!(
        early
            .connect("tcp", "169.254.169.254", 80)
            .unwrap()
            .denied(),
        "scanned"
    );
    assert_eq!(marked(early.pid()), (true, true), "scanned");

    let mut pids = (free_block()..).take(64);
    // Exec of a target name, at a PID a non-target held just before.
    let (pid, reply) = once_at(&probe_bin(), &mut pids, &workload, &netns, &CONNECT);
    assert_eq!(reply, UNREACHABLE, "non-target at {pid}");
    let exe_str = exe.to_string_lossy().into_owned();
    let reply = once_as(
        &probe_bin(),
        pid,
        &workload,
        &netns,
        &[
            "--exec",
            &exe_str,
            "--first",
            "connect tcp 169.254.169.254 80",
        ],
    );
    assert_eq!(
        reply.as_deref(),
        Some(EPERM),
        "exec of a target name at {pid}"
    );
    // Fork from a target (the child at a chosen PID; no exec of a target name in it).
    let (pid, reply) = once_at(&exe, &mut pids, &workload, &netns, &CONNECT);
    assert_eq!(reply, EPERM, "child of a target at {pid}");
    // A process that moves itself into the target cgroup (no exec after).
    assert_eq!(
        once(&probe_bin(), &am, &netns, &CONNECT),
        EPERM,
        "moved itself"
    );
    // A running non-target moved into the target cgroup by another task (this test).
    let mut moved = Probe::spawn(&workload).unwrap();
    assert_eq!(
        moved.connect("tcp", "169.254.169.254", 80).unwrap(),
        integration_tests::Outcome::Errno(libc::ENETUNREACH)
    );
    assert_eq!(marked(moved.pid()), (false, false));
    std::fs::write(am.path.join("cgroup.procs"), moved.pid().to_string()).unwrap();
    assert!(
        moved
            .connect("tcp", "169.254.169.254", 80)
            .unwrap()
            .denied(),
        "moved by another task"
    );
    assert_eq!(marked(moved.pid()), (true, true), "moved by another task");
    assert_eq!(marked(holder.pid()), (false, false), "not a target");

    // The two maps agree, now and after the targets are gone. The free tracepoint runs after
    // an RCU grace period, and the short-lived targets above exited just before: their entries
    // and bytes go (entry first, then byte) while the two maps are read one after the other,
    // so each check waits for a quiet moment (a disagreement that stays fails).
    let agree =
        integration_tests::eventually(Duration::from_secs(5), Duration::from_millis(50), || {
            let (tasks, bytes) = enforcer::kernel::identity::pinned_targets(&pin_dir).unwrap();
            (tasks == bytes).then_some(())
        });
    assert!(
        agree.is_some(),
        "{:?}",
        enforcer::kernel::identity::pinned_targets(&pin_dir)
    );
    let gone = [early.pid(), moved.pid()];
    drop((early, moved));
    let settled =
        integration_tests::eventually(Duration::from_secs(5), Duration::from_millis(50), || {
            let (tasks, bytes) = enforcer::kernel::identity::pinned_targets(&pin_dir).unwrap();
            (tasks == bytes && !gone.iter().any(|p| bytes.contains(p))).then_some(())
        });
    assert!(
        settled.is_some(),
        "{:?}",
        enforcer::kernel::identity::pinned_targets(&pin_dir)
    );
    drop((holder, agent));
}

/// A target's child that exited but is not reaped yet (a zombie: its entry carries the exit
/// mark) is still in `/proc`, where the agent's scan finds it (a child of a target). The scan
/// keeps the mark, so once the zombie is reaped its entry and byte go: clearing it (as the
/// scan did before 222f87c) left both behind for good, and the PID a target for its next
/// owner.
#[test]
fn a_zombie_the_scan_finds_is_forgotten_once_reaped() {
    if !privileged() {
        return;
    }
    use enforcer_common::identity::why;
    // Declared first, dropped last: the agent stops before its pins go.
    let pins = PinDir::new();
    let s = setup(
        "  - process: [alertmanager]\n",
        &["--pin", "--bpffs-dir", &pins.path_str()],
    );
    let pin_dir = enforcer::kernel::pin::Pins::new(&pins.path);
    let entry = |pid: u32| enforcer::kernel::identity::pinned_task(&pin_dir, pid).unwrap();
    let mut target = Probe::spawn_exe(&s.target, &s.workload).unwrap();
    let zombie: u32 = target.command_line("zombie").unwrap().parse().unwrap();
    let state = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_owned()))
            .and_then(|rest| rest.chars().next())
    };
    let dead =
        integration_tests::eventually(Duration::from_secs(5), Duration::from_millis(10), || {
            (state(zombie) == Some('Z')).then_some(())
        });
    assert!(
        dead.is_some(),
        "{zombie} never became a zombie: {:?}",
        state(zombie)
    );
    let bits = entry(zombie).expect("the child of a target is one");
    assert_ne!(bits & why::INHERITED, 0, "{bits:#x}");
    assert_ne!(bits & why::EXITED, 0, "{bits:#x}");
    // The agent scans every 250 ms; its mark says it found the zombie.
    let scanned =
        integration_tests::eventually(Duration::from_secs(10), Duration::from_millis(50), || {
            entry(zombie).filter(|b| b & why::SCANNED != 0)
        });
    let bits = scanned.expect("the scan finds the zombie, a child of a target");
    assert_ne!(
        bits & why::EXITED,
        0,
        "the scan cleared the exit mark: {bits:#x}"
    );
    assert_eq!(
        target.command_line(&format!("reap {zombie}")).unwrap(),
        "reaped"
    );
    // The free tracepoint runs an RCU grace period after the reap.
    let gone =
        integration_tests::eventually(Duration::from_secs(5), Duration::from_millis(50), || {
            let (tasks, bytes) = enforcer::kernel::identity::pinned_targets(&pin_dir).unwrap();
            (!tasks.contains(&zombie) && !bytes.contains(&zombie)).then_some(())
        });
    assert!(
        gone.is_some(),
        "reaped {zombie}, still a target: {:?}",
        enforcer::kernel::identity::pinned_targets(&pin_dir)
    );
    assert!(entry(target.pid()).is_some(), "the target itself stays one");
    drop((target, s));
}
