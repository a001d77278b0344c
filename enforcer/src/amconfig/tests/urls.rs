//! Go's URL and address reading, host spellings, redaction.

use std::net::{IpAddr, Ipv4Addr};

use crate::amconfig::destination::{Destination, Reading, read_smarthost, read_url};
use crate::amconfig::extract::EndpointKind;
use crate::amconfig::gourl::{GoUrlError, parse_url, split_host_port};
use crate::amconfig::host::{Host, HostError, classify, inet_aton};

const METADATA: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254));

fn decided(text: &str) -> Destination {
    match read_url(text, EndpointKind::Http) {
        Reading::Decided {
            primary, others, ..
        } => {
            assert!(others.is_empty(), "{text}: other readings {others:?}");
            primary
        }
        other => panic!("{text}: {other:?}"),
    }
}

fn addr(text: &str) -> IpAddr {
    match decided(text).host {
        Host::Ip { addr, .. } => addr,
        other => panic!("{text}: not an address: {other:?}"),
    }
}

fn invalid(text: &str) -> String {
    match read_url(text, EndpointKind::Http) {
        Reading::Invalid(why) => why,
        other => panic!("{text} accepted: {other:?}"),
    }
}

#[test]
fn every_spelling_of_the_metadata_address_is_that_address() {
    for host in [
        "169.254.169.254",
        "2852039166",
        "0251.0376.0251.0376",
        "0xa9fea9fe",
        "0XA9FEA9FE",
        "0xa9.0xfe.0xa9.0xfe",
        "169.254.43518",
        "169.16689662",
        "0xa9.254.169.254",
        "0xa9.254.0251.254",
        "00000251.0376.0251.0376",
        "169.254.169.254.",
        "１６９．２５４．１６９．２５４",
    ] {
        assert_eq!(
            addr(&format!("http://{host}/latest/meta-data/")),
            METADATA,
            "{host}"
        );
    }
    for host in [
        "[::ffff:169.254.169.254]",
        "[::ffff:a9fe:a9fe]",
        "[::FFFF:A9FE:A9FE]",
        "[0:0:0:0:0:ffff:a9fe:a9fe]",
        "[0000:0000:0000:0000:0000:ffff:169.254.169.254]",
        "[64:ff9b::a9fe:a9fe]",
        "[64:ff9b::169.254.169.254]",
    ] {
        let a = addr(&format!("http://{host}/"));
        assert_eq!(crate::policy::normalize_addr(a), METADATA, "{host}");
    }
}

