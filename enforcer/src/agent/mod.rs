//! `enforcer run`: attach to the targets, enforce a policy, stream deny events, reload on
//! SIGHUP or when the policy file changes, until SIGINT/SIGTERM.
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use enforcer_common::DenyEvent;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{Signal, SignalKind, signal},
};

use crate::{
    cgroup::CgroupError,
    compile::{self, CompileError, Compiled},
    error_chain,
    events::{self, Aggregator, DenyView, LostView, RuleBook},
    kernel::{Kernel, KernelError, pin::Pins},
    metrics::{self, Metrics},
    policy::{self, Policy, PolicyError, Rule},
};

pub mod api;
pub mod api_stream;
mod attach;
pub mod auto;
pub mod cluster;
pub mod fqdn;
mod install;
pub mod targets;
mod watchdog;

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
    /// Identical denials within this window are written as the first one's line and one line
    /// at the window's end (zero: every denial is its own line).
    pub denial_window: Duration,
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
    /// The loaded programs and maps.
    kernel: Kernel,
    /// The policy file's policy (or the embedded default), as validated.
    base: Arc<Policy>,
    /// `base` compiled (once, when it was loaded): installed as it is while there are no
    /// automatic rules, and whenever the automatic rules do not fit the maps.
    base_compiled: Arc<Compiled>,
    /// The installed policy: `base` and the automatic rules of [`Agent::auto`].
    policy: Arc<Policy>,
    /// The automatic rules last derived from the running Alertmanager targets (installed,
    /// unless they did not fit the maps).
    auto: Vec<Rule>,
    /// What the automatic rules could not cover, already warned about (by pid).
    warned: BTreeSet<auto::Warning>,
    /// The generation the programs read (or, during an install, the one being written).
    generation: u32,
    /// The installed policies events may still refer to, by generation.
    rules: RuleBook,
    metrics: Arc<Metrics>,
    /// Scope mode: the current targets; direct mode: unused.
    targets: TargetSet,
    /// Scope mode: true; direct mode: false.
    scoped: bool,
    /// The policy file's identity when it was last loaded (see [`file_stamp`]).
    stamp: Option<(SystemTime, u64, u64)>,
    /// Lost events already reported.
    lost_reported: u64,
    /// The open windows of identical denials.
    denials: Aggregator,
    /// The FQDN allowlist's agent (its own resolution, learned-address bookkeeping).
    fqdn: Option<fqdn::FqdnAgent>,
    /// The integrity watchdog of the Alertmanager targets' APIs.
    watchdog: Option<crate::integrity::Watchdog>,
    /// The API guard's events and installed section.
    api_guard: api::ApiGuard,
    /// The target processes found last: their `--web.listen-address` ports are the API
    /// guard's default ports, and a peer process is looked up in their network namespace.
    api_pids: Vec<u32>,
    /// The API guard's default ports now written (see [`Kernel::set_api_listen_ports`]).
    api_ports: crate::kernel::api::ListenPorts,
}

/// The signals `run` stops or reloads on.
struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> Result<Self, RunError> {
        let io = |what| move |source| RunError::Io { what, source };
        Ok(Self {
            int: signal(SignalKind::interrupt()).map_err(io("SIGINT handler"))?,
            term: signal(SignalKind::terminate()).map_err(io("SIGTERM handler"))?,
            hup: signal(SignalKind::hangup()).map_err(io("SIGHUP handler"))?,
        })
    }
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    let started = std::time::Instant::now();
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = opts.metrics {
        let listener_metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, listener_metrics).await {
                tracing::error!(address = %addr, error = %e, "metrics endpoint failed");
            }
        });
    }
    let (mut agent, compiled) = Agent::start(opts, metrics.clone()).await?;
    let ring = agent.kernel.take_events()?;
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
    // the AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| RunError::Io {
            what: "event ring buffer polling",
            source: e.into(),
        })?;
    let mut signals = Signals::new()?;

    agent.attach_all()?;
    // An upgrade: the earlier release's programs go only now that this release's are attached.
    agent.take_over_earlier()?;
    agent.watchdog = Some(crate::integrity::Watchdog::start(
        agent.base.clone(),
        metrics.integrity.clone(),
    ));
    agent.refresh_watchdog();
    metrics.set_ready(true);
    tracing::info!(
        mode = agent.policy.mode.as_str(),
        policy = %agent.policy.source,
        generation = agent.generation,
        targets = if agent.scoped { "policy targets (scope mode)" } else { "--cgroup" },
        rules = agent.policy.rules.len(),
        auto_rules = agent.auto.len(),
        v4_entries = compiled.v4.len(),
        v4_blocks = compiled.v4_blocks.len(),
        v6_entries = compiled.v6.len(),
        pinned = agent.opts.pins.as_ref().map(|p| p.root().display().to_string()),
        load_ms = (agent.kernel.load_report().total().as_secs_f64() * 1e3).round(),
        max_verified_insns = agent.kernel.load_report().max_instructions().map(|(_, n)| n),
        startup_ms = started.elapsed().as_millis() as u64,
        lost_features = agent
            .kernel
            .features()
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(f, _)| f.as_str())
            .collect::<Vec<_>>()
            .join(","),
        "ready"
    );
    // systemd (Type=notify): the units ordered after this one start now, not at exec.
    notify_systemd("READY=1");
    let signal_name = agent.serve(&mut ring, &mut signals).await?;
    metrics.set_ready(false);
    notify_systemd("STOPPING=1");
    agent.stop(ring.get_mut(), signal_name).await
}

