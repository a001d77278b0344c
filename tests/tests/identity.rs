//! Target identity held by the kernel (scope mode): a process is a target because of what it
//! exec'd or where it lives, decided once and inherited — not because of its current comm.
//! Each test runs the workload in an empty network namespace: EPERM means the enforcer decided,
//! ENETUNREACH (101) that the call went through to a namespace with no route.
use std::{path::Path, process::Command, time::Duration};

use integration_tests::{Agent, Probe, TempDir, TestCgroup, http_get, privileged, probe_bin};

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
