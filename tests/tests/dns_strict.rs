//! The DNS learner learns a subset of what a strict stub resolver accepts, never more (issue 13).
//!
//! A probe in the enforced cgroup (empty network namespace, only `lo`) asks its own DNS server
//! on loopback (127.0.0.53:53 and [::1]:53 in that namespace) over a connected UDP socket. For
//! each case of a table the server answers the query with crafted datagrams (over UDP, or over
//! a raw socket with a good or a bad UDP checksum), then with NXDOMAIN (the learner ignores it;
//! it ends the probe's wait). Per case: the addresses a strict resolver would have accepted are
//! allowed (connect fails with ENETUNREACH: no route in the empty namespace), the others denied
//! (EPERM), and exactly the expected `enforcer_dns_responses_refused_total{reason}` and
//! `enforcer_dns_records_ignored_total{reason}` counters moved. The agent's own resolver knows
//! no name: only learning can allow anything.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use integration_tests::{
    Agent, Background, ENETUNREACH, EPERM, Outcome, Probe, TempDir, TestCgroup,
    dns::{Client, Responder, TYPE_A, TYPE_AAAA, TYPE_CNAME, fixed, parse_query, push_name},
    enter_netns, http_get, privileged,
};

const PORT: u16 = 8443;
/// The question name's offset in every message.
const QNAME: u16 = 12;
/// Flags of a response: QR, RD, RA (and TC, or NXDOMAIN).
const OK: u16 = 0x8180;
const TC: u16 = 0x8380;
const NXDOMAIN: u16 = 0x8183;

