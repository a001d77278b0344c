//! Issue 11's alertmanager.yml cases: the file is written by whoever opens the pull request.

use std::path::Path;

use super::{config, config_in, policy};
use crate::amconfig::extract::Value;
use crate::amconfig::{AmConfigError, CheckOptions, check, load, parse};

fn error(yaml: &str) -> (usize, usize, String) {
    match parse(yaml, "am.yml", Path::new("/")) {
        Err(AmConfigError::Invalid { location, problem }) => {
            (location.line, location.column, problem.to_string())
        }
        other => panic!("accepted: {other:?}"),
    }
}

const ROUTE: &str = "route:\n  receiver: r\n";

#[test]
fn a_nul_byte_is_refused_where_it_is() {
    // amtool rejects this file; check used to stop reading at the NUL and report "ok".
    let yaml = format!(
        "{ROUTE}receivers:\n- name: r\n  webhook_configs:\n  - url: https://hooks.example/\n\0\n- name: meta\n  webhook_configs:\n  - url: http://169.254.169.254/\n"
    );
    let (line, column, m) = error(&yaml);
    assert_eq!((line, column), (7, 1));
    assert_eq!(
        m,
        "invalid YAML: control character U+0000 is not allowed (only tab, line feed and carriage return are)"
    );
}

#[test]
fn any_yaml_is_not_an_alertmanager_configuration() {
    assert_eq!(
        error("foo: bar\n"),
        (
            1,
            1,
            "unknown key \"foo\" in the configuration; Alertmanager refuses keys it does not know"
                .to_owned()
        )
    );
    let (_, _, m) = error(&format!("{ROUTE}recievers:\n- name: r\n"));
    assert_eq!(
        m,
        "unknown key \"recievers\" in the configuration (did you mean \"receivers\"?); \
         Alertmanager refuses keys it does not know"
    );
    // The policy file given by mistake.
    let (line, _, m) = error(crate::policy::DEFAULT_POLICY_YAML);
    assert!(m.starts_with("unknown key \""), "{m}");
    assert!(line >= 1);
    // Unknown keys inside receivers, their integrations and http_config.
    let (line, column, m) = error(&format!(
        "{ROUTE}receivers:\n- name: r\n  webhook_configs:\n  - url: https://x.example/\n    urll: http://169.254.169.254/\n"
    ));
    assert_eq!((line, column), (7, 5));
    assert!(
        m.starts_with(
            "unknown key \"urll\" in receivers[0].webhook_configs[0] (did you mean \"url\"?)"
        ),
        "{m}"
    );
    let (_, _, m) = error(&format!("{ROUTE}receivers:\n- name: r\n  nmae: x\n"));
    assert!(m.contains("(did you mean \"name\"?)"), "{m}");
    let (_, _, m) = error(&format!(
        "{ROUTE}receivers:\n- name: r\n  slack_configs:\n  - api_url: https://x.example/\n    http_config:\n      proxy: http://10.0.0.1/\n"
    ));
    assert!(
        m.starts_with("unknown key \"proxy\" in receivers[0].slack_configs[0].http_config"),
        "{m}"
    );
    // No receivers: Alertmanager refuses the file.
    for yaml in [
        ROUTE.to_owned(),
        format!("{ROUTE}receivers: []\n"),
        "global: {}\n".to_owned(),
    ] {
        let (_, _, m) = error(&yaml);
        assert!(m.starts_with("no receivers"), "{yaml}: {m}");
    }
    // What Alertmanager accepts still passes.
    let c = config(&format!(
        "global:\n  resolve_timeout: 5m\n  http_config:\n    follow_redirects: true\n{ROUTE}  routes:\n  - matchers: [a=b]\n    receiver: r\ninhibit_rules:\n- equal: [a]\nreceivers:\n- name: r\n  webhook_configs:\n  - url: https://x.example/\n    send_resolved: true\n    http_config:\n      tls_config:\n        insecure_skip_verify: false\n"
    ));
    assert_eq!(c.endpoints.len(), 1);
}

#[test]
fn field_files_are_regular_and_bounded() {
    let dir = std::env::temp_dir().join(format!("enforcer-am-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero")).unwrap();
    let fifo = std::ffi::CString::new(dir.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `fifo` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::fs::File::create(dir.join("big"))
        .unwrap()
        .set_len(crate::amconfig::MAX_FIELD_FILE_BYTES + 1)
        .unwrap();
    let c = config_in(
        &format!(
            "{ROUTE}receivers:\n- name: r\n  webhook_configs:\n  - url_file: zero\n  - url_file: fifo\n  - url_file: big\n"
        ),
        &dir,
    );
    let whys: Vec<String> = c
        .endpoints
        .iter()
        .map(|e| match &e.value {
            Value::File {
                content: Err(why), ..
            } => why.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        whys[0].ends_with("is a character device, not a regular file"),
        "{}",
        whys[0]
    );
    assert!(
        whys[1].ends_with("is a FIFO, not a regular file"),
        "{}",
        whys[1]
    );
    assert!(
        whys[2]
            .ends_with("is larger than 64 KiB, the most a file named by a `*_file` field may be"),
        "{}",
        whys[2]
    );
    // The configuration itself: a FIFO is refused at once.
    let e = load(&dir.join("fifo")).unwrap_err();
    assert_eq!(
        std::error::Error::source(&e).unwrap().to_string(),
        "is a FIFO, not a regular file"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_report_survives_very_long_names() {
    // A receiver and a host name longer than 65,535 characters used to panic the text report.
    let long = "a".repeat(70_000);
    let c = config(&format!(
        "route:\n  receiver: {long}\nreceivers:\n- name: {long}\n  webhook_configs:\n  - url: https://{long}.example/\n"
    ));
    let report = check(
        &c,
        &policy("default: allow\nblock:\n  - preset: private\n"),
        CheckOptions::default(),
    );
    let text = report.to_text();
    assert!(text.len() < 10_000, "{} bytes", text.len());
    let _ = report.to_json();
}
