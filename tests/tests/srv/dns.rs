//! A tiny DNS responder for the SRV tests, written with `hickory-proto`: UDP
//! on 127.0.0.1 port 0, a zone the test replaces while it runs, names it
//! never answers (to make timeouts), and a count of the queries it was asked
//! per name and type, so a test waits on what the daemon did, not on a clock.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

#[derive(Default)]
struct State {
    records: Vec<Record>,
    silent: Vec<Name>,
    queries: HashMap<(String, RecordType), u64>,
}

/// The responder; dropping it stops its thread.
pub struct DnsServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DnsServer {
    pub fn start() -> DnsServer {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the DNS socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let addr = sock.local_addr().expect("DNS address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !sp.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let reply = answer(&mut st.lock().expect("zone lock"), &query);
                if let Some(bytes) = reply.and_then(|r| r.to_vec().ok()) {
                    let _ = sock.send_to(&bytes, from);
                }
            }
        });
        DnsServer {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// Serve `records` from now on.
    pub fn set(&self, records: Vec<Record>) {
        self.state.lock().expect("zone lock").records = records;
    }

    /// Never answer queries for `name`.
    pub fn silence(&self, name: &str) {
        self.state
            .lock()
            .expect("zone lock")
            .silent
            .push(name_of(name));
    }

    /// Queries asked so far for `name` (as written, lower case) and `rtype`.
    pub fn queries(&self, name: &str, rtype: RecordType) -> u64 {
        let st = self.state.lock().expect("zone lock");
        st.queries
            .get(&(name.to_ascii_lowercase(), rtype))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(st: &mut State, query: &Message) -> Option<Message> {
    let q = query.queries().first()?.clone();
    let key = (q.name().to_ascii().to_ascii_lowercase(), q.query_type());
    *st.queries.entry(key).or_default() += 1;
    if st.silent.contains(q.name()) {
        return None;
    }
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_authoritative(true)
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .add_query(q.clone());
    let named: Vec<&Record> = st.records.iter().filter(|r| r.name() == q.name()).collect();
    if named.is_empty() {
        m.set_response_code(ResponseCode::NXDomain);
        return Some(m);
    }
    for r in named
        .into_iter()
        .filter(|r| r.record_type() == q.query_type())
    {
        m.add_answer(r.clone());
        // The targets' addresses as additional records, as servers do.
        if let Some(RData::SRV(srv)) = r.data() {
            for a in st.records.iter().filter(|x| x.name() == srv.target()) {
                m.add_additional(a.clone());
            }
        }
    }
    Some(m)
}

fn name_of(s: &str) -> Name {
    Name::from_ascii(s).expect("a DNS name")
}

/// An SRV record of `name`.
pub fn srv(name: &str, ttl: u32, priority: u16, weight: u16, port: u16, target: &str) -> Record {
    Record::from_rdata(
        name_of(name),
        ttl,
        RData::SRV(SRV::new(priority, weight, port, name_of(target))),
    )
}

/// An A record of `name`.
pub fn a(name: &str, ttl: u32, ip: Ipv4Addr) -> Record {
    Record::from_rdata(name_of(name), ttl, RData::A(A(ip)))
}
