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
/// character); serde_json writes every other character as is.
fn needs_escape(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\')
}
