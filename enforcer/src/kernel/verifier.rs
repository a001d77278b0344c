//! What the verifier spent on each program: instructions processed (`verified_insns` of
//! `bpf_prog_info`, kernel >= 5.16, which every kernel with `bpf_loop` has) and the wall time of
//! its `BPF_PROG_LOAD` (verification is nearly all of it). The agent logs the table, exports it as
//! metrics, `enforcer check --kernel` prints it, and a test holds every program to
//! [`INSN_BUDGET`].
use std::{fmt, time::Duration};

use aya::{Ebpf, programs::ProgramError};
use serde::Serialize;

/// The verifier's limit of processed instructions per program (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const KERNEL_INSN_LIMIT: u32 = 1_000_000;
/// Our budget: a tenth of the kernel's limit, so a new compiler or kernel that costs more
/// instructions still loads with room to spare.
pub const INSN_BUDGET: u32 = KERNEL_INSN_LIMIT / 10;
/// Our budget for loading every program, all verifiers included.
pub const LOAD_BUDGET: Duration = Duration::from_secs(2);

/// One program's load.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramLoad {
    pub program: &'static str,
    /// Instructions the verifier processed; `None` where the kernel does not say (< 5.16) or
    /// the program did not load.
    pub instructions: Option<u32>,
    /// Wall time of the load (verification and JIT).
    #[serde(rename = "load_ms", serialize_with = "millis")]
    pub time: Duration,
    /// Why it did not load: the verifier's last lines; `None` when it loaded.
    pub error: Option<String>,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}

/// Every program's load, in load order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub programs: Vec<ProgramLoad>,
}

impl LoadReport {
    /// Records a load of `program` that took `time`: its instruction count when it loaded
    /// (read from the kernel), the verifier's last lines when it did not.
    pub(super) fn record(
        &mut self,
        ebpf: &Ebpf,
        program: &'static str,
        time: Duration,
        result: Result<(), &ProgramError>,
    ) {
        let (instructions, error) = match result {
            Ok(()) => (
                ebpf.program(program)
                    .and_then(|p| p.info().ok())
                    .and_then(|i| i.verified_instruction_count()),
                None,
            ),
            Err(e) => (None, Some(verifier_tail(e, 3))),
        };
        self.programs.push(ProgramLoad {
            program,
            instructions,
            time,
            error,
        });
    }

    /// The sum of every program's load time.
    pub fn total(&self) -> Duration {
        self.programs.iter().map(|p| p.time).sum()
    }

    /// The largest instruction count of a program that loaded.
    pub fn max_instructions(&self) -> Option<(&'static str, u32)> {
        self.programs
            .iter()
            .filter_map(|p| Some((p.program, p.instructions?)))
            .max_by_key(|&(_, n)| n)
    }

    /// The programs refused, over [`INSN_BUDGET`] or without a count: one sentence each;
    /// empty when every program is within the budget.
    pub fn over_budget(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.programs {
            match (p.instructions, &p.error) {
                (_, Some(e)) => out.push(format!("{} did not load: {e}", p.program)),
                (None, None) => out.push(format!(
                    "{}: the kernel reports no verified instruction count (needs Linux >= 5.16)",
                    p.program
                )),
                (Some(n), None) if n > INSN_BUDGET => out.push(format!(
                    "{}: {n} instructions processed, over the budget of {INSN_BUDGET}",
                    p.program
                )),
                _ => {}
            }
        }
        out
    }

    /// A sentence when loading every program took longer than `budget`.
    pub fn slower_than(&self, budget: Duration) -> Option<String> {
        let total = self.total();
        (total > budget).then(|| {
            format!(
                "loading every program took {:.2} s, over the budget of {:.2} s",
                total.as_secs_f64(),
                budget.as_secs_f64()
            )
        })
    }
}

