//! Host name resolution off the event loop.
//!
//! The system resolver (`getaddrinfo`: DNS, /etc/hosts) blocks, and the event
//! loop never does; so names go to one resolver thread through a bounded
//! queue, and answers come back through a channel plus a `mio::Waker`.
//! `srv:` targets (DNS SRV names) go to DNS through `hickory-resolver`, the
//! servers of `[dns]` (else the system's `/etc/resolv.conf`); the thread
//! answers with the records and their TTL, the router keeps and orders them.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, Protocol, ResolverConfig, ResolverOpts,
};
use hickory_resolver::error::{ResolveError, ResolveErrorKind};
use hickory_resolver::proto::rr::RData;
use hickory_resolver::Resolver as Dns;

use crate::router::srv::{SrvAnswer, SrvRecord};
use crate::router::{LookupAnswer, LookupRequest, Resolved};
use crate::settings::{srv_target, DnsSettings};

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
    /// Start the thread; it asks DNS as `dns` says and wakes `waker` after
    /// each answer.
    pub fn start(waker: Arc<mio::Waker>, dns: &DnsSettings) -> std::io::Result<Resolver> {
        let (jobs, job_rx) = mpsc::sync_channel::<LookupRequest>(RESOLVE_QUEUE_MAX);
        let (answer_tx, answers) = mpsc::channel();
        let dns = dns.clone();
        let thread = std::thread::Builder::new()
            .name("rpcd-resolver".into())
            .spawn(move || {
                // Made on the thread, when first needed: a daemon that never
                // names an SRV target never reads resolv.conf for it.
                let mut client: Option<Result<Dns, String>> = None;
                for job in job_rx {
                    let results = job
                        .targets
                        .iter()
                        .map(|t| match srv_target(t) {
                            Some(Ok(name)) => {
                                let c = client.get_or_insert_with(|| dns_client(&dns));
                                resolve_srv(c.as_ref(), name).map(Resolved::Srv)
                            }
                            Some(Err(e)) => Err(e),
                            None => resolve(t).map(Resolved::Addr),
                        })
                        .collect();
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

/// The DNS client `dns` describes, or why there is none.
fn dns_client(dns: &DnsSettings) -> Result<Dns, String> {
    let (config, mut opts) = if dns.servers.is_empty() {
        hickory_resolver::system_conf::read_system_conf().map_err(|e| {
            format!(
                "cannot read the system's DNS settings (/etc/resolv.conf): {e}; set [dns] servers"
            )
        })?
    } else {
        let mut group = NameServerConfigGroup::new();
        for a in &dns.servers {
            group.push(NameServerConfig::new(*a, Protocol::Udp));
        }
        (
            ResolverConfig::from_parts(None, Vec::new(), group),
            ResolverOpts::default(),
        )
    };
    opts.timeout = dns.timeout;
    opts.attempts = dns.attempts;
    Dns::new(config, opts).map_err(|e| format!("cannot start the DNS client: {e}"))
}

/// Look up the SRV records of `name` and the addresses of their targets.
/// No records, NXDOMAIN, a timeout or targets without any address are
/// errors that say which.
pub fn resolve_srv(dns: Result<&Dns, &String>, name: &str) -> Result<SrvAnswer, String> {
    let shown = format!("srv:{name}");
    let dns = dns.map_err(|e| format!("{shown}: {e}"))?;
    let lookup = dns
        .srv_lookup(name)
        .map_err(|e| format!("{shown}: {}", describe(&e)))?;
    let now = Instant::now();
    let mut valid_until = lookup.as_lookup().valid_until();
    let mut records = Vec::new();
    let mut unresolved = Vec::new();
    for srv in lookup.iter() {
        // RFC 2782: a target of "." means the service is decidedly not here.
        if srv.target().is_root() {
            continue;
        }
        let target = srv.target().to_utf8();
        let mut addrs: Vec<IpAddr> = lookup
            .as_lookup()
            .record_iter()
            .filter(|r| r.name() == srv.target())
            .filter_map(|r| match r.data() {
                Some(RData::A(a)) => Some(IpAddr::V4(a.0)),
                Some(RData::AAAA(a)) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        if addrs.is_empty() {
            match dns.lookup_ip(srv.target().clone()) {
                Ok(ips) => {
                    valid_until = valid_until.min(ips.valid_until());
                    addrs = ips.iter().collect();
                }
                Err(e) => unresolved.push(format!("{target}: {}", describe(&e))),
            }
        }
        // IPv4 first: the daemon listens on IPv4 by default.
        addrs.sort_by_key(IpAddr::is_ipv6);
        addrs.dedup();
        records.push(SrvRecord {
            priority: srv.priority(),
            weight: srv.weight(),
            port: srv.port(),
            target,
            addrs,
        });
    }
    if records.is_empty() {
        return Err(format!(
            "{shown}: no SRV records (the service is not available there)"
        ));
    }
    if records.iter().all(|r| r.addrs.is_empty()) {
        return Err(format!(
            "{shown}: no target has an address ({})",
            unresolved.join("; ")
        ));
    }
    Ok(SrvAnswer {
        records,
        ttl: valid_until.saturating_duration_since(now),
    })
}

/// A resolver error in words: NXDOMAIN and "no records" apart, timeouts plain.
fn describe(e: &ResolveError) -> String {
    match e.kind() {
        ResolveErrorKind::NoRecordsFound { response_code, .. } => {
            format!("no records ({response_code})")
        }
        ResolveErrorKind::Timeout => "DNS timed out".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        // Nothing answers DNS on this port: the SRV name fails, in words.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dns = DnsSettings {
            servers: vec![silent.local_addr().unwrap()],
            timeout: Duration::from_millis(100),
            attempts: 1,
            ..DnsSettings::default()
        };
        let r = Resolver::start(waker, &dns).unwrap();
        assert!(r.submit(LookupRequest {
            id: crate::router::LookupId(5),
            targets: vec![
                "127.0.0.1:1".into(),
                "localhost:2".into(),
                "srv:_kv._udp.test.".into(),
            ],
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
        let addr = |s: &str| Ok(Resolved::Addr(s.parse().unwrap()));
        assert_eq!(answer.results[0], addr("127.0.0.1:1"));
        assert_eq!(answer.results[1], addr("127.0.0.1:2"));
        let e = answer.results[2].clone().unwrap_err();
        assert!(
            e.starts_with("srv:_kv._udp.test.: ") && e.contains("timed out"),
            "{e}"
        );
    }
}
