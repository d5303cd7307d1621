//! The send path: one bounded backlog, which each iteration's flush hands to the kernel
//! together by `sendmmsg`, with runs of equal-size datagrams to one peer as one UDP GSO
//! send (`UDP_SEGMENT`) where the kernel takes it; the buffers of what the kernel took go
//! back to the transport.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::AsRawFd;

use mio::Registry;
use nix::errno::Errno;
use nix::sys::socket::{sendmmsg, sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
use rpcd_transport::Transmit;
use tracing::{debug, info};

use super::Udp;

/// Datagrams one `sendmmsg` hands to the kernel at most; also the backlog length at which
/// a send goes out before the iteration ends.
pub(super) const SEND_WIDTH: usize = 64;

/// Most segments in one GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64 or more).
const GSO_SEGMENTS_MAX: usize = 64;

/// Most bytes in one GSO send: what fits one IP datagram's payload.
const GSO_BYTES_MAX: usize = 65_000;

/// What a send did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Waiting in the backlog: it goes out with the iteration's other datagrams at the
    /// next flush, or when the socket drains.
    Queued,
    /// The backlog is full: dropped (the transport retransmits it).
    Dropped,
}

impl Udp {
    /// Whether sends may use UDP GSO (on until the kernel refuses it once).
    #[cfg(test)]
    pub fn set_gso(&mut self, on: bool) {
        self.gso = on;
    }

    /// The one send path: into the bounded backlog, which the iteration's flush hands to
    /// the kernel in as few syscalls as it can (order is kept). A backlog of a full
    /// `sendmmsg` goes out at once.
    pub fn send(&mut self, t: Transmit) -> Sent {
        if self.backlog.len() >= self.backlog_max.min(SEND_WIDTH) {
            self.send_backlog();
        }
        if self.backlog.len() >= self.backlog_max {
            return Sent::Dropped;
        }
        self.backlog.push_back(t);
        Sent::Queued
    }

    /// The buffers of the datagrams sent since the last call (at most a
    /// `sendmmsg` of them), for the transport's next bundles.
    pub fn take_sent(&mut self) -> std::vec::Drain<'_, Vec<u8>> {
        self.sent.drain(..)
    }

    /// Send the backlog until the socket would block, and ask for writable
    /// events exactly while some is left.
    pub fn flush(&mut self, registry: &Registry) {
        self.send_backlog();
        let want = !self.backlog.is_empty();
        crate::shell::want_writable(
            registry,
            &mut self.socket,
            self.token,
            want,
            &mut self.writable_wanted,
        );
    }

    /// Hands the backlog to the kernel until it is empty or the socket would block.
    fn send_backlog(&mut self) {
        while !self.backlog.is_empty() {
            match self.send_some() {
                Ok(sent) => {
                    for t in self.backlog.drain(..sent) {
                        // Bounded even when nobody takes them: one `sendmmsg` at a time.
                        if self.sent.len() < SEND_WIDTH {
                            self.sent.push(t.bytes);
                        }
                    }
                }
                Err(Errno::EAGAIN | Errno::ENOBUFS) => break,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    // Unroutable or refused: as good as lost on the network.
                    if let Some(t) = self.backlog.pop_front() {
                        debug!(error = %e, to = %t.to, "udp send error");
                    }
                }
            }
        }
    }

    /// One syscall from the front of the backlog: a GSO send of a run of equal-size
    /// datagrams to one peer, else a `sendmmsg` of the datagrams before the next such run.
    /// How many datagrams left (0 when GSO was just found wanting: try again without).
    fn send_some(&mut self) -> Result<usize, Errno> {
        let fd = self.socket.as_raw_fd();
        let run = if self.gso {
            gso_run(&self.backlog, 0)
        } else {
            1
        };
        if run >= 2 {
            let first = &self.backlog[0];
            let segment = u16::try_from(first.bytes.len()).unwrap_or(u16::MAX);
            let to = SockaddrStorage::from(first.to);
            let mut iov = [IoSlice::new(&[]); GSO_SEGMENTS_MAX];
            let run = run.min(GSO_SEGMENTS_MAX);
            for (slot, t) in iov.iter_mut().zip(self.backlog.iter().take(run)) {
                *slot = IoSlice::new(&t.bytes);
            }
            let iov = &iov[..run];
            let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
            #[cfg(test)]
            if let Some(e) = self.gso_refusal.take() {
                return self.gso_refused(e);
            }
            return match sendmsg(fd, iov, &cmsg, MsgFlags::MSG_DONTWAIT, Some(&to)) {
                Ok(_) => Ok(run),
                Err(e) => self.gso_refused(e),
            };
        }
        let mut count = 1;
        while count < self.backlog.len().min(SEND_WIDTH)
            && !(self.gso && gso_run(&self.backlog, count) >= 2)
        {
            count += 1;
        }
        // No allocation per send: the addresses in a vector kept for it, the slices (which
        // borrow the backlog) on the stack.
        self.send_addrs.clear();
        let mut slices = [[IoSlice::new(&[])]; SEND_WIDTH];
        for (slot, t) in slices.iter_mut().zip(self.backlog.iter().take(count)) {
            *slot = [IoSlice::new(&t.bytes)];
            self.send_addrs.push(Some(SockaddrStorage::from(t.to)));
        }
        let sent = sendmmsg(
            fd,
            &mut self.send_headers,
            &slices[..count],
            &self.send_addrs,
            [],
            MsgFlags::MSG_DONTWAIT,
        )?;
        Ok(sent.count())
    }

    /// A GSO send failed with `e`: when the kernel (or the device) cannot do GSO, turn it
    /// off for good and send nothing now (the caller sends the same datagrams again one by
    /// one); any other error is the send's.
    fn gso_refused(&mut self, e: Errno) -> Result<usize, Errno> {
        match e {
            Errno::EIO | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOPROTOOPT => {
                info!(error = %e, "the kernel refuses UDP GSO; sending datagram by datagram");
                self.gso = false;
                Ok(0)
            }
            e => Err(e),
        }
    }
}

