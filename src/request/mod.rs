//! The request stage: a validated row becomes the exact bytes sent to
//! Banxa, and the `Authorization` header that signs those bytes.
//!
//! - [`ShareRequest`] → compact JSON body ([`ShareRequest::write_body`]).
//! - [`Signer`]: `hex(HMAC-SHA256(secret, "POST\n" + PATH + "\n" + NONCE + "\n" + BODY))`.
//! - [`NonceSource`]: unix microseconds (16 digits), strictly increasing
//!   across every thread of the process, so no two requests share a nonce.
//!
//! - [`mint`]: Sumsub's share token, minted just before the request that
//!   carries it (`run --mint`).
//!
//! Not for: sending (see `dispatch`) or validating fields (see `input`).

mod body;
pub mod mint;
mod nonce;
mod sign;

pub use body::{Provider, ShareRequest, SHARE_PATH, VENDOR_SUMSUB};
pub use nonce::{unix_micros, NonceSource};
pub use sign::Signer;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
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
