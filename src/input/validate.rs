//! Field rules: normalisation and local validation of one row, each
//! failure a short, specific reason (`email: missing domain`,
//! `mobileNumber: 7 digits, need 8-15`).
//!
//! Messages never quote an email, a mobile number or a token: results and
//! logs must not hold them.

use email_address::{EmailAddress, Options};

use crate::model::Problem;

/// Longest share token accepted (bytes; Sumsub's 1 KB).
pub const MAX_TOKEN_BYTES: usize = 1024;
/// Shortest share token accepted (bytes; Banxa's published minimum).
pub const MIN_TOKEN_BYTES: usize = 6;

/// Longest email address accepted (characters; Banxa's published limit,
/// below RFC 5321's 254).
pub const MAX_EMAIL_CHARS: usize = 200;

/// True when `s` is a well-formed identityReference (`[A-Za-z0-9-]+`).
pub fn is_identity_reference(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub fn check_identity_reference(s: &str) -> Result<(), Problem> {
    if s.is_empty() {
        return Err(Problem::Missing {
            field: "identityReference",
        });
    }
    if let Some((pos, c)) = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        let shown = if c.is_ascii_graphic() || c == ' ' {
            format!("'{c}'")
        } else {
            format!("U+{:04X}", c as u32)
        };
        return Err(Problem::BadChar {
            field: "identityReference",
            shown,
            position: Some(s[..pos].chars().count() + 1),
            allowed: "allowed: A-Z a-z 0-9 -",
        });
    }
    Ok(())
}

/// The common case, decided quickly: an ASCII dot-atom address
/// (`local@dom.ain`, RFC 5322 atext atoms and LDH domain labels, at least
/// two). Everything it accepts the full check accepts too (a property test
/// holds it to that); anything else goes to the full check.
pub fn is_plain_email(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() > MAX_EMAIL_CHARS {
        return false;
    }
    let Some(at) = memchr::memrchr(b'@', b) else {
        return false;
    };
    let (local, domain) = (&b[..at], &b[at + 1..]);
    if local.is_empty() || local.len() > 64 || domain.len() > 253 {
        return false;
    }
    let atext = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&c);
    if !local
        .split(|c| *c == b'.')
        .all(|a| !a.is_empty() && a.iter().all(|c| atext(*c)))
    {
        return false;
    }
    let mut labels = 0;
    for l in domain.split(|c| *c == b'.') {
        labels += 1;
        if l.is_empty()
            || l.len() > 63
            || l[0] == b'-'
            || l[l.len() - 1] == b'-'
            || !l.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        {
            return false;
        }
    }
    labels >= 2
}

pub fn check_email(s: &str) -> Result<(), Problem> {
    if is_plain_email(s) {
        return Ok(());
    }
    check_email_full(s)
}

/// The full check, with a specific reason for each failure.
pub fn check_email_full(s: &str) -> Result<(), Problem> {
    let rule = |why: &'static str| Problem::Rule {
        field: "email",
        why,
    };
    if s.is_empty() {
        return Err(Problem::Missing { field: "email" });
    }
    if s.chars().any(char::is_whitespace) {
        return Err(rule("contains whitespace"));
    }
    if s.chars().count() > MAX_EMAIL_CHARS {
        return Err(Problem::TooLong {
            field: "email",
            len: s.chars().count(),
            max: MAX_EMAIL_CHARS,
            unit: "characters",
            note: "Banxa's limit",
        });
    }
    let Some((local, domain)) = s.rsplit_once('@') else {
        return Err(rule("missing @"));
    };
    if local.is_empty() {
        return Err(rule("missing local part (before @)"));
    }
    if domain.is_empty() {
        return Err(rule("missing domain"));
    }
    if !domain.contains('.') {
        return Err(rule("domain has no dot (expected e.g. example.com)"));
    }
    let opts = Options::default()
        .with_minimum_sub_domains(2)
        .without_domain_literal()
        .without_display_text();
    EmailAddress::parse_with_options(s, opts)
        .map(|_| ())
        .map_err(|e| {
            use email_address::Error as E;
            let why = match e {
                E::InvalidCharacter => "invalid character",
                E::MissingSeparator => "missing @",
                E::LocalPartEmpty => "missing local part (before @)",
                E::LocalPartTooLong => "local part longer than 64 characters",
                E::DomainEmpty => "missing domain",
                E::DomainTooLong => "domain longer than 254 characters",
                E::SubDomainEmpty => "empty label in the domain (e.g. `..`)",
                E::SubDomainTooLong => "a domain label longer than 63 characters",
                E::DomainTooFew => "domain has no dot (expected e.g. example.com)",
                E::DomainInvalidSeparator => "misplaced dot in the domain",
                E::UnbalancedQuotes => "unbalanced quotes in the local part",
                E::InvalidComment => "malformed comment",
                E::InvalidIPAddress => "invalid IP address as domain",
                E::UnsupportedDomainLiteral => "domain literals ([1.2.3.4]) are not accepted",
                E::UnsupportedDisplayName | E::MissingDisplayName | E::MissingEndBracket => {
                    "a display name (Name <addr>) is not an address"
                }
            };
            rule(why)
        })
}

