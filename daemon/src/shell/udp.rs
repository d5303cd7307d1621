//! The UDP socket: a bounded receive batch per wakeup, and ONE send path
//! with a bounded backlog for when the kernel's buffer is full.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use rpcd_transport::Transmit;
use tracing::debug;

/// Largest datagram read; anything this large may have been truncated by the
/// kernel and is not trusted. The buffer is fixed: nothing is sized by a packet.
pub const DATAGRAM_BUF: usize = 65_536;

/// What one receive produced.
#[derive(Debug)]
pub enum Received<'a> {
    /// A whole datagram.
    Datagram(SocketAddr, &'a [u8]),
    /// A datagram that filled the buffer (possibly truncated).
    Oversize,
}

/// What a send did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Handed to the kernel, or lost as the network would lose it.
    Done,
    /// Waiting in the backlog for the socket to drain.
    Queued,
    /// The backlog is full: dropped (the transport retransmits it).
    Dropped,
}

/// The daemon's UDP endpoint.
#[derive(Debug)]
pub struct Udp {
    socket: UdpSocket,
    token: Token,
    buf: Vec<u8>,
    backlog: VecDeque<Transmit>,
    backlog_max: usize,
    batch_max: usize,
    writable_wanted: bool,
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
            buf: vec![0u8; DATAGRAM_BUF],
            backlog: VecDeque::new(),
            backlog_max,
            batch_max: batch_max.max(1),
            writable_wanted: false,
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
    /// flood cannot keep the loop from the other sources.
    pub fn receive(&mut self, mut on: impl FnMut(Received<'_>)) -> usize {
        let mut n = 0;
        while n < self.batch_max {
            match self.socket.recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    n += 1;
                    if len >= self.buf.len() {
                        on(Received::Oversize);
                    } else {
                        on(Received::Datagram(from, &self.buf[..len]));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.ready = false;
                    return n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
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

    /// The one send path: straight to the kernel unless datagrams are
    /// already waiting (order is kept), else into the bounded backlog.
    pub fn send(&mut self, t: Transmit) -> Sent {
        if self.backlog.is_empty() {
            match self.socket.send_to(&t.bytes, t.to) {
                Ok(_) => return Sent::Done,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Unroutable or refused: as good as lost on the network.
                    debug!(error = %e, to = %t.to, "udp send error");
                    return Sent::Done;
                }
            }
        }
        if self.backlog.len() >= self.backlog_max {
            return Sent::Dropped;
        }
        self.backlog.push_back(t);
        Sent::Queued
    }

    /// Send the backlog until the socket would block, and ask for writable
    /// events exactly while some is left.
    pub fn flush(&mut self, registry: &Registry) {
        while let Some(t) = self.backlog.front() {
            match self.socket.send_to(&t.bytes, t.to) {
                Ok(_) => {
                    self.backlog.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(error = %e, to = %t.to, "udp send error");
                    self.backlog.pop_front();
                }
            }
        }
        let want = !self.backlog.is_empty();
        super::want_writable(
            registry,
            &mut self.socket,
            self.token,
            want,
            &mut self.writable_wanted,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_receive_takes_at_most_one_batch_and_remembers_the_rest() {
        let poll = mio::Poll::new().expect("poll");
        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        std_sock.set_nonblocking(true).expect("nonblocking");
        let addr = std_sock.local_addr().expect("addr");
        let mut udp = Udp::new(
            UdpSocket::from_std(std_sock),
            poll.registry(),
            Token(0),
            8,
            16,
        )
        .expect("udp");
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
}
