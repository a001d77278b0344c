use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use super::{Aggregator, DenyView};

/// A denial of `pid`'s thread `tid` to 169.254.169.254:`port`.
fn denial(pid: u32, tid: u32, port: u16) -> DenyView {
    let ip = IpAddr::from([169, 254, 169, 254]);
    DenyView {
        event: "connect_denied",
        target: "cgroup:/am".to_owned(),
        mode: "enforce",
        pid,
        tid,
        uid: 65_534,
        gid: 65_534,
        comm: "alertmanager".to_owned(),
        cgroup_id: 8123,
        hook: "connect4",
        family: "ipv4",
        protocol: "tcp".to_owned(),
        dst_ip: ip,
        decided_as: ip,
        dst_port: port,
        rule: "block preset:cloud-metadata 169.254.169.254/32".to_owned(),
        rule_id: Some(0),
        generation: 1,
        fqdn: None,
        count: 1,
        window_ms: None,
    }
}

/// Offers `view` at `at`, collecting the lines written.
fn offer(agg: &mut Aggregator, view: DenyView, at: Instant, lines: &mut Vec<DenyView>) {
    agg.offer(view, at, &mut |l| lines.push(l.clone()));
}

fn counted(lines: &[DenyView]) -> u64 {
    lines.iter().map(|l| l.count).sum()
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn a_flood_of_one_denial_is_its_first_line_and_one_line_at_the_window_end() {
    let t0 = Instant::now();
    let mut agg = Aggregator::new(Duration::from_secs(1), Aggregator::CAPACITY);
    let mut lines = Vec::new();
    for i in 0..10_000u32 {
        // Threads of one process: identical denials.
        offer(
            &mut agg,
            denial(42, 42 + i % 4, 80),
            t0 + MS * (i / 11),
            &mut lines,
        );
    }
    assert_eq!(lines.len(), 1, "only the first is written at once");
    assert_eq!(
        (lines[0].count, lines[0].window_ms, lines[0].tid),
        (1, None, 42)
    );
    // Nothing more until the window ends.
    agg.close_ended(t0 + 999 * MS, &mut |l| lines.push(l.clone()));
    assert_eq!(lines.len(), 1);
    agg.close_ended(t0 + 1000 * MS, &mut |l| lines.push(l.clone()));
    assert_eq!(lines.len(), 2, "{lines:?}");
    let end = &lines[1];
    assert_eq!((end.count, end.window_ms), (9_999, Some(1000)));
    // The closing line names the last call's thread; everything else is the first line's.
    assert_eq!(end.tid, 42 + 9_999 % 4);
    assert_eq!(
        DenyView {
            tid: 42,
            count: 1,
            window_ms: None,
            ..end.clone()
        },
        lines[0]
    );
    assert_eq!(counted(&lines), 10_000);
    assert_eq!(agg.open_windows(), 0);
    // The next identical denial opens a new window, written at once.
    offer(&mut agg, denial(42, 42, 80), t0 + 1001 * MS, &mut lines);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2].count, 1);
}

#[test]
fn a_different_denial_is_written_at_once_and_never_folded() {
    let t0 = Instant::now();
    let mut agg = Aggregator::new(Duration::from_secs(1), Aggregator::CAPACITY);
    let mut lines = Vec::new();
    for i in 0..100 {
        offer(&mut agg, denial(42, 42, 80), t0 + MS * i, &mut lines);
    }
    // Another port, another process, another rule generation, the audit mode: each its own
    // line, at once, in the middle of the flood.
    let mut others = vec![denial(42, 42, 443), denial(43, 43, 80)];
    others.push(DenyView {
        generation: 2,
        ..denial(42, 42, 80)
    });
    others.push(DenyView {
        event: "would_deny",
        mode: "audit",
        ..denial(42, 42, 80)
    });
    others.push(DenyView {
        dst_ip: IpAddr::from([10, 0, 0, 1]),
        ..denial(42, 42, 80)
    });
    for (i, other) in others.iter().enumerate() {
        let before = lines.len();
        offer(&mut agg, other.clone(), t0 + 100 * MS, &mut lines);
        assert_eq!(lines.len(), before + 1, "{i}: {other:?}");
        assert_eq!(&lines[before], other);
    }
    for i in 100..200 {
        offer(&mut agg, denial(42, 42, 80), t0 + MS * i, &mut lines);
    }
    assert_eq!(lines.len(), 1 + others.len());
    agg.close_ended(t0 + Duration::from_secs(1), &mut |l| lines.push(l.clone()));
    assert_eq!(lines.len(), 2 + others.len());
    assert_eq!(lines.last().unwrap().count, 199);
    assert_eq!(counted(&lines), 200 + others.len() as u64);
}

