//! Sending one signed share request and reading Banxa's answer.
//!
//! Every call signs the exact body bytes it sends with a fresh nonce, so a
//! retry is a new request as far as Banxa's nonce check is concerned.
//!
//! Whatever the server (or a proxy in front of it) sends, memory stays
//! bounded: at most [`MAX_ANSWER_BYTES`] of a body are read (more is a
//! transport error for that attempt), hyper bounds the headers, and the
//! per-request timeout covers the whole exchange, body included. What is
//! kept of an answer for the results is bounded again (`crate::model`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::Value;

use crate::http::{read_body, BodyError, MAX_ANSWER_BYTES};
use crate::model::{bound_errors, cut_text, MAX_MESSAGE_BYTES};
use crate::model::{parse_retry_after, Answer};
use crate::request::{NonceSource, Signer, SHARE_PATH};

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct Reply {
    pub answer: Answer,
    pub trace_id: String,
    pub message: String,
    /// The 422 `errors` object as compact JSON (at most [`MAX_ERRORS_BYTES`]).
    pub errors: String,
    /// Banxa's error `code` (e.g. `40103` on a 401), when the body has one.
    pub code: Option<String>,
    pub latency: Duration,
    /// An identity's `kyc.status` (verification requests only): Banxa's
    /// value as it came (printable ASCII, at most 64 bytes), `None` when
    /// the answer has none.
    pub kyc_status: Option<String>,
}

impl Reply {
    pub fn status(&self) -> Option<u16> {
        match self.answer {
            Answer::Http { status, .. } | Answer::WrongIdentity { status, .. } => Some(status),
            _ => None,
        }
    }
}

/// Banxa's share endpoint with the credentials that sign for it.
pub struct BanxaClient {
    http: reqwest::Client,
    /// Parsed once: a request clones it instead of parsing a string.
    url: reqwest::Url,
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
            url: reqwest::Url::parse(&format!("{}{}", base_url.trim_end_matches('/'), SHARE_PATH))
                .expect("the base URL was checked when the run was planned"),
            signer,
            nonces,
            timeout,
        }
    }

    /// Signs `body` with a fresh nonce and posts it. `identity_reference`
    /// is the row's: a 2xx that names another one is not a success.
    pub async fn send(&self, body: Bytes, identity_reference: &str) -> Reply {
        let auth = self
            .signer
            .authorization(SHARE_PATH, self.nonces.next(), &body);
        let started = Instant::now();
        let result = self
            .http
            .post(self.url.clone())
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
        let bytes = match read_body(resp, MAX_ANSWER_BYTES).await {
            Ok(b) => b,
            Err(e) => return body_error_reply(status, e, started.elapsed()),
        };
        let latency = started.elapsed();
        if (200..300).contains(&status) {
            return accepted_reply(status, &bytes, identity_reference, latency);
        }
        let parsed = parse_body(&bytes);
        let mut message = parsed.message;
        if (300..400).contains(&status) {
            message = format!(
                "HTTP {status}: a redirect, not followed (Banxa does not redirect this endpoint: check --base-url)"
            );
        }
        Reply {
            answer: Answer::Http {
                status,
                retry_after,
            },
            trace_id: parsed.trace_id,
            message,
            errors: parsed.errors,
            code: parsed.code,
            latency,
            kyc_status: None,
        }
    }
}

/// What a probe found: Banxa answering (any answer that is not 429 or
/// 5xx: 404 for the identity that cannot exist, 200, even 401), or not.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Up(u16),
    Down(String),
}

/// A probe's verdict, the answer behind it, and the server's clock.
#[derive(Debug, Clone)]
pub struct ProbeAnswer {
    pub probe: Probe,
    pub reply: Reply,
    /// The answer's `Date` header.
    pub date: Option<SystemTime>,
}

/// The path prefix of Banxa's identity retrieval.
pub const IDENTITY_PATH: &str = "/eapi/v0/identities/";

/// A signed GET's answer before it is read as a probe or a verification.
struct Got {
    status: u16,
    retry_after: Option<Duration>,
    date: Option<SystemTime>,
    body: Result<Bytes, BodyError>,
}

impl BanxaClient {
    /// A `GET` of `path` signed with Banxa's GET signature (no body line)
    /// and a fresh nonce; the body is read up to [`MAX_ANSWER_BYTES`].
    async fn get(&self, path: &str, nonce: u64) -> Result<Got, reqwest::Error> {
        let auth = self.signer.get_authorization(path, nonce);
        let mut url = self.url.clone();
        url.set_path(path);
        let resp = self
            .http
            .get(url)
            .header(AUTHORIZATION, auth)
            .timeout(self.timeout)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let date = header(reqwest::header::DATE).and_then(|v| httpdate::parse_http_date(&v).ok());
        let retry_after =
            header(RETRY_AFTER).and_then(|v| parse_retry_after(&v, SystemTime::now()));
        let body = read_body(resp, MAX_ANSWER_BYTES).await;
        Ok(Got {
            status,
            retry_after,
            date,
            body,
        })
    }

