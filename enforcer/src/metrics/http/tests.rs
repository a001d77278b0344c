//! The endpoint over real loopback sockets, as a scraper, a probe and an attacker use it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::*;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// An endpoint on an ephemeral loopback port.
async fn start() -> SocketAddr {
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_on(listener, Arc::new(Metrics::new())));
    addr
}

/// Sends `request` bytes and reads until the server closes or `timeout` passes.
async fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

#[test]
fn methods_paths_head_and_absolute_form() {
    block_on(async {
        let addr = start().await;
        let r = exchange(addr, &get("/healthz")).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nok\n"), "{r}");
        let r = exchange(addr, &get("/metrics")).await.unwrap();
        assert!(r.contains("application/openmetrics-text"), "{r}");
        assert!(r.ends_with("# EOF\n"), "{r}");
        // HEAD: the headers of GET, no body.
        let r = exchange(
            addr,
            b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "a body after the head: {r}");
        // Other methods: 405 with Allow.
        for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
            let r = exchange(
                addr,
                format!("{method} /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            assert!(
                r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
                "{method}: {r}"
            );
            assert!(
                r.to_ascii_lowercase().contains("allow: get, head\r\n"),
                "{r}"
            );
        }
        // Absolute-form request target (what a proxy-style client sends).
        let r = exchange(addr, &get("http://127.0.0.1:9895/healthz"))
            .await
            .unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        let r = exchange(addr, &get("/nope")).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        let r = exchange(addr, &get("/readyz")).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
    });
}

#[test]
fn pipelined_requests_each_get_an_answer() {
    block_on(async {
        let addr = start().await;
        let mut batch = Vec::new();
        batch.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        batch.extend_from_slice(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
        batch.extend_from_slice(&get("/healthz"));
        let r = exchange(addr, &batch).await.unwrap();
        assert_eq!(r.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{r}");
        assert_eq!(r.matches("HTTP/1.1 503 ").count(), 1, "{r}");
    });
}

#[test]
fn header_limits() {
    block_on(async {
        let addr = start().await;
        let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
        for i in 0..MAX_HEADERS + 10 {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("Connection: close\r\n\r\n");
        let r = exchange(addr, many.as_bytes()).await.unwrap();
        assert!(!r.contains("200 OK"), "{r}");
        let huge = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES * 2)
        );
        let r = exchange(addr, huge.as_bytes()).await.unwrap_or_default();
        assert!(!r.contains("200 OK"), "{r}");
        // Still serving.
        let r = exchange(addr, &get("/healthz")).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    });
}

/// Issue 11 case 6: idle connections and an exhausted descriptor table used to end the server
/// for good. Now the cap closes connections beyond it, accept errors are retried, and
/// `/healthz` answers as soon as the attack stops.
#[test]
fn healthz_answers_again_after_idle_connections_and_emfile() {
    block_on(async {
        let addr = start().await;
        // Far more idle connections than the cap.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS * 3 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(idle);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = exchange(addr, &get("/healthz")).await.unwrap();
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n"),
            "after idle connections: {r}"
        );

        // Exhaust the descriptor table of this process (the test runs in a process of its
        // own under nextest; lowering a limit is always allowed).
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into `old`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        let low = libc::rlimit {
            rlim_cur: open + 40,
            rlim_max: old.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        let mut held = Vec::new();
        let mut refused = false;
        for _ in 0..200 {
            match TcpStream::connect(addr).await {
                Ok(s) => held.push(s),
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                    refused = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(refused, "the descriptor table never filled");
        // Let the server meet EMFILE on accept (the backlog holds the last connections).
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) }, 0);
        let start = tokio::time::Instant::now();
        let r = loop {
            let r = exchange(addr, &get("/healthz")).await.unwrap_or_default();
            if r.starts_with("HTTP/1.1 200 OK\r\n") || start.elapsed() > Duration::from_secs(3) {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "after EMFILE: {r}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    });
}
