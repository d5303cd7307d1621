//! systemd notifications (`sd_notify(3)`), without libsystemd: readiness,
//! reloads, status lines and the watchdog.
//!
//! When `NOTIFY_SOCKET` is set, each notification is one datagram of
//! newline-separated `VARIABLE=value` lines to that Unix socket (a path, or
//! an abstract name when it starts with `@`). Without it, notifications are
//! no-ops: rpcd runs the same under systemd, under another supervisor, or by
//! hand.
//!
//! What rpcd sends: `READY=1` with a `STATUS=` line once its sockets are
//! served; `RELOADING=1` with `MONOTONIC_USEC=` when a SIGHUP arrives, then
//! `READY=1` with a `STATUS=` line saying whether the reload took; `STOPPING=1`
//! at shutdown; `WATCHDOG=1` every half `WATCHDOG_USEC` while the loop turns.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};

/// Send `state` (one or more `VARIABLE=value` lines) to the service manager,
/// if there is one. Failures are logged, never fatal: supervision is best
/// effort.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path.to_string_lossy(), state) {
        tracing::warn!(error = %e, "sd_notify({state}) failed");
    }
}

/// `READY=1` with `status` as the `STATUS=` line.
pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// `RELOADING=1` stamped with `CLOCK_MONOTONIC`, as systemd requires since
/// version 253 to tell this reload from an earlier one.
pub fn reloading() {
    match monotonic_usec() {
        Ok(usec) => notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}")),
        Err(e) => {
            tracing::warn!(error = %e, "clock_gettime(CLOCK_MONOTONIC) failed");
            notify("RELOADING=1");
        }
    }
}

/// `STATUS=` alone, for the service manager's status display.
pub fn status(status: &str) {
    notify(&format!("STATUS={}", one_line(status)));
}

/// `CLOCK_MONOTONIC` in microseconds, the clock `MONOTONIC_USEC=` is read
/// against (std's `Instant` does not expose its value).
pub fn monotonic_usec() -> nix::Result<u64> {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC)?;
    let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
    let micros = u64::try_from(t.tv_nsec()).unwrap_or(0) / 1000;
    Ok(secs.saturating_mul(1_000_000).saturating_add(micros))
}

/// A `STATUS=` value is one line: newlines in (e.g.) a parser's message
/// would start new variables.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
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

/// The service manager's watchdog: when `WATCHDOG_USEC` is set (and
/// `WATCHDOG_PID`, if set, names this process), `WATCHDOG=1` is due every
/// half interval. The loop sends it when it wakes, so a loop that stops
/// turning stops the pings and systemd restarts the daemon.
#[derive(Debug)]
pub struct Watchdog {
    every: Duration,
    next: Instant,
}

impl Watchdog {
    /// The watchdog this process was started with, if any.
    pub fn from_env(now: Instant) -> Option<Watchdog> {
        let var = |k: &str| std::env::var(k).ok();
        Watchdog::from_vars(
            std::process::id(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            now,
        )
    }

    fn from_vars(
        pid: u32,
        usec: Option<&str>,
        for_pid: Option<&str>,
        now: Instant,
    ) -> Option<Watchdog> {
        if let Some(p) = for_pid.filter(|p| !p.is_empty()) {
            if p.parse::<u32>().ok() != Some(pid) {
                return None;
            }
        }
        let usec: u64 = usec?.parse().ok().filter(|u| *u > 0)?;
        let every = Duration::from_micros(usec / 2).max(Duration::from_millis(1));
        Some(Watchdog { every, next: now })
    }

    /// When the next ping is due.
    pub fn next_at(&self) -> Instant {
        self.next
    }

    /// The interval between pings (half of `WATCHDOG_USEC`).
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Send `WATCHDOG=1` if it is due.
    pub fn tick(&mut self, now: Instant) {
        if now >= self.next {
            notify("WATCHDOG=1");
            self.next = now + self.every;
        }
    }
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

    #[test]
    fn status_is_one_line() {
        assert_eq!(
            one_line("reload failed: x.toml: bad\n  |\n1 | a = \r\n"),
            "reload failed: x.toml: bad | 1 | a ="
        );
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_usec().unwrap();
        let b = monotonic_usec().unwrap();
        assert!(a > 0 && b >= a, "{a} {b}");
    }

    #[test]
    fn watchdog_from_the_environment() {
        let now = Instant::now();
        let w = Watchdog::from_vars(7, Some("2000000"), None, now).unwrap();
        assert_eq!(w.every(), Duration::from_secs(1));
        assert_eq!(w.next_at(), now, "the first ping is due at once");
        assert!(Watchdog::from_vars(7, Some("2000000"), Some("7"), now).is_some());
        // Meant for another process, absent, zero or garbage: no watchdog.
        assert!(Watchdog::from_vars(7, Some("2000000"), Some("8"), now).is_none());
        assert!(Watchdog::from_vars(7, None, None, now).is_none());
        assert!(Watchdog::from_vars(7, Some("0"), None, now).is_none());
        assert!(Watchdog::from_vars(7, Some("soon"), None, now).is_none());
    }
}
