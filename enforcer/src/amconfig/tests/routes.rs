//! Route-tree semantics against Alertmanager's own: every case is also routed by
//! `amtool config routes test --config.file=... label=value ...` (Debian's amtool 0.25), and
//! the receivers must be the same, in the same order.
use std::process::Command;

use super::super::timeintervals::Civil;
use super::*;

/// Configurations that exercise `match`, `match_re`, `matchers` (quoted, bare, braces,
/// negative), `continue`, inheritance of the receiver, nesting, and first-match order.
const TREES: [&str; 3] = [
    "route:
  receiver: default
  group_by: [alertname]
  routes:
    - matchers: ['severity=critical']
      receiver: pager
      continue: true
    - match: {team: db}
      receiver: db
      routes:
        - match_re: {severity: \"warn.*\"}
          receiver: db-warn
        - matchers: ['instance=~\"db[0-9]+\"', 'env!=\"prod\"']
    - matchers: ['{alertname=~\"Disk.*\", env!=\"dev\"}']
      receiver: disk
    - matchers: ['alertname!~\"Disk.*|Watchdog\"', 'severity=\"critical\"']
      receiver: other-critical
receivers:
  - name: default
  - name: pager
  - name: db
  - name: db-warn
  - name: disk
  - name: other-critical
",
    "route:
  receiver: a
  routes:
    - receiver: b
      continue: true
    - receiver: b
      continue: true
      matchers: [x=\"\"]
    - receiver: c
      routes:
        - matchers: [y=~\".*\"]
          receiver: d
          continue: true
        - matchers: [y=~\".+\"]
          receiver: e
receivers: [{name: a}, {name: b}, {name: c}, {name: d}, {name: e}]
",
    "route:
  receiver: root
  routes:
    - matchers: ['service=~\"foo|bar\"']
      routes:
        - matchers: [severity=\"critical\"]
          receiver: foo-pager
          continue: true
        - matchers: [severity=~\"critical|warning\"]
          receiver: foo-chat
    - matchers: ['severity=critical']
      receiver: pager
receivers: [{name: root}, {name: foo-pager}, {name: foo-chat}, {name: pager}]
",
];

const LABELS: [&[(&str, &str)]; 12] = [
    &[],
    &[("severity", "critical")],
    &[("severity", "critical"), ("team", "db")],
    &[("severity", "warning"), ("team", "db")],
    &[("team", "db"), ("instance", "db12"), ("env", "dev")],
    &[("team", "db"), ("instance", "db12"), ("env", "prod")],
    &[("alertname", "DiskFull")],
    &[
        ("alertname", "DiskFull"),
        ("env", "dev"),
        ("severity", "critical"),
    ],
    &[("alertname", "Watchdog"), ("severity", "critical")],
    &[("x", "1"), ("y", "z")],
    &[("service", "foo"), ("severity", "critical")],
    &[("service", "bar"), ("severity", "warning"), ("y", "")],
];

fn amtool(config: &str, labels: &[(&str, &str)]) -> String {
    if std::env::var_os("ENFORCER_SKIP_AMTOOL").is_some() {
        return String::new();
    }
    let dir = std::env::temp_dir().join(format!("enforcer-routes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{:x}.yml", fnv(config)));
    std::fs::write(&file, config).unwrap();
    let out = Command::new("amtool")
        .args(["config", "routes", "test"])
        .arg(format!("--config.file={}", file.display()))
        .args(labels.iter().map(|(k, v)| format!("{k}={v}")))
        .output()
        .expect(
            "amtool (Debian prometheus-alertmanager; ENFORCER_SKIP_AMTOOL=1 skips the comparison)",
        );
    assert!(
        out.status.success(),
        "amtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn ours(r: &Routing, labels: &[(&str, &str)]) -> String {
    let set: Labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let names: Vec<&str> = r
        .route(&set)
        .iter()
        .map(|&i| r.routes[i].receiver.as_str())
        .collect();
    names.join(",")
}

#[test]
fn routing_agrees_with_amtool() {
    let skip = std::env::var_os("ENFORCER_SKIP_AMTOOL").is_some();
    for tree in TREES {
        let r = parse_routing(tree, "am.yml").unwrap_or_else(|e| panic!("{e}"));
        for labels in LABELS {
            let got = ours(&r, labels);
            if !skip {
                assert_eq!(got, amtool(tree, labels), "{labels:?} in\n{tree}");
            }
        }
    }
    // Fixed expectations too, so the test means something when amtool is skipped.
    let r = parse_routing(TREES[0], "am.yml").unwrap();
    assert_eq!(ours(&r, LABELS[2]), "pager,db");
    assert_eq!(ours(&r, LABELS[4]), "db");
    assert_eq!(ours(&r, LABELS[8]), "pager");
    let r = parse_routing(TREES[1], "am.yml").unwrap();
    assert_eq!(ours(&r, LABELS[0]), "b,b,d");
    assert_eq!(ours(&r, LABELS[9]), "b,d,e");
}

#[test]
fn settings_are_inherited_except_time_intervals() {
    let text = "route:
  receiver: r
  group_wait: 10s
  repeat_interval: 2w
  routes:
    - matchers: [a=b]
      group_interval: 1h30m
      mute_time_intervals: [never]
      routes:
        - matchers: [c=d]
          receiver: s
time_intervals:
  - name: never
    time_intervals: [{years: ['1999']}]
receivers: [{name: r, webhook_configs: [{url: 'http://x/'}]}, {name: s}]
";
    let r = parse_routing(text, "am.yml").unwrap();
    let leaf = &r.routes[2];
    assert_eq!(leaf.path, "route.routes[0].routes[0]");
    assert_eq!(leaf.receiver, "s");
    assert_eq!(leaf.group_wait, Duration::from_secs(10));
    assert_eq!(leaf.group_interval, Duration::from_secs(5400));
    assert_eq!(leaf.repeat_interval, Duration::from_secs(14 * 86_400));
    assert!(leaf.mute_time_intervals.is_empty());
    assert_eq!(r.routes[1].mute_time_intervals, ["never"]);
    assert_eq!(r.integrations("r"), 1);
    assert_eq!(r.integrations("s"), 0);
    assert_eq!(r.integrations("undefined"), 0);
}

#[test]
fn classic_matcher_syntax() {
    let parsed = |t: &str| -> Vec<String> {
        parse_matchers(t)
            .into_iter()
            .map(|m| m.map(|m| m.to_string()).unwrap_or_else(|e| e.to_string()))
            .collect()
    };
    assert_eq!(parsed("severity=critical"), ["severity=\"critical\""]);
    assert_eq!(parsed("{a=\"b,c\", d!~e}"), ["a=\"b,c\"", "d!~\"e\""]);
    assert_eq!(parsed("a = \"x\\\"y\""), ["a=\"x\\\"y\""]);
    assert!(parsed("a=\"x")[0].contains("closing double quote"));
    assert!(parsed("=x")[0].contains("label name"));
}

#[test]
fn time_intervals_as_alertmanager_reads_them() {
    let text = "route: {receiver: r}
receivers: [{name: r}]
time_intervals:
  - name: weekends
    time_intervals:
      - weekdays: ['saturday', 'sunday']
  - name: office
    time_intervals:
      - times: [{start_time: '09:00', end_time: '17:00'}]
        weekdays: ['monday:friday']
        months: ['1:december']
        days_of_month: ['1:-1']
  - name: always
    time_intervals: [{}]
  - name: berlin
    time_intervals: [{location: Europe/Berlin, weekdays: [monday]}]
";
    let r = parse_routing(text, "am.yml").unwrap();
    // Tuesday 2026-12-08 10:30.
    let tue = Civil {
        year: 2026,
        month: 12,
        day: 8,
        month_days: 31,
        weekday: 2,
        minute: 630,
    };
    let sat = Civil {
        weekday: 6,
        day: 12,
        ..tue
    };
    let late = Civil {
        minute: 17 * 60,
        ..tue
    };
    assert!(!r.time_intervals["weekends"].contains(&tue));
    assert!(r.time_intervals["weekends"].contains(&sat));
    assert!(r.time_intervals["office"].contains(&tue));
    assert!(
        !r.time_intervals["office"].contains(&late),
        "end is exclusive"
    );
    assert!(!r.time_intervals["office"].contains(&sat));
    assert!(r.time_intervals["always"].contains(&late));
    assert!(r.time_intervals["berlin"].zone_assumed);
    assert!(!r.time_intervals["office"].zone_assumed);
}

#[test]
fn hostile_configurations_are_bounded() {
    // A route tree wider than the bound.
    let mut text = String::from("route:\n  receiver: r\n  routes:\n");
    for i in 0..=MAX_ROUTES {
        text.push_str(&format!("    - {{receiver: r, matchers: ['a=\"{i}\"']}}\n"));
    }
    text.push_str("receivers: [{name: r}]\n");
    let e = parse_routing(&text, "am.yml").unwrap_err().to_string();
    assert!(e.contains("number of routes"), "{e}");
    // More inhibit rules than are analysed.
    let mut text = String::from("route: {receiver: r}\nreceivers: [{name: r}]\ninhibit_rules:\n");
    for i in 0..=MAX_INHIBIT_RULES {
        text.push_str(&format!(
            "  - {{source_matchers: ['a=\"{i}\"'], target_matchers: [b=c]}}\n"
        ));
    }
    let e = parse_routing(&text, "am.yml").unwrap_err().to_string();
    assert!(e.contains("number of inhibit rules"), "{e}");
    // A deep tree is refused by the YAML depth bound, not by the stack.
    let mut deep = String::from("route:\n");
    for d in 0..200 {
        deep.push_str(&format!(
            "{}routes:\n{}- receiver: r\n",
            "  ".repeat(d + 1),
            "  ".repeat(d + 1)
        ));
    }
    assert!(parse_routing(&deep, "am.yml").is_err());
    // A regex too large to compile is a located error, not an allocation without bound.
    let bomb = "route:\n  receiver: r\n  routes:\n    - matchers: ['a=~\"(.{0,1000}){1000}\"']\nreceivers: [{name: r}]\n";
    let e = parse_routing(bomb, "am.yml").unwrap_err().to_string();
    assert!(e.starts_with("am.yml:4:"), "{e}");
    // Timers that are not durations.
    let e = parse_routing("route: {receiver: r, group_wait: 5 days}\n", "am.yml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("group_wait") && e.contains("not a duration"),
        "{e}"
    );
    // Anchors cannot multiply the tree beyond the YAML event budget.
    let mut laughs = String::from("a0: &a0 {receiver: r}\n");
    for i in 1..12 {
        laughs.push_str(&format!(
            "a{i}: &a{i} {{receiver: r, routes: [*a{p}, *a{p}, *a{p}, *a{p}]}}\n",
            p = i - 1
        ));
    }
    laughs.push_str("route: *a11\n");
    assert!(parse_routing(&laughs, "am.yml").is_err());
}

#[test]
fn durations_as_prometheus_writes_them() {
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("0"), Some(Duration::ZERO));
    assert_eq!(
        parse_duration("3y"),
        Some(Duration::from_secs(3 * 365 * 86_400))
    );
    for bad in ["", "5", "1x", "h", "99999999999999999999y"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}
