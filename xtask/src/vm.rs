//! `cargo xtask vm-test`: the integration tests under Debian's kernels, in QEMU.
//!
//! Per kernel: Debian's package is downloaded once into `<target>/vm-cache/<package>/` (boot
//! image and the 9p modules only, nothing installed on the host); a small busybox initramfs
//! mounts the host's `/` read-only over 9p, chroots into it and runs the host-built test
//! executables there (so glibc binaries run as they are), then reports the exit code on the
//! second serial port. The console is streamed to stdout and kept in
//! `<target>/vm-test/<version>/console.log`.
use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::builder::PossibleValuesParser;

pub mod build;
mod initramfs;
mod kernel;
mod qemu;

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  the guest's tests passed on every kernel
  1  tests failed in a guest (its exit code was non-zero)
  2  usage error
  3  a VM never finished: no exit code from the guest (after one retry) or a timeout
  4  host-side preparation failed (build, kernel download or extraction)";

/// A kernel the suite runs under: Debian bookworm's generic flavour (the cloud flavour has
/// no 9p).
pub struct KernelSpec {
    /// What `--kernel` takes.
    pub version: &'static str,
    /// Debian's meta package that depends on the current concrete image package.
    meta_package: &'static str,
    /// Prefix the concrete package must have (also used to find it in the cache offline).
    package_prefix: &'static str,
    /// Directories under `lib/modules/<release>/kernel/` holding the modules the guest
    /// needs for its 9p root and the overlay on it (the exact set and load order come from
    /// modprobe).
    module_dirs: &'static [&'static str],
}

pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        version: "6.1",
        meta_package: "linux-image-amd64",
        package_prefix: "linux-image-6.1.0-",
        module_dirs: &[
            "drivers/virtio",
            "net/9p",
            "fs/9p",
            "fs/netfs",
            "fs/fscache",
            "fs/overlayfs",
        ],
    },
    KernelSpec {
        version: "6.12",
        meta_package: "linux-image-6.12-amd64",
        package_prefix: "linux-image-6.12.",
        // virtio_pci is built in; fscache is part of netfs.
        module_dirs: &[
            "drivers/virtio",
            "net/9p",
            "fs/9p",
            "fs/netfs",
            "fs/overlayfs",
        ],
    },
];

#[derive(clap::Args)]
pub struct VmTestArgs {
    /// Kernel to boot (repeatable).
    #[arg(
        long = "kernel",
        value_name = "VERSION",
        value_parser = PossibleValuesParser::new(KERNELS.iter().map(|k| k.version)),
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    kernels: Vec<String>,
    /// Every configured kernel, one after the other.
    #[arg(long)]
    all: bool,
    /// Hard limit for one VM run, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    timeout: u64,
    /// Guest CPUs. Two by default: with one, the timing-sensitive tests (DNS answers with a
    /// 1 s TTL, Alertmanager's cluster gossip) run out of time under TCG. A kernel oops was
    /// seen once in ~150 TCG boots with two; such a VM ends without an exit code and is
    /// booted once more.
    #[arg(long, value_name = "N", default_value_t = 2)]
    smp: u32,
    /// Build and run the tests with the release profile.
    #[arg(long)]
    release: bool,
    /// Instead of the tests, run this shell command in the guest (chrooted into the host's
    /// root, as the tests are); nothing is built.
    #[arg(long, value_name = "SHELL_COMMAND")]
    run: Option<String>,
    /// Only this integration test (a file name in tests/tests/ without `.rs`; repeatable).
    #[arg(long = "test", value_name = "NAME", conflicts_with = "run")]
    tests: Vec<String>,
    /// Not this integration test (repeatable), e.g. one that never touches the kernel.
    #[arg(long = "skip-test", value_name = "NAME", conflicts_with = "run")]
    skip_tests: Vec<String>,
    /// Passed to every test executable after `--test-threads=1 --nocapture` (e.g. a filter).
    #[arg(last = true, value_name = "TEST_ARGS")]
    test_args: Vec<String>,
}

/// How one kernel's run ended.
enum Outcome {
    Passed,
    TestsFailed(i32),
    VmFailed(String),
    PrepFailed(anyhow::Error),
}

impl Outcome {
    fn code(&self) -> u8 {
        match self {
            Outcome::Passed => 0,
            Outcome::TestsFailed(_) => 1,
            Outcome::VmFailed(_) => 3,
            Outcome::PrepFailed(_) => 4,
        }
    }
}

struct KernelRun {
    version: &'static str,
    uname: Option<String>,
    outcome: Outcome,
    elapsed: Duration,
    summary: Vec<String>,
}

pub struct Report {
    runs: Vec<KernelRun>,
}

impl Report {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(
            self.runs
                .iter()
                .map(|r| r.outcome.code())
                .max()
                .unwrap_or(4),
        )
    }
}

/// What the guest runs.
enum Payload {
    Tests(build::Artifacts),
    Command(String),
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("\x1b[1m[vm-test]\x1b[0m {msg}");
}