/// Normalises a mobile number into `out`: removes spaces, `-`, `(`, `)`
/// and one leading `+`; what is left must be 8 to 15 digits.
pub fn normalize_mobile(s: &str, out: &mut String) -> Result<(), Problem> {
    out.clear();
    if s.is_empty() {
        return Err(Problem::Missing {
            field: "mobileNumber",
        });
    }
    let rest = s.strip_prefix('+').unwrap_or(s);
    for c in rest.chars() {
        match c {
            '0'..='9' => out.push(c),
            ' ' | '-' | '(' | ')' => {}
            '+' => {
                return Err(Problem::Rule {
                    field: "mobileNumber",
                    why: "'+' allowed only at the start",
                });
            }
            c => {
                let shown = if c.is_ascii_graphic() {
                    format!("'{c}'")
                } else {
                    format!("U+{:04X}", c as u32)
                };
                return Err(Problem::BadChar {
                    field: "mobileNumber",
                    shown,
                    position: None,
                    allowed: "digits, spaces, - ( ) and a leading + only",
                });
            }
        }
    }
    let n = out.len();
    if !(8..=15).contains(&n) {
        return Err(Problem::MobileDigits { n });
    }
    Ok(())
}

/// The vendor, `sumsub` in any case; an empty value means `sumsub`.
pub fn check_vendor(s: &str) -> Result<&'static str, Problem> {
    if s.is_empty() || s.eq_ignore_ascii_case("sumsub") {
        Ok(crate::request::VENDOR_SUMSUB)
    } else if s.len() <= 32 && all_graphic(s.as_bytes()) {
        Err(Problem::Vendor {
            shown: Some(s.to_string()),
        })
    } else {
        Err(Problem::Vendor { shown: None })
    }
}

/// True when every byte is printable ASCII other than space (`0x21..=0x7e`).
/// Blocks of 16 bytes are checked without a branch per byte (vector
/// compares): tokens are the longest field of a row.
pub fn all_graphic(b: &[u8]) -> bool {
    let ok = |x: u8| x.wrapping_sub(0x21) < 0x5e;
    let mut blocks = b.chunks_exact(16);
    for block in &mut blocks {
        if !block.iter().fold(true, |all, &x| all & ok(x)) {
            return false;
        }
    }
    blocks.remainder().iter().all(|&x| ok(x))
}

pub fn check_token(s: &str) -> Result<(), Problem> {
    let rule = |why: &'static str| Problem::Rule {
        field: "token",
        why,
    };
    if s.is_empty() {
        return Err(Problem::Missing { field: "token" });
    }
    if s.len() > MAX_TOKEN_BYTES {
        return Err(Problem::TooLong {
            field: "token",
            len: s.len(),
            max: MAX_TOKEN_BYTES,
            unit: "bytes",
            note: "",
        });
    }
    // Fast path: printable ASCII without spaces, as real tokens are.
    if !all_graphic(s.as_bytes()) {
        if s.chars().any(char::is_whitespace) {
            return Err(rule("contains whitespace"));
        }
        if s.chars().any(char::is_control) {
            return Err(rule("contains a control character"));
        }
    }
    if s.len() < MIN_TOKEN_BYTES {
        return Err(Problem::TooShort {
            field: "token",
            len: s.len(),
            min: MIN_TOKEN_BYTES,
            unit: "bytes",
            note: "Banxa's minimum: a cut-off export?",
        });
    }
    Ok(())
}

