//! The ingress programs run only while the policy needs them (issue 10, "a fast exit for
//! everything else"): the DNS-learning program only with `fqdn` rules. A policy without them
//! leaves nothing on the cgroup's ingress path; a reload that adds them attaches the learner
//! before the new names are live (the target's very first answer is learned); a pinned agent
//! killed and restarted keeps exactly one; a reload that drops them detaches it. (The API
//! guard's counterpart is in `api_guard.rs`.)
use std::{net::IpAddr, sync::Arc};

use integration_tests::{
    Agent, ECONNREFUSED, EPERM, Outcome, PinDir, Probe, TempDir, TestCgroup,
    dns::{AnswerFn, Client, Log, Record, Responder, TYPE_A},
    ingress_programs, privileged,
};

const PORT: u16 = 8443;
/// The DNS-learning program, as bpftool names it.
const LEARNER: &str = "enforcer_dns_ingress";

fn reloads(agent: &Agent) -> usize {
    agent
        .stderr_text()
        .matches("\"message\":\"policy reloaded\"")
        .count()
}

fn reload(agent: &Agent) {
    let before = reloads(agent);
    agent.signal(libc::SIGHUP);
    integration_tests::wait_for(
        std::time::Duration::from_secs(10),
        "policy reloaded",
        || (reloads(agent) > before).then_some(()),
    );
}

#[test]
fn the_dns_learner_is_attached_only_while_the_policy_has_fqdn_rules() {
    if !privileged() || !integration_tests::fqdn_learning_supported() {
        return;
    }
    let ip: IpAddr = "127.90.0.7".parse().unwrap();
    // Only the target's responder knows the name: only learning can allow its address.
    let answer: Arc<AnswerFn> = Arc::new(move |name: &str, qtype: u16, client: &Client| {
        (name == "learn.test" && qtype == TYPE_A && *client == Client::Target)
            .then(|| vec![Record::Addr { ip, ttl: 600 }])
    });
    let cg = TestCgroup::new().unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    let log = Arc::new(Log::default());
    let _target_dns = Responder::start(
        "127.0.0.53:53".parse().unwrap(),
        Some(probe.pid()),
        Client::Target,
        answer.clone(),
        log.clone(),
    )
    .unwrap();
    let agent_dns = Responder::start(
        "127.0.0.1:0".parse().unwrap(),
        None,
        Client::Agent,
        answer,
        log,
    )
    .unwrap();
    let dir = TempDir::new().unwrap();
    let write = |fqdn: &str| {
        dir.write(
            "p.yaml",
            &format!(
                "mode: enforce\ndefault: deny\nallow:\n{fqdn}  - cidr: 127.0.0.53/32\n    ports: [53]\n    protocols: [udp]\ndns:\n  servers: [\"{}\"]\n",
                agent_dns.addr
            ),
        )
        .unwrap()
    };
    let with_fqdn = format!("  - fqdn: learn.test\n    ports: [{PORT}]\n");
    let path = write("");
    let pins = PinDir::new();
    let (cg_path, pin_path) = (cg.path_str(), pins.path_str());
    let args = ["--cgroup", &cg_path, "--pin", "--bpffs-dir", &pin_path];
    let mut agent = Agent::start_args(Some(&path), &args).unwrap();
    assert_eq!(
        ingress_programs(&cg.path).unwrap(),
        Vec::<String>::new(),
        "no fqdn rule, no api section: nothing on the ingress path"
    );
    assert_eq!(
        probe.resolve("learn.test", "a", "127.0.0.53").unwrap(),
        [ip]
    );
    assert_eq!(
        probe.connect("tcp", &ip.to_string(), PORT).unwrap(),
        Outcome::Errno(EPERM),
        "still enforcing (default deny)"
    );

    // A reload that adds the rule: the learner is attached before the name is live, so the
    // first answer after the reload is learned.
    write(&with_fqdn);
    reload(&agent);
    assert_eq!(ingress_programs(&cg.path).unwrap(), [LEARNER]);
    assert_eq!(
        probe.resolve("learn.test", "a", "127.0.0.53").unwrap(),
        [ip]
    );
    assert_eq!(
        probe.connect("tcp", &ip.to_string(), PORT).unwrap(),
        Outcome::Errno(ECONNREFUSED),
        "learned from the target's own answer"
    );

    // Pinned: a killed agent leaves it attached, a restarted one replaces it (not adds).
    agent.signal(libc::SIGKILL);
    agent.stop();
    assert_eq!(ingress_programs(&cg.path).unwrap(), [LEARNER]);
    agent = Agent::start_args(Some(&path), &args).unwrap();
    let settled = integration_tests::eventually(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(20),
        || (ingress_programs(&cg.path).unwrap() == [LEARNER]).then_some(()),
    );
    assert!(
        settled.is_some(),
        "one learner after the restart: {:?}",
        ingress_programs(&cg.path).unwrap()
    );

    // A reload that drops the rule detaches it (the pinned link too); enforcement stays.
    write("");
    reload(&agent);
    let gone = integration_tests::eventually(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(20),
        || ingress_programs(&cg.path).unwrap().is_empty().then_some(()),
    );
    assert!(
        gone.is_some(),
        "learner detached: {:?}",
        ingress_programs(&cg.path).unwrap()
    );
    assert_eq!(
        probe.connect("tcp", &ip.to_string(), PORT).unwrap(),
        Outcome::Errno(EPERM)
    );
    // A restart with that policy attaches no learner either.
    agent.signal(libc::SIGKILL);
    agent.stop();
    agent = Agent::start_args(Some(&path), &args).unwrap();
    assert_eq!(ingress_programs(&cg.path).unwrap(), Vec::<String>::new());
    assert_eq!(
        probe.connect("tcp", &ip.to_string(), PORT).unwrap(),
        Outcome::Errno(EPERM)
    );
    drop(agent);
}
