//! Logs: tracing to stderr, as text or JSON lines. Levels: `-q` errors
//! only, default warnings, `-v` info, `-vv` debug, `-vvv` trace.
//!
//! Nothing logged anywhere in the crate carries an email, a mobile number,
//! a token or a secret; the types that hold them print `***`.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

pub fn init(verbose: u8, quiet: bool, format: LogFormat) {
    let level = if quiet {
        tracing::Level::ERROR
    } else {
        match verbose {
            0 => tracing::Level::WARN,
            1 => tracing::Level::INFO,
            2 => tracing::Level::DEBUG,
            _ => tracing::Level::TRACE,
        }
    };
    // Our crate at the chosen level; dependencies one notch quieter.
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "warn,kycshare={}",
        level.as_str().to_ascii_lowercase()
    ));
    // Colour only on a terminal, and never with NO_COLOR set: a log file or
    // a journal must not fill with escape codes.
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
