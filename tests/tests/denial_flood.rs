//! A target hammering one blocked address: identical denials are folded into a first line and
//! one line per window, so the log stays small; every denied call is still accounted for
//! (`count` plus lost events = the kernel's counter = the calls that got EPERM), and a
//! different denial in the middle of the flood gets its own line at once.
use std::time::{Duration, Instant};

use integration_tests::{
    Agent, EPERM, Outcome, Probe, TestCgroup, denied_calls, lost_events, privileged,
};

/// The bound: at most 2 MB of stdout for a 20 s flood.
const BYTES_PER_SECOND: u64 = 2_000_000 / 20;

/// How long the flood lasts: `ENFORCER_FLOOD_SECS` (the acceptance run is 20 s), 4 s by default
/// (the rate bound is checked either way).
fn flood_time() -> Duration {
    let secs = std::env::var("ENFORCER_FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    Duration::from_secs(secs)
}

#[test]
fn a_flood_of_one_denial_writes_little_and_accounts_for_every_call() {
    if !privileged() {
        return;
    }
    let time = flood_time();
    let cg = TestCgroup::new().unwrap();
    let mut agent = Agent::start(None, &cg).unwrap();
    let mut flooder = Probe::spawn(&cg).unwrap();
    let mut other = Probe::spawn(&cg).unwrap();
    let flooder_pid = flooder.pid();
    let flood = std::thread::spawn(move || {
        flooder
            .flood_for("udp", "169.254.169.254", 80, time)
            .unwrap()
    });
    // In the middle of the flood: another process, another address.
    std::thread::sleep(time / 2);
    let asked = Instant::now();
    assert_eq!(
        other.connect("tcp", "10.0.0.1", 443).unwrap(),
        Outcome::Errno(EPERM)
    );
    let mut lines = Vec::new();
    let mut other_line = None;
    while other_line.is_none() && asked.elapsed() < Duration::from_secs(5) {
        lines.extend(agent.events_within(Duration::from_millis(50)));
        other_line = lines
            .iter()
            .find(|l| l["pid"] == other.pid())
            .map(|_| asked.elapsed());
    }
    let waited = other_line.expect("the other denial got no line");
    assert!(
        waited <= Duration::from_secs(2),
        "the other denial's line came {waited:?} after the call"
    );
    let (eperm, passed) = flood.join().unwrap();
    assert_eq!(passed, 0, "calls of the flood that were not denied");
    assert!(eperm > 10_000, "the flood made only {eperm} calls");
    // Stopping writes the open windows' lines and the last lost count.
    let status = agent.stop().expect("agent exited");
    assert!(status.success(), "{status:?}\n{}", agent.stderr_text());
    lines.extend(agent.events_within(Duration::from_secs(5)));

    let bytes = agent.stdout_bytes();
    eprintln!(
        "{time:?} flood: {eperm} denied calls, {} lines, {bytes} bytes of stdout; the other \
         denial's line after {waited:?}",
        lines.len()
    );
    let bound = BYTES_PER_SECOND * time.as_secs();
    assert!(
        bytes <= bound,
        "{bytes} bytes of stdout for a {time:?} flood (bound {bound}): {} lines",
        lines.len()
    );
    let other_lines: Vec<_> = lines.iter().filter(|l| l["pid"] == other.pid()).collect();
    assert_eq!(other_lines.len(), 1, "{other_lines:?}");
    assert_eq!(other_lines[0]["count"], 1, "{}", other_lines[0]);
    assert_eq!(other_lines[0]["dst_ip"], "10.0.0.1");

    let flood_lines = denied_calls(&lines, |l| l["pid"] == flooder_pid);
    let lost = lost_events(&lines);
    assert_eq!(
        flood_lines + 1 + lost,
        eperm + 1,
        "{flood_lines} counted by the flood's lines + 1 other + {lost} lost != {eperm} + 1 denied calls"
    );
    // The kernel's counter (the one the metrics mirror) says the same.
    let log = agent.stderr_text();
    let stopped: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "detached")
        .unwrap_or_else(|| panic!("no detached line in:\n{log}"));
    assert_eq!(stopped["denied"], eperm + 1, "{stopped}");
    // The flood's lines: its first line, then windows closed at their end (count, window_ms).
    let windows: Vec<_> = lines
        .iter()
        .filter(|l| l["pid"] == flooder_pid && l["window_ms"] == 1000)
        .collect();
    assert!(!windows.is_empty(), "no window line");
    assert!(
        windows.iter().all(|l| l["count"].as_u64() >= Some(1)),
        "{windows:?}"
    );
}
