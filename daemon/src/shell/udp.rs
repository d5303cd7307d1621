//! The UDP socket: a bounded receive batch per wakeup, taken with `recvmmsg`, and ONE send
//! path with a bounded backlog: what an iteration of the loop produces is handed to the
//! kernel together by `sendmmsg`, with runs of equal-size datagrams to one peer as one UDP
//! GSO send (`UDP_SEGMENT`) where the kernel takes it (the send path is in `send`).

mod send;

use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use rpcd_transport::Transmit;
use tracing::debug;

pub use send::Sent;
use send::SEND_WIDTH;

/// Largest datagram read; anything this large may have been truncated by the
/// kernel and is not trusted. The buffers are fixed: nothing is sized by a packet.
pub const DATAGRAM_BUF: usize = 65_536;

/// Datagrams one `recvmmsg` takes at most, each into its own `DATAGRAM_BUF` slot (the
/// slots are touched only as far as datagrams fill them).
const RECV_WIDTH: usize = 16;

/// What one receive produced.
#[derive(Debug)]
pub enum Received<'a> {
    /// A whole datagram.
    Datagram(SocketAddr, &'a [u8]),
    /// A datagram that filled the buffer (possibly truncated).
    Oversize,
}

/// The daemon's UDP endpoint.
#[derive(Debug)]
pub struct Udp {
    socket: UdpSocket,
    token: Token,
    /// Receive slots for `recvmmsg`, and what each received: (length, source).
    bufs: Vec<Vec<u8>>,
    received: Vec<(usize, Option<SocketAddr>)>,
    recv_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
    /// The destinations of one `sendmmsg`, kept between sends (no allocation per send).
    send_addrs: Vec<Option<SockaddrStorage>>,
    backlog: VecDeque<Transmit>,
    /// Buffers of datagrams the kernel has taken, for [`Udp::take_sent`].
    sent: Vec<Vec<u8>>,
    backlog_max: usize,
    batch_max: usize,
    writable_wanted: bool,
    /// Whether to try UDP GSO; cleared the first time the kernel refuses it.
    gso: bool,
    /// Tests: the error the next GSO send gets instead of reaching the kernel.
    #[cfg(test)]
    gso_refusal: Option<Errno>,
    /// Tests: `recvmmsg` calls made (those that received and those that heard `EAGAIN`).
    #[cfg(test)]
    receive_calls: usize,
    /// Readable and not known to be drained: visit again without sleeping.
    pub ready: bool,
}

impl Udp {
    /// Register `socket` for reading under `token`.
    pub fn new(
        mut socket: UdpSocket,
        registry: &Registry,
        token: Token,
        batch_max: usize,
        backlog_max: usize,
    ) -> io::Result<Udp> {
        registry.register(&mut socket, token, Interest::READABLE)?;
        Ok(Udp {
            socket,
            token,
            bufs: (0..RECV_WIDTH).map(|_| vec![0u8; DATAGRAM_BUF]).collect(),
            received: Vec::with_capacity(RECV_WIDTH),
            recv_headers: MultiHeaders::preallocate(RECV_WIDTH, None),
            send_headers: MultiHeaders::preallocate(SEND_WIDTH, None),
            send_addrs: Vec::with_capacity(SEND_WIDTH),
            backlog: VecDeque::new(),
            sent: Vec::new(),
            backlog_max,
            batch_max: batch_max.max(1),
            writable_wanted: false,
            gso: true,
            #[cfg(test)]
            gso_refusal: None,
            #[cfg(test)]
            receive_calls: 0,
            ready: true,
        })
    }

    /// Limits after a reload.
    pub fn set_limits(&mut self, batch_max: usize, backlog_max: usize) {
        self.batch_max = batch_max.max(1);
        self.backlog_max = backlog_max;
    }

