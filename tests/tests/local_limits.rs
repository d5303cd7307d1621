//! The daemon-wide budget for local connection buffers (`limits.local_buffer_total_max`),
//! through the real socket.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rpcd_client::conn::Connection;
use rpcd_client::ipc::{decode_frame, DaemonMsg, ErrorCode};
use rpcd_tests::{peak_rss, tempdir, Daemon};

const MIB: usize = 1024 * 1024;
const BUDGET: usize = 4 * MIB;
/// The length a hog announces, and the bytes of it it sends (one short).
const FRAME: usize = MIB - 1024;
const HOGS: usize = 48;

/// What the daemon said on `s` before closing it, or `None` if it is still open and
/// silent after `wait`.
fn fate(s: &mut UnixStream, wait: Duration) -> Option<Option<DaemonMsg>> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => break,
        }
    }
    Some(
        decode_frame::<DaemonMsg>(&buf, 1 << 20)
            .ok()
            .flatten()
            .map(|(m, _)| m),
    )
}

/// 48 connections each send all but one byte of a 1 MiB frame to a daemon whose budget
/// is 4 MiB: at most 4 are held, the later ones get `overloaded` and are closed, a small
/// client keeps working, and the daemon's peak RSS grows by less than the 48 MiB the
/// hogs sent.
#[test]
fn partial_frames_stay_within_the_daemon_wide_budget() {
    let dir = tempdir();
    let cfg = format!("[limits]\nframe_max = {MIB}\nlocal_buffer_total_max = {BUDGET}\n");
    let d = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(&cfg));
    let small = Connection::connect(&d.socket, "small").unwrap();
    small.ping().unwrap();
    let before = peak_rss(d.process.pid());

    let body = vec![0x90u8; FRAME - 1];
    let mut hogs = Vec::new();
    for _ in 0..HOGS {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let prefix = u32::try_from(FRAME).unwrap().to_be_bytes();
        // A closed connection fails the write: its fate is read below.
        let _ = s.write_all(&prefix).and_then(|()| s.write_all(&body));
        hogs.push(s);
    }
    let (mut held, mut refused) = (0, 0);
    for s in &mut hogs {
        match fate(s, Duration::from_secs(2)) {
            None => held += 1,
            Some(Some(DaemonMsg::Fatal { code, message })) => {
                assert_eq!(code, ErrorCode::Overloaded, "{message}");
                assert!(message.contains("local_buffer_total_max"), "{message}");
                refused += 1;
            }
            Some(other) => panic!("a hog was closed with {other:?}"),
        }
    }
    assert!(held <= BUDGET / FRAME, "{held} partial frames held");
    assert!(refused >= HOGS - BUDGET / FRAME, "{refused} refused");
    small.ping().unwrap();
    let grew = peak_rss(d.process.pid()).saturating_sub(before);
    eprintln!(
        "held {held}, refused {refused}, peak RSS grew {} KiB",
        grew / 1024
    );
    assert!(
        grew < (BUDGET + 16 * MIB) as u64,
        "peak RSS grew by {grew} bytes for a budget of {BUDGET}"
    );
}

/// `Connection::connect` in a thread: its result, or `None` if it took over 10 s (a hang).
fn connect_within(socket: &std::path::Path) -> Option<Result<Connection, String>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let socket = socket.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(Connection::connect(&socket, "fd").map_err(|e| e.to_string()));
    });
    rx.recv_timeout(Duration::from_secs(10)).ok()
}

/// rpcd under `prlimit --nofile=40`: connections are accepted until the descriptors run
/// out, then a client is told `overloaded` at once (no hang); once some are closed, new
/// clients are accepted again. The clients here send nothing: one accepted stays silent,
/// one refused reads the `fatal` frame and the end of the stream. (A client that writes its
/// `hello` first may see the refusal as EPIPE instead, if the daemon closed before the
/// write.)
#[test]
fn at_the_descriptor_limit_a_client_is_told_and_accepting_resumes() {
    let dir = tempdir();
    let d = Daemon::start_wrapped(
        dir.path(),
        "a",
        "127.0.0.1:0",
        None,
        &["prlimit", "--nofile=40", "--"],
    );
    let mut open = Vec::new();
    let refusal = loop {
        assert!(open.len() < 64, "40 descriptors never ran out");
        let mut s = UnixStream::connect(&d.socket).unwrap();
        match fate(&mut s, Duration::from_millis(300)) {
            None => open.push(s),
            Some(Some(DaemonMsg::Fatal { code, message })) => break (code, message),
            Some(other) => panic!("refused with {other:?}"),
        }
    };
    eprintln!("{} accepted, then: {refusal:?}", open.len());
    assert_eq!(refusal.0, ErrorCode::Overloaded);
    assert!(refusal.1.contains("open files"), "{}", refusal.1);
    assert!(open.len() > 5, "{} accepted", open.len());
    open.truncate(open.len() - 5);
    // The closes reach the daemon in their own time: new clients get in once they have.
    assert!(
        rpcd_tests::wait_until(Duration::from_secs(10), || matches!(
            connect_within(&d.socket),
            Some(Ok(_))
        )),
        "accepting resumed"
    );
    let c = connect_within(&d.socket).unwrap().unwrap();
    c.ping().unwrap();
}