/// How a record's owner (or a CNAME's target) is written.
enum Name<'a> {
    Full(&'a str),
    /// A compression pointer.
    Ptr(u16),
    /// Labels, then a pointer.
    Then(&'a str, u16),
    /// A pointer to itself.
    SelfLoop,
}

/// A DNS message built byte by byte, so malformed ones can be built too.
struct Msg(Vec<u8>);

impl Msg {
    /// Header and question: `an` answer records announced, whatever follows.
    fn new(id: u16, flags: u16, an: u16, name: &str, qtype: u16) -> Self {
        let mut b = Vec::with_capacity(256);
        b.extend(id.to_be_bytes());
        b.extend(flags.to_be_bytes());
        b.extend([0, 1]);
        b.extend(an.to_be_bytes());
        b.extend([0, 0, 0, 0]);
        push_name(&mut b, name, None);
        b.extend(qtype.to_be_bytes());
        b.extend([0, 1]);
        Msg(b)
    }

    fn name(&mut self, n: &Name) {
        let ptr = |p: u16| (0xc000 | p).to_be_bytes();
        match n {
            Name::Full(s) => push_name(&mut self.0, s, None),
            Name::Ptr(p) => self.0.extend(ptr(*p)),
            Name::Then(labels, p) => {
                push_name(&mut self.0, labels, None);
                self.0.pop();
                self.0.extend(ptr(*p));
            }
            Name::SelfLoop => {
                let at = self.0.len() as u16;
                self.0.extend(ptr(at));
            }
        }
    }

    /// Appends a record; returns the offset of its RDATA.
    fn rr(&mut self, owner: &Name, rtype: u16, rdata: &[u8]) -> u16 {
        self.name(owner);
        self.0.extend(rtype.to_be_bytes());
        self.0.extend([0, 1, 0, 0, 1, 44]);
        self.0.extend((rdata.len() as u16).to_be_bytes());
        let at = self.0.len() as u16;
        self.0.extend(rdata);
        at
    }

    fn addr(mut self, owner: &Name, ip: &str) -> Self {
        match ip.parse::<IpAddr>().unwrap() {
            IpAddr::V4(a) => self.rr(owner, TYPE_A, &a.octets()),
            IpAddr::V6(a) => self.rr(owner, TYPE_AAAA, &a.octets()),
        };
        self
    }

    /// A CNAME record; returns the offset of its target.
    fn cname(&mut self, owner: &Name, target: &Name) -> u16 {
        let mut t = Msg(Vec::new());
        t.name(target);
        self.rr(owner, TYPE_CNAME, &t.0)
    }
}

/// The query the server got.
struct Query {
    id: u16,
    name: String,
    qtype: u16,
}

impl Query {
    /// A response to this query: same id, name (as sent) and type.
    fn answer(&self, flags: u16, an: u16) -> Msg {
        Msg::new(self.id, flags, an, &self.name, self.qtype)
    }
}

/// What the server sends for one query (before its NXDOMAIN).
enum Send {
    Udp(Vec<u8>),
    /// From a raw socket (IPv4 only), with a correct or a wrong UDP checksum.
    Raw(Vec<u8>, bool),
}

struct Case {
    what: &'static str,
    /// The probe's query: name, "a"/"aaaa"/"txt", server.
    ask: (&'static str, &'static str, &'static str),
    reply: fn(&Query) -> Vec<Send>,
    allowed: &'static [&'static str],
    denied: &'static [&'static str],
    refused: Option<&'static str>,
    ignored: Option<(&'static str, u64)>,
}

const V4: &str = "127.0.0.53";
const V6: &str = "::1";

fn udp(m: Msg) -> Vec<Send> {
    vec![Send::Udp(m.0)]
}

/// Four A records for the question: a datagram over 76 bytes (the kernel checks the sum of
/// shorter ones itself, before any program sees them).
fn long_answer(q: &Query, first: &str) -> Msg {
    let base: std::net::Ipv4Addr = first.parse().unwrap();
    let mut m = q.answer(OK, 4);
    for k in 0..4u8 {
        let [a, b, c, d] = base.octets();
        m = m.addr(
            &Name::Ptr(QNAME),
            &IpAddr::from([a, b, c, d + k]).to_string(),
        );
    }
    m
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
        Case { what: "plain A", ask: ("plain.s.test", "a", V4),
            reply: |q| udp(q.answer(OK, 1).addr(&Name::Ptr(QNAME), "198.51.100.1")),
            allowed: &["198.51.100.1"], denied: &[], refused: None, ignored: None },
        Case { what: "CNAME chain, compressed owners and targets", ask: ("chain.s.test", "a", V4),
            reply: |q| {
                let mut m = q.answer(OK, 3);
                let edge = m.cname(&Name::Ptr(QNAME), &Name::Full("edge.cdn.test"));
                let x = m.cname(&Name::Ptr(edge), &Name::Then("x", edge));
                udp(m.addr(&Name::Ptr(x), "198.51.100.2"))
            },
            allowed: &["198.51.100.2"], denied: &[], refused: None, ignored: None },
        Case { what: "mixed case, owner uncompressed in another case", ask: ("MiXeD.S.TeSt", "a", V4),
            reply: |q| udp(q.answer(OK, 1).addr(&Name::Full("mixed.s.TEST"), "198.51.100.3")),
            allowed: &["198.51.100.3"], denied: &[], refused: None, ignored: None },
        Case { what: "AAAA over IPv6", ask: ("six.s.test", "aaaa", V6),
            reply: |q| udp(q.answer(OK, 1).addr(&Name::Ptr(QNAME), "2001:db8::4")),
            allowed: &["2001:db8::4"], denied: &[], refused: None, ignored: None },
        Case { what: "DNS64 AAAA (learned as the IPv4 address)", ask: ("nat64.s.test", "aaaa", V4),
            reply: |q| udp(q.answer(OK, 1).addr(&Name::Ptr(QNAME), "64:ff9b::c633:6405")),
            allowed: &["198.51.100.5"], denied: &[], refused: None, ignored: None },
        Case { what: "raw socket, correct checksum (verified in full)", ask: ("raw.s.test", "a", V4),
            reply: |q| vec![Send::Raw(long_answer(q, "198.51.100.6").0, true)],
            allowed: &["198.51.100.6", "198.51.100.9"], denied: &[], refused: None, ignored: None },
        Case { what: "raw socket, bad checksum (the UDP layer drops it)", ask: ("bad.s.test", "a", V4),
            reply: |q| vec![Send::Raw(long_answer(q, "198.51.100.10").0, false)],
            allowed: &[], denied: &["198.51.100.10", "198.51.100.13"],
            refused: Some("bad_checksum"), ignored: None },
        Case { what: "wrong transaction id", ask: ("id.s.test", "a", V4),
            reply: |q| {
                let mut m = q.answer(OK, 1).addr(&Name::Ptr(QNAME), "198.51.100.20");
                m.0[0] ^= 0x5a;
                udp(m)
            },
            allowed: &[], denied: &["198.51.100.20"], refused: Some("no_query"), ignored: None },
        Case { what: "another question than the one asked", ask: ("asked.s.test", "a", V4),
            reply: |q| udp(Msg::new(q.id, OK, 1, "other.s.test", TYPE_A)
                .addr(&Name::Ptr(QNAME), "198.51.100.21")),
            allowed: &[], denied: &["198.51.100.21"], refused: Some("no_query"), ignored: None },
        Case { what: "another type than the one asked", ask: ("type.s.test", "a", V4),
            reply: |q| udp(Msg::new(q.id, OK, 1, &q.name, TYPE_AAAA)
                .addr(&Name::Ptr(QNAME), "2001:db8::22")),
            allowed: &[], denied: &["2001:db8::22"], refused: Some("no_query"), ignored: None },
        Case { what: "second answer to one query (consumed)", ask: ("twice.s.test", "a", V4),
            reply: |q| vec![
                Send::Udp(q.answer(OK, 1).addr(&Name::Ptr(QNAME), "198.51.100.23").0),
                Send::Udp(q.answer(OK, 1).addr(&Name::Ptr(QNAME), "198.51.100.24").0),
            ],
            allowed: &["198.51.100.23"], denied: &["198.51.100.24"], refused: Some("no_query"),
            ignored: None },
        Case { what: "TC=1", ask: ("tc.s.test", "a", V4),
            reply: |q| udp(q.answer(TC, 1).addr(&Name::Ptr(QNAME), "198.51.100.25")),
            allowed: &[], denied: &["198.51.100.25"], refused: Some("tc_bit"), ignored: None },
        Case { what: "owner not on the CNAME chain (evil.test A)", ask: ("chain2.s.test", "a", V4),
            reply: |q| udp(q.answer(OK, 2)
                .addr(&Name::Ptr(QNAME), "198.51.100.26")
                .addr(&Name::Full("evil.test"), "198.51.100.27")),
            allowed: &["198.51.100.26"], denied: &["198.51.100.27"], refused: None,
            ignored: Some(("off_chain", 1)) },
        Case { what: "A record after the chain moved on", ask: ("moved.s.test", "a", V4),
            reply: |q| {
                let mut m = q.answer(OK, 2);
                m.cname(&Name::Ptr(QNAME), &Name::Full("edge.cdn.test"));
                udp(m.addr(&Name::Ptr(QNAME), "198.51.100.28"))
            },
            allowed: &[], denied: &["198.51.100.28"], refused: None,
            ignored: Some(("off_chain", 1)) },
        Case { what: "A records in a TXT answer", ask: ("txt.s.test", "txt", V4),
            reply: |q| udp(q.answer(OK, 1).addr(&Name::Ptr(QNAME), "198.51.100.29")),
            allowed: &[], denied: &["198.51.100.29"], refused: Some("question_type"), ignored: None },
        Case { what: "an A record in an AAAA answer", ask: ("mix.s.test", "aaaa", V4),
            reply: |q| udp(q.answer(OK, 2)
                .addr(&Name::Ptr(QNAME), "198.51.100.30")
                .addr(&Name::Ptr(QNAME), "2001:db8::30")),
            allowed: &["2001:db8::30"], denied: &["198.51.100.30"], refused: None,
            ignored: Some(("other_type", 1)) },
        Case { what: "owner name pointing at itself", ask: ("loop.s.test", "a", V4),
            reply: |q| udp(q.answer(OK, 2)
                .addr(&Name::SelfLoop, "198.51.100.31")
                .addr(&Name::Ptr(QNAME), "198.51.100.32")),
            allowed: &[], denied: &["198.51.100.31", "198.51.100.32"], refused: Some("malformed"),
            ignored: None },
        Case { what: "owner name: a label, then a pointer back to it", ask: ("loop2.s.test", "a", V4),
            reply: |q| {
                let m = q.answer(OK, 1);
                let at = m.0.len() as u16;
                udp(m.addr(&Name::Then("x", at), "198.51.100.33"))
            },
            allowed: &[], denied: &["198.51.100.33"], refused: Some("malformed"), ignored: None },
        Case { what: "ANCOUNT larger than the records present", ask: ("short.s.test", "a", V4),
            reply: |q| udp(q.answer(OK, 3).addr(&Name::Ptr(QNAME), "198.51.100.34")),
            allowed: &[], denied: &["198.51.100.34"], refused: Some("truncated"), ignored: None },
        Case { what: "an A record with 5 bytes of RDATA", ask: ("rdlen.s.test", "a", V4),
            reply: |q| {
                let mut m = q.answer(OK, 2).addr(&Name::Ptr(QNAME), "198.51.100.35");
                m.rr(&Name::Ptr(QNAME), TYPE_A, &[198, 51, 100, 36, 0]);
                udp(m)
            },
            allowed: &[], denied: &["198.51.100.35", "198.51.100.36"], refused: Some("malformed"),
            ignored: None },
    ]
}