    /// The request `check` sends and the breaker probes with: a signed
    /// `GET` of an identity that cannot exist (changes nothing).
    pub async fn probe(&self) -> ProbeAnswer {
        let nonce = self.nonces.next();
        let path = format!("{IDENTITY_PATH}kycshare-probe-{nonce}");
        let started = Instant::now();
        let got = match self.get(&path, nonce).await {
            Ok(g) => g,
            Err(e) => {
                let reply = transport_reply(&e, started.elapsed());
                return ProbeAnswer {
                    probe: Probe::Down(reply.message.clone()),
                    reply,
                    date: None,
                };
            }
        };
        let status = got.status;
        let parsed = parse_body(&got.body.unwrap_or_default());
        let reply = Reply {
            answer: Answer::Http {
                status,
                retry_after: None,
            },
            trace_id: parsed.trace_id,
            message: parsed.message,
            errors: String::new(),
            code: parsed.code,
            latency: started.elapsed(),
            kyc_status: None,
        };
        let probe = if status == 429 || status >= 500 {
            Probe::Down(format!("HTTP {status}"))
        } else {
            Probe::Up(status)
        };
        ProbeAnswer {
            probe,
            reply,
            date: got.date,
        }
    }

    /// Banxa's identity retrieval, `GET /eapi/v0/identities/{identityReference}`
    /// (`kycshare verify`): a 2xx carries the identity's `kyc.status` in
    /// [`Reply::kyc_status`]; anything else is read like a share's answer
    /// (404: Banxa does not know the identity).
    pub async fn identity(&self, identity_reference: &str) -> Reply {
        let path = format!("{IDENTITY_PATH}{identity_reference}");
        let started = Instant::now();
        let got = match self.get(&path, self.nonces.next()).await {
            Ok(g) => g,
            Err(e) => return transport_reply(&e, started.elapsed()),
        };
        let status = got.status;
        let bytes = match got.body {
            Ok(b) => b,
            Err(e) => return body_error_reply(status, e, started.elapsed()),
        };
        let latency = started.elapsed();
        let parsed = parse_body(&bytes);
        let mut message = parsed.message;
        let mut kyc_status = None;
        if (200..300).contains(&status) {
            kyc_status = kyc_status_of(&bytes);
            message.clear();
        } else if (300..400).contains(&status) {
            message = format!(
                "HTTP {status}: a redirect, not followed (Banxa does not redirect this endpoint: check --base-url)"
            );
        }
        Reply {
            answer: Answer::Http {
                status,
                retry_after: got.retry_after,
            },
            trace_id: parsed.trace_id,
            message,
            errors: parsed.errors,
            code: parsed.code,
            latency,
            kyc_status,
        }
    }

    /// The address requests go to (`host:port`), for messages.
    pub fn address(&self) -> String {
        format!(
            "{}:{}",
            self.url.host_str().unwrap_or("?"),
            self.url.port_or_known_default().unwrap_or(0)
        )
    }
}

/// The most bytes of a `kyc.status` kept.
pub const MAX_KYC_STATUS_BYTES: usize = 64;

/// `kyc.status` of an identity's answer (also under `data`, where Banxa
/// wraps some answers): as it comes when it is a string of printable
/// ASCII (cut at [`MAX_KYC_STATUS_BYTES`]), else `None`.
fn kyc_status_of(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let status = v
        .pointer("/kyc/status")
        .or_else(|| v.pointer("/data/kyc/status"))?
        .as_str()?;
    let clean: String = status
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(MAX_KYC_STATUS_BYTES)
        .collect();
    let clean = clean.trim();
    (!clean.is_empty()).then(|| clean.to_string())
}

/// True when an attempt failed before any HTTP exchange: the connection
/// (or its TLS handshake) could not be made.
pub fn connect_failed(reply: &Reply) -> bool {
    reply.answer == Answer::Transport && reply.message.starts_with("cannot connect")
}

