//! The web port's connections put back together: the kernel queues every accepted connection's
//! opening, each segment's payload (in chunks, with TCP sequence numbers) and the peer's FIN or
//! RST; here the bytes are reassembled in sequence order and the HTTP/1.1 requests parsed out
//! of the stream — whatever the segmentation, however many requests share a connection
//! (keep-alive, pipelining), with `Content-Length` and `chunked` bodies skipped. Where the
//! stream cannot be followed (bytes the kernel did not queue inside a request head, a gap, a
//! malformed request line) an [`Out::Unparsed`] says so instead of staying silent.
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::{Duration, Instant},
};

use enforcer_common::api::{HEAD_LEN, STREAM_CHUNKS};

/// A request head longer than this is not followed (Go's default limit is 1 MiB + 4 KiB;
/// Alertmanager's requests are far shorter): an unparsed line says so.
const MAX_HEAD: usize = 16 * 1024;
/// Out-of-order pieces held per connection before it is given up as unparsed.
const MAX_PENDING: usize = 64;
/// Connections followed at once; more are reported unparsed (not followed). With the two
/// bounds above, at most ~25 MiB however many connections a peer opens.
const MAX_CONNS: usize = 1024;
/// A connection with no event for this long is closed as `idle`.
pub const IDLE: Duration = Duration::from_secs(600);

/// One connection: (socket cgroup, peer, local end).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ConnKey {
    pub cgroup: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// What following the streams found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    Opened {
        key: ConnKey,
        /// The listening target's process.
        pid: Option<u32>,
    },
    Request {
        key: ConnKey,
        method: String,
        /// Without the query string (and without scheme and host for an absolute URI).
        path: String,
        /// Not GET, HEAD or OPTIONS, or any method on `/-/reload`.
        write: bool,
    },
    Unparsed {
        key: ConnKey,
        reason: &'static str,
        /// Bytes of the stream before the point that could not be followed.
        at_byte: u64,
    },
    Closed {
        key: ConnKey,
        pid: Option<u32>,
        /// `fin`, `rst` or `idle`.
        how: &'static str,
        bytes: u64,
        requests: u32,
    },
}

/// One piece of a stream, at a sequence number: bytes, or a run the kernel did not queue.
#[derive(Clone, Debug)]
enum Piece {
    Bytes(Vec<u8>),
    Hole(u32),
}

impl Piece {
    fn len(&self) -> u32 {
        match self {
            Piece::Bytes(b) => b.len() as u32,
            Piece::Hole(n) => *n,
        }
    }
}

/// Where the HTTP parser is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Parse {
    Head(Vec<u8>),
    Body(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkEnd(u8),
    Trailer(Vec<u8>),
    /// Given up (a line said why).
    Lost,
}

struct Conn {
    pid: Option<u32>,
    /// The next sequence number expected; `None` until the first byte (no opening seen).
    next: Option<u32>,
    pending: BTreeMap<u32, Piece>,
    parse: Parse,
    bytes: u64,
    requests: u32,
    seen: Instant,
}

impl Conn {
    fn new(pid: Option<u32>, next: Option<u32>, now: Instant) -> Self {
        Self {
            pid,
            next,
            pending: BTreeMap::new(),
            parse: Parse::Head(Vec::new()),
            bytes: 0,
            requests: 0,
            seen: now,
        }
    }
}

/// Every followed connection.
#[derive(Default)]
pub struct Streams {
    conns: HashMap<ConnKey, Conn>,
}

impl Streams {
    /// An accepted connection; `isn` is its SYN's sequence number.
    pub fn open(&mut self, key: ConnKey, pid: Option<u32>, isn: u32, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        let first = isn.wrapping_add(1);
        if let Some(old) = self.conns.get(&key) {
            if old.bytes == 0 && old.next == Some(first) {
                // The SYN sent again (its answer was slow): the same connection.
                return out;
            }
            let old = self.conns.remove(&key).expect("present above");
            out.push(closed(key, &old, "rst"));
        }
        if self.conns.len() >= MAX_CONNS {
            out.push(Out::Unparsed {
                key,
                reason: "too many connections followed at once",
                at_byte: 0,
            });
            return out;
        }
        self.conns.insert(key, Conn::new(pid, Some(first), now));
        out.push(Out::Opened { key, pid });
        out
    }

