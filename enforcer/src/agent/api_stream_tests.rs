use std::time::Instant;

use super::*;

fn key() -> ConnKey {
    ConnKey {
        cgroup: 7,
        peer: "127.0.0.1:40000".parse().unwrap(),
        local: "127.0.0.1:9093".parse().unwrap(),
    }
}

const SILENCE: &str = r#"{"matchers":[{"name":"alertname","value":".+","isRegex":true}]}"#;

fn post(path: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: am\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{SILENCE}",
        SILENCE.len()
    )
}

/// Feeds `stream` as the kernel queues it: segments cut at `cuts`, each in chunks.
fn run(stream: &[u8], cuts: &[usize]) -> Vec<Out> {
    let mut s = Streams::default();
    let now = Instant::now();
    let isn = 0xffff_fff0u32; // wraps inside the stream
    let mut out = s.open(key(), Some(42), isn, now);
    let mut start = 0;
    let mut bounds = cuts.to_vec();
    bounds.push(stream.len());
    for end in bounds {
        let seg = &stream[start..end];
        let seq = isn.wrapping_add(1).wrapping_add(start as u32);
        for (i, chunk) in seg.chunks(HEAD_LEN).take(STREAM_CHUNKS).enumerate() {
            let at = seq.wrapping_add((i * HEAD_LEN) as u32);
            out.extend(s.data(key(), at, i as u8, seg.len() as u32, chunk, now));
        }
        start = end;
    }
    let fin = isn.wrapping_add(1).wrapping_add(stream.len() as u32);
    out.extend(s.close(key(), false, fin));
    assert!(s.is_empty());
    out
}

fn requests(out: &[Out]) -> Vec<(String, String, bool)> {
    out.iter()
        .filter_map(|o| match o {
            Out::Request {
                method,
                path,
                write,
                ..
            } => Some((method.clone(), path.clone(), *write)),
            _ => None,
        })
        .collect()
}

