//! Every setting of the daemon, read through one typed struct.
//!
//! Sources, lowest first: built-in defaults, the TOML file (`--config`, else
//! `/etc/rpcd/rpcd.toml` when it exists), environment overrides
//! (`RPCD_<SECTION>__<KEY>`, e.g. `RPCD_LIMITS__CONNECTIONS_MAX=64`, read
//! through the `config` crate), then command-line flags. The file is parsed
//! strictly with `toml`: an unknown key or a value of the wrong type is an
//! error naming the key and its line.
//!
//! Loading also reads the private key file (`[security]`, see [`security`]),
//! so that the settings carry everything the transport needs; the rest is
//! pure: [`Settings::validate`] reads no file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rpcd_transport::secure::{PeerKey, Security};
use thiserror::Error;

pub mod dns;
mod file;
pub mod metrics;
pub mod policy;
pub mod security;

pub use dns::{srv_target, DnsSettings};
pub use metrics::MetricsSettings;
pub use policy::{AccessSettings, Rule};
pub use security::{
    KeyFileError, KeySource, LoadedKey, PeerSettings, SecuritySettings, PEERS_CONFIGURED_MAX,
    PEER_ADDRESSES_MAX,
};

/// `daemon.busy_poll_us` by default: about a loopback round trip through both daemons and
/// a serving app, so that under steady traffic the loop is polling when the next datagram or
/// frame comes instead of being woken for it.
pub const BUSY_POLL_DEFAULT: Duration = Duration::from_micros(100);

/// The largest `daemon.busy_poll_us`: 10 ms, so that a loop that keeps polling still looks
/// at its timers and its watchdog often.
pub const BUSY_POLL_MAX: Duration = Duration::from_millis(10);

/// The daemon's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// UDP address the daemon listens on.
    pub listen: SocketAddr,
    /// Path of the local socket.
    pub socket: PathBuf,
    /// Log filter (tracing-subscriber syntax), unless `RUST_LOG` is set.
    /// Reloaded on SIGHUP.
    pub log_level: String,
    /// How log lines are written (read at start).
    pub log_format: LogFormat,
    /// Without a private key, accept unauthenticated peers on an address
    /// beyond loopback: listening anywhere else in plaintext needs this
    /// explicit consent. No effect with a key.
    pub plaintext: bool,
    /// `daemon.busy_poll_us`: after handling input, how long the loop keeps polling its
    /// sockets without sleeping (yielding the CPU between polls) before it sleeps in
    /// `epoll_wait`; zero: it sleeps at once. Reloaded on SIGHUP.
    pub busy_poll: Duration,
    /// Local limits.
    pub limits: Limits,
    /// Transport settings.
    pub transport: rpcd_transport::Config,
    /// Service names: name → targets (`host:port` or a peer's name), in
    /// order of preference.
    pub names: BTreeMap<String, Vec<String>>,
    /// `[dns]`: how `srv:` targets are looked up.
    pub dns: DnsSettings,
    /// `[security]`: this daemon's private key.
    pub security: SecuritySettings,
    /// `[peers]`: the daemons this one trusts, by name.
    pub peers: BTreeMap<String, PeerSettings>,
    /// `[access]`: the socket's group and the access policy.
    pub access: AccessSettings,
    /// `[metrics]`: the Prometheus endpoint and the latency window.
    pub metrics: MetricsSettings,
}

/// How the daemon writes its log lines to stderr (`daemon.log_format`, `--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `journald` when stderr is the stream systemd named in `JOURNAL_STREAM`,
    /// else `text`.
    #[default]
    Auto,
    /// One line per event with a timestamp; ANSI colour only on a terminal.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, the fields).
    Json,
    /// Each line prefixed with its syslog priority (`<3>` error ... `<7>`
    /// debug), no timestamp: journald adds both.
    Journald,
}

/// Default settings file, read when it exists and no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/rpcd/rpcd.toml";
/// Targets one service name may list.
pub const NAME_TARGETS_MAX: usize = 64;
/// Service names in the table.
pub const NAMES_MAX: usize = 4096;
/// The most `limits.udp_spare_buffers_max` may be: memory an idle daemon holds, and far
/// more than the buffers of one `sendmmsg` of full datagrams (64 of 64 KiB) it serves.
pub const UDP_SPARE_BUFFERS_CEILING: usize = 256 * 1024 * 1024;

