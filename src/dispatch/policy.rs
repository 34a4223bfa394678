//! The retry *policy*: a small pure function from an answer to a decision
//! (retry after a delay, give a final outcome, or stop the run). The
//! mechanism that sleeps and re-sends is in `dispatch`.

use std::time::Duration;

use crate::model::{Answer, Outcome};

/// Exponential backoff base and cap (full jitter between 0 and the bound).
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The record's outcome is final.
    Final(Outcome),
    /// Send again after this delay.
    Retry(Duration),
    /// Credentials refused (401): stop sending at once.
    Unauthorized,
    /// The server's certificate is not trusted: stop sending at once.
    Untrusted,
}

/// True for answers worth retrying: 408, 425, 429, 5xx, timeouts and
/// transport errors.
pub fn retryable(answer: &Answer) -> bool {
    match answer {
        Answer::Http { status, .. } => matches!(status, 408 | 425 | 429 | 500..=599),
        Answer::Timeout | Answer::Transport => true,
        Answer::Untrusted | Answer::WrongIdentity { .. } => false,
    }
}

/// Decides what to do after `attempt` (1-based) attempts. `jitter` is a
/// uniform random number in [0, 1) for the full-jitter backoff.
pub fn decide(answer: &Answer, attempt: u32, max_attempts: u32, jitter: f64) -> Decision {
    match answer {
        Answer::Http {
            status: 200..=299, ..
        } => Decision::Final(Outcome::Accepted),
        Answer::Http { status: 401, .. } => Decision::Unauthorized,
        Answer::Untrusted => Decision::Untrusted,
        Answer::WrongIdentity { .. } => Decision::Final(Outcome::Failed),
        a if retryable(a) => {
            if attempt >= max_attempts {
                return Decision::Final(Outcome::Failed);
            }
            let retry_after = match a {
                Answer::Http { retry_after, .. } => *retry_after,
                _ => None,
            };
            Decision::Retry(backoff(attempt, jitter, retry_after))
        }
        _ => Decision::Final(Outcome::Rejected),
    }
}

/// Full-jitter exponential backoff: uniform in [0, min(cap, base·2^(n-1))];
/// a `Retry-After` from the server is honoured (never retry sooner).
pub fn backoff(attempt: u32, jitter: f64, retry_after: Option<Duration>) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16));
    let bound = exp.min(BACKOFF_CAP);
    let jittered = bound.mul_f64(jitter.clamp(0.0, 1.0));
    match retry_after {
        Some(ra) => ra.max(jittered).min(Duration::from_secs(3600)),
        None => jittered,
    }
}

/// What a 401 from Banxa means, in words an operator can act on, from
/// Banxa's published authentication error codes.
pub fn explain_auth_code(code: Option<&str>) -> &'static str {
    match code {
        Some("40001") => "the nonce is not 10, 13 or 16 digits (kycshare sends 16: a proxy rewrote the header?); nothing in the data is wrong",
        Some("40002") => "the nonce is too old for Banxa: this host's clock is off; sync it (NTP, e.g. `timedatectl status`) and continue",
        Some("40003") => "a nonce was used twice: another process signs with the same key at the same time, or this host's clock jumped back; run one kycshare per key, check the clock, and continue",
        Some("40100") => "Banxa does not know this API key here: a sandbox key on production (or the reverse)? check BANXA_API_KEY against --base-url",
        Some("40101") => "the Authorization header was malformed when it reached Banxa: a proxy between here and Banxa may rewrite it",
        Some("40102") => "the Authorization header was missing when it reached Banxa: a proxy between here and Banxa may strip it",
        Some("40103") => "the signature does not match: BANXA_API_SECRET (or --api-secret-file) is not this key's secret, or something between here and Banxa changed the body after signing",
        _ => "the API key or secret is wrong or revoked: check BANXA_API_KEY and BANXA_API_SECRET (or --api-secret-file)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_retry_after;

    fn http(status: u16) -> Answer {
        Answer::Http {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn classification() {
        assert_eq!(
            decide(&http(202), 1, 5, 0.5),
            Decision::Final(Outcome::Accepted)
        );
        assert_eq!(decide(&http(401), 1, 5, 0.5), Decision::Unauthorized);
        for s in [400, 403, 404, 409, 422] {
            assert_eq!(
                decide(&http(s), 1, 5, 0.5),
                Decision::Final(Outcome::Rejected),
                "{s}"
            );
        }
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert!(
                matches!(decide(&http(s), 1, 5, 0.5), Decision::Retry(_)),
                "{s}"
            );
            assert_eq!(
                decide(&http(s), 5, 5, 0.5),
                Decision::Final(Outcome::Failed),
                "{s}"
            );
        }
        assert!(matches!(
            decide(&Answer::Timeout, 2, 5, 0.5),
            Decision::Retry(_)
        ));
        assert_eq!(
            decide(&Answer::Transport, 3, 3, 0.5),
            Decision::Final(Outcome::Failed)
        );
        assert_eq!(decide(&Answer::Untrusted, 1, 5, 0.5), Decision::Untrusted);
        assert_eq!(
            decide(&Answer::WrongIdentity { status: 202 }, 1, 5, 0.5),
            Decision::Final(Outcome::Failed),
            "an answer for another row is final at the first attempt"
        );
        for s in [301, 302, 307, 308] {
            assert_eq!(
                decide(&http(s), 1, 5, 0.5),
                Decision::Final(Outcome::Rejected),
                "{s}"
            );
        }
    }

    #[test]
    fn auth_codes_are_explained() {
        assert!(explain_auth_code(Some("40002")).contains("clock"));
        assert!(explain_auth_code(Some("40100")).contains("sandbox key on production"));
        assert!(explain_auth_code(Some("40103")).contains("secret"));
        assert!(explain_auth_code(Some("40101")).contains("header"));
        assert!(explain_auth_code(None).contains("wrong or revoked"));
    }

    #[test]
    fn backoff_is_full_jitter_exponential_capped() {
        assert_eq!(backoff(1, 0.999_999, None).as_millis(), 999);
        assert_eq!(backoff(3, 0.5, None), Duration::from_secs(2));
        assert_eq!(backoff(30, 0.999_999_9, None).as_secs(), 59);
        assert_eq!(backoff(4, 0.0, None), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_honoured() {
        assert_eq!(
            backoff(1, 0.1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_158_400);
        assert_eq!(parse_retry_after("12", now), Some(Duration::from_secs(12)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
