//! `--record FILE`: one JSON line per request to the share endpoint, and
//! per request to `/eapi/v0/identities/{identityReference}` (those lines
//! carry `"route":"identity"` and the method; share lines have neither, as
//! before), written and flushed before the answer is sent, so a test can
//! read the file as soon as its client is done.
//!
//! The file holds payloads (emails, mobile numbers, tokens) of accepted
//! requests: it is created with mode 0600. It is for rehearsals and tests.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

/// One line of the record file.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry<'a> {
    /// 1-based sequence of share requests, in arrival order; on identity
    /// lines, of identity requests (each route counts its own).
    pub seq: u64,
    /// `"identity"` on lines of `GET /eapi/v0/identities/{id}`; absent on
    /// share lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<&'a str>,
    /// The HTTP method, on identity lines only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'a str>,
    /// Arrival, RFC 3339 UTC with microseconds.
    pub time: String,
    pub unix_micros: u64,
    pub identity_reference: Option<&'a str>,
    /// HTTP status answered; 0 when none (reset or hang).
    pub status: u16,
    pub nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a Value>,
}

/// The time fields of an entry.
pub fn timestamp(at: SystemTime) -> (String, u64) {
    let micros = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    (humantime::format_rfc3339_micros(at).to_string(), micros)
}

#[derive(Debug)]
pub struct Recorder {
    out: Mutex<BufWriter<File>>,
}

impl Recorder {
    /// Opens `path` for appending (created with mode 0600).
    pub fn open(path: &Path) -> io::Result<Recorder> {
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open the record file {}: {e}", path.display()),
            )
        })?;
        Ok(Recorder {
            out: Mutex::new(BufWriter::new(file)),
        })
    }

    /// Appends one line and flushes it.
    pub fn write(&self, entry: &Entry<'_>) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(&line)?;
        out.flush()
    }

    /// Flushes and syncs the file (at shutdown).
    pub fn close(&self) -> io::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.flush()?;
        out.get_ref().sync_all()
    }
}
