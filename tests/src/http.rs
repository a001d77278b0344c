//! HTTP on loopback or inside a test namespace: a one-shot GET client and a recording sink.
use std::{
    io::{BufRead, BufReader, Read as _, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use crate::Background;

/// `GET http://{addr}{path}` with `Connection: close`, the whole request in one `write_all`;
/// reads (5 s timeout) until the server closes and returns the whole response.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    Ok(response)
}

/// The status code (0 when there is none) and the body of an HTTP response.
pub fn status_and_body(response: &str) -> (u16, &str) {
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body)
}

/// One request an [`HttpSink`] received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: String,
}

/// An HTTP server on a thread, on a listener the caller bound (inside a [`NetNs`] with
/// [`NetNs::run`]): reads each request (its body by `Content-Length`), records it, answers 200
/// with an empty body and closes. Stopped and joined on drop.
pub struct HttpSink {
    received: Arc<Mutex<Vec<Request>>>,
    _thread: Background,
}

impl HttpSink {
    pub fn start(listener: TcpListener) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let thread = Background::spawn(move |stop| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Ok(request) = Self::serve(stream) {
                            log.lock().expect("sink").push(request);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self {
            received,
            _thread: thread,
        })
    }

    fn serve(stream: TcpStream) -> std::io::Result<Request> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let mut stream = stream;
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        let mut words = request_line.split_whitespace();
        Ok(Request {
            method: words.next().unwrap_or_default().to_owned(),
            path: words.next().unwrap_or_default().to_owned(),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Request> {
        self.received.lock().expect("sink").clone()
    }
}