    /// Read at most one batch of datagrams, handing each to `on`. Leaves
    /// `ready` set when the batch ended before the socket was drained, so a
    /// flood cannot keep the loop from the other sources; a `recvmmsg` that
    /// returns fewer datagrams than it asked for counts as drained.
    pub fn receive(&mut self, mut on: impl FnMut(Received<'_>)) -> usize {
        let mut n = 0;
        while n < self.batch_max {
            let want = (self.batch_max - n).min(RECV_WIDTH);
            match self.recv_some(want) {
                Ok(()) => {
                    #[cfg(test)]
                    {
                        self.receive_calls += 1;
                    }
                    let got = self.received.len();
                    n += got;
                    for (slot, &(len, from)) in self.received.iter().enumerate() {
                        if len >= DATAGRAM_BUF {
                            on(Received::Oversize);
                        } else if let Some(from) = from {
                            on(Received::Datagram(from, &self.bufs[slot][..len]));
                        }
                    }
                    // A short batch emptied the queue: the socket is registered
                    // edge-triggered, so a datagram arriving from now on brings a new
                    // readable event. Asking again would only hear `EAGAIN` (a syscall
                    // per wakeup, on the path of every reply at one call in flight).
                    if got < want {
                        self.ready = false;
                        return n;
                    }
                }
                Err(Errno::EAGAIN) => {
                    #[cfg(test)]
                    {
                        self.receive_calls += 1;
                    }
                    self.ready = false;
                    return n;
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    // ICMP errors (port unreachable) surface here; the
                    // transport's timers handle the peer being gone.
                    n += 1;
                    debug!(error = %e, "udp receive error");
                }
            }
        }
        self.ready = true;
        n
    }

    /// One `recvmmsg` of up to `want` datagrams into the slots; fills `received`.
    fn recv_some(&mut self, want: usize) -> Result<(), Errno> {
        self.received.clear();
        // On the stack: no allocation per receive.
        let want = want.min(self.bufs.len());
        let mut bufs = self.bufs.iter_mut();
        let mut iovs: [[IoSliceMut<'_>; 1]; RECV_WIDTH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                bufs.next().map_or(&mut [][..], |b| b.as_mut_slice()),
            )]
        });
        let results = recvmmsg(
            self.socket.as_raw_fd(),
            &mut self.recv_headers,
            iovs[..want].iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        for msg in results {
            self.received
                .push((msg.bytes, msg.address.as_ref().and_then(socket_addr)));
        }
        Ok(())
    }
}

/// The source of a received datagram, if it is an IP address.
fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    storage
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Udp` on a loopback port, registered as `token`, taking batches of 8 datagrams;
    /// and its address.
    fn bound(registry: &mio::Registry, token: Token) -> (Udp, SocketAddr) {
        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        std_sock.set_nonblocking(true).expect("nonblocking");
        let addr = std_sock.local_addr().expect("addr");
        let udp = Udp::new(UdpSocket::from_std(std_sock), registry, token, 8, 16).expect("udp");
        (udp, addr)
    }

    #[test]
    fn one_receive_takes_at_most_one_batch_and_remembers_the_rest() {
        let poll = mio::Poll::new().expect("poll");
        let (mut udp, addr) = bound(poll.registry(), Token(0));
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind sender");
        for i in 0..20u8 {
            sender.send_to(&[i], addr).expect("send");
        }
        let mut seen = Vec::new();
        let mut take = |udp: &mut Udp| {
            udp.receive(|r| {
                if let Received::Datagram(_, b) = r {
                    seen.push(b[0]);
                }
            })
        };
        assert_eq!(take(&mut udp), 8);
        assert!(udp.ready, "more is waiting");
        assert_eq!(take(&mut udp), 8);
        assert_eq!(take(&mut udp), 4);
        assert!(!udp.ready, "drained");
        assert_eq!(seen, (0..20).collect::<Vec<u8>>());
    }

    /// A short batch means the queue was empty: no second `recvmmsg` only to hear
    /// `EAGAIN`, and (edge-triggered) the next datagram still wakes the loop.
    #[test]
    fn a_short_batch_ends_the_turn_and_the_next_datagram_brings_an_event() {
        let mut poll = mio::Poll::new().expect("poll");
        let (mut udp, addr) = bound(poll.registry(), Token(7));
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind sender");
        let mut events = mio::Events::with_capacity(8);
        let mut readable = |poll: &mut mio::Poll| {
            poll.poll(&mut events, Some(std::time::Duration::from_secs(5)))
                .expect("poll");
            events
                .iter()
                .any(|e| e.token() == Token(7) && e.is_readable())
        };
        for i in 0..3u8 {
            sender.send_to(&[i], addr).expect("send");
        }
        assert!(readable(&mut poll), "the first datagrams are an event");
        let mut seen = Vec::new();
        let n = udp.receive(|r| {
            if let Received::Datagram(_, b) = r {
                seen.push(b[0]);
            }
        });
        assert_eq!((n, seen.as_slice()), (3, &[0u8, 1, 2][..]));
        assert!(!udp.ready, "a short batch counts as drained");
        assert_eq!(udp.receive_calls, 1, "no recvmmsg only to hear EAGAIN");
        sender.send_to(&[3], addr).expect("send");
        assert!(
            readable(&mut poll),
            "a datagram after the short batch is an event"
        );
        let n = udp.receive(|r| {
            if let Received::Datagram(_, b) = r {
                seen.push(b[0]);
            }
        });
        assert_eq!((n, seen.last()), (1, Some(&3)));
        assert_eq!(udp.receive_calls, 2);
    }
}
