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
pub struct ClusterLabels {
    /// tcp (SYNs) | udp (datagrams)
    pub protocol: &'static str,
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
    pub cluster: Family<ClusterLabels, Counter>,
    pub cluster_joins: Counter,
    pub watchdog: Counter,
    pub stream_cut: Counter,
    pub unparsed: Counter,
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
            "HTTP requests parsed from a guarded API port's streams: write (logged) or read (only \
             counted)",
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
        let cluster = Family::<ClusterLabels, Counter>::default();
        registry.register(
            "api_cluster_packets",
            "Packets to a guarded cluster (gossip) port by protocol and verdict: TCP SYNs and UDP \
             datagrams; every refused one counts",
            cluster.clone(),
        );
        let cluster_joins = Counter::default();
        registry.register(
            "api_cluster_joins",
            "Gossip sessions of allowed peers written as cluster_join lines",
            cluster_joins.clone(),
        );
        let watchdog = Counter::default();
        registry.register(
            "api_watchdog_connections",
            "Connections of the agent's own integrity watchdog let in by its identity although \
             the allow list would refuse its address",
            watchdog.clone(),
        );
        let stream_cut = Counter::default();
        registry.register(
            "api_stream_segments_cut",
            "Segments to a web port longer than the kernel queues for the agent (their tail is \
             only counted; a request head in it is reported unparsed)",
            stream_cut.clone(),
        );
        let unparsed = Counter::default();
        registry.register(
            "api_requests_unparsed",
            "Points of a web port's stream where the agent could not follow the requests \
             (api_request_unparsed lines)",
            unparsed.clone(),
        );
        Self {
            stream_cut,
            unparsed,
            connections,
            requests,
            logged_requests,
            reports_suppressed,
            lost_events,
            cluster,
            cluster_joins,
            watchdog,
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
        self.stream_cut
            .inc_by(now.stream_cut.saturating_sub(seen.stream_cut));
        self.reports_suppressed.inc_by(
            now.reports_suppressed
                .saturating_sub(seen.reports_suppressed),
        );
        self.lost_events
            .inc_by(now.lost_events.saturating_sub(seen.lost_events));
        for (protocol, verdict, new, old) in [
            (
                "tcp",
                "accepted",
                now.cluster_tcp_accepted,
                seen.cluster_tcp_accepted,
            ),
            (
                "tcp",
                "refused",
                now.cluster_tcp_refused,
                seen.cluster_tcp_refused,
            ),
            (
                "tcp",
                "would_refuse",
                now.cluster_tcp_would_refuse,
                seen.cluster_tcp_would_refuse,
            ),
            (
                "udp",
                "accepted",
                now.cluster_udp_accepted,
                seen.cluster_udp_accepted,
            ),
            (
                "udp",
                "refused",
                now.cluster_udp_refused,
                seen.cluster_udp_refused,
            ),
            (
                "udp",
                "would_refuse",
                now.cluster_udp_would_refuse,
                seen.cluster_udp_would_refuse,
            ),
        ] {
            self.cluster
                .get_or_create(&ClusterLabels { protocol, verdict })
                .inc_by(new.saturating_sub(old));
        }
        self.cluster_joins
            .inc_by(now.cluster_joins.saturating_sub(seen.cluster_joins));
        self.watchdog
            .inc_by(now.watchdog_accepted.saturating_sub(seen.watchdog_accepted));
        *seen = *now;
    }
}
