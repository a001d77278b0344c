//! The benchmark's Markdown report: the figures, each target with PASS/FAIL, and a list of the
//! targets missed.
use std::fmt::Write as _;

use std::net::Ipv4Addr;

use enforcer::{cgroup::Cgroup, kernel::Kernel};

use super::{
    agent::AgentFigures,
    figures::{median, min_max, thousands, verdict},
    options::{Args, LARGE},
    scope::ScopeFigures,
};

/// Targets (issues 2 and 17; the scope-mode ones, issue 10, are in `scope.rs`).
const DENY_MAX_NS: f64 = 250.0;
const ALLOW_ABOVE_FLOOR_MAX_NS: f64 = 30.0;
const CONNECT_OVERHEAD_MAX_PCT: f64 = 1.0;
/// Agent RSS targets (issue 17), MiB.
const AGENT_IDLE_MAX_MIB: f64 = 20.0;
const AGENT_LARGE_MAX_MIB: f64 = 40.0;

/// One per-call setup: a program attached to a cgroup, and the loop run against it.
pub(super) struct Case<'a> {
    pub(super) label: &'static str,
    pub(super) prefixes: Option<usize>,
    pub(super) cgroup: &'a Cgroup,
    pub(super) prog_id: u32,
    pub(super) dsts: &'a [Ipv4Addr],
    pub(super) expect_errno: i32,
    /// The enforcer whose counters must show the calls, and (deny path) its event ring.
    pub(super) enforcer: Option<&'a Kernel>,
    pub(super) deny: bool,
}

#[derive(Default)]
pub(super) struct Samples {
    pub(super) ns: Vec<f64>,
    pub(super) lost_events: u64,
}

