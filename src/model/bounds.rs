//! The bounds of what reaches the results file: `message` and `errors`.

use serde_json::Value;

/// The longest `message` kept for the results file (bytes, marker included).
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// The longest `errors` kept for the results file (bytes of compact JSON).
pub const MAX_ERRORS_BYTES: usize = 4 * 1024;
/// How a cut `message` ends.
pub const CUT_MARKER: &str = " …[cut]";
/// The key that stands for the fields of a cut `errors` object.
pub const ERRORS_CUT_KEY: &str = "…";

/// `s` cut to at most `max` bytes (on a character boundary), ending with
/// [`CUT_MARKER`] when it was cut.
pub fn cut_text(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(CUT_MARKER.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT_MARKER}", &s[..end])
}

/// The `errors` of an answer as compact JSON of at most
/// [`MAX_ERRORS_BYTES`], still valid JSON: an object keeps the fields that
/// fit (each message cut to 300 bytes, at most 10 per field) and says how
/// many were left out under the key [`ERRORS_CUT_KEY`]; anything else that
/// does not fit is replaced by a string that says so.
pub fn bound_errors(v: &Value) -> String {
    const PER_MESSAGE: usize = 300;
    const PER_FIELD: usize = 10;
    const RESERVE: usize = 64;
    let Value::Object(map) = v else {
        let s = v.to_string();
        return if s.len() <= MAX_ERRORS_BYTES {
            s
        } else {
            Value::String(format!("errors not shown: {} bytes", s.len())).to_string()
        };
    };
    let mut out = String::from("{");
    let mut left_out = 0usize;
    for (i, (field, messages)) in map.iter().enumerate() {
        let field = cut_text(field, 128);
        let value = match messages {
            Value::Array(list) => Value::Array(
                list.iter()
                    .take(PER_FIELD)
                    .map(|m| match m {
                        Value::String(s) => Value::String(cut_text(s, PER_MESSAGE)),
                        other => Value::String(cut_text(&other.to_string(), PER_MESSAGE)),
                    })
                    .collect(),
            ),
            Value::String(s) => Value::String(cut_text(s, PER_MESSAGE)),
            other => Value::String(cut_text(&other.to_string(), PER_MESSAGE)),
        };
        let entry = format!("{}:{}", Value::String(field), value);
        let sep = usize::from(out.len() > 1);
        if out.len() + sep + entry.len() + RESERVE > MAX_ERRORS_BYTES {
            left_out = map.len() - i;
            break;
        }
        if sep == 1 {
            out.push(',');
        }
        out.push_str(&entry);
    }
    if left_out > 0 {
        if out.len() > 1 {
            out.push(',');
        }
        let note = format!(
            "{left_out} more field{} not shown",
            if left_out == 1 { "" } else { "s" }
        );
        out.push_str(&format!(
            "{}:[{}]",
            Value::String(ERRORS_CUT_KEY.into()),
            Value::String(note)
        ));
    }
    out.push('}');
    out
}