    /// One chunk of a segment: `data` at sequence `seq`, chunk `chunk` of a segment whose
    /// payload is `payload_len` bytes (its tail after the last queued chunk is a hole).
    pub fn data(
        &mut self,
        key: ConnKey,
        seq: u32,
        chunk: u8,
        payload_len: u32,
        data: &[u8],
        now: Instant,
    ) -> Vec<Out> {
        let mut out = Vec::new();
        if !self.conns.contains_key(&key) {
            if self.conns.len() >= MAX_CONNS {
                if chunk == 0 {
                    out.push(Out::Unparsed {
                        key,
                        reason: "too many connections followed at once",
                        at_byte: 0,
                    });
                }
                return out;
            }
            // Opened before the guard (or its opening was lost): followed from a segment that
            // starts a request, unparsed otherwise.
            self.conns.insert(key, Conn::new(None, None, now));
        }
        let conn = self.conns.get_mut(&key).expect("inserted above");
        conn.seen = now;
        if conn.next.is_none() {
            if chunk == 0 && starts_like_request(data) {
                conn.next = Some(seq);
            } else if conn.parse != Parse::Lost {
                conn.parse = Parse::Lost;
                out.push(Out::Unparsed {
                    key,
                    reason: "joined mid-stream (its opening was not seen)",
                    at_byte: 0,
                });
                return out;
            } else {
                return out;
            }
        }
        conn.pending.insert(seq, Piece::Bytes(data.to_vec()));
        let last_queued = (usize::from(chunk) + 1) * HEAD_LEN;
        let covered = last_queued.min(payload_len as usize);
        let is_last_chunk =
            usize::from(chunk) + 1 == STREAM_CHUNKS || last_queued >= payload_len as usize;
        if is_last_chunk && (payload_len as usize) > covered {
            let hole_at = seq.wrapping_add(data.len() as u32);
            conn.pending
                .insert(hole_at, Piece::Hole(payload_len - covered as u32));
        }
        advance(key, conn, &mut out);
        out
    }

    /// The peer's FIN or RST at sequence `seq`: what is in order is parsed, then the
    /// connection is closed.
    pub fn close(&mut self, key: ConnKey, rst: bool, seq: u32) -> Vec<Out> {
        let mut out = Vec::new();
        let Some(mut conn) = self.conns.remove(&key) else {
            return out;
        };
        advance(key, &mut conn, &mut out);
        let waiting = conn.next.is_some_and(|n| n != seq) || !conn.pending.is_empty();
        if waiting && conn.parse != Parse::Lost {
            out.push(Out::Unparsed {
                key,
                reason: "stream bytes missing at close (events lost)",
                at_byte: conn.bytes,
            });
        } else if let Parse::Head(buf) = &conn.parse
            && buf.iter().any(|b| !b.is_ascii_whitespace())
        {
            out.push(Out::Unparsed {
                key,
                reason: "incomplete request at close",
                at_byte: conn.bytes,
            });
        }
        out.push(closed(key, &conn, if rst { "rst" } else { "fin" }));
        out
    }

    /// Closes the connections with no event since `now - IDLE`.
    pub fn expire(&mut self, now: Instant) -> Vec<Out> {
        let idle: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.seen) >= IDLE)
            .map(|(k, _)| *k)
            .collect();
        idle.into_iter()
            .filter_map(|k| self.conns.remove(&k).map(|c| closed(k, &c, "idle")))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

