//! The scope-mode section's workloads (`xtask bench workload-dgram|workload-dns`), run like the
//! others: in an empty network namespace with only `lo` up, each socket created after the
//! process joined the cgroup it is measured in.
use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};

use super::sys::join_cgroup;

/// Bytes of each datagram of the send/receive loop.
pub const DGRAM_BYTES: usize = 64;

/// A sender (unconnected) and a receiver on loopback, both created in the current cgroup.
fn pair() -> anyhow::Result<(UdpSocket, UdpSocket, SocketAddr)> {
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the receiver")?;
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the sender")?;
    let to = rx.local_addr()?;
    Ok((tx, rx, to))
}

/// `n` datagrams: `sendto` (the sendmsg4 hook runs for each) and the receiver's `recv` (the
/// ingress programs run for each on delivery). Returns the elapsed nanoseconds.
fn dgram_loop(tx: &UdpSocket, rx: &UdpSocket, to: SocketAddr, n: u64) -> anyhow::Result<u128> {
    let out = [0x5au8; DGRAM_BYTES];
    let mut buf = [0u8; 2 * DGRAM_BYTES];
    let start = Instant::now();
    for _ in 0..n {
        let sent = tx.send_to(&out, to).context("sendto")?;
        let got = rx.recv(&mut buf).context("recv")?;
        ensure!(sent == DGRAM_BYTES && got == DGRAM_BYTES, "short datagram");
    }
    Ok(start.elapsed().as_nanos())
}

/// Rounds over `cgroups` (one: a per-call measurement; two: with and without, ABBA order).
pub fn dgram_rounds(
    cgroups: &[PathBuf],
    packets: u64,
    rounds: usize,
    warmup: u64,
) -> anyhow::Result<()> {
    if cgroups.is_empty() || cgroups.len() > 2 {
        bail!("one or two cgroups");
    }
    let mut sent = 0u64;
    for cg in cgroups {
        join_cgroup(cg)?;
        let (tx, rx, to) = pair()?;
        dgram_loop(&tx, &rx, to, warmup)?;
        sent += warmup;
    }
    for round in 0..rounds {
        let mut ns = [0u128; 2];
        let order: Vec<usize> = if round % 2 == 0 {
            (0..cgroups.len()).collect()
        } else {
            (0..cgroups.len()).rev().collect()
        };
        for i in order {
            join_cgroup(&cgroups[i])?;
            let (tx, rx, to) = pair()?;
            ns[i] = dgram_loop(&tx, &rx, to, packets)?;
            sent += packets;
        }
        println!(
            "round={round} packets={packets} ns0={} ns1={} sent={sent}",
            ns[0], ns[1]
        );
    }
    Ok(())
}

/// A DNS query for `name` (type A, class IN) with id `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The answer to `q` (a query as [`query`] builds it): the question and one A record.
fn answer(q: &[u8], addr: Ipv4Addr) -> Vec<u8> {
    let mut a = q.to_vec();
    a[2] = 0x81;
    a[3] = 0x80;
    a[7] = 1;
    // Owner: a pointer to the question's name (offset 12); A, IN, TTL 300, 4 bytes.
    a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x01, 0x2c, 0, 4]);
    a.extend_from_slice(&addr.octets());
    a
}

/// See `Workload::Dns`. The responder socket already exists when this runs in the target
/// cgroup; the process becomes a target by moving there (`cgroup_attach_task`).
pub fn dns_answers(
    target_cgroup: &Path,
    answers: u64,
    name: &str,
    addr: Ipv4Addr,
) -> anyhow::Result<()> {
    let server = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 53), 53)).context("binding :53")?;
    join_cgroup(target_cgroup)?;
    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the client")?;
    client
        .connect(server.local_addr()?)
        .context("connecting to the responder")?;
    let mut buf = [0u8; 512];
    for i in 0..answers {
        let q = query(i as u16, name);
        client.send(&q).context("sending the query")?;
        let (n, from) = server.recv_from(&mut buf).context("responder recv")?;
        server
            .send_to(&answer(&buf[..n], addr), from)
            .context("responder send")?;
        let got = client.recv(&mut buf).context("client recv")?;
        ensure!(got > q.len(), "short answer");
    }
    println!("answers={answers}");
    Ok(())
}
