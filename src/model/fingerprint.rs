//! The ledger's fingerprint of what was sent for an identity.

use sha2::{Digest, Sha256};

/// The fingerprint of what is sent for an identity: SHA-256 over the tag
/// `kycshare.fingerprint.v1`, then the normalised email (trimmed,
/// ASCII-lowercased), mobile number (as given: already the normalised
/// digits) and vendor (trimmed, lowercased), each preceded by its length as
/// a big-endian u64. Never the token (it changes every export, single use).
pub fn fingerprint(email: &str, mobile_number: &str, vendor: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"kycshare.fingerprint.v1");
    let email = email.trim().to_ascii_lowercase();
    let vendor = vendor.trim().to_ascii_lowercase();
    for field in [
        email.as_bytes(),
        mobile_number.as_bytes(),
        vendor.as_bytes(),
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    h.finalize().into()
}
