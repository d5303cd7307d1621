//! Helper processes for the fault tests, started inside a test host's network namespace
//! with `ip netns exec`:
//!
//! ```text
//! fault_helper tcp-serve ADDR:PORT                      # echo fixed-size messages
//! fault_helper tcp-client ADDR:PORT CONNS COUNT SIZE TIMEOUT_MS
//! fault_helper hang SOCKET FUNCTION                     # register FUNCTION, never answer
//!                                                       # (prints one line per call taken)
//! fault_helper oracle SOCKET LOG                        # serve `oracle.run`, log each run
//! fault_helper oracle SOCKET LOG --double-every N       # the same, a deliberately broken
//!                                                       # app: every Nth run logged twice
//! ```
//!
//! `tcp-client` runs COUNT request/response exchanges of SIZE bytes over CONNS
//! connections (one thread each) and prints one line per exchange: `ok MICROS` or
//! `fail`. An exchange that takes longer than TIMEOUT_MS fails and its connection is
//! replaced. `tcp-serve`, `hang` and `oracle` run until killed, at most 10 minutes.
//!
//! `oracle` is the at-most-once oracle's serving app: `oracle.run(nonce: u64)` appends
//! `NONCE\n` to LOG (one `O_APPEND` write, so lines never interleave and a SIGKILL
//! after the write keeps it) *before* it replies with the nonce. Every caller sends a
//! nonce of its own, so LOG is the exact list of executions: a test asserts no nonce
//! ran twice and every `ok` ran exactly once, whatever else happened. It reconnects and
//! registers again when its daemon restarts, and appends to LOG across its own restarts.
//!
//! `--double-every N` (N >= 1) breaks the oracle on purpose: every Nth invocation this
//! app takes is recorded as two executions, as if it had run twice. Only a test that
//! proves a checker catches a double execution passes it (there is no environment
//! switch, so it is never on by accident).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Upper bound on how long a serving helper lives if nobody kills it.
const LIFETIME_MAX: Duration = Duration::from_secs(600);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match words.as_slice() {
        ["tcp-serve", addr] => tcp_serve(addr),
        ["tcp-client", addr, conns, count, size, timeout_ms] => {
            tcp_client(addr, conns, count, size, timeout_ms)
        }
        ["hang", socket, function] => hang(socket, function),
        ["oracle", socket, log] => oracle(socket, log, None),
        ["oracle", socket, log, "--double-every", n] => match n.parse::<u64>() {
            Ok(n) if n >= 1 => oracle(socket, log, Some(n)),
            _ => Err(format!("--double-every {n:?}: a count >= 1").into()),
        },
        _ => Err("usage: see the doc comment of tests/src/bin/fault_helper.rs".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fault_helper: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn tcp_serve(addr: &str) -> Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("listening");
    let started = Instant::now();
    listener.set_nonblocking(true)?;
    while started.elapsed() < LIFETIME_MAX {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                std::thread::spawn(move || echo(stream));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Echo whatever arrives until the peer closes.
fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 65_536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn tcp_client(addr: &str, conns: &str, count: &str, size: &str, timeout_ms: &str) -> Result<()> {
    let addr: SocketAddr = addr.parse()?;
    let conns: usize = conns.parse()?;
    let count: usize = count.parse()?;
    let size: usize = size.parse()?;
    let timeout = Duration::from_millis(timeout_ms.parse()?);
    let threads: Vec<_> = (0..conns)
        .map(|t| {
            let n = count / conns + usize::from(t < count % conns);
            std::thread::spawn(move || exchanges(addr, n, size, timeout))
        })
        .collect();
    let mut out = String::new();
    for t in threads {
        for r in t.join().map_err(|_| "client thread panicked")? {
            match r {
                Some(us) => out.push_str(&format!("ok {us}\n")),
                None => out.push_str("fail\n"),
            }
        }
    }
    print!("{out}");
    Ok(())
}

/// `n` exchanges on one connection (re-opened after a failure); latency in µs or `None`.
fn exchanges(addr: SocketAddr, n: usize, size: usize, timeout: Duration) -> Vec<Option<u64>> {
    let mut results = Vec::with_capacity(n);
    let mut stream: Option<TcpStream> = None;
    let mut msg = vec![0u8; size];
    let mut back = vec![0u8; size];
    for i in 0..n {
        let started = Instant::now();
        if stream.is_none() {
            stream = TcpStream::connect_timeout(&addr, timeout).ok();
            if let Some(s) = &stream {
                let _ = s.set_nodelay(true);
            }
        }
        let Some(s) = stream.as_mut() else {
            results.push(None);
            continue;
        };
        msg[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let ok = exchange(s, &msg, &mut back, started + timeout) && back == msg;
        if ok {
            results.push(Some(started.elapsed().as_micros() as u64));
        } else {
            results.push(None);
            stream = None;
        }
    }
    results
}

fn exchange(s: &mut TcpStream, msg: &[u8], back: &mut [u8], until: Instant) -> bool {
    let left = until.saturating_duration_since(Instant::now());
    if left.is_zero() || s.set_write_timeout(Some(left)).is_err() || s.write_all(msg).is_err() {
        return false;
    }
    let mut got = 0;
    while got < back.len() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match s.read(&mut back[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(k) => got += k,
        }
    }
    true
}

fn hang(socket: &str, function: &str) -> Result<()> {
    let conn = rpcd_client::conn::Connection::connect(socket.as_ref(), "hang")?;
    conn.register(function)?;
    println!("registered");
    let started = Instant::now();
    // Take invocations and never answer them.
    let mut held = Vec::new();
    while started.elapsed() < LIFETIME_MAX && !conn.is_closed() {
        if let Some(inv) = conn.next_invocation(Some(Duration::from_millis(100))) {
            held.push(inv.invocation);
            // Tells a test the call is in this app's hands (stdout is a pipe or null).
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "invocation").and_then(|()| out.flush());
        }
    }
    Ok(())
}

fn oracle(socket: &str, log: &str, double_every: Option<u64>) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    let taken = AtomicU64::new(0);
    let log = Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?,
    );
    let options = rpcd_client::ClientOptions::named("oracle");
    let client = rpcd_client::Client::connect_with(std::path::Path::new(socket), options)?;
    let server = rpcd_client::Server::with_options(&client, {
        let mut o = rpcd_client::ServerOptions::default();
        o.workers = 4;
        o
    })?;
    let handler = rpcd_client::Handler::typed("oracle.run", move |(nonce,): (u64,)| {
        let mut line = format!("{nonce}\n");
        let k = taken.fetch_add(1, Ordering::Relaxed) + 1;
        if double_every.is_some_and(|n| k.is_multiple_of(n)) {
            // The deliberate bug: this run is recorded twice.
            line = format!("{nonce}\n{nonce}\n");
        }
        // The execution is the write: once it returns, the run is on record.
        log.lock()
            .map_err(|_| "log lock poisoned".to_owned())?
            .write_all(line.as_bytes())
            .map_err(|e| format!("log: {e}"))?;
        Ok::<u64, String>(nonce)
    });
    server.register("oracle.run", handler)?;
    println!("registered");
    let started = Instant::now();
    while started.elapsed() < LIFETIME_MAX {
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
    Ok(())
}
