//! Where an Alertmanager serves its API, from its own command line: `--web.listen-address`
//! (default `:9093`), `--web.route-prefix` (default: the path of `--web.external-url`, else
//! `/`), and `--config.file` (default `alertmanager.yml`, relative to its working directory).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What the watchdog needs from the flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiFlags {
    /// Where to connect inside the process's network namespace.
    pub connect: SocketAddr,
    /// `/` or `/prefix/` (always starts and ends with `/`).
    pub prefix: String,
    /// `--config.file` as given.
    pub config_file: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagsError {
    #[error(
        "--web.listen-address {0:?} names no address the watchdog can reach (give an IP address, or localhost)"
    )]
    Listen(String),
}

/// The value of `--name=value` or `--name value` (the first one given), as kingpin reads
/// them; arguments after `--` are not flags.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let mut i = 1;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            return None;
        }
        if let Some(v) = arg.strip_prefix(name).and_then(|v| v.strip_prefix('=')) {
            return Some(v);
        }
        if arg == name {
            return args.get(i + 1).map(String::as_str);
        }
        i += 1;
    }
    None
}

/// Reads a `/proc/<pid>/cmdline` (NUL-separated, argv[0] first).
pub fn parse(cmdline: &[u8]) -> Result<ApiFlags, FlagsError> {
    let mut args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if cmdline.last() == Some(&0) {
        args.pop();
    }
    let listen = flag(&args, "--web.listen-address").unwrap_or(":9093");
    let connect = connect_addr(listen).ok_or_else(|| FlagsError::Listen(listen.to_owned()))?;
    let prefix = match flag(&args, "--web.route-prefix") {
        Some(p) => p.to_owned(),
        None => flag(&args, "--web.external-url")
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.path().to_owned())
            .unwrap_or_default(),
    };
    let trimmed = prefix.trim_matches('/');
    let prefix = if trimmed.is_empty() {
        "/".to_owned()
    } else {
        format!("/{trimmed}/")
    };
    let config_file = flag(&args, "--config.file")
        .unwrap_or("alertmanager.yml")
        .to_owned();
    Ok(ApiFlags {
        connect,
        prefix,
        config_file,
    })
}

/// The address to connect to for a listen address: a wildcard host (empty, `0.0.0.0`, `::`)
/// is reached on loopback; `localhost` is 127.0.0.1 (no resolver is asked).
fn connect_addr(listen: &str) -> Option<SocketAddr> {
    let (host, port) = listen.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip = match host {
        "" | "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => match h
            .split_once('%')
            .map_or(h, |(a, _)| a)
            .parse::<IpAddr>()
            .ok()?
        {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        },
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for a in args {
            out.extend_from_slice(a.as_bytes());
            out.push(0);
        }
        out
    }

    #[test]
    fn defaults_and_forms() {
        let f = parse(&cmd(&["alertmanager"])).unwrap();
        assert_eq!(f.connect, "127.0.0.1:9093".parse().unwrap());
        assert_eq!(f.prefix, "/");
        assert_eq!(f.config_file, "alertmanager.yml");
        let f = parse(&cmd(&[
            "am",
            "--web.listen-address",
            "10.1.2.3:9095",
            "--web.external-url=http://am.example/am",
            "--config.file=/etc/am/am.yml",
        ]))
        .unwrap();
        assert_eq!(f.connect, "10.1.2.3:9095".parse().unwrap());
        assert_eq!(f.prefix, "/am/");
        assert_eq!(f.config_file, "/etc/am/am.yml");
        let f = parse(&cmd(&[
            "am",
            "--web.listen-address=[::]:9093",
            "--web.route-prefix=/x/",
            "--web.external-url=http://am.example/am",
        ]))
        .unwrap();
        assert_eq!(f.connect, "[::1]:9093".parse().unwrap());
        assert_eq!(f.prefix, "/x/");
        assert_eq!(
            parse(&cmd(&["am", "--", "--web.listen-address=1.2.3.4:1"]))
                .unwrap()
                .connect,
            "127.0.0.1:9093".parse().unwrap()
        );
        assert!(parse(&cmd(&["am", "--web.listen-address=am.svc:9093"])).is_err());
    }
}
