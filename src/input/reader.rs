//! Splitting a byte stream into CSV records (RFC 4180, via `csv-core`),
//! with the things the `csv` crate does not give: the true starting line of
//! every record (right for CRLF files, blank lines and multi-line quoted
//! fields), a per-record size limit so that a 50 MB field cannot take the
//! memory, and records that stay readable as raw bytes.
//!
//! Not for: meaning. Which column is what, and whether a value is valid,
//! belongs to `columns` and `validate`.

use std::io::{self, Read};

use csv_core::{ReadRecordResult, Reader, ReaderBuilder};

/// The largest record kycshare reads (1 MiB). A larger one is reported as
/// invalid and skipped, and memory stays bounded whatever the file holds.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// The most fields a record may have.
pub const MAX_FIELDS: usize = 10_000;

const CHUNK: usize = 256 * 1024;

/// One record as read: its fields' bytes and where it starts.
#[derive(Debug, Default, Clone)]
pub struct RawRecord {
    /// 1-based line of the input where the record starts.
    pub line: u64,
    data: Vec<u8>,
    ends: Vec<usize>,
    nfields: usize,
    /// Why the record could not be read in full (too large, too many fields).
    pub oversize: Option<String>,
}

impl RawRecord {
    pub fn len(&self) -> usize {
        self.nfields
    }

    pub fn is_empty(&self) -> bool {
        self.nfields == 0
    }

    pub fn field(&self, i: usize) -> Option<&[u8]> {
        if i >= self.nfields {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..self.ends[i]])
    }

    pub fn fields(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.nfields).map(move |i| self.field(i).unwrap_or_default())
    }

    /// A line holding only spaces or tabs: not a record (like a blank line).
    pub fn is_blank(&self) -> bool {
        self.nfields == 1
            && self.oversize.is_none()
            && self.data[..self.ends[0]]
                .iter()
                .all(|b| *b == b' ' || *b == b'\t')
    }

    pub fn to_byte_record(&self) -> csv::ByteRecord {
        let mut r =
            csv::ByteRecord::with_capacity(self.ends.last().copied().unwrap_or(0), self.nfields);
        for f in self.fields() {
            r.push_field(f);
        }
        r
    }
}

/// Reads records one at a time into a reused [`RawRecord`].
pub struct RecordReader {
    src: Box<dyn Read + Send>,
    csv: Reader,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    line: u64,
    bom_checked: bool,
    bytes_read: u64,
    /// The last byte counted was a CR (a following LF is the same break).
    prev_cr: bool,
}

impl RecordReader {
    pub fn new(src: Box<dyn Read + Send>, delimiter: u8) -> Self {
        RecordReader {
            src,
            csv: ReaderBuilder::new().delimiter(delimiter).build(),
            buf: vec![0; CHUNK],
            pos: 0,
            len: 0,
            eof: false,
            line: 1,
            bom_checked: false,
            bytes_read: 0,
            prev_cr: false,
        }
    }

