//! The Sumsub share-token client: mints one single-use share token for one
//! applicant, for one recipient (`forClientId`), just before the Banxa
//! request that uses it (see `docs/minting.md`).
//!
//! `POST {base}/resources/accessTokens/shareToken` with the compact body
//! `{"applicantId":…,"forClientId":…,"ttlInSecs":…}`, signed as Sumsub
//! documents: `X-App-Token`, `X-App-Access-Ts` (unix seconds) and
//! `X-App-Access-Sig` = lowercase hex HMAC-SHA256(secret,
//! `TS + METHOD + PATH_WITH_QUERY + BODY`). The answer is classified into a
//! [`MintResult`].
//!
//! Not for: rate limiting or retrying. One [`SumsubClient::mint`] call is
//! one HTTP request; the pipeline owns the `--mint-rate` limiter and the
//! retry loop (`crate::dispatch`). The token is kept in a
//! [`Secret`], so it prints `***` and never reaches a log or a message.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::credentials::{secret_from, CredentialError};
use crate::http::{read_body, BodyError, MAX_ANSWER_BYTES};
use crate::model::{parse_retry_after, Answer};
use crate::secret::Secret;

/// Sumsub's production API.
pub const DEFAULT_BASE_URL: &str = "https://api.sumsub.com";
/// The share-token endpoint, relative to the base URL.
pub const SHARE_TOKEN_PATH: &str = "/resources/accessTokens/shareToken";
/// Longest `description` from Sumsub kept in a message.
const MAX_DESCRIPTION_CHARS: usize = 200;

/// Sumsub's app token and secret key.
#[derive(Debug, Clone)]
pub struct SumsubCredentials {
    pub app_token: String,
    pub secret_key: Secret,
}

/// `SUMSUB_APP_TOKEN` plus `SUMSUB_SECRET_KEY` or `--sumsub-secret-file`
/// (never a command-line value). `Ok(None)` when neither is configured.
/// Sumsub's "get applicant data" path prefix (`check` reads an applicant
/// that cannot exist).
pub const CHECK_PATH_PREFIX: &str = "/resources/applicants/";

pub fn credentials(
    secret_file: Option<&Path>,
) -> Result<Option<SumsubCredentials>, CredentialError> {
    let app_token = std::env::var("SUMSUB_APP_TOKEN")
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let secret = secret_from(secret_file, "SUMSUB_SECRET_KEY")?;
    match (app_token, secret) {
        (None, None) => Ok(None),
        (Some(app_token), Some(secret_key)) => Ok(Some(SumsubCredentials {
            app_token,
            secret_key,
        })),
        (None, Some(_)) => Err(CredentialError::Missing {
            var: "SUMSUB_APP_TOKEN",
            hint: "",
        }),
        (Some(_), None) => Err(CredentialError::Missing {
            var: "SUMSUB_SECRET_KEY",
            hint: " (or put the secret in a file and pass --sumsub-secret-file FILE)",
        }),
    }
}

