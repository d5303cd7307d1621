//! `rpcctl`: the operator's command line for rpcd.
