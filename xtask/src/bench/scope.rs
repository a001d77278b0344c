//! The scope-mode section (issue 10, "a fast exit for everything else"): an enforcer loaded in
//! scope mode and attached at a bench scope cgroup with a policy that has an `fqdn` rule and an
//! `api:` section (so both ingress programs are attached), one target cgroup below it
//! (`scope/am`) and a non-target one (`scope/other`). Measured in one run, from `bpf_stats`:
//! what a non-target's `connect()` and `sendto()` cost in connect4 and sendmsg4, what a packet
//! delivered to a non-target socket costs in each ingress program, and what a target's DNS
//! answer costs in the learning program (learned and queued as an event, drained meanwhile),
//! each next to a trivial program's floor on the same hook; then, with `bpf_stats` back off,
//! the non-target's 64-byte UDP send/receive loop with and without the scope's programs
//! (interleaved rounds, a cgroup outside the scope as "without").
use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, ensure};
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr},
};
use enforcer::{cgroup::Cgroup, compile, kernel::Kernel, kernel::fqdn::FqdnMaps};

use super::{
    figures::{median, min_max, verdict},
    options::{Args, DRAIN_INTERVAL},
    policy::PORT,
    sys::{self, BenchCgroups, BpfStats, RunStats},
    workload::run_child,
};

/// The targets: a non-target's call or packet within 15 ns of the floor; the
/// non-target datagram loop within 1 %.
const ABOVE_FLOOR_MAX_NS: f64 = 15.0;
const DGRAM_OVERHEAD_MAX_PCT: f64 = 1.0;
/// The allowlisted name the target resolves, and the address its answers carry.
const NAME: &str = "bench.test";
const ANSWER: Ipv4Addr = Ipv4Addr::new(127, 91, 0, 1);
/// DNS answers per run (each is learned and queued as an event).
const ANSWERS: u64 = 20_000;
const API_PORT: u16 = 9093;

const POLICY: &str = "mode: enforce\ndefault: allow\nblock:\n  - preset: cloud-metadata\n\
    allow:\n  - fqdn: bench.test\n    ports: [443]\napi:\n  ports: [9093]\n  allow:\n    - cidr: 127.0.0.1/32\n";

/// Per-run samples (ns per program run) of each measured program, and the loop rounds.
#[derive(Default)]
pub struct ScopeFigures {
    floor_connect: Vec<f64>,
    /// The connect4 floor that also asks the caller's tgid.
    floor_tgid: Vec<f64>,
    floor_sendmsg: Vec<f64>,
    floor_ingress: Vec<f64>,
    connect: Vec<f64>,
    sendmsg: Vec<f64>,
    learner_packet: Vec<f64>,
    api_packet: Vec<f64>,
    /// The packet-layer backstop (`enforcer_packet_egress`) for a non-target's datagram and
    /// for a target's.
    backstop_packet: Vec<f64>,
    backstop_target: Vec<f64>,
    dns_answer: Vec<f64>,
    /// (with, without) ns per round of the datagram loop.
    rounds: Vec<(f64, f64)>,
    packets: u64,
}

/// The programs measured, by id.
struct Ids {
    floor_connect: u32,
    floor_tgid: u32,
    floor_sendmsg: u32,
    floor_ingress: u32,
    connect: u32,
    sendmsg: u32,
    learner: u32,
    api: u32,
    backstop: u32,
}

/// Loads and attaches the floor's sendmsg4 and ingress programs to `cg_floor` (its connect4
/// floor is attached already), and the connect4 floor that asks the caller's tgid to `cg_tgid`.
fn attach_floors(floor: &mut Ebpf, cg_floor: &Cgroup, cg_tgid: &Cgroup) -> anyhow::Result<()> {
    attach_sock_addr(floor, "bench_floor_connect4_tgid", cg_tgid)?;
    attach_sock_addr(floor, "bench_floor_sendmsg4", cg_floor)?;
    let ingress: &mut CgroupSkb = floor
        .program_mut("bench_floor_ingress")
        .context("bench_floor_ingress missing from the floor object")?
        .try_into()?;
    ingress.load()?;
    ingress.attach(
        &cg_floor.dir,
        CgroupSkbAttachType::Ingress,
        CgroupAttachMode::Single,
    )?;
    Ok(())
}

/// Loads the floor object's sock_addr program `name` and attaches it to `cg`.
fn attach_sock_addr(floor: &mut Ebpf, name: &str, cg: &Cgroup) -> anyhow::Result<()> {
    let prog: &mut CgroupSockAddr = floor
        .program_mut(name)
        .with_context(|| format!("{name} missing from the floor object"))?
        .try_into()?;
    prog.load()?;
    prog.attach(&cg.dir, CgroupAttachMode::Single)?;
    Ok(())
}

