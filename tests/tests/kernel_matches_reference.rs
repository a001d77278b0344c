//! Property test: for random policies and random destinations, the kernel's verdict (EPERM or
//! not, and the rule named by the event) equals the userspace reference evaluator of the
//! decision order. At least 10,000 cases per run (a quarter under emulation, where each costs
//! ~20× more: the VM suites check the same semantics on other kernels, the host the volume); the seed is printed for reproduction
//! (`ENFORCER_PROPTEST_SEED=<n>`).
//!
//! Policies also carry `fqdn` rules, and each policy gets random FQDN facts (address → rules
//! it was answered for), written into the kernel's resolved-address map and given to the
//! reference evaluator's step 4; destinations are often those addresses.
//!
//! The ingress direction (the API guard) alike: random `api:` allow lists next to random egress
//! rules in the same tries, SYNs from random peer addresses (IPv4, IPv6, IPv4-mapped, NAT64) to
//! a listener of the cgroup; the kernel's verdict (its accepted/refused counters) equals
//! [`reference::evaluate_ingress`].
#[path = "api_guard_support/mod.rs"]
mod api_guard_support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use enforcer::{
    cgroup::Cgroup,
    compile, events,
    kernel::Kernel,
    kernel::fqdn::FqdnMaps,
    policy,
    reference::{self, Decision, FqdnFacts},
};
use enforcer_common::{fqdn::FqdnEntry, rule_id};
use integration_tests::{EPERM, Outcome, Probe, TestCgroup, emulated, privileged};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};

const POLICIES: usize = 50;

/// The share of the cases a run makes: all of them, or a quarter under emulation.
fn share() -> usize {
    if emulated() { 4 } else { 1 }
}
const DESTINATIONS: usize = 200;

const V4_BASES: &[[u8; 4]] = &[
    [10, 0, 0, 0],
    [10, 1, 2, 3],
    [169, 254, 169, 254],
    [192, 0, 2, 7],
    [127, 0, 0, 9],
    [198, 51, 100, 200],
    // Same /24s as bases above: several prefixes in one block entry.
    [198, 51, 100, 7],
    [10, 1, 2, 130],
];
const V6_BASES: &[&str] = &[
    "fd00:ec2::254",
    "fd00::1",
    "2001:db8::5",
    "2001:db8:0:1::9",
    "::1",
];
const PORTS: &[u16] = &[22, 53, 80, 443, 8080, 9094];

fn v4_cidr(rng: &mut StdRng) -> (Ipv4Addr, u8) {
    let base = Ipv4Addr::from(*V4_BASES.choose(rng).unwrap());
    let len = *[0u8, 8, 16, 24, 25, 26, 28, 30, 31, 32]
        .choose(rng)
        .unwrap();
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    (Ipv4Addr::from(u32::from(base) & mask), len)
}

fn v6_cidr(rng: &mut StdRng) -> (Ipv6Addr, u8) {
    let base: Ipv6Addr = V6_BASES.choose(rng).unwrap().parse().unwrap();
    let len = *[0u8, 7, 16, 32, 64, 120, 127, 128].choose(rng).unwrap();
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    (Ipv6Addr::from(u128::from(base) & mask), len)
}

fn entry(rng: &mut StdRng) -> String {
    let mut s = if rng.random_bool(0.08) {
        format!(
            "  - preset: {}\n",
            ["private", "cloud-metadata"].choose(rng).unwrap()
        )
    } else if rng.random_bool(0.7) {
        let (a, l) = v4_cidr(rng);
        format!("  - cidr: {a}/{l}\n")
    } else {
        let (a, l) = v6_cidr(rng);
        format!("  - cidr: {a}/{l}\n")
    };
    if !s.contains("preset") {
        match rng.random_range(0..4) {
            0 => s += &format!("    ports: [{}]\n", PORTS.choose(rng).unwrap()),
            1 => {
                let a = PORTS.choose(rng).unwrap();
                let b = PORTS.choose(rng).unwrap();
                s += &format!("    ports: [{a}, {b}]\n");
            }
            2 => s += "    ports: [\"50-100\"]\n",
            _ => {}
        }
        match rng.random_range(0..4) {
            0 => s += "    protocols: [tcp]\n",
            1 => s += "    protocols: [udp]\n",
            2 => s += "    protocols: [tcp, udp]\n",
            _ => {}
        }
    }
    s
}

