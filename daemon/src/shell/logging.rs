//! The daemon's log: one `tracing` subscriber writing to stderr, in the
//! format the settings ask for, at a level that SIGHUP reloads.
//!
//! Formats (`daemon.log_format`, `--log-format`):
//!
//! - `text`: a timestamp, the level, the target and the fields; ANSI colour
//!   only when stderr is a terminal (and `NO_COLOR` is unset), so pipes,
//!   files and `--log-file` get plain text;
//! - `json`: one object per line (`timestamp`, `level`, `target`,
//!   `message` and the event's fields);
//! - `journald`: every line prefixed with its syslog priority (`<3>` error,
//!   `<4>` warn, `<6>` info, `<7>` debug and trace) and no timestamp, as
//!   sd-daemon(3) describes: journald reads the prefix on a stream
//!   connected through `JOURNAL_STREAM` and stamps the time itself;
//! - `auto`: `journald` when stderr is the stream `JOURNAL_STREAM` names
//!   (its `device:inode`, per systemd.exec(5)), else `text`.
//!
//! The filter is `RUST_LOG` if set when the daemon starts, else
//! `daemon.log_level`; only the latter is reloaded (see [`reload`]). The
//! subscriber is process-wide, so its reload handle is too.

use std::io::IsTerminal;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, OnceLock, PoisonError};

use anyhow::Context;
use tracing::{info, warn, Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{self, FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::settings::{LogFormat, Settings};

/// What is written, once `auto` is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Plain lines, coloured or not.
    Text {
        /// ANSI colour codes.
        colour: bool,
    },
    /// One JSON object per line.
    Json,
    /// Priority prefix per line, no timestamp.
    Journald,
}

/// What stderr is, for choosing the [`Output`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stderr {
    /// The log goes elsewhere after logging starts (`--daemonize`
    /// redirects stderr to `--log-file` or `/dev/null`): neither colour nor
    /// the journal's stream apply.
    pub redirected: bool,
    /// stderr is a terminal.
    pub terminal: bool,
    /// `NO_COLOR` is set and not empty.
    pub no_colour: bool,
    /// stderr's `(device, inode)`.
    pub id: Option<(u64, u64)>,
    /// `JOURNAL_STREAM` as set.
    pub journal_stream: Option<String>,
}

impl Stderr {
    /// This process's stderr; `redirected` if the daemon is about to detach.
    pub fn current(redirected: bool) -> Stderr {
        let fd = std::io::stderr();
        let id = nix::sys::stat::fstat(fd.as_raw_fd())
            .ok()
            .map(|st| (st.st_dev, st.st_ino));
        Stderr {
            redirected,
            terminal: fd.is_terminal(),
            no_colour: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            id,
            journal_stream: std::env::var("JOURNAL_STREAM").ok(),
        }
    }

    /// Whether stderr is the journal's stream: `JOURNAL_STREAM` is
    /// `device:inode` of the stream systemd connected (decimal numbers),
    /// and a child whose stderr was redirected inherits the variable.
    pub fn is_journal(&self) -> bool {
        let (Some(var), Some((dev, ino))) = (&self.journal_stream, self.id) else {
            return false;
        };
        let Some((d, i)) = var.split_once(':') else {
            return false;
        };
        !self.redirected && d.parse() == Ok(dev) && i.parse() == Ok(ino)
    }

    /// The output for `format`.
    pub fn output(&self, format: LogFormat) -> Output {
        let text = Output::Text {
            colour: self.terminal && !self.no_colour && !self.redirected,
        };
        match format {
            LogFormat::Auto if self.is_journal() => Output::Journald,
            LogFormat::Auto | LogFormat::Text => text,
            LogFormat::Json => Output::Json,
            LogFormat::Journald => Output::Journald,
        }
    }
}

/// Install the subscriber: `settings`' format unless `format_flag` says
/// otherwise, to `stderr`; the filter from `RUST_LOG` or the settings.
pub fn init(
    settings: &Settings,
    format_flag: Option<LogFormat>,
    stderr: &Stderr,
) -> anyhow::Result<()> {
    let (filter, from_env) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => (
            EnvFilter::try_new(&v).with_context(|| format!("RUST_LOG={v:?}"))?,
            true,
        ),
        _ => (
            EnvFilter::try_new(&settings.log_level).context("daemon.log_level")?,
            false,
        ),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let layer: Box<dyn Layer<Filtered> + Send + Sync> =
        match stderr.output(format_flag.unwrap_or(settings.log_format)) {
            Output::Text { colour } => fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour)
                .boxed(),
            Output::Json => fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .boxed(),
            Output::Journald => fmt::layer()
                .event_format(Journald::default())
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .boxed(),
        };
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .context("installing the logger")?;
    let _ = RELOAD.set(Reloader {
        handle,
        from_env,
        level: Mutex::new(settings.log_level.clone()),
        format: (format_flag.is_none()).then_some(settings.log_format),
    });
    Ok(())
}

