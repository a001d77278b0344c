//! A tiny DNS codec and UDP responder for the FQDN tests (loopback only).
//!
//! The responder runs on a thread of the test process. For the *target* it binds inside the
//! probe's empty network namespace (the thread `setns`es into it; only that thread moves), so
//! the probe's queries and their answers stay on that namespace's `lo` and the answers cross
//! the learning program on their way into the probe's socket. For the *agent*, which lives in
//! the host namespace and cannot reach the probe's namespace, a second responder on host
//! loopback (127.0.0.1, a random high port) shares the same answer logic and state.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{Background, enter_netns};

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_TXT: u16 = 16;

/// One answer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Addr {
        ip: IpAddr,
        ttl: u32,
    },
    /// CNAME from the question name to `target` (the chain's A/AAAA records follow).
    Cname {
        target: String,
        ttl: u32,
    },
}

/// Appends `name` in wire format; when `compress_to` is given, the name is written as a
/// pointer to that offset instead.
pub fn push_name(out: &mut Vec<u8>, name: &str, compress_to: Option<u16>) {
    if let Some(off) = compress_to {
        out.extend_from_slice(&(0xc000 | off).to_be_bytes());
        return;
    }
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// A query for `name` (`qtype` A or AAAA) with message id `id`.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    push_name(&mut q, name, None);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// A parsed query: (id, question name as sent, qtype, end of question).
pub fn parse_query(msg: &[u8]) -> Option<(u16, String, u16, usize)> {
    if msg.len() < 12 || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let (name, mut off) = read_name(msg, 12)?;
    let qtype = u16::from_be_bytes([*msg.get(off)?, *msg.get(off + 1)?]);
    off += 4;
    (off <= msg.len()).then_some((u16::from_be_bytes([msg[0], msg[1]]), name, qtype, off))
}

/// Reads a (possibly compressed) name; returns it and the offset after it.
pub fn read_name(msg: &[u8], mut off: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let l = *msg.get(off)? as usize;
        if l == 0 {
            off += 1;
            break;
        }
        if l & 0xc0 == 0xc0 {
            let ptr = ((l & 0x3f) << 8) | *msg.get(off + 1)? as usize;
            end.get_or_insert(off + 2);
            off = ptr;
            continue;
        }
        labels.push(String::from_utf8_lossy(msg.get(off + 1..off + 1 + l)?).into_owned());
        off += 1 + l;
    }
    Some((labels.join("."), end.unwrap_or(off)))
}

/// The response to `query` carrying `records` (owner names compressed to the question, a
/// CNAME chain's later records owned by the CNAME target written in full).
pub fn response(query_msg: &[u8], records: &[Record], rcode: u8) -> Option<Vec<u8>> {
    let (id, name, _, qend) = parse_query(query_msg)?;
    let mut r = Vec::with_capacity(512);
    r.extend_from_slice(&id.to_be_bytes());
    r.extend_from_slice(&[0x81, 0x80 | (rcode & 0x0f)]);
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&(records.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&query_msg[12..qend]);
    let mut owner: (String, Option<u16>) = (name, Some(12));
    for rec in records {
        let owner_off = r.len() as u16;
        push_name(&mut r, &owner.0, owner.1);
        match rec {
            Record::Addr { ip, ttl } => {
                let (ty, data): (u16, Vec<u8>) = match ip {
                    IpAddr::V4(a) => (TYPE_A, a.octets().to_vec()),
                    IpAddr::V6(a) => (TYPE_AAAA, a.octets().to_vec()),
                };
                r.extend_from_slice(&ty.to_be_bytes());
                r.extend_from_slice(&1u16.to_be_bytes());
                r.extend_from_slice(&ttl.to_be_bytes());
                r.extend_from_slice(&(data.len() as u16).to_be_bytes());
                r.extend_from_slice(&data);
            }
            Record::Cname { target, ttl } => {
                let _ = owner_off;
                r.extend_from_slice(&TYPE_CNAME.to_be_bytes());
                r.extend_from_slice(&1u16.to_be_bytes());
                r.extend_from_slice(&ttl.to_be_bytes());
                let len_at = r.len();
                r.extend_from_slice(&[0, 0]);
                let target_off = r.len() as u16;
                push_name(&mut r, target, None);
                let rdlen = (r.len() - len_at - 2) as u16;
                r[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
                // The next records are owned by the CNAME target: point at its rdata.
                owner = (target.clone(), Some(target_off));
            }
        }
    }
    Some(r)
}

/// The A/AAAA addresses of a response (any owner), or its rcode when it is not NOERROR.
pub fn parse_addresses(msg: &[u8]) -> anyhow::Result<Vec<IpAddr>> {
    if msg.len() < 12 {
        bail!("short response");
    }
    let rcode = msg[3] & 0x0f;
    if rcode != 0 {
        bail!("rcode {rcode}");
    }
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    let (_, _, _, mut off) = parse_query(msg).context("bad question")?;
    let mut out = Vec::new();
    for _ in 0..answers {
        let (_, o) = read_name(msg, off).context("bad owner")?;
        off = o;
        let hdr = msg.get(off..off + 10).context("short record")?;
        let ty = u16::from_be_bytes([hdr[0], hdr[1]]);
        let len = u16::from_be_bytes([hdr[8], hdr[9]]) as usize;
        let data = msg.get(off + 10..off + 10 + len).context("short rdata")?;
        match (ty, len) {
            (TYPE_A, 4) => out.push(IpAddr::from(<[u8; 4]>::try_from(data)?)),
            (TYPE_AAAA, 16) => out.push(IpAddr::from(<[u8; 16]>::try_from(data)?)),
            _ => {}
        }
        off += 10 + len;
    }
    Ok(out)
}

/// Decides the answer for (lower-case question name, qtype); `None` = NXDOMAIN.
pub type AnswerFn = dyn Fn(&str, u16, &Client) -> Option<Vec<Record>> + Send + Sync;

/// Which responder a query came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// The responder in the probe's namespace (the protected process asks).
    Target,
    /// The responder on host loopback (the agent asks).
    Agent,
}