/// Bounds on what local apps and peers can make the daemon hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Local connections at once; further ones are refused with `overloaded`.
    pub connections_max: usize,
    /// Largest socket frame (length prefix excluded).
    pub frame_max: usize,
    /// Bytes queued to one connection that it does not read; above this the
    /// connection is closed as a slow reader.
    pub connection_output_max: usize,
    /// Calls in flight per local connection.
    pub calls_per_connection_max: usize,
    /// Calls in flight to one peer daemon.
    pub calls_per_peer_max: usize,
    /// Invocations waiting for one serving app's result.
    pub invocations_per_app_max: usize,
    /// Functions registered in all.
    pub functions_max: usize,
    /// Deadline of a call that names none.
    pub deadline_default: Duration,
    /// Longest deadline a call may ask for.
    pub deadline_max: Duration,
    /// UDP socket receive buffer (SO_RCVBUF).
    pub udp_recv_buffer: usize,
    /// UDP socket send buffer (SO_SNDBUF).
    pub udp_send_buffer: usize,
    /// Datagrams waiting for the UDP socket to become writable; beyond this
    /// they are dropped (the transport retransmits them).
    pub transmit_backlog_max: usize,
    /// Longest a graceful shutdown waits for pending calls.
    pub shutdown_grace: Duration,
    /// Datagrams read per wakeup before the other sources get their turn.
    pub udp_receive_batch: usize,
    /// Reads (of up to 64 KiB) from one connection per wakeup before the
    /// other sources get their turn.
    pub connection_read_batch: usize,
    /// How long a disconnected owner's user keeps first claim on its
    /// function names; zero turns the grace off.
    pub name_grace: Duration,
    /// Bytes buffered across all local connections (partial input frames
    /// and pending output); the connection whose growth would pass it is
    /// told `overloaded` and closed.
    pub local_buffer_total_max: usize,
    /// Bytes of large buffers (1 MiB and more) kept for reuse by the next
    /// large frame, payload or envelope, instead of being freed; 0 keeps none.
    pub local_buffer_pool_max: usize,
    /// Bytes of sent UDP datagrams' buffers the transport keeps to write its next
    /// datagrams into, instead of allocating them; 0 keeps none. Read at start (it becomes
    /// the transport's `transmit_spare_bytes_max`).
    pub udp_spare_buffers_max: usize,
    /// Events one monitor's queue holds while it does not read; more are
    /// dropped and reported as missed.
    pub monitor_buffer: usize,
    /// Monitors at once; more get `overloaded`.
    pub monitors_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: 1024,
            frame_max: rpcd_client::ipc::FRAME_MAX_DEFAULT,
            connection_output_max: 64 * 1024 * 1024,
            calls_per_connection_max: 4096,
            calls_per_peer_max: 4096,
            invocations_per_app_max: 1024,
            functions_max: 4096,
            deadline_default: Duration::from_secs(10),
            deadline_max: Duration::from_secs(3600),
            udp_recv_buffer: 4 * 1024 * 1024,
            udp_send_buffer: 4 * 1024 * 1024,
            transmit_backlog_max: 8192,
            shutdown_grace: Duration::from_secs(5),
            udp_receive_batch: 256,
            connection_read_batch: 16,
            name_grace: Duration::from_secs(2),
            local_buffer_total_max: 256 * 1024 * 1024,
            local_buffer_pool_max: 64 * 1024 * 1024,
            udp_spare_buffers_max: rpcd_transport::config::TRANSMIT_SPARE_BYTES_MAX_DEFAULT,
            monitor_buffer: 4096,
            monitors_max: 16,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            socket: rpcd_client::ipc::default_socket_path(),
            log_level: "info".into(),
            log_format: LogFormat::Auto,
            plaintext: false,
            busy_poll: BUSY_POLL_DEFAULT,
            limits: Limits::default(),
            transport: rpcd_transport::Config::default(),
            names: BTreeMap::new(),
            dns: DnsSettings::default(),
            security: SecuritySettings::default(),
            peers: BTreeMap::new(),
            access: AccessSettings::default(),
            metrics: MetricsSettings::default(),
        }
    }
}

