use super::*;

fn m(name: &str, op: Op, value: &str) -> Matcher {
    Matcher::new(name, op, value).unwrap()
}

fn sel(text: &str) -> Vec<Matcher> {
    parse_selector(text).unwrap()
}

#[test]
fn regexes_are_anchored_as_alertmanager_anchors_them() {
    let r = m("job", Op::Regex, "node");
    assert!(r.matches("node"));
    assert!(!r.matches("node-exporter"), "anchored at the end");
    assert!(!r.matches("my-node"), "anchored at the start");
    // `^(?:a|b)$`: the alternation stays inside the group.
    let alt = m("job", Op::Regex, "a|b");
    assert!(alt.matches("a") && alt.matches("b") && !alt.matches("ab"));
    // Equality is literal, not a regex.
    let eq = m("job", Op::Equal, "a.b");
    assert!(eq.matches("a.b") && !eq.matches("axb"));
    assert!(m("job", Op::NotEqual, "a").matches(""));
    assert!(!m("job", Op::NotRegex, ".*").matches("x"));
}

#[test]
fn regexes_that_match_every_alert() {
    for value in [
        ".+", ".*", ".*.*", "(.+)", ".+|x", "(?s).+", "[^\\n]+", "(.*)+", "..*",
    ] {
        let matcher = m(ALERTNAME, Op::Regex, value);
        assert_eq!(
            matches_all_values(&matcher),
            Answer::Yes,
            "alertname=~{value:?} matches every alert name"
        );
        assert_eq!(matches_everything(&[matcher]), Answer::Yes);
    }
}

#[test]
fn regexes_that_do_not_match_every_alert() {
    for value in [
        ".", "..+", "[a-z]+", "\\w+", "A.*", ".*a.*", ".{1,100}", "\\S+", "[^x]+", "DiskFull",
    ] {
        assert_eq!(
            matches_all_values(&m(ALERTNAME, Op::Regex, value)),
            Answer::No,
            "alertname=~{value:?} leaves some alert names out"
        );
    }
}

#[test]
fn empty_values_stand_for_absent_labels() {
    // `.+` on a label alerts may lack leaves out the alerts without it.
    assert_eq!(
        matches_all_values(&m("severity", Op::Regex, ".+")),
        Answer::No
    );
    // `.*` matches the empty value, hence alerts without the label too.
    assert_eq!(
        matches_all_values(&m("severity", Op::Regex, ".*")),
        Answer::Yes
    );
    // alertname is never empty: `.+` is enough there.
    assert_eq!(
        matches_all_values(&m(ALERTNAME, Op::Regex, ".+")),
        Answer::Yes
    );
    // A silence of `foo=""` mutes the alerts without foo, not the others.
    assert_eq!(matches_all_values(&m("foo", Op::Equal, "")), Answer::No);
    assert!(m("foo", Op::Equal, "").matches(""));
}

#[test]
fn negative_matchers() {
    // alertname != "" is every alert: no alert has an empty name.
    assert_eq!(
        matches_all_values(&m(ALERTNAME, Op::NotEqual, "")),
        Answer::Yes
    );
    // But on another label it leaves out the alerts without that label.
    assert_eq!(matches_all_values(&m("team", Op::NotEqual, "")), Answer::No);
    // !~ of a regex that matches no alert name: everything.
    assert_eq!(
        matches_all_values(&m(ALERTNAME, Op::NotRegex, "^$")),
        Answer::Yes
    );
    assert_eq!(
        matches_all_values(&m(ALERTNAME, Op::NotRegex, "")),
        Answer::Yes
    );
    // !~ of a regex that matches something: not everything.
    assert_eq!(
        matches_all_values(&m(ALERTNAME, Op::NotRegex, "Watchdog")),
        Answer::No
    );
    assert_eq!(
        matches_all_values(&m(ALERTNAME, Op::NotEqual, "Watchdog")),
        Answer::No
    );
    // A line break never occurs in alert names: excluding one excludes nothing.
    assert_eq!(
        matches_all_values(&m(ALERTNAME, Op::NotRegex, "a\\nb")),
        Answer::Yes
    );
}