fn one(ids: &[u32], what: &str) -> anyhow::Result<u32> {
    match ids {
        [id] => Ok(*id),
        other => anyhow::bail!("expected one {what} program, found {other:?}"),
    }
}

fn ids(cg_floor: &Cgroup, cg_tgid: &Cgroup, scope: &Cgroup) -> anyhow::Result<Ids> {
    use sys::attach_type::{CONNECT4, EGRESS, INGRESS, SENDMSG4};
    let by_name = |attach_type: u32, name: &str| -> anyhow::Result<u32> {
        let ids = sys::attached_prog_ids(&scope.dir, attach_type)?;
        let named: Vec<u32> = ids
            .into_iter()
            .filter(|&id| sys::prog_name(id).is_ok_and(|n| name.starts_with(&n)))
            .collect();
        one(&named, name)
    };
    Ok(Ids {
        floor_connect: one(
            &sys::attached_prog_ids(&cg_floor.dir, CONNECT4)?,
            "floor connect4",
        )?,
        floor_tgid: one(
            &sys::attached_prog_ids(&cg_tgid.dir, CONNECT4)?,
            "floor connect4 with the tgid",
        )?,
        floor_sendmsg: one(
            &sys::attached_prog_ids(&cg_floor.dir, SENDMSG4)?,
            "floor sendmsg4",
        )?,
        floor_ingress: one(
            &sys::attached_prog_ids(&cg_floor.dir, INGRESS)?,
            "floor ingress",
        )?,
        connect: one(&sys::attached_prog_ids(&scope.dir, CONNECT4)?, "connect4")?,
        sendmsg: one(&sys::attached_prog_ids(&scope.dir, SENDMSG4)?, "sendmsg4")?,
        learner: by_name(INGRESS, enforcer_common::fqdn::PROG_DNS_INGRESS)?,
        api: by_name(INGRESS, enforcer_common::api::PROG_NAME)?,
        backstop: by_name(EGRESS, "enforcer_packet_egress")?,
    })
}

/// Runs the section (see the module's documentation).
pub fn measure(
    args: &Args,
    cgroups: &mut BenchCgroups,
    floor: &mut Ebpf,
    cg_floor: &Cgroup,
    cg_bare: &Cgroup,
    dsts: &[Ipv4Addr],
) -> anyhow::Result<ScopeFigures> {
    let cg_tgid = cgroups.child("floor-tgid")?;
    attach_floors(floor, cg_floor, &cg_tgid)?;
    let scope = cgroups.child("scope")?;
    let other = cgroups.child("scope/other")?;
    let am = cgroups.child("scope/am")?;
    let policy = enforcer::policy::parse_policy(POLICY, "<bench scope>")?;
    let compiled = compile::compile(&policy)?;
    let mut kernel = Kernel::load_with(None, true)?;
    kernel.set_targets(&[], &[am.id()])?;
    kernel.install(&compiled, 1)?;
    kernel.attach(&scope)?;
    let mut fqdn = FqdnMaps::take(kernel.object_mut())?;
    let mut events = fqdn.events.take().context("the learned-event ring")?;
    let ids = ids(cg_floor, &cg_tgid, &scope)?;
    let dsts: Vec<String> = dsts.iter().map(ToString::to_string).collect();
    let dsts = dsts.join(",");
    let path = |cg: &Cgroup| cg.path.display().to_string();
    let udp = |cg: &Cgroup| -> anyhow::Result<()> {
        let a = [
            "workload-udp",
            "--cgroup",
            &path(cg),
            "--calls",
            &args.calls.to_string(),
            "--port",
            &PORT.to_string(),
            "--expect",
            &libc::ENETUNREACH.to_string(),
            "--dsts",
            &dsts,
        ];
        let out = run_child(&a.map(str::to_owned))?;
        ensure!(
            out.first().and_then(|l| l.get("unexpected")) == Some(&0),
            "connect() results: {out:?}"
        );
        Ok(())
    };
    let dgram = |cgs: &[&Cgroup], rounds: usize, warmup: u64| {
        let list: Vec<String> = cgs.iter().map(|c| path(c)).collect();
        let a = [
            "workload-dgram".to_owned(),
            "--cgroups".to_owned(),
            list.join(","),
            "--packets".to_owned(),
            args.calls.to_string(),
            "--rounds".to_owned(),
            rounds.to_string(),
            "--warmup".to_owned(),
            warmup.to_string(),
        ];
        run_child(&a)
    };
    let mut f = ScopeFigures {
        packets: args.calls,
        ..ScopeFigures::default()
    };
    {
        let _stats = BpfStats::enable()?;
        for run in 0..args.runs {
            eprintln!("bench: scope mode, per-call run {}/{}", run + 1, args.runs);
            sys::check_interrupted()?;
            let calls = args.calls;
            let d = delta(&[ids.floor_connect], || udp(cg_floor))?;
            f.floor_connect.push(d.per(0, calls)?);
            let d = delta(&[ids.floor_tgid], || udp(&cg_tgid))?;
            f.floor_tgid.push(d.per(0, calls)?);
            let d = delta(&[ids.connect], || udp(&other))?;
            f.connect.push(d.per(0, calls)?);
            let d = delta(&[ids.floor_sendmsg, ids.floor_ingress], || {
                dgram(&[cg_floor], 1, 0).map(drop)
            })?;
            f.floor_sendmsg.push(d.per(0, calls)?);
            f.floor_ingress.push(d.per(1, calls)?);
            let d = delta(&[ids.sendmsg, ids.learner, ids.api, ids.backstop], || {
                dgram(&[&other], 1, 0).map(drop)
            })?;
            f.sendmsg.push(d.per(0, calls)?);
            f.learner_packet.push(d.per(1, calls)?);
            f.api_packet.push(d.per(2, calls)?);
            f.backstop_packet.push(d.per(3, calls)?);
            let d = delta(&[ids.backstop], || dgram(&[&am], 1, 0).map(drop))?;
            f.backstop_target.push(d.per(0, calls)?);
            let d = delta(&[ids.learner], || {
                dns(&mut events, cg_bare, &am).context("the target's DNS answers")
            })?;
            f.dns_answer.push(d.per(0, ANSWERS)?);
        }
    }
    ensure!(
        fqdn.learned(ANSWER.into()).is_some(),
        "the target's answers were not learned ({ANSWER} missing from the learned map)"
    );
    sys::check_interrupted()?;
    eprintln!(
        "bench: scope mode, datagram loop, {} rounds x {} packets per side",
        args.rounds, args.calls
    );
    let lines = dgram(&[&other, cg_bare], args.rounds, (args.calls / 10).max(100))?;
    for l in &lines {
        match (l.get("ns0"), l.get("ns1")) {
            (Some(&w), Some(&wo)) if w > 0 && wo > 0 => f.rounds.push((w as f64, wo as f64)),
            _ => anyhow::bail!("bad round line {l:?}"),
        }
    }
    ensure!(f.rounds.len() == args.rounds, "rounds missing: {lines:?}");
    drop(kernel);
    Ok(f)
}

