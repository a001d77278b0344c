//! When a test may run here: kernel tests need root (and some a kernel feature or an installed
//! tool). A test that cannot run **fails**, naming what it lacks, unless a skip was asked for
//! explicitly with `ENFORCER_TESTS_ALLOW_SKIP=1`; then it returns early and is reported as
//! skipped: a `SKIP` line on stderr, and a line in the file `ENFORCER_TESTS_SKIP_LOG` names
//! (`scripts/test` lists them after nextest's summary). A test harness cannot mark a test
//! skipped once it runs, so nextest counts such a test as passed: read the list.
use std::io::Write as _;

/// Set to `1` to let tests that cannot run here pass as skipped instead of failing.
pub const ALLOW_SKIP_VAR: &str = "ENFORCER_TESTS_ALLOW_SKIP";
/// A file each skipped test appends one line to (`<test binary> <test>: <why>`).
pub const SKIP_LOG_VAR: &str = "ENFORCER_TESTS_SKIP_LOG";

/// Whether [`ALLOW_SKIP_VAR`] is set to `1`.
pub fn skip_allowed() -> bool {
    std::env::var_os(ALLOW_SKIP_VAR).is_some_and(|v| v == "1")
}

/// The test cannot run here because of `why`: panics (the test fails) unless
/// [`skip_allowed`]; then reports the skip and returns `false`, for the caller to return.
pub fn cannot_run(why: &str) -> bool {
    if !skip_allowed() {
        panic!(
            "this test cannot run here: {why}. Run it where it can, or set {ALLOW_SKIP_VAR}=1 \
             to skip it explicitly"
        );
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_owned();
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    // The executable is `<file>-<hash>`; the file's name is what a reader knows.
    let file = binary.rsplit_once('-').map_or(binary.as_str(), |(f, _)| f);
    eprintln!("SKIP: {file} {test}: {why} ({ALLOW_SKIP_VAR}=1)");
    if let Some(log) = std::env::var_os(SKIP_LOG_VAR) {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| writeln!(f, "{file} {test}: {why}"));
        if let Err(e) = written {
            panic!("recording the skip in {}: {e}", log.to_string_lossy());
        }
    }
    false
}

/// True when the process is root; otherwise the test fails, or with an explicit skip
/// ([`cannot_run`]) returns false and the caller returns.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() } == 0)
        || cannot_run("needs root (cgroups, network namespaces, BPF programs)")
}

/// True when the executable `path` exists; otherwise as [`privileged`], naming how to install it.
pub fn installed(path: &str, install: &str) -> bool {
    std::path::Path::new(path).exists()
        || cannot_run(&format!("{path} is not installed ({install})"))
}

/// Whether this kernel loads the DNS-learning program (its verifier accepts it; `bpf_loop`
/// needs 5.17). When not, as [`privileged`], naming the kernel.
pub fn fqdn_learning_supported() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match enforcer::kernel::Kernel::load() {
        Ok(e) if e.fqdn_learning() => true,
        Ok(_) => cannot_run(&format!(
            "the DNS-learning program (cgroup_skb/ingress, bpf_loop) is refused by the verifier \
             of kernel {}: FQDN learning unavailable here",
            release.trim()
        )),
        Err(e) => panic!("loading the programs: {e}"),
    }
}

/// True inside a guest without hardware virtualisation (`cargo xtask vm-test` under TCG sets
/// `ENFORCER_TESTS_EMULATED`): every instruction costs ~10–50× more, so time limits widen and
/// the property tests run a quarter of their cases there (the host runs them all).
pub fn emulated() -> bool {
    std::env::var_os("ENFORCER_TESTS_EMULATED").is_some()
}