/// The table: one row per program (instructions, share of the kernel's limit, time).
impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<28} {:>12} {:>8} {:>10}",
            "program", "instructions", "of limit", "load ms"
        )?;
        for p in &self.programs {
            let (insns, share) = match p.instructions {
                Some(n) => (
                    n.to_string(),
                    format!(
                        "{:.1} %",
                        f64::from(n) * 100.0 / f64::from(KERNEL_INSN_LIMIT)
                    ),
                ),
                None if p.error.is_some() => ("refused".to_owned(), "-".to_owned()),
                None => ("?".to_owned(), "-".to_owned()),
            };
            writeln!(
                f,
                "{:<28} {insns:>12} {share:>8} {:>10.1}",
                p.program,
                p.time.as_secs_f64() * 1e3
            )?;
        }
        write!(
            f,
            "{:<28} {:>12} {:>8} {:>10.1}",
            "total",
            "",
            "",
            self.total().as_secs_f64() * 1e3
        )
    }
}

/// The last `n` non-empty lines of a load error's verifier log (or the error itself when it
/// carries no log), joined with " | ": the reason and the verifier's statistics.
pub fn verifier_tail(e: &ProgramError, n: usize) -> String {
    let text = match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let tail = tail(&verifier_log.to_string(), n);
            if tail.is_empty() {
                io_error.to_string()
            } else {
                format!("{io_error}: {tail}")
            }
        }
        other => crate::error_chain(other),
    };
    text.replace('\n', " | ")
}

/// The last `n` non-empty lines of `log`, joined with " | ".
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rows: &[(&'static str, Option<u32>, u64)]) -> LoadReport {
        LoadReport {
            programs: rows
                .iter()
                .map(|&(program, instructions, ms)| ProgramLoad {
                    program,
                    instructions,
                    time: Duration::from_millis(ms),
                    error: None,
                })
                .collect(),
        }
    }

    #[test]
    fn within_budget_says_nothing() {
        let r = report(&[("a", Some(40_000), 300), ("b", Some(100_000), 300)]);
        assert!(r.over_budget().is_empty(), "{:?}", r.over_budget());
        assert_eq!(r.slower_than(LOAD_BUDGET), None);
        assert_eq!(r.max_instructions(), Some(("b", 100_000)));
    }

    #[test]
    fn names_each_program_over_budget_and_a_slow_load() {
        let r = report(&[("a", Some(100_001), 1500), ("b", None, 600)]);
        let over = r.over_budget();
        assert_eq!(over.len(), 2, "{over:?}");
        assert!(over[0].starts_with("a: 100001 instructions"), "{over:?}");
        assert!(
            over[1].contains("no verified instruction count"),
            "{over:?}"
        );
        let slow = r.slower_than(LOAD_BUDGET).expect("2.1 s is over 2 s");
        assert!(slow.contains("took 2.10 s"), "{slow}");
        assert_eq!(r.slower_than(Duration::from_millis(2100)), None);
    }

    #[test]
    fn a_refusal_keeps_the_verifier_reason_and_statistics() {
        let log = "func#0 @0\n0: R1=ctx() R10=fp0\n\nBPF program is too large. Processed 1000001 \
                   insn\nprocessed 1000001 insns (limit 1000000) max_states_per_insn 4 \
                   total_states 12345 peak_states 678 mark_read 9\n";
        let t = tail(log, 2);
        assert_eq!(
            t,
            "BPF program is too large. Processed 1000001 insn | processed 1000001 insns \
             (limit 1000000) max_states_per_insn 4 total_states 12345 peak_states 678 mark_read 9"
        );
        assert_eq!(tail("", 3), "");
        let mut r = report(&[("enforcer_dns_ingress", None, 14_000)]);
        r.programs[0].error = Some(t);
        let over = r.over_budget();
        assert!(
            over[0].starts_with("enforcer_dns_ingress did not load: BPF program"),
            "{over:?}"
        );
        assert!(r.to_string().contains("refused"), "{r}");
    }

    #[test]
    fn table_has_a_row_per_program() {
        let r = report(&[("enforcer_connect4", Some(12_345), 12)]);
        let t = r.to_string();
        assert!(t.contains("enforcer_connect4"), "{t}");
        assert!(t.contains("12345") && t.contains("1.2 %"), "{t}");
    }
}