/// A setting that cannot be used.
#[derive(Debug, Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message: key, expectation and line.
        message: String,
    },
    /// An environment override that is unknown or of the wrong type.
    #[error("environment override: {0} (variables are RPCD_<SECTION>__<KEY>, e.g. RPCD_LIMITS__CONNECTIONS_MAX)")]
    Env(String),
    /// The private key file cannot be used.
    #[error("{setting}: cannot use {}: {problem}", path.display())]
    PrivateKey {
        /// The setting or credential that names the file.
        setting: KeySource,
        /// The file.
        path: PathBuf,
        /// Why.
        problem: KeyFileError,
    },
    /// A value out of range or contradicting another.
    #[error("{origin}: setting `{key}`: {problem}")]
    Invalid {
        /// The file, or "defaults/flags".
        origin: String,
        /// The key.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

impl Settings {
    /// Defaults, overlaid with the settings file (`path`, else
    /// [`DEFAULT_CONFIG_PATH`] if it exists), then with the `RPCD_*__*`
    /// variables of `env`; the private key read (from `private_key_file`,
    /// else `$CREDENTIALS_DIRECTORY/rpcd.key` of `env`); validated. Returns
    /// the settings and the file used.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Settings, Option<PathBuf>), SettingsError> {
        let path = match path {
            Some(p) => Some(p.to_owned()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()),
        };
        let env: Vec<(String, String)> = env.into_iter().collect();
        let credentials_dir = env
            .iter()
            .find(|(k, v)| k == "CREDENTIALS_DIRECTORY" && !v.is_empty())
            .map(|(_, v)| PathBuf::from(v));
        let mut s = Settings::default();
        let mut origin = "built-in defaults".to_owned();
        if let Some(p) = &path {
            let text = std::fs::read_to_string(p).map_err(|source| SettingsError::Read {
                path: p.clone(),
                source,
            })?;
            s.apply_toml(&text)
                .map_err(|message| SettingsError::Parse {
                    path: p.clone(),
                    message,
                })?;
            origin = p.display().to_string();
        }
        if s.apply_env(env)? {
            origin.push_str(" + environment");
        }
        s.security.key = security::load_key(
            s.security.private_key_file.as_deref(),
            credentials_dir.as_deref(),
        )
        .map_err(|(setting, path, problem)| SettingsError::PrivateKey {
            setting,
            path,
            problem,
        })?;
        s.validate(&origin)?;
        Ok((s, path))
    }

    /// Check ranges and relations; `origin` names where the values came from.
    pub fn validate(&self, origin: &str) -> Result<(), SettingsError> {
        let invalid = |key: &str, problem: String| SettingsError::Invalid {
            origin: origin.to_owned(),
            key: key.to_owned(),
            problem,
        };
        self.transport
            .validate()
            .map_err(|e| invalid(&format!("transport.{}", e.key), e.problem))?;
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| invalid("daemon.log_level", e.to_string()))?;
        if self.busy_poll > BUSY_POLL_MAX {
            return Err(invalid(
                "daemon.busy_poll_us",
                format!(
                    "must be at most {} (microseconds; 0 turns busy polling off)",
                    BUSY_POLL_MAX.as_micros()
                ),
            ));
        }
        if self.security.key.is_none()
            && !self.plaintext
            && !self.listen.ip().to_canonical().is_loopback()
        {
            return Err(invalid(
                "daemon.plaintext",
                format!(
                    "listening on {} without a private key accepts unauthenticated calls from \
                     anyone who can reach it; set security.private_key_file (see `rpcctl keys \
                     generate`), or daemon.plaintext = true to accept unauthenticated peers",
                    self.listen
                ),
            ));
        }
        let own = self.security.key.as_ref().map(|k| k.key.public());
        security::validate_peers(&self.peers, own.as_ref())
            .map_err(|(key, problem)| invalid(&key, problem))?;
        for (i, rule) in self.access.rules.iter().enumerate() {
            if let Some(p) = rule
                .peers
                .iter()
                .find(|p| *p != "*" && !self.peers.contains_key(*p))
            {
                return Err(invalid(
                    &format!("access.allow[{i}].peers"),
                    format!("{p:?} is not a peer in [peers] (nor \"*\")"),
                ));
            }
        }
        self.metrics
            .validate()
            .map_err(|(key, problem)| invalid(key, problem))?;
        let l = &self.limits;
        let positive = [
            ("limits.connections_max", l.connections_max),
            (
                "limits.calls_per_connection_max",
                l.calls_per_connection_max,
            ),
            ("limits.calls_per_peer_max", l.calls_per_peer_max),
            ("limits.invocations_per_app_max", l.invocations_per_app_max),
            ("limits.functions_max", l.functions_max),
            ("limits.transmit_backlog_max", l.transmit_backlog_max),
            ("limits.udp_receive_batch", l.udp_receive_batch),
            ("limits.connection_read_batch", l.connection_read_batch),
            ("limits.monitor_buffer", l.monitor_buffer),
            ("limits.monitors_max", l.monitors_max),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if l.frame_max < 1024 {
            return Err(invalid("limits.frame_max", "must be at least 1024".into()));
        }
        if l.frame_max > u32::MAX as usize {
            return Err(invalid(
                "limits.frame_max",
                "must fit the 4-byte length prefix".into(),
            ));
        }
        if l.connection_output_max < l.frame_max {
            return Err(invalid(
                "limits.connection_output_max",
                "must be at least limits.frame_max".into(),
            ));
        }
        if l.local_buffer_total_max < l.frame_max {
            return Err(invalid(
                "limits.local_buffer_total_max",
                "must be at least limits.frame_max".into(),
            ));
        }
        let pooled_min = rpcd_client::ipc::POOLED_CAPACITY_MIN;
        if (1..pooled_min).contains(&l.local_buffer_pool_max) {
            return Err(invalid(
                "limits.local_buffer_pool_max",
                format!(
                    "must be 0 (keep no buffer) or at least {pooled_min} bytes (the smallest \
                     buffer kept)"
                ),
            ));
        }
        if l.udp_spare_buffers_max > UDP_SPARE_BUFFERS_CEILING {
            return Err(invalid(
                "limits.udp_spare_buffers_max",
                format!(
                    "must be at most {UDP_SPARE_BUFFERS_CEILING} bytes (256 MiB); 0 keeps no \
                     buffer"
                ),
            ));
        }
        if l.deadline_default.is_zero() || l.deadline_default > l.deadline_max {
            return Err(invalid(
                "limits.deadline_default_ms",
                "must be above zero and at most limits.deadline_max_ms".into(),
            ));
        }
        self.dns
            .validate()
            .map_err(|(key, problem)| invalid(key, problem))?;
        if self.names.len() > NAMES_MAX {
            return Err(invalid("names", format!("at most {NAMES_MAX} names")));
        }
        for (name, targets) in &self.names {
            let key = format!("names.{name}");
            if !valid_name(name) {
                return Err(invalid(
                    &key,
                    "a service name is 1 to 255 of A-Z a-z 0-9 . _ - (no colon, so it never looks like host:port)".into(),
                ));
            }
            if self.peers.contains_key(name) {
                return Err(invalid(
                    &key,
                    format!(
                        "{name:?} is also a peer in [peers]; a target name must mean one thing"
                    ),
                ));
            }
            if targets.is_empty() || targets.len() > NAME_TARGETS_MAX {
                return Err(invalid(
                    &key,
                    format!(
                        "must list 1 to {NAME_TARGETS_MAX} targets (host:port, srv:NAME or a peer's name)"
                    ),
                ));
            }
            for t in targets {
                if let Some(srv) = srv_target(t) {
                    srv.map_err(|problem| invalid(&key, problem))?;
                } else if let Some(peer) = self.peers.get(t) {
                    if peer.addresses.is_empty() {
                        return Err(invalid(
                            &key,
                            format!("{t:?}: peer {t} has no addresses configured"),
                        ));
                    }
                } else if valid_name(t) {
                    return Err(invalid(
                        &key,
                        format!("{t:?} is neither host:port nor a peer in [peers]"),
                    ));
                } else if let Err(problem) = split_host_port(t) {
                    return Err(invalid(&key, format!("{t:?}: {problem}")));
                }
            }
        }
        Ok(())
    }

    /// What the transport is given: this daemon's key and the peers it
    /// trusts, or plaintext when no private key is configured.
    pub fn transport_security(&self) -> Security {
        security::transport_security(&self.security, &self.peers)
    }

    /// `[peers]` as the transport's peer list (for a reload).
    pub fn peer_keys(&self) -> Vec<PeerKey> {
        security::peer_keys(&self.peers)
    }

    /// Largest argument (or result) a call can carry: the transport's
    /// message bound less the envelope, and what one socket frame can hold.
    pub fn payload_max(&self) -> usize {
        let by_transport = self
            .transport
            .message_max
            .saturating_sub(crate::envelope::REQUEST_OVERHEAD);
        let by_frame = self.limits.frame_max.saturating_sub(1024);
        by_transport.min(by_frame)
    }
}

/// Service names never contain a colon, so a target is a name exactly when it
/// has none.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Split `host:port` (`[v6]:port` too) into host and port.
pub fn split_host_port(target: &str) -> Result<(&str, u16), String> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port".to_owned())?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number 0-65535"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err("empty host".into());
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_limits;
