//! The sources as written: the TOML file's shape (every key optional,
//! unknown keys rejected) and the environment's, overlaid on [`Settings`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{dns, policy, security, Settings, SettingsError};

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
    dns: dns::FileDns,
    #[serde(default)]
    security: FileSecurity,
    #[serde(default)]
    peers: BTreeMap<String, security::FilePeer>,
    #[serde(default)]
    access: policy::FileAccess,
    #[serde(default)]
    metrics: super::metrics::FileMetrics,
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
    log_format: Option<super::LogFormat>,
    plaintext: Option<bool>,
    busy_poll_us: Option<u64>,
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
    name_grace_ms: Option<u64>,
    local_buffer_total_max: Option<usize>,
    local_buffer_pool_max: Option<usize>,
    udp_spare_buffers_max: Option<usize>,
    monitor_buffer: Option<usize>,
    monitors_max: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTransport {
    payload_max: Option<usize>,
    payload_max_loopback: Option<usize>,
    message_max: Option<usize>,
    send_queue_max: Option<usize>,
    send_queue_bytes_max: Option<usize>,
    recv_window: Option<u32>,
    reassembly_bytes_max: Option<usize>,
    reassembly_total_max: Option<usize>,
    cwnd_initial: Option<u32>,
    cwnd_min: Option<u32>,
    cwnd_max: Option<u32>,
    redundant_flight_max: Option<u32>,
    forward_copies: Option<bool>,
    pacing_gain_percent: Option<u32>,
    pacing_burst: Option<u32>,
    min_rtt_window_ms: Option<u64>,
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
    peer_idle_timeout_ms: Option<u64>,
    rekey_after_ms: Option<u64>,
    reject_after_ms: Option<u64>,
    rekey_after_datagrams: Option<u64>,
    reject_after_datagrams: Option<u64>,
    handshake_load_max: Option<u32>,
    handshake_rate_per_source: Option<u32>,
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
    /// Overlay TOML text; the error names the key and the line.
    pub(super) fn apply_toml(&mut self, text: &str) -> Result<(), String> {
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
    pub(super) fn apply_env(
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
        set!(self.log_format, f.daemon.log_format);
        set!(self.plaintext, f.daemon.plaintext);
        set!(self.busy_poll, f.daemon.busy_poll_us, Duration::from_micros);
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
        set!(l.name_grace, f.limits.name_grace_ms, ms);
        set!(l.local_buffer_total_max, f.limits.local_buffer_total_max);
        set!(l.local_buffer_pool_max, f.limits.local_buffer_pool_max);
        set!(l.udp_spare_buffers_max, f.limits.udp_spare_buffers_max);
        set!(l.monitor_buffer, f.limits.monitor_buffer);
        set!(l.monitors_max, f.limits.monitors_max);
        let t = &mut self.transport;
        let ft = f.transport;
        set!(t.payload_max, ft.payload_max);
        set!(t.payload_max_loopback, ft.payload_max_loopback);
        set!(t.message_max, ft.message_max);
        set!(t.send_queue_max, ft.send_queue_max);
        set!(t.send_queue_bytes_max, ft.send_queue_bytes_max);
        set!(t.recv_window, ft.recv_window);
        set!(t.reassembly_bytes_max, ft.reassembly_bytes_max);
        set!(t.reassembly_total_max, ft.reassembly_total_max);
        set!(t.cwnd_initial, ft.cwnd_initial);
        set!(t.cwnd_min, ft.cwnd_min);
        set!(t.cwnd_max, ft.cwnd_max);
        set!(t.redundant_flight_max, ft.redundant_flight_max);
        set!(t.forward_copies, ft.forward_copies);
        set!(t.pacing_gain_percent, ft.pacing_gain_percent);
        set!(t.pacing_burst, ft.pacing_burst);
        set!(t.min_rtt_window, ft.min_rtt_window_ms, ms);
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
        set!(t.peer_idle_timeout, ft.peer_idle_timeout_ms, ms);
        set!(t.rekey_after, ft.rekey_after_ms, ms);
        set!(t.reject_after, ft.reject_after_ms, ms);
        set!(t.rekey_after_datagrams, ft.rekey_after_datagrams);
        set!(t.reject_after_datagrams, ft.reject_after_datagrams);
        set!(t.handshake_load_max, ft.handshake_load_max);
        set!(t.handshake_rate_per_source, ft.handshake_rate_per_source);
        for (name, targets) in f.names {
            let targets = match targets {
                OneOrMany::One(t) => vec![t],
                OneOrMany::Many(v) => v,
            };
            self.names.insert(name, targets);
        }
        f.dns.overlay(&mut self.dns);
        set!(
            self.security.private_key_file,
            f.security.private_key_file,
            Some
        );
        for (name, peer) in f.peers {
            let peer = peer.overlay(&name, self.peers.get(&name))?;
            self.peers.insert(name, peer);
        }
        f.access.overlay(&mut self.access)?;
        f.metrics.overlay(&mut self.metrics)?;
        Ok(())
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