pub fn run(args: &VmTestArgs) -> Report {
    let specs: Vec<&'static KernelSpec> = if args.all {
        KERNELS.iter().collect()
    } else {
        KERNELS
            .iter()
            .filter(|k| args.kernels.iter().any(|v| v == k.version))
            .collect()
    };
    let prep_failed = |e: anyhow::Error| Report {
        runs: vec![KernelRun {
            version: "-",
            uname: None,
            outcome: Outcome::PrepFailed(e),
            elapsed: Duration::ZERO,
            summary: Vec::new(),
        }],
    };
    let started = Instant::now();
    let target_dir = match target_dir() {
        Ok(t) => t,
        Err(e) => return finish(prep_failed(e)),
    };
    let payload = match &args.run {
        Some(cmd) => Payload::Command(cmd.clone()),
        None => match build::build(
            args.release,
            &build::Selection {
                only: &args.tests,
                skip: &args.skip_tests,
            },
        ) {
            Ok(a) => Payload::Tests(a),
            Err(e) => return finish(prep_failed(e)),
        },
    };
    log(format!(
        "host side ready in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let runs = specs
        .into_iter()
        .map(|spec| run_kernel(spec, &target_dir, &payload, args))
        .collect();
    finish(Report { runs })
}

/// Prints the recap of every kernel's run.
fn finish(report: Report) -> Report {
    eprintln!();
    for r in &report.runs {
        let uname = r.uname.as_deref().unwrap_or("?");
        let secs = r.elapsed.as_secs_f64();
        match &r.outcome {
            Outcome::Passed => log(format!(
                "kernel {} ({uname}): PASS in {secs:.0} s",
                r.version
            )),
            Outcome::TestsFailed(rc) => log(format!(
                "kernel {} ({uname}): TESTS FAILED (guest exit code {rc}) in {secs:.0} s",
                r.version
            )),
            Outcome::VmFailed(why) => log(format!(
                "kernel {} ({uname}): VM NEVER FINISHED after {secs:.0} s: {why}",
                r.version
            )),
            Outcome::PrepFailed(e) => log(format!(
                "kernel {}: HOST-SIDE PREPARATION FAILED: {e:#}",
                r.version
            )),
        }
        for line in &r.summary {
            eprintln!("    {line}");
        }
    }
    report
}

fn run_kernel(
    spec: &'static KernelSpec,
    target_dir: &Path,
    payload: &Payload,
    args: &VmTestArgs,
) -> KernelRun {
    let started = Instant::now();
    let mut run = KernelRun {
        version: spec.version,
        uname: None,
        outcome: Outcome::Passed,
        elapsed: Duration::ZERO,
        summary: Vec::new(),
    };
    match run_kernel_inner(spec, target_dir, payload, args, &mut run) {
        Ok(outcome) => run.outcome = outcome,
        Err(e) => run.outcome = Outcome::PrepFailed(e),
    }
    run.elapsed = started.elapsed();
    run
}

fn run_kernel_inner(
    spec: &'static KernelSpec,
    target_dir: &Path,
    payload: &Payload,
    args: &VmTestArgs,
    run: &mut KernelRun,
) -> anyhow::Result<Outcome> {
    let work = target_dir.join("vm-test").join(spec.version);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let _lock = lock(&work)?;
    let t = Instant::now();
    let kernel = kernel::prepare(spec, &target_dir.join("vm-cache"))?;
    run.uname = Some(kernel.release.clone());
    log(format!(
        "kernel {} = {} ready in {:.1} s",
        spec.version,
        kernel.release,
        t.elapsed().as_secs_f64()
    ));

    let initrd = work.join("initramfs.cpio");
    std::fs::write(&initrd, initramfs::build(&kernel)?)
        .with_context(|| format!("writing {}", initrd.display()))?;
    let script = guest_script(payload, &args.test_args);
    let result = boot_with_retry(&kernel, &initrd, &work, &script, args, run);
    let _ = std::fs::remove_file(&initrd);
    result
}

/// Boots until the guest reports an exit code; a VM that ended without one (a kernel oops
/// under TCG, say) is retried once, a timeout is not.
fn boot_with_retry(
    kernel: &kernel::Kernel,
    initrd: &Path,
    work: &Path,
    script: &str,
    args: &VmTestArgs,
    run: &mut KernelRun,
) -> anyhow::Result<Outcome> {
    for attempt in 1..=2 {
        let share = work.join("share");
        let rc_file = work.join("rc");
        reset_dir(&share)?;
        std::fs::write(share.join("run.sh"), script)?;
        let boot = qemu::Boot {
            kernel: &kernel.image,
            initrd,
            share: &share,
            rc_file: &rc_file,
            console_log: &work.join("console.log"),
            timeout: Duration::from_secs(args.timeout),
            smp: args.smp,
        };
        log(format!(
            "booting {} (attempt {attempt}, timeout {} s)",
            kernel.release, args.timeout
        ));
        let t = Instant::now();
        let end = qemu::boot(&boot)?;
        log(format!("VM ran {:.1} s", t.elapsed().as_secs_f64()));
        run.summary = summary_lines(&end.console);
        if let Some(u) = end
            .console
            .iter()
            .find_map(|l| l.strip_prefix("guest kernel: "))
        {
            run.uname = Some(u.trim().to_owned());
        }
        let guest_rc = end.guest_rc.or_else(|| read_rc(&share.join("rc")));
        let _ = std::fs::remove_file(&rc_file);
        let _ = std::fs::remove_dir_all(&share);
        match guest_rc {
            Some(0) => return Ok(Outcome::Passed),
            Some(rc) => return Ok(Outcome::TestsFailed(rc)),
            None if end.timed_out => {
                return Ok(Outcome::VmFailed(format!(
                    "timed out after {} s (see {}; raise --timeout if the guest was still making progress)",
                    args.timeout,
                    work.join("console.log").display()
                )));
            }
            None => {
                let why = format!(
                    "QEMU ended ({}) without the guest's exit code{}",
                    end.status.map_or("killed".to_owned(), |s| s.to_string()),
                    end.console
                        .iter()
                        .rev()
                        .find(|l| l.contains("vm-init: error") || l.contains("Kernel panic"))
                        .map(|l| format!("; last error on the console: {l}"))
                        .unwrap_or_default()
                );
                if attempt == 1 {
                    log(format!("{why}; retrying once"));
                    continue;
                }
                return Ok(Outcome::VmFailed(format!(
                    "{why} (twice; console: {})",
                    work.join("console.log").display()
                )));
            }
        }
    }
    unreachable!("the second attempt returns")
}

/// The libtest summaries the guest printed at the end (and its final line).
fn summary_lines(console: &[String]) -> Vec<String> {
    let start = console.iter().rposition(|l| l.starts_with("==== summary"));
    match start {
        Some(i) => {
            let rest = &console[i + 1..];
            let end = rest
                .iter()
                .position(|l| l.starts_with("VM-TEST RESULT"))
                .map_or(rest.len(), |e| e + 1);
            rest[..end]
                .iter()
                .filter(|l| !l.trim().is_empty())
                .cloned()
                .collect()
        }
        None => console
            .iter()
            .filter(|l| l.starts_with("VM-TEST RESULT"))
            .cloned()
            .collect(),
    }
}

/// One run per kernel and target directory at a time: runs share the work folder (share,
/// serial file, initramfs) and the kernel's cache entry. Held until the returned file drops.
fn lock(work: &Path) -> anyhow::Result<std::fs::File> {
    let path = work.join("lock");
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another `cargo xtask vm-test` is using {} (wait for it, or use another CARGO_TARGET_DIR)",
            work.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

fn read_rc(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn reset_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// `/run/vm-test/run.sh` in the guest: variables and the test list, then the fixed body.
fn guest_script(payload: &Payload, test_args: &[String]) -> String {
    let mut s = String::from("# Written by `cargo xtask vm-test` (xtask/src/vm.rs).\n");
    // The guest sees the host's root, so the host's PATH finds the same tools (e.g. ones
    // installed under $HOME that tests call).
    if let Some(path) = std::env::var_os("PATH") {
        s += &format!("export PATH={}\n", sh_quote(&path.to_string_lossy()));
    }
    match payload {
        Payload::Command(cmd) => {
            s += "echo \"guest kernel: $(uname -r)\"\n";
            s += cmd;
            s += "\n";
        }
        Payload::Tests(a) => {
            s += &format!(
                "export ENFORCER_BIN={}\n",
                sh_quote(&a.enforcer.to_string_lossy())
            );
            s += &format!(
                "export PROBE_BIN={}\n",
                sh_quote(&a.probe.to_string_lossy())
            );
            s += "export RUST_BACKTRACE=1\n";
            // Wall-clock budgets (the verifier test's load time) scale under emulation.
            if qemu::accel()[1] != "kvm" {
                s += "export ENFORCER_TESTS_EMULATED=1\n";
            }
            let extra: String = test_args
                .iter()
                .map(|a| format!(" {}", sh_quote(a)))
                .collect();
            s += &format!("run_test() {{ \"$1\" --test-threads=1 --nocapture{extra}; }}\n");
            let tests: String = a
                .tests
                .iter()
                .map(|t| format!(" {}", sh_quote(&t.to_string_lossy())))
                .collect();
            s += &format!("set --{tests}\n");
            s += include_str!("../vm/run-tests.sh");
        }
    }
    s
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The workspace's target directory, as cargo resolves it (honours `CARGO_TARGET_DIR`).
fn target_dir() -> anyhow::Result<PathBuf> {
    let out = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let dir = meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")?;
    // The guest sees the host's root, except where it mounts its own filesystems.
    if let Some(hidden) = GUEST_OWN_MOUNTS.iter().find(|m| dir.starts_with(m)) {
        bail!(
            "the target directory {} is under {hidden}, which the guest mounts afresh: it could \
             not run the tests built there (use a checkout or CARGO_TARGET_DIR elsewhere)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Where `xtask/vm/init.sh` mounts the guest's own filesystems over the host's root.
const GUEST_OWN_MOUNTS: &[&str] = &["/run", "/proc", "/sys", "/dev"];

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Runs a host command, failing with its stderr.
fn host_command(cmd: &mut Command) -> anyhow::Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}