/// Every answer given, by responder: (name, address).
#[derive(Default)]
pub struct Log {
    pub answered: Mutex<Vec<(Client, String, IpAddr)>>,
    pub queries: AtomicU32,
}

impl Log {
    pub fn addresses(&self, client: Client, name: &str) -> Vec<IpAddr> {
        let a = self.answered.lock().unwrap();
        a.iter()
            .filter(|(c, n, _)| *c == client && n == name)
            .map(|(_, _, ip)| *ip)
            .collect()
    }
}

/// A UDP responder on a thread; stopped (and joined) on drop.
pub struct Responder {
    pub addr: SocketAddr,
    _thread: Background,
}

impl Responder {
    /// Binds `bind` — inside the network namespace of process `netns_pid` when given — and
    /// answers with `answer`, recording every answer in `log`.
    pub fn start(
        bind: SocketAddr,
        netns_pid: Option<u32>,
        client: Client,
        answer: Arc<AnswerFn>,
        log: Arc<Log>,
    ) -> anyhow::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = Background::spawn(move |stop| {
            let sock = match bind_in(bind, netns_pid) {
                Ok(s) => {
                    let _ = tx.send(s.local_addr().map_err(anyhow::Error::from));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let msg = &buf[..n];
                let Some((_, name, qtype, _)) = parse_query(msg) else {
                    continue;
                };
                log.queries.fetch_add(1, Ordering::Relaxed);
                let lower = name.to_ascii_lowercase();
                let reply = match answer(&lower, qtype, &client) {
                    Some(records) => {
                        let mut a = log.answered.lock().unwrap();
                        for r in &records {
                            if let Record::Addr { ip, .. } = r {
                                a.push((client, lower.clone(), *ip));
                            }
                        }
                        response(msg, &records, 0)
                    }
                    None => response(msg, &[], 3),
                };
                if let Some(reply) = reply {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        let addr = rx.recv().context("responder thread")??;
        Ok(Self {
            addr,
            _thread: thread,
        })
    }
}

fn bind_in(bind: SocketAddr, netns_pid: Option<u32>) -> anyhow::Result<UdpSocket> {
    if let Some(pid) = netns_pid {
        enter_netns(format!("/proc/{pid}/ns/net").as_ref())
            .context("entering the probe's netns")?;
    }
    if !bind.ip().is_loopback() {
        bail!("test responders bind loopback only, not {bind}");
    }
    let sock = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(sock)
}

/// A fresh, never-repeated 127.x address per call (127.100.0.1, 127.100.0.2, ...).
pub struct Fresh {
    next: AtomicU32,
    base: u32,
}

impl Fresh {
    pub fn new(second_octet: u8) -> Self {
        Self {
            next: AtomicU32::new(1),
            base: u32::from_be_bytes([127, second_octet, 0, 0]),
        }
    }

    pub fn next(&self) -> IpAddr {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        IpAddr::from((self.base + n).to_be_bytes())
    }
}

/// Fixed answers by name.
pub fn fixed(map: HashMap<String, Vec<Record>>) -> Arc<AnswerFn> {
    Arc::new(move |name: &str, qtype: u16, _: &Client| {
        let records = map.get(name)?;
        Some(
            records
                .iter()
                .filter(|r| match r {
                    Record::Addr { ip, .. } => (qtype == TYPE_A) == ip.is_ipv4(),
                    Record::Cname { .. } => true,
                })
                .cloned()
                .collect(),
        )
    })
}