/// The reply function of the case being played.
type Current = Arc<Mutex<Option<fn(&Query) -> Vec<Send>>>>;

/// The crafted server: `bind` inside the probe's network namespace.
fn server(bind: &str, netns_pid: u32, current: Current) -> Background {
    let bind: SocketAddr = bind.parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = Background::spawn(move |stop| {
        enter_netns(format!("/proc/{netns_pid}/ns/net").as_ref()).unwrap();
        let sock = UdpSocket::bind(bind).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Some((id, name, qtype, _)) = parse_query(&buf[..n]) else {
                continue;
            };
            let q = Query { id, name, qtype };
            let Some(reply) = *current.lock().unwrap() else {
                continue;
            };
            for send in reply(&q) {
                match send {
                    Send::Udp(b) => {
                        sock.send_to(&b, from).unwrap();
                    }
                    Send::Raw(b, good) => raw_udp(bind, from, &b, good).unwrap(),
                }
            }
            sock.send_to(&q.answer(NXDOMAIN, 0).0, from).unwrap();
        }
    });
    rx.recv().unwrap();
    thread
}

/// Sends `payload` from `src` to `dst` (IPv4) over a raw socket, with a correct UDP checksum
/// or a wrong one.
fn raw_udp(src: SocketAddr, dst: SocketAddr, payload: &[u8], good: bool) -> std::io::Result<()> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        panic!("raw datagrams are IPv4 here");
    };
    let udp_len = (8 + payload.len()) as u16;
    let mut udp = Vec::new();
    udp.extend(src.port().to_be_bytes());
    udp.extend(dst.port().to_be_bytes());
    udp.extend(udp_len.to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(payload);
    let mut sum: u32 = 17 + u32::from(udp_len);
    for ip in [src.ip().octets(), dst.ip().octets()] {
        sum += u32::from(u16::from_be_bytes([ip[0], ip[1]]));
        sum += u32::from(u16::from_be_bytes([ip[2], ip[3]]));
    }
    for w in udp.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut check = !(sum as u16);
    if check == 0 {
        check = 0xffff;
    }
    if !good {
        check ^= 0x5a5a;
    }
    udp[6..8].copy_from_slice(&check.to_be_bytes());
    let total = (20 + udp.len()) as u16;
    let mut pkt = vec![0x45, 0];
    pkt.extend(total.to_be_bytes());
    pkt.extend([0, 0, 0x40, 0, 64, 17, 0, 0]);
    pkt.extend(src.ip().octets());
    pkt.extend(dst.ip().octets());
    pkt.extend(udp);
    // SAFETY: plain socket/sendto/close calls on a descriptor this function owns, with a
    // sockaddr_in that lives for the call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let r = libc::sendto(
            fd,
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            std::ptr::addr_of!(sin).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let e = std::io::Error::last_os_error();
        libc::close(fd);
        if r < 0 {
            return Err(e);
        }
    }
    Ok(())
}

