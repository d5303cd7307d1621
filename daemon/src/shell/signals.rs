//! Signals as loop events: SIGTERM/SIGINT stop, SIGHUP reloads.

use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals as MioSignals;

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Graceful shutdown.
    Stop,
    /// Re-read the settings.
    Reload,
}

/// The signal pipe, registered with the loop.
pub struct Signals(MioSignals);

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signals")
    }
}

impl Signals {
    /// Install the handlers and register the pipe under `token`.
    pub fn new(registry: &Registry, token: Token) -> std::io::Result<Signals> {
        let mut s = MioSignals::new([SIGTERM, SIGINT, SIGHUP])?;
        registry.register(&mut s, token, Interest::READABLE)?;
        Ok(Signals(s))
    }

    /// Signals received since the last call.
    pub fn pending(&mut self) -> Vec<Signal> {
        self.0
            .pending()
            .filter_map(|sig| match sig {
                SIGTERM | SIGINT => Some(Signal::Stop),
                SIGHUP => Some(Signal::Reload),
                _ => None,
            })
            .collect()
    }
}
