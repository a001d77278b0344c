//! `cargo xtask bench`: what the enforcer's connect4 program costs per call, read from the
//! kernel's own accounting (`kernel.bpf_stats_enabled`, run_time_ns / run_cnt), next to a
//! trivial program's floor; and what it adds to a TCP connect() loop, measured in the same run
//! against a cgroup without any program; and, in scope mode, what processes that are not
//! targets pay (`scope.rs`).
//!
//! Everything happens in the benchmark's own child cgroups under the cgroup2 mount, removed on
//! exit; the workload is this binary re-executed (`bench workload-*`), which joins its cgroup
//! before creating sockets and runs in an empty network namespace with only `lo` up, so nothing
//! leaves the machine. The output is a Markdown table with each target's PASS/FAIL; the exit
//! status is 0 even when a target is missed (this is a report, not a test).
mod agent;
mod figures;
mod options;
mod policy;
mod report;
mod scope;
mod scope_workload;
mod sys;
mod verifier;
mod workload;

use std::{
    collections::BTreeMap,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, bail, ensure};
use aya::{
    maps::{MapData, RingBuf},
    programs::{CgroupAttachMode, CgroupSockAddr},
};
use enforcer::{cgroup::Cgroup, kernel::Kernel};
use enforcer_common::hook;

pub use self::options::Args;
use self::{
    options::{DRAIN_INTERVAL, LARGE, SMALL},
    policy::{BenchPolicy, PORT, Rng},
    report::{Case, Samples},
    sys::{BenchCgroups, BpfStats, RunStats},
    workload::run_child,
};

/// Program name in `enforcer-ebpf/src/floor.rs`.
const FLOOR_PROGRAM: &str = "bench_floor_connect4";

