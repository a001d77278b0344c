use std::{net::IpAddr, sync::Arc};

use enforcer_common::{
    DenyEvent, EVENT_VERSION, EventHeader, event_kind,
    fqdn::{EVENT_LEARNED, FqdnEntry, LEARNED_EVENT_VERSION, LearnedAnswer, LearnedEvent, status},
    hook, rule_id,
};

use super::{
    AddressNames, DecodeError, DenyView, LostView, RuleBook, decode, learned::LearnedView,
};
use crate::{fqdn::names::name_key, kernel::comm_key, policy::parse_policy};

fn bytes<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: `v` is a live, initialised `T` of plain integers (explicit padding fields), so
    // its size_of::<T>() bytes are readable.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

fn deny_event() -> DenyEvent {
    let mut dst_addr = [0u8; 16];
    dst_addr[..4].copy_from_slice(&[169, 254, 169, 254]);
    DenyEvent {
        header: EventHeader {
            kind: event_kind::DENIED,
            version: EVENT_VERSION,
            len: std::mem::size_of::<DenyEvent>() as u32,
            ts_ns: 1,
            cgroup_id: 8123,
        },
        tgid: 4242,
        tid: 4243,
        uid: 1,
        gid: 2,
        rule_id: 0,
        generation: 1,
        dst_port: 80,
        hook: hook::CONNECT4,
        protocol: 6,
        family: libc::AF_INET as u16,
        _pad: 0,
        dst_addr,
        comm: comm_key("alertmanager"),
    }
}

#[test]
fn decode_checks_length_version_kind_and_codes() {
    let ev = deny_event();
    let ok = bytes(&ev);
    assert_eq!(decode::<DenyEvent>(&ok).unwrap().tgid, 4242);
    let need = std::mem::size_of::<DenyEvent>();
    assert_eq!(
        decode::<DenyEvent>(&ok[..need - 1]).err(),
        Some(DecodeError::Short {
            len: need - 1,
            need
        })
    );
    let with = |f: &dyn Fn(&mut DenyEvent)| {
        let mut e = ev;
        f(&mut e);
        decode::<DenyEvent>(&bytes(&e)).err()
    };
    assert_eq!(
        with(&|e| e.header.version = EVENT_VERSION + 1),
        Some(DecodeError::Version {
            found: EVENT_VERSION + 1,
            expected: EVENT_VERSION
        })
    );
    assert_eq!(
        with(&|e| e.header.kind = EVENT_LEARNED),
        Some(DecodeError::Kind {
            kind: EVENT_LEARNED
        })
    );
    assert_eq!(
        with(&|e| e.header.len = 8),
        Some(DecodeError::Length {
            kind: event_kind::DENIED,
            len: 8,
            need
        })
    );
    assert_eq!(with(&|e| e.hook = 9), Some(DecodeError::Hook { hook: 9 }));
    assert!(with(&|e| e.header.kind = event_kind::WOULD_DENY).is_none());
    // A deny record is not a learned record.
    assert!(matches!(
        decode::<LearnedEvent>(&ok),
        Err(DecodeError::Short { .. } | DecodeError::Version { .. } | DecodeError::Kind { .. })
    ));
}

struct Names;

impl AddressNames for Names {
    fn name_of(&self, ip: IpAddr) -> Option<String> {
        (ip == IpAddr::from([169, 254, 169, 254])).then(|| "metadata.example".to_owned())
    }
}

