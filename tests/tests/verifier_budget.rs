//! Every kernel program verifies with wide headroom (issue 25): at most 100,000 instructions
//! processed (a tenth of the kernel's limit) and every load together within 2 s, in both modes
//! (scope mode is a load-time constant, so the verifier sees different code), on this kernel
//! and, through `cargo xtask vm-test`, on 6.1 and 6.12. Prints the table either way. Under
//! software emulation (the VM runner's TCG guests run kernel work 7–10x slower) the time
//! budget is scaled by [`EMULATION_FACTOR`]; the instruction budget never is.
use std::process::Command;

use enforcer::kernel::{
    Kernel,
    verifier::{INSN_BUDGET, LOAD_BUDGET},
};
use integration_tests::{enforcer_bin, privileged};

/// How much slower than the host the VM runner's emulated guests verify.
const EMULATION_FACTOR: u32 = 10;

/// The whole load's time budget here.
fn load_budget() -> std::time::Duration {
    if integration_tests::emulated() {
        LOAD_BUDGET * EMULATION_FACTOR
    } else {
        LOAD_BUDGET
    }
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn every_program_verifies_within_the_budget_in_both_modes() {
    if !privileged() {
        return;
    }
    let mut problems = Vec::new();
    for (mode, scoped) in [("direct", false), ("scope", true)] {
        let kernel = Kernel::load_with(None, scoped).expect("loading the programs");
        let report = kernel.load_report();
        eprintln!("kernel {}, {mode} mode:\n{report}\n", release());
        // Every program of the object was loaded and counted (a program left out of the
        // report would escape the budget).
        assert!(
            report.programs.len() >= 14,
            "only {} programs in the report:\n{report}",
            report.programs.len()
        );
        for (feature, available) in kernel.features() {
            if !available {
                problems.push(format!("{mode}: feature {} lost", feature.as_str()));
            }
        }
        // Instructions: the report's own budget check; time: this machine's budget.
        problems.extend(
            report
                .over_budget()
                .into_iter()
                .map(|p| format!("{mode}: {p}")),
        );
        problems.extend(
            report
                .slower_than(load_budget())
                .map(|p| format!("{mode}: {p}")),
        );
        // The budget is a real bound: the largest program is counted, not absent.
        let (_, max) = report.max_instructions().expect("instruction counts");
        assert!(max > 1_000, "implausibly small count {max}:\n{report}");
    }
    assert!(
        problems.is_empty(),
        "over the verifier budget ({INSN_BUDGET} instructions per program, {:?} per load) on \
         kernel {}:\n{}",
        load_budget(),
        release(),
        problems.join("\n")
    );
}

#[test]
fn check_kernel_prints_the_table_and_passes() {
    if !privileged() {
        return;
    }
    let out = Command::new(enforcer_bin())
        .args(["check", "--kernel"])
        .output()
        .expect("running enforcer check --kernel");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    for needle in [
        "kernel programs, direct mode:",
        "kernel programs, scope mode:",
        "enforcer_connect4",
        "enforcer_dns_ingress",
        "enforcer_packet_egress",
        "instructions",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in\n{stdout}");
    }
}