/// The learner's counters from the metrics endpoint, by series.
fn dns_counters(metrics: &str) -> HashMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        match http_get(metrics, "/metrics") {
            Ok(t) => break t,
            Err(e) if Instant::now() > deadline => panic!("metrics at {metrics}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    text.lines()
        .filter(|l| l.starts_with("enforcer_dns_") && l.contains("_total"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

fn series(family: &str, reason: &str) -> String {
    format!("enforcer_dns_{family}_total{{reason=\"{reason}\"}}")
}

#[test]
fn the_learner_accepts_only_what_a_strict_resolver_accepts() {
    if !privileged() || !integration_tests::fqdn_learning_supported() {
        return;
    }
    let cg = TestCgroup::new().unwrap();
    let mut probe = Probe::spawn(&cg).unwrap();
    let current: Current = Arc::new(Mutex::new(None));
    let _v4 = server("127.0.0.53:53", probe.pid(), current.clone());
    let _v6 = server("[::1]:53", probe.pid(), current.clone());
    // The agent's own resolver knows no name.
    let log = Arc::new(integration_tests::dns::Log::default());
    let agent_dns = Responder::start(
        "127.0.0.1:0".parse().unwrap(),
        None,
        Client::Agent,
        fixed(HashMap::new()),
        log,
    )
    .unwrap();
    let metrics = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let dir = TempDir::new().unwrap();
    let policy = format!(
        "mode: enforce\ndefault: deny\nallow:\n  - fqdn: \"*.s.test\"\n    ports: [{PORT}]\n  \
         - cidr: 127.0.0.53/32\n    ports: [53]\n    protocols: [udp]\n  - cidr: ::1/128\n    \
         ports: [53]\n    protocols: [udp]\ndns:\n  servers: [\"{}\"]\n",
        agent_dns.addr
    );
    let path = dir.write("p.yaml", &policy).unwrap();
    let cg_path = cg.path.display().to_string();
    let agent = Agent::start_args(
        Some(&path),
        &["--cgroup", &cg_path, "--metrics-address", &metrics],
    )
    .unwrap();
    let refused_reasons = [
        "no_query",
        "question_type",
        "tc_bit",
        "bad_checksum",
        "truncated",
        "malformed",
        "unverified_peer",
    ];
    let ignored_reasons = ["off_chain", "other_type"];
    for case in cases() {
        let before = dns_counters(&metrics);
        *current.lock().unwrap() = Some(case.reply);
        let (name, qtype, server) = case.ask;
        let reply = probe
            .command_line(&format!("resolve {name} {qtype} {server} 53 100"))
            .unwrap();
        let mut want: HashMap<String, u64> = HashMap::new();
        for r in refused_reasons {
            let n = u64::from(case.refused == Some(r));
            want.insert(series("responses_refused", r), n);
        }
        for r in ignored_reasons {
            let n = case.ignored.filter(|(i, _)| *i == r).map_or(0, |(_, n)| n);
            want.insert(series("records_ignored", r), n);
        }
        // What the learner sees of the checksum: every datagram sent over UDP on loopback
        // carries the pseudo-header sum only (CHECKSUM_PARTIAL), the raw ones a full sum.
        let sample = Query {
            id: 1,
            name: name.to_owned(),
            qtype: TYPE_A,
        };
        let over_udp = (case.reply)(&sample)
            .iter()
            .filter(|s| matches!(s, Send::Udp(_)))
            .count() as u64;
        let checked = !matches!(case.refused, Some("question_type" | "tc_bit"));
        want.insert(
            "enforcer_dns_checksum_offloaded_total".to_owned(),
            if checked { over_udp } else { 0 },
        );
        // The agent adds the kernel's counters to the metrics every 250 ms.
        let deadline = Instant::now() + Duration::from_secs(3);
        let settle = Instant::now() + Duration::from_millis(600);
        let delta = loop {
            let after = dns_counters(&metrics);
            let delta: HashMap<String, u64> = want
                .keys()
                .map(|k| {
                    let d =
                        after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
                    (k.clone(), d)
                })
                .collect();
            if (delta == want && Instant::now() > settle) || Instant::now() > deadline {
                break delta;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(
            delta,
            want,
            "{}: counters (probe: {reply})\n{}",
            case.what,
            agent.stderr_text()
        );
        for ip in case.allowed {
            assert_eq!(
                probe.connect("tcp", ip, PORT).unwrap(),
                Outcome::Errno(ENETUNREACH),
                "{}: {ip} should be allowed (probe: {reply})",
                case.what
            );
        }
        for ip in case.denied {
            assert_eq!(
                probe.connect("tcp", ip, PORT).unwrap(),
                Outcome::Errno(EPERM),
                "{}: {ip} should stay denied (probe: {reply})",
                case.what
            );
        }
    }
    let text = http_get(&metrics, "/metrics").unwrap();
    assert!(
        !text.contains("enforcer_dns_queries_recorded_total 0"),
        "{text}"
    );
}
