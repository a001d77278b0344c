//! Out-of-band delivery: the agent itself POSTs each finding (JSON) to every `notify` URL —
//! never through Alertmanager, which may be the thing silenced.
//!
//! Each URL has its own worker and bounded queue: a slow or dead endpoint delays only its own
//! notifications; when its queue is full the oldest notification is dropped and counted.
//! A failed POST (connection error, timeout, non-2xx answer) is retried [`ATTEMPTS`] times
//! with a doubling pause. Logs name a URL only as `scheme://host:port`: the path, query and
//! userinfo of a webhook URL usually hold its secret.
use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::Full;
use hyper::{Request, body::Bytes};
use tokio::sync::Notify;

use super::http::{self, HttpError, Tls};
use super::metrics::IntegrityMetrics;
use crate::policy::NotifyUrl;

/// Tries per notification and URL.
pub const ATTEMPTS: u32 = 5;
/// The first pause between tries (then 2×, 4×, ...).
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Connect + TLS + request + answer, per try.
pub const TIMEOUT: Duration = Duration::from_secs(10);

struct Queue {
    items: Mutex<VecDeque<Arc<String>>>,
    wake: Notify,
}

/// The delivery workers (one per URL). Dropping it stops them.
pub struct Notifier {
    queues: Vec<Arc<Queue>>,
    capacity: usize,
    metrics: Arc<IntegrityMetrics>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for w in &self.workers {
            w.abort();
        }
    }
}

impl Notifier {
    pub fn start(urls: &[NotifyUrl], capacity: usize, metrics: Arc<IntegrityMetrics>) -> Self {
        let mut queues = Vec::new();
        let mut workers = Vec::new();
        for url in urls {
            let q = Arc::new(Queue {
                items: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
            });
            queues.push(q.clone());
            workers.push(tokio::spawn(worker(url.clone(), q, metrics.clone())));
        }
        Self {
            queues,
            capacity: capacity.max(1),
            metrics,
            workers,
        }
    }

    /// Queues `body` for every URL.
    pub fn send(&self, body: &str) {
        let body = Arc::new(body.to_owned());
        for q in &self.queues {
            if let Ok(mut items) = q.items.lock() {
                if items.len() >= self.capacity {
                    items.pop_front();
                    self.metrics.notification("dropped");
                    tracing::warn!("notify queue full: the oldest notification was dropped");
                }
                items.push_back(body.clone());
            }
            q.wake.notify_one();
        }
    }
}

async fn worker(url: NotifyUrl, queue: Arc<Queue>, metrics: Arc<IntegrityMetrics>) {
    let shown = url.redacted();
    loop {
        let next = queue.items.lock().ok().and_then(|mut q| q.pop_front());
        let Some(body) = next else {
            queue.wake.notified().await;
            continue;
        };
        let mut pause = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            match post(&url, &body).await {
                Ok(()) => {
                    metrics.notification("sent");
                    tracing::debug!(url = %shown, attempt, "finding delivered");
                    break;
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(url = %shown, attempt, error = %e, "notify failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    metrics.notification("failed");
                    tracing::error!(url = %shown, attempts = ATTEMPTS, error = %e, "notify failed; giving up on this notification");
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("cannot resolve the host: {0}")]
    Resolve(#[source] std::io::Error),
    #[error("the host has no address")]
    NoAddress,
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("answered HTTP {0}")]
    Status(u16),
}

async fn post(url: &NotifyUrl, body: &str) -> Result<(), PostError> {
    let full = url.secret_full();
    let host = full.host_str().unwrap_or_default().to_owned();
    let port = full.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match full.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::from((ip, port))],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::from((ip, port))],
        _ => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(PostError::Resolve)?
            .collect(),
    };
    let mut last = PostError::NoAddress;
    for addr in addrs {
        let stream = match tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(addr)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                last = HttpError::Connect(e).into();
                continue;
            }
            Err(_) => {
                last = HttpError::Timeout(TIMEOUT).into();
                continue;
            }
        };
        let tls = match full.scheme() {
            "https" => Some(Tls::new(None, &host)?),
            _ => None,
        };
        let mut target = full.path().to_owned();
        if let Some(q) = full.query() {
            target.push('?');
            target.push_str(q);
        }
        let host_header = match full.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let mut request = Request::post(target)
            .header(hyper::header::HOST, host_header)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "enforcer-integrity-watchdog");
        if !full.username().is_empty() {
            use base64::Engine as _;
            let creds = format!("{}:{}", full.username(), full.password().unwrap_or(""));
            let token = base64::engine::general_purpose::STANDARD.encode(creds);
            request = request.header(hyper::header::AUTHORIZATION, format!("Basic {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(HttpError::from)?;
        let (status, _) = http::send(stream, tls.as_ref(), request, TIMEOUT).await?;
        return if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(PostError::Status(status))
        };
    }
    Err(last)
}