fn closed(key: ConnKey, c: &Conn, how: &'static str) -> Out {
    Out::Closed {
        key,
        pid: c.pid,
        how,
        bytes: c.bytes,
        requests: c.requests,
    }
}

/// A method token (upper-case letters) and a space.
fn starts_like_request(data: &[u8]) -> bool {
    let n = data.iter().take_while(|b| b.is_ascii_uppercase()).count();
    n > 0 && data.get(n) == Some(&b' ')
}

/// Feeds every piece that is in order to the parser.
fn advance(key: ConnKey, conn: &mut Conn, out: &mut Vec<Out>) {
    let Some(mut next) = conn.next else {
        return;
    };
    // A piece that starts at or before `next` (a retransmission overlaps: its new part only).
    while let Some(seq) = conn
        .pending
        .keys()
        .copied()
        .find(|s| s.wrapping_sub(next) as i32 <= 0)
    {
        let piece = conn.pending.remove(&seq).expect("found above");
        let skip = next.wrapping_sub(seq);
        if skip >= piece.len() {
            continue;
        }
        let n = piece.len() - skip;
        match piece {
            Piece::Bytes(b) => feed(key, conn, &b[skip as usize..], out),
            Piece::Hole(_) => hole(key, conn, u64::from(n), out),
        }
        next = next.wrapping_add(n);
    }
    conn.next = Some(next);
    if conn.pending.len() > MAX_PENDING && conn.parse != Parse::Lost {
        conn.parse = Parse::Lost;
        conn.pending.clear();
        out.push(Out::Unparsed {
            key,
            reason: "stream gap (events lost or out of order)",
            at_byte: conn.bytes,
        });
    }
}

/// A run of `n` bytes the kernel did not queue: fine inside a body, unparsed elsewhere.
fn hole(key: ConnKey, conn: &mut Conn, n: u64, out: &mut Vec<Out>) {
    let at = conn.bytes;
    conn.bytes += n;
    match &mut conn.parse {
        Parse::Body(left) | Parse::ChunkData(left) if *left >= n => {
            *left -= n;
            if *left == 0 {
                conn.parse = match conn.parse {
                    Parse::Body(_) => Parse::Head(Vec::new()),
                    _ => Parse::ChunkEnd(0),
                };
            }
        }
        Parse::Lost => {}
        _ => {
            conn.parse = Parse::Lost;
            out.push(Out::Unparsed {
                key,
                reason: "request bytes not captured (a segment longer than the kernel queues)",
                at_byte: at,
            });
        }
    }
}

/// Parses `bytes` (the next ones of the stream).
fn feed(key: ConnKey, conn: &mut Conn, mut bytes: &[u8], out: &mut Vec<Out>) {
    while !bytes.is_empty() {
        let at = conn.bytes;
        let used = step(key, conn, bytes, out);
        conn.bytes = at + used as u64;
        bytes = &bytes[used..];
    }
}

