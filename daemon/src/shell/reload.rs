//! Signals for the shell: SIGTERM/SIGINT start the shutdown, SIGHUP reloads
//! the settings (keeping the old ones on any error) and tells the service
//! manager.

use std::time::Instant;

use tracing::warn;

use super::notify::{self, notify};
use super::signals::Signal;
use super::{logging, Shell};
use crate::settings::Settings;

impl Shell {
    pub(super) fn on_signals(&mut self) {
        for sig in self.signals.pending() {
            match sig {
                Signal::Stop => {
                    if !self.router.is_shutting_down() {
                        notify("STOPPING=1");
                    }
                    self.router.begin_shutdown(Instant::now());
                }
                Signal::Reload => self.reload(),
            }
        }
    }

    /// SIGHUP: re-read the settings; on any error keep the old ones.
    fn reload(&mut self) {
        notify::reloading();
        match self.load_settings() {
            Ok(mut new) => {
                let listen = self.router.settings().metrics.listen;
                if new.metrics.listen != listen {
                    warn!("metrics.listen is read at start only: restart rpcd to change it");
                    new.metrics.listen = listen;
                }
                // The UDP socket's buffers are sized once, at start; what the socket
                // holds was read back from it then, not from the file.
                let old = self.router.settings();
                if (new.limits.udp_recv_buffer, new.limits.udp_send_buffer)
                    != (old.limits.udp_recv_buffer, old.limits.udp_send_buffer)
                {
                    warn!(
                        "limits.udp_recv_buffer and limits.udp_send_buffer are read at start \
                         only: restart rpcd to change them"
                    );
                    new.limits.udp_recv_buffer = old.limits.udp_recv_buffer;
                    new.limits.udp_send_buffer = old.limits.udp_send_buffer;
                }
                new.transport.socket_recv_buffer = old.transport.socket_recv_buffer;
                // The transport's bound, like its other settings, is given to it at start.
                if new.limits.udp_spare_buffers_max != old.limits.udp_spare_buffers_max {
                    warn!(
                        "limits.udp_spare_buffers_max is read at start only: restart rpcd to \
                         change it"
                    );
                    new.limits.udp_spare_buffers_max = old.limits.udp_spare_buffers_max;
                }
                new.transport.transmit_spare_bytes_max = old.transport.transmit_spare_bytes_max;
                let l = new.limits;
                self.local.set_limits(
                    l.frame_max,
                    l.connection_output_max,
                    l.connection_read_batch,
                    l.local_buffer_total_max,
                );
                rpcd_client::ipc::buffer_pool().set_max(l.local_buffer_pool_max);
                self.udp
                    .set_limits(l.udp_receive_batch, l.transmit_backlog_max);
                logging::reload(&new);
                self.router.reload(Instant::now(), new);
                notify::ready(&self.status_line("serving (reloaded)"));
            }
            Err(e) => {
                warn!(error = %e, "reload failed; the previous settings stay in force");
                notify::ready(&format!(
                    "reload failed, the previous settings stay in force: {e:#}"
                ));
            }
        }
    }

    /// `STATUS=` for the service manager: what is served, under `what`.
    pub(super) fn status_line(&self, what: &str) -> String {
        let s = self.router.settings();
        format!(
            "{what}: udp {}, socket {}{}; {} service names, {} peers",
            self.router.local_addr(),
            self.socket_path.display(),
            if self.inherited {
                " (socket activation)"
            } else {
                ""
            },
            s.names.len(),
            s.peers.len()
        )
    }

    fn load_settings(&self) -> anyhow::Result<Settings> {
        let (mut new, _) = Settings::load(self.opts.config_path.as_deref(), std::env::vars())?;
        if let Some(l) = self.opts.listen_flag {
            new.listen = l;
        }
        if let Some(s) = &self.opts.socket_override {
            new.socket = s.clone();
        }
        new.validate("reload")?;
        Ok(new)
    }
}
