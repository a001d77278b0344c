//! The shipped deployment (`deploy/`), checked by the tools that will read it: the systemd unit by
//! `systemd-analyze verify`, and what the README promises of it.
//! No root, no kernel state.
//!
//! A missing tool fails the test with the command that installs it (CI installs them all in
//! `scripts/setup.sh`); nothing is skipped silently.
use integration_tests::{
    TempDir,
    deploy::{INSTALL_SYSTEMD, deploy, run, text},
    enforcer_bin,
};

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    // `verify` checks that ExecStart's binary exists and is executable; /usr/local/bin/enforcer
    // is not installed here, so verify a copy that runs the enforcer built for these tests
    // (only that path differs from the shipped file).
    let shipped = std::fs::read_to_string(deploy("systemd/enforcer.service")).unwrap();
    assert_eq!(
        shipped
            .matches("ExecStart=/usr/local/bin/enforcer ")
            .count(),
        1,
        "ExecStart"
    );
    let dir = TempDir::new().unwrap();
    let unit = dir
        .write(
            "enforcer.service",
            &shipped.replace(
                "ExecStart=/usr/local/bin/enforcer ",
                &format!("ExecStart={} ", enforcer_bin().display()),
            ),
        )
        .unwrap();
    let out = run(
        "systemd-analyze",
        &["verify", "--man=no", unit.to_str().unwrap()],
        INSTALL_SYSTEMD,
    );
    // Unknown keys and unparsable values are warnings with exit status 0: any output fails.
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify deploy/systemd/enforcer.service:\n{}",
        text(&out)
    );

    // ... and it does catch a misspelt directive.
    let bad = dir
        .write(
            "bad.service",
            &std::fs::read_to_string(&unit)
                .unwrap()
                .replace("Restart=always", "Restrt=always"),
        )
        .unwrap();
    let out = run(
        "systemd-analyze",
        &["verify", "--man=no", bad.to_str().unwrap()],
        INSTALL_SYSTEMD,
    );
    assert!(text(&out).contains("Restrt"), "{}", text(&out));

    // The parts the README promises.
    for line in [
        "Before=prometheus-alertmanager.service",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=always",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/sys/fs/bpf /sys/fs/cgroup",
        "--policy /etc/enforcer/policy.yaml",
        // Alertmanager (ordered after this unit) starts only on READY=1, which the agent sends
        // once attached (tests/tests/systemd_notify.rs).
        "Type=notify",
        "NotifyAccess=main",
        "--web.listen-address 127.0.0.1:9895",
        " --pin ",
    ] {
        assert!(shipped.contains(line), "enforcer.service lacks {line:?}");
    }
    let install = shipped.split("[Install]").nth(1).expect("[Install]");
    assert!(
        install.contains("prometheus-alertmanager.service"),
        "WantedBy= the Alertmanager unit"
    );
    for forbidden in ["ProtectKernelTunables=yes", "ProtectControlGroups=yes"] {
        assert!(
            !shipped.lines().any(|l| l.trim() == forbidden),
            "{forbidden} breaks pinning/attach"
        );
    }
}