#[test]
fn a_deny_line_has_every_field_once_in_order() {
    let policy = parse_policy(
        "mode: enforce\ndefault: allow\nblock:\n  - cidr: 169.254.0.0/16\n",
        "p.yaml",
    )
    .unwrap();
    let mut rules = RuleBook::default();
    rules.insert(1, Arc::new(policy));
    let view = DenyView::new(&deny_event(), &rules, |id, comm| format!("{comm}@{id}"));
    let json = serde_json::to_string(&view).unwrap();
    assert_eq!(
        json,
        format!(
            r#"{{"event":"connect_denied","target":"alertmanager@8123","mode":"enforce","pid":4242,"tid":4243,"uid":1,"gid":2,"comm":"alertmanager","cgroup_id":8123,"hook":"connect4","family":"ipv4","protocol":"tcp","dst_ip":"169.254.169.254","decided_as":"169.254.169.254","dst_port":80,"rule":{},"rule_id":0,"generation":1,"count":1}}"#,
            serde_json::to_string(&rules.describe(1, 0)).unwrap()
        )
    );
    // With the FQDN agent's names, audit mode, the default rule, a mapped IPv6 address.
    rules.set_names(Arc::new(Names));
    let mut ev = deny_event();
    ev.header.kind = event_kind::WOULD_DENY;
    ev.rule_id = rule_id::DEFAULT;
    ev.family = libc::AF_INET6 as u16;
    ev.dst_addr = "::ffff:169.254.169.254"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let view = DenyView::new(&ev, &rules, |_, _| "scope".to_owned());
    let v: serde_json::Value = serde_json::to_value(&view).unwrap();
    assert_eq!(v["event"], "would_deny");
    assert_eq!(v["mode"], "audit");
    assert_eq!(v["family"], "ipv6");
    assert_eq!(v["dst_ip"], "::ffff:169.254.169.254");
    assert_eq!(v["decided_as"], "169.254.169.254");
    assert_eq!(v["rule"], "default deny");
    assert!(v.get("rule_id").is_none(), "{v}");
    assert_eq!(v["fqdn"], "metadata.example");
    assert_eq!(
        serde_json::to_string(&LostView::new(3, 7)).unwrap(),
        r#"{"event":"events_lost","lost":3,"lost_total":7}"#
    );
}

#[test]
fn learned_events_decode_names_and_both_families() {
    let mut answers = [LearnedAnswer::default(); enforcer_common::fqdn::MAX_LEARNED];
    answers[0] = LearnedAnswer {
        addr: [u32::from_ne_bytes([192, 0, 2, 7]), 0, 0, 0],
        ttl: 30,
        v4: 1,
        status: u32::from(status::INSERTED),
        _pad: 0,
        entry_expires_ns: 99,
        entry_rules: 0b10,
    };
    let v6: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
    let mut addr = [0u32; 4];
    for (w, chunk) in addr.iter_mut().zip(v6.octets().chunks_exact(4)) {
        *w = u32::from_ne_bytes(chunk.try_into().unwrap());
    }
    answers[1] = LearnedAnswer {
        addr,
        v4: 0,
        status: u32::from(status::MAP_FULL),
        ..answers[0]
    };
    let ev = LearnedEvent {
        header: EventHeader {
            kind: EVENT_LEARNED,
            version: LEARNED_EVENT_VERSION,
            len: std::mem::size_of::<LearnedEvent>() as u32,
            ts_ns: 0,
            cgroup_id: 0,
        },
        rules: 0b10,
        count: 2,
        _pad: 0,
        name: name_key("api.example.com").unwrap(),
        answers,
    };
    let view = LearnedView::new(&decode::<LearnedEvent>(&bytes(&ev)).unwrap());
    assert_eq!(view.name, "api.example.com");
    assert_eq!(view.rules, 0b10);
    assert_eq!(view.answers.len(), 2);
    assert_eq!(view.answers[0].ip, IpAddr::from([192, 0, 2, 7]));
    assert!(!view.answers[0].map_full);
    assert_eq!(
        view.answers[0].entry,
        FqdnEntry {
            expires_ns: 99,
            rules: 0b10
        }
    );
    assert_eq!(view.answers[1].ip, IpAddr::V6(v6));
    assert!(view.answers[1].map_full);
}

#[test]
fn superseded_policies_are_kept_only_for_a_short_while() {
    let p = |cidr: &str| {
        let yaml = format!("mode: enforce\ndefault: allow\nblock:\n  - cidr: {cidr}\n");
        Arc::new(parse_policy(&yaml, "p.yaml").unwrap())
    };
    let mut rules = RuleBook::default();
    rules.insert(1, p("10.0.0.0/8"));
    let flipped = std::time::Instant::now();
    rules.insert(2, p("192.168.0.0/16"));
    // Events queued before the flip still name generation 1's rule.
    rules.prune(flipped);
    assert_eq!(rules.generations(), [1, 2]);
    assert!(rules.describe(1, 0).contains("10.0.0.0/8"));
    // Later, only the running policy stays, however long it runs.
    rules.prune(flipped + RuleBook::RETAIN + std::time::Duration::from_millis(100));
    assert_eq!(rules.generations(), [2]);
    assert_eq!(rules.describe(1, 0), "rule #0 of policy generation 1");
    rules.prune(flipped + 1000 * RuleBook::RETAIN);
    assert!(rules.describe(2, 0).contains("192.168.0.0/16"));
}
