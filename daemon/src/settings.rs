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
use serde::Deserialize;
use thiserror::Error;

pub mod security;

pub use security::{
    KeyFileError, KeySource, LoadedKey, PeerSettings, SecuritySettings, PEERS_CONFIGURED_MAX,
    PEER_ADDRESSES_MAX,
};

/// The daemon's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// UDP address the daemon listens on.
    pub listen: SocketAddr,
    /// Path of the local socket.
    pub socket: PathBuf,
    /// Log filter (tracing-subscriber syntax), unless `RUST_LOG` is set.
    pub log_level: String,
    /// Without a private key, accept unauthenticated peers on an address
    /// beyond loopback: listening anywhere else in plaintext needs this
    /// explicit consent. No effect with a key.
    pub plaintext: bool,
    /// Local limits.
    pub limits: Limits,
    /// Transport settings.
    pub transport: rpcd_transport::Config,
    /// Service names: name → targets (`host:port` or a peer's name), in
    /// order of preference.
    pub names: BTreeMap<String, Vec<String>>,
    /// `[security]`: this daemon's private key.
    pub security: SecuritySettings,
    /// `[peers]`: the daemons this one trusts, by name.
    pub peers: BTreeMap<String, PeerSettings>,
}

/// Default settings file, read when it exists and no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/rpcd/rpcd.toml";
/// Targets one service name may list.
pub const NAME_TARGETS_MAX: usize = 64;
/// Service names in the table.
pub const NAMES_MAX: usize = 4096;

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
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            socket: rpcd_client::ipc::default_socket_path(),
            log_level: "info".into(),
            plaintext: false,
            limits: Limits::default(),
            transport: rpcd_transport::Config::default(),
            names: BTreeMap::new(),
            security: SecuritySettings::default(),
            peers: BTreeMap::new(),
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

