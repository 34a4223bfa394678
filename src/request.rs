//! The request stage: a validated row becomes the exact bytes sent to
//! Banxa, and the `Authorization` header that signs those bytes.
//!
//! - [`ShareRequest`] → compact JSON body ([`ShareRequest::write_body`]).
//! - [`Signer`]: `hex(HMAC-SHA256(secret, "POST\n" + PATH + "\n" + NONCE + "\n" + BODY))`.
//! - [`NonceSource`]: unix microseconds (16 digits), strictly increasing
//!   across every thread of the process, so no two requests share a nonce.
//!
//! Not for: sending (see `dispatch`) or validating fields (see `input`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::secret::Secret;

/// The API path that is signed (path only, no host).
pub const SHARE_PATH: &str = "/eapi/v0/identities/token/share";

/// The only vendor Banxa accepts.
pub const VENDOR_SUMSUB: &str = "sumsub";

/// One identity token share request, with fields already normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShareRequest<'a> {
    pub identity_reference: &'a str,
    pub email: &'a str,
    pub mobile_number: &'a str,
    pub provider: Provider<'a>,
}

#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Provider<'a> {
    pub vendor: &'a str,
    pub token: &'a str,
}

impl std::fmt::Debug for Provider<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("vendor", &self.vendor)
            .field("token", &"***")
            .finish()
    }
}

