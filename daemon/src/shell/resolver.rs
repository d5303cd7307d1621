//! Host name resolution off the event loop.
//!
//! The system resolver (`getaddrinfo`: DNS, /etc/hosts) blocks, and the event
//! loop never does; so names go to one resolver thread through a bounded
//! queue, and answers come back through a channel plus a `mio::Waker`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::router::{LookupAnswer, LookupRequest};

/// Lookups the thread's queue holds: as many as the router lets be pending,
/// so a submit never fails while the thread runs.
pub const RESOLVE_QUEUE_MAX: usize = crate::router::LOOKUPS_PENDING_MAX;

/// Handle to the resolver thread; dropping it stops the thread.
#[derive(Debug)]
pub struct Resolver {
    jobs: Option<SyncSender<LookupRequest>>,
    answers: Receiver<LookupAnswer>,
    thread: Option<JoinHandle<()>>,
}

impl Resolver {
    /// Start the thread; it wakes `waker` after each answer.
    pub fn start(waker: Arc<mio::Waker>) -> std::io::Result<Resolver> {
        let (jobs, job_rx) = mpsc::sync_channel::<LookupRequest>(RESOLVE_QUEUE_MAX);
        let (answer_tx, answers) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("rpcd-resolver".into())
            .spawn(move || {
                for job in job_rx {
                    let results = job.targets.iter().map(|t| resolve(t)).collect();
                    if answer_tx
                        .send(LookupAnswer {
                            id: job.id,
                            results,
                        })
                        .is_err()
                    {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(Resolver {
            jobs: Some(jobs),
            answers,
            thread: Some(thread),
        })
    }

    /// Queue a lookup; false when the queue is full.
    pub fn submit(&self, job: LookupRequest) -> bool {
        match self.jobs.as_ref().map(|j| j.try_send(job)) {
            Some(Ok(())) => true,
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => false,
        }
    }

    /// The next answer, if one is ready.
    pub fn poll(&self) -> Option<LookupAnswer> {
        self.answers.try_recv().ok()
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.jobs = None; // ends the thread's loop once its current lookup returns
        if let Some(t) = self.thread.take() {
            // A lookup can block for the resolver's own timeout; do not wait for it.
            drop(t);
        }
    }
}

/// Resolve one `host:port`, preferring IPv4 (the daemon listens on IPv4 by default).
pub fn resolve(target: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| format!("{target}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{target}: no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_through_the_system_resolver() {
        assert_eq!(
            resolve("localhost:7400").unwrap(),
            "127.0.0.1:7400".parse().unwrap()
        );
        assert!(resolve("no port").is_err());
    }

    #[test]
    fn answers_come_back_with_a_wake() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(9)).unwrap());
        let r = Resolver::start(waker).unwrap();
        assert!(r.submit(LookupRequest {
            id: crate::router::LookupId(5),
            targets: vec!["127.0.0.1:1".into(), "localhost:2".into()],
        }));
        let mut events = mio::Events::with_capacity(4);
        let answer = loop {
            if let Some(a) = r.poll() {
                break a;
            }
            poll.poll(&mut events, Some(std::time::Duration::from_secs(5)))
                .unwrap();
        };
        assert_eq!(answer.id, crate::router::LookupId(5));
        assert_eq!(answer.results[0], Ok("127.0.0.1:1".parse().unwrap()));
        assert_eq!(answer.results[1], Ok("127.0.0.1:2".parse().unwrap()));
    }
}
