//! systemd readiness notifications (`sd_notify`), without libsystemd.
//!
//! When `NOTIFY_SOCKET` is set, each state line is sent as one datagram to
//! that Unix socket (a path, or an abstract name when it starts with `@`).
//! Without it, notifications are no-ops: rpcd runs the same under systemd,
//! under another supervisor, or by hand.

use std::os::unix::net::UnixDatagram;

/// Send `state` (e.g. `READY=1`) to the service manager, if there is one.
/// Failures are logged, never fatal: supervision is best effort.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path.to_string_lossy(), state) {
        tracing::warn!(error = %e, "sd_notify({state}) failed");
    }
}

fn send(path: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notify");
        let rx = UnixDatagram::bind(&p).unwrap();
        send(p.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
