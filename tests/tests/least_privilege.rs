//! The capabilities the shipped systemd unit grants (`CapabilityBoundingSet=` of
//! deploy/systemd/enforcer.service) are enough: `enforcer run`, started as root with only those
//! in its bounding set (so only those in its permitted and effective sets), attaches and
//! enforces. Without `CAP_BPF` (and `CAP_SYS_ADMIN`, which the kernel also accepts for it) it
//! cannot load its programs, and says so: the bounding set really bounds the agent, so the
//! first half could fail.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::{
    ChildGuard, EPERM, Outcome, Probe, TempDir, TestCgroup, deploy::deploy, enforcer_bin,
    installed, privileged,
};

/// The unit's `CapabilityBoundingSet=`, as setpriv spells capabilities (`bpf`, `net_admin`).
fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(deploy("systemd/enforcer.service")).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet= in the unit");
    let caps: Vec<String> = line
        .split_whitespace()
        .map(|c| c.strip_prefix("CAP_").unwrap().to_ascii_lowercase())
        .collect();
    for needed in ["bpf", "net_admin", "sys_admin"] {
        assert!(caps.contains(&needed.to_owned()), "{caps:?}");
    }
    caps
}

/// `enforcer run --cgroup <cg>` as root with only `caps` in its bounding set; output in `log`.
fn agent_with(caps: &[String], cg: &TestCgroup, log: &std::path::Path) -> ChildGuard {
    let set: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--bounding-set=-all,{}", set.join(",")))
        .arg("--")
        .arg(enforcer_bin())
        .args([
            "run",
            "--cgroup",
            &cg.path_str(),
            "--web.listen-address",
            "none",
        ]);
    ChildGuard::spawn_logged("enforcer", &mut cmd, log).unwrap()
}

/// Waits until `log` says ready (`Ok`) or the agent exits (`Err` with its log).
fn outcome(child: &mut ChildGuard, log: &std::path::Path) -> Result<String, String> {
    // Loading the programs takes seconds idle, minutes on a loaded 2-CPU machine.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("\"message\":\"ready\"") {
            return Ok(text);
        }
        if child.try_wait().unwrap().is_some() {
            return Err(std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(
            Instant::now() < deadline,
            "neither ready nor exited:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_units_capabilities_suffice_and_without_bpf_the_agent_cannot_load() {
    if !privileged() || !installed("/usr/bin/setpriv", "apt-get install util-linux") {
        return;
    }
    let caps = unit_capabilities();
    let dir = TempDir::new().unwrap();

    let cg = TestCgroup::new().unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    let log = dir.path.join("agent.log");
    let mut child = agent_with(&caps, &cg, &log);
    if let Err(text) = outcome(&mut child, &log) {
        panic!("the agent failed with the unit's capabilities {caps:?}:\n{text}");
    }
    assert_eq!(
        probe.connect("tcp", "169.254.169.254", 80).unwrap(),
        Outcome::Errno(EPERM)
    );
    drop(child);

    let fewer: Vec<String> = caps
        .into_iter()
        .filter(|c| c != "bpf" && c != "sys_admin")
        .collect();
    let cg = TestCgroup::new().unwrap();
    let log = dir.path.join("agent-without-bpf.log");
    let mut child = agent_with(&fewer, &cg, &log);
    match outcome(&mut child, &log) {
        Ok(text) => panic!("ready without CAP_BPF and CAP_SYS_ADMIN:\n{text}"),
        Err(text) => assert!(
            text.contains("enforcer run failed") && text.contains("Operation not permitted"),
            "{text}"
        ),
    }
}
