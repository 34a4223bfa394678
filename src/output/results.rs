//! The results file: one CSV row per input record that reached a final
//! outcome, appended as outcomes happen, written in blocks (what arrived
//! together) and synced at least once a second. For `run` it is the journal that `--resume` reads.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::OutputError;
use crate::model::{bound_errors, cut_text, MAX_ERRORS_BYTES, MAX_MESSAGE_BYTES};
use crate::model::{rfc3339_millis, Outcome};

/// The header row, exactly as the contract gives it.
pub const HEADER: &str = "record,line,identityReference,outcome,httpStatus,attempts,traceId,message,errors,latencyMs,completedAt";

/// One row of the results file.
#[derive(Debug, Clone)]
pub struct ResultRow<'a> {
    pub record: u64,
    pub line: u64,
    pub identity_reference: &'a str,
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    pub attempts: u32,
    pub trace_id: &'a str,
    pub message: &'a str,
    pub errors: &'a str,
    pub latency_ms: Option<u64>,
    pub completed_at: SystemTime,
}

/// Appends result rows; flushes each one and syncs at least once a second.
pub struct ResultsWriter {
    path: PathBuf,
    /// Rows are formatted into memory and written to `file` in blocks.
    w: csv::Writer<SharedBuf>,
    buf: SharedBuf,
    file: File,
    /// Where each buffered row ends in the buffer.
    ends: Vec<usize>,
    /// Bytes of the buffer already in the file (a write that failed part
    /// way through).
    written: usize,
    last_sync: Instant,
    dirty: bool,
    itoa: [itoa::Buffer; 4],
    /// The last timestamp formatted, reused while the millisecond is the same.
    stamp: (u128, String),
}

/// How often the results file is synced to disk at the least.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

impl ResultsWriter {
    /// Creates a new results file (mode 0600) with its header. An existing
    /// file is an error unless `replace`.
    pub fn create(path: &Path, replace: bool) -> Result<ResultsWriter, OutputError> {
        let mut opts = OpenOptions::new();
        opts.write(true).mode(0o600);
        if replace {
            opts.create(true).truncate(true);
        } else {
            opts.create_new(true);
        }
        let file = opts.open(path).map_err(|e| OutputError::io(path, e))?;
        // An existing file kept its mode on truncate: make it 0600 too.
        set_private(path)?;
        let mut w = Self::from_file(path, file)?;
        w.w.write_record(HEADER.split(','))
            .map_err(|e| OutputError::io(path, e.into()))?;
        w.flush_row()?;
        Ok(w)
    }

