//! The API guard's metrics.
use std::sync::Mutex;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::kernel::api::ApiCounters;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// accepted | refused | would_refuse
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// write | read
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoggedLabels {
    pub method: String,
    pub path_class: &'static str,
    /// Whether the `api:` allow list (if any) lets the peer in.
    pub peer_allowed: &'static str,
}

pub struct ApiMetrics {
    pub connections: Family<ConnectionLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub logged_requests: Family<LoggedLabels, Counter>,
    pub reports_suppressed: Counter,
    pub lost_events: Counter,
    seen: Mutex<ApiCounters>,
}

impl ApiMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let connections = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "api_connections",
            "Connections (SYNs) to a guarded API port by verdict; every refused SYN counts",
            connections.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "HTTP requests seen on a guarded API port: write (logged) or read (only counted)",
            requests.clone(),
        );
        let logged_requests = Family::<LoggedLabels, Counter>::default();
        registry.register(
            "api_logged_requests",
            "State-changing API calls logged, by method, path class and whether the peer is allowed",
            logged_requests.clone(),
        );
        let reports_suppressed = Counter::default();
        registry.register(
            "api_refusal_reports_suppressed",
            "Refused connections not written as a line (per-peer and per-second limits)",
            reports_suppressed.clone(),
        );
        let lost_events = Counter::default();
        registry.register(
            "api_lost_events",
            "API guard events the kernel could not queue (ring buffer full)",
            lost_events.clone(),
        );
        Self {
            connections,
            requests,
            logged_requests,
            reports_suppressed,
            lost_events,
            seen: Mutex::new(ApiCounters::default()),
        }
    }

    /// Adds what the kernel counted since the last call.
    pub fn observe(&self, now: &ApiCounters) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        for (verdict, new, old) in [
            ("accepted", now.accepted, seen.accepted),
            ("refused", now.refused, seen.refused),
            ("would_refuse", now.would_refuse, seen.would_refuse),
        ] {
            self.connections
                .get_or_create(&ConnectionLabels { verdict })
                .inc_by(new.saturating_sub(old));
        }
        for (kind, new, old) in [
            ("write", now.writes, seen.writes),
            ("read", now.reads, seen.reads),
        ] {
            self.requests
                .get_or_create(&RequestLabels { kind })
                .inc_by(new.saturating_sub(old));
        }
        self.reports_suppressed.inc_by(
            now.reports_suppressed
                .saturating_sub(seen.reports_suppressed),
        );
        self.lost_events
            .inc_by(now.lost_events.saturating_sub(seen.lost_events));
        *seen = *now;
    }
}
