//! Sending one signed share request and reading Banxa's answer.
//!
//! Every call signs the exact body bytes it sends with a fresh nonce, so a
//! retry is a new request as far as Banxa's nonce check is concerned.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};

use super::policy::{parse_retry_after, Answer};
use crate::request::{NonceSource, Signer, SHARE_PATH};

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct Reply {
    pub answer: Answer,
    pub trace_id: String,
    pub message: String,
    /// The 422 `errors` object as compact JSON.
    pub errors: String,
    pub latency: Duration,
}

impl Reply {
    pub fn status(&self) -> Option<u16> {
        match self.answer {
            Answer::Http { status, .. } => Some(status),
            _ => None,
        }
    }
}

/// Options for the HTTP client.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Extra root certificate (PEM) to trust, e.g. a private CA.
    pub ca_cert_pem: Option<Vec<u8>>,
    pub max_idle_per_host: usize,
}

/// The HTTP client all requests share: rustls, no redirects followed,
/// keep-alive connections, no proxy surprises.
pub fn http_client(opts: &HttpOptions) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("kycshare/", env!("CARGO_PKG_VERSION")))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(opts.max_idle_per_host.max(1))
        .connect_timeout(Duration::from_secs(10));
    if let Some(pem) = &opts.ca_cert_pem {
        let cert = reqwest::Certificate::from_pem(pem)
            .map_err(|e| format!("the CA certificate is not valid PEM: {e}"))?;
        b = b.add_root_certificate(cert);
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Banxa's share endpoint with the credentials that sign for it.
pub struct BanxaClient {
    http: reqwest::Client,
    url: String,
    signer: Signer,
    nonces: Arc<NonceSource>,
    timeout: Duration,
}

impl BanxaClient {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        signer: Signer,
        nonces: Arc<NonceSource>,
        timeout: Duration,
    ) -> BanxaClient {
        BanxaClient {
            http,
            url: format!("{}{}", base_url.trim_end_matches('/'), SHARE_PATH),
            signer,
            nonces,
            timeout,
        }
    }

    /// Signs `body` with a fresh nonce and posts it.
    pub async fn send(&self, body: Bytes) -> Reply {
        let auth = self
            .signer
            .authorization(SHARE_PATH, self.nonces.next(), &body);
        let started = Instant::now();
        let result = self
            .http
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, auth)
            .timeout(self.timeout)
            .body(body)
            .send()
            .await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => return transport_reply(&e, started.elapsed()),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return transport_reply(&e, started.elapsed()),
        };
        let latency = started.elapsed();
        let (trace_id, message, errors) = parse_body(&bytes);
        Reply {
            answer: Answer::Http {
                status,
                retry_after,
            },
            trace_id,
            message,
            errors,
            latency,
        }
    }
}

fn transport_reply(e: &reqwest::Error, latency: Duration) -> Reply {
    let (answer, message) = if let Some(why) = certificate_error(e) {
        (
            Answer::Untrusted,
            format!("the server's TLS certificate is not trusted: {why}"),
        )
    } else if e.is_timeout() {
        (Answer::Timeout, "no answer within the timeout".to_string())
    } else if e.is_connect() {
        (
            Answer::Transport,
            format!("cannot connect: {}", root_cause(e)),
        )
    } else {
        (
            Answer::Transport,
            format!("connection error: {}", root_cause(e)),
        )
    };
    Reply {
        answer,
        trace_id: String::new(),
        message,
        errors: String::new(),
        latency,
    }
}

/// The rustls certificate error behind a failed request, if that is what
/// it is (unknown issuer, name mismatch, expired, no certificate). rustls
/// reaches us wrapped in `io::Error`s (nested), whose `source()` skips
/// what they wrap: look inside them too.
fn certificate_error(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use tokio_rustls::rustls::Error as TlsError;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<TlsError>() {
            let is_cert = matches!(
                t,
                TlsError::InvalidCertificate(_)
                    | TlsError::NoCertificatesPresented
                    | TlsError::UnsupportedNameType
            );
            return is_cert.then(|| t.to_string());
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => std::error::Error::source(io),
            },
            None => err.source(),
        };
    }
    None
}

/// The innermost cause of an error, which is the one that explains it
/// (e.g. "connection refused", "invalid peer certificate: UnknownIssuer").
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let s = cur.to_string();
    if s.len() > 300 {
        s.chars().take(300).collect()
    } else {
        s
    }
}

/// `traceId`, `message` and compact `errors` from an answer body, if JSON.
fn parse_body(bytes: &[u8]) -> (String, String, String) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return (String::new(), String::new(), String::new());
    };
    let trace_id = match v.get("traceId") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let message = v
        .get("message")
        .and_then(|m| m.as_str())
        .map(|m| m.chars().take(500).collect())
        .unwrap_or_default();
    let errors = v
        .get("errors")
        .map(|e| serde_json::to_string(e).unwrap_or_default())
        .unwrap_or_default();
    (trace_id, message, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_leniently() {
        let (t, m, e) = parse_body(br#"{"message":"The given data was invalid.","errors":{"email":["bad"]},"status":422,"traceId":"abc"}"#);
        assert_eq!(
            (t.as_str(), m.as_str(), e.as_str()),
            ("abc", "The given data was invalid.", r#"{"email":["bad"]}"#)
        );
        assert_eq!(
            parse_body(b"<html>"),
            (String::new(), String::new(), String::new())
        );
    }
}
