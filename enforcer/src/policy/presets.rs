//! Shipped, versioned sets of ranges a policy names with `preset: NAME`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::PortRange;

/// Bumped whenever a preset's contents change; `enforcer presets` prints it.
pub const PRESETS_VERSION: u32 = 2;

/// A named set of ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    pub entries: Vec<PresetEntry>,
}

/// One range of a preset, optionally limited to some ports (empty = every port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresetEntry {
    pub net: IpNet,
    pub ports: Vec<PortRange>,
    /// What the range is, for `enforcer presets`.
    pub note: String,
}

/// Every preset, in the order `enforcer presets` lists them.
pub fn presets() -> &'static [Preset] {
    &PRESETS
}

/// The preset called `name`.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The human-readable listing `enforcer presets` prints.
pub fn render_presets() -> String {
    let mut out = format!("presets (version {PRESETS_VERSION})\n");
    for p in presets() {
        let _ = write!(out, "\n{}\n", p.name);
        for line in wrap(p.description, 88) {
            let _ = writeln!(out, "  {line}");
        }
        for e in &p.entries {
            let mut range = e.net.to_string();
            if !e.ports.is_empty() {
                let ports: Vec<String> = e.ports.iter().map(ToString::to_string).collect();
                let _ = write!(range, " ports {}", ports.join(","));
            }
            let _ = writeln!(out, "    {range:<36} {}", e.note);
        }
    }
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

const PRIVATE_DESCRIPTION: &str = "Private, loopback, link-local, CGNAT (includes Alibaba's \
    100.100.100.200), multicast and other special-use ranges an SSRF filter should not reach. \
    6to4 (2002::/16) is blocked exactly where it embeds one of these IPv4 ranges. Teredo \
    (2001::/32) is blocked whole: it carries the client's IPv4 obfuscated in the low 32 bits \
    of the address, which no prefix can select. So is the local-use NAT64 prefix \
    (64:ff9b:1::/48, RFC 8215), whose embedded IPv4 sits where the operator chose.";

const CLOUD_METADATA_DESCRIPTION: &str = "Cloud instance metadata and host services that hand out \
    credentials or control the instance. Azure's WireServer is blocked on ports 80 and 32526 \
    only; its DNS on port 53 stays open. The local-use NAT64 prefix (64:ff9b:1::/48) is \
    blocked whole: it can carry the metadata address at an operator-chosen place.";

/// The IPv4 ranges of `private`, in order, with notes; their 6to4 images are generated.
const PRIVATE_V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private (RFC 1918)"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private (RFC 1918)"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private (RFC 1918)"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "CGNAT shared space (RFC 6598)",
    ),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local, cloud metadata",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (
        Ipv4Addr::new(0, 0, 0, 0),
        8,
        "\"this network\" (0.0.0.0 reaches the host)",
    ),
];

const PRIVATE_V4_SPECIAL: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved, broadcast"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking (RFC 2544)"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
];

const PRIVATE_V6: &[(Ipv6Addr, u8, &str)] = &[
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique local",
    ),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1), 128, "loopback"),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        128,
        "unspecified (reaches the host)",
    ),
];

static PRESETS: LazyLock<Vec<Preset>> = LazyLock::new(|| vec![private(), cloud_metadata()]);

fn v4(addr: Ipv4Addr, len: u8, note: &str) -> PresetEntry {
    let net = Ipv4Net::new(addr, len).expect("preset IPv4 prefix length <= 32");
    PresetEntry {
        net: IpNet::V4(net),
        ports: Vec::new(),
        note: note.to_owned(),
    }
}

fn v6(addr: Ipv6Addr, len: u8, note: &str) -> PresetEntry {
    let net = Ipv6Net::new(addr, len).expect("preset IPv6 prefix length <= 128");
    PresetEntry {
        net: IpNet::V6(net),
        ports: Vec::new(),
        note: note.to_owned(),
    }
}

/// The 6to4 prefix carrying an IPv4 range: 2002:AABB:CCDD::/(16 + len) for AA.BB.CC.DD/len.
fn six_to_four(addr: Ipv4Addr, len: u8) -> PresetEntry {
    let bits = (0x2002u128 << 112) | ((u32::from(addr) as u128) << 80);
    let net = IpNet::V4(Ipv4Net::new(addr, len).expect("preset IPv4 prefix length <= 32"));
    v6(Ipv6Addr::from(bits), 16 + len, &format!("6to4 of {net}"))
}

fn private() -> Preset {
    let mut entries: Vec<PresetEntry> = PRIVATE_V4.iter().map(|&(a, l, n)| v4(a, l, n)).collect();
    entries.extend(PRIVATE_V6.iter().map(|&(a, l, n)| v6(a, l, n)));
    let multicast = PRIVATE_V4_SPECIAL[0];
    entries.push(v4(multicast.0, multicast.1, multicast.2));
    entries.push(v6(
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        "multicast",
    ));
    entries.extend(PRIVATE_V4_SPECIAL[1..].iter().map(|&(a, l, n)| v4(a, l, n)));
    entries.extend(
        PRIVATE_V4
            .iter()
            .chain(PRIVATE_V4_SPECIAL)
            .map(|&(a, l, _)| six_to_four(a, l)),
    );
    entries.push(v6(
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        32,
        "Teredo (client IPv4 hidden in the low bits; whole range)",
    ));
    entries.push(v6(
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        "site-local (deprecated, RFC 3879; still routed as unicast)",
    ));
    entries.push(local_use_nat64());
    Preset {
        name: "private",
        description: PRIVATE_DESCRIPTION,
        entries,
    }
}

/// The local-use NAT64 prefix (RFC 8215), whole: where the IPv4 address sits inside it depends
/// on the prefix length the operator chose (RFC 6052), so no narrower prefix selects the
/// metadata address or a private range, and the kernel cannot decide it as the IPv4 address.
fn local_use_nat64() -> PresetEntry {
    v6(
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "local-use NAT64 (RFC 8215; embeds any IPv4 at an operator-chosen place; whole range)",
    )
}

fn cloud_metadata() -> Preset {
    let mut wireserver = v4(Ipv4Addr::new(168, 63, 129, 16), 32, "Azure WireServer");
    wireserver.ports = vec![PortRange::single(80), PortRange::single(32526)];
    let entries = vec![
        v4(
            Ipv4Addr::new(169, 254, 169, 254),
            32,
            "AWS, GCP, Azure, OpenStack, ... metadata",
        ),
        v4(
            Ipv4Addr::new(169, 254, 170, 2),
            32,
            "AWS ECS task metadata and credentials",
        ),
        v4(
            Ipv4Addr::new(169, 254, 170, 23),
            32,
            "AWS EKS Pod Identity agent",
        ),
        v6(
            Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
            128,
            "AWS metadata (IPv6)",
        ),
        v6(
            Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
            128,
            "AWS EKS Pod Identity agent (IPv6)",
        ),
        v4(
            Ipv4Addr::new(100, 100, 100, 200),
            32,
            "Alibaba Cloud metadata",
        ),
        wireserver,
        v4(
            Ipv4Addr::new(192, 0, 0, 192),
            32,
            "Oracle Cloud@Customer metadata",
        ),
        local_use_nat64(),
    ];
    Preset {
        name: "cloud-metadata",
        description: CLOUD_METADATA_DESCRIPTION,
        entries,
    }
}