#[test]
fn a_full_table_closes_its_oldest_window_early_and_stays_bounded() {
    let t0 = Instant::now();
    let mut agg = Aggregator::new(Duration::from_secs(1), 3);
    let mut lines = Vec::new();
    // Three windows, each with folded denials.
    for port in [1, 2, 3] {
        for _ in 0..5 {
            offer(&mut agg, denial(42, 42, port), t0, &mut lines);
        }
    }
    assert_eq!(lines.len(), 3);
    // A fourth kind: port 1's window is closed now (its line first), then the new line.
    offer(&mut agg, denial(42, 42, 4), t0 + MS, &mut lines);
    assert_eq!(agg.open_windows(), 3);
    assert_eq!(agg.closed_early(), 1);
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!((lines[3].dst_port, lines[3].count), (1, 4));
    assert_eq!((lines[4].dst_port, lines[4].count), (4, 1));
    // An attacker choosing a new destination for every call: the table never grows past its
    // bound, each call is its own line, nothing is lost.
    for i in 0..100_000u32 {
        let port = 1000 + (i % 60_000) as u16;
        offer(
            &mut agg,
            denial(42 + i / 60_000, 42, port),
            t0 + 2 * MS,
            &mut lines,
        );
        assert!(agg.open_windows() <= 3);
    }
    agg.close_all(&mut |l| lines.push(l.clone()));
    assert_eq!(agg.open_windows(), 0);
    assert_eq!(counted(&lines), 15 + 1 + 100_000);
}

#[test]
fn windows_end_in_order_and_stopping_writes_what_is_open() {
    let t0 = Instant::now();
    let mut agg = Aggregator::new(Duration::from_millis(500), Aggregator::CAPACITY);
    let mut lines = Vec::new();
    offer(&mut agg, denial(1, 1, 80), t0, &mut lines);
    offer(&mut agg, denial(1, 1, 80), t0 + MS, &mut lines);
    offer(&mut agg, denial(2, 2, 80), t0 + 300 * MS, &mut lines);
    offer(&mut agg, denial(2, 2, 80), t0 + 301 * MS, &mut lines);
    offer(&mut agg, denial(3, 3, 80), t0 + 400 * MS, &mut lines);
    assert_eq!(lines.len(), 3);
    // A window that folded nothing ends without a line; the first ends at 500 ms.
    agg.close_ended(t0 + 600 * MS, &mut |l| lines.push(l.clone()));
    assert_eq!(lines.len(), 4);
    assert_eq!(
        (lines[3].pid, lines[3].count, lines[3].window_ms),
        (1, 1, Some(500))
    );
    agg.close_all(&mut |l| lines.push(l.clone()));
    assert_eq!(lines.len(), 5);
    assert_eq!((lines[4].pid, lines[4].count), (2, 1));
    assert_eq!(counted(&lines), 5);
    assert_eq!(agg.open_windows(), 0);
}

#[test]
fn a_zero_window_writes_every_denial() {
    let mut agg = Aggregator::new(Duration::ZERO, Aggregator::CAPACITY);
    let mut lines = Vec::new();
    for _ in 0..10 {
        offer(&mut agg, denial(42, 42, 80), Instant::now(), &mut lines);
    }
    assert_eq!(lines.len(), 10);
    assert!(lines.iter().all(|l| l.count == 1 && l.window_ms.is_none()));
    assert_eq!(agg.open_windows(), 0);
}