/// How many datagrams from `start` make one GSO send: the same peer, the same size (the
/// last may be shorter), within the kernel's limits.
fn gso_run(backlog: &VecDeque<Transmit>, start: usize) -> usize {
    let Some(first) = backlog.get(start) else {
        return 0;
    };
    let segment = first.bytes.len();
    if segment == 0 || segment > usize::from(u16::MAX) {
        return 1;
    }
    let (mut run, mut bytes) = (0, 0);
    for t in backlog.iter().skip(start) {
        if t.to != first.to
            || t.bytes.len() > segment
            || run == GSO_SEGMENTS_MAX
            || bytes + t.bytes.len() > GSO_BYTES_MAX
        {
            break;
        }
        run += 1;
        bytes += t.bytes.len();
        if t.bytes.len() < segment {
            break;
        }
    }
    run.max(1)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use mio::net::UdpSocket;
    use mio::Token;

    use super::*;
    use crate::shell::udp::DATAGRAM_BUF;

    /// A `Udp` on loopback and a plain socket to talk to it.
    fn pair() -> (mio::Poll, Udp, std::net::UdpSocket) {
        let poll = mio::Poll::new().expect("poll");
        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        std_sock.set_nonblocking(true).expect("nonblocking");
        let udp = Udp::new(
            UdpSocket::from_std(std_sock),
            poll.registry(),
            Token(0),
            64,
            1024,
        )
        .expect("udp");
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind peer");
        // Room for a whole burst before the test reads it.
        nix::sys::socket::setsockopt(&peer, nix::sys::socket::sockopt::RcvBuf, &(4 << 20))
            .expect("receive buffer");
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        (poll, udp, peer)
    }

    /// What a burst looks like: runs of equal-size datagrams (a GSO send each, or more
    /// than one when longer than a GSO send may be: 70 segments, 80,000 bytes), single
    /// ones, a shorter tail.
    fn burst(to: SocketAddr) -> Vec<Transmit> {
        let mut out = Vec::new();
        let mut push = |len: usize| {
            let seq = out.len();
            let mut bytes = vec![(seq % 251) as u8; len];
            bytes[0] = (seq >> 8) as u8;
            out.push(Transmit { to, bytes });
        };
        for _ in 0..70 {
            push(200);
        }
        push(150);
        push(33);
        for _ in 0..4 {
            push(20_000);
        }
        push(1);
        out
    }

    fn send_and_collect(
        udp: &mut Udp,
        poll: &mio::Poll,
        peer: &std::net::UdpSocket,
    ) -> Vec<Vec<u8>> {
        let sent = burst(peer.local_addr().expect("addr"));
        let want: Vec<Vec<u8>> = sent.iter().map(|t| t.bytes.clone()).collect();
        for t in sent {
            assert_ne!(udp.send(t), Sent::Dropped);
        }
        udp.flush(poll.registry());
        let mut got = Vec::new();
        let mut buf = vec![0u8; DATAGRAM_BUF];
        while got.len() < want.len() {
            let n = peer.recv(&mut buf).expect("every datagram arrives");
            got.push(buf[..n].to_vec());
        }
        assert_eq!(got, want, "the same datagrams, in order, each whole");
        got
    }

    #[test]
    fn a_burst_arrives_as_the_same_datagrams_with_gso_and_without() {
        let (poll, mut udp, peer) = pair();
        send_and_collect(&mut udp, &poll, &peer);
        assert!(udp.gso, "loopback takes GSO: it stays on");
        let (poll, mut udp, peer) = pair();
        udp.set_gso(false);
        send_and_collect(&mut udp, &poll, &peer);
    }

    #[test]
    fn a_kernel_refusing_gso_turns_it_off_and_loses_nothing() {
        let (poll, mut udp, peer) = pair();
        udp.gso_refusal = Some(Errno::EIO);
        send_and_collect(&mut udp, &poll, &peer);
        assert!(!udp.gso, "refused once: off for good");
        // Another error of a GSO send is the send's, not a reason to turn GSO off.
        let (poll, mut udp, peer) = pair();
        udp.gso_refusal = Some(Errno::EPERM);
        let t = |n| Transmit {
            to: peer.local_addr().expect("addr"),
            bytes: vec![n; 100],
        };
        for n in 0..3 {
            udp.send(t(n));
        }
        udp.flush(poll.registry());
        assert!(udp.gso, "still on");
        // The datagram at the front is dropped, as after any failed send (the network
        // could have lost it); the rest go.
        let mut buf = [0u8; 200];
        for n in 1..3 {
            let len = peer.recv(&mut buf).expect("the rest arrive");
            assert_eq!(&buf[..len], &[n; 100][..]);
        }
    }

    #[test]
    fn a_backlog_of_a_full_batch_goes_out_before_the_flush() {
        let (_poll, mut udp, peer) = pair();
        let to = peer.local_addr().expect("addr");
        for n in 0..SEND_WIDTH as u8 {
            // Different sizes: no GSO run, one sendmmsg.
            udp.send(Transmit {
                to,
                bytes: vec![n; 10 + n as usize],
            });
        }
        assert_eq!(
            udp.backlog.len(),
            SEND_WIDTH,
            "nothing sent before the flush"
        );
        udp.send(Transmit {
            to,
            bytes: vec![0xff; 5],
        });
        assert_eq!(udp.backlog.len(), 1, "the full batch went out");
        let mut buf = [0u8; 200];
        assert_eq!(peer.recv(&mut buf).expect("first datagram"), 10);
    }

    /// The buffers of sent datagrams are handed back (for the transport's next bundles),
    /// at most a `sendmmsg` of them when nobody takes them, and not one still waiting.
    #[test]
    fn sent_datagrams_buffers_are_handed_back() {
        let (poll, mut udp, peer) = pair();
        let to = peer.local_addr().expect("addr");
        let sent: Vec<Transmit> = (0..3u8)
            .map(|n| Transmit {
                to,
                bytes: vec![n; 10 + n as usize],
            })
            .collect();
        let at: Vec<*const u8> = sent.iter().map(|t| t.bytes.as_ptr()).collect();
        for t in sent {
            udp.send(t);
        }
        assert_eq!(udp.take_sent().count(), 0, "not sent yet");
        udp.flush(poll.registry());
        let back: Vec<*const u8> = udp.take_sent().map(|b| b.as_ptr()).collect();
        assert_eq!(back, at, "each sent one's own buffer, in order");
        assert_eq!(udp.take_sent().count(), 0);
        for n in 0..3 * SEND_WIDTH {
            udp.send(Transmit {
                to,
                bytes: vec![1; 10 + n % 7],
            });
        }
        udp.flush(poll.registry());
        assert!(udp.take_sent().count() <= SEND_WIDTH);
    }
}
