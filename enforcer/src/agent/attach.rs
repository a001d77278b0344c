//! The agent's targets: attaching to the `--cgroup` list or the scope cgroup, following the
//! policy's `targets:` in scope mode, and naming the target a denied task belongs to.
use std::path::Path;

use super::{Agent, RunError, TargetSet, targets};
use crate::{
    cgroup::{Cgroup, cgroup2_mount},
    kernel,
    metrics::TargetLabels,
    policy::Policy,
};

impl Agent {
    pub(super) fn resolve_targets(policy: &Policy) -> Result<TargetSet, RunError> {
        Ok(targets::resolve(
            &policy.targets,
            &cgroup2_mount()?,
            Path::new("/proc"),
        ))
    }

    /// Attaches to every target: the --cgroup list, or the scope cgroup.
    pub(super) fn attach_all(&mut self) -> Result<(), RunError> {
        if self.scoped {
            let scope = match &self.opts.scope {
                Some(p) => Cgroup::open_scope(p)?,
                None => Cgroup::open_scope(&cgroup2_mount()?)?,
            };
            self.kernel.attach(&scope)?;
            tracing::info!(scope = %scope.path.display(), "attached (scope mode)");
            self.publish_targets();
        } else {
            self.metrics
                .targets_configured
                .set(self.opts.cgroups.len() as i64);
            for path in self.opts.cgroups.clone() {
                let cg = Cgroup::open(&path)?;
                self.kernel.attach(&cg)?;
                self.metrics
                    .target_attached
                    .get_or_create(&TargetLabels {
                        target: format!("cgroup:{}", cg.path.display()),
                    })
                    .set(1);
                tracing::info!(cgroup = %cg.path.display(), cgroup_id = cg.id(), "attached");
            }
            self.metrics
                .targets_attached
                .set(self.opts.cgroups.len() as i64);
        }
        Ok(())
    }

    /// Removes what earlier releases (other pin layouts) left in the bpffs directory, once this
    /// release's programs are attached to every target, and says what it replaced.
    pub(super) fn take_over_earlier(&mut self) -> Result<(), RunError> {
        for r in self.kernel.take_over()? {
            let cgroups: Vec<String> = r
                .inventory
                .cgroup_ids()
                .into_iter()
                .map(|id| match kernel::layouts::cgroup_path(id) {
                    Some(p) => format!("{} (id {id})", p.display()),
                    None => format!("id {id} (gone)"),
                })
                .collect();
            let mut programs: Vec<&str> = r
                .inventory
                .links
                .values()
                .flatten()
                .map(String::as_str)
                .collect();
            programs.sort_unstable();
            programs.dedup();
            tracing::info!(
                layout = r.version,
                programs = programs.join(","),
                cgroups = cgroups.join(","),
                tracepoints = r.inventory.links.contains_key("tracepoints"),
                links = r.links,
                maps = r.inventory.maps.len(),
                "replaced the pins of an earlier release: its programs are detached and its \
                 maps unpinned, this release's set was attached first"
            );
            if r.dropped_events > 0 {
                tracing::warn!(
                    layout = r.version,
                    dropped_events = r.dropped_events,
                    more_unread = r.drain_capped,
                    "events the earlier release had queued are dropped (records of another layout \
                     are never decoded)"
                );
            }
            if !r.counters_carried.is_empty() {
                tracing::info!(
                    layout = r.version,
                    maps = r.counters_carried.join(","),
                    "the earlier release's counters are carried over (same map shape)"
                );
            }
            if !r.counters_dropped.is_empty() {
                tracing::warn!(
                    layout = r.version,
                    maps = r.counters_dropped.join(","),
                    "the earlier release's counters are dropped (another map shape): these \
                     counters start at zero, as after a restart of the process"
                );
            }
        }
        Ok(())
    }

    fn publish_targets(&self) {
        let m = &self.metrics;
        m.targets_configured.set(self.targets.configured as i64);
        m.target_attached.clear();
        for t in self.targets.cgroups.values() {
            m.target_attached
                .get_or_create(&TargetLabels {
                    target: t.label.clone(),
                })
                .set(1);
        }
        for label in &self.targets.missing {
            m.target_attached
                .get_or_create(&TargetLabels {
                    target: label.clone(),
                })
                .set(0);
        }
        // A configured target counts as attached when something matched it.
        let attached = self
            .targets
            .configured
            .saturating_sub(self.targets.missing.len());
        m.targets_attached.set(attached as i64);
    }

    /// Re-scans targets (new/restarted processes, units that appeared or went away).
    pub(super) fn refresh_targets(&mut self) -> Result<(), RunError> {
        let now = Self::resolve_targets(&self.base)?;
        if now != self.targets {
            self.kernel.set_targets(&now.comms, &now.cgroup_ids())?;
            for (id, t) in &now.cgroups {
                if !self.targets.cgroups.contains_key(id) {
                    tracing::info!(target = %t.label, cgroup = %t.path.display(), cgroup_id = id, "target found");
                }
            }
            for (id, t) in &self.targets.cgroups {
                if !now.cgroups.contains_key(id) {
                    tracing::info!(target = %t.label, cgroup = %t.path.display(), cgroup_id = id, "target gone");
                }
            }
            self.targets = now;
            self.publish_targets();
        }
        // Also every time: a process moved into a target cgroup by another task and not
        // exec'd since (the kernel marks everything else itself).
        self.seed_target_tasks()
    }

    /// Marks the running processes that are targets (by executable name, target cgroup, or
    /// descent from one) in the kernel; the identity tracepoints cover what starts later.
    pub(super) fn seed_target_tasks(&mut self) -> Result<(), RunError> {
        let mount = cgroup2_mount()?;
        let cgroups: Vec<String> = self
            .targets
            .cgroups
            .values()
            .filter_map(|t| t.path.strip_prefix(&mount).ok())
            .map(|rel| format!("/{}", rel.display()))
            .collect();
        let tgids =
            targets::scan_tasks(std::path::Path::new("/proc"), &self.targets.comms, &cgroups);
        self.kernel.add_target_tasks(&tgids)?;
        Ok(())
    }

    /// The target a denied task belongs to, for logs and metrics.
    pub(super) fn target_of(&self, cgroup_id: u64, comm: &str) -> String {
        if self.scoped {
            if let Some(t) = self.targets.cgroups.get(&cgroup_id) {
                return t.label.clone();
            }
            if let Some(c) = self
                .targets
                .comms
                .iter()
                .find(|c| kernel::comm_text(&kernel::comm_key(c)) == comm)
            {
                return format!("process:{c}");
            }
            return "scope".to_owned();
        }
        match self.opts.cgroups.as_slice() {
            [one] => format!("cgroup:{}", one.display()),
            _ => format!("cgroup-id:{cgroup_id}"),
        }
    }
}