/// Run-time counters of some programs around one workload.
struct Delta(Vec<(f64, u64)>);

impl Delta {
    /// ns per run of program `i`, which must have run exactly `runs` times.
    fn per(&self, i: usize, runs: u64) -> anyhow::Result<f64> {
        let (ns, n) = self.0[i];
        ensure!(
            n == runs,
            "a program ran {n} times for {runs} calls (is bpf_stats working?)"
        );
        Ok(ns)
    }
}

fn delta(ids: &[u32], work: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Delta> {
    let before: Vec<RunStats> = ids
        .iter()
        .map(|&id| RunStats::of(id))
        .collect::<Result<_, _>>()?;
    work()?;
    let mut out = Vec::with_capacity(ids.len());
    for (&id, b) in ids.iter().zip(before) {
        out.push(b.per_call_since(RunStats::of(id)?));
    }
    Ok(Delta(out))
}

/// The target's DNS answers, with the learned-event ring drained meanwhile (as the agent does).
fn dns(
    events: &mut aya::maps::RingBuf<aya::maps::MapData>,
    cg_bare: &Cgroup,
    am: &Cgroup,
) -> anyhow::Result<()> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| -> anyhow::Result<()> {
        let consumer = s.spawn(|| sys::consume_events(events, &stop, DRAIN_INTERVAL));
        let a = [
            "workload-dns".to_owned(),
            "--responder-cgroup".to_owned(),
            cg_bare.path.display().to_string(),
            "--target-cgroup".to_owned(),
            am.path.display().to_string(),
            "--answers".to_owned(),
            ANSWERS.to_string(),
            "--name".to_owned(),
            NAME.to_owned(),
            "--addr".to_owned(),
            ANSWER.to_string(),
        ];
        let out = run_child(&a);
        stop.store(true, Ordering::SeqCst);
        let drained = consumer
            .join()
            .map_err(|_| anyhow::anyhow!("event consumer panicked"))??;
        out?;
        ensure!(drained > 0, "no learned event was queued");
        Ok(())
    })
}