/// A 2xx: accepted, unless its body names another identityReference.
fn accepted_reply(status: u16, body: &[u8], identity_reference: &str, latency: Duration) -> Reply {
    let mut reply = Reply {
        answer: Answer::Http {
            status,
            retry_after: None,
        },
        trace_id: String::new(),
        message: String::new(),
        errors: String::new(),
        code: None,
        latency,
        kyc_status: None,
    };
    if names_exactly(body, identity_reference) {
        return reply;
    }
    if let Some(named) = named_identity(body) {
        if named != identity_reference {
            let shown = if !named.is_empty()
                && named.len() <= 64
                && named
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                format!("`{named}`")
            } else {
                "another identityReference".to_string()
            };
            reply.answer = Answer::WrongIdentity { status };
            reply.message = format!(
                "Banxa answered {status} for {shown}, not for this row: not counted as accepted and not retried; ask Banxa (with the traceId or time) whether this customer was received before sending the row again"
            );
        }
    }
    reply
}

/// True for the usual 202, `{"identityReference":"<this row's>"}`, decided
/// without parsing JSON (a reference is `[A-Za-z0-9-]+`: no escapes).
fn names_exactly(body: &[u8], identity_reference: &str) -> bool {
    const HEAD: &[u8] = b"{\"identityReference\":\"";
    body.len() == HEAD.len() + identity_reference.len() + 2
        && body.starts_with(HEAD)
        && body.ends_with(b"\"}")
        && &body[HEAD.len()..body.len() - 2] == identity_reference.as_bytes()
}