    /// Bytes of (decompressed) input consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The first bytes of the input, for a binary-file check. Fills the
    /// buffer if needed; call before the first record.
    pub fn peek(&mut self) -> io::Result<&[u8]> {
        self.fill()?;
        while !self.eof && self.len < 512 {
            let n = self.src.read(&mut self.buf[self.len..])?;
            if n == 0 {
                self.eof = true;
            }
            self.len += n;
        }
        Ok(&self.buf[self.pos..self.len])
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.pos < self.len || self.eof {
            return Ok(());
        }
        self.pos = 0;
        self.len = 0;
        loop {
            match self.src.read(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    self.len = n;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if !self.bom_checked {
            // A BOM could straddle reads only for a source that returns
            // fewer than 3 bytes at first; `peek` covers the usual case.
            while !self.eof && self.len < 3 {
                let n = self.src.read(&mut self.buf[self.len..])?;
                if n == 0 {
                    self.eof = true;
                }
                self.len += n;
            }
        }
        Ok(())
    }

    /// Reads the next record into `rec`. Returns `Ok(false)` at the end.
    pub fn read(&mut self, rec: &mut RawRecord) -> io::Result<bool> {
        rec.nfields = 0;
        rec.oversize = None;
        if rec.data.len() < 4096 {
            rec.data.resize(4096, 0);
        }
        if rec.ends.len() < 64 {
            rec.ends.resize(64, 0);
        }
        let mut out = 0usize;
        let mut started: Option<u64> = None;
        let mut discarding = false;
        loop {
            self.fill()?;
            if !self.bom_checked {
                self.bom_checked = true;
                if self.buf[self.pos..self.len].starts_with(b"\xEF\xBB\xBF") {
                    self.pos += 3;
                    self.bytes_read += 3;
                }
            }
            let input = &self.buf[self.pos..self.len];
            let (res, nin, nout, nend) = if discarding {
                let mut scratch = [0u8; 4096];
                let mut scratch_ends = [0usize; 64];
                let (r, i, _, _) = self.csv.read_record(input, &mut scratch, &mut scratch_ends);
                (r, i, 0, 0)
            } else {
                self.csv
                    .read_record(input, &mut rec.data[out..], &mut rec.ends[rec.nfields..])
            };
            // Line accounting over exactly the bytes consumed.
            let consumed = &input[..nin];
            let mut rest = consumed;
            if started.is_none() {
                let skip = consumed
                    .iter()
                    .position(|b| *b != b'\n' && *b != b'\r')
                    .unwrap_or(consumed.len());
                self.line += count_breaks(&consumed[..skip], &mut self.prev_cr);
                if skip < consumed.len() {
                    started = Some(self.line);
                }
                rest = &consumed[skip..];
            }
            self.line += count_breaks(rest, &mut self.prev_cr);
            self.pos += nin;
            self.bytes_read += nin as u64;
            if !discarding {
                // csv-core reports field ends as offsets in the whole record.
                rec.nfields += nend;
                out += nout;
            }
            match res {
                ReadRecordResult::InputEmpty => {
                    if self.eof && self.pos >= self.len {
                        // csv-core needs an empty input to finish the last record.
                        continue;
                    }
                }
                ReadRecordResult::OutputFull => {
                    if rec.data.len() >= MAX_RECORD_BYTES {
                        discarding = true;
                        rec.oversize = Some(format!(
                            "record is larger than {MAX_RECORD_BYTES} bytes (the per-record limit); not read"
                        ));
                    } else {
                        let n = (rec.data.len() * 2).min(MAX_RECORD_BYTES);
                        rec.data.resize(n, 0);
                    }
                }
                ReadRecordResult::OutputEndsFull => {
                    if rec.ends.len() >= MAX_FIELDS {
                        discarding = true;
                        rec.oversize = Some(format!(
                            "record has more than {MAX_FIELDS} fields (the per-record limit); not read"
                        ));
                    } else {
                        let n = (rec.ends.len() * 2).min(MAX_FIELDS);
                        rec.ends.resize(n, 0);
                    }
                }
                ReadRecordResult::Record => {
                    rec.line = started.unwrap_or(self.line);
                    if discarding {
                        rec.nfields = 0;
                    }
                    return Ok(true);
                }
                ReadRecordResult::End => return Ok(false),
            }
            if self.eof && self.pos >= self.len && matches!(res, ReadRecordResult::InputEmpty) {
                continue;
            }
        }
    }
}

/// Line breaks in `s`: LF, CRLF, or a lone CR each count once. `prev_cr`
/// carries a CR at the end of one slice over to the next.
fn count_breaks(s: &[u8], prev_cr: &mut bool) -> u64 {
    if s.is_empty() {
        return 0;
    }
    let lf = memchr::memchr_iter(b'\n', s).count() as u64;
    let mut crlf = 0u64;
    let mut cr = 0u64;
    for i in memchr::memchr_iter(b'\r', s) {
        cr += 1;
        if s.get(i + 1) == Some(&b'\n') {
            crlf += 1;
        }
    }
    let joined = u64::from(*prev_cr && s[0] == b'\n');
    *prev_cr = s[s.len() - 1] == b'\r';
    lf + cr - crlf - joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(data: &[u8]) -> Vec<(u64, Vec<String>)> {
        let mut r = RecordReader::new(Box::new(io::Cursor::new(data.to_vec())), b',');
        let mut rec = RawRecord::default();
        let mut out = Vec::new();
        while r.read(&mut rec).unwrap() {
            out.push((
                rec.line,
                rec.fields()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect(),
            ));
        }
        out
    }

    #[test]
    fn lines_are_right_for_lf_crlf_blank_lines_and_multiline_fields() {
        let data = b"\xEF\xBB\xBFa,b\r\n1,2\r\n\r\n\r\n3,\"x\r\ny\"\r\n4,5\r\n\n6,7";
        let got = read_all(data);
        assert_eq!(
            got,
            vec![
                (1, vec!["a".into(), "b".into()]),
                (2, vec!["1".into(), "2".into()]),
                (5, vec!["3".into(), "x\r\ny".into()]),
                (7, vec!["4".into(), "5".into()]),
                (9, vec!["6".into(), "7".into()]),
            ]
        );
    }

    #[test]
    fn lone_cr_line_endings_count_as_lines() {
        let got = read_all(b"a,b\r1,2\r\r3,4\r\n5,6");
        let lines: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(lines, vec![1, 2, 4, 5]);
    }

    #[test]
    fn records_across_chunk_boundaries_keep_their_fields() {
        let mut data = b"h1,h2\n".to_vec();
        for i in 0..50_000 {
            data.extend_from_slice(format!("{i},\"v\"\"{i}\"\n").as_bytes());
        }
        let got = read_all(&data);
        assert_eq!(got.len(), 50_001);
        assert_eq!(got[12_345].0, 12_346);
        assert_eq!(
            got[12_345].1,
            vec!["12344".to_string(), "v\"12344".to_string()]
        );
        assert_eq!(got[50_000].1[0], "49999");
    }

    #[test]
    fn an_oversized_record_is_skipped_with_a_reason() {
        let mut data = b"a,b\n1,2\n3,\"".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + 10));
        data.extend_from_slice(b"\"\n5,6\n");
        let mut r = RecordReader::new(Box::new(io::Cursor::new(data)), b',');
        let mut rec = RawRecord::default();
        let mut seen = Vec::new();
        while r.read(&mut rec).unwrap() {
            seen.push((rec.line, rec.oversize.is_some(), rec.len()));
        }
        assert_eq!(
            seen,
            vec![(1, false, 2), (2, false, 2), (3, true, 0), (4, false, 2)]
        );
    }
}
