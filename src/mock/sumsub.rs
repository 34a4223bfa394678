//! Sumsub's share-token endpoint, as the emulator serves it:
//! `POST /resources/accessTokens/shareToken`.
//!
//! Written from Sumsub's documentation alone. It must not call the client
//! (`crate::request::mint`): the signature is recomputed here by separate code, so
//! a bug in the client's signer cannot hide behind the same bug here.
//!
//! Checks, in order (the first failure answers):
//!
//! 1. authentication (401, reason counted): Sumsub credentials configured,
//!    `X-App-Token` equal to the configured app token (constant time),
//!    `X-App-Access-Sig` the lowercase hex HMAC-SHA256 of
//!    `TS + METHOD + PATH_WITH_QUERY + BODY` (constant time),
//!    `X-App-Access-Ts` unix seconds within 1 minute of the server clock
//!    (Sumsub's documented window);
//! 2. body (400): a JSON object with a string `applicantId`, a non-empty
//!    string `forClientId` and a positive integer `ttlInSecs`;
//! 3. applicant (404): see [`applicant_exists`];
//! 4. client (403): `forClientId` equal to `--sumsub-forbidden-client`;
//! 5. injected fault (500): `--sumsub-fail-rate`, from its own seeded RNG;
//! 6. minted: 200 `{"token":"_act-mock-…","forClientId":…}`.
//!
//! Minted tokens live in a [`TokenBook`] that the Banxa endpoint consults
//! with `--check-tokens`.

use std::collections::{BTreeSet, HashMap};

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;

use super::auth::{constant_time_eq, decode_lower_hex};
use crate::secret::Secret;

/// Sumsub's share-token endpoint.
pub const SHARE_TOKEN_PATH: &str = "/resources/accessTokens/shareToken";
/// How far `X-App-Access-Ts` may be from the server clock, either way.
pub const TS_WINDOW_SECS: u64 = 60;
/// Applicant ids starting with this do not exist (a 404 on demand).
pub const UNKNOWN_PREFIX: &str = "unknown";
/// Largest `ttlInSecs` accepted (a day); above it, 400.
pub const MAX_TTL_SECS: u64 = 86_400;
/// How long a token is remembered after it expired, so that using it is
/// reported as `expired` rather than `unknown`. Then it is forgotten.
pub const RETAIN_AFTER_EXPIRY_MICROS: u64 = 10 * 60 * 1_000_000;

/// Why a Sumsub request got 401. Each reason has its own counter in
/// `/stats` (`sumsubAuthFailures`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SumsubAuthFailure {
    /// The emulator has no Sumsub app token or secret configured.
    NotConfigured,
    MissingHeader,
    UnknownAppToken,
    BadSignature,
    BadTs,
    StaleTs,
}

impl SumsubAuthFailure {
    pub const ALL: [SumsubAuthFailure; 6] = [
        SumsubAuthFailure::NotConfigured,
        SumsubAuthFailure::MissingHeader,
        SumsubAuthFailure::UnknownAppToken,
        SumsubAuthFailure::BadSignature,
        SumsubAuthFailure::BadTs,
        SumsubAuthFailure::StaleTs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SumsubAuthFailure::NotConfigured => "not_configured",
            SumsubAuthFailure::MissingHeader => "missing_header",
            SumsubAuthFailure::UnknownAppToken => "unknown_app_token",
            SumsubAuthFailure::BadSignature => "bad_signature",
            SumsubAuthFailure::BadTs => "bad_ts",
            SumsubAuthFailure::StaleTs => "stale_ts",
        }
    }

    /// The `description` of the 401 answer.
    pub fn description(self) -> &'static str {
        match self {
            SumsubAuthFailure::NotConfigured => "App token is not configured on this emulator",
            SumsubAuthFailure::MissingHeader => {
                "Missing X-App-Token, X-App-Access-Ts or X-App-Access-Sig header"
            }
            SumsubAuthFailure::UnknownAppToken => "Invalid app token",
            SumsubAuthFailure::BadSignature => "Request signature mismatch",
            SumsubAuthFailure::BadTs => "Invalid X-App-Access-Ts",
            SumsubAuthFailure::StaleTs => "Request timestamp is too far from the server time",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The three signed headers, as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignedHeaders<'a> {
    pub app_token: Option<&'a [u8]>,
    pub ts: Option<&'a [u8]>,
    pub sig: Option<&'a [u8]>,
}

/// Checks Sumsub's request signature: the stateless part is the app token
/// and the HMAC; the timestamp is checked against `now_micros`.
#[derive(Clone)]
pub struct SumsubVerifier {
    app_token: String,
    /// HMAC keyed once with the secret; cloned per request.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for SumsubVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SumsubVerifier")
            .field("app_token", &self.app_token)
            .finish_non_exhaustive()
    }
}

