//! The body: a validated row as the exact compact JSON Banxa receives.

use serde::Serialize;

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
        self.append_body(out);
    }

    /// Appends the body to `out` (what [`ShareRequest::write_body`] writes).
    pub fn append_body(&self, out: &mut Vec<u8>) {
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
/// character); serde_json writes every other character as is. Blocks of
/// 16 bytes are checked without a branch per byte (the compiler turns
/// them into vector compares): this runs over every field of every row.
fn needs_escape(s: &str) -> bool {
    let bad = |x: u8| (x < 0x20) | (x == b'"') | (x == b'\\');
    let mut blocks = s.as_bytes().chunks_exact(16);
    for block in &mut blocks {
        if block.iter().fold(false, |any, &x| any | bad(x)) {
            return true;
        }
    }
    blocks.remainder().iter().any(|&x| bad(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_escape_is_the_byte_rule_for_every_length_and_position() {
        let naive = |s: &str| s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 100] {
            for c in (0u8..=127).map(char::from).chain(['é', '€', '\u{7f}']) {
                for at in [0, len / 2, len.saturating_sub(1)] {
                    let mut s: Vec<char> = vec!['a'; len];
                    if len > 0 {
                        s[at] = c;
                    }
                    let s: String = s.into_iter().collect();
                    assert_eq!(needs_escape(&s), naive(&s), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn the_fast_body_is_serde_jsons() {
        for token in [
            "tok-abc-123456",
            "tok\"quote",
            "t\\back",
            "tab\there",
            "é-ü-€-long-token-over-16",
        ] {
            let req = ShareRequest {
                identity_reference: "c-1",
                email: "a@b.io",
                mobile_number: "61410001000",
                provider: Provider {
                    vendor: VENDOR_SUMSUB,
                    token,
                },
            };
            let mut out = Vec::new();
            req.write_body(&mut out);
            assert_eq!(out, serde_json::to_vec(&req).unwrap(), "{token}");
        }
    }
}
