//! When a kernel test may run here: root (or an explicit skip), and what this kernel supports.

/// Returns false (and says why) when the test cannot run here.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs root (cgroups, network namespaces, BPF)");
        return false;
    }
    true
}

/// Whether this kernel loads the DNS-learning program (its verifier accepts it); says why the
/// caller skips when not.
pub fn fqdn_learning_supported() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match enforcer::kernel::Kernel::load() {
        Ok(e) if e.fqdn_learning() => true,
        Ok(_) => {
            eprintln!(
                "SKIP: the DNS-learning program (cgroup_skb/ingress, bpf_loop) is refused by the \
                 verifier of kernel {}: FQDN learning unavailable here",
                release.trim()
            );
            false
        }
        Err(e) => panic!("loading the programs: {e}"),
    }
}
