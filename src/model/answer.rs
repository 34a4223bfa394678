//! What came back for one attempt, before any policy is applied.

use std::time::Duration;

/// What came back for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// An HTTP answer.
    Http {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No answer within `--timeout`.
    Timeout,
    /// Could not connect, or the connection broke before an answer.
    Transport,
    /// The server's TLS certificate is not trusted (unknown issuer, wrong
    /// name, expired): a configuration problem that retrying cannot fix.
    Untrusted,
    /// A success whose body names another identityReference: not this
    /// row's answer. Final (`failed`) at once: sending again could share a
    /// customer twice.
    WrongIdentity { status: u16 },
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date.
pub fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}