pub fn run(args: &Args) -> ExitCode {
    if let Some(w) = &args.workload {
        return match workload::run(w) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench workload: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match bench(args).and_then(|report| Ok(report + &verifier::section()?)) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &Args) -> anyhow::Result<String> {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (bpf, cgroups, network namespaces, sysctl)");
    }
    ensure!(
        args.calls > 0
            && args.runs > 0
            && args.destinations > 0
            && args.connects > 0
            && args.rounds > 0,
        "counts must be positive"
    );
    if enforcer::kernel::FLOOR_OBJECT.is_empty() {
        bail!("built with AYA_BUILD_SKIP=1: no kernel programs to measure");
    }
    sys::catch_signals();
    if args.scope_only {
        return scope_only(args);
    }
    // Built first (a no-op when it is current): the agent measured is the one that ships.
    if !args.per_call_only {
        crate::vm::build::release_enforcer()?;
    }

    eprintln!(
        "bench: generating and compiling {SMALL} and {LARGE} block prefixes (seed {})",
        args.seed
    );
    let mut rng = Rng::new(args.seed);
    let small = policy::generate(&mut rng, SMALL, args.destinations)?;
    let large = policy::generate(&mut rng, LARGE, args.destinations)?;

    let mut cgroups = BenchCgroups::create()?;
    let cg_floor = cgroups.child("floor")?;
    let cg_small = cgroups.child("enforcer-small")?;
    let cg_large = cgroups.child("enforcer-large")?;
    let cg_bare = cgroups.child("bare")?;

    eprintln!("bench: loading and attaching the floor and two enforcers");
    let mut floor = floor_on(&cg_floor)?;
    let (enf_small, mut ring_small) = enforcer_on(&small, &cg_small)?;
    let (enf_large, mut ring_large) = enforcer_on(&large, &cg_large)?;

    let id = |cg: &Cgroup| sys::connect4_prog_id(&cg.dir);
    let cases = [
        Case {
            label: "floor (trivial connect4)",
            prefixes: None,
            cgroup: &cg_floor,
            prog_id: id(&cg_floor)?,
            dsts: &small.allow_dsts,
            expect_errno: libc::ENETUNREACH,
            enforcer: None,
            deny: false,
        },
        Case {
            label: "allow",
            prefixes: Some(SMALL),
            cgroup: &cg_small,
            prog_id: id(&cg_small)?,
            dsts: &small.allow_dsts,
            expect_errno: libc::ENETUNREACH,
            enforcer: Some(&enf_small),
            deny: false,
        },
        Case {
            label: "deny + event, blocked /32 (hash)",
            prefixes: Some(SMALL),
            cgroup: &cg_small,
            prog_id: id(&cg_small)?,
            dsts: &small.deny_host_dsts,
            expect_errno: libc::EPERM,
            enforcer: Some(&enf_small),
            deny: true,
        },
        Case {
            label: "deny + event, in a /24–/31 (block map)",
            prefixes: Some(SMALL),
            cgroup: &cg_small,
            prog_id: id(&cg_small)?,
            dsts: &small.deny_dsts,
            expect_errno: libc::EPERM,
            enforcer: Some(&enf_small),
            deny: true,
        },
        Case {
            label: "allow",
            prefixes: Some(LARGE),
            cgroup: &cg_large,
            prog_id: id(&cg_large)?,
            dsts: &large.allow_dsts,
            expect_errno: libc::ENETUNREACH,
            enforcer: Some(&enf_large),
            deny: false,
        },
        Case {
            label: "deny + event, blocked /32 (hash)",
            prefixes: Some(LARGE),
            cgroup: &cg_large,
            prog_id: id(&cg_large)?,
            dsts: &large.deny_host_dsts,
            expect_errno: libc::EPERM,
            enforcer: Some(&enf_large),
            deny: true,
        },
        Case {
            label: "deny + event, in a /24–/31 (block map)",
            prefixes: Some(LARGE),
            cgroup: &cg_large,
            prog_id: id(&cg_large)?,
            dsts: &large.deny_dsts,
            expect_errno: libc::EPERM,
            enforcer: Some(&enf_large),
            deny: true,
        },
    ];

    let mut samples: Vec<Samples> = cases.iter().map(|_| Samples::default()).collect();
    let stats_previous;
    {
        let stats = BpfStats::enable()?;
        stats_previous = stats.previous().to_owned();
        for run in 0..args.runs {
            eprintln!("bench: per-call run {}/{}", run + 1, args.runs);
            for (case, s) in cases.iter().zip(&mut samples) {
                sys::check_interrupted()?;
                let ring = match (case.deny, case.prefixes) {
                    (true, Some(SMALL)) => Some(&mut ring_small),
                    (true, _) => Some(&mut ring_large),
                    _ => None,
                };
                let (ns, lost) = measure(case, ring, args.calls)?;
                s.ns.push(ns);
                s.lost_events += lost;
            }
        }
        // `stats` drops here: bpf_stats_enabled goes back before the connect() loop, which
        // should run as in production.
    }

    if args.per_call_only {
        return Ok(report::render_per_call(args, &cases, &samples));
    }
    sys::check_interrupted()?;
    eprintln!(
        "bench: connect() loop, {} rounds x {} connects per side (bpf_stats back at {stats_previous})",
        args.rounds, args.connects
    );
    let before = enf_large.counters()?;
    let rounds = tcp_loop(&cg_large, &cg_bare, args)?;
    let after = enf_large.counters()?;
    let c4 = hook::CONNECT4 as usize;
    let expected = args.rounds as u64 * args.connects + (args.connects / 10).max(100);
    ensure!(
        after.allowed[c4] - before.allowed[c4] == expected,
        "the enforcer allowed {} TCP connects, expected {expected}",
        after.allowed[c4] - before.allowed[c4]
    );
    sys::check_interrupted()?;
    let scope = scope::measure(
        args,
        &mut cgroups,
        &mut floor,
        &cg_floor,
        &cg_bare,
        &small.allow_dsts,
    )?;
    sys::check_interrupted()?;
    let cg_agent = cgroups.child("agent")?;
    let agent = agent::measure(&cg_agent.path, &mut rng, SMALL, LARGE)?;

    Ok(report::render(
        args,
        &cases,
        &samples,
        &rounds,
        &stats_previous,
        &agent,
        &scope,
    ))
}

/// The floor object with its connect4 program attached to `cg`.
fn floor_on(cg: &Cgroup) -> anyhow::Result<aya::Ebpf> {
    let mut floor = aya::EbpfLoader::new()
        .load(enforcer::kernel::FLOOR_OBJECT)
        .context("loading the floor object")?;
    let prog: &mut CgroupSockAddr = floor
        .program_mut(FLOOR_PROGRAM)
        .with_context(|| format!("{FLOOR_PROGRAM} missing from the floor object"))?
        .try_into()?;
    prog.load()?;
    prog.attach(&cg.dir, CgroupAttachMode::Single)?;
    Ok(floor)
}

/// `--scope-only`: the floors and the scope-mode section.
fn scope_only(args: &Args) -> anyhow::Result<String> {
    let mut rng = Rng::new(args.seed);
    let small = policy::generate(&mut rng, SMALL, args.destinations)?;
    let mut cgroups = BenchCgroups::create()?;
    let cg_floor = cgroups.child("floor")?;
    let cg_bare = cgroups.child("bare")?;
    let mut floor = floor_on(&cg_floor)?;
    let figures = scope::measure(
        args,
        &mut cgroups,
        &mut floor,
        &cg_floor,
        &cg_bare,
        &small.allow_dsts,
    )?;
    let mut out = String::new();
    let mut missed = Vec::new();
    scope::render(&mut out, &figures, &mut missed);
    for m in &missed {
        out.push_str(&format!("- missed: {m}\n"));
    }
    Ok(out)
}