impl SumsubVerifier {
    pub fn new(app_token: &str, secret: &Secret) -> SumsubVerifier {
        SumsubVerifier {
            app_token: app_token.to_string(),
            keyed: Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
                .expect("HMAC accepts keys of any length"),
        }
    }

    /// Verifies app token, signature and timestamp freshness, in that order.
    pub fn verify(
        &self,
        headers: SignedHeaders<'_>,
        method: &str,
        path_with_query: &str,
        body: &[u8],
        now_micros: u64,
    ) -> Result<(), SumsubAuthFailure> {
        let (Some(app_token), Some(ts), Some(sig)) = (headers.app_token, headers.ts, headers.sig)
        else {
            return Err(SumsubAuthFailure::MissingHeader);
        };
        if !constant_time_eq(app_token, self.app_token.as_bytes()) {
            return Err(SumsubAuthFailure::UnknownAppToken);
        }
        let sig = std::str::from_utf8(sig).map_err(|_| SumsubAuthFailure::BadSignature)?;
        let expected = decode_lower_hex(sig).ok_or(SumsubAuthFailure::BadSignature)?;
        let mut mac = self.keyed.clone();
        mac.update(ts);
        mac.update(method.as_bytes());
        mac.update(path_with_query.as_bytes());
        mac.update(body);
        mac.verify_slice(&expected)
            .map_err(|_| SumsubAuthFailure::BadSignature)?;
        let ts_secs = parse_ts(ts).ok_or(SumsubAuthFailure::BadTs)?;
        let now_secs = now_micros / 1_000_000;
        if ts_secs.abs_diff(now_secs) > TS_WINDOW_SECS {
            return Err(SumsubAuthFailure::StaleTs);
        }
        Ok(())
    }
}

/// Unix seconds: 1 to 11 digits only.
fn parse_ts(ts: &[u8]) -> Option<u64> {
    if ts.is_empty() || ts.len() > 11 || !ts.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(ts).ok()?.parse().ok()
}

/// A share-token request whose body is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintRequest {
    pub applicant_id: String,
    pub for_client_id: String,
    pub ttl_secs: u64,
}

/// Parses the body; the error is the 400 `description`.
pub fn parse_request(body: &[u8]) -> Result<MintRequest, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("The request body is not valid JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("The request body must be a JSON object".into());
    };
    let applicant_id = match object.get("applicantId") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err("applicantId is required and must be a non-empty string".into()),
    };
    let for_client_id = match object.get("forClientId") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => return Err("forClientId is required and must be a non-empty string".into()),
    };
    let ttl_secs = match object.get("ttlInSecs").and_then(Value::as_u64) {
        Some(n) if (1..=MAX_TTL_SECS).contains(&n) => n,
        _ => {
            return Err(format!(
            "ttlInSecs is required and must be a whole number of seconds from 1 to {MAX_TTL_SECS}"
        ))
        }
    };
    Ok(MintRequest {
        applicant_id,
        for_client_id,
        ttl_secs,
    })
}

/// The emulator's applicants: every id of 1 to 128 ASCII letters, digits,
/// `_` and `-` exists, except those starting with `unknown` (so a test can
/// name an applicant that does not exist).
pub fn applicant_exists(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !id.starts_with(UNKNOWN_PREFIX)
}

/// A fresh opaque token: `_act-mock-` and 32 random bytes in hex, from the
/// operating system's CSPRNG-seeded generator (never the fault seed, so
/// tokens cannot be guessed from `--seed`).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("_act-mock-{}", hex::encode(bytes))
}

/// Why the Banxa endpoint refused a token (`--check-tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// Not minted by this emulator (or expired long enough ago to be
    /// forgotten).
    Unknown,
    /// Already used by an accepted request (or a fault that consumed it).
    Used,
    /// Its TTL has passed.
    Expired,
}

impl TokenRejection {
    pub const ALL: [TokenRejection; 3] = [
        TokenRejection::Unknown,
        TokenRejection::Used,
        TokenRejection::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenRejection::Unknown => "unknown",
            TokenRejection::Used => "used",
            TokenRejection::Expired => "expired",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy)]
struct TokenEntry {
    expires_at: u64,
    used: bool,
}

/// The tokens minted, with their expiry. Memory is bounded: a token is
/// forgotten [`RETAIN_AFTER_EXPIRY_MICROS`] after it expires, so the book
/// holds at most the tokens minted in the last TTL + 10 minutes.
#[derive(Debug, Default)]
pub struct TokenBook {
    tokens: HashMap<String, TokenEntry>,
    /// (forget at, token), for pruning in time order.
    forget: BTreeSet<(u64, String)>,
}

