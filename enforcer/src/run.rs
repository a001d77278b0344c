//! `enforcer run`: attach to a cgroup, enforce a policy, stream deny events until a signal.
use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    cgroup::{Cgroup, CgroupError},
    compile::{self, CompileError},
    ebpf::{EbpfError, Enforcer},
    events::{self, DenyView, RuleBook},
    policy::{self, Policy, PolicyError},
};

/// Validated options of `enforcer run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Policy file; `None` runs the embedded default policy.
    pub policy: Option<PathBuf>,
    pub cgroup: PathBuf,
    /// How often queued events are drained when no wakeup came (the kernel side skips
    /// per-event wakeups).
    pub drain_interval: Duration,
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
    Ebpf(#[from] EbpfError),
    #[error(transparent)]
    Fqdn(#[from] crate::fqdn::FqdnError),
    #[error("setting up {what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Loads the policy named by `path`, or the embedded default.
pub fn load_policy(path: Option<&std::path::Path>) -> Result<Policy, PolicyError> {
    match path {
        Some(p) => policy::load_policy(p),
        None => Ok(policy::default_policy()),
    }
}

pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    let io = |what| move |source| RunError::Io { what, source };
    let policy = Arc::new(load_policy(opts.policy.as_deref())?);
    let compiled = compile::compile(&policy)?;
    let cgroup = Cgroup::open(&opts.cgroup)?;

    let mut enforcer = Enforcer::load()?;
    let generation = 1;
    enforcer.install(&compiled, generation)?;
    let mut rules = RuleBook::default();
    rules.insert(generation, policy.clone());
    // Takes the FQDN maps and resolves the allowlisted names once, before attaching.
    let fqdn = crate::fqdn::FqdnAgent::start(&mut enforcer, policy.clone()).await?;
    rules.set_fqdn(fqdn.shared());
    let ring = enforcer.take_events()?;
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
    // the AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| RunError::Io {
            what: "event ring buffer polling",
            source: e.into(),
        })?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(io("SIGINT handler"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(io("SIGTERM handler"))?;

    enforcer.attach(&cgroup)?;
    tracing::info!(
        cgroup = %cgroup.path.display(),
        policy = %policy.source,
        mode = policy.mode.as_str(),
        rules = policy.rules.len(),
        v4_prefixes = compiled.v4.len(),
        v6_prefixes = compiled.v6.len(),
        "ready"
    );

    let mut tick = tokio::time::interval(opts.drain_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lost_reported = 0u64;
    let signal_name = loop {
        tokio::select! {
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(io("event ring buffer polling"))?;
                drain(guard.get_inner_mut(), &rules);
                guard.clear_ready();
            }
            _ = tick.tick() => {
                drain(ring.get_mut(), &rules);
                lost_reported = report_lost(&enforcer, lost_reported);
            }
        }
    };
    drain(ring.get_mut(), &rules);
    report_lost(&enforcer, lost_reported);
    let fqdn_totals = fqdn.stop().await;
    tracing::info!(?fqdn_totals, "fqdn agent stopped");
    let totals = enforcer.counters()?;
    drop(enforcer); // detaches the programs (the links are not pinned)
    tracing::info!(
        signal = signal_name,
        allowed = totals.allowed.iter().sum::<u64>(),
        denied = totals.denied.iter().sum::<u64>(),
        would_deny = totals.would_deny.iter().sum::<u64>(),
        lost_events = totals.lost_events,
        "detached"
    );
    Ok(())
}

/// Writes every queued event as a JSON line.
fn drain(ring: &mut aya::maps::RingBuf<aya::maps::MapData>, rules: &RuleBook) {
    while let Some(item) = ring.next() {
        match events::decode(&item) {
            Ok(ev) => DenyView::new(&ev, rules).log(),
            Err(e) => tracing::error!(error = %e, "undecodable event"),
        }
    }
}

/// Reports events the kernel could not queue since the last report; returns the new total.
fn report_lost(enforcer: &Enforcer, reported: u64) -> u64 {
    match enforcer.counters() {
        Ok(c) if c.lost_events > reported => {
            let lost = c.lost_events - reported;
            tracing::warn!(target: events::TARGET, event = "events_lost", lost, lost_total = c.lost_events);
            tracing::warn!(
                lost,
                lost_total = c.lost_events,
                "event ring buffer was full; events lost"
            );
            c.lost_events
        }
        Ok(_) => reported,
        Err(e) => {
            tracing::error!(error = %e, "reading counters");
            reported
        }
    }
}
