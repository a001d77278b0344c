//! Per-target DNS state in scope mode: only a target's own DNS sockets teach the FQDN
//! allowlist. A non-target (unprivileged, its own user and network namespace, its own
//! responder) answering itself for an allowlisted name opens nothing for the target and cannot
//! evict what the target learned.
use std::{collections::HashMap, net::IpAddr, process::Command, sync::Arc};

use integration_tests::{
    Agent, Outcome, Probe, TempDir, TestCgroup,
    dns::{AnswerFn, Client, Log, Record, Responder, fixed},
    privileged, probe_bin,
};

const NAME: &str = "hooks.example.com";
const LEARNED: &str = "203.0.113.10";
const FORGED: &str = "203.0.113.77";
/// In an empty namespace an allowed connect to a routed address fails with ENETUNREACH.
const PASSED: Outcome = Outcome::Errno(101);

#[test]
fn a_non_targets_answers_neither_teach_nor_evict_what_a_target_learned() {
    if !privileged() || !integration_tests::fqdn_learning_supported() {
        return;
    }
    let dir = TempDir::new().unwrap();
    std::fs::set_permissions(
        &dir.path,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let exe = dir.path.join("alertmanager");
    std::fs::copy(probe_bin(), &exe).unwrap();
    let scope = TestCgroup::new().unwrap();
    let target_cg = scope.child("target").unwrap();
    let other_cg = scope.child("other").unwrap();
    let mut target = Probe::spawn_exe(&exe, &target_cg).unwrap();
    // The non-target: uid 65534 in a user namespace of its own, which owns its network
    // namespace (the probe creates an empty one).
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"echo $$ > "$1/cgroup.procs" && shift && exec setpriv --reuid=65534 --regid=65534 --clear-groups unshare --user --map-root-user "$@""#,
        "sh",
    ])
    .arg(&other_cg.path)
    .arg(probe_bin());
    let mut other = Probe::spawn_command(cmd).unwrap();

    let log = Arc::new(Log::default());
    let ttl = 300;
    let target_answer = fixed(HashMap::from([(
        NAME.to_owned(),
        vec![Record::Addr {
            ip: LEARNED.parse().unwrap(),
            ttl,
        }],
    )]));
    let _target_dns = Responder::start(
        "127.0.0.53:53".parse().unwrap(),
        Some(target.pid()),
        Client::Target,
        target_answer,
        log.clone(),
    )
    .unwrap();
    // The non-target's responder: 203.0.113.77 first, then a fresh address per query.
    let n = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let other_answer: Arc<AnswerFn> = Arc::new(move |name: &str, _: u16, _: &Client| {
        if name != NAME {
            return None;
        }
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ip: IpAddr = if i == 0 {
            FORGED.parse().unwrap()
        } else {
            IpAddr::from([198, 51, (i / 250) as u8, (i % 250) as u8 + 1])
        };
        Some(vec![Record::Addr { ip, ttl }])
    });
    let _other_dns = Responder::start(
        "127.0.0.53:53".parse().unwrap(),
        Some(other.pid()),
        Client::Agent,
        other_answer,
        log.clone(),
    )
    .unwrap();
    // The agent's own resolution answers nothing for the name.
    let agent_dns = Responder::start(
        "127.0.0.1:0".parse().unwrap(),
        None,
        Client::Agent,
        fixed(HashMap::new()),
        log,
    )
    .unwrap();
    let policy = dir
        .write(
            "p.yaml",
            &format!(
                "mode: enforce\ndefault: deny\nallow:\n  - fqdn: {NAME}\n    ports: [443]\n  \
                 - cidr: 127.0.0.53/32\n    ports: [53]\n    protocols: [udp]\n\
                 targets:\n  - process: [alertmanager]\ndns:\n  servers: [\"{}\"]\n  \
                 max_addresses_per_name: 64\n",
                agent_dns.addr
            ),
        )
        .unwrap();
    let _agent = Agent::start_args(Some(&policy), &["--scope", &scope.path_str()]).unwrap();

    // The target learns its answer from its own query.
    assert_eq!(
        target.resolve(NAME, "a", "127.0.0.53").unwrap(),
        vec![LEARNED.parse::<IpAddr>().unwrap()]
    );
    assert_eq!(target.connect("tcp", LEARNED, 443).unwrap(), PASSED);
    // The non-target gets 203.0.113.77 for the allowlisted name: the target may not use it.
    assert_eq!(
        other.resolve(NAME, "a", "127.0.0.53").unwrap(),
        vec![FORGED.parse::<IpAddr>().unwrap()]
    );
    assert!(target.connect("tcp", FORGED, 443).unwrap().denied());
    // A flood of 200 answers by the non-target (more than max_addresses_per_name): the
    // target's learned address stays, none of the flood's is allowed.
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.extend(other.resolve(NAME, "a", "127.0.0.53").unwrap());
    }
    assert_eq!(flood.len(), 200);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(target.connect("tcp", LEARNED, 443).unwrap(), PASSED);
    for ip in flood.iter().step_by(20) {
        assert!(
            target
                .connect("tcp", &ip.to_string(), 443)
                .unwrap()
                .denied(),
            "{ip}"
        );
    }
    assert!(target.connect("tcp", FORGED, 443).unwrap().denied());
}
