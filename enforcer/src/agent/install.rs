//! Installing a policy as a new generation: the file's policy with the automatic rules of the
//! targets running now, compiled once, written double-buffered; a reload that fails keeps the
//! running generation.
use std::{path::Path, sync::Arc};

use super::{Agent, RunError, auto};
use crate::{
    compile::{self, Compiled},
    error_chain,
    kernel::api::ListenPorts,
    metrics::{ReasonLabels, ResultLabels},
    policy::{self, Policy, Rule},
};

/// Whether `id` is a process (a thread group leader) rather than another thread's tid.
fn is_process(id: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{id}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .is_some_and(|t| t.trim() == id.to_string())
    })
}

/// The generation after `g` (0 means "nothing installed", so it is skipped on wrap-around).
fn next_generation(g: u32) -> u32 {
    g.wrapping_add(1).max(1)
}

/// Gives the pages freed by parsing and compiling a policy back to the system. glibc keeps
/// freed heap memory for reuse, and a large policy's parse tree (10^5 nodes) is freed in small
/// pieces between allocations that live on, so without this the RSS stays near the parse's
/// peak. musl's allocator returns memory itself.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Agent {
    /// Runs `install` as the next generation; when it fails, the generation stays the one
    /// running (the double-buffered maps never flipped to it).
    pub(super) fn as_next_generation<T>(
        &mut self,
        install: impl FnOnce(&mut Self) -> Result<T, RunError>,
    ) -> Result<T, RunError> {
        let previous = self.generation;
        self.generation = next_generation(previous);
        let result = install(self);
        if result.is_err() {
            self.generation = previous;
        }
        release_freed_memory();
        result
    }

    /// Installs `base` (a policy file, compiled once into `compiled`) with the automatic rules
    /// of the targets found now, as generation [`Agent::generation`]; returns what went into
    /// the maps.
    pub(super) fn install(
        &mut self,
        base: Arc<Policy>,
        compiled: Arc<Compiled>,
    ) -> Result<Arc<Compiled>, RunError> {
        // Targets first: a reload that adds a target covers it before the new rules apply.
        if self.scoped {
            self.targets = Self::resolve_targets(&base)?;
            self.kernel
                .set_targets(&self.targets.comms, &self.targets.cgroup_ids())?;
            // Also a metric: target_attached{target} = 0 (publish_targets).
            for label in &self.targets.missing {
                tracing::warn!(
                    target = %label,
                    "target matches nothing yet: nothing is enforced for it until it appears \
                     (check the name, unit or cgroup path)"
                );
            }
            self.seed_target_tasks()?;
        }
        for w in policy::lint::warnings(&base) {
            tracing::warn!(policy = %base.source, "{w}");
        }
        self.refresh_target_pids();
        self.install_with(&base, &compiled)?;
        if let Some(w) = &self.watchdog {
            w.set_policy(base.clone());
        }
        self.base = base;
        self.base_compiled = compiled.clone();
        self.refresh_auto()?;
        self.metrics.last_reload_success.set(1);
        Ok(compiled)
    }

    /// Writes `base` (compiled once into `compiled`) into the maps as generation
    /// [`Agent::generation`].
    fn install_with(
        &mut self,
        base: &Arc<Policy>,
        compiled: &Arc<Compiled>,
    ) -> Result<(), RunError> {
        self.kernel.install(compiled, self.generation)?;
        self.api_guard.update(compiled.api.as_ref());
        self.rules.insert(self.generation, base.clone());
        if let Some(fqdn) = &self.fqdn {
            fqdn.update(base.clone());
        }
        self.policy = base.clone();
        self.metrics
            .policy_generation
            .set(i64::from(self.generation));
        Ok(())
    }

    /// The processes automatic rules are read from: in scope mode the ones the kernel holds as
    /// targets (`TARGET_TASKS`; a thread's tid is left out, its process is there), never a
    /// process merely named like one; in direct mode the processes of the `--cgroup`s.
    fn auto_pids(&self) -> Vec<u32> {
        if !self.scoped {
            return auto::cgroup_pids(&self.opts.cgroups);
        }
        let mut pids: Vec<u32> = match self.kernel.target_tasks() {
            Ok(t) => t.into_iter().filter(|&id| is_process(id)).collect(),
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "reading the kernel's targets");
                Vec::new()
            }
        };
        pids.sort_unstable();
        pids
    }

    /// The automatic rules for the Alertmanager targets running now (empty when `base`
    /// turns them off); warns once per process about what it cannot cover (a `--cluster.peer`
    /// given by DNS name, an unreadable resolv.conf).
    fn derive_auto(&mut self, base: &Policy) -> (Vec<Rule>, Vec<u32>) {
        let settings = base.alertmanager;
        if !settings.allow_own_dns && !settings.allow_cluster_peers {
            return (Vec::new(), Vec::new());
        }
        let pids = self.auto_pids();
        let derived = auto::derive(Path::new("/proc"), &pids, settings);
        for w in derived.warnings {
            self.warn_once(w);
        }
        (derived.rules, pids)
    }

    /// The target processes running now, and from them the API guard's default ports
    /// (written with the next install), each target's own cluster peers and, in scope mode,
    /// the cgroups whose sockets it decides (written now).
    fn refresh_target_pids(&mut self) {
        let proc_root = Path::new("/proc");
        self.api_pids = self.target_pids();
        self.api_ports = ListenPorts {
            web: super::api::listen_ports(proc_root, &self.api_pids),
            cluster: super::cluster::listen_ports(proc_root, &self.api_pids),
        };
        self.kernel.set_api_listen_ports(&self.api_ports);
        let keys = super::cluster::peer_keys(proc_root, &self.api_pids, |pid| {
            super::api::cgroup_ids(proc_root, &[pid]).first().copied()
        });
        if let Err(e) = self.kernel.set_api_cluster_peers(&keys) {
            tracing::error!(error = %error_chain(&e), "writing the targets' own cluster peers");
        }
        if self.scoped {
            let ids = super::api::cgroup_ids(proc_root, &self.api_pids);
            if let Err(e) = self.kernel.set_api_cgroups(&ids) {
                tracing::error!(error = %error_chain(&e), "writing the API guard's target cgroups");
            }
        }
    }

    /// Logs a warning unless it was logged for this process already; true when it is new.
    fn warn_once(&mut self, w: auto::Warning) -> bool {
        if self.warned.contains(&w) {
            return false;
        }
        tracing::warn!(
            pid = w.pid,
            subject = %w.subject,
            "not allowed automatically: {}",
            w.reason
        );
        self.warned.insert(w);
        true
    }

    /// Re-derives the automatic rules and writes the per-process entries that changed
    /// (`AUTO_ALLOW`; no new policy generation). Refused rules are logged and counted once
    /// per process.
    pub(super) fn refresh_auto(&mut self) -> Result<(), RunError> {
        let ports_before = self.api_ports.clone();
        self.refresh_target_pids();
        if self.api_ports != ports_before {
            // The guard's default ports are part of the installed API configuration.
            let (base, compiled) = (self.base.clone(), self.base_compiled.clone());
            self.as_next_generation(|a| a.install_with(&base, &compiled))?;
            tracing::info!(
                generation = self.generation,
                ports = ?self.api_ports,
                "the API guard's default ports changed; policy installed"
            );
        }
        let base = self.base.clone();
        let (derived, pids) = self.derive_auto(&base);
        self.warned.retain(|w| pids.binary_search(&w.pid).is_ok());
        let auto::Admitted { rules, mut refused } = auto::admit(derived);
        if rules != self.auto || !refused.is_empty() {
            let entries: Vec<_> = rules.iter().map(auto::entry).collect();
            let full = self.kernel.set_auto_rules(&entries)?;
            let mut installed = Vec::with_capacity(rules.len());
            for rule in rules {
                if full.contains(&auto::entry(&rule).0) {
                    refused.push((rule, auto::Refusal::MapFull));
                } else {
                    installed.push(rule);
                }
            }
            self.log_auto_changes(&installed);
            self.auto = installed;
        }
        for (rule, why) in refused {
            let w = auto::Warning {
                pid: auto::auto_pid(&rule).unwrap_or(0),
                subject: rule.to_string(),
                reason: format!("automatic rule refused ({})", why.as_str()),
            };
            if self.warn_once(w) {
                self.metrics
                    .auto_rules_refused
                    .get_or_create(&ReasonLabels {
                        reason: why.as_str(),
                    })
                    .inc();
            }
        }
        Ok(())
    }

    /// One stderr line per automatic rule added or removed.
    fn log_auto_changes(&self, now: &[Rule]) {
        let log = |rule: &Rule, what: &str| {
            tracing::info!(
                rule = %rule,
                pid = auto::auto_pid(rule),
                source = auto::auto_kind(rule).map(|k| k.as_str()),
                address = %rule.net.addr(),
                ports = %rule.ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                "automatic rule {what}"
            );
        };
        for rule in now.iter().filter(|r| !self.auto.contains(r)) {
            log(rule, "added");
        }
        for rule in self.auto.iter().filter(|r| !now.contains(r)) {
            log(rule, "removed");
        }
    }

    /// Loads, validates and compiles the policy file again and installs it; a rejected policy
    /// keeps the running one.
    pub(super) fn reload(&mut self, why: &'static str) {
        let Some(path) = self.opts.policy.clone() else {
            tracing::info!(reason = why, "no policy file to reload (embedded default)");
            return;
        };
        // Whatever started it (SIGHUP or the slow tick), this reload reads the file as it is
        // now: the slow tick must not load the same file again.
        self.stamp = super::file_stamp(&path);
        let result = policy::load_policy(&path)
            .map_err(RunError::from)
            .and_then(|p| {
                let compiled = compile::compile(&p)?;
                Ok((Arc::new(p), Arc::new(compiled)))
            })
            .and_then(|(p, c)| self.as_next_generation(|a| a.install(p, c)));
        match result {
            Ok(_) => {
                self.metrics
                    .reloads
                    .get_or_create(&ResultLabels { result: "success" })
                    .inc();
                tracing::info!(reason = why, generation = self.generation, policy = %path.display(), "policy reloaded");
            }
            Err(e) => {
                self.metrics
                    .reloads
                    .get_or_create(&ResultLabels { result: "failure" })
                    .inc();
                self.metrics.last_reload_success.set(0);
                tracing::error!(
                    reason = why,
                    error = %error_chain(&e),
                    generation = self.generation,
                    "policy rejected; the running policy stays in force"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_generation;

    #[test]
    fn generations_count_up_and_skip_zero_on_wrap_around() {
        assert_eq!(next_generation(0), 1);
        assert_eq!(next_generation(41), 42);
        // 0 means "nothing installed"; the generation after the last is 1.
        assert_eq!(next_generation(u32::MAX), 1);
    }
}