/// The identityReference a success body names: `None` when it names none
/// (empty, not JSON, no such field, or `null`).
fn named_identity(body: &[u8]) -> Option<String> {
    // Most bodies name no identity at all (`{}`, empty): no parse needed,
    // unless an escape could spell the key some other way.
    if memchr::memmem::find(body, b"identityReference").is_none()
        && memchr::memchr(b'\\', body).is_none()
    {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    match v.get("identityReference")? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn body_error_reply(status: u16, e: BodyError, latency: Duration) -> Reply {
    match e {
        BodyError::TooLarge { limit } => Reply {
            answer: Answer::Transport,
            trace_id: String::new(),
            message: format!(
                "HTTP {status} with an answer body larger than {} KiB: not read (a proxy or a server that is not Banxa?)",
                limit / 1024
            ),
            errors: String::new(),
            code: None,
            latency,
            kyc_status: None,
        },
        BodyError::Read(e) => transport_reply(&e, latency),
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
        code: None,
        latency,
        kyc_status: None,
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

/// What is kept of an error body.
#[derive(Debug, Default, PartialEq)]
struct ParsedBody {
    trace_id: String,
    message: String,
    errors: String,
    code: Option<String>,
}

/// A scalar of an error body (`traceId`, `code`, `request_id`) as text,
/// printable ASCII only and at most 128 characters (anything else is not
/// an id and is dropped).
fn scalar(v: Option<&Value>) -> Option<String> {
    let s = match v? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(s)
}

/// `traceId`, `message` (with Banxa's `code` and `request_id`, when the
/// body has them) and compact `errors` from an answer body, if JSON.
/// `traceId` falls back to `request_id`.
fn parse_body(bytes: &[u8]) -> ParsedBody {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return ParsedBody::default();
    };
    let code = scalar(v.get("code"));
    let request_id = scalar(v.get("request_id")).or_else(|| scalar(v.get("requestId")));
    let trace_id = scalar(v.get("traceId"))
        .or_else(|| request_id.clone())
        .unwrap_or_default();
    let mut message = v
        .get("message")
        .and_then(Value::as_str)
        .map(|m| {
            let clean: String = m
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            cut_text(clean.trim(), MAX_MESSAGE_BYTES / 2)
        })
        .unwrap_or_default();
    let ids: Vec<String> = [
        code.as_ref().map(|c| format!("code {c}")),
        request_id.map(|r| format!("request_id {r}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !ids.is_empty() {
        if !message.is_empty() {
            message.push(' ');
        }
        message.push_str(&format!("({})", ids.join(", ")));
    }
    let errors = v.get("errors").map(bound_errors).unwrap_or_default();
    ParsedBody {
        trace_id,
        message,
        errors,
        code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CUT_MARKER, ERRORS_CUT_KEY, MAX_ERRORS_BYTES};

    #[test]
    fn kyc_status_is_read_as_it_comes_and_bounded() {
        let b = br#"{"account":{"exists":true,"blocked":false},"kyc":{"status":"VERIFIED"}}"#;
        assert_eq!(kyc_status_of(b).as_deref(), Some("VERIFIED"));
        let wrapped = br#"{"data":{"kyc":{"status":"IN_REVIEW"}}}"#;
        assert_eq!(kyc_status_of(wrapped).as_deref(), Some("IN_REVIEW"));
        assert_eq!(kyc_status_of(br#"{"kyc":{}}"#), None);
        assert_eq!(kyc_status_of(br#"{"kyc":{"status":7}}"#), None);
        assert_eq!(kyc_status_of(b"<html>"), None);
        let odd = format!(r#"{{"kyc":{{"status":"A\nB{}"}}}}"#, "x".repeat(500));
        let got = kyc_status_of(odd.as_bytes()).unwrap();
        assert!(
            got.starts_with("AB") && got.len() == MAX_KYC_STATUS_BYTES,
            "{got}"
        );
    }

    #[test]
    fn bodies_are_read_leniently() {
        let p = parse_body(br#"{"message":"The given data was invalid.","errors":{"email":["bad"]},"status":422,"traceId":"abc"}"#);
        assert_eq!(
            (p.trace_id.as_str(), p.message.as_str(), p.errors.as_str()),
            ("abc", "The given data was invalid.", r#"{"email":["bad"]}"#)
        );
        assert_eq!(parse_body(b"<html>"), ParsedBody::default());
    }

    #[test]
    fn banxa_codes_and_request_ids_are_kept() {
        let p = parse_body(
            br#"{"message":"Unauthenticated.","status":401,"code":40103,"request_id":"req-9f2"}"#,
        );
        assert_eq!(
            p.message,
            "Unauthenticated. (code 40103, request_id req-9f2)"
        );
        assert_eq!(p.trace_id, "req-9f2", "traceId falls back to request_id");
        assert_eq!(p.code.as_deref(), Some("40103"));
        let p = parse_body(br#"{"message":"x","traceId":"t-1","request_id":"r-1"}"#);
        assert_eq!(p.trace_id, "t-1", "traceId wins over request_id");
        let p = parse_body(br#"{"code":"40002"}"#);
        assert_eq!(p.message, "(code 40002)");
    }

    #[test]
    fn messages_and_errors_are_bounded() {
        let long = format!(r#"{{"message":"{}","status":500}}"#, "é".repeat(5000));
        let p = parse_body(long.as_bytes());
        assert!(
            p.message.len() <= MAX_MESSAGE_BYTES / 2,
            "{}",
            p.message.len()
        );
        assert!(p.message.ends_with(CUT_MARKER));

        let mut fields = serde_json::Map::new();
        for i in 0..3000 {
            fields.insert(format!("field{i}"), serde_json::json!(["is invalid."]));
        }
        let e = bound_errors(&Value::Object(fields));
        assert!(e.len() <= MAX_ERRORS_BYTES, "{}", e.len());
        let back: serde_json::Map<String, Value> = serde_json::from_str(&e).expect("still JSON");
        let note = back[ERRORS_CUT_KEY][0].as_str().unwrap();
        let kept = back.len() - 1;
        assert_eq!(note, format!("{} more fields not shown", 3000 - kept));
        assert!(kept > 50, "{kept}");

        let small = serde_json::json!({"email":["bad"]});
        assert_eq!(bound_errors(&small), r#"{"email":["bad"]}"#);
        let big = Value::String("x".repeat(10_000));
        assert!(bound_errors(&big).len() < 100);
    }

    #[test]
    fn a_success_for_another_identity_is_not_accepted() {
        let ok = accepted_reply(
            202,
            br#"{"identityReference":"c-1"}"#,
            "c-1",
            Duration::ZERO,
        );
        assert!(matches!(ok.answer, Answer::Http { status: 202, .. }));
        let none = accepted_reply(202, b"", "c-1", Duration::ZERO);
        assert!(matches!(none.answer, Answer::Http { status: 202, .. }));
        let other = accepted_reply(
            202,
            br#"{"identityReference":"c-2"}"#,
            "c-1",
            Duration::ZERO,
        );
        assert_eq!(other.answer, Answer::WrongIdentity { status: 202 });
        assert!(other.message.contains("`c-2`"), "{}", other.message);
        let odd = accepted_reply(202, br#"{"identityReference":7}"#, "c-1", Duration::ZERO);
        assert_eq!(odd.answer, Answer::WrongIdentity { status: 202 });
        // The key spelled with an escape is still read.
        let escaped = accepted_reply(
            202,
            br#"{"identity\u0052eference":"c-2"}"#,
            "c-1",
            Duration::ZERO,
        );
        assert_eq!(escaped.answer, Answer::WrongIdentity { status: 202 });
        // The fast path takes only the exact usual body.
        assert!(names_exactly(br#"{"identityReference":"c-1"}"#, "c-1"));
        assert!(!names_exactly(br#"{"identityReference":"c-12"}"#, "c-1"));
        assert!(!names_exactly(
            br#"{"identityReference":"c-1","x":1}"#,
            "c-1"
        ));
    }
}
