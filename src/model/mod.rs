//! The types and limits every stage shares, at the bottom of the crate:
//! any module may import this one, and it imports none of them (`secret`
//! aside, which is below everything).
//!
//! Not for: behaviour. What lives here is data and small pure functions
//! on it: the outcome of a record ([`Outcome`], [`Final`], [`OutMsg`]), why
//! a run stopped ([`AbortReason`], [`Abort`]), what an attempt got back
//! ([`Answer`]), the ledger's [`fingerprint`], and the bounds of what
//! reaches the results file.

mod abort;
mod answer;
mod bounds;
mod fingerprint;
pub mod live;
mod outcome;
mod problem;
mod process;

pub use abort::{Abort, AbortReason};
pub use answer::{parse_retry_after, Answer};
pub use bounds::{
    bound_errors, cut_text, CUT_MARKER, ERRORS_CUT_KEY, MAX_ERRORS_BYTES, MAX_MESSAGE_BYTES,
};
pub use fingerprint::fingerprint;
pub use live::Live;
pub use outcome::{Final, OutMsg, Outcome, OUT_DEPTH};
pub use problem::{problems_message, Problem};
pub use process::{host_name, process_alive};

use std::io;
use std::time::SystemTime;

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-26T12:00:00.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// An io::Error in words an operator can act on.
pub fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (check the file's owner and mode)".into()
        }
        _ => e.to_string(),
    }
}