/// One step of the parser over the front of `bytes`; returns how many it used (at least one
/// unless `bytes` is empty).
fn step(key: ConnKey, conn: &mut Conn, bytes: &[u8], out: &mut Vec<Out>) -> usize {
    let lost = |conn: &mut Conn, out: &mut Vec<Out>, reason| {
        conn.parse = Parse::Lost;
        out.push(Out::Unparsed {
            key,
            reason,
            at_byte: conn.bytes,
        });
        bytes.len()
    };
    match &mut conn.parse {
        Parse::Lost => bytes.len(),
        Parse::Body(left) | Parse::ChunkData(left) => {
            let n = (*left).min(bytes.len() as u64);
            *left -= n;
            if *left == 0 {
                conn.parse = match conn.parse {
                    Parse::Body(_) => Parse::Head(Vec::new()),
                    _ => Parse::ChunkEnd(0),
                };
            }
            n as usize
        }
        Parse::ChunkEnd(seen) => {
            // The CRLF after a chunk's data.
            let want = if *seen == 0 { b'\r' } else { b'\n' };
            if bytes[0] != want {
                return lost(conn, out, "malformed chunked body");
            }
            *seen += 1;
            if *seen == 2 {
                conn.parse = Parse::ChunkSize(Vec::new());
            }
            1
        }
        Parse::ChunkSize(line) | Parse::Trailer(line) => {
            let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
                line.extend_from_slice(bytes);
                if line.len() > MAX_HEAD {
                    return lost(conn, out, "malformed chunked body");
                }
                return bytes.len();
            };
            line.extend_from_slice(&bytes[..nl]);
            let text = String::from_utf8_lossy(line)
                .trim_end_matches('\r')
                .to_owned();
            let trailer = matches!(conn.parse, Parse::Trailer(_));
            conn.parse = if trailer {
                if text.is_empty() {
                    Parse::Head(Vec::new())
                } else {
                    Parse::Trailer(Vec::new())
                }
            } else {
                let size = text.split(';').next().unwrap_or("").trim();
                match u64::from_str_radix(size, 16) {
                    Ok(0) => Parse::Trailer(Vec::new()),
                    Ok(n) => Parse::ChunkData(n),
                    Err(_) => return lost(conn, out, "malformed chunked body"),
                }
            };
            nl + 1
        }
        Parse::Head(buf) => {
            // Blank lines before a request line are skipped (as Go's server reads them).
            if buf.is_empty() && (bytes[0] == b'\r' || bytes[0] == b'\n') {
                return 1;
            }
            // A TLS handshake record (`--web.config.file`): nothing to parse, said once.
            if conn.bytes == 0 && buf.is_empty() && bytes[0] == 0x16 {
                return lost(conn, out, "TLS stream: its requests are encrypted");
            }
            let before = buf.len();
            buf.extend_from_slice(bytes);
            let Some(end) = head_end(buf) else {
                if buf.len() > MAX_HEAD {
                    return lost(conn, out, "request head too long");
                }
                return bytes.len();
            };
            let head = std::mem::take(buf);
            let used = end - before;
            match parse_head(&head[..end]) {
                Some(h) => {
                    conn.requests += 1;
                    out.push(Out::Request {
                        key,
                        write: is_write(&h.method, &h.path),
                        method: h.method,
                        path: h.path,
                    });
                    conn.parse = match h.body {
                        Body::None => Parse::Head(Vec::new()),
                        Body::Length(n) => Parse::Body(n),
                        Body::Chunked => Parse::ChunkSize(Vec::new()),
                    };
                    used
                }
                None => lost(conn, out, "malformed request head"),
            }
        }
    }
}

/// The end of a request head (after its blank line) in `buf`.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

enum Body {
    None,
    Length(u64),
    Chunked,
}

struct Head {
    method: String,
    path: String,
    body: Body,
}

/// The request line and the headers that frame the body.
fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_graphic())
        || !version.starts_with("HTTP/1.")
    {
        return None;
    }
    let mut body = Body::None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            body = Body::Chunked;
        } else if name.eq_ignore_ascii_case("content-length") && !matches!(body, Body::Chunked) {
            body = Body::Length(value.parse().ok()?);
        }
    }
    Some(Head {
        method: method.to_owned(),
        path: path_of(target),
        body,
    })
}

/// The path of a request target: an absolute URI's scheme and host dropped, query and
/// fragment cut.
fn path_of(target: &str) -> String {
    let rest = match target.find("://") {
        Some(i) => {
            let after = &target[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        None => target,
    };
    rest.split(['?', '#']).next().unwrap_or("").to_owned()
}

/// Whether a request changes state: anything but GET, HEAD and OPTIONS, and any method on
/// `/-/reload` (which Alertmanager answers to every method).
fn is_write(method: &str, path: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "OPTIONS")
        || path.trim_end_matches('/').ends_with("/-/reload")
}

#[cfg(test)]
#[path = "api_stream_tests.rs"]
mod tests;