fn unparsed(out: &[Out]) -> Vec<&'static str> {
    out.iter()
        .filter_map(|o| match o {
            Out::Unparsed { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn pipelined_keep_alive_and_split_requests_each_have_their_line() {
    let two = format!(
        "{}{}",
        post("/api/v2/silences"),
        post("/api/v2/silences?x=1")
    );
    let want = vec![
        ("POST".to_owned(), "/api/v2/silences".to_owned(), true),
        ("POST".to_owned(), "/api/v2/silences".to_owned(), true),
    ];
    // Pipelined: both in one segment.
    let out = run(two.as_bytes(), &[]);
    assert_eq!(requests(&out), want, "{out:?}");
    assert!(unparsed(&out).is_empty());
    // Keep-alive: one segment each.
    let first = post("/api/v2/silences").len();
    assert_eq!(requests(&run(two.as_bytes(), &[first])), want);
    // Split everywhere: the method across two segments, every byte its own segment.
    assert_eq!(requests(&run(two.as_bytes(), &[2])), want);
    let every: Vec<usize> = (1..two.len()).collect();
    assert_eq!(requests(&run(two.as_bytes(), &every)), want);
    // Opened/closed with the byte count.
    let out = run(two.as_bytes(), &[5]);
    assert!(matches!(out[0], Out::Opened { pid: Some(42), .. }));
    assert!(
        matches!(out.last(), Some(Out::Closed { how: "fin", bytes, requests: 2, .. }) if *bytes == two.len() as u64),
        "{out:?}"
    );
}

#[test]
fn bodies_are_skipped_by_length_and_by_chunks() {
    let chunked = "POST /api/v2/alerts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n3;x=1\r\nabc\r\n0\r\nTrailer: t\r\n\r\nDELETE /api/v2/silence/1 HTTP/1.1\r\n\r\n\r\nGET /api/v2/status HTTP/1.1\r\n\r\nGET /-/reload HTTP/1.1\r\n\r\n";
    let out = run(chunked.as_bytes(), &[40, 41, 77]);
    let got: Vec<_> = requests(&out)
        .into_iter()
        .map(|(m, p, w)| format!("{m} {p} {w}"))
        .collect();
    assert_eq!(
        got,
        [
            "POST /api/v2/alerts true",
            "DELETE /api/v2/silence/1 true",
            "GET /api/v2/status false",
            "GET /-/reload true"
        ],
        "the GET inside the chunked body is body, not a request: {out:?}"
    );
    // A large body (longer than the kernel queues of one segment) is skipped by its length:
    // the request after it, in a later segment, is still seen.
    let big = "x".repeat(HEAD_LEN * STREAM_CHUNKS * 2);
    let stream = format!(
        "POST /api/v2/alerts HTTP/1.1\r\nContent-Length: {}\r\n\r\n{big}{}",
        big.len(),
        post("/api/v2/silences")
    );
    let cut = stream.len() - post("/api/v2/silences").len();
    let out = run(stream.as_bytes(), &[cut]);
    assert_eq!(requests(&out).len(), 2, "{out:?}");
    assert!(unparsed(&out).is_empty());
}

#[test]
fn what_cannot_be_followed_is_said() {
    // A request head behind bytes the kernel did not queue (same segment as a long body).
    let big = "x".repeat(HEAD_LEN * STREAM_CHUNKS);
    let stream = format!(
        "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{big}{}",
        big.len(),
        post("/api/v2/silences")
    );
    let out = run(stream.as_bytes(), &[]);
    assert_eq!(requests(&out).len(), 1, "{out:?}");
    assert_eq!(
        unparsed(&out),
        ["request bytes not captured (a segment longer than the kernel queues)"]
    );
    // A malformed request line.
    let out = run(b"POST/api/v2/silences\r\n\r\n", &[]);
    assert_eq!(unparsed(&out), ["malformed request head"]);
    // TLS.
    let out = run(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", &[]);
    assert_eq!(unparsed(&out), ["TLS stream: its requests are encrypted"]);
    // A request cut off by the close.
    let out = run(b"POST /api/v2/silences HTTP/1.1\r\nContent-Le", &[]);
    assert_eq!(unparsed(&out), ["incomplete request at close"]);
    // A stream whose opening was not seen and that does not start a request.
    let mut s = Streams::default();
    let now = Instant::now();
    let out = s.data(key(), 100, 0, 5, b"lo /x", now);
    assert_eq!(
        unparsed(&out),
        ["joined mid-stream (its opening was not seen)"]
    );
}

#[test]
fn out_of_order_and_retransmitted_segments_are_put_in_order() {
    let text = format!("{}{}", post("/api/v2/silences"), post("/api/v2/silence/2"));
    let bytes = text.as_bytes();
    let mut s = Streams::default();
    let now = Instant::now();
    let isn = 1000u32;
    let mut out = s.open(key(), None, isn, now);
    let seg = |from: usize, to: usize| (isn + 1 + from as u32, &bytes[from..to]);
    let (a, b, c) = (seg(0, 50), seg(50, 120), seg(120, bytes.len()));
    for (seq, data) in [c, a, a, b, (isn + 1 + 40, &bytes[40..60])] {
        let len = data.len() as u32;
        for (i, chunk) in data.chunks(HEAD_LEN).enumerate() {
            out.extend(s.data(key(), seq + (i * HEAD_LEN) as u32, i as u8, len, chunk, now));
        }
    }
    out.extend(s.close(key(), true, isn + 1 + bytes.len() as u32));
    let paths: Vec<_> = requests(&out).into_iter().map(|r| r.1).collect();
    assert_eq!(paths, ["/api/v2/silences", "/api/v2/silence/2"], "{out:?}");
    assert!(unparsed(&out).is_empty(), "{out:?}");
    assert!(matches!(out.last(), Some(Out::Closed { how: "rst", .. })));
}

#[test]
fn a_syn_sent_again_is_the_same_connection_and_a_new_one_closes_the_old() {
    let mut s = Streams::default();
    let now = Instant::now();
    assert_eq!(s.open(key(), Some(1), 500, now).len(), 1);
    assert!(
        s.open(key(), Some(1), 500, now).is_empty(),
        "retransmitted SYN"
    );
    let p = post("/api/v2/silences");
    let head = p.find("\r\n\r\n").unwrap() + 4;
    let out = s.data(key(), 501, 0, head as u32, &p.as_bytes()[..head], now);
    assert_eq!(requests(&out).len(), 1, "{out:?}");
    let out = s.open(key(), Some(1), 9000, now);
    assert!(
        matches!(out[0], Out::Closed { how: "rst", bytes, .. } if bytes == head as u64),
        "{out:?}"
    );
    assert!(matches!(out[1], Out::Opened { .. }));
    assert_eq!(s.len(), 1);
}
