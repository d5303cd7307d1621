//! `GET /metrics` (`[metrics] listen`): a small HTTP/1.1 server on a thread of
//! its own, so that a scraper never touches the event loop.
//!
//! One connection at a time, each held for at most `request_timeout` (reading
//! the request head and writing the response together): a slow or idle client
//! delays the next scrape by that long at most, and never the daemon. The
//! request head is bounded ([`HEAD_MAX`]); there is no keep-alive and no body.
//! For each scrape the thread asks the loop for a [`Stats`] snapshot through a
//! channel and the loop's [`Waker`]; the loop answers without blocking (a
//! one-slot channel per request), and the thread waits for it no longer than
//! the request's time left (then `503`). `/proc` is read and the text
//! rendered on this thread.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Waker;
use rpcd_client::ipc::Stats;
use tracing::{debug, warn};

use super::metrics_process;
use crate::metrics::exposition;

/// Largest request head (request line and headers) read, in bytes.
pub const HEAD_MAX: usize = 8192;

/// Where the loop answers one scrape's snapshot request.
pub type SnapshotReply = SyncSender<Stats>;

/// Bind the metrics listener (before the daemon forks, so that a bad address is
/// reported on the terminal).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Serve `listener` on a new thread; the loop answers the requests that arrive
/// on the returned receiver (after `waker` woke it) with [`Stats`] snapshots.
pub fn start(
    listener: TcpListener,
    waker: Arc<Waker>,
    request_timeout: Duration,
) -> io::Result<Receiver<SnapshotReply>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("rpcd-metrics".into())
        .spawn(move || serve(&listener, &tx, &waker, request_timeout))?;
    Ok(rx)
}

fn serve(
    listener: &TcpListener,
    snapshots: &Sender<SnapshotReply>,
    waker: &Waker,
    timeout: Duration,
) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let peer = stream.peer_addr().ok();
                if let Err(e) = handle(stream, snapshots, waker, timeout) {
                    debug!(?peer, error = %e, "metrics request not answered");
                }
            }
            Err(e) => {
                // Out of descriptors, say: back off instead of spinning.
                warn!(error = %e, "metrics listener: accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// What a request asked for, or the status that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// `GET /metrics` (`head`: HEAD, the same without the body).
    Metrics { head: bool },
    /// An error status and its reason phrase.
    Refuse(u16, &'static str),
}

fn handle(
    mut stream: TcpStream,
    snapshots: &Sender<SnapshotReply>,
    waker: &Waker,
    timeout: Duration,
) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    stream.set_write_timeout(Some(timeout))?;
    let request = match read_head(&mut stream, deadline)? {
        Some(head) => parse_head(&head),
        None => Request::Refuse(431, "Request Header Fields Too Large"),
    };
    let head = match request {
        Request::Metrics { head } => head,
        Request::Refuse(code, reason) => {
            return respond(
                &mut stream,
                code,
                reason,
                "text/plain; charset=utf-8",
                reason.as_bytes(),
                false,
            );
        }
    };
    let (reply, answer) = mpsc::sync_channel(1);
    let stats = if snapshots.send(reply).is_ok() && waker.wake().is_ok() {
        answer
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    } else {
        None
    };
    let Some(stats) = stats else {
        let reason = "Service Unavailable";
        return respond(
            &mut stream,
            503,
            reason,
            "text/plain; charset=utf-8",
            b"the daemon did not answer in time",
            head,
        );
    };
    let body = exposition::render(stats, metrics_process::read(), buffer_pool());
    respond(
        &mut stream,
        200,
        "OK",
        exposition::CONTENT_TYPE,
        body.as_bytes(),
        head,
    )
}

/// The figures of the process's pool of large buffers, read on this thread (the pool has
/// its own lock; the event loop is not asked).
fn buffer_pool() -> exposition::BufferPool {
    let pool = rpcd_client::ipc::buffer_pool();
    let s = pool.stats();
    exposition::BufferPool {
        bytes: s.bytes as u64,
        max_bytes: pool.max() as u64,
        reused: s.reused,
        missed: s.missed,
    }
}

/// Read up to the blank line ending the head; `None` when it is longer than
/// [`HEAD_MAX`]. Running out of time or a closed connection is an error.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&head) {
            if end > HEAD_MAX {
                return Ok(None);
            }
            head.truncate(end);
            return Ok(Some(head));
        }
        if head.len() > HEAD_MAX {
            return Ok(None);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Where the head ends (the start of its blank line), CRLF or bare LF.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    crlf.into_iter().chain(lf).min()
}

/// The request line and headers, checked.
fn parse_head(head: &[u8]) -> Request {
    const BAD: Request = Request::Refuse(400, "Bad Request");
    let Ok(text) = std::str::from_utf8(head) else {
        return BAD;
    };
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let Some(line) = lines.next() else {
        return BAD;
    };
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return BAD;
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || !target.starts_with('/') {
        return BAD;
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return BAD;
    }
    for header in lines {
        match header.split_once(':') {
            Some((name, _)) if !name.is_empty() && !name.contains([' ', '\t']) => {}
            _ => return BAD,
        }
    }
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::Refuse(405, "Method Not Allowed"),
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != "/metrics" {
        return Request::Refuse(404, "Not Found");
    }
    Request::Metrics { head }
}

fn respond(
    stream: &mut TcpStream,
    code: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let allow = if code == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    stream.write_all(&out)?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    drain(stream);
    Ok(())
}

/// Read and drop what the client still sends (the rest of a refused request), briefly,
/// so that closing does not reset the connection before the client read the response.
fn drain(stream: &mut TcpStream) {
    const DRAIN_MAX: usize = 64 * 1024;
    const DRAIN_TIME: Duration = Duration::from_millis(200);
    let until = Instant::now() + DRAIN_TIME;
    let mut chunk = [0u8; 4096];
    let mut read = 0;
    while read < DRAIN_MAX {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => read += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked() {
        let get = |h: &str| parse_head(h.as_bytes());
        assert_eq!(
            get("GET /metrics HTTP/1.1\r\nHost: x"),
            Request::Metrics { head: false }
        );
        assert_eq!(
            get("GET /metrics?x=1 HTTP/1.0"),
            Request::Metrics { head: false }
        );
        assert_eq!(
            get("HEAD /metrics HTTP/1.1"),
            Request::Metrics { head: true }
        );
        assert_eq!(
            get("POST /metrics HTTP/1.1"),
            Request::Refuse(405, "Method Not Allowed")
        );
        assert_eq!(get("GET / HTTP/1.1"), Request::Refuse(404, "Not Found"));
        for bad in [
            "",
            "GET /metrics",
            "GET  /metrics HTTP/1.1",
            "GET /metrics HTTP/2",
            "GET metrics HTTP/1.1",
            "get /metrics HTTP/1.1",
            "GET /metrics HTTP/1.1\r\nno colon",
            "GET /metrics HTTP/1.1\r\nbad name: x",
        ] {
            assert_eq!(get(bad), Request::Refuse(400, "Bad Request"), "{bad:?}");
        }
        assert_eq!(
            parse_head(b"GET /\xff HTTP/1.1"),
            Request::Refuse(400, "Bad Request")
        );
    }

    #[test]
    fn head_ends_at_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(20));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
