//! Logging: console on stderr at the configured level (or `RUST_LOG`),
//! coloured on a terminal only, and rolling daily files in the configured
//! directory.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Colour codes only for a terminal, and not when `NO_COLOR` is set
/// (<https://no-color.org>): in a file or a pipe they are noise.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber; keep the guard alive until exit so the
/// file writer flushes.
pub fn init(level: &str, directory: Option<&Path>) -> std::io::Result<Option<WorkerGuard>> {
    let console_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let console = fmt::layer()
        .with_ansi(colour_on_stderr())
        .with_writer(std::io::stderr)
        .with_filter(console_filter);
    let (file_layer, guard) = match directory {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let appender = tracing_appender::rolling::daily(dir, "bistoury.log");
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = fmt::layer()
                .with_ansi(false)
                .with_writer(writer)
                .with_filter(EnvFilter::new("info"));
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(console)
        .with(file_layer)
        .try_init();
    Ok(guard)
}
