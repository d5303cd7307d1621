//! An app's serving loop for tests: a thread answering every invocation on a connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rpcd_client::conn::Connection;
use rpcd_client::ipc::Outcome;

/// How long a serving thread waits for an invocation before it looks at its stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Threads answering each invocation that reaches a connection with `handler(args)`, until
/// the guard is dropped (the threads are then stopped and joined, even when the test
/// fails) or the connection closes.
#[derive(Debug)]
pub struct Serving {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Serving {
    /// Registers `function` on `conn` and answers its invocations from one thread.
    pub fn start(
        conn: Arc<Connection>,
        function: &str,
        handler: impl Fn(Vec<u8>) -> Outcome + Send + Sync + 'static,
    ) -> Serving {
        Serving::with_threads(conn, function, 1, handler)
    }

    /// Registers `function` on `conn` and answers its invocations from `threads` threads.
    pub fn with_threads(
        conn: Arc<Connection>,
        function: &str,
        threads: usize,
        handler: impl Fn(Vec<u8>) -> Outcome + Send + Sync + 'static,
    ) -> Serving {
        if let Err(e) = conn.register(function) {
            panic!("register {function}: {e}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let threads = (0..threads)
            .map(|_| {
                let (conn, stop, handler) = (conn.clone(), stop.clone(), handler.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) && !conn.is_closed() {
                        if let Some(inv) = conn.next_invocation(Some(POLL)) {
                            if conn
                                .send_result(inv.invocation, handler(inv.args.into_vec()))
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        Serving { stop, threads }
    }

    /// An app on its own connection to `daemon` (named `name`) serving `function`.
    pub fn on(
        daemon: &crate::Daemon,
        name: &str,
        function: &str,
        handler: impl Fn(Vec<u8>) -> Outcome + Send + Sync + 'static,
    ) -> Serving {
        Serving::start(Arc::new(daemon.connect(name)), function, handler)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let panicked = self.threads.drain(..).any(|t| t.join().is_err());
        if panicked && !thread::panicking() {
            panic!("a serving thread panicked");
        }
    }
}
