//! The input stage: an export file becomes a stream of records, each with
//! a verdict: a valid, normalised [`Row`], `invalid` with the reason, or a
//! `duplicate` of an earlier record.
//!
//! Streams with one reused buffer: memory does not grow with the file,
//! except the duplicate index (12 bytes of hash and 4 of record number per
//! distinct identityReference, in a table at most 7/8 full: 32 MiB at a
//! million, see `seen`).
//!
//! Not for: building or signing requests (`request`), writing results
//! (`output`).

pub mod columns;
pub mod reader;
pub mod seen;
pub mod source;
pub mod validate;

use crate::model::Problem;

pub use columns::{parse_delimiter, Columns, Field, Mapping, TokenMode};
pub use reader::{RawRecord, RecordReader};
pub use seen::{Key, SeenIndex};
pub use source::Source;

/// Input problems that stop everything before a record is used (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("{path} is empty (0 bytes): expected a CSV header row, then one row per customer")]
    Empty { path: String },
    #[error("{path} looks like a binary file, not a CSV export (it holds NUL bytes); if it is compressed, name it *.gz")]
    Binary { path: String },
    #[error("{path} has no header row: expected a first line like identityReference,email,mobileNumber,token")]
    NoHeader { path: String },
    #[error("{path}: the header row (line 1) is not UTF-8 text; re-export the file as UTF-8")]
    HeaderNotUtf8 { path: String },
    #[error(
        "{path}: required column{} missing: {}. Headers found: {}. Use --map FIELD=COLUMN to name a column (e.g. --map email=\"E-mail\").",
        if missing.len() > 1 { "s" } else { "" },
        missing.join(", "),
        if found.is_empty() { "(none)".to_string() } else { found.join(", ") }
    )]
    MissingColumns {
        path: String,
        missing: Vec<String>,
        found: Vec<String>,
    },
    #[error("{path}: read error near line {line}: {reason}")]
    Read {
        path: String,
        line: u64,
        reason: String,
    },
}

/// How to read an input.
#[derive(Debug, Clone)]
pub struct InputOptions {
    pub delimiter: u8,
    pub maps: Vec<Mapping>,
    pub mode: TokenMode,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions {
            delimiter: b',',
            maps: Vec::new(),
            mode: TokenMode::Token,
        }
    }
}

/// A valid row, normalised, borrowed from the reader's buffers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Row<'a> {
    pub identity_reference: &'a str,
    pub email: &'a str,
    pub mobile_number: &'a str,
    pub vendor: &'static str,
    /// The share token (empty in mint mode).
    pub token: &'a str,
    /// Sumsub's applicant id (mint mode; empty otherwise).
    pub applicant_id: &'a str,
}

impl std::fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Row")
            .field("identity_reference", &self.identity_reference)
            .field("email", &"***")
            .field("mobile_number", &"***")
            .field("vendor", &self.vendor)
            .field("token", &"***")
            .field("applicant_id", &self.applicant_id)
            .finish()
    }
}

impl<'a> Row<'a> {
    pub fn share_request(&self) -> crate::request::ShareRequest<'a> {
        crate::request::ShareRequest {
            identity_reference: self.identity_reference,
            email: self.email,
            mobile_number: self.mobile_number,
            provider: crate::request::Provider {
                vendor: self.vendor,
                token: self.token,
            },
        }
    }
}

/// What the input stage decided about a record.
#[derive(Debug)]
pub enum Verdict<'a> {
    Valid(Row<'a>),
    /// Every rule the record fails, in field order.
    Invalid(Vec<Problem>),
    Duplicate {
        of: u64,
    },
}

/// The message of a `duplicate` outcome, e.g. `duplicate of record 12`,
/// written into `out` (cleared first).
pub fn duplicate_message(of: u64, out: &mut String) {
    out.clear();
    out.push_str("duplicate of record ");
    out.push_str(itoa::Buffer::new().format(of));
}

/// One record with its verdict.
#[derive(Debug)]
pub struct Item<'a> {
    /// 1-based index of the data record (the header is not a record).
    pub record: u64,
    /// Line of the input where the record starts.
    pub line: u64,
    /// The identityReference when it is well formed, else empty: safe to
    /// print (a malformed one may be an email put in the wrong column).
    pub identity_reference: &'a str,
    pub verdict: Verdict<'a>,
    /// The record's fields as read, for the retry file.
    pub raw: &'a RawRecord,
}

/// Records read before the duplicate index is sized for the whole file
/// (enough bytes that the reader's buffer does not skew the estimate).
const SIZE_INDEX_AFTER: u64 = 1 << 16;
/// The most identities the index is sized for up front (2 GiB of table:
/// beyond, it grows as it fills).
const MAX_INDEX_RESERVE: usize = 100_000_000;

