//! Helper processes of the performance benchmark (`tests/tests/perf_bench.rs`); not a tool.
//!
//! ```text
//! perf_helper echo-server UDS            # the floor's serving app: echoes each frame
//! perf_helper relay-connect UDS          # the floor's relay next to the serving app
//! perf_helper relay-listen UDS PEER      # the floor's relay next to the caller
//! perf_helper loop-relay-connect UDS     # the same relays, each one thread in an event loop
//! perf_helper loop-relay-listen UDS PEER
//! perf_helper tarpc-server               # the baseline: tarpc kv.get over TCP loopback
//! ```
//!
//! Each prints one line `ready [ADDRESS]` on stdout once it serves, then runs until killed.
//! The relays are as plain as a relay gets: one blocking thread per direction, one frame
//! per datagram and one syscall per frame each way. The `loop-` relays forward the same way
//! (one datagram per frame, one write per frame) but from one thread waiting in `epoll`
//! (mio, edge-triggered, as rpcd's shell does), so that the floor's figures can be split into
//! what the event loop costs and what rpcd's own work costs.

// A helper of a benchmark: a failure is reported by exiting with the panic message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod perf_common;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use perf_common::{read_frame, write_frame, Kv};
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;

fn ready(addr: Option<SocketAddr>) {
    let mut out = std::io::stdout().lock();
    match addr {
        Some(a) => writeln!(out, "ready {a}").unwrap(),
        None => writeln!(out, "ready").unwrap(),
    }
    out.flush().unwrap();
}

fn echo_server(path: &str) {
    let listener = UnixListener::bind(path).unwrap();
    ready(None);
    let (stream, _) = listener.accept().unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let (mut body, mut scratch) = (Vec::new(), Vec::new());
    while read_frame(&mut reader, &mut body).unwrap() {
        write_frame(&mut writer, &mut scratch, &body).unwrap();
    }
}

/// Frames from `uds` to `udp` (connected) on a thread; datagrams from `udp` to `uds` here.
fn relay(uds: UnixStream, udp: UdpSocket, first: Option<Vec<u8>>) {
    let (mut to_uds, from_uds) = (uds.try_clone().unwrap(), uds);
    let to_udp = udp.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from_uds);
        let mut body = Vec::new();
        while read_frame(&mut reader, &mut body).unwrap() {
            to_udp.send(&body).unwrap();
        }
        std::process::exit(0);
    });
    let mut scratch = Vec::new();
    if let Some(d) = first {
        write_frame(&mut to_uds, &mut scratch, &d).unwrap();
    }
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = udp.recv(&mut buf).unwrap();
        write_frame(&mut to_uds, &mut scratch, &buf[..n]).unwrap();
    }
}

fn relay_connect(path: &str, looped: bool) {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    ready(Some(udp.local_addr().unwrap()));
    let uds = UnixStream::connect(path).unwrap();
    // The peer relay is whoever sends the first datagram.
    let mut buf = vec![0u8; 65_536];
    let (n, from) = udp.recv_from(&mut buf).unwrap();
    udp.connect(from).unwrap();
    if looped {
        loop_relay(uds, udp, Some(buf[..n].to_vec()));
    }
    relay(uds, udp, Some(buf[..n].to_vec()));
}

fn relay_listen(path: &str, peer: &str, looped: bool) {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(peer).unwrap();
    let listener = UnixListener::bind(path).unwrap();
    ready(Some(udp.local_addr().unwrap()));
    let (uds, _) = listener.accept().unwrap();
    if looped {
        loop_relay(uds, udp, None);
    }
    relay(uds, udp, None);
}

