//! Ready in a second (issue 25): `enforcer run` with the default policy and with an `fqdn`
//! policy prints its `ready` line within 2 s of being started (the bar; about 1 s on an idle
//! 2-CPU machine), with every program loaded, and the line carries what the load cost.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use integration_tests::{
    Agent, TempDir, TestCgroup,
    dns::{AnswerFn, Client, Log, Record, Responder, TYPE_A},
    privileged,
};

/// The bar from start to ready; scaled under the VM runner's software emulation, which runs
/// kernel work 7–10x slower.
fn bar() -> Duration {
    let base = Duration::from_secs(2);
    if integration_tests::emulated() {
        base * 10
    } else {
        base
    }
}

/// Starts the agent, returns the time to its ready line and the line.
fn start(policy: Option<&std::path::Path>, cg: &TestCgroup) -> (Duration, serde_json::Value) {
    // The binary is brought up to date (a `cargo build`) before the clock starts.
    integration_tests::enforcer_bin();
    let started = Instant::now();
    let agent = Agent::start(policy, cg).expect("agent ready");
    let took = started.elapsed();
    // The reader thread signals the ready line before it appends it to the log.
    let ready = integration_tests::wait_for(Duration::from_secs(5), "the ready line", || {
        agent
            .stderr_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "ready")
    });
    (took, ready)
}

fn assert_ready_line(what: &str, took: Duration, ready: &serde_json::Value) {
    eprintln!("{what}: ready after {took:?}: {ready}");
    let load_ms = ready["load_ms"]
        .as_f64()
        .expect("load_ms in the ready line");
    let startup_ms = ready["startup_ms"]
        .as_u64()
        .expect("startup_ms in the ready line");
    assert!(
        load_ms > 0.0 && load_ms <= startup_ms as f64 + 1.0,
        "{ready}"
    );
    let max = ready["max_verified_insns"]
        .as_u64()
        .expect("max_verified_insns");
    assert!(max > 1_000 && max <= 100_000, "{ready}");
    assert_eq!(ready["lost_features"], "", "a feature was lost: {ready}");
    assert!(
        took <= bar(),
        "{what}: ready after {took:?}, over the {:?} bar: {ready}",
        bar()
    );
}

#[test]
fn the_default_policy_is_ready_within_the_bar() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new().unwrap();
    let (took, ready) = start(None, &cg);
    assert_ready_line("default policy", took, &ready);
}

#[test]
fn an_fqdn_policy_is_ready_within_the_bar_with_the_learner_loaded() {
    if !privileged() || !integration_tests::fqdn_learning_supported() {
        return;
    }
    // The agent resolves the allowlisted name once before it attaches: a responder of the
    // test's own on loopback answers at once (an address for A, no records for AAAA).
    let answer: Arc<AnswerFn> = Arc::new(|name: &str, qtype: u16, _: &Client| {
        (name == "hooks.example.test").then(|| {
            if qtype == TYPE_A {
                vec![Record::Addr {
                    ip: "127.88.0.1".parse().unwrap(),
                    ttl: 300,
                }]
            } else {
                Vec::new()
            }
        })
    });
    let dns = Responder::start(
        "127.0.0.1:0".parse().unwrap(),
        None,
        Client::Agent,
        answer,
        Arc::new(Log::default()),
    )
    .unwrap();
    let dir = TempDir::new().unwrap();
    let policy = dir
        .write(
            "p.yaml",
            &format!(
                "mode: enforce\ndefault: deny\nallow:\n  - fqdn: hooks.example.test\n    \
                 ports: [443]\ndns:\n  servers: [\"{}\"]\n",
                dns.addr
            ),
        )
        .unwrap();
    let cg = TestCgroup::new().unwrap();
    let (took, ready) = start(Some(&policy), &cg);
    assert_ready_line("fqdn policy", took, &ready);
}