/// A streaming reader of one export.
pub struct Input {
    source: Source,
    reader: RecordReader,
    rec: RawRecord,
    header: csv::ByteRecord,
    header_names: Vec<String>,
    columns: Columns,
    mode: TokenMode,
    record_no: u64,
    /// identityReference -> first record that claimed it.
    seen: SeenIndex,
    mobile: String,
    reasons: Vec<Problem>,
}

impl Input {
    /// Opens the input, reads and checks the header. Every error here is
    /// fatal (exit 2) and nothing has been read past the header.
    pub fn open(source: &Source, opts: &InputOptions) -> Result<Input, InputError> {
        let stream = source.open()?;
        let name = source.display();
        let mut reader = RecordReader::new(stream, opts.delimiter);
        let head = reader.peek().map_err(|e| read_error(&name, 1, &e))?;
        if head.is_empty() {
            return Err(InputError::Empty { path: name });
        }
        // NUL bytes in the header line: a binary file (a NUL in a later row
        // only makes that row invalid).
        let first_line = match memchr::memchr(b'\n', head) {
            Some(i) => &head[..i],
            None => head,
        };
        if first_line.contains(&0) {
            return Err(InputError::Binary { path: name });
        }
        let mut rec = RawRecord::default();
        loop {
            if !reader
                .read(&mut rec)
                .map_err(|e| read_error(&name, 1, &e))?
            {
                return Err(InputError::NoHeader { path: name });
            }
            if !rec.is_blank() {
                break;
            }
        }
        if rec.oversize.is_some() {
            return Err(InputError::NoHeader { path: name });
        }
        let mut header_names = Vec::with_capacity(rec.len());
        for f in rec.fields() {
            let s = std::str::from_utf8(f)
                .map_err(|_| InputError::HeaderNotUtf8 { path: name.clone() })?;
            header_names.push(s.trim().to_string());
        }
        let columns = Columns::resolve(&header_names, &opts.maps, opts.mode, &name)?;
        Ok(Input {
            source: source.clone(),
            header: rec.to_byte_record(),
            reader,
            rec,
            header_names,
            columns,
            mode: opts.mode,
            record_no: 0,
            seen: SeenIndex::default(),
            mobile: String::new(),
            reasons: Vec::new(),
        })
    }

    /// Records read so far.
    pub fn records_read(&self) -> u64 {
        self.record_no
    }