    /// Opens an existing results file for appending (after `--resume` has
    /// read and, if needed, truncated it). An empty file (a run killed
    /// before its header was complete) gets the header first.
    pub fn append(path: &Path) -> Result<ResultsWriter, OutputError> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| OutputError::io(path, e))?;
        set_private(path)?;
        let empty = file.metadata().map_err(|e| OutputError::io(path, e))?.len() == 0;
        let mut w = Self::from_file(path, file)?;
        if empty {
            w.w.write_record(HEADER.split(','))
                .map_err(|e| OutputError::io(path, e.into()))?;
            w.flush_row()?;
        }
        Ok(w)
    }

    fn from_file(path: &Path, file: File) -> Result<ResultsWriter, OutputError> {
        let buf = SharedBuf::default();
        Ok(ResultsWriter {
            path: path.to_path_buf(),
            w: csv::WriterBuilder::new()
                .buffer_capacity(4 * 1024)
                .from_writer(buf.clone()),
            buf,
            file,
            ends: Vec::new(),
            written: 0,
            last_sync: Instant::now(),
            dirty: false,
            itoa: Default::default(),
            stamp: (u128::MAX, String::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one row and flushes it to the file.
    pub fn write(&mut self, row: &ResultRow<'_>) -> Result<(), OutputError> {
        self.write_buffered(row)?;
        self.flush_row()
    }

    /// Writes one row into the buffer without flushing (dry runs write in
    /// batches; call [`ResultsWriter::flush_row`] at the end of a batch).
    pub fn write_buffered(&mut self, row: &ResultRow<'_>) -> Result<(), OutputError> {
        let [a, b, c, d] = &mut self.itoa;
        let record = a.format(row.record);
        let line = b.format(row.line);
        let status = row.http_status.map(|s| c.format(s)).unwrap_or("");
        let mut attempts_buf = itoa::Buffer::new();
        let attempts = attempts_buf.format(row.attempts);
        let latency = row.latency_ms.map(|l| d.format(l)).unwrap_or("");
        let ms = row
            .completed_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        if self.stamp.0 != ms {
            self.stamp = (ms, rfc3339_millis(row.completed_at));
        }
        let at = &self.stamp.1;
        // Whatever a server sent, a results row stays small (SPEC: message
        // at most 1 KiB, errors at most 4 KiB of compact JSON). The answer
        // reader already bounds both; this is the last guard.
        let message: std::borrow::Cow<'_, str> = if row.message.len() > MAX_MESSAGE_BYTES {
            cut_text(row.message, MAX_MESSAGE_BYTES).into()
        } else {
            row.message.into()
        };
        let errors: std::borrow::Cow<'_, str> = if row.errors.len() > MAX_ERRORS_BYTES {
            match serde_json::from_str::<serde_json::Value>(row.errors) {
                Ok(v) => bound_errors(&v).into(),
                Err(_) => String::new().into(),
            }
        } else {
            row.errors.into()
        };
        let trace_id = if row.trace_id.len() > 128 {
            ""
        } else {
            row.trace_id
        };
        self.w
            .write_record([
                record.as_bytes(),
                line.as_bytes(),
                row.identity_reference.as_bytes(),
                row.outcome.as_str().as_bytes(),
                status.as_bytes(),
                attempts.as_bytes(),
                trace_id.as_bytes(),
                message.as_bytes(),
                errors.as_bytes(),
                latency.as_bytes(),
                at.as_bytes(),
            ])
            .map_err(|e| OutputError::io(&self.path, e.into()))?;
        // Into the block's buffer (memory only), so that the row's end is known.
        self.w.flush().map_err(|e| OutputError::io(&self.path, e))?;
        self.ends.push(self.buf.len());
        self.dirty = true;
        Ok(())
    }

    /// Rows buffered and not (completely) in the file: after a failed
    /// write, the last this many rows written are the ones not on disk.
    pub fn rows_not_written(&self) -> usize {
        self.ends.iter().filter(|e| **e > self.written).count()
    }

    /// Writes the buffered block to the file, counting what reached it.
    fn write_block(&mut self) -> Result<(), OutputError> {
        use std::io::Write;
        self.w.flush().map_err(|e| OutputError::io(&self.path, e))?;
        let mut buf = self.buf.0.lock().unwrap_or_else(|p| p.into_inner());
        while self.written < buf.len() {
            match self.file.write(&buf[self.written..]) {
                Ok(0) => {
                    return Err(OutputError::io(
                        &self.path,
                        io::Error::new(io::ErrorKind::WriteZero, "the file took no more bytes"),
                    ))
                }
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(OutputError::io(&self.path, e)),
            }
        }
        buf.clear();
        drop(buf);
        self.ends.clear();
        self.written = 0;
        Ok(())
    }

    /// Flushes buffered rows to the file; syncs if the last sync is more
    /// than a second old.
    pub fn flush_row(&mut self) -> Result<(), OutputError> {
        self.write_block()?;
        if self.last_sync.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// Flushes, then syncs written rows to disk (fdatasync) if any were
    /// written since the last sync.
    pub fn sync(&mut self) -> Result<(), OutputError> {
        self.write_block()?;
        if self.dirty {
            self.file
                .sync_data()
                .map_err(|e| OutputError::io(&self.path, e))?;
            self.dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Flushes and syncs; the file is complete on disk after this.
    pub fn finish(mut self) -> Result<(), OutputError> {
        self.write_block()?;
        self.dirty = true;
        self.sync()
    }
}

/// The block buffer the CSV writer formats rows into; the results writer
/// takes it from there to the file (csv's writer does not lend its sink).
#[derive(Clone, Default)]
struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuf {
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn set_private(path: &Path) -> Result<(), OutputError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| OutputError::io(path, e))
}

/// What an existing results file holds, as read for `--resume`.
#[derive(Debug, Default)]
pub struct Prior {
    /// Outcome code per record number (index = record - 1): 0 when absent,
    /// else 1 + the outcome's index in [`Outcome::ALL`].
    outcomes: Vec<u8>,
    /// Hash of the identityReference written for each record.
    ids: Vec<u32>,
    pub rows: u64,
    /// Bytes of a last line cut short (discarded).
    pub truncated_bytes: u64,
    /// Rows found per outcome.
    pub counts: [u64; 7],
}

impl Prior {
    pub fn outcome(&self, record: u64) -> Option<Outcome> {
        let i = usize::try_from(record.checked_sub(1)?).ok()?;
        match self.outcomes.get(i).copied() {
            None | Some(0) => None,
            Some(c) => Some(Outcome::ALL[usize::from(c) - 1]),
        }
    }

    /// True when the results file holds `record` with this identityReference.
    pub fn matches(&self, record: u64, identity_reference: &str) -> bool {
        let i = (record - 1) as usize;
        self.ids.get(i).copied() == Some(id_hash(identity_reference))
    }

    pub fn count(&self, o: Outcome) -> u64 {
        self.counts[o as usize]
    }

    /// True when every row came from a dry run (`validate`).
    pub fn only_dry_run(&self) -> bool {
        self.count(Outcome::Accepted)
            + self.count(Outcome::Rejected)
            + self.count(Outcome::Failed)
            + self.count(Outcome::Skipped)
            == 0
    }
}

fn id_hash(s: &str) -> u32 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes()) as u32
}

/// Reads an existing results file. With `repair`, a last line cut short
/// (by a kill mid-write) is cut off the file so that appending continues
/// on a clean line.
/// The length of `file` and where its last complete line ends (a last
/// line cut short by a kill is what lies beyond), for the journals that a
/// resume reads (results, verification).
pub(crate) fn complete_len(file: &mut File, path: &Path) -> Result<(u64, u64), OutputError> {
    let len = file.metadata().map_err(|e| OutputError::io(path, e))?.len();
    // Backwards in blocks: rows are at most 8 KiB, so the first block
    // nearly always holds the end of the last complete line.
    const BLOCK: u64 = 64 * 1024;
    let mut end = len;
    let mut buf = vec![0u8; BLOCK as usize];
    let complete = loop {
        if end == 0 {
            break 0;
        }
        let from = end.saturating_sub(BLOCK);
        let chunk = &mut buf[..(end - from) as usize];
        file.seek(SeekFrom::Start(from))
            .map_err(|e| OutputError::io(path, e))?;
        io::Read::read_exact(file, chunk).map_err(|e| OutputError::io(path, e))?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            break from + i as u64 + 1;
        }
        end = from;
    };
    Ok((len, complete))
}

