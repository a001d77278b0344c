//! The verifier's table in the bench's report: what every program of the agent's object (both
//! modes) and of the floor object costs the verifier, as `enforcer check --kernel` prints it.
use std::{fmt::Write as _, time::Instant};

use anyhow::Context as _;
use aya::programs::Program;
use enforcer::kernel::{
    Kernel,
    verifier::{INSN_BUDGET, KERNEL_INSN_LIMIT},
};

/// The Markdown section: one table per mode, then the floor programs.
pub fn section() -> anyhow::Result<String> {
    let mut out = String::from("\n## Verifier: instructions processed per program\n\n");
    let _ = writeln!(
        out,
        "Budget {INSN_BUDGET} per program (a tenth of the kernel's {KERNEL_INSN_LIMIT}); load \
         time is verification and JIT.\n"
    );
    for (mode, scoped) in [("direct mode", false), ("scope mode", true)] {
        let kernel = Kernel::load_with(None, scoped)
            .with_context(|| format!("loading the agent's programs ({mode})"))?;
        let _ = writeln!(out, "{mode}:\n\n```\n{}\n```\n", kernel.load_report());
    }
    let mut floor = aya::EbpfLoader::new()
        .load(enforcer::kernel::FLOOR_OBJECT)
        .context("loading the floor object")?;
    let names: Vec<String> = floor.programs().map(|(n, _)| n.to_owned()).collect();
    let _ = writeln!(out, "floor object:\n\n```");
    for name in names {
        let prog = floor.program_mut(&name).context("floor program")?;
        let started = Instant::now();
        match prog {
            Program::CgroupSockAddr(p) => p.load()?,
            Program::CgroupSkb(p) => p.load()?,
            _ => continue,
        }
        let took = started.elapsed();
        let insns = prog
            .info()
            .ok()
            .and_then(|i| i.verified_instruction_count())
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        let _ = writeln!(
            out,
            "{name:<28} {insns:>12} {:>10.1} ms",
            took.as_secs_f64() * 1e3
        );
    }
    out.push_str("```\n");
    Ok(out)
}
