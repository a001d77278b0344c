use super::*;

fn source() -> Source {
    Source {
        target: "cgroup:/t".into(),
        pid: 7,
        api: "http://127.0.0.1:9093/".into(),
    }
}

fn silence(id: &str, state: &str, matchers: &str, ends: &str, updated: &str) -> String {
    format!(
        r#"{{"id":"{id}","status":{{"state":"{state}"}},"updatedAt":"{updated}","comment":"c","createdBy":"eve",
            "startsAt":"2026-12-02T00:00:00.000Z","endsAt":"{ends}","matchers":[{matchers}]}}"#
    )
}

fn read(items: &[String]) -> Vec<Silence> {
    parse(format!("[{}]", items.join(",")).as_bytes()).unwrap()
}

const ANY_NAME: &str = r#"{"name":"alertname","value":".+","isRegex":true,"isEqual":true}"#;
const DISK: &str = r#"{"name":"alertname","value":"DiskFull","isRegex":false,"isEqual":true}"#;
const CRITICAL: &str = r#"{"name":"severity","value":"critical","isRegex":false}"#;

fn kinds(found: &[Finding]) -> Vec<FindingKind> {
    let mut k: Vec<_> = found.iter().map(|f| f.finding).collect();
    k.sort();
    k
}

#[test]
fn breadth_and_length_findings_hold_while_the_silence_lives() {
    let settings = IntegritySettings::default();
    let mut book = SilenceBook::default();
    let seen = book.observe(
        read(&[
            silence(
                "a",
                "active",
                ANY_NAME,
                "2026-12-04T00:00:00Z",
                "2026-12-02T00:00:00Z",
            ),
            silence(
                "b",
                "active",
                CRITICAL,
                "2026-12-02T01:00:00Z",
                "2026-12-02T00:00:00Z",
            ),
            silence(
                "c",
                "active",
                DISK,
                "2026-12-02T01:00:00Z",
                "2026-12-02T00:00:00Z",
            ),
            silence(
                "d",
                "expired",
                ANY_NAME,
                "2026-12-02T01:00:00Z",
                "2026-12-02T00:00:00Z",
            ),
        ]),
        &settings,
        &source(),
    );
    assert_eq!(
        kinds(&seen.states),
        [
            FindingKind::SilenceMatchesEverything,
            FindingKind::SilenceCoversProtected,
            FindingKind::SilenceTooLong
        ]
    );
    let everything = seen
        .states
        .iter()
        .find(|f| f.finding == FindingKind::SilenceMatchesEverything)
        .unwrap();
    assert_eq!(everything.details["silence_id"], "a");
    assert_eq!(everything.details["matchers"], r#"{alertname=~".+"}"#);
    assert_eq!(everything.details["created_by"], "eve");
    assert_eq!(everything.details["ends_at"], "2026-12-04T00:00:00.000Z");
    let covers = seen
        .states
        .iter()
        .find(|f| f.finding == FindingKind::SilenceCoversProtected)
        .unwrap();
    assert_eq!(covers.details["protected"][0], r#"severity="critical""#);
    assert_eq!(seen.breadth[&Breadth::Narrow], 1, "the DiskFull silence");
    assert!(seen.changes.is_empty(), "the first read is the baseline");
}

#[test]
fn an_edit_into_a_broad_silence_links_the_expired_id_to_its_successor() {
    let settings = IntegritySettings::default();
    let mut book = SilenceBook::default();
    let t0 = "2026-12-02T00:00:00Z";
    book.observe(
        read(&[silence("old", "active", DISK, "2026-12-02T01:00:00Z", t0)]),
        &settings,
        &source(),
    );
    let t1 = "2026-12-02T00:10:00.001Z";
    let seen = book.observe(
        read(&[
            silence("old", "expired", DISK, "2026-12-02T00:10:00.001Z", t1),
            silence("new", "active", ANY_NAME, "2026-12-02T01:00:00Z", t1),
        ]),
        &settings,
        &source(),
    );
    assert_eq!(kinds(&seen.changes), [FindingKind::SilenceBroadened]);
    let b = &seen.changes[0];
    assert_eq!(b.details["silence_id"], "new");
    assert_eq!(b.details["previous_id"], "old");
    assert_eq!(b.details["previous_matchers"], r#"{alertname="DiskFull"}"#);
    assert_eq!(b.details["breadth"], "everything");
}

#[test]
fn a_later_end_is_an_extension_in_place_or_by_replacement() {
    let settings = IntegritySettings::default();
    let mut book = SilenceBook::default();
    let t0 = "2026-12-02T00:00:00Z";
    book.observe(
        read(&[silence("s", "active", DISK, "2026-12-02T01:00:00Z", t0)]),
        &settings,
        &source(),
    );
    let seen = book.observe(
        read(&[silence("s", "active", DISK, "2026-12-02T05:00:00Z", t0)]),
        &settings,
        &source(),
    );
    assert_eq!(kinds(&seen.changes), [FindingKind::SilenceExtended]);
    assert_eq!(
        seen.changes[0].details["previous_ends_at"],
        "2026-12-02T01:00:00.000Z"
    );
    assert_eq!(seen.changes[0].details["extended_by_seconds"], 4 * 3600);
    // Narrowed and extended by replacement: an extension, not a broadening.
    let narrower = r#"{"name":"alertname","value":"DiskFull","isRegex":false},{"name":"instance","value":"db1","isRegex":false}"#;
    let t1 = "2026-12-02T00:20:00Z";
    let seen = book.observe(
        read(&[
            silence("s", "expired", DISK, t1, t1),
            silence("s2", "active", narrower, "2026-12-02T09:00:00Z", t1),
        ]),
        &settings,
        &source(),
    );
    assert_eq!(kinds(&seen.changes), [FindingKind::SilenceExtended]);
    assert_eq!(seen.changes[0].details["previous_id"], "s");
    // Nothing changed: nothing to report.
    let again = book.observe(
        read(&[silence(
            "s2",
            "active",
            narrower,
            "2026-12-02T09:00:00Z",
            t1,
        )]),
        &settings,
        &source(),
    );
    assert!(again.changes.is_empty());
    assert!(again.states.is_empty());
}

#[test]
fn an_unrelated_new_silence_is_not_a_successor() {
    let settings = IntegritySettings::default();
    let mut book = SilenceBook::default();
    book.observe(
        read(&[silence(
            "old",
            "active",
            DISK,
            "2026-12-02T01:00:00Z",
            "2026-12-02T00:00:00Z",
        )]),
        &settings,
        &source(),
    );
    // The old one expired on its own an hour before the new one was made.
    let seen = book.observe(
        read(&[
            silence(
                "old",
                "expired",
                DISK,
                "2026-12-02T01:00:00Z",
                "2026-12-02T00:00:00Z",
            ),
            silence(
                "new",
                "active",
                ANY_NAME,
                "2026-12-02T03:00:00Z",
                "2026-12-02T02:00:00Z",
            ),
        ]),
        &settings,
        &source(),
    );
    assert!(seen.changes.is_empty());
    assert_eq!(kinds(&seen.states), [FindingKind::SilenceMatchesEverything]);
}

#[test]
fn a_silence_covers_a_protected_selector_it_aims_at() {
    let sel = |t: &str| crate::matchers::parse_selector(t).unwrap();
    let critical = sel(r#"severity="critical""#);
    let watchdog = sel(r#"alertname="Watchdog""#);
    assert_eq!(
        covers(&sel(r#"severity="critical""#), &critical),
        Answer::Yes
    );
    assert_eq!(
        covers(&sel(r#"severity=~"crit.*|page""#), &critical),
        Answer::Yes
    );
    assert_eq!(
        covers(
            &sel(r#"alertname="DiskFull", severity="critical""#),
            &critical
        ),
        Answer::Yes
    );
    assert_eq!(
        covers(&sel(r#"alertname="DiskFull""#), &critical),
        Answer::No
    );
    assert_eq!(covers(&sel(r#"severity="warning""#), &critical), Answer::No);
    assert_eq!(
        covers(&sel(r#"alertname=~"Watch.*""#), &watchdog),
        Answer::Yes
    );
    assert_eq!(
        covers(&sel(r#"alertname!="DiskFull""#), &watchdog),
        Answer::Yes
    );
    assert_eq!(
        covers(&sel(r#"alertname="DiskFull""#), &watchdog),
        Answer::No
    );
}