impl TokenBook {
    /// Remembers a token minted at `now_micros`, valid for `ttl_secs`.
    pub fn insert(&mut self, token: String, ttl_secs: u64, now_micros: u64) {
        self.prune(now_micros);
        let expires_at = now_micros.saturating_add(ttl_secs.saturating_mul(1_000_000));
        let forget_at = expires_at.saturating_add(RETAIN_AFTER_EXPIRY_MICROS);
        self.forget.insert((forget_at, token.clone()));
        self.tokens.insert(
            token,
            TokenEntry {
                expires_at,
                used: false,
            },
        );
    }

    /// Is `token` usable at `now_micros`: minted here, unused, unexpired?
    pub fn check(&mut self, token: &str, now_micros: u64) -> Result<(), TokenRejection> {
        self.prune(now_micros);
        match self.tokens.get(token) {
            None => Err(TokenRejection::Unknown),
            Some(e) if e.used => Err(TokenRejection::Used),
            Some(e) if now_micros >= e.expires_at => Err(TokenRejection::Expired),
            Some(_) => Ok(()),
        }
    }

    /// Uses a token up.
    pub fn consume(&mut self, token: &str) {
        if let Some(e) = self.tokens.get_mut(token) {
            e.used = true;
        }
    }

    fn prune(&mut self, now_micros: u64) {
        while let Some((forget_at, _)) = self.forget.first() {
            if *forget_at > now_micros {
                break;
            }
            if let Some((_, token)) = self.forget.pop_first() {
                self.tokens.remove(&token);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Sumsub's error body: `{"description","code","correlationId"}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody<'a> {
    pub description: &'a str,
    pub code: u16,
    pub correlation_id: &'a str,
}

/// The 422 message of the Banxa endpoint for a refused token.
pub const TOKEN_INVALID: &str = "The provider.token is invalid or expired.";

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_764_165_600_000_000;

    #[test]
    fn book_rejects_unknown_used_and_expired() {
        let mut book = TokenBook::default();
        book.insert("a".into(), 600, NOW);
        book.insert("b".into(), 1, NOW);
        assert_eq!(book.check("x", NOW), Err(TokenRejection::Unknown));
        assert_eq!(book.check("a", NOW), Ok(()));
        book.consume("a");
        assert_eq!(book.check("a", NOW), Err(TokenRejection::Used));
        assert_eq!(book.check("b", NOW + 999_999), Ok(()));
        assert_eq!(
            book.check("b", NOW + 1_000_000),
            Err(TokenRejection::Expired)
        );
    }

    #[test]
    fn book_forgets_expired_tokens() {
        let mut book = TokenBook::default();
        for i in 0..100 {
            book.insert(format!("t{i}"), 60, NOW);
        }
        book.insert("long".into(), 3600, NOW);
        assert_eq!(book.len(), 101);
        let later = NOW + 60_000_000 + RETAIN_AFTER_EXPIRY_MICROS;
        assert_eq!(book.check("t1", later), Err(TokenRejection::Unknown));
        assert_eq!(book.len(), 1);
        assert_eq!(book.check("long", later), Ok(()));
    }

    #[test]
    fn applicants() {
        assert!(applicant_exists("5f8b1c2d3e4a5b6c7d8e9f00"));
        assert!(applicant_exists("a_b-C"));
        assert!(!applicant_exists("unknown-1"));
        assert!(!applicant_exists(""));
        assert!(!applicant_exists("a b"));
        assert!(!applicant_exists(&"a".repeat(129)));
    }

    #[test]
    fn bodies() {
        let ok = parse_request(br#"{"applicantId":"a","forClientId":"banxa","ttlInSecs":600}"#);
        assert_eq!(
            ok,
            Ok(MintRequest {
                applicant_id: "a".into(),
                for_client_id: "banxa".into(),
                ttl_secs: 600
            })
        );
        for bad in [
            &br#"{"forClientId":"banxa","ttlInSecs":600}"#[..],
            br#"{"applicantId":"a","ttlInSecs":600}"#,
            br#"{"applicantId":"a","forClientId":"banxa"}"#,
            br#"{"applicantId":"a","forClientId":"banxa","ttlInSecs":0}"#,
            br#"{"applicantId":"a","forClientId":"banxa","ttlInSecs":"600"}"#,
            br#"{"applicantId":1,"forClientId":"banxa","ttlInSecs":600}"#,
            b"[]",
            b"nope",
        ] {
            assert!(
                parse_request(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn tokens_are_unique_and_opaque() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with("_act-mock-") && a.len() == 10 + 64);
    }
}