    /// The input's size in bytes, when it is a regular, uncompressed file
    /// (what [`Input::bytes_read`] reaches at the end).
    pub fn size(&self) -> Option<u64> {
        let path = self.source.path()?;
        if self.source.is_gzip() {
            return None;
        }
        std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// The header record as read (for the retry file).
    pub fn header(&self) -> &csv::ByteRecord {
        &self.header
    }

    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    pub fn bytes_read(&self) -> u64 {
        self.reader.bytes_read()
    }

    /// Sizes the duplicate index once for the whole file, from how far
    /// into it the first [`SIZE_INDEX_AFTER`] records reach: a hash table
    /// that doubles as it fills holds its old and its new slots at once
    /// while it grows (at a million identities, 16 MiB beside 32 MiB), the
    /// peak of a long run's memory. Nothing to do for standard input or a
    /// .gz (no size known): the table grows as it fills.
    fn size_index(&mut self) {
        let (Some(size), bytes) = (self.size(), self.bytes_read()) else {
            return;
        };
        if bytes == 0 || bytes >= size {
            return;
        }
        let est = (size as u128 * u128::from(self.record_no) / u128::from(bytes)) as usize;
        let want = est.min(MAX_INDEX_RESERVE).saturating_sub(self.seen.len());
        // A failed reservation only means the table grows as it fills.
        let _ = self.seen.try_reserve(want);
    }

    /// The next record and its verdict, or `None` at the end.
    pub fn next_item(&mut self) -> Result<Option<Item<'_>>, InputError> {
        if self.record_no == SIZE_INDEX_AFTER {
            self.size_index();
        }
        loop {
            let more = self
                .reader
                .read(&mut self.rec)
                .map_err(|e| read_error(&self.source.display(), self.rec.line + 1, &e))?;
            if !more {
                return Ok(None);
            }
            if !self.rec.is_blank() {
                break;
            }
        }
        self.record_no += 1;
        let record = self.record_no;
        let line = self.rec.line;
        let rec = &self.rec;
        let cols = &self.columns;

        if let Some(why) = &rec.oversize {
            return Ok(Some(Item {
                record,
                line,
                identity_reference: "",
                verdict: Verdict::Invalid(vec![Problem::Unreadable(why.clone())]),
                raw: rec,
            }));
        }
        if rec.len() != cols.width {
            return Ok(Some(Item {
                record,
                line,
                identity_reference: "",
                verdict: Verdict::Invalid(vec![Problem::FieldCount {
                    got: rec.len(),
                    want: cols.width,
                }]),
                raw: rec,
            }));
        }

        // Decode only the columns kycshare uses.
        self.reasons.clear();
        let get = |f: Field, reasons: &mut Vec<Problem>| -> &str {
            let Some(i) = cols.get(f) else { return "" };
            let bytes = rec.field(i).unwrap_or_default();
            match std::str::from_utf8(bytes) {
                Ok(s) => s.trim(),
                Err(e) => {
                    reasons.push(Problem::NotUtf8 {
                        field: f.name(),
                        byte: e.valid_up_to() + 1,
                    });
                    "\u{0}"
                }
            }
        };
        let mut reasons = std::mem::take(&mut self.reasons);
        let id = get(Field::IdentityReference, &mut reasons);
        // Where the duplicate check will look, asked of memory now: it
        // arrives while the other fields are validated (see `seen`).
        let key = Key::of(id);
        self.seen.prefetch(&key);
        let email = get(Field::Email, &mut reasons);
        let mobile_raw = get(Field::MobileNumber, &mut reasons);
        let vendor_raw = get(Field::Vendor, &mut reasons);
        let (token, applicant_id) = match self.mode {
            TokenMode::Token => (get(Field::Token, &mut reasons), ""),
            TokenMode::Mint => ("", get(Field::ApplicantId, &mut reasons)),
        };
        let utf8_ok = reasons.is_empty();
        let id_ok = id != "\u{0}" && validate::is_identity_reference(id);
        if utf8_ok {
            if let Err(e) = validate::check_identity_reference(id) {
                reasons.push(e);
            }
            if let Err(e) = validate::check_email(email) {
                reasons.push(e);
            }
            if let Err(e) = validate::normalize_mobile(mobile_raw, &mut self.mobile) {
                reasons.push(e);
            }
            let checked = match self.mode {
                TokenMode::Token => validate::check_token(token),
                TokenMode::Mint => validate::check_applicant_id(applicant_id),
            };
            if let Err(e) = checked {
                reasons.push(e);
            }
        }
        let vendor = match validate::check_vendor(if vendor_raw == "\u{0}" {
            ""
        } else {
            vendor_raw
        }) {
            Ok(v) => v,
            Err(e) => {
                reasons.push(e);
                ""
            }
        };
        let safe_id = if id_ok { id } else { "" };

        // Only a record that passed validation claims its
        // identityReference (SPEC "Input"): an invalid record followed by a
        // valid one with the same reference leaves the valid one to be sent,
        // and `duplicate` always means "covered by an earlier valid record".
        let dup_of = if id_ok && reasons.is_empty() {
            self.seen.claim(key, record)
        } else {
            None
        };

        let verdict = if !reasons.is_empty() {
            Verdict::Invalid(reasons.clone())
        } else if let Some(of) = dup_of {
            Verdict::Duplicate { of }
        } else {
            Verdict::Valid(Row {
                identity_reference: id,
                email,
                mobile_number: &self.mobile,
                vendor,
                token,
                applicant_id,
            })
        };
        self.reasons = reasons;
        Ok(Some(Item {
            record,
            line,
            identity_reference: safe_id,
            verdict,
            raw: rec,
        }))
    }
}

fn read_error(path: &str, line: u64, e: &std::io::Error) -> InputError {
    InputError::Read {
        path: path.to_string(),
        line,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;

    #[test]
    fn the_duplicate_index_is_sized_for_the_whole_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.csv");
        let n = 150_000u64;
        let mut s = String::from("identityReference,email,mobileNumber,token\n");
        for i in 1..=n {
            s.push_str(&format!(
                "c-{i},u{i}@example.com,6141{i:07},tok-{i}-abcdef\n"
            ));
        }
        std::fs::write(&p, s).unwrap();
        let mut input = Input::open(&Source::from_arg(&p), &InputOptions::default()).unwrap();
        for _ in 0..SIZE_INDEX_AFTER + 10 {
            assert!(input.next_item().unwrap().is_some());
        }
        // Sized for about all 150,000 identities now, not grown by doubling
        // as they come (that would hold 2^17 = 131,072 buckets' worth).
        assert!(
            input.seen.capacity() >= 140_000,
            "{}",
            input.seen.capacity()
        );
        assert!(input.seen.capacity() < 1_000_000, "not oversized");
    }
}