pub fn render(
    args: &Args,
    cases: &[Case<'_>],
    samples: &[Samples],
    rounds: &[(f64, f64)],
    stats_previous: &str,
    agent: &AgentFigures,
    scope: &ScopeFigures,
) -> String {
    let mut out = String::new();
    let mut missed = Vec::new();
    per_call(&mut out, args, cases, samples, &mut missed);
    let ratios: Vec<f64> = rounds
        .iter()
        .map(|(w, wo)| (w / wo - 1.0) * 100.0)
        .collect();
    let overhead = median(&ratios);
    let (rlo, rhi) = min_max(&ratios);
    let per = |ns: f64| ns / args.connects as f64 / 1000.0;
    let with = median(&rounds.iter().map(|r| r.0).collect::<Vec<_>>());
    let without = median(&rounds.iter().map(|r| r.1).collect::<Vec<_>>());
    let _ = writeln!(
        out,
        "\nconnect() loop: TCP socket+connect+accept+close over loopback in an empty netns, {} rounds x {} \
         connects per side, with and without alternating (ABBA), bpf_stats_enabled={stats_previous}.\n",
        args.rounds, args.connects
    );
    let _ = writeln!(
        out,
        "| connect() loop | µs per connect | Overhead (median of rounds) | Rounds range | Target | Result |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|---|");
    let _ = writeln!(
        out,
        "| no program attached | {:.2} | – | – | – | – |",
        per(without)
    );
    let result = verdict(
        overhead <= CONNECT_OVERHEAD_MAX_PCT,
        &mut missed,
        format!("connect() overhead {overhead:+.2} % > {CONNECT_OVERHEAD_MAX_PCT:.0} %"),
    );
    let _ = writeln!(
        out,
        "| enforcer, allow path, {} prefixes | {:.2} | {overhead:+.2} % | {rlo:+.2} … {rhi:+.2} % | ≤ {CONNECT_OVERHEAD_MAX_PCT:.0} % | {result} |",
        thousands(LARGE),
        per(with)
    );
    super::scope::render(&mut out, scope, &mut missed);
    render_agent(&mut out, agent, &mut missed);
    render_missed(&mut out, &missed);
    out
}

/// `--per-call-only`: the per-call table alone.
pub fn render_per_call(args: &Args, cases: &[Case<'_>], samples: &[Samples]) -> String {
    let mut out = String::new();
    let mut missed = Vec::new();
    per_call(&mut out, args, cases, samples, &mut missed);
    render_missed(&mut out, &missed);
    out
}

fn render_missed(out: &mut String, missed: &[String]) {
    if missed.is_empty() {
        let _ = writeln!(out, "\nAll targets met.");
    } else {
        let _ = writeln!(out, "\nTargets missed:");
        for m in missed {
            let _ = writeln!(out, "- {m}");
        }
    }
}

/// The per-call table: each case's median next to the floor, with its target.
fn per_call(
    out: &mut String,
    args: &Args,
    cases: &[Case<'_>],
    samples: &[Samples],
    missed: &mut Vec<String>,
) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        out,
        "\nKernel {}, {cpus} CPUs. connect4 cost from bpf_stats (run_time_ns / run_cnt): median of {} runs x \
         {} UDP connect() calls each over {} destinations, in an empty netns.\n",
        kernel.trim(),
        args.runs,
        args.calls,
        args.destinations,
    );
    let _ = writeln!(
        out,
        "| connect4 path | Blocked prefixes | ns per call | Range | Above floor | Target | Result |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---|---|");
    let floor = median(&samples[0].ns);
    for (case, s) in cases.iter().zip(samples) {
        let m = median(&s.ns);
        let (lo, hi) = min_max(&s.ns);
        let prefixes = case.prefixes.map_or("–".to_owned(), thousands);
        let above = if case.prefixes.is_some() {
            format!("{:+.1}", m - floor)
        } else {
            "–".to_owned()
        };
        let (target, result) = match (case.deny, case.prefixes) {
            (true, Some(n)) => (
                format!("≤ {DENY_MAX_NS:.0} ns"),
                verdict(
                    m <= DENY_MAX_NS,
                    missed,
                    format!(
                        "{} at {} prefixes: {m:.1} ns > {DENY_MAX_NS:.0} ns",
                        case.label,
                        thousands(n)
                    ),
                ),
            ),
            (false, Some(LARGE)) => (
                format!("≤ {ALLOW_ABOVE_FLOOR_MAX_NS:.0} ns above floor"),
                verdict(
                    m - floor <= ALLOW_ABOVE_FLOOR_MAX_NS,
                    missed,
                    format!(
                        "allow at {} prefixes: {:.1} ns above the floor > {ALLOW_ABOVE_FLOOR_MAX_NS:.0} ns",
                        thousands(LARGE),
                        m - floor
                    ),
                ),
            ),
            _ => ("–".to_owned(), "–"),
        };
        let lost = if s.lost_events > 0 {
            format!(" ({} events lost)", s.lost_events)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {}{lost} | {prefixes} | {m:.1} | {lo:.1}–{hi:.1} | {above} | {target} | {result} |",
            case.label
        );
    }
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// The agent's memory and its kernel maps' memory, and the reload time.
fn render_agent(out: &mut String, agent: &AgentFigures, missed: &mut Vec<String>) {
    let _ = writeln!(
        out,
        "\nAgent: `enforcer run` (release build) in direct mode on an empty cgroup; RSS and peak \
         (VmRSS, VmHWM of /proc/PID/status) and the kernel memory of its maps (memlock in \
         /proc/PID/fdinfo), read 0.5 s after it is ready / has reloaded.\n"
    );
    let _ = writeln!(
        out,
        "| Agent | RSS MiB | Peak MiB | Map memory MiB | Largest maps (MiB) | Target | Result |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|---|---|");
    for row in &agent.rows {
        let rss = mib(row.rss_kib as f64 * 1024.0);
        let largest = row
            .maps
            .by_map
            .iter()
            .take(4)
            .map(|(name, bytes)| format!("{name} {:.1}", mib(*bytes as f64)))
            .collect::<Vec<_>>()
            .join(", ");
        let limit = match row.prefixes {
            None => Some(AGENT_IDLE_MAX_MIB),
            Some(n) if n >= LARGE => Some(AGENT_LARGE_MAX_MIB),
            Some(_) => None,
        };
        let (target, result) = match limit {
            Some(max) => (
                format!("RSS ≤ {max:.0} MiB"),
                verdict(
                    rss <= max,
                    missed,
                    format!("agent {}: RSS {rss:.1} MiB > {max:.0} MiB", row.label),
                ),
            ),
            None => ("–".to_owned(), "–"),
        };
        let _ = writeln!(
            out,
            "| {} | {rss:.1} | {:.1} | {:.1} | {largest} | {target} | {result} |",
            row.label,
            mib(row.hwm_kib as f64 * 1024.0),
            mib(row.maps.total as f64),
        );
    }
    let _ = writeln!(
        out,
        "\nApplying a {}-prefix policy (file renamed over the old one + SIGHUP → \"policy \
         reloaded\"): {:.2} s.",
        thousands(agent.reload_prefixes),
        agent.reload.as_secs_f64()
    );
}