#[test]
fn every_matcher_of_a_silence_must_match_everything() {
    let broad = sel(r#"alertname=~".+", severity=~".*""#);
    assert_eq!(matches_everything(&broad), Answer::Yes);
    let narrowed = sel(r#"alertname=~".+", severity="warning""#);
    assert_eq!(matches_everything(&narrowed), Answer::No);
}

#[test]
fn overlap_with_protected_selectors() {
    let critical = sel(r#"severity="critical""#);
    let watchdog = sel(r#"alertname="Watchdog""#);
    assert_eq!(
        overlap(&sel(r#"severity="critical""#), &critical),
        Answer::Yes
    );
    assert_eq!(
        overlap(&sel(r#"severity=~"crit.*""#), &critical),
        Answer::Yes
    );
    assert_eq!(
        overlap(&sel(r#"severity=~"warning|info""#), &critical),
        Answer::No
    );
    assert_eq!(
        overlap(&sel(r#"severity!="critical""#), &critical),
        Answer::No
    );
    // A silence on another label may still mute a critical alert that carries it.
    assert_eq!(
        overlap(&sel(r#"alertname="DiskFull""#), &critical),
        Answer::Yes
    );
    assert_eq!(
        overlap(&sel(r#"alertname="DiskFull""#), &watchdog),
        Answer::No
    );
    assert_eq!(
        overlap(&sel(r#"alertname=~"Watch.+""#), &watchdog),
        Answer::Yes
    );
    // Regexes on both sides.
    assert_eq!(
        overlap(
            &sel(r#"severity=~"crit.*""#),
            &sel(r#"severity=~"critical|page""#)
        ),
        Answer::Yes
    );
    assert_eq!(
        overlap(&sel(r#"severity=~"a+""#), &sel(r#"severity=~"b+""#)),
        Answer::No
    );
}

#[test]
fn inclusion_decides_broadening() {
    let narrow = sel(r#"alertname="DiskFull", instance="db1""#);
    let wider = sel(r#"alertname="DiskFull""#);
    let everything = sel(r#"alertname=~".+""#);
    assert_eq!(includes(&wider, &narrow), Answer::Yes);
    assert_eq!(includes(&narrow, &wider), Answer::No);
    assert_eq!(includes(&narrow, &everything), Answer::No);
    assert_eq!(includes(&everything, &narrow), Answer::Yes);
    assert_eq!(includes(&narrow, &narrow), Answer::Yes);
    assert_eq!(
        includes(
            &sel(r#"alertname=~"Disk.*""#),
            &sel(r#"alertname=~"DiskFull|DiskSlow""#)
        ),
        Answer::Yes
    );
    assert_eq!(
        includes(
            &sel(r#"alertname=~"DiskFull|DiskSlow""#),
            &sel(r#"alertname=~"Disk.*""#)
        ),
        Answer::No
    );
    // Swapping one alert for another mutes something the old silence did not.
    assert_eq!(
        includes(&sel(r#"alertname="A""#), &sel(r#"alertname="B""#)),
        Answer::No
    );
}

#[test]
fn selectors_parse_and_reject_with_reasons() {
    let s = sel(r#"{severity=~"critical|page", team!="x\"y"}"#);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].op, Op::Regex);
    assert_eq!(s[1].value, "x\"y");
    assert_eq!(render(&s), r#"{severity=~"critical|page", team!="x\"y"}"#);
    for bad in [
        "severity",
        "severity=critical",
        "=\"x\"",
        "a=\"x\" b=\"y\"",
        "{a=\"x\"",
        "a=\"x",
    ] {
        assert!(
            matches!(parse_selector(bad), Err(MatcherError::Syntax { .. })),
            "{bad}"
        );
    }
    assert!(matches!(
        parse_selector(r#"a=~"(""#),
        Err(MatcherError::Regex { .. })
    ));
}