/// New settings (SIGHUP): apply `daemon.log_level` if it changed, unless
/// `RUST_LOG` chose the filter. The format stays until a restart.
pub fn reload(settings: &Settings) {
    let Some(r) = RELOAD.get() else {
        return;
    };
    if r.format.is_some_and(|f| f != settings.log_format) {
        warn!("daemon.log_format takes effect at restart");
    }
    let mut level = r.level.lock().unwrap_or_else(PoisonError::into_inner);
    if *level == settings.log_level {
        return;
    }
    if r.from_env {
        info!(
            log_level = %settings.log_level,
            "RUST_LOG is set: daemon.log_level is not applied"
        );
        *level = settings.log_level.clone();
        return;
    }
    // Settings::validate parsed it already; a failure here keeps the old one.
    let applied = EnvFilter::try_new(&settings.log_level)
        .map_err(|e| e.to_string())
        .and_then(|f| r.handle.reload(f).map_err(|e| e.to_string()));
    match applied {
        Ok(()) => {
            info!(log_level = %settings.log_level, "log level changed");
            *level = settings.log_level.clone();
        }
        Err(e) => warn!(error = %e, "the log level could not be changed"),
    }
}

/// The syslog priority of a level (sd-daemon(3)): error 3, warning 4,
/// info 6, debug and trace 7.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;

static RELOAD: OnceLock<Reloader> = OnceLock::new();

/// What [`reload`] needs.
struct Reloader {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` chose the filter.
    from_env: bool,
    /// `daemon.log_level` as last applied (or ignored).
    level: Mutex<String>,
    /// The format setting in force, unless the flag overrode it.
    format: Option<LogFormat>,
}

/// The `journald` format: the default one without time, level or colour
/// (journald keeps the time, the prefix carries the level), each line of
/// the event prefixed with `<priority>`, so that a message spanning lines
/// keeps its priority throughout.
struct Journald {
    inner: fmt::format::Format<fmt::format::Full, ()>,
}

impl Default for Journald {
    fn default() -> Self {
        Journald {
            inner: fmt::format()
                .without_time()
                .with_level(false)
                .with_ansi(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut text = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut text), event)?;
        let prio = priority(*event.metadata().level());
        for line in text.trim_end_matches('\n').split('\n') {
            writeln!(writer, "<{prio}>{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_stderr() -> Stderr {
        Stderr {
            id: Some((2049, 77)),
            journal_stream: Some("2049:77".into()),
            ..Stderr::default()
        }
    }

    #[test]
    fn auto_is_journald_only_on_the_named_stream() {
        let s = journal_stderr();
        assert!(s.is_journal());
        assert_eq!(s.output(LogFormat::Auto), Output::Journald);
        for other in ["2049:78", "2048:77", "2049", "", "x:y", "2049:77:1"] {
            let s = Stderr {
                journal_stream: Some(other.into()),
                ..journal_stderr()
            };
            assert!(!s.is_journal(), "{other:?}");
            assert_eq!(s.output(LogFormat::Auto), Output::Text { colour: false });
        }
        let unset = Stderr {
            journal_stream: None,
            ..journal_stderr()
        };
        assert!(!unset.is_journal());
        // --daemonize moves stderr away from the journal's stream.
        let detached = Stderr {
            redirected: true,
            ..journal_stderr()
        };
        assert_eq!(
            detached.output(LogFormat::Auto),
            Output::Text { colour: false }
        );
    }

    #[test]
    fn colour_only_on_a_terminal_that_stays() {
        let tty = Stderr {
            terminal: true,
            ..Stderr::default()
        };
        assert_eq!(tty.output(LogFormat::Text), Output::Text { colour: true });
        assert_eq!(tty.output(LogFormat::Auto), Output::Text { colour: true });
        for s in [
            Stderr::default(),
            Stderr {
                no_colour: true,
                ..tty.clone()
            },
            Stderr {
                redirected: true,
                ..tty.clone()
            },
        ] {
            assert_eq!(s.output(LogFormat::Text), Output::Text { colour: false });
        }
    }

    #[test]
    fn explicit_formats_win() {
        let s = journal_stderr();
        assert_eq!(s.output(LogFormat::Text), Output::Text { colour: false });
        assert_eq!(s.output(LogFormat::Json), Output::Json);
        assert_eq!(
            Stderr::default().output(LogFormat::Journald),
            Output::Journald
        );
    }

    #[test]
    fn priorities_follow_syslog() {
        let p: Vec<u8> = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .into_iter()
        .map(priority)
        .collect();
        assert_eq!(p, [3, 4, 6, 7, 7]);
    }

    /// The journald format through a real subscriber: one prefix per line,
    /// no time, no level word, no colour.
    #[test]
    fn journald_lines_carry_their_priority() {
        use std::sync::Arc;
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer()
                .event_format(Journald::default())
                .with_writer(move || writer.clone())
                .with_ansi(true),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(code = 5, "broken");
            tracing::warn!("careful\nsecond line");
            tracing::info!("hello");
            tracing::debug!(call = "00ab-1", "detail");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "<3>rpcd::shell::logging::tests: broken code=5",
                "<4>rpcd::shell::logging::tests: careful",
                "<4>second line",
                "<6>rpcd::shell::logging::tests: hello",
                "<7>rpcd::shell::logging::tests: detail call=\"00ab-1\"",
            ],
            "{text}"
        );
    }
}