/// Loads an enforcer, installs `p`, attaches it to `cg` and takes its event ring.
fn enforcer_on(p: &BenchPolicy, cg: &Cgroup) -> anyhow::Result<(Kernel, RingBuf<MapData>)> {
    let mut e = Kernel::load()?;
    e.install(&p.compiled, 1)?;
    e.attach(cg)?;
    let ring = e.take_events()?;
    Ok((e, ring))
}

/// One run of a per-call case: the workload's loop, with the event ring drained meanwhile on
/// the deny path. Returns (ns per program run, events lost).
fn measure(
    case: &Case<'_>,
    ring: Option<&mut RingBuf<MapData>>,
    calls: u64,
) -> anyhow::Result<(f64, u64)> {
    let stats_before = RunStats::of(case.prog_id)?;
    let counters_before = case.enforcer.map(Kernel::counters).transpose()?;
    let (out, drained) = match ring {
        None => (udp_workload(case, calls)?, 0),
        Some(ring) => {
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| -> anyhow::Result<_> {
                let consumer = s.spawn(|| sys::consume_events(ring, &stop, DRAIN_INTERVAL));
                let out = udp_workload(case, calls);
                stop.store(true, Ordering::SeqCst);
                let drained = consumer
                    .join()
                    .map_err(|_| anyhow::anyhow!("event consumer panicked"))??;
                Ok((out?, drained))
            })?
        }
    };
    let stats_after = RunStats::of(case.prog_id)?;
    let (ns, runs) = stats_before.per_call_since(stats_after);
    let what = describe(case);
    ensure!(
        out.get("unexpected") == Some(&0),
        "{what}: unexpected connect() results: {out:?}"
    );
    ensure!(
        runs == calls,
        "{what}: the program ran {runs} times for {calls} calls (is bpf_stats working?)"
    );
    let mut lost = 0;
    if let (Some(e), Some(before)) = (case.enforcer, counters_before) {
        let after = e.counters()?;
        let c4 = hook::CONNECT4 as usize;
        let counted = if case.deny {
            after.denied[c4] - before.denied[c4]
        } else {
            after.allowed[c4] - before.allowed[c4]
        };
        ensure!(
            counted == calls,
            "{what}: the enforcer counted {counted} verdicts for {calls} calls"
        );
        lost = after.lost_events - before.lost_events;
        if case.deny {
            ensure!(
                drained + lost == calls,
                "{what}: {drained} events read + {lost} lost for {calls} denials"
            );
        }
    }
    Ok((ns, lost))
}

fn describe(case: &Case<'_>) -> String {
    match case.prefixes {
        Some(n) => format!("{} at {n} prefixes", case.label),
        None => case.label.to_owned(),
    }
}

/// Runs `bench workload-udp` for `case` and parses its `key=value` line.
fn udp_workload(case: &Case<'_>, calls: u64) -> anyhow::Result<BTreeMap<String, u64>> {
    let dsts = case
        .dsts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let args = [
        "workload-udp".to_owned(),
        "--cgroup".to_owned(),
        case.cgroup.path.display().to_string(),
        "--calls".to_owned(),
        calls.to_string(),
        "--port".to_owned(),
        PORT.to_string(),
        "--expect".to_owned(),
        case.expect_errno.to_string(),
        "--dsts".to_owned(),
        dsts,
    ];
    let lines = run_child(&args)?;
    lines.into_iter().next().context("workload printed nothing")
}

/// Runs `bench workload-tcp`; returns (with_ns, without_ns) per round.
fn tcp_loop(with: &Cgroup, without: &Cgroup, args: &Args) -> anyhow::Result<Vec<(f64, f64)>> {
    let a = [
        "workload-tcp".to_owned(),
        "--with".to_owned(),
        with.path.display().to_string(),
        "--without".to_owned(),
        without.path.display().to_string(),
        "--connects".to_owned(),
        args.connects.to_string(),
        "--rounds".to_owned(),
        args.rounds.to_string(),
    ];
    let lines = run_child(&a)?;
    ensure!(
        lines.len() == args.rounds,
        "workload printed {} rounds, expected {}",
        lines.len(),
        args.rounds
    );
    lines
        .iter()
        .map(|l| match (l.get("with_ns"), l.get("without_ns")) {
            (Some(&w), Some(&wo)) if w > 0 && wo > 0 => Ok((w as f64, wo as f64)),
            _ => bail!("bad round line {l:?}"),
        })
        .collect()
}