/// The `loop-` relays: one thread, one `epoll` for both sockets.
fn loop_relay(uds: UnixStream, udp: UdpSocket, first: Option<Vec<u8>>) -> ! {
    use mio::{Events, Interest, Poll, Token};
    use std::io::{ErrorKind, Read};
    const UDS: Token = Token(0);
    const UDP: Token = Token(1);
    uds.set_nonblocking(true).unwrap();
    udp.set_nonblocking(true).unwrap();
    let mut uds = mio::net::UnixStream::from_std(uds);
    let mut udp = mio::net::UdpSocket::from_std(udp);
    let mut poll = Poll::new().unwrap();
    poll.registry()
        .register(&mut uds, UDS, Interest::READABLE | Interest::WRITABLE)
        .unwrap();
    poll.registry()
        .register(&mut udp, UDP, Interest::READABLE)
        .unwrap();
    let mut events = Events::with_capacity(16);
    let (mut inbuf, mut out) = (vec![0u8; 65_536], Vec::new());
    let mut written = 0;
    let mut have = 0;
    let mut dgram = vec![0u8; 65_536];
    let frame = |out: &mut Vec<u8>, body: &[u8]| {
        out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
        out.extend_from_slice(body);
    };
    if let Some(d) = first {
        frame(&mut out, &d);
    }
    loop {
        // Flush what is owed to the app: one write per frame, as the plain relays do; a
        // partial write leaves `written` bytes of the head frame sent.
        while !out.is_empty() {
            let len = 4 + u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
            match (&uds).write(&out[written..len]) {
                Ok(n) => {
                    written += n;
                    if written == len {
                        out.drain(..len);
                        written = 0;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("write to the app: {e}"),
            }
        }
        poll.poll(&mut events, None).unwrap();
        for event in &events {
            match event.token() {
                UDS if event.is_readable() => loop {
                    let room = inbuf.len() - have;
                    let n = match (&uds).read(&mut inbuf[have..]) {
                        Ok(0) => std::process::exit(0),
                        Ok(n) => n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("read from the app: {e}"),
                    };
                    have += n;
                    let mut at = 0;
                    while have - at >= 4 {
                        let len =
                            u32::from_le_bytes(inbuf[at..at + 4].try_into().unwrap()) as usize;
                        if have - at < 4 + len {
                            break;
                        }
                        udp.send(&inbuf[at + 4..at + 4 + len]).unwrap();
                        at += 4 + len;
                    }
                    inbuf.copy_within(at..have, 0);
                    have -= at;
                    // A short read drained the socket: the next bytes bring a new event.
                    if n < room {
                        break;
                    }
                },
                UDP => loop {
                    match udp.recv(&mut dgram) {
                        Ok(n) => frame(&mut out, &dgram[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("receive: {e}"),
                    }
                },
                _ => {}
            }
        }
    }
}

#[derive(Clone)]
struct KvServer(Arc<Mutex<HashMap<String, String>>>);

impl Kv for KvServer {
    async fn get(self, _: tarpc::context::Context, key: String) -> Option<String> {
        self.0.lock().unwrap().get(&key).cloned()
    }
}

fn tarpc_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut listener = tarpc::serde_transport::tcp::listen("127.0.0.1:0", Bincode::default)
            .await
            .unwrap();
        listener.config_mut().max_frame_length(64 << 20);
        ready(Some(listener.local_addr()));
        let store = KvServer(Arc::new(Mutex::new(HashMap::from([(
            perf_common::KEY.to_owned(),
            perf_common::VALUE.to_owned(),
        )]))));
        while let Some(transport) = listener.next().await {
            let Ok(transport) = transport else { continue };
            let server = store.clone();
            tokio::spawn(
                BaseChannel::with_defaults(transport)
                    .execute(server.serve())
                    .for_each(|call| async move {
                        tokio::spawn(call);
                    }),
            );
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["echo-server", path] => echo_server(path),
        ["relay-connect", path] => relay_connect(path, false),
        ["relay-listen", path, peer] => relay_listen(path, peer, false),
        ["loop-relay-connect", path] => relay_connect(path, true),
        ["loop-relay-listen", path, peer] => relay_listen(path, peer, true),
        ["tarpc-server"] => tarpc_server(),
        _ => {
            eprintln!("usage: see the module documentation of tests/examples/perf_helper.rs");
            std::process::exit(2);
        }
    }
}