fn random_policy(rng: &mut StdRng) -> String {
    let mut y = format!(
        "mode: enforce\ndefault: {}\n",
        if rng.random_bool(0.5) {
            "deny"
        } else {
            "allow"
        }
    );
    let blocks = rng.random_range(0..6);
    if blocks > 0 {
        y += "block:\n";
        for _ in 0..blocks {
            y += &entry(rng);
        }
    }
    let allows = rng.random_range(0..4);
    let fqdns = rng.random_range(0..3);
    if allows > 0 || fqdns > 0 || blocks == 0 {
        y += "allow:\n";
        for _ in 0..allows.max(1) {
            y += &entry(rng);
        }
        for i in 0..fqdns {
            // An fqdn entry: a cidr entry's ports/protocols with the cidr swapped for a name.
            let e = entry(rng);
            let rest: String = e.lines().skip(1).map(|l| format!("{l}\n")).collect();
            if e.contains("preset") {
                y += &format!("  - fqdn: f{i}.test\n");
            } else {
                y += &format!("  - fqdn: \"*.f{i}.test\"\n{rest}");
            }
        }
    }
    y
}

/// An address near the rules: inside a base, at a prefix edge, or just outside; IPv4 sometimes
/// written as IPv4-mapped, NAT64, IPv4-compatible or SIIT IPv6.
fn destination(rng: &mut StdRng) -> IpAddr {
    if rng.random_bool(0.65) {
        let (net, len) = v4_cidr(rng);
        let host = if len == 32 { 0 } else { u32::MAX >> len };
        let a = match rng.random_range(0..4) {
            0 => u32::from(net),
            1 => u32::from(net) | host,
            2 => (u32::from(net) | host).wrapping_add(1),
            _ => u32::from(net) | (rng.random::<u32>() & host),
        };
        let v4 = Ipv4Addr::from(a);
        match rng.random_range(0..8) {
            0 => IpAddr::V6(v4.to_ipv6_mapped()),
            1 => IpAddr::V6(Ipv6Addr::from((0x0064_ff9bu128 << 96) | a as u128)),
            // IPv4-compatible (`::a.b.c.d`; `::` and `::1` are not IPv4 spellings).
            2 => IpAddr::V6(Ipv6Addr::from(a as u128)),
            // SIIT `::ffff:0:a.b.c.d`.
            3 => IpAddr::V6(Ipv6Addr::from((0xffffu128 << 48) | a as u128)),
            _ => IpAddr::V4(v4),
        }
    } else {
        let (net, len) = v6_cidr(rng);
        let host = if len == 128 { 0 } else { u128::MAX >> len };
        let a = match rng.random_range(0..3) {
            0 => u128::from(net),
            1 => (u128::from(net) | host).wrapping_add(1),
            _ => u128::from(net) | (rng.random::<u128>() & host),
        };
        IpAddr::V6(Ipv6Addr::from(a))
    }
}

