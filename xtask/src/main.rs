//! Project automation: `cargo xtask <command>` (the alias lives in `.cargo/config.toml`).
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod image;
mod monitoring;
mod vm;

#[derive(Parser)]
#[command(about = "Project automation for the egress enforcer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the integration tests in QEMU under Debian's kernels (6.1, 6.12).
    #[command(after_help = vm::EXIT_CODES_HELP)]
    VmTest(vm::VmTestArgs),
    /// Measures the connect4 program's cost per call (bpf_stats) and its connect() overhead.
    Bench(bench::Args),
    /// Builds the agent's OCI image (static musl binary, FROM scratch) with podman.
    Image(image::Args),
    /// Writes deploy/monitoring/prometheusrule.yaml from deploy/prometheus/enforcer-rules.yml.
    Monitoring(monitoring::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::VmTest(args) => vm::run(&args).exit_code(),
        Command::Bench(args) => bench::run(&args),
        Command::Image(args) => image::run(&args),
        Command::Monitoring(args) => monitoring::run(&args),
    }
}