pub fn read_prior(path: &Path, repair: bool) -> Result<Prior, OutputError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(repair)
        .open(path)
        .map_err(|e| OutputError::io(path, e))?;
    let (len, complete) = complete_len(&mut file, path)?;
    let mut prior = Prior {
        truncated_bytes: len - complete,
        ..Prior::default()
    };
    file.seek(SeekFrom::Start(0))
        .map_err(|e| OutputError::io(path, e))?;
    let reader = BufReader::with_capacity(256 * 1024, io::Read::take(&mut file, complete));
    let mut first = true;
    let bad = |line: u64, why: &str| OutputError::NotResults {
        path: path.display().to_string(),
        reason: format!("line {line}: {why}"),
    };
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    let mut rec = csv::StringRecord::new();
    let mut n: u64 = 0;
    loop {
        match csv.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(bad(n + 1, &e.to_string())),
        }
        n += 1;
        if first {
            first = false;
            if rec.iter().collect::<Vec<_>>().join(",") != HEADER {
                return Err(bad(1, "the header is not kycshare's results header"));
            }
            continue;
        }
        if rec.len() != 11 {
            return Err(bad(n, "wrong number of fields"));
        }
        let record: u64 = rec[0]
            .parse()
            .map_err(|_| bad(n, "record is not a number"))?;
        let outcome = Outcome::parse(&rec[3]).ok_or_else(|| bad(n, "unknown outcome"))?;
        if record == 0 || record > (1 << 40) {
            return Err(bad(n, "record number out of range"));
        }
        let i = (record - 1) as usize;
        if prior.outcomes.len() <= i {
            prior.outcomes.resize(i + 1, 0);
            prior.ids.resize(i + 1, 0);
        }
        if prior.outcomes[i] != 0 {
            return Err(bad(n, &format!("record {record} appears twice")));
        }
        prior.outcomes[i] = 1 + outcome as u8;
        prior.ids[i] = id_hash(&rec[2]);
        prior.counts[outcome as usize] += 1;
        prior.rows += 1;
    }
    if repair && complete < len {
        cut_to(&file, path, complete)?;
    }
    Ok(prior)
}

