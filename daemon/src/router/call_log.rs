//! The call id both daemons put in their debug lines (`call=`), so that
//! one call can be followed from the caller's log into the callee's.
//!
//! A request envelope carries the caller's `call_id`, unique among that
//! daemon's calls; the callee knows the caller by the epoch of the channel
//! between them. Together they name the call at both ends:
//! `call=<caller's channel epoch, 16 hex digits>-<call_id>`. The channel
//! epoch is the daemon's epoch (`hello_ok`, the "rpcd listening" line)
//! until the daemon has forgotten an idle peer; then new channels get a
//! derived one, which the other side sees just the same.

use std::fmt;
use std::net::SocketAddr;

use rpcd_transport::Endpoint;

use super::types::{CallId, Origin, RemoteCallId};
use super::Router;

/// A call as both daemons' logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTag {
    /// The caller's epoch on the channel (0: not known).
    epoch: u64,
    /// The caller's id for the call.
    id: u64,
}

impl fmt::Display for CallTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.epoch, self.id)
    }
}

impl CallTag {
    /// Our call `id`, sent to `peer` through `endpoint` (None: served by
    /// this daemon, or not sent yet).
    pub fn outgoing(endpoint: &Endpoint, peer: Option<SocketAddr>, id: CallId) -> CallTag {
        let epoch = peer
            .and_then(|p| endpoint.channel_epochs(p))
            .map_or(endpoint.epoch(), |(ours, _)| ours);
        CallTag { epoch, id: id.0 }
    }

    /// `peer`'s call `id`, delivered through `endpoint`.
    pub fn incoming(endpoint: &Endpoint, peer: SocketAddr, id: RemoteCallId) -> CallTag {
        let epoch = endpoint
            .channel_epochs(peer)
            .and_then(|(_, theirs)| theirs)
            .unwrap_or(0);
        CallTag { epoch, id: id.0 }
    }
}

impl Router {
    /// The tag of this daemon's call `id` to `peer` (None: served here).
    pub(super) fn call_tag(&self, peer: Option<SocketAddr>, id: CallId) -> CallTag {
        CallTag::outgoing(&self.endpoint, peer, id)
    }

    /// The tag of the call served here for `origin`.
    pub(super) fn origin_tag(&self, origin: Origin) -> CallTag {
        match origin {
            Origin::Local { call } => self.call_tag(None, call),
            Origin::Remote { peer, call } => CallTag::incoming(&self.endpoint, peer, call),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use rpcd_transport::{ChannelEvent, Config};

    use super::*;

    /// Move every datagram between `a` (at `pa`) and `b` (at `pb`) until
    /// both are quiet.
    fn exchange(now: Instant, a: &mut Endpoint, pa: SocketAddr, b: &mut Endpoint, pb: SocketAddr) {
        for _ in 0..100 {
            let mut moved = false;
            while let Some(t) = a.poll_transmit(now) {
                b.handle_datagram(now, pa, &t.bytes);
                moved = true;
            }
            while let Some(t) = b.poll_transmit(now) {
                a.handle_datagram(now, pb, &t.bytes);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// The caller's tag for a request equals the callee's, also after the
    /// caller forgot the callee as an idle peer (a new channel, a derived
    /// epoch).
    #[test]
    fn both_ends_name_the_call_alike() {
        let (pa, pb): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let mut a = Endpoint::new(Config::default(), 0xa1);
        let mut b = Endpoint::new(Config::default(), 0xb2);
        let mut now = Instant::now();
        for round in 0..2u64 {
            let id = CallId(round + 41);
            a.send(now, pb, vec![round as u8]).unwrap();
            exchange(now, &mut a, pa, &mut b, pb);
            let delivered = std::iter::from_fn(|| b.poll_event())
                .any(|e| matches!(e.kind, ChannelEvent::Delivered { .. }));
            assert!(delivered, "round {round}");
            let ours = CallTag::outgoing(&a, Some(pb), id);
            let theirs = CallTag::incoming(&b, pa, RemoteCallId(id.0));
            assert_eq!(ours, theirs, "round {round}");
            assert_eq!(ours.to_string(), format!("{:016x}-{}", ours.epoch, id.0));
            if round == 0 {
                assert_eq!(ours.epoch, 0xa1, "before any eviction");
                // Let the acknowledgement come back, then stay quiet.
                for _ in 0..100 {
                    now += Duration::from_millis(10);
                    a.handle_timeout(now);
                    b.handle_timeout(now);
                    exchange(now, &mut a, pa, &mut b, pb);
                    while a.poll_event().is_some() {}
                    while b.poll_event().is_some() {}
                }
                now += Duration::from_secs(3600);
                let gone = a.evict_idle(now, Duration::from_secs(1), |_| false);
                assert_eq!(gone, [pb], "the idle peer is forgotten");
            } else {
                assert_ne!(ours.epoch, 0xa1, "a new channel, a derived epoch");
            }
        }
        // Served here: the daemon's own epoch.
        assert_eq!(
            CallTag::outgoing(&a, None, CallId(5)).to_string(),
            "00000000000000a1-5"
        );
    }
}
