//! The signature: `hex(HMAC-SHA256(secret, METHOD + "\n" + PATH + "\n" + NONCE + "\n" + BODY))`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;

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

    /// Lowercase hex HMAC-SHA256 over `GET\n{path_with_query}\n{nonce}`
    /// (Banxa's signature of a request without a body).
    pub fn get_signature(&self, path_with_query: &str, nonce: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(b"GET\n");
        mac.update(path_with_query.as_bytes());
        mac.update(b"\n");
        mac.update(nonce.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = [0u8; 64];
        hex_lower(&digest, &mut out);
        String::from_utf8(out.to_vec()).expect("hex is ASCII")
    }

    /// The `Authorization` header value of a signed `GET`.
    pub fn get_authorization(&self, path_with_query: &str, nonce: u64) -> String {
        let nonce = nonce.to_string();
        format!(
            "Bearer {}:{}:{}",
            self.api_key,
            self.get_signature(path_with_query, &nonce),
            nonce
        )
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
