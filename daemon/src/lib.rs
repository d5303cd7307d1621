//! `rpcd`: the daemon's I/O shell around `rpcd-transport`.
//!
//! Layer: above the sans-IO transport, below nothing but the binary. This
//! crate owns the sockets (one UDP endpoint, one Unix listener), the clock,
//! the signals and the RPC routing; it makes no transport decisions — those
//! live in `rpcd-transport`. Data flows one way: socket bytes → wire parse →
//! channel → delivered message → [`envelope`] → routing → app.
//!
//! - [`settings`]: every bound and timer, read through one typed struct;
//! - [`envelope`]: the RPC request/reply carried in transport messages;
//! - [`server`]: the `mio` event loop and the router.

pub mod envelope;
pub mod notify;
pub mod resolver;
pub mod server;
pub mod settings;