#[test]
fn kernel_verdict_equals_reference_evaluator() {
    if !privileged() {
        return;
    }
    let seed = std::env::var("ENFORCER_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("seed={seed} (rerun with ENFORCER_PROPTEST_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let cg = TestCgroup::new().unwrap();
    let mut enforcer = Kernel::load().unwrap();
    let mut ring = enforcer.take_events().unwrap();
    let mut fqdn_maps = FqdnMaps::take(enforcer.object_mut()).unwrap();
    let mut facts = FqdnFacts::default();
    let mut probe = Probe::spawn(&cg).unwrap();
    let mut cases = 0;
    let mut fqdn_allowed = 0;
    // Cases whose address the block map answers for (its /24 folded, no exact entry).
    let mut in_blocks = 0;
    for generation in 1..=POLICIES.div_ceil(share()) as u32 {
        let yaml = random_policy(&mut rng);
        let policy = policy::parse_policy(&yaml, "random.yaml")
            .unwrap_or_else(|e| panic!("generated policy rejected: {e}\n{yaml}"));
        let compiled = compile::compile(&policy).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        enforcer.install(&compiled, generation).unwrap();
        if generation == 1 {
            enforcer.attach(&Cgroup::open(&cg.path).unwrap()).unwrap();
        }
        // Fresh FQDN facts for this policy, in the kernel and for the reference.
        for ip in facts.answered.keys() {
            fqdn_maps.set_resolved(*ip, None).unwrap();
        }
        facts = FqdnFacts::default();
        if !policy.fqdns.is_empty() {
            for _ in 0..rng.random_range(0..8) {
                let ip = enforcer::policy::normalize_addr(destination(&mut rng));
                facts.add(ip, rng.random_range(0..policy.fqdns.len()));
            }
            for (ip, rules) in &facts.answered {
                let rules = rules.iter().fold(0u64, |m, i| m | 1 << i);
                let entry = FqdnEntry {
                    expires_ns: u64::MAX / 2,
                    rules,
                };
                fqdn_maps.set_resolved(*ip, Some(entry)).unwrap();
            }
        }
        let fact_addrs: Vec<IpAddr> = facts.answered.keys().copied().collect();
        for _ in 0..DESTINATIONS {
            let addr = match fact_addrs.choose(&mut rng) {
                Some(a) if rng.random_bool(0.3) => match a {
                    IpAddr::V4(v4) if rng.random_bool(0.3) => IpAddr::V6(v4.to_ipv6_mapped()),
                    _ => *a,
                },
                _ => destination(&mut rng),
            };
            let port = *PORTS.choose(&mut rng).unwrap();
            let (call, proto) = *[("connect", "tcp"), ("connect", "udp"), ("sendto", "udp")]
                .choose(&mut rng)
                .unwrap();
            let ip_proto = if proto == "tcp" { 6 } else { 17 };
            let outcome = match call {
                "connect" => probe.connect(proto, &addr.to_string(), port),
                _ => probe.sendto(&addr.to_string(), port),
            }
            .unwrap();
            if let IpAddr::V4(a) = enforcer::policy::normalize_addr(addr)
                && compiled.v4_blocks.find(a).is_some()
                && compiled.v4.find_by(|n| n.cmp(&a.into())).is_none()
            {
                in_blocks += 1;
            }
            let mut want = reference::evaluate_with(&policy, &facts, addr, port, ip_proto);
            // An unconnected send to the unspecified address goes to this host's loopback
            // address: the sendmsg hook decides the address given, the packet-layer backstop
            // the one the packet carries.
            if call == "sendto"
                && matches!(want, Decision::Allow { .. })
                && let Some(lo) = loopback_of_unspecified(addr)
            {
                want = reference::evaluate_with(&policy, &facts, lo, port, ip_proto);
            }
            let ctx = || {
                format!(
                    "seed={seed} case={cases} {call} {proto} {addr} port {port}: kernel {outcome:?}, reference {want:?}\npolicy:\n{yaml}"
                )
            };
            let mut evs = Vec::new();
            while let Some(item) = ring.next() {
                evs.push(events::decode::<enforcer_common::DenyEvent>(&item).unwrap());
            }
            match want {
                Decision::Deny { rule } => {
                    assert_eq!(outcome, Outcome::Errno(EPERM), "{}", ctx());
                    assert_eq!(evs.len(), 1, "one event per denial: {}", ctx());
                    let expect = if rule == rule_id::DEFAULT {
                        rule_id::DEFAULT
                    } else {
                        rule
                    };
                    assert_eq!(evs[0].rule_id, expect, "rule: {}", ctx());
                    assert_eq!(evs[0].generation, generation, "{}", ctx());
                }
                Decision::Allow { rule } => {
                    if rule.is_some_and(|r| r as usize >= policy.rules.len()) {
                        fqdn_allowed += 1;
                    }
                    assert!(!outcome.denied(), "{}", ctx());
                    assert!(evs.is_empty(), "no event for an allowed call: {}", ctx());
                }
            }
            cases += 1;
        }
    }
    assert!(cases >= 10_000 / share(), "{cases} cases");
    assert!(
        fqdn_allowed > 100 / share(),
        "only {fqdn_allowed} cases were allowed by step 4"
    );
    assert!(
        in_blocks > 500 / share(),
        "only {in_blocks} cases were decided by a block entry"
    );
    eprintln!(
        "{cases} cases ({fqdn_allowed} allowed by an FQDN rule, {in_blocks} by a block \
         entry): kernel == reference"
    );
}

/// The loopback address a datagram to the unspecified address `addr` really goes to (IPv4
/// for `0.0.0.0` and `::ffff:0.0.0.0`, `::1` for `::`), or `None` when `addr` is specified.
fn loopback_of_unspecified(addr: IpAddr) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(a) if a.is_unspecified() => Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        IpAddr::V6(a) if a.is_unspecified() => Some(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some_and(|v4| v4.is_unspecified()) => {
            Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        }
        _ => None,
    }
}

const INGRESS_POLICIES: usize = 25;
const PEERS: usize = 200;

/// A random `api:` section guarding `port`: an allow list of 1–5 CIDRs, or none at all.
fn random_api(rng: &mut StdRng, port: u16) -> String {
    let mut y = format!("api:\n  mode: enforce\n  ports: [{port}]\n");
    if rng.random_bool(0.15) {
        return y;
    }
    y += "  allow:\n";
    for _ in 0..rng.random_range(1..6) {
        if rng.random_bool(0.6) {
            let (a, l) = v4_cidr(rng);
            y += &format!("    - cidr: {a}/{l}\n");
        } else {
            let (a, l) = v6_cidr(rng);
            y += &format!("    - cidr: {a}/{l}\n");
        }
    }
    y
}

/// A peer address a socket can bind (with `IP_FREEBIND`): [`destination`]'s, without the
/// unspecified, multicast, broadcast and link-local ones (127.255.255.255 is `lo`'s broadcast
/// address in the namespace: no unicast peer).
fn peer(rng: &mut StdRng) -> IpAddr {
    loop {
        let a = destination(rng);
        let usable = match enforcer::policy::normalize_addr(a) {
            IpAddr::V4(v4) => {
                !(v4.is_unspecified()
                    || v4.is_multicast()
                    || v4.is_broadcast()
                    || v4 == Ipv4Addr::new(127, 255, 255, 255))
            }
            IpAddr::V6(v6) => {
                !(v6.is_unspecified() || v6.is_multicast() || v6.is_unicast_link_local())
            }
        };
        if usable {
            return a;
        }
    }
}

#[test]
fn kernel_ingress_verdict_equals_reference_evaluator() {
    if !privileged() {
        return;
    }
    let seed = std::env::var("ENFORCER_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("seed={seed} (rerun with ENFORCER_PROPTEST_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let cg = TestCgroup::new().unwrap();
    let mut kernel = Kernel::load().unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    // A dual-stack listener of the cgroup, and every address local in the probe's namespace
    // (its only interface is lo): a SYN from any peer address reaches the listener.
    let port = probe.listen("::").unwrap();
    let netns = std::path::PathBuf::from(format!("/proc/{}/ns/net", probe.pid()));
    let in_ns = |f: &(dyn Fn() + Sync)| {
        std::thread::scope(|s| {
            s.spawn(|| {
                integration_tests::enter_netns(&netns).unwrap();
                f();
            })
            .join()
            .unwrap();
        });
    };
    in_ns(&|| {
        for args in [
            &["route", "add", "local", "0.0.0.0/0", "dev", "lo"][..],
            &["-6", "route", "add", "local", "::/0", "dev", "lo"][..],
        ] {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        }
    });
    let (mut cases, mut refused) = (0, 0);
    for generation in 1..=INGRESS_POLICIES.div_ceil(share()) as u32 {
        let yaml = format!("{}{}", random_policy(&mut rng), random_api(&mut rng, port));
        let policy = policy::parse_policy(&yaml, "random.yaml")
            .unwrap_or_else(|e| panic!("generated policy rejected: {e}\n{yaml}"));
        let compiled = compile::compile(&policy).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        kernel.install(&compiled, generation).unwrap();
        if generation == 1 {
            kernel.attach(&Cgroup::open(&cg.path).unwrap()).unwrap();
        }
        let peers: Vec<IpAddr> = (0..PEERS).map(|_| peer(&mut rng)).collect();
        for from in peers {
            let to = match from {
                IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
                    SocketAddr::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), port)
                }
                IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
            };
            let want = reference::evaluate_ingress(&policy, from).expect("the policy has api:");
            let before = kernel.api_counters().unwrap();
            let sock = std::sync::Mutex::new(None);
            in_ns(&|| {
                *sock.lock().unwrap() = Some(api_guard_support::start_connect(from, to));
            });
            let sock = sock.into_inner().unwrap().unwrap();
            let ctx = || {
                format!("seed={seed} case={cases} peer {from}: reference {want:?}\npolicy:\n{yaml}")
            };
            let sock = sock.unwrap_or_else(|e| panic!("bind/connect: {e}: {}", ctx()));
            // The SYN crosses lo synchronously; allow for a busy machine.
            let deadline = Instant::now() + Duration::from_secs(2);
            let after = loop {
                let now = kernel.api_counters().unwrap();
                if now.accepted + now.refused > before.accepted + before.refused
                    || Instant::now() > deadline
                {
                    break now;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            drop(sock);
            let (acc, refd) = (
                after.accepted - before.accepted,
                after.refused - before.refused,
            );
            match want {
                Decision::Allow { .. } => assert_eq!((acc, refd), (1, 0), "{}", ctx()),
                Decision::Deny { .. } => {
                    assert_eq!((acc, refd), (0, 1), "{}", ctx());
                    refused += 1;
                }
            }
            cases += 1;
        }
    }
    assert!(cases >= 5_000 / share(), "{cases} cases");
    assert!(
        refused > cases / 10 && refused < cases * 9 / 10,
        "{refused} of {cases} refused: the generator should give both verdicts"
    );
    eprintln!("{cases} ingress cases ({refused} refused): kernel == reference");
}

/// `check` and `run` agree at the limit: a policy that fills the IPv4 exact map, block map and
/// trie to exactly the capacity the compiler reports (what `check` prints and accepts) installs
/// into the kernel's maps of one rule set, and then a reload flips to the other; addresses of
/// each kind are decided as the reference evaluator decides them. One more prefix is refused
/// by the compiler (`check` and `run` alike).
#[test]
fn a_policy_filling_every_ipv4_map_installs_and_decides() {
    use enforcer::policy::{Location, Rule, RuleAction, RuleSource};
    use enforcer_common::{MAX_BLOCKS_V4, MAX_EXACT_V4, MAX_PREFIXES, proto};
    use ipnet::{IpNet, Ipv4Net};

    if !privileged() {
        return;
    }
    let mut p = policy::default_policy();
    p.source = "full.yaml".into();
    let base = compile::compile(&p).unwrap().capacity;
    let block = |addr: u32, len: u8| Rule {
        action: RuleAction::Block,
        net: IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap()),
        ports: vec![],
        protocols: proto::ALL,
        source: RuleSource::Cidr,
        location: Location {
            file: "full.yaml".into(),
            line: 1,
            column: 5,
        },
    };
    let ip = |a: &str| a.parse::<Ipv4Addr>().map(u32::from).unwrap();
    // /32s, 256 to a /24 (a /24 of exact entries alone is not folded): the exact map.
    let exact = MAX_EXACT_V4 as usize - base.v4_exact.used;
    p.rules
        .extend((0..exact as u32).map(|i| block(ip("11.0.0.0") + i, 32)));
    // One /26 in each of as many /24s: the block map.
    let blocks = MAX_BLOCKS_V4 as usize - base.v4_blocks.used;
    p.rules
        .extend((0..blocks as u32).map(|i| block(ip("32.0.0.64") + (i << 8), 26)));
    // /23s: the trie.
    let trie = MAX_PREFIXES as usize - base.v4.used;
    p.rules
        .extend((0..trie as u32).map(|i| block(ip("40.0.0.0") + (i << 9), 23)));
    let compiled = compile::compile(&p).unwrap();
    let c = compiled.capacity;
    for (name, usage) in [
        ("exact", c.v4_exact),
        ("blocks", c.v4_blocks),
        ("trie", c.v4),
    ] {
        assert_eq!(usage.used, usage.available, "{name}: {c}");
    }

    let cg = TestCgroup::new().unwrap();
    let mut enforcer = Kernel::load().unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    for generation in 1..=2 {
        let started = Instant::now();
        enforcer.install(&compiled, generation).unwrap();
        eprintln!(
            "generation {generation}: {} rules installed in {:?}",
            p.rules.len(),
            started.elapsed()
        );
        if generation == 1 {
            enforcer.attach(&Cgroup::open(&cg.path).unwrap()).unwrap();
        }
        // The first and last prefix of each kind, the next address after the last, and
        // addresses between them.
        let last_exact = ip("11.0.0.0") + exact as u32 - 1;
        let last_block = ip("32.0.0.64") + ((blocks as u32 - 1) << 8);
        let last_trie = ip("40.0.0.0") + ((trie as u32 - 1) << 9);
        for (addr, denied) in [
            (ip("11.0.0.5"), true),
            (last_exact, true),
            (last_exact + 1, false),
            (ip("32.0.0.70"), true),
            (ip("32.0.0.5"), false),
            (last_block + 63, true),
            (last_block + 64, false),
            (last_block + 256, false),
            (ip("40.0.1.7"), true),
            (last_trie + 511, true),
            (last_trie + 512, false),
            (ip("169.254.169.254"), true),
        ] {
            let addr = Ipv4Addr::from(addr).to_string();
            let want = reference::evaluate(&p, addr.parse().unwrap(), 9, 17);
            assert_eq!(matches!(want, Decision::Deny { .. }), denied, "{addr}");
            let outcome = probe.connect("udp", &addr, 9).unwrap();
            assert_eq!(outcome.denied(), denied, "{addr}: {outcome:?}");
        }
    }

    p.rules.push(block(ip("48.0.0.0"), 23));
    let e = compile::compile(&p).unwrap_err().to_string();
    assert!(
        e.starts_with(
            "full.yaml: the policy needs 262,145 IPv4 map entries, more than the 262,144"
        ),
        "{e}"
    );
}
