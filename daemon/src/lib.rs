//! `rpcd`: the daemon's I/O shell around `rpcd-transport`.