/// True when the file's first line is kycshare's results header.
pub fn looks_like_results(path: &Path) -> bool {
    first_line_is(path, HEADER)
}

/// True when the file's first line is `header` (one of kycshare's files).
pub(crate) fn first_line_is(path: &Path, header: &str) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let mut first = String::new();
    BufReader::new(f).read_line(&mut first).is_ok() && first.trim_end() == header
}

/// Cuts a journal to `complete` bytes (a last line cut short by a kill),
/// durably.
pub(crate) fn cut_to(file: &File, path: &Path, complete: u64) -> Result<(), OutputError> {
    file.set_len(complete)
        .map_err(|e| OutputError::io(path, e))?;
    file.sync_data().map_err(|e| OutputError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn row(record: u64, outcome: Outcome) -> ResultRow<'static> {
        ResultRow {
            record,
            line: record + 1,
            identity_reference: "c-1",
            outcome,
            http_status: Some(202),
            attempts: 1,
            trace_id: "t",
            message: "a, \"quoted\" message",
            errors: "",
            latency_ms: Some(12),
            completed_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_158_400_123),
        }
    }

    #[test]
    fn writes_header_and_rows_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        let mut w = ResultsWriter::create(&p, false).unwrap();
        w.write(&row(1, Outcome::Accepted)).unwrap();
        w.write(&row(3, Outcome::Failed)).unwrap();
        w.finish().unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with(HEADER));
        assert!(text.contains(
            "1,2,c-1,accepted,202,1,t,\"a, \"\"quoted\"\" message\",,12,2025-11-26T12:00:00.123Z\n"
        ));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            ResultsWriter::create(&p, false).is_err(),
            "must not clobber"
        );

        let prior = read_prior(&p, false).unwrap();
        assert_eq!(prior.rows, 2);
        assert_eq!(prior.outcome(1), Some(Outcome::Accepted));
        assert_eq!(prior.outcome(2), None);
        assert_eq!(prior.outcome(3), Some(Outcome::Failed));
        assert!(prior.matches(1, "c-1"));
        assert!(!prior.matches(1, "c-2"));
    }

    #[test]
    fn a_line_cut_short_is_discarded_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        let mut w = ResultsWriter::create(&p, false).unwrap();
        w.write(&row(1, Outcome::Accepted)).unwrap();
        w.finish().unwrap();
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"2,3,c-2,accep").unwrap();
        let before = std::fs::metadata(&p).unwrap().len();
        let prior = read_prior(&p, true).unwrap();
        assert_eq!(prior.rows, 1);
        assert_eq!(prior.truncated_bytes, 13);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), before - 13);
        assert_eq!(prior.outcome(2), None);
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(&p, "a,b\n1,2\n").unwrap();
        assert!(matches!(
            read_prior(&p, false),
            Err(OutputError::NotResults { .. })
        ));
    }
}
