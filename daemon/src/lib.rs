//! `rpcd`: the daemon — a sans-IO RPC router under a thin `mio` shell.
//!
//! Layers, top-down, with data flowing one way (see `docs/architecture.md`):
//!
//! - [`settings`]: every bound and timer, read through one typed struct;
//! - [`shell`]: everything that touches the OS — one `mio` loop, the UDP
//!   socket, the Unix listener and connections, signals, the resolver thread,
//!   `sd_notify`. It moves bytes and makes no RPC decision;
//! - [`router`]: the RPC layer as a state machine — apps, registry, calls,
//!   invocations, deadlines, built-ins — owning the transport `Endpoint`.
//!   No sockets, no clock reads, no threads: `handle_*` in, `poll_*` out;
//! - [`envelope`]: the request/reply/cancel carried in transport messages;
//! - [`payload`]: a payload left where it lies in the buffer it arrived in;
//! - `rpcd-transport` (its own crate): the sans-IO reliable channel.
//!
//! ```text
//! UDP bytes → shell::udp → Router::handle_datagram → Endpoint → envelope
//!           → calls (reply) | invocations (request) → Output::{Frame, Invoke} → shell::local → app
//! app bytes → shell::local → Router::handle_client_msg → calls → Endpoint::send
//!           → Router::poll_transmit → shell::udp → UDP
//! ```

pub mod cli;
pub mod envelope;
pub mod metrics;
pub mod payload;
pub mod router;
pub mod settings;
pub mod shell;
