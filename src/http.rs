//! HTTP for every client of the crate (Banxa, Sumsub): one client built
//! the same way (rustls, no redirects, keep-alive) and answer bodies read
//! with a bound, so memory stays flat whatever a server sends.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// The most of an answer body read (Banxa's answers are a few hundred
/// bytes; Sumsub's too). Larger is a transport error for that attempt.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why an answer body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// More than the limit arrived (or was announced by Content-Length).
    TooLarge { limit: usize },
    /// The connection broke, timed out or sent garbage mid-body.
    Read(reqwest::Error),
}

/// Reads at most `limit` bytes of an answer body: a `Content-Length` above
/// the limit is refused before reading, and a body (chunked or not) that
/// goes past it is dropped as soon as it does, so memory stays bounded
/// whatever arrives.
pub async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Bytes, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
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