impl ShareRequest<'_> {
    /// Writes the compact JSON body (no whitespace between elements) into
    /// `out`, which is cleared first. Field order is fixed.
    pub fn write_body(&self, out: &mut Vec<u8>) {
        out.clear();
        let fields = [
            self.identity_reference,
            self.email,
            self.mobile_number,
            self.provider.vendor,
            self.provider.token,
        ];
        if fields.iter().all(|f| !needs_escape(f)) {
            // The usual case: no string needs escaping, so the bytes are the
            // fields between fixed punctuation (a property test checks this
            // against serde_json for arbitrary fields).
            out.extend_from_slice(br#"{"identityReference":""#);
            out.extend_from_slice(self.identity_reference.as_bytes());
            out.extend_from_slice(br#"","email":""#);
            out.extend_from_slice(self.email.as_bytes());
            out.extend_from_slice(br#"","mobileNumber":""#);
            out.extend_from_slice(self.mobile_number.as_bytes());
            out.extend_from_slice(br#"","provider":{"vendor":""#);
            out.extend_from_slice(self.provider.vendor.as_bytes());
            out.extend_from_slice(br#"","token":""#);
            out.extend_from_slice(self.provider.token.as_bytes());
            out.extend_from_slice(br#""}}"#);
            return;
        }
        // Serialising plain strings into a Vec cannot fail.
        serde_json::to_writer(&mut *out, self).expect("serialising to memory");
    }
}

/// True when JSON needs an escape for `s` (quote, backslash, control
/// character); serde_json writes every other character as is.
fn needs_escape(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Signs request bodies with the API key and secret.
#[derive(Clone)]
pub struct Signer {
    api_key: String,
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("api_key", &self.api_key)
            .field("secret", &"***")
            .finish()
    }
}

impl Signer {
    pub fn new(api_key: impl Into<String>, secret: &Secret) -> Self {
        let mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC accepts keys of any length");
        Signer {
            api_key: api_key.into(),
            mac,
        }
    }

    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Lowercase hex HMAC-SHA256 over `POST\n{path}\n{nonce}\n{body}`.
    pub fn signature(&self, path: &str, nonce: &str, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(b"POST\n");
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(nonce.as_bytes());
        mac.update(b"\n");
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        let mut out = [0u8; 64];
        hex_lower(&digest, &mut out);
        // hex_lower writes only ASCII hex digits.
        String::from_utf8(out.to_vec()).expect("hex is ASCII")
    }

    /// The full `Authorization` header value for one request:
    /// `Bearer KEY:SIGNATURE:NONCE`.
    pub fn authorization(&self, path: &str, nonce: u64, body: &[u8]) -> String {
        let nonce = nonce.to_string();
        let sig = self.signature(path, &nonce, body);
        let mut h = String::with_capacity(8 + self.api_key.len() + 64 + 2 + nonce.len());
        h.push_str("Bearer ");
        h.push_str(&self.api_key);
        h.push(':');
        h.push_str(&sig);
        h.push(':');
        h.push_str(&nonce);
        h
    }
}

/// Lowercase hex of 32 bytes into 64.
fn hex_lower(bytes: &[u8], out: &mut [u8; 64]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().take(32).enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// Unique, strictly increasing nonces: unix time in microseconds.
///
/// If the clock has not moved since the last nonce (or went backwards), the
/// next nonce is the last one plus one, so nonces never repeat and never
/// decrease, whatever the number of threads drawing them.
#[derive(Debug, Default)]
pub struct NonceSource {
    last: AtomicU64,
}

impl NonceSource {
    pub fn new() -> Self {
        NonceSource {
            last: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> u64 {
        let now = unix_micros();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = if now > last { now } else { last + 1 };
            match self.last.compare_exchange_weak(
                last,
                candidate,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return candidate,
                Err(seen) => last = seen,
            }
        }
    }
}

/// Microseconds since the unix epoch, from the system clock.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn sample() -> ShareRequest<'static> {
        ShareRequest {
            identity_reference: "c-13344",
            email: "jane@example.com",
            mobile_number: "61410001000",
            provider: Provider {
                vendor: "sumsub",
                token: "_act-sbx-jwt-eyJhbGciOiJub25lIn0.eyJqdGkiOiJfYWN0In0.",
            },
        }
    }

    #[test]
    fn body_is_compact_json_in_fixed_order() {
        let mut out = Vec::new();
        sample().write_body(&mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"identityReference":"c-13344","email":"jane@example.com","mobileNumber":"61410001000","provider":{"vendor":"sumsub","token":"_act-sbx-jwt-eyJhbGciOiJub25lIn0.eyJqdGkiOiJfYWN0In0."}}"#
        );
    }

    #[test]
    fn body_escapes_json_specials() {
        let r = ShareRequest {
            identity_reference: "a",
            email: "o\"brien@example.com",
            mobile_number: "12345678",
            provider: Provider {
                vendor: "sumsub",
                token: "t\\x",
            },
        };
        let mut out = Vec::new();
        r.write_body(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["email"], "o\"brien@example.com");
        assert_eq!(v["provider"]["token"], "t\\x");
    }

    // Expected values computed outside Rust with OpenSSL:
    //   printf 'POST\n/eapi/v0/identities/token/share\n1764158400123456\n%s' "$BODY" \
    //     | openssl dgst -sha256 -hmac 'test-secret'
    #[test]
    fn signature_matches_openssl_vector() {
        let signer = Signer::new("test-key", &Secret::new("test-secret"));
        let mut body = Vec::new();
        sample().write_body(&mut body);
        let sig = signer.signature(SHARE_PATH, "1764158400123456", &body);
        assert_eq!(sig, VECTOR_1);
        let auth = signer.authorization(SHARE_PATH, 1764158400123456, &body);
        assert_eq!(auth, format!("Bearer test-key:{VECTOR_1}:1764158400123456"));
    }

    //   printf 'POST\n/eapi/v0/identities/token/share\n1\n{}' | openssl dgst -sha256 -hmac 'k3y with spaces & ümlaut'
    #[test]
    fn signature_matches_openssl_vector_unicode_key() {
        let signer = Signer::new("k", &Secret::new("k3y with spaces & ümlaut"));
        assert_eq!(signer.signature(SHARE_PATH, "1", b"{}"), VECTOR_2);
    }

    const VECTOR_1: &str = "5d11e4f2dddcadc47f923497861ee32942d01b26ec2575eeb7d06027539faeda";
    const VECTOR_2: &str = "19625361e0c72daaee00b72309bd34aab914c4607ef4bfa94bfaace2fc87fcb8";

    #[test]
    fn signer_debug_hides_secret() {
        let signer = Signer::new("key", &Secret::new("very-secret"));
        let dbg = format!("{signer:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        let dbg = format!("{:?}", sample());
        assert!(!dbg.contains("eyJ"), "{dbg}");
    }

    #[test]
    fn nonces_are_16_digit_microseconds() {
        let n = NonceSource::new().next();
        assert_eq!(n.to_string().len(), 16);
        let now = unix_micros();
        assert!(now >= n && now - n < 5_000_000);
    }

    #[test]
    fn a_million_nonces_from_eight_threads_are_unique_and_increasing() {
        let source = std::sync::Arc::new(NonceSource::new());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let source = source.clone();
                std::thread::spawn(move || {
                    let mut v = Vec::with_capacity(125_000);
                    for _ in 0..125_000 {
                        v.push(source.next());
                    }
                    v
                })
            })
            .collect();
        let mut all = HashSet::with_capacity(1_000_000);
        for h in handles {
            let v = h.join().unwrap();
            assert!(v.windows(2).all(|w| w[0] < w[1]), "a thread saw a decrease");
            for n in v {
                assert!(all.insert(n), "duplicate nonce {n}");
            }
        }
        assert_eq!(all.len(), 1_000_000);
    }
}
