//! Banxa's HMAC authentication, as the emulator checks it.
//!
//! This is a verifier written from the API documentation alone. It must not
//! call the client's signer (`crate::request`): a bug in the signer must not
//! be able to hide behind the same bug here.
//!
//! Checks, in order: the header is present and well formed
//! (`Bearer KEY:SIGNATURE:NONCE`), the key is the configured one, the
//! signature (lowercase hex HMAC-SHA256 over `METHOD\nPATH\nNONCE\nBODY`,
//! recomputed over the raw body bytes) matches in constant time, the nonce is
//! 10, 13 or 16 digits, within 5 minutes of the server clock, and unused.

use std::collections::BTreeSet;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;

/// How far a nonce may be from the server clock, either way.
pub const NONCE_WINDOW_MICROS: u64 = 5 * 60 * 1_000_000;

/// Why a request got 401. Each reason has its own counter in `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    MissingHeader,
    MalformedHeader,
    UnknownKey,
    BadSignature,
    BadNonce,
    StaleNonce,
    ReusedNonce,
    Revoked,
    /// The body is not compact JSON. Banxa signs the compact form, so a
    /// body with whitespace between elements cannot verify: the contract
    /// lists it among the checks whose failure answers 401.
    NotCompact,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 9] = [
        AuthFailure::MissingHeader,
        AuthFailure::MalformedHeader,
        AuthFailure::UnknownKey,
        AuthFailure::BadSignature,
        AuthFailure::BadNonce,
        AuthFailure::StaleNonce,
        AuthFailure::ReusedNonce,
        AuthFailure::Revoked,
        AuthFailure::NotCompact,
    ];

    /// The name used in `/stats` and in the record file.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::MissingHeader => "missing_header",
            AuthFailure::MalformedHeader => "malformed_header",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::BadNonce => "bad_nonce",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::ReusedNonce => "reused_nonce",
            AuthFailure::Revoked => "revoked",
            AuthFailure::NotCompact => "not_compact",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Banxa's published authentication error code for this failure
    /// (`--error-codes`). A revoked key is one Banxa no longer knows; a body
    /// that is not compact cannot match the signature.
    pub fn code(self) -> u32 {
        match self {
            AuthFailure::BadNonce => 40001,
            AuthFailure::StaleNonce => 40002,
            AuthFailure::ReusedNonce => 40003,
            AuthFailure::UnknownKey | AuthFailure::Revoked => 40100,
            AuthFailure::MalformedHeader => 40101,
            AuthFailure::MissingHeader => 40102,
            AuthFailure::BadSignature | AuthFailure::NotCompact => 40103,
        }
    }
}

/// The three parts of `Authorization: Bearer KEY:SIGNATURE:NONCE`.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub key: &'a str,
    pub signature: &'a str,
    pub nonce: &'a str,
}

/// Splits the `Authorization` header value. The scheme is matched without
/// regard to case; the key cannot contain `:`.
pub fn parse_header(value: Option<&[u8]>) -> Result<Credentials<'_>, AuthFailure> {
    let value = value.ok_or(AuthFailure::MissingHeader)?;
    let value = std::str::from_utf8(value).map_err(|_| AuthFailure::MalformedHeader)?;
    let (scheme, rest) = value.split_once(' ').ok_or(AuthFailure::MalformedHeader)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthFailure::MalformedHeader);
    }
    let mut parts = rest.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(key), Some(signature), Some(nonce), None) if !key.is_empty() => Ok(Credentials {
            key,
            signature,
            nonce,
        }),
        _ => Err(AuthFailure::MalformedHeader),
    }
}

/// A nonce that parsed: its value as sent and that instant in unix
/// microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nonce {
    pub value: u64,
    pub micros: u64,
}

/// Parses a nonce as Banxa documents it: a unix timestamp of exactly 10
/// (seconds), 13 (milliseconds) or 16 (microseconds) digits; any other
/// length is refused (`40001`).
pub fn parse_nonce(text: &str) -> Result<Nonce, AuthFailure> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthFailure::BadNonce);
    }
    let scale = match text.len() {
        10 => 1_000_000,
        13 => 1_000,
        16 => 1,
        _ => return Err(AuthFailure::BadNonce),
    };
    let value: u64 = text.parse().map_err(|_| AuthFailure::BadNonce)?;
    Ok(Nonce {
        value,
        micros: value.saturating_mul(scale),
    })
}

/// Checks the key and the signature: the stateless part of authentication.
#[derive(Clone)]
pub struct Verifier {
    api_key: String,
    /// HMAC keyed once with the secret; cloned per request.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(api_key: &str, secret: &Secret) -> Verifier {
        let keyed = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC accepts keys of any length");
        Verifier {
            api_key: api_key.to_string(),
            keyed,
        }
    }

    /// Verifies key and signature, then parses the nonce. Freshness and
    /// reuse are checked by [`NonceBook`].
    pub fn verify(
        &self,
        creds: &Credentials<'_>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Nonce, AuthFailure> {
        if !constant_time_eq(creds.key.as_bytes(), self.api_key.as_bytes()) {
            return Err(AuthFailure::UnknownKey);
        }
        let expected = decode_lower_hex(creds.signature).ok_or(AuthFailure::BadSignature)?;
        let mut mac = self.keyed.clone();
        mac.update(method.as_bytes());
        mac.update(b"\n");
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(creds.nonce.as_bytes());
        mac.update(b"\n");
        mac.update(body);
        mac.verify_slice(&expected)
            .map_err(|_| AuthFailure::BadSignature)?;
        parse_nonce(creds.nonce)
    }
}

