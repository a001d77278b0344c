//! Preset contents.

use super::*;

fn entries(name: &str) -> Vec<String> {
    preset(name)
        .unwrap()
        .entries
        .iter()
        .map(|e| {
            let ports: Vec<String> = e.ports.iter().map(ToString::to_string).collect();
            if ports.is_empty() {
                e.net.to_string()
            } else {
                format!("{} ports {}", e.net, ports.join(","))
            }
        })
        .collect()
}

#[test]
fn preset_contents() {
    let names: Vec<&str> = presets().iter().map(|p| p.name).collect();
    assert_eq!(names, ["private", "cloud-metadata"]);
    assert_eq!(
        entries("private"),
        [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "169.254.0.0/16",
            "127.0.0.0/8",
            "0.0.0.0/8",
            "fc00::/7",
            "fe80::/10",
            "::1/128",
            "::/128",
            "224.0.0.0/4",
            "ff00::/8",
            "240.0.0.0/4",
            "198.18.0.0/15",
            "192.0.0.0/24",
            // 6to4 images of every IPv4 range above.
            "2002:a00::/24",
            "2002:ac10::/28",
            "2002:c0a8::/32",
            "2002:6440::/26",
            "2002:a9fe::/32",
            "2002:7f00::/24",
            "2002::/24",
            "2002:e000::/20",
            "2002:f000::/20",
            "2002:c612::/31",
            "2002:c000::/40",
            "2001::/32",
            "fec0::/10",
            "64:ff9b:1::/48",
        ]
    );
    assert_eq!(
        entries("cloud-metadata"),
        [
            "169.254.169.254/32",
            "169.254.170.2/32",
            "169.254.170.23/32",
            "fd00:ec2::254/128",
            "fd00:ec2::23/128",
            "100.100.100.200/32",
            "168.63.129.16/32 ports 80,32526",
            "192.0.0.192/32",
            "64:ff9b:1::/48",
        ]
    );
    assert!(preset("private").unwrap().description.contains("2001::/32"));
    for p in presets() {
        for e in &p.entries {
            assert_eq!(e.net, e.net.trunc(), "{} {}", p.name, e.net);
            assert_eq!(
                normalize_net(e.net),
                e.net,
                "preset ranges are already normalised"
            );
        }
    }
    let listing = render_presets();
    assert!(
        listing.contains("cloud-metadata") && listing.contains("168.63.129.16/32 ports 80,32526"),
        "{listing}"
    );
    assert!(
        listing.contains("2002:a00::/24") && listing.contains("6to4 of 10.0.0.0/8"),
        "{listing}"
    );
}