/// The section of the report.
pub fn render(out: &mut String, f: &ScopeFigures, missed: &mut Vec<String>) {
    let _ = writeln!(
        out,
        "\nScope mode: enforcer loaded for scope mode at a bench scope cgroup (policy with one \
         `fqdn` rule and an `api:` section on port {API_PORT}, so both ingress programs are \
         attached), a non-target process in a child cgroup, a target in another. ns per program \
         run from bpf_stats, median of {} runs; the floor is a trivial program on the same hook \
         (the first row: the connect4 floor that also asks the caller's tgid, the one helper \
         call a decision by process cannot do without).\n",
        f.floor_connect.len()
    );
    let _ = writeln!(
        out,
        "| Program | Traffic | ns per run | Range | Floor | Above floor | Target | Result |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---|---|");
    let fc = median(&f.floor_connect);
    let fs = median(&f.floor_sendmsg);
    let fi = median(&f.floor_ingress);
    // The backstop is a cgroup_skb program like the ingress floor, on the egress side.
    let rows: [(&str, &str, &[f64], f64, bool); 8] = [
        (
            "floor + `bpf_get_current_pid_tgid`",
            "any `connect()`",
            &f.floor_tgid,
            fc,
            false,
        ),
        ("connect4", "non-target `connect()`", &f.connect, fc, true),
        (
            "sendmsg4",
            "non-target 64-byte `sendto()`",
            &f.sendmsg,
            fs,
            true,
        ),
        (
            "enforcer_dns_ingress",
            "packet to a non-target socket",
            &f.learner_packet,
            fi,
            true,
        ),
        (
            "enforcer_api_ingress",
            "packet to a non-target socket",
            &f.api_packet,
            fi,
            true,
        ),
        (
            "enforcer_packet_egress",
            "non-target 64-byte datagram (the backstop)",
            &f.backstop_packet,
            fi,
            true,
        ),
        (
            "enforcer_packet_egress",
            "target's 64-byte datagram (decided)",
            &f.backstop_target,
            fi,
            false,
        ),
        (
            "enforcer_dns_ingress",
            "target's DNS answer (learned + event)",
            &f.dns_answer,
            fi,
            false,
        ),
    ];
    for (prog, traffic, samples, floor, bound) in rows {
        let m = median(samples);
        let (lo, hi) = min_max(samples);
        let above = m - floor;
        let (target, result) = if bound {
            (
                format!("≤ floor + {ABOVE_FLOOR_MAX_NS:.0} ns"),
                verdict(
                    above <= ABOVE_FLOOR_MAX_NS,
                    missed,
                    format!(
                        "{prog}, {traffic}: {above:.1} ns above the floor > {ABOVE_FLOOR_MAX_NS:.0} ns"
                    ),
                ),
            )
        } else {
            ("–".to_owned(), "–")
        };
        let _ = writeln!(
            out,
            "| {prog} | {traffic} | {m:.1} | {lo:.1}–{hi:.1} | {floor:.1} | {above:+.1} | {target} | {result} |"
        );
    }
    let ratios: Vec<f64> = f
        .rounds
        .iter()
        .map(|(w, wo)| (w / wo - 1.0) * 100.0)
        .collect();
    let overhead = median(&ratios);
    let (rlo, rhi) = min_max(&ratios);
    let per = |ns: f64| ns / f.packets as f64 / 1000.0;
    let with = median(&f.rounds.iter().map(|r| r.0).collect::<Vec<_>>());
    let without = median(&f.rounds.iter().map(|r| r.1).collect::<Vec<_>>());
    let _ = writeln!(
        out,
        "\nNon-target 64-byte UDP send/receive loop (unconnected `sendto` + `recv` over loopback in an \
         empty netns), {} rounds x {} datagrams per side, below the scope vs in a cgroup outside \
         it, alternating (ABBA), bpf_stats off.\n",
        f.rounds.len(),
        f.packets
    );
    let _ = writeln!(
        out,
        "| Datagram loop | µs per datagram | Overhead (median of rounds) | Rounds range | Target | Result |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|---|");
    let _ = writeln!(
        out,
        "| outside the scope | {:.2} | – | – | – | – |",
        per(without)
    );
    let result = verdict(
        overhead <= DGRAM_OVERHEAD_MAX_PCT,
        missed,
        format!(
            "non-target datagram loop overhead {overhead:+.2} % > {DGRAM_OVERHEAD_MAX_PCT:.0} %"
        ),
    );
    let _ = writeln!(
        out,
        "| non-target below the scope | {:.2} | {overhead:+.2} % | {rlo:+.2} … {rhi:+.2} % | ≤ {DGRAM_OVERHEAD_MAX_PCT:.0} % | {result} |",
        per(with)
    );
}