/// Tells systemd `state` when it started the agent as `Type=notify`; a failure is logged (the
/// unit then times out starting, which systemd reports).
fn notify_systemd(state: &str) {
    match crate::sd_notify::notify(state) {
        Ok(true) => tracing::debug!(state, "notified systemd"),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %error_chain(&e), "could not notify systemd"),
    }
}

impl Agent {
    /// Loads and compiles the policy, loads the programs (or adopts pinned ones), installs
    /// the first generation and starts the FQDN agent; nothing is attached yet. Returns what
    /// went into the maps.
    async fn start(
        opts: RunOptions,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, Arc<Compiled>), RunError> {
        let policy = Arc::new(load_policy(opts.policy.as_deref())?);
        // The file alone must fit the maps (its errors name the file, not a running process).
        let compiled = Arc::new(compile::compile(&policy)?);
        let scoped = opts.cgroups.is_empty();
        if scoped && policy.targets.is_empty() {
            return Err(RunError::NoTarget);
        }
        if !scoped && !policy.targets.is_empty() {
            tracing::info!("--cgroup given: the policy's targets are not used");
        }
        let mut kernel = Kernel::load_with(opts.pins.clone(), scoped)?;
        metrics
            .kernel
            .observe(&kernel.features(), kernel.load_report());
        let api_guard = api::ApiGuard::start(&mut kernel)?;
        // The watchdog's sockets are marked for the API guard: it reads the APIs it watches
        // by the agent's identity, never locked out by the policy's own `allow` list.
        let marks = Arc::new(kernel.take_watchdog_marks()?);
        crate::own_sockets::set_marker(Arc::new(move |fd| marks.mark(fd)));
        let denials = Aggregator::new(opts.denial_window, Aggregator::CAPACITY);
        let mut agent = Agent {
            stamp: opts.policy.as_deref().and_then(file_stamp),
            opts,
            generation: kernel.generation()?,
            kernel,
            base: policy.clone(),
            base_compiled: compiled.clone(),
            policy: policy.clone(),
            auto: Vec::new(),
            warned: BTreeSet::new(),
            rules: RuleBook::default(),
            metrics: metrics.clone(),
            targets: TargetSet::default(),
            scoped,
            lost_reported: 0,
            denials,
            fqdn: None,
            watchdog: None,
            api_guard,
            api_pids: Vec::new(),
            api_ports: crate::kernel::api::ListenPorts::default(),
        };
        if agent.kernel.adopted() {
            tracing::info!(
                generation = agent.generation,
                "adopted pinned maps of an earlier agent"
            );
        }
        let installed = agent.as_next_generation(|a| a.install(policy, compiled))?;
        // Takes the FQDN maps and resolves the allowlisted names once, before attaching.
        let fqdn =
            fqdn::FqdnAgent::start(&mut agent.kernel, agent.policy.clone(), Some(metrics)).await?;
        agent.rules.set_names(fqdn.shared());
        agent.fqdn = Some(fqdn);
        Ok((agent, installed))
    }