impl Verifier {
    /// Verifies a `GET`: the signature is over
    /// `GET\n{path_with_query}\n{nonce}`, no body line.
    pub fn verify_get(
        &self,
        creds: &Credentials<'_>,
        path_with_query: &str,
    ) -> Result<Nonce, AuthFailure> {
        if !constant_time_eq(creds.key.as_bytes(), self.api_key.as_bytes()) {
            return Err(AuthFailure::UnknownKey);
        }
        let expected = decode_lower_hex(creds.signature).ok_or(AuthFailure::BadSignature)?;
        let mut mac = self.keyed.clone();
        mac.update(b"GET\n");
        mac.update(path_with_query.as_bytes());
        mac.update(b"\n");
        mac.update(creds.nonce.as_bytes());
        mac.verify_slice(&expected)
            .map_err(|_| AuthFailure::BadSignature)?;
        parse_nonce(creds.nonce)
    }
}

/// Decodes exactly 64 lowercase hex digits (a SHA-256 MAC). Uppercase is
/// refused: the documented signature is lowercase.
pub(crate) fn decode_lower_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The nonces seen for the one configured key, within the window.
///
/// Memory is bounded by the window: a nonce older than the window is
/// forgotten, because it would be refused as stale anyway.
#[derive(Debug, Default)]
pub struct NonceBook {
    /// (instant in micros, value as sent), ordered by instant for pruning.
    seen: BTreeSet<(u64, u64)>,
}

impl NonceBook {
    /// Admits a nonce once: stale if outside the window around `now_micros`,
    /// reused if seen before.
    pub fn admit(&mut self, nonce: Nonce, now_micros: u64) -> Result<(), AuthFailure> {
        let oldest = now_micros.saturating_sub(NONCE_WINDOW_MICROS);
        if nonce.micros < oldest || nonce.micros > now_micros.saturating_add(NONCE_WINDOW_MICROS) {
            return Err(AuthFailure::StaleNonce);
        }
        while let Some(&first) = self.seen.first() {
            if first.0 >= oldest {
                break;
            }
            self.seen.pop_first();
        }
        if self.seen.insert((nonce.micros, nonce.value)) {
            Ok(())
        } else {
            Err(AuthFailure::ReusedNonce)
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_units_by_magnitude() {
        let s = parse_nonce("1764165600").unwrap();
        let ms = parse_nonce("1764165600000").unwrap();
        let us = parse_nonce("1764165600000000").unwrap();
        assert_eq!(s.micros, 1_764_165_600_000_000);
        assert_eq!(ms.micros, 1_764_165_600_000_000);
        assert_eq!(us.micros, 1_764_165_600_000_000);
        assert_eq!(parse_nonce("12a"), Err(AuthFailure::BadNonce));
        assert_eq!(parse_nonce(""), Err(AuthFailure::BadNonce));
        assert_eq!(parse_nonce("-5"), Err(AuthFailure::BadNonce));
        assert_eq!(
            parse_nonce("99999999999999999999"),
            Err(AuthFailure::BadNonce)
        );
    }

    #[test]
    fn book_forgets_only_what_is_stale() {
        let now = 1_764_165_600_000_000;
        let mut book = NonceBook::default();
        let n = parse_nonce("1764165600000000").unwrap();
        assert_eq!(book.admit(n, now), Ok(()));
        assert_eq!(book.admit(n, now), Err(AuthFailure::ReusedNonce));
        // Still remembered at the edge of the window...
        assert_eq!(
            book.admit(n, now + NONCE_WINDOW_MICROS),
            Err(AuthFailure::ReusedNonce)
        );
        // ...stale (and forgotten) after it.
        let later = now + NONCE_WINDOW_MICROS + 1;
        let fresh = parse_nonce(&later.to_string()).unwrap();
        assert_eq!(book.admit(n, later), Err(AuthFailure::StaleNonce));
        assert_eq!(book.admit(fresh, later), Ok(()));
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn header_shapes() {
        assert_eq!(parse_header(None).unwrap_err(), AuthFailure::MissingHeader);
        for bad in [
            "Bearer",
            "Basic a:b:c",
            "Bearer a:b",
            "Bearer a:b:c:d",
            "Bearer :b:c",
        ] {
            assert_eq!(
                parse_header(Some(bad.as_bytes())).unwrap_err(),
                AuthFailure::MalformedHeader,
                "{bad}"
            );
        }
        let c = parse_header(Some(b"bearer k:s:1")).unwrap();
        assert_eq!((c.key, c.signature, c.nonce), ("k", "s", "1"));
    }
}