#[test]
fn inet_aton_limits() {
    assert_eq!(inet_aton("127.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
    assert_eq!(inet_aton("0"), Some(Ipv4Addr::UNSPECIFIED));
    assert_eq!(inet_aton("4294967295"), Some(Ipv4Addr::BROADCAST));
    assert_eq!(inet_aton("4294967296"), None);
    assert_eq!(inet_aton("1.2.3.256"), None);
    assert_eq!(inet_aton("1.2.65536"), None);
    assert_eq!(inet_aton("256.1"), None);
    assert_eq!(inet_aton("1.2.3.4.5"), None);
    assert_eq!(inet_aton("08.1.1.1"), None);
    assert_eq!(inet_aton("1..2"), None);
    assert_eq!(inet_aton("."), None);
    assert_eq!(inet_aton("0x"), Some(Ipv4Addr::UNSPECIFIED));
    assert_eq!(inet_aton("99999999999999999999999"), None);
}

#[test]
fn names_that_look_numeric_are_ambiguous_not_names() {
    for host in [
        "1.2.3.256",
        "1.2.3.4.5",
        "08.1.1.1",
        "example.123",
        "a.0x1f",
    ] {
        assert_eq!(classify(host), Err(HostError::NumericName(host.to_owned())));
    }
    assert!(invalid("http://999.999.999.999/").contains("ambiguous"));
    // A number inside a name is fine.
    assert_eq!(
        classify("1.2.3.4.nip.io"),
        Ok(Host::Name("1.2.3.4.nip.io".to_owned()))
    );
}

#[test]
fn names_are_lower_case_without_trailing_dot() {
    assert_eq!(
        classify("Hooks.Slack.COM."),
        Ok(Host::Name("hooks.slack.com".to_owned()))
    );
    assert_eq!(
        classify("bücher.example"),
        Ok(Host::Name("xn--bcher-kva.example".to_owned()))
    );
    assert_eq!(classify(""), Ok(Host::Local));
    assert!(classify("..").is_err());
}

#[test]
fn userinfo_never_decides_the_host() {
    let d = decided("https://hooks.slack.com@evil.example/services/x");
    assert_eq!(d.host, Host::Name("evil.example".to_owned()));
    let d = decided("https://user:pa@ss@hooks.slack.com:8443/");
    assert_eq!(d.host, Host::Name("hooks.slack.com".to_owned()));
    assert_eq!(d.port, 8443);
    // Go reads up to the first '/', so the backslash is userinfo and Go refuses it; a
    // browser would go to evil.example.
    assert!(invalid(r"https://evil.example\@hooks.slack.com/").contains("ambiguous URL"));
    assert_eq!(
        parse_url(r"https://evil.example\@hooks.slack.com/"),
        Err(GoUrlError::InvalidUserinfo('\\'))
    );
}

#[test]
fn go_refuses_what_go_refuses() {
    // Percent-encoding of ASCII in a host, control characters, bad ports, brackets.
    assert_eq!(
        parse_url("http://169%2e254.169.254/"),
        Err(GoUrlError::InvalidEscape("%2e".to_owned()))
    );
    assert_eq!(parse_url("http://a\tb/"), Err(GoUrlError::ControlCharacter));
    assert_eq!(
        parse_url("http://a.example:80x/"),
        Err(GoUrlError::InvalidPort(":80x".to_owned()))
    );
    assert_eq!(parse_url("http://[::1/"), Err(GoUrlError::MissingBracket));
    assert_eq!(
        parse_url("http://a b/"),
        Err(GoUrlError::InvalidHostCharacter(' '))
    );
    assert_eq!(parse_url("://x"), Err(GoUrlError::MissingScheme));
    assert!(parse_url("http://a.example/%zz").is_err());
    assert!(invalid("ftp://a.example/").contains("scheme"));
    assert!(invalid("http:a.example").contains("no host"));
    assert!(invalid("http://a.example:65536/").contains("out of range"));
}

#[test]
fn percent_encoded_non_ascii_hosts_go_through_idna() {
    // Go decodes %-escapes of non-ASCII bytes in a host; its HTTP client then applies IDNA:
    // U+FF0E FULLWIDTH FULL STOP is a dot.
    assert_eq!(addr("http://169%EF%BC%8E254.169.254/"), METADATA);
}

#[test]
fn ports_default_by_scheme_and_parse_like_go() {
    assert_eq!(decided("http://a.example/").port, 80);
    assert_eq!(decided("HTTPS://a.example/").port, 443);
    assert_eq!(decided("https://a.example:/").port, 443);
    assert_eq!(decided("http://a.example:0080/").port, 80);
    assert_eq!(decided("https://a.example?x=1").port, 443);
    match read_url("socks5://proxy.example", EndpointKind::Proxy) {
        Reading::Decided { primary, .. } => assert_eq!(primary.port, 1080),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        read_url("socks5://proxy.example", EndpointKind::Http),
        Reading::Invalid(_)
    ));
}

#[test]
fn ipv6_zones_and_unspecified_hosts() {
    let d = decided("http://[fe80::1%25eth0]:8080/");
    assert_eq!(d.to_string(), "http://[fe80::1%eth0]:8080");
    assert!(matches!(d.host, Host::Ip { zone: Some(ref z), .. } if z == "eth0"));
    assert_eq!(decided("http://:9093/-/quit").host, Host::Local);
    let local = decided("http://0.0.0.0:9093/").host.static_addresses();
    assert!(
        local.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "{local:?}"
    );
    assert!(matches!(
        classify("1.2.3.4%eth0"),
        Err(HostError::ZoneWithoutIpv6(_))
    ));
}

#[test]
fn destinations_never_show_userinfo_path_or_query() {
    let secret = "https://user:hunter2@hooks.slack.com/services/T0/B0/SECRETTOKEN?token=abc#frag";
    let shown = decided(secret).to_string();
    assert_eq!(shown, "https://hooks.slack.com:443");
    match read_url(secret, EndpointKind::Http) {
        Reading::Decided { notes, .. } => {
            for n in notes {
                assert!(!n.contains("hunter2") && !n.contains("SECRET"), "{n}");
            }
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn templates_after_the_host_keep_the_host() {
    let d = decided("https://hooks.example.com/{{ .GroupLabels.team }}");
    assert_eq!(d.host, Host::Name("hooks.example.com".to_owned()));
    let d = decided("https://hooks.example.com:8443?team={{ .GroupLabels.team }}");
    assert_eq!(d.port, 8443);
    for templated in [
        "http://{{ .CommonLabels.target }}/collect",
        "https://{{ .GroupLabels.team }}.hooks.example.com/",
        "https://hooks.example.com{{ .X }}/",
        "https://hooks.example.com:{{ .Port }}/",
        "{{ .CommonAnnotations.url }}",
        "https://x@{{ .Host }}/",
    ] {
        assert_eq!(
            read_url(templated, EndpointKind::Http),
            Reading::Templated,
            "{templated}"
        );
    }
    assert!(matches!(
        read_url("<secret>", EndpointKind::Http),
        Reading::Invalid(_)
    ));
}

#[test]
fn smarthosts_are_host_port_like_go() {
    let d = |s: &str| match read_smarthost(s) {
        Reading::Decided { primary, .. } => primary,
        other => panic!("{s}: {other:?}"),
    };
    assert_eq!(
        d("smtp.example.com:587").to_string(),
        "smtp://smtp.example.com:587"
    );
    assert_eq!(d("smtp.example.com:smtp").port, 25);
    assert_eq!(d("[::1]:25").to_string(), "smtp://[::1]:25");
    assert_eq!(d(":25").host, Host::Local);
    assert!(matches!(d("2852039166:25").host, Host::Ip { addr, .. } if addr == METADATA));
    for bad in [
        "smtp.example.com",
        "a:b:25",
        "[::1]25",
        "smtp.example.com:nosuchport",
    ] {
        assert!(matches!(read_smarthost(bad), Reading::Invalid(_)), "{bad}");
    }
    assert_eq!(
        split_host_port("[::1]:25"),
        Ok(("::1".to_owned(), "25".to_owned()))
    );
    assert_eq!(split_host_port("a:b:25"), Err(GoUrlError::TooManyColons));
}
