//! OpenMetrics endpoint (`/metrics`), liveness (`/healthz`) and readiness (`/readyz`).
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::kernel::Counters;

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
pub struct NameLabels {
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
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
    /// The integrity watchdog's metrics (`enforcer_integrity_*`).
    pub integrity: Arc<crate::integrity::IntegrityMetrics>,
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
        let integrity = Arc::new(crate::integrity::IntegrityMetrics::register(&mut registry));
        let build_info = Family::<VersionLabels, Gauge>::default();
        registry.register("build_info", "Version of the agent", build_info.clone());
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
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
            integrity,
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

/// How long a client has to send its request head.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest request head read; a longer one is answered from what fits.
const MAX_HEAD: usize = 8192;

/// Reads the request head (up to the blank line, however many segments it arrives in, at most
/// [`MAX_HEAD`] bytes). `None` when the client closed or failed before sending a request line.
/// Reading the whole head matters: closing a socket with unread data resets the connection,
/// and the client may lose the response.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    (!head.is_empty()).then_some(head)
}

/// Serves the endpoints on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "metrics endpoint listening");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let Ok(Some(head)) =
                tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await
            else {
                return;
            };
            let request = String::from_utf8_lossy(&head);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, ctype, body) = match path {
                "/metrics" => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    metrics.encode(),
                ),
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
                "/readyz" if metrics.ready.load(Ordering::Relaxed) => {
                    ("200 OK", "text/plain", "ready\n".to_owned())
                }
                "/readyz" => (
                    "503 Service Unavailable",
                    "text/plain",
                    "not ready\n".to_owned(),
                ),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "try /metrics, /healthz or /readyz\n".to_owned(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn the_request_head_is_read_across_segments() {
        block_on(async {
            let (mut client, mut server) = tokio::io::duplex(64);
            let writer = tokio::spawn(async move {
                for part in ["GET /met", "rics HTTP/1.1\r\n", "Host: x\r\n", "\r\n"] {
                    client.write_all(part.as_bytes()).await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                client
            });
            let head = read_head(&mut server).await.unwrap();
            assert_eq!(head, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            drop(writer.await.unwrap());
        });
    }

    #[test]
    fn a_closed_or_endless_client_ends_the_read() {
        block_on(async {
            let (client, mut server) = tokio::io::duplex(64);
            drop(client);
            assert_eq!(read_head(&mut server).await, None);

            let (mut client, mut server) = tokio::io::duplex(MAX_HEAD * 2);
            client.write_all(&[b'a'; MAX_HEAD + 100]).await.unwrap();
            let head = read_head(&mut server).await.unwrap();
            assert!(head.len() >= MAX_HEAD && head.len() < MAX_HEAD + 1024);
        });
    }
}
