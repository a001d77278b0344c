//! The HTTP/1.1 server of the metrics endpoint, on hyper: request parsing, keep-alive and
//! pipelining, HEAD (headers only) and absolute-form URIs are hyper's; this file adds what an
//! endpoint on an attacked node needs:
//!
//! - a connection cap ([`MAX_CONNECTIONS`]): a connection beyond it is closed at once, so idle
//!   clients cannot hold every file descriptor;
//! - limits on the request head ([`MAX_HEADERS`], [`MAX_HEAD_BYTES`]), the time to send it
//!   ([`HEAD_TIMEOUT`]) and a connection's life ([`CONNECTION_LIFETIME`]);
//! - survival of accept errors: out of file descriptors (EMFILE/ENFILE) or memory, the loop
//!   backs off and accepts again, so `/healthz` answers as soon as the pressure ends;
//! - `GET` and `HEAD` only: any other method gets 405 with `Allow`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Metrics;

/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// Header lines in one request.
pub const MAX_HEADERS: usize = 64;
/// Bytes of one request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Time a client has to send a request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long, keep-alive or not.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Pause after an accept error that a retry cannot fix at once (no descriptors, no memory).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Binds the endpoint's listener (errors here are the caller's: a bad or busy address).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the endpoints on `addr` until the task is dropped. Only binding can fail.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "metrics endpoint listening");
    serve_on(listener, metrics).await;
    Ok(())
}

/// Serves the endpoints on `listener`, forever.
pub async fn serve_on(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Rate-limited: one line per 10 s of pressure, not one per failed accept.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed; retrying");
                    last_warning = Some(tokio::time::Instant::now());
                }
                if needs_backoff(&e) {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // At the cap: the descriptor is freed at once (dropping closes it).
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let response = respond(&metrics, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_headers(MAX_HEADERS)
                .max_buf_size(MAX_HEAD_BYTES)
                .pipeline_flush(true);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            // Errors are the client's (reset, malformed request, timeout): nothing to report.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}

/// Accept errors that last until descriptors or memory are freed.
fn needs_backoff(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET and HEAD\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    // hyper gives the path of an absolute-form URI (`GET http://host/metrics`) too.
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" => reply(StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" if metrics.ready.load(Ordering::Relaxed) => {
            reply(StatusCode::OK, TEXT, "ready\n".into())
        }
        "/readyz" => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready\n".into()),
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests;