/// `X-App-Access-Sig`: lowercase hex HMAC-SHA256(secret, TS + METHOD +
/// PATH_WITH_QUERY + BODY), TS in decimal unix seconds, METHOD in capitals
/// as sent, PATH_WITH_QUERY without scheme and host.
pub fn sign(secret: &Secret, ts: u64, method: &str, path_with_query: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(itoa::Buffer::new().format(ts).as_bytes());
    mac.update(method.as_bytes());
    mac.update(path_with_query.as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MintBody<'a> {
    applicant_id: &'a str,
    for_client_id: &'a str,
    ttl_in_secs: u64,
}

/// The compact JSON body of a share-token request, fields in Sumsub's
/// documented order.
pub fn mint_body(applicant_id: &str, for_client_id: &str, ttl_secs: u64) -> String {
    serde_json::to_string(&MintBody {
        applicant_id,
        for_client_id,
        ttl_in_secs: ttl_secs,
    })
    .expect("plain struct serialises")
}

#[derive(Deserialize)]
struct MintAnswer {
    token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    description: Option<String>,
}

/// What one mint attempt gave.
#[derive(Debug)]
pub enum MintResult {
    /// The share token (prints `***`).
    Token(Secret),
    /// A Sumsub 4xx other than 401/408/425/429 (unknown applicant 404, no
    /// permission 403, bad request 400): final for this row; nothing may be
    /// sent to Banxa. The message names Sumsub, the status and the reason,
    /// e.g. `Sumsub 404: Applicant not found`.
    Rejected { status: u16, message: String },
    /// Worth retrying: 408, 425, 429, 5xx (`Answer::Http` with Sumsub's
    /// `Retry-After`), no answer in time (`Answer::Timeout`), a connection
    /// error or an unreadable success (`Answer::Transport`).
    Retryable { answer: Answer, message: String },
    /// Sumsub 401: the app token or secret is wrong or revoked; the run must
    /// stop.
    Unauthorized { message: String },
}

/// Mints share tokens from Sumsub. Cheap to share (`&self`); holds no
/// limiter and retries nothing.
#[derive(Debug, Clone)]
pub struct SumsubClient {
    url: String,
    /// What is signed: the URL's path and query (a base URL with a path
    /// prefix signs the prefix too).
    path_with_query: String,
    creds: SumsubCredentials,
    for_client_id: String,
    ttl_secs: u64,
    http: reqwest::Client,
}

impl SumsubClient {
    /// `base_url` is Sumsub's API root (e.g. [`DEFAULT_BASE_URL`], or the
    /// emulator's `http://127.0.0.1:PORT`); a trailing `/` is ignored.
    /// Check it is a valid http(s) URL before: an invalid one makes every
    /// mint a `Retryable` transport failure.
    pub fn new(
        base_url: &str,
        creds: SumsubCredentials,
        for_client_id: String,
        ttl_secs: u64,
        http: reqwest::Client,
    ) -> SumsubClient {
        let url = format!("{}{SHARE_TOKEN_PATH}", base_url.trim_end_matches('/'));
        let path_with_query = match reqwest::Url::parse(&url) {
            Ok(u) => match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            },
            Err(_) => SHARE_TOKEN_PATH.to_string(),
        };
        SumsubClient {
            url,
            path_with_query,
            creds,
            for_client_id,
            ttl_secs,
            http,
        }
    }

    /// The recipient tokens are minted for.
    pub fn for_client_id(&self) -> &str {
        &self.for_client_id
    }

    /// The `ttlInSecs` asked for.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// `check`: one signed request that changes nothing, Sumsub's "get
    /// applicant data" (`GET /resources/applicants/{id}/one`) for an id
    /// that cannot exist. `Ok(status)`: Sumsub answered (404: the
    /// credentials were accepted; 401: refused); `Err`: no answer, why.
    pub async fn check(&self, timeout: Duration) -> Result<(u16, String), String> {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let tail = format!("{CHECK_PATH_PREFIX}unknown-kycshare-check-{ts}/one");
        let url = self.url.replace(SHARE_TOKEN_PATH, &tail);
        let path = self.path_with_query.replace(SHARE_TOKEN_PATH, &tail);
        let sig = sign(&self.creds.secret_key, ts, "GET", &path, b"");
        let sent = self
            .http
            .get(&url)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header("X-App-Token", &self.creds.app_token)
            .header("X-App-Access-Ts", ts)
            .header("X-App-Access-Sig", sig)
            .timeout(timeout)
            .send()
            .await;
        match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = read_body(r, MAX_ANSWER_BYTES).await.unwrap_or_default();
                let text = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v.get("description")
                            .or_else(|| v.get("message"))
                            .and_then(|m| m.as_str())
                            .map(|m| crate::model::cut_text(m, 300))
                    })
                    .unwrap_or_default();
                Ok((status, text))
            }
            Err(e) => Err(match transport(&e) {
                MintResult::Retryable { message, .. } => message,
                _ => e.to_string(),
            }),
        }
    }

    /// Mints one token for `applicant_id`: one HTTP request, answered (body
    /// included) within `timeout` or `Retryable` with `Answer::Timeout`.
    pub async fn mint(&self, applicant_id: &str, timeout: Duration) -> MintResult {
        match tokio::time::timeout(timeout, self.attempt(applicant_id)).await {
            Ok(result) => result,
            Err(_) => MintResult::Retryable {
                answer: Answer::Timeout,
                message: format!(
                    "Sumsub: no answer within {}",
                    humantime::format_duration(timeout)
                ),
            },
        }
    }

    async fn attempt(&self, applicant_id: &str) -> MintResult {
        let body = mint_body(applicant_id, &self.for_client_id, self.ttl_secs);
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let sig = sign(
            &self.creds.secret_key,
            ts,
            "POST",
            &self.path_with_query,
            body.as_bytes(),
        );
        let sent = self
            .http
            .post(&self.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header("X-App-Token", &self.creds.app_token)
            .header("X-App-Access-Ts", ts)
            .header("X-App-Access-Sig", sig)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return transport(&e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let bytes = match read_body(response, MAX_ANSWER_BYTES).await {
            Ok(bytes) => bytes,
            Err(BodyError::Read(e)) => return transport(&e),
            Err(BodyError::TooLarge { limit }) => {
                return MintResult::Retryable {
                    answer: Answer::Transport,
                    message: format!(
                        "Sumsub {status}: an answer body larger than {} KiB, not read",
                        limit / 1024
                    ),
                }
            }
        };
        classify(status, retry_after, &bytes)
    }
}

fn transport(e: &reqwest::Error) -> MintResult {
    if e.is_timeout() {
        return MintResult::Retryable {
            answer: Answer::Timeout,
            message: "Sumsub: no answer in time".to_string(),
        };
    }
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    MintResult::Retryable {
        answer: Answer::Transport,
        message: format!("Sumsub: connection failed: {reason}"),
    }
}

/// Classifies an answer (pure, for tests).
fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> MintResult {
    if (200..300).contains(&status) {
        return match serde_json::from_slice::<MintAnswer>(body) {
            Ok(MintAnswer { token: Some(t) }) if !t.is_empty() => MintResult::Token(Secret::new(t)),
            // Never quote a success body: it may hold a token.
            _ => MintResult::Retryable {
                answer: Answer::Transport,
                message: format!("Sumsub {status}: the answer holds no token"),
            },
        };
    }
    let message = format!("Sumsub {status}: {}", describe(status, body));
    match status {
        401 => MintResult::Unauthorized { message },
        408 | 425 | 429 | 500..=599 => MintResult::Retryable {
            answer: Answer::Http {
                status,
                retry_after,
            },
            message,
        },
        _ => MintResult::Rejected { status, message },
    }
}

/// Sumsub's `description`, cleaned and shortened; else the status's reason
/// phrase (an error page's body is not quoted).
fn describe(status: u16, body: &[u8]) -> String {
    let description = serde_json::from_slice::<ErrorAnswer>(body)
        .ok()
        .and_then(|a| a.description)
        .map(|d| {
            d.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(MAX_DESCRIPTION_CHARS)
                .collect::<String>()
                .trim()
                .to_string()
        })
        .filter(|d| !d.is_empty());
    description.unwrap_or_else(|| {
        reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("unexpected answer")
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed outside Rust, with OpenSSL:
    //   printf '%s' "1764165600POST/resources/accessTokens/shareToken{\"applicantId\":\"5f8b1c2d3e4a5b6c7d8e9f00\",\"forClientId\":\"banxa.com\",\"ttlInSecs\":600}" \
    //     | openssl dgst -sha256 -hmac sumsub-test-secret
    const BODY: &str =
        r#"{"applicantId":"5f8b1c2d3e4a5b6c7d8e9f00","forClientId":"banxa.com","ttlInSecs":600}"#;
    const SIG: &str = "f020a4369b55b917b083ddac14dff8f494684c099581f9aa64d363247419b7fc";
    //   printf '%s' "1607551635GET/resources/applicants/-;externalUserId=a/one?x=1&y=2" \
    //     | openssl dgst -sha256 -hmac abc
    const GET_SIG: &str = "735fd3d76742f2b813b93b82b4650f94fb7ad19f129745612fd0e39dffdb3c39";

    #[test]
    fn signs_as_openssl_does() {
        let secret = Secret::new("sumsub-test-secret");
        assert_eq!(
            sign(
                &secret,
                1_764_165_600,
                "POST",
                SHARE_TOKEN_PATH,
                BODY.as_bytes()
            ),
            SIG
        );
        assert_eq!(
            sign(
                &Secret::new("abc"),
                1_607_551_635,
                "GET",
                "/resources/applicants/-;externalUserId=a/one?x=1&y=2",
                b""
            ),
            GET_SIG
        );
        // Every input is covered.
        assert_ne!(
            sign(
                &secret,
                1_764_165_601,
                "POST",
                SHARE_TOKEN_PATH,
                BODY.as_bytes()
            ),
            SIG
        );
        assert_ne!(
            sign(
                &secret,
                1_764_165_600,
                "PUT",
                SHARE_TOKEN_PATH,
                BODY.as_bytes()
            ),
            SIG
        );
    }

    #[test]
    fn body_is_compact_in_documented_order() {
        assert_eq!(
            mint_body("5f8b1c2d3e4a5b6c7d8e9f00", "banxa.com", 600),
            BODY
        );
        assert_eq!(
            mint_body("a\"b", "c", 1),
            r#"{"applicantId":"a\"b","forClientId":"c","ttlInSecs":1}"#
        );
    }

    #[test]
    fn signed_path_includes_a_base_path_prefix() {
        let creds = SumsubCredentials {
            app_token: "t".into(),
            secret_key: Secret::new("s"),
        };
        let http = reqwest::Client::new();
        let c = SumsubClient::new(
            "https://api.sumsub.com/",
            creds.clone(),
            "b".into(),
            600,
            http.clone(),
        );
        assert_eq!(
            c.url,
            "https://api.sumsub.com/resources/accessTokens/shareToken"
        );
        assert_eq!(c.path_with_query, SHARE_TOKEN_PATH);
        let c = SumsubClient::new("http://127.0.0.1:9/proxy", creds, "b".into(), 600, http);
        assert_eq!(
            c.path_with_query,
            "/proxy/resources/accessTokens/shareToken"
        );
    }

    #[test]
    fn classification() {
        let t = classify(200, None, br#"{"token":"_act-x","forClientId":"b"}"#);
        match t {
            MintResult::Token(s) => assert_eq!(s.expose(), "_act-x"),
            other => panic!("{other:?}"),
        }
        let body = br#"{"description":"Applicant not found","code":404,"correlationId":"c"}"#;
        match classify(404, None, body) {
            MintResult::Rejected { status, message } => {
                assert_eq!(
                    (status, message.as_str()),
                    (404, "Sumsub 404: Applicant not found")
                )
            }
            other => panic!("{other:?}"),
        }
        match classify(403, None, b"<html>nope</html>") {
            MintResult::Rejected { message, .. } => assert_eq!(message, "Sumsub 403: Forbidden"),
            other => panic!("{other:?}"),
        }
        match classify(401, None, br#"{"description":"Invalid app token"}"#) {
            MintResult::Unauthorized { message } => {
                assert_eq!(message, "Sumsub 401: Invalid app token")
            }
            other => panic!("{other:?}"),
        }
        for status in [408, 425, 429, 500, 503] {
            let ra = Some(Duration::from_secs(3));
            match classify(status, ra, b"{}") {
                MintResult::Retryable { answer, .. } => assert_eq!(
                    answer,
                    Answer::Http {
                        status,
                        retry_after: ra
                    }
                ),
                other => panic!("{status}: {other:?}"),
            }
        }
        // A success without a token: retried, and the body is not quoted.
        match classify(200, None, br#"{"tok":"_act-secret"}"#) {
            MintResult::Retryable { answer, message } => {
                assert_eq!(answer, Answer::Transport);
                assert!(!message.contains("_act-secret"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let long = format!(r#"{{"description":"{}\n"}}"#, "x".repeat(500));
        match classify(400, None, long.as_bytes()) {
            MintResult::Rejected { message, .. } => {
                assert_eq!(message.len(), "Sumsub 400: ".len() + 200)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn token_prints_stars() {
        let r = MintResult::Token(Secret::new("_act-secret"));
        assert_eq!(format!("{r:?}"), "Token(***)");
    }
}
