//! Why a record is `invalid`: one [`Problem`] per failed rule, typed, so
//! the summary counts them by kind ([`Problem::key`]) without parsing the
//! text back apart. The text (`Display`) is what the results file shows.
//!
//! No variant ever holds an email, a mobile number or a token: only what
//! is safe to print (lengths, positions, a character shown on its own).

use std::borrow::Cow;
use std::fmt;

/// One failed rule of one record. `field` is the contract's field name
/// (`identityReference`, `email`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The record could not be read at all (too large, too many fields).
    Unreadable(String),
    /// The record's field count differs from the header's.
    FieldCount {
        got: usize,
        want: usize,
    },
    /// A used column holds bytes that are not UTF-8 (`byte`: 1-based).
    NotUtf8 {
        field: &'static str,
        byte: usize,
    },
    Missing {
        field: &'static str,
    },
    /// A character the field does not allow, shown on its own (`'_'`,
    /// `U+00E9`), at a 1-based position when that helps.
    BadChar {
        field: &'static str,
        shown: String,
        position: Option<usize>,
        allowed: &'static str,
    },
    /// Longer than allowed (`unit`: characters or bytes; `note`: whose limit).
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
        unit: &'static str,
        note: &'static str,
    },
    /// Shorter than allowed.
    TooShort {
        field: &'static str,
        len: usize,
        min: usize,
        unit: &'static str,
        note: &'static str,
    },
    /// Not 8 to 15 digits once normalised.
    MobileDigits {
        n: usize,
    },
    /// A vendor other than sumsub; `shown` only when it is short and printable.
    Vendor {
        shown: Option<String>,
    },
    /// Any other rule, in fixed words (`missing @`, `contains whitespace`).
    Rule {
        field: &'static str,
        why: &'static str,
    },
}

impl Problem {
    /// What the summary counts this problem as: the kind, without the
    /// parts that vary per row (positions, lengths).
    pub fn key(&self) -> Cow<'static, str> {
        match self {
            Problem::Unreadable(s) => Cow::Owned(s.clone()),
            Problem::FieldCount { .. } => Cow::Borrowed("record has the wrong number of fields"),
            Problem::NotUtf8 { field, .. } => Cow::Owned(format!("{field}: not valid UTF-8")),
            Problem::Missing { field } => Cow::Owned(format!("{field}: missing")),
            Problem::BadChar { field, shown, .. } => {
                Cow::Owned(format!("{field}: invalid character {shown}"))
            }
            Problem::TooLong { field, .. } => Cow::Owned(format!("{field}: too long")),
            Problem::TooShort { field, .. } => Cow::Owned(format!("{field}: too short")),
            Problem::MobileDigits { .. } => Cow::Borrowed("mobileNumber: not 8-15 digits"),
            Problem::Vendor { .. } => Cow::Borrowed("vendor: not supported"),
            Problem::Rule { field, why } => Cow::Owned(format!("{field}: {why}")),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unreadable(s) => f.write_str(s),
            Problem::FieldCount { got, want } => write!(
                f,
                "record has {got} field{}, the header has {want}",
                if *got == 1 { "" } else { "s" }
            ),
            Problem::NotUtf8 { field, byte } => write!(
                f,
                "{field}: not valid UTF-8 (byte {byte} of the field; re-export the file as UTF-8)"
            ),
            Problem::Missing { field } => write!(f, "{field}: missing"),
            Problem::BadChar {
                field,
                shown,
                position,
                allowed,
            } => {
                write!(f, "{field}: invalid character {shown}")?;
                if let Some(p) = position {
                    write!(f, " at position {p}")?;
                }
                write!(f, " ({allowed})")
            }
            Problem::TooLong {
                field,
                len,
                max,
                unit,
                note,
            } => {
                write!(f, "{field}: {len} {unit}, at most {max}")?;
                if !note.is_empty() {
                    write!(f, " ({note})")?;
                }
                Ok(())
            }
            Problem::TooShort {
                field,
                len,
                min,
                unit,
                note,
            } => {
                let unit = if *len == 1 {
                    unit.trim_end_matches('s')
                } else {
                    unit
                };
                write!(f, "{field}: {len} {unit}, at least {min}")?;
                if !note.is_empty() {
                    write!(f, " ({note})")?;
                }
                Ok(())
            }
            Problem::MobileDigits { n } => write!(
                f,
                "mobileNumber: {n} digit{}, need 8-15",
                if *n == 1 { "" } else { "s" }
            ),
            Problem::Vendor { shown: Some(s) } => {
                write!(f, "vendor: '{s}' is not supported (only sumsub)")
            }
            Problem::Vendor { shown: None } => f.write_str("vendor: not supported (only sumsub)"),
            Problem::Rule { field, why } => write!(f, "{field}: {why}"),
        }
    }
}

/// Compares with the text a record's `message` shows (tests, mostly).
impl PartialEq<&str> for Problem {
    fn eq(&self, other: &&str) -> bool {
        let text = self.to_string();
        text.as_str() == *other
    }
}

/// The `message` of an invalid record: its problems, `; `-separated.
pub fn problems_message(problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        use std::fmt::Write;
        let _ = write!(out, "{p}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_key() {
        let p = Problem::BadChar {
            field: "identityReference",
            shown: "'_'".into(),
            position: Some(3),
            allowed: "allowed: A-Z a-z 0-9 -",
        };
        assert_eq!(
            p.to_string(),
            "identityReference: invalid character '_' at position 3 (allowed: A-Z a-z 0-9 -)"
        );
        assert_eq!(p.key(), "identityReference: invalid character '_'");
        let t = Problem::TooShort {
            field: "token",
            len: 1,
            min: 6,
            unit: "bytes",
            note: "",
        };
        assert_eq!(t.to_string(), "token: 1 byte, at least 6");
        assert_eq!(
            Problem::MobileDigits { n: 7 }.key(),
            Problem::MobileDigits { n: 16 }.key()
        );
        assert_eq!(
            problems_message(&[
                Problem::Missing { field: "email" },
                Problem::MobileDigits { n: 7 }
            ]),
            "email: missing; mobileNumber: 7 digits, need 8-15"
        );
    }
}
