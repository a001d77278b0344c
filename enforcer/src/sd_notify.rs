//! systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram such as
//! `READY=1` to the socket systemd names in `NOTIFY_SOCKET`. `enforcer run` sends `READY=1`
//! once its programs are attached and its policy is installed, so that with `Type=notify` a
//! unit ordered after the agent's (Alertmanager's) starts only then; `STOPPING=1` when it stops.
use std::{
    ffi::OsStr,
    os::{
        linux::net::SocketAddrExt as _,
        unix::{
            ffi::OsStrExt as _,
            net::{SocketAddr, UnixDatagram},
        },
    },
};

/// The variable systemd sets for a `Type=notify` service.
pub const SOCKET_VAR: &str = "NOTIFY_SOCKET";

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{SOCKET_VAR}={0:?} is neither an absolute path nor an abstract socket name (@name)")]
    Address(String),
    #[error("sending {state:?} to {SOCKET_VAR}={socket:?}")]
    Send {
        state: String,
        socket: String,
        #[source]
        source: std::io::Error,
    },
}

/// Sends `state` (e.g. `READY=1`) to the socket named by `NOTIFY_SOCKET`. `Ok(false)` when the
/// variable is not set (not started by systemd as `Type=notify`): nothing to do.
pub fn notify(state: &str) -> Result<bool, NotifyError> {
    match std::env::var_os(SOCKET_VAR) {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to `socket`: a path, or `@name` for a socket in the abstract namespace.
pub fn notify_to(socket: &OsStr, state: &str) -> Result<(), NotifyError> {
    let shown = || socket.to_string_lossy().into_owned();
    let bytes = socket.as_bytes();
    let address = match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(socket),
        Some(b'@') if bytes.len() > 1 => SocketAddr::from_abstract_name(&bytes[1..]),
        _ => return Err(NotifyError::Address(shown())),
    }
    .map_err(|_| NotifyError::Address(shown()))?;
    let send = |source| NotifyError::Send {
        state: state.to_owned(),
        socket: shown(),
        source,
    };
    let sock = UnixDatagram::unbound().map_err(send)?;
    sock.send_to_addr(state.as_bytes(), &address)
        .map_err(send)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{os::unix::net::UnixDatagram, time::Duration};

    use super::{NotifyError, notify_to};

    fn receive(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_the_state_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("enforcer-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        assert_eq!(receive(&sock), "READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sends_the_state_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("enforcer-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(format!("@{name}").as_ref(), "STOPPING=1").unwrap();
        assert_eq!(receive(&sock), "STOPPING=1");
    }

    #[test]
    fn refuses_a_relative_or_empty_address_and_reports_a_missing_socket() {
        for bad in ["notify.sock", "@", ""] {
            let e = notify_to(bad.as_ref(), "READY=1").unwrap_err();
            assert!(matches!(e, NotifyError::Address(_)), "{bad}: {e}");
        }
        let e = notify_to("/nonexistent/enforcer/notify.sock".as_ref(), "READY=1").unwrap_err();
        assert!(matches!(e, NotifyError::Send { .. }), "{e}");
    }
}
