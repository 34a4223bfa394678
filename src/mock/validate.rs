//! The share endpoint's body, as Banxa documents it: the request format
//! (`Content-Type: application/json`, compact JSON object; else 400) and the
//! fields (else 422, Laravel style, errors keyed by field).
//!
//! Written independently of the client's own row validation (`input`), so a
//! mistake there shows up as a 422 here rather than being mirrored.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// Why a body is refused with 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    ContentType,
    NotCompact,
    InvalidJson(String),
    NotObject,
}

impl FormatError {
    pub fn message(&self) -> String {
        match self {
            FormatError::ContentType => {
                "The request must have the header Content-Type: application/json.".to_string()
            }
            FormatError::NotCompact => {
                "The request body must be compact JSON (no whitespace between elements)."
                    .to_string()
            }
            FormatError::InvalidJson(e) => format!("The request body is not valid JSON: {e}."),
            FormatError::NotObject => "The request body must be a JSON object.".to_string(),
        }
    }
}

/// Accepts `application/json`, optionally with `charset=utf-8` (any case,
/// quoted or not). Anything else, or no header, is refused.
pub fn check_content_type(value: Option<&[u8]>) -> Result<(), FormatError> {
    let value = value
        .and_then(|v| std::str::from_utf8(v).ok())
        .ok_or(FormatError::ContentType)?;
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(FormatError::ContentType);
    }
    for param in parts {
        let (name, val) = param.split_once('=').ok_or(FormatError::ContentType)?;
        let val = val.trim().trim_matches('"');
        if !name.trim().eq_ignore_ascii_case("charset") || !val.eq_ignore_ascii_case("utf-8") {
            return Err(FormatError::ContentType);
        }
    }
    Ok(())
}

/// True if no JSON whitespace appears outside strings (leading and trailing
/// whitespace included).
pub fn is_compact(body: &[u8]) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            return false;
        }
    }
    true
}

/// Compact check, then JSON parse; the body must be an object.
pub fn parse_body(body: &[u8]) -> Result<Map<String, Value>, FormatError> {
    if !is_compact(body) {
        return Err(FormatError::NotCompact);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(FormatError::NotObject),
        Err(e) => Err(FormatError::InvalidJson(e.to_string())),
    }
}

/// Field errors, in field order, serialised as a JSON object
/// `{field: [message, ...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<(&'static str, Vec<String>)>);

impl FieldErrors {
    pub fn add(&mut self, field: &'static str, message: String) {
        match self.0.iter_mut().find(|(f, _)| *f == field) {
            Some((_, messages)) => messages.push(message),
            None => self.0.push((field, vec![message])),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for FieldErrors {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (field, messages) in &self.0 {
            map.serialize_entry(field, messages)?;
        }
        map.end()
    }
}

pub const TOKEN_MAX_CHARS: usize = 1024;
/// Banxa's published minimum for `provider.token`.
pub const TOKEN_MIN_CHARS: usize = 6;
/// Banxa's published maximum for `email`.
pub const EMAIL_MAX_CHARS: usize = 200;
pub const VENDORS: &[&str] = &["sumsub"];

/// Validates the fields. On success returns the identityReference.
pub fn validate(body: &Map<String, Value>) -> Result<String, FieldErrors> {
    let mut errors = FieldErrors::default();
    let provider = body.get("provider").and_then(Value::as_object);
    let field = |name: &str| body.get(name);
    let nested = |name: &str| provider.and_then(|p| p.get(name));

    let id = required_string(&mut errors, "identityReference", field("identityReference"));
    if let Some(id) = id {
        if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            errors.add(
                "identityReference",
                "The identityReference field format is invalid.".into(),
            );
        }
    }

    match field("email") {
        v if is_missing(v) => errors.add("email", required("email")),
        Some(Value::String(s)) if s.chars().count() > EMAIL_MAX_CHARS => errors.add(
            "email",
            format!("The email field must not be greater than {EMAIL_MAX_CHARS} characters."),
        ),
        Some(Value::String(s)) if is_valid_email(s) => {}
        _ => errors.add(
            "email",
            "The email field must be a valid email address.".into(),
        ),
    }

    if let Some(mobile) = required_string(&mut errors, "mobileNumber", field("mobileNumber")) {
        if !mobile.bytes().all(|b| b.is_ascii_digit()) {
            errors.add(
                "mobileNumber",
                "The mobileNumber field format is invalid.".into(),
            );
        }
    }

    match nested("vendor") {
        v if is_missing(v) => errors.add("provider.vendor", required("provider.vendor")),
        Some(Value::String(s)) if VENDORS.contains(&s.as_str()) => {}
        _ => errors.add(
            "provider.vendor",
            "The selected provider.vendor is invalid.".into(),
        ),
    }

    if let Some(token) = required_string(&mut errors, "provider.token", nested("token")) {
        if token.chars().count() > TOKEN_MAX_CHARS {
            errors.add(
                "provider.token",
                format!("The provider.token field must not be greater than {TOKEN_MAX_CHARS} characters."),
            );
        } else if token.chars().count() < TOKEN_MIN_CHARS {
            errors.add(
                "provider.token",
                format!("The provider.token field must be at least {TOKEN_MIN_CHARS} characters."),
            );
        }
    }

    match (errors.is_empty(), id) {
        (true, Some(id)) => Ok(id.to_string()),
        _ => Err(errors),
    }
}

/// Laravel's `required`: absent, null or the empty string.
fn is_missing(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}

fn required(field: &str) -> String {
    format!("The {field} field is required.")
}

fn required_string<'a>(
    errors: &mut FieldErrors,
    field: &'static str,
    value: Option<&'a Value>,
) -> Option<&'a str> {
    if is_missing(value) {
        errors.add(field, required(field));
        return None;
    }
    match value {
        Some(Value::String(s)) => Some(s),
        _ => {
            errors.add(field, format!("The {field} field must be a string."));
            None
        }
    }
}

/// A deliberately simple address check, independent of any crate the client
/// might use: `local@domain`, local part of RFC 5322 atoms separated by
/// single dots (at most 64 bytes), domain of one or more DNS labels
/// (letters, digits, inner hyphens; at most 63 bytes each, 253 in all).
/// Quoted local parts and address literals are refused.
pub fn is_valid_email(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b);
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(atext));
    let domain_ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    local_ok && domain_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compactness() {
        assert!(is_compact(br#"{"a":"x y","b":[1,2]}"#));
        assert!(is_compact(br#"{"a":"q\" {}"}"#));
        assert!(!is_compact(br#"{"a": 1}"#));
        assert!(!is_compact(b"{\"a\":1}\n"));
        assert!(!is_compact(br#" {"a":1}"#));
    }

    #[test]
    fn emails() {
        for ok in ["jane@example.com", "a.b+c@x-y.example", "u@localhost"] {
            assert!(is_valid_email(ok), "{ok}");
        }
        for bad in [
            "",
            "jane",
            "@example.com",
            "jane@",
            "ja ne@example.com",
            "a..b@x.com",
            ".a@x.com",
            "a@-x.com",
            "a@x..com",
            "a@b@c.com",
            "a@x_y.com",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn content_types() {
        assert!(check_content_type(Some(b"application/json")).is_ok());
        assert!(check_content_type(Some(b"Application/JSON; charset=UTF-8")).is_ok());
        assert!(check_content_type(Some(b"application/json;charset=\"utf-8\"")).is_ok());
        assert!(check_content_type(None).is_err());
        assert!(check_content_type(Some(b"text/plain")).is_err());
        assert!(check_content_type(Some(b"application/json; charset=latin1")).is_err());
    }
}
