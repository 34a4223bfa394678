//! Logs: tracing to stderr, as text or JSON lines. Levels: `-q` errors
//! only, default warnings, `-v` info (every retry decision and every
//! record not accepted, with its reason), `-vv` debug, `-vvv` trace.
//! Progress lines (target `kycshare::progress`, see
//! `crate::output::progress`) come through at every level but `-q`.
//!
//! Colour only on a terminal: `--color auto` (the default) colours when
//! stderr is a terminal and `NO_COLOR` is unset or empty; `always` and
//! `never` force it. A log file or a journal never fills with escape codes.
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

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to colour stderr: `auto` on a terminal without `NO_COLOR`.
    pub fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

/// The filter: our crate at `level`, progress lines at info (unless
/// quiet), dependencies at warn.
pub fn filter_spec(verbose: u8, quiet: bool) -> String {
    if quiet {
        return "error".into();
    }
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let progress = if verbose >= 1 { level } else { "info" };
    format!("warn,kycshare={level},kycshare::progress={progress}")
}

/// The progress bar on screen, if any: log lines are written with it
/// hidden (`suspend`), so that a line never lands inside the bar.
static BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Registers (or, with `None`, removes) the bar log lines must go around.
pub fn set_bar(bar: Option<indicatif::ProgressBar>) {
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = bar;
}

/// Stderr, around the progress bar: one `write` per event (tracing's fmt
/// formats the whole line first).
struct AroundBar;

impl std::io::Write for AroundBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bar {
            Some(b) if !b.is_hidden() => b.suspend(|| std::io::stderr().write_all(buf))?,
            _ => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Logs are JSON objects (`--log-format json`): events that repeat their
/// message as fields for machines can leave them out in text.
pub fn is_json() -> bool {
    JSON.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn init(verbose: u8, quiet: bool, format: LogFormat, color: ColorChoice) {
    JSON.store(
        format == LogFormat::Json,
        std::sync::atomic::Ordering::Relaxed,
    );
    let filter = tracing_subscriber::EnvFilter::new(filter_spec(verbose, quiet));
    let colour = color.enabled() && format == LogFormat::Text;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(|| AroundBar)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_pass_at_the_default_level_not_with_quiet() {
        assert_eq!(
            filter_spec(0, false),
            "warn,kycshare=warn,kycshare::progress=info"
        );
        assert_eq!(
            filter_spec(2, false),
            "warn,kycshare=debug,kycshare::progress=debug"
        );
        assert_eq!(filter_spec(0, true), "error");
        assert!(!ColorChoice::Never.enabled());
        assert!(ColorChoice::Always.enabled());
    }
}