// The file's shape: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    #[serde(default)]
    daemon: FileDaemon,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    transport: FileTransport,
    #[serde(default)]
    names: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    security: FileSecurity,
    #[serde(default)]
    peers: BTreeMap<String, security::FilePeer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSecurity {
    private_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDaemon {
    listen: Option<SocketAddr>,
    socket: Option<PathBuf>,
    log_level: Option<String>,
    plaintext: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    connections_max: Option<usize>,
    frame_max: Option<usize>,
    connection_output_max: Option<usize>,
    calls_per_connection_max: Option<usize>,
    calls_per_peer_max: Option<usize>,
    invocations_per_app_max: Option<usize>,
    functions_max: Option<usize>,
    deadline_default_ms: Option<u64>,
    deadline_max_ms: Option<u64>,
    udp_recv_buffer: Option<usize>,
    udp_send_buffer: Option<usize>,
    transmit_backlog_max: Option<usize>,
    shutdown_grace_ms: Option<u64>,
    udp_receive_batch: Option<usize>,
    connection_read_batch: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTransport {
    payload_max: Option<usize>,
    message_max: Option<usize>,
    send_queue_max: Option<usize>,
    send_queue_bytes_max: Option<usize>,
    recv_window: Option<u32>,
    reassembly_bytes_max: Option<usize>,
    reassembly_total_max: Option<usize>,
    cwnd_initial: Option<u32>,
    cwnd_min: Option<u32>,
    cwnd_max: Option<u32>,
    rto_initial_ms: Option<u64>,
    rto_min_ms: Option<u64>,
    rto_max_ms: Option<u64>,
    retransmits_max: Option<u32>,
    ack_delay_us: Option<u64>,
    ack_every: Option<u32>,
    keepalive_interval_ms: Option<u64>,
    peer_timeout_ms: Option<u64>,
    revalidate_after_ms: Option<u64>,
    peers_max: Option<usize>,
}

macro_rules! set {
    ($dst:expr, $src:expr) => {
        if let Some(v) = $src {
            $dst = v;
        }
    };
    ($dst:expr, $src:expr, $conv:expr) => {
        if let Some(v) = $src {
            $dst = $conv(v);
        }
    };
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

    /// Overlay TOML text; the error names the key and the line.
    fn apply_toml(&mut self, text: &str) -> Result<(), String> {
        let f: FileSettings = toml::from_str(text).map_err(|e| match e.span() {
            Some(sp) => {
                let (line, key) = locate(text, sp.start);
                match key {
                    Some(k) => format!("line {line}: `{k}`: {}", e.message()),
                    None => format!("line {line}: {}", e.message()),
                }
            }
            None => e.message().to_string(),
        })?;
        self.apply(f)
    }

    /// Overlay `RPCD_<SECTION>__<KEY>` variables (others, like `RPCD_SOCKET`,
    /// are not settings overrides and are ignored here). True if any applied.
    fn apply_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<bool, SettingsError> {
        let vars: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("RPCD_") && k.contains("__"))
            .collect();
        if vars.is_empty() {
            return Ok(false);
        }
        let source = config::Environment::with_prefix("RPCD")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(vars));
        let f: FileSettings = config::Config::builder()
            .add_source(source)
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| SettingsError::Env(e.to_string()))?;
        self.apply(f).map_err(SettingsError::Env)?;
        Ok(true)
    }

    fn apply(&mut self, f: FileSettings) -> Result<(), String> {
        let ms = Duration::from_millis;
        set!(self.listen, f.daemon.listen);
        set!(self.socket, f.daemon.socket);
        set!(self.log_level, f.daemon.log_level);
        set!(self.plaintext, f.daemon.plaintext);
        let l = &mut self.limits;
        set!(l.connections_max, f.limits.connections_max);
        set!(l.frame_max, f.limits.frame_max);
        set!(l.connection_output_max, f.limits.connection_output_max);
        set!(
            l.calls_per_connection_max,
            f.limits.calls_per_connection_max
        );
        set!(l.calls_per_peer_max, f.limits.calls_per_peer_max);
        set!(l.invocations_per_app_max, f.limits.invocations_per_app_max);
        set!(l.functions_max, f.limits.functions_max);
        set!(l.deadline_default, f.limits.deadline_default_ms, ms);
        set!(l.deadline_max, f.limits.deadline_max_ms, ms);
        set!(l.udp_recv_buffer, f.limits.udp_recv_buffer);
        set!(l.udp_send_buffer, f.limits.udp_send_buffer);
        set!(l.transmit_backlog_max, f.limits.transmit_backlog_max);
        set!(l.shutdown_grace, f.limits.shutdown_grace_ms, ms);
        set!(l.udp_receive_batch, f.limits.udp_receive_batch);
        set!(l.connection_read_batch, f.limits.connection_read_batch);
        let t = &mut self.transport;
        let ft = f.transport;
        set!(t.payload_max, ft.payload_max);
        set!(t.message_max, ft.message_max);
        set!(t.send_queue_max, ft.send_queue_max);
        set!(t.send_queue_bytes_max, ft.send_queue_bytes_max);
        set!(t.recv_window, ft.recv_window);
        set!(t.reassembly_bytes_max, ft.reassembly_bytes_max);
        set!(t.reassembly_total_max, ft.reassembly_total_max);
        set!(t.cwnd_initial, ft.cwnd_initial);
        set!(t.cwnd_min, ft.cwnd_min);
        set!(t.cwnd_max, ft.cwnd_max);
        set!(t.rto_initial, ft.rto_initial_ms, ms);
        set!(t.rto_min, ft.rto_min_ms, ms);
        set!(t.rto_max, ft.rto_max_ms, ms);
        set!(t.retransmits_max, ft.retransmits_max);
        set!(t.ack_delay, ft.ack_delay_us, Duration::from_micros);
        set!(t.ack_every, ft.ack_every);
        set!(t.keepalive_interval, ft.keepalive_interval_ms, ms);
        set!(t.peer_timeout, ft.peer_timeout_ms, ms);
        set!(t.revalidate_after, ft.revalidate_after_ms, ms);
        set!(t.peers_max, ft.peers_max);
        for (name, targets) in f.names {
            let targets = match targets {
                OneOrMany::One(t) => vec![t],
                OneOrMany::Many(v) => v,
            };
            self.names.insert(name, targets);
        }
        set!(
            self.security.private_key_file,
            f.security.private_key_file,
            Some
        );
        for (name, peer) in f.peers {
            let peer = peer.overlay(&name, self.peers.get(&name))?;
            self.peers.insert(name, peer);
        }
        Ok(())
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
        if l.deadline_default.is_zero() || l.deadline_default > l.deadline_max {
            return Err(invalid(
                "limits.deadline_default_ms",
                "must be above zero and at most limits.deadline_max_ms".into(),
            ));
        }
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
                        "must list 1 to {NAME_TARGETS_MAX} targets (host:port or a peer's name)"
                    ),
                ));
            }
            for t in targets {
                if let Some(peer) = self.peers.get(t) {
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

/// The line number of byte `offset` in `text`, and the dotted key defined on
/// that line (`section.key`), if the line is a `key = value` line.
fn locate(text: &str, offset: usize) -> (usize, Option<String>) {
    let offset = offset.min(text.len());
    let line_no = text[..offset].matches('\n').count() + 1;
    let mut section = None;
    let mut key = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if i + 1 > line_no {
            break;
        }
        if t.starts_with('[') {
            section = Some(t.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
        }
        if i + 1 == line_no {
            key = t
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_owned())
                .filter(|k| !k.is_empty() && !k.starts_with('['));
        }
    }
    let key = key.map(|k| match section {
        Some(s) => format!("{s}.{k}"),
        None => k,
    });
    (line_no, key)
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
