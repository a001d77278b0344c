//! `enforcer run`: attach to the targets, enforce a policy, stream deny events, reload on
//! SIGHUP or when the policy file changes, until SIGINT/SIGTERM.
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    cgroup::{Cgroup, CgroupError, cgroup2_mount},
    compile::{self, CompileError, Compiled},
    error_chain,
    events::{self, DenyView, RuleBook},
    kernel::{self, Kernel, KernelError, pin::Pins},
    metrics::{self, Metrics, ResultLabels, TargetLabels},
    policy::{self, Policy, PolicyError, Rule},
};

pub mod auto;
pub mod fqdn;
pub mod targets;

use targets::TargetSet;

/// Validated options of `enforcer run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Policy file; `None` runs the embedded default policy.
    pub policy: Option<PathBuf>,
    /// Direct mode: attach to exactly these cgroups (the policy's `targets:` are ignored).
    pub cgroups: Vec<PathBuf>,
    /// Scope mode (policy `targets:`): the cgroup the programs are attached at; every task
    /// below it is checked against the targets. `None`: the cgroup v2 root.
    pub scope: Option<PathBuf>,
    /// How often queued events are drained when no wakeup came (the kernel side skips
    /// per-event wakeups).
    pub drain_interval: Duration,
    /// Pin maps, programs and links here: enforcement outlives the agent, a restarted agent
    /// adopts it. `None`: everything is detached when the agent exits.
    pub pins: Option<Pins>,
    /// Where to serve metrics; `None`: no endpoint.
    pub metrics: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Ebpf(#[from] KernelError),
    #[error(transparent)]
    Fqdn(#[from] fqdn::FqdnError),
    #[error("no target: give --cgroup PATH or a `targets:` list in the policy")]
    NoTarget,
    #[error("setting up {what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Loads the policy named by `path`, or the embedded default.
pub fn load_policy(path: Option<&Path>) -> Result<Policy, PolicyError> {
    match path {
        Some(p) => policy::load_policy(p),
        None => Ok(policy::default_policy()),
    }
}

/// Identity of the policy file's content as far as a change check needs (follows symlinks,
/// so a Kubernetes ConfigMap update, which swaps a symlink, counts).
fn file_stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// The running agent's state.
struct Agent {
    opts: RunOptions,
    enforcer: Kernel,
    /// The policy file's policy (or the embedded default), as validated.
    base: Arc<Policy>,
    /// The installed policy: `base` and the automatic rules of [`Agent::auto`].
    policy: Arc<Policy>,
    /// The automatic rules last derived from the running Alertmanager targets (installed,
    /// unless they did not fit the maps).
    auto: Vec<Rule>,
    /// What the automatic rules could not cover, already warned about (by pid).
    warned: BTreeSet<auto::Warning>,
    generation: u32,
    rules: RuleBook,
    metrics: Arc<Metrics>,
    /// Scope mode: the current targets; direct mode: unused.
    targets: TargetSet,
    /// Scope mode: true; direct mode: false.
    scoped: bool,
    stamp: Option<(SystemTime, u64, u64)>,
    lost_reported: u64,
    /// The FQDN allowlist's agent (its own resolution, learned-address bookkeeping).
    fqdn: Option<fqdn::FqdnAgent>,
}

pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    let io = |what| move |source| RunError::Io { what, source };
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = opts.metrics {
        let listener_metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, listener_metrics).await {
                tracing::error!(address = %addr, error = %e, "metrics endpoint failed");
            }
        });
    }
    let policy = Arc::new(load_policy(opts.policy.as_deref())?);
    // The file alone must fit the maps (its errors name the file, not a running process).
    compile::compile(&policy)?;
    let scoped = opts.cgroups.is_empty();
    if scoped && policy.targets.is_empty() {
        return Err(RunError::NoTarget);
    }
    if !scoped && !policy.targets.is_empty() {
        tracing::info!("--cgroup given: the policy's targets are not used");
    }

    let mut enforcer = Kernel::load_with(opts.pins.clone())?;
    enforcer.set_scoped(scoped);
    let generation = enforcer.generation()?.wrapping_add(1).max(1);
    let mut agent = Agent {
        stamp: opts.policy.as_deref().and_then(file_stamp),
        opts,
        enforcer,
        base: policy.clone(),
        policy: policy.clone(),
        auto: Vec::new(),
        warned: BTreeSet::new(),
        generation,
        rules: RuleBook::default(),
        metrics: metrics.clone(),
        targets: TargetSet::default(),
        scoped,
        lost_reported: 0,
        fqdn: None,
    };
    if agent.enforcer.adopted() {
        tracing::info!(
            generation = generation - 1,
            "adopted pinned maps of an earlier agent"
        );
    }
    let compiled = agent.install(&policy)?;
    // Takes the FQDN maps and resolves the allowlisted names once, before attaching.
    let fqdn = fqdn::FqdnAgent::start(
        &mut agent.enforcer,
        agent.policy.clone(),
        Some(metrics.clone()),
    )
    .await?;
    agent.rules.set_fqdn(fqdn.shared());
    agent.fqdn = Some(fqdn);

    let ring = agent.enforcer.take_events()?;
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
    // the AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| RunError::Io {
            what: "event ring buffer polling",
            source: e.into(),
        })?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(io("SIGINT handler"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(io("SIGTERM handler"))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(io("SIGHUP handler"))?;

    agent.attach_all()?;
    metrics.set_ready(true);
    tracing::info!(
        mode = agent.policy.mode.as_str(),
        policy = %agent.policy.source,
        generation = agent.generation,
        targets = if scoped { "policy targets (scope mode)" } else { "--cgroup" },
        rules = agent.policy.rules.len(),
        auto_rules = agent.auto.len(),
        v4_prefixes = compiled.v4.len(),
        v6_prefixes = compiled.v6.len(),
        pinned = agent.opts.pins.as_ref().map(|p| p.root().display().to_string()),
        "ready"
    );

    let mut tick = tokio::time::interval(agent.opts.drain_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut slow = tokio::time::interval(Duration::from_millis(250));
    slow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let signal_name = loop {
        tokio::select! {
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            _ = sighup.recv() => agent.reload("SIGHUP"),
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(io("event ring buffer polling"))?;
                agent.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = tick.tick() => {
                agent.drain(ring.get_mut());
                agent.report_counters();
            }
            _ = slow.tick() => {
                if let Some(path) = agent.opts.policy.clone() {
                    let stamp = file_stamp(&path);
                    if stamp.is_some() && stamp != agent.stamp {
                        agent.stamp = stamp;
                        agent.reload("policy file changed");
                    }
                }
                if agent.scoped
                    && let Err(e) = agent.refresh_targets()
                {
                    tracing::error!(error = %error_chain(&e), "updating targets");
                }
                if let Err(e) = agent.refresh_auto() {
                    tracing::error!(error = %error_chain(&e), "updating the automatic rules");
                }
            }
        }
    };
    metrics.set_ready(false);
    agent.drain(ring.get_mut());
    agent.report_counters();
    let totals = agent.enforcer.counters()?;
    if let Some(fqdn) = agent.fqdn.take() {
        let fqdn_totals = fqdn.stop().await;
        tracing::info!(?fqdn_totals, "fqdn agent stopped");
    }
    let pinned = agent
        .opts
        .pins
        .as_ref()
        .map(|p| p.root().display().to_string());
    drop(agent); // without pinning this detaches the programs
    tracing::info!(
        signal = signal_name,
        allowed = totals.allowed.iter().sum::<u64>(),
        denied = totals.denied.iter().sum::<u64>(),
        would_deny = totals.would_deny.iter().sum::<u64>(),
        lost_events = totals.lost_events,
        "{}",
        match &pinned {
            Some(dir) =>
                format!("exiting; enforcement stays pinned in {dir} (`enforcer detach` removes it)"),
            None => "detached".to_owned(),
        }
    );
    Ok(())
}

impl Agent {
    /// Installs `base` (a new policy file) with the automatic rules of the targets found
    /// now, as generation [`Agent::generation`]; returns what went into the maps.
    fn install(&mut self, base: &Arc<Policy>) -> Result<Compiled, RunError> {
        // Targets first: a reload that adds a target covers it before the new rules apply.
        if self.scoped {
            self.targets = self.resolve_targets(base)?;
            self.enforcer
                .set_targets(&self.targets.comms, &self.targets.cgroup_ids())?;
        }
        let auto = self.derive_auto(base);
        let compiled = self.install_with(base, auto)?;
        self.base = base.clone();
        self.metrics.last_reload_success.set(1);
        Ok(compiled)
    }

    /// Compiles `base` + `auto` and writes it into the maps as generation
    /// [`Agent::generation`]. Automatic rules that do not fit the maps are logged and left
    /// out (the file's rules alone always fit: checked when the file was loaded).
    fn install_with(&mut self, base: &Arc<Policy>, auto: Vec<Rule>) -> Result<Compiled, RunError> {
        let mut fits = true;
        let (policy, compiled) = if auto.is_empty() {
            (base.clone(), compile::compile(base)?)
        } else {
            let policy = auto::with_auto_rules(base, &auto);
            match compile::compile(&policy) {
                Ok(compiled) => (Arc::new(policy), compiled),
                Err(e) => {
                    fits = false;
                    tracing::error!(
                        error = %error_chain(&e),
                        "the automatic rules for Alertmanager's own needs do not fit the maps; \
                         installing the policy without them"
                    );
                    (base.clone(), compile::compile(base)?)
                }
            }
        };
        self.enforcer.install(&compiled, self.generation)?;
        self.rules.insert(self.generation, policy.clone());
        if let Some(fqdn) = &self.fqdn {
            fqdn.update(policy.clone());
        }
        self.policy = policy;
        self.log_auto_changes(&auto, fits);
        self.auto = auto;
        self.metrics
            .policy_generation
            .set(i64::from(self.generation));
        Ok(compiled)
    }

    /// The automatic rules for the Alertmanager targets running now (empty when `base`
    /// turns them off); warns once per process about what it cannot cover (a `--cluster.peer`
    /// given by DNS name, an unreadable resolv.conf).
    fn derive_auto(&mut self, base: &Policy) -> Vec<Rule> {
        let settings = base.alertmanager;
        if !settings.allow_own_dns && !settings.allow_cluster_peers {
            return Vec::new();
        }
        let proc_root = Path::new("/proc");
        let pids = if self.scoped {
            match cgroup2_mount() {
                Ok(mount) => {
                    let mount = mount.canonicalize().unwrap_or(mount);
                    let scope = self.opts.scope.clone().unwrap_or_else(|| mount.clone());
                    let scope = scope.canonicalize().unwrap_or(scope);
                    auto::scope_pids(proc_root, &mount, &scope, &self.targets)
                }
                Err(_) => Vec::new(),
            }
        } else {
            auto::cgroup_pids(&self.opts.cgroups)
        };
        let derived = auto::derive(proc_root, &pids, settings);
        self.warned.retain(|w| pids.binary_search(&w.pid).is_ok());
        for w in derived.warnings {
            if !self.warned.contains(&w) {
                tracing::warn!(
                    pid = w.pid,
                    subject = %w.subject,
                    "not allowed automatically: {}",
                    w.reason
                );
                self.warned.insert(w);
            }
        }
        derived.rules
    }

    /// Re-derives the automatic rules; installs a new generation only when they changed.
    fn refresh_auto(&mut self) -> Result<(), RunError> {
        let base = self.base.clone();
        let auto = self.derive_auto(&base);
        if auto == self.auto {
            return Ok(());
        }
        let previous = self.generation;
        self.generation = self.generation.wrapping_add(1).max(1);
        if let Err(e) = self.install_with(&base, auto) {
            self.generation = previous;
            return Err(e);
        }
        tracing::info!(
            generation = self.generation,
            auto_rules = self.auto.len(),
            "automatic rules changed; policy installed"
        );
        Ok(())
    }

    /// One stderr line per automatic rule added or removed.
    fn log_auto_changes(&self, now: &[Rule], installed: bool) {
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
        let added = if installed {
            "added"
        } else {
            "derived but not installed"
        };
        for rule in now.iter().filter(|r| !self.auto.contains(r)) {
            log(rule, added);
        }
        for rule in self.auto.iter().filter(|r| !now.contains(r)) {
            log(rule, "removed");
        }
    }

    fn resolve_targets(&self, policy: &Policy) -> Result<TargetSet, RunError> {
        Ok(targets::resolve(
            &policy.targets,
            &cgroup2_mount()?,
            Path::new("/proc"),
        ))
    }

    /// Attaches to every target: the --cgroup list, or the scope cgroup.
    fn attach_all(&mut self) -> Result<(), RunError> {
        if self.scoped {
            let scope = match &self.opts.scope {
                Some(p) => Cgroup::open_scope(p)?,
                None => Cgroup::open_scope(&cgroup2_mount()?)?,
            };
            self.enforcer.attach(&scope)?;
            tracing::info!(scope = %scope.path.display(), "attached (scope mode)");
            self.publish_targets();
        } else {
            self.metrics
                .targets_configured
                .set(self.opts.cgroups.len() as i64);
            for path in self.opts.cgroups.clone() {
                let cg = Cgroup::open(&path)?;
                self.enforcer.attach(&cg)?;
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
    fn refresh_targets(&mut self) -> Result<(), RunError> {
        let now = self.resolve_targets(&self.base.clone())?;
        if now != self.targets {
            self.enforcer.set_targets(&now.comms, &now.cgroup_ids())?;
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
        Ok(())
    }

    /// Loads, validates and installs the policy file again; a rejected policy keeps the
    /// running one.
    fn reload(&mut self, why: &'static str) {
        let Some(path) = self.opts.policy.clone() else {
            tracing::info!(reason = why, "no policy file to reload (embedded default)");
            return;
        };
        let result = policy::load_policy(&path)
            .map_err(RunError::from)
            .and_then(|p| compile::compile(&p).map(|_| p).map_err(RunError::from))
            .and_then(|p| {
                let previous = self.generation;
                self.generation = self.generation.wrapping_add(1).max(1);
                let r = self.install(&Arc::new(p));
                if r.is_err() {
                    self.generation = previous;
                }
                r.map(drop)
            });
        match result {
            Ok(()) => {
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

    /// Writes every queued event as a JSON line.
    fn drain(&self, ring: &mut aya::maps::RingBuf<aya::maps::MapData>) {
        while let Some(item) = ring.next() {
            match events::decode(&item) {
                Ok(ev) => {
                    let view = DenyView::new(&ev, &self.rules);
                    let target = self.target_of(ev.header.cgroup_id, &view.comm);
                    self.metrics
                        .denials
                        .get_or_create(&metrics::DenialLabels {
                            rule: view.rule.clone(),
                            target: target.clone(),
                        })
                        .inc();
                    view.log(&target);
                }
                Err(e) => tracing::error!(error = %e, "undecodable event"),
            }
        }
    }

    /// The target a denied task belongs to, for logs and metrics.
    fn target_of(&self, cgroup_id: u64, comm: &str) -> String {
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

    /// Mirrors kernel counters into metrics and reports lost events.
    fn report_counters(&mut self) {
        match self.enforcer.counters() {
            Ok(c) => {
                self.metrics.observe_counters(&c);
                if c.lost_events > self.lost_reported {
                    let lost = c.lost_events - self.lost_reported;
                    tracing::warn!(target: events::TARGET, event = "events_lost", lost, lost_total = c.lost_events);
                    tracing::warn!(
                        lost,
                        lost_total = c.lost_events,
                        "event ring buffer was full; events lost"
                    );
                    self.lost_reported = c.lost_events;
                }
            }
            Err(e) => tracing::error!(error = %error_chain(&e), "reading counters"),
        }
    }
}