    /// Drains events, follows the policy file, the targets and the automatic rules until
    /// SIGINT or SIGTERM; returns the signal's name.
    async fn serve(
        &mut self,
        ring: &mut AsyncFd<RingBuf<MapData>>,
        signals: &mut Signals,
    ) -> Result<&'static str, RunError> {
        let mut tick = tokio::time::interval(self.opts.drain_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut slow = tokio::time::interval(Duration::from_millis(250));
        slow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = signals.int.recv() => return Ok("SIGINT"),
                _ = signals.term.recv() => return Ok("SIGTERM"),
                _ = signals.hup.recv() => self.reload("SIGHUP"),
                guard = ring.readable_mut() => {
                    let mut guard = guard.map_err(|source| RunError::Io {
                        what: "event ring buffer polling",
                        source,
                    })?;
                    self.drain(guard.get_inner_mut());
                    guard.clear_ready();
                }
                _ = tick.tick() => {
                    self.drain(ring.get_mut());
                    self.denials
                        .close_ended(std::time::Instant::now(), &mut |l| events::emit(l));
                    self.rules.prune(std::time::Instant::now());
                    self.drain_api();
                    self.report_counters();
                }
                _ = slow.tick() => self.follow(),
            }
        }
    }

    /// The slow tick: a changed policy file, new or gone targets, changed automatic rules.
    fn follow(&mut self) {
        if let Some(path) = self.opts.policy.clone() {
            let stamp = file_stamp(&path);
            if stamp.is_some() && stamp != self.stamp {
                self.reload("policy file changed");
            }
        }
        if self.scoped
            && let Err(e) = self.refresh_targets()
        {
            tracing::error!(error = %error_chain(&e), "updating targets");
        }
        if let Err(e) = self.refresh_auto() {
            tracing::error!(error = %error_chain(&e), "updating the automatic rules");
        }
        self.refresh_watchdog();
    }

    /// Drains the last events, stops the FQDN agent and, without pinning, detaches.
    async fn stop(
        mut self,
        ring: &mut RingBuf<MapData>,
        signal_name: &'static str,
    ) -> Result<(), RunError> {
        self.drain(ring);
        self.denials.close_all(&mut |l| events::emit(l));
        self.drain_api();
        self.report_counters();
        let totals = self.kernel.counters()?;
        if let Some(fqdn) = self.fqdn.take() {
            let fqdn_totals = fqdn.stop().await;
            tracing::info!(?fqdn_totals, "fqdn agent stopped");
        }
        let pinned = self
            .opts
            .pins
            .as_ref()
            .map(|p| p.root().display().to_string());
        drop(self); // without pinning this detaches the programs
        tracing::info!(
            signal = signal_name,
            allowed = totals.allowed.iter().sum::<u64>(),
            denied = totals.denied.iter().sum::<u64>(),
            would_deny = totals.would_deny.iter().sum::<u64>(),
            lost_events = totals.lost_events,
            "{}",
            match &pinned {
                Some(dir) => format!(
                    "exiting; enforcement stays pinned in {dir} (`enforcer detach` removes it)"
                ),
                None => "detached".to_owned(),
            }
        );
        Ok(())
    }

    /// Counts every queued event and writes its line (folded by [`Agent::denials`]).
    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        let now = std::time::Instant::now();
        while let Some(item) = ring.next() {
            match events::decode::<DenyEvent>(&item) {
                Ok(ev) => {
                    let view = DenyView::new(&ev, &self.rules, |id, comm| self.target_of(id, comm));
                    self.metrics
                        .denials
                        .get_or_create(&metrics::DenialLabels {
                            rule: view.rule.clone(),
                            target: view.target.clone(),
                        })
                        .inc();
                    self.denials.offer(view, now, &mut |l| events::emit(l));
                }
                Err(e) => tracing::error!(error = %e, "undecodable event"),
            }
        }
    }

    /// Writes the API guard's queued events as JSON lines.
    fn drain_api(&mut self) {
        for ev in self.api_guard.take() {
            let target = self.target_of(ev.header.cgroup_id, "");
            self.api_guard
                .report(&ev, &target, &self.metrics, &self.api_pids);
        }
        for out in self.api_guard.expire() {
            if let api_stream::Out::Closed { key, .. } = &out {
                let target = self.target_of(key.cgroup, "");
                self.api_guard.write(&out, &target, &self.metrics, &[]);
            }
        }
    }

    /// Mirrors kernel counters into metrics and reports lost events.
    fn report_counters(&mut self) {
        match self.kernel.api_counters() {
            Ok(c) => self.metrics.api.observe(&c),
            Err(e) => tracing::error!(error = %error_chain(&e), "reading API guard counters"),
        }
        match self.kernel.counters() {
            Ok(c) => {
                self.metrics.observe_counters(&c);
                if c.lost_events > self.lost_reported {
                    let lost = c.lost_events - self.lost_reported;
                    events::emit(&LostView::new(lost, c.lost_events));
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
