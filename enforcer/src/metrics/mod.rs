//! OpenMetrics endpoint (`/metrics`), liveness (`/healthz`) and readiness (`/readyz`): the
//! metrics here, the HTTP server in [`http`].

mod http;
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use crate::kernel::Counters;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

pub mod api;
pub mod kernel;

pub use api::LoggedLabels;

/// Default listen address of the metrics endpoint.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9895";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub verdict: &'static str,
    pub hook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub rule: String,
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
    /// The git commit the agent was built from (`unknown` outside a checkout).
    pub revision: &'static str,
}

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    pub decisions: Family<DecisionLabels, Counter>,
    pub denials: Family<DenialLabels, Counter>,
    pub lost_events: Counter,
    pub targets_attached: Gauge,
    pub targets_configured: Gauge,
    pub target_attached: Family<TargetLabels, Gauge>,
    pub policy_generation: Gauge,
    pub reloads: Family<ResultLabels, Counter>,
    pub last_reload_success: Gauge,
    pub fqdn_addresses: Gauge,
    pub fqdn_resolution_failures: Family<NameLabels, Counter>,
    pub auto_rules_refused: Family<ReasonLabels, Counter>,
    pub dns_responses_refused: Family<ReasonLabels, Counter>,
    pub dns_records_ignored: Family<ReasonLabels, Counter>,
    pub dns_queries_recorded: Counter,
    pub dns_checksum_offloaded: Counter,
    /// The integrity watchdog's metrics (`enforcer_integrity_*`).
    pub integrity: Arc<crate::integrity::IntegrityMetrics>,
    /// The API guard's metrics.
    pub api: api::ApiMetrics,
    /// Features and verifier figures of the loaded programs.
    pub kernel: kernel::KernelMetrics,
    ready: AtomicBool,
    /// Kernel counter totals already added to `decisions`/`lost_events`.
    seen: Mutex<Counters>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("enforcer");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "connect()/sendmsg() calls decided, by verdict and hook",
            decisions.clone(),
        );
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "denials",
            "Denied (or would-be denied) calls by rule and target",
            denials.clone(),
        );
        let lost_events = Counter::default();
        registry.register(
            "lost_events",
            "Events the kernel could not queue (ring buffer full)",
            lost_events.clone(),
        );
        let targets_attached = Gauge::default();
        registry.register(
            "targets_attached",
            "Target cgroups currently enforced",
            targets_attached.clone(),
        );
        let targets_configured = Gauge::default();
        registry.register(
            "targets_configured",
            "Targets configured (policy targets or --cgroup)",
            targets_configured.clone(),
        );
        let target_attached = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "target_attached",
            "1 when the target is found and enforced",
            target_attached.clone(),
        );
        let policy_generation = Gauge::default();
        registry.register(
            "policy_generation",
            "Generation of the policy the kernel enforces",
            policy_generation.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reloads by result",
            reloads.clone(),
        );
        let last_reload_success = Gauge::default();
        registry.register(
            "policy_last_reload_success",
            "1 when the last policy (re)load succeeded",
            last_reload_success.clone(),
        );
        let fqdn_addresses = Gauge::default();
        registry.register(
            "fqdn_addresses",
            "Addresses learned for allowlisted names",
            fqdn_addresses.clone(),
        );
        let fqdn_resolution_failures = Family::<NameLabels, Counter>::default();
        registry.register(
            "fqdn_resolution_failures",
            "Failed resolutions of allowlisted names",
            fqdn_resolution_failures.clone(),
        );
        let auto_rules_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auto_rules_refused",
            "Automatic rules refused (cloud-metadata destination, per-process limit, map full)",
            auto_rules_refused.clone(),
        );
        let dns_responses_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "dns_responses_refused",
            "DNS responses for allowlisted names the learning program refused, by reason",
            dns_responses_refused.clone(),
        );
        let dns_records_ignored = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "dns_records_ignored",
            "Answer records of accepted DNS responses not learned (off the CNAME chain, other type)",
            dns_records_ignored.clone(),
        );
        let dns_queries_recorded = Counter::default();
        registry.register(
            "dns_queries_recorded",
            "DNS queries of targets' sockets recorded for the learning program to match",
            dns_queries_recorded.clone(),
        );
        let dns_checksum_offloaded = Counter::default();
        registry.register(
            "dns_checksum_offloaded",
            "DNS responses accepted with the check field of a loopback datagram sent on this host \
             (CHECKSUM_PARTIAL: pseudo-header sum only, not verified by the kernel)",
            dns_checksum_offloaded.clone(),
        );
        let integrity = Arc::new(crate::integrity::IntegrityMetrics::register(&mut registry));
        let api = api::ApiMetrics::register(&mut registry);
        let kernel = kernel::KernelMetrics::register(&mut registry);
        let build_info = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "build_info",
            "Version and git revision of the agent (always 1)",
            build_info.clone(),
        );
        build_info
            .get_or_create(&VersionLabels {
                version: crate::VERSION,
                revision: crate::REVISION,
            })
            .set(1);
        Self {
            registry,
            decisions,
            denials,
            lost_events,
            targets_attached,
            targets_configured,
            target_attached,
            policy_generation,
            reloads,
            last_reload_success,
            fqdn_addresses,
            fqdn_resolution_failures,
            auto_rules_refused,
            dns_responses_refused,
            dns_records_ignored,
            dns_queries_recorded,
            dns_checksum_offloaded,
            integrity,
            api,
            kernel,
            ready: AtomicBool::new(false),
            seen: Mutex::new(Counters::default()),
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Adds what the kernel counted since the last call.
    pub fn observe_counters(&self, now: &Counters) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        for h in 0..enforcer_common::hook::COUNT {
            let hook = enforcer_common::hook::name(h as u8).unwrap_or("unknown");
            for (verdict, new, old) in [
                ("allowed", now.allowed[h], seen.allowed[h]),
                ("denied", now.denied[h], seen.denied[h]),
                ("would_deny", now.would_deny[h], seen.would_deny[h]),
            ] {
                let c = self
                    .decisions
                    .get_or_create(&DecisionLabels { verdict, hook });
                c.inc_by(new.saturating_sub(old));
            }
        }
        self.lost_events
            .inc_by(now.lost_events.saturating_sub(seen.lost_events));
        *seen = *now;
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub use http::{bind, serve, serve_on};
