//! `rpcd-client`: what a local application links to talk to `rpcd`.