pub fn check_applicant_id(s: &str) -> Result<(), Problem> {
    let rule = |why: &'static str| Problem::Rule {
        field: "applicantId",
        why,
    };
    if s.is_empty() {
        return Err(Problem::Missing {
            field: "applicantId",
        });
    }
    if s.len() > 128 {
        return Err(rule("longer than 128 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(rule("only letters, digits, - and _ are allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_graphic_is_is_ascii_graphic_for_every_byte_and_length() {
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 100] {
            for bad in 0u8..=255 {
                for at in [0, len / 2, len.saturating_sub(1)] {
                    let mut v = vec![b'a'; len];
                    if len > 0 {
                        v[at] = bad;
                    }
                    assert_eq!(
                        all_graphic(&v),
                        v.iter().all(|b| b.is_ascii_graphic()),
                        "len {len} byte {bad:#x} at {at}"
                    );
                }
            }
        }
    }

    #[test]
    fn identity_reference_rules() {
        assert!(check_identity_reference("c-13344").is_ok());
        assert_eq!(
            check_identity_reference("").unwrap_err(),
            "identityReference: missing"
        );
        assert_eq!(
            check_identity_reference("c_1").unwrap_err(),
            "identityReference: invalid character '_' at position 2 (allowed: A-Z a-z 0-9 -)"
        );
        assert!(check_identity_reference("é")
            .unwrap_err()
            .to_string()
            .contains("U+00E9"));
    }

    #[test]
    fn email_rules_have_specific_reasons() {
        assert!(check_email("jane.doe+tag@mail.example.com").is_ok());
        assert_eq!(check_email("").unwrap_err(), "email: missing");
        assert_eq!(
            check_email("jane.example.com").unwrap_err(),
            "email: missing @"
        );
        assert_eq!(check_email("jane@").unwrap_err(), "email: missing domain");
        assert_eq!(
            check_email("@x.com").unwrap_err(),
            "email: missing local part (before @)"
        );
        assert!(check_email("jane@localhost")
            .unwrap_err()
            .to_string()
            .contains("no dot"));
        assert!(check_email("ja ne@x.com")
            .unwrap_err()
            .to_string()
            .contains("whitespace"));
        assert!(check_email("jane@x..com").is_err());
        assert!(check_email("Jane <jane@x.com>").is_err());
        let at_limit = format!(
            "{}@{}.{}.{}",
            "a".repeat(64),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(7)
        );
        assert_eq!(at_limit.chars().count(), 200);
        assert!(
            check_email(&at_limit).is_ok(),
            "200 characters is Banxa's limit"
        );
        let over = format!("{at_limit}x");
        assert_eq!(
            check_email(&over).unwrap_err(),
            "email: 201 characters, at most 200 (Banxa's limit)"
        );
        assert!(is_plain_email("a.b+c@x-y.example.com"));
        assert!(!is_plain_email("a..b@x.com"));
        assert!(!is_plain_email("a@-x.com"));
        assert!(!is_plain_email("a@x"));
        assert!(!is_plain_email("\"q\"@x.com"));
    }

    #[test]
    fn mobile_numbers_are_normalised() {
        let mut out = String::new();
        normalize_mobile("+61 (410) 001-000", &mut out).unwrap();
        assert_eq!(out, "61410001000");
        assert_eq!(
            normalize_mobile("1234567", &mut out).unwrap_err(),
            "mobileNumber: 7 digits, need 8-15"
        );
        assert_eq!(
            normalize_mobile("1234567890123456", &mut out).unwrap_err(),
            "mobileNumber: 16 digits, need 8-15"
        );
        assert!(normalize_mobile("++6141000100", &mut out).is_err());
        assert!(normalize_mobile("0410 ABC 000", &mut out)
            .unwrap_err()
            .to_string()
            .contains("'A'"));
    }

    #[test]
    fn vendor_and_token_rules() {
        assert_eq!(check_vendor("SumSub").unwrap(), "sumsub");
        assert_eq!(check_vendor("").unwrap(), "sumsub");
        assert!(check_vendor("onfido")
            .unwrap_err()
            .to_string()
            .contains("onfido"));
        assert!(check_token("abcdef").is_ok());
        assert_eq!(
            check_token("abcde").unwrap_err(),
            "token: 5 bytes, at least 6 (Banxa's minimum: a cut-off export?)"
        );
        assert!(check_token("a")
            .unwrap_err()
            .to_string()
            .starts_with("token: 1 byte,"));
        assert_eq!(check_token("").unwrap_err(), "token: missing");
        assert!(check_token("a b")
            .unwrap_err()
            .to_string()
            .contains("whitespace"));
        assert_eq!(
            check_token(&"x".repeat(1025)).unwrap_err(),
            "token: 1025 bytes, at most 1024"
        );
        assert!(check_token(&"x".repeat(1024)).is_ok());
    }
}
