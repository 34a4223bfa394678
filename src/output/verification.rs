//! The verification file of `kycshare verify` (SPEC "Closed loop:
//! verification"): one CSV row per identity checked, appended as answers
//! come, flushed per block and synced at least once a second, mode 0600:
//!
//! ```text
//! record,identityReference,kycStatus,httpStatus,checkedAt,message
//! ```
//!
//! `kycStatus` is Banxa's `kyc.status` as it came (`VERIFIED`, `PENDING`,
//! …), `not_found` when Banxa answered 404, `unknown` when the answer had
//! none or no answer came (the `message` says which). It is also the
//! journal `verify --resume` reads: the records already in it are not
//! checked again.
//!
//! Not for: deciding what a status means (only `VERIFIED` is documented
//! by Banxa; everything else is written as it comes).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use super::OutputError;
use crate::model::{rfc3339_millis, Final, Outcome};

/// The header row, exactly as the contract gives it.
pub const HEADER: &str = "record,identityReference,kycStatus,httpStatus,checkedAt,message";

/// Banxa's one documented status: the identity is verified.
pub const VERIFIED: &str = "VERIFIED";
/// Banxa answered 404: it does not know the identity.
pub const NOT_FOUND: &str = "not_found";
/// The answer carried no `kyc.status`, or no answer came.
pub const UNKNOWN: &str = "unknown";

/// The most distinct statuses counted by name; beyond, a server sending
/// a new value for every identity cannot grow the counts without bound.
pub const MAX_STATUSES: usize = 32;
/// Where statuses beyond [`MAX_STATUSES`] are counted.
pub const OTHER_STATUSES: &str = "other";

/// What a check found for one identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    pub record: u64,
    pub identity_reference: String,
    pub kyc_status: String,
    pub http_status: Option<u16>,
    pub checked_at: SystemTime,
    pub message: String,
    /// True when Banxa answered about the identity (a status or a 404):
    /// what the ledger records. False when no usable answer came.
    pub answered: bool,
}

impl Verification {
    /// The row for a check's final outcome (from the dispatcher).
    pub fn of(f: Final) -> Verification {
        let (kyc_status, answered, message) = match (f.outcome, f.http_status) {
            (Outcome::Accepted, _) => match f.kyc_status {
                Some(s) => (s, true, String::new()),
                None => (
                    UNKNOWN.to_string(),
                    true,
                    "Banxa's answer has no kyc.status".to_string(),
                ),
            },
            (Outcome::Rejected, Some(404)) => (
                NOT_FOUND.to_string(),
                true,
                if f.message.is_empty() {
                    "Banxa does not know this identity (404)".to_string()
                } else {
                    format!("Banxa does not know this identity (404): {}", f.message)
                },
            ),
            (_, status) => {
                let said = if f.message.is_empty() {
                    status.map(|s| format!("HTTP {s}")).unwrap_or_default()
                } else {
                    f.message
                };
                (
                    UNKNOWN.to_string(),
                    false,
                    format!("{COULD_NOT_CHECK}{said}"),
                )
            }
        };
        Verification {
            record: f.record,
            identity_reference: f.identity_reference,
            kyc_status,
            http_status: f.http_status,
            checked_at: f.completed_at,
            message,
            answered,
        }
    }

    pub fn is_verified(&self) -> bool {
        self.kyc_status == VERIFIED
    }
}

/// Counts by status, bounded (see [`MAX_STATUSES`]); shared between the
/// writer and the progress lines.
#[derive(Debug, Default)]
pub struct StatusCounts {
    by: Mutex<BTreeMap<String, u64>>,
}

impl StatusCounts {
    pub fn add(&self, status: &str, n: u64) {
        let mut by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = by.get_mut(status) {
            *c += n;
        } else if by.len() < MAX_STATUSES || [VERIFIED, UNKNOWN, NOT_FOUND].contains(&status) {
            by.insert(status.to_string(), n);
        } else {
            *by.entry(OTHER_STATUSES.to_string()).or_default() += n;
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.by.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn get(&self, status: &str) -> u64 {
        self.snapshot().get(status).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }
}

/// Appends verification rows (mode 0600); [`flush`](Self::flush) writes
/// what is buffered, [`sync`](Self::sync) makes it durable.
pub struct VerificationWriter {
    path: PathBuf,
    w: csv::Writer<File>,
    last_sync: Instant,
    dirty: bool,
}

impl VerificationWriter {
    /// A new file with its header; an existing one is an error unless
    /// `replace`.
    pub fn create(path: &Path, replace: bool) -> Result<VerificationWriter, OutputError> {
        let mut opts = OpenOptions::new();
        opts.write(true).mode(0o600);
        if replace {
            opts.create(true).truncate(true);
        } else {
            opts.create_new(true);
        }
        let mut file = opts.open(path).map_err(|e| OutputError::io(path, e))?;
        writeln!(file, "{HEADER}").map_err(|e| OutputError::io(path, e))?;
        Ok(VerificationWriter::over(path, file))
    }

    /// The file of an earlier check, to go on appending (`--resume`).
    pub fn append(path: &Path) -> Result<VerificationWriter, OutputError> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| OutputError::io(path, e))?;
        Ok(VerificationWriter::over(path, file))
    }

    fn over(path: &Path, file: File) -> VerificationWriter {
        VerificationWriter {
            path: path.to_path_buf(),
            w: csv::WriterBuilder::new()
                .has_headers(false)
                .buffer_capacity(64 * 1024)
                .from_writer(file),
            last_sync: Instant::now(),
            dirty: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Buffers one row (written by the next [`flush`](Self::flush)).
    pub fn push(&mut self, v: &Verification) -> Result<(), OutputError> {
        let mut record = itoa::Buffer::new();
        let mut status = itoa::Buffer::new();
        let http = v.http_status.map(|s| status.format(s).to_string());
        self.w
            .write_record([
                record.format(v.record),
                v.identity_reference.as_str(),
                v.kyc_status.as_str(),
                http.as_deref().unwrap_or(""),
                rfc3339_millis(v.checked_at).as_str(),
                v.message.as_str(),
            ])
            .map_err(|e| self.err(e.into()))?;
        self.dirty = true;
        Ok(())
    }

    /// Writes what is buffered; syncs when the last sync is a second old.
    pub fn flush(&mut self) -> Result<(), OutputError> {
        self.w.flush().map_err(|e| OutputError::io(&self.path, e))?;
        if self.last_sync.elapsed() >= super::results::SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), OutputError> {
        self.w.flush().map_err(|e| OutputError::io(&self.path, e))?;
        if self.dirty {
            self.w
                .get_ref()
                .sync_data()
                .map_err(|e| OutputError::io(&self.path, e))?;
            self.dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn err(&self, e: io::Error) -> OutputError {
        OutputError::io(&self.path, e)
    }
}

/// What an earlier check of the same run holds (`verify --resume`).
#[derive(Debug, Default)]
pub struct PriorChecks {
    /// The records already checked, with a hash of their identityReference
    /// ([`id_hash`]) to tell the file of another run.
    pub records: HashMap<u64, u64>,
    /// Their statuses.
    pub counts: BTreeMap<String, u64>,
    /// Bytes of a last line cut short by a kill (discarded).
    pub truncated_bytes: u64,
    /// Rows that got no answer ("could not check"), taken out of the file
    /// so that the resumed check asks again.
    pub unanswered: u64,
    /// The earliest `checkedAt` in the file (RFC 3339, sorts as text).
    pub earliest: Option<String>,
}

/// The hash of an identityReference that [`PriorChecks::records`] keeps.
pub fn id_hash(identity_reference: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(identity_reference.as_bytes())
}

/// True for a row written when no usable answer came.
fn unanswered(kyc_status: &str, message: &str) -> bool {
    kyc_status == UNKNOWN && message.starts_with(COULD_NOT_CHECK)
}

const COULD_NOT_CHECK: &str = "could not check: ";

/// Reads a verification file. With `repair` (a resume), a last line left
/// short by a kill is cut, and the rows that got no answer are taken out
/// (the file is rewritten, atomically) so that they are asked again and
/// every record keeps one row.
pub fn read_prior_checks(path: &Path, repair: bool) -> Result<PriorChecks, OutputError> {
    let bad = |line: u64, why: &str| OutputError::NotVerification {
        path: path.display().to_string(),
        reason: format!("line {line}: {why}"),
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(repair)
        .open(path)
        .map_err(|e| OutputError::io(path, e))?;
    let (len, complete) = super::results::complete_len(&mut file, path)?;
    let mut prior = PriorChecks {
        truncated_bytes: len - complete,
        ..PriorChecks::default()
    };
    file.seek(SeekFrom::Start(0))
        .map_err(|e| OutputError::io(path, e))?;
    let reader = BufReader::new(io::Read::take(&mut file, complete));
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    let mut rec = csv::StringRecord::new();
    let mut n = 0u64;
    let counts = StatusCounts::default();
    loop {
        match csv.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(bad(n + 1, &e.to_string())),
        }
        n += 1;
        if n == 1 {
            if rec.iter().collect::<Vec<_>>().join(",") != HEADER {
                return Err(bad(1, "the header is not kycshare's verification header"));
            }
            continue;
        }
        if rec.len() != 6 {
            return Err(bad(n, "wrong number of fields"));
        }
        let record: u64 = rec[0]
            .parse()
            .map_err(|_| bad(n, "record is not a number"))?;
        if unanswered(&rec[2], &rec[5]) {
            prior.unanswered += 1;
            continue;
        }
        if prior.records.insert(record, id_hash(&rec[1])).is_some() {
            return Err(bad(n, &format!("record {record} appears twice")));
        }
        counts.add(&rec[2], 1);
        let at = &rec[4];
        if prior.earliest.as_deref().is_none_or(|e| at < e) {
            prior.earliest = Some(at.to_string());
        }
    }
    prior.counts = counts.snapshot();
    drop(csv);
    if repair && prior.unanswered > 0 {
        // A second pass writes the rows kept into a new file beside it,
        // renamed over it: a kill leaves the old file or the new one.
        file.seek(SeekFrom::Start(0))
            .map_err(|e| OutputError::io(path, e))?;
        // A fixed name beside it: a kill mid-way leaves at most this file,
        // which the next resume replaces.
        let tmp_path = super::retry::temp_path(path);
        let tmp = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp_path)
            .map_err(|e| OutputError::io(&tmp_path, e))?;
        let mut w = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(io::BufWriter::new(&tmp));
        let mut r = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(BufReader::new(io::Read::take(&mut file, complete)));
        w.write_record(HEADER.split(','))
            .map_err(|e| OutputError::io(path, e.into()))?;
        while r
            .read_record(&mut rec)
            .map_err(|e| OutputError::io(path, e.into()))?
        {
            if !unanswered(&rec[2], &rec[5]) {
                w.write_record(&rec)
                    .map_err(|e| OutputError::io(path, e.into()))?;
            }
        }
        w.flush().map_err(|e| OutputError::io(path, e))?;
        drop(w);
        tmp.sync_all().map_err(|e| OutputError::io(&tmp_path, e))?;
        std::fs::rename(&tmp_path, path).map_err(|e| OutputError::io(path, e))?;
    } else if repair && complete < len {
        super::results::cut_to(&file, path, complete)?;
    }
    Ok(prior)
}

/// True when the file starts with the verification header.
pub fn looks_like_verification(path: &Path) -> bool {
    super::results::first_line_is(path, HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn final_of(outcome: Outcome, status: Option<u16>, kyc: Option<&str>, message: &str) -> Final {
        let mut f = crate::output::journal::unsent(3, 4, "c-3", outcome, message.to_string());
        f.http_status = status;
        f.attempts = 1;
        f.kyc_status = kyc.map(str::to_string);
        f
    }

    #[test]
    fn statuses_from_answers() {
        let v = Verification::of(final_of(Outcome::Accepted, Some(200), Some("VERIFIED"), ""));
        assert!(v.is_verified() && v.answered);
        let v = Verification::of(final_of(Outcome::Accepted, Some(200), None, ""));
        assert_eq!((v.kyc_status.as_str(), v.answered), (UNKNOWN, true));
        let v = Verification::of(final_of(
            Outcome::Rejected,
            Some(404),
            None,
            "Identity not found.",
        ));
        assert_eq!(v.kyc_status, NOT_FOUND);
        assert!(v.message.contains("Identity not found."), "{}", v.message);
        let v = Verification::of(final_of(
            Outcome::Failed,
            Some(503),
            None,
            "gave up after 5 attempts: HTTP 503",
        ));
        assert_eq!((v.kyc_status.as_str(), v.answered), (UNKNOWN, false));
        assert!(
            v.message.starts_with("could not check: gave up"),
            "{}",
            v.message
        );
        let v = Verification::of(final_of(Outcome::Rejected, Some(400), None, ""));
        assert_eq!(
            (v.kyc_status.as_str(), v.message.as_str()),
            (UNKNOWN, "could not check: HTTP 400")
        );
    }

    #[test]
    fn status_counts_are_bounded() {
        let c = StatusCounts::default();
        for i in 0..1000 {
            c.add(&format!("S{i}"), 1);
        }
        let s = c.snapshot();
        assert_eq!(s.len(), MAX_STATUSES + 1);
        assert_eq!(s[OTHER_STATUSES], 1000 - MAX_STATUSES as u64);
        assert_eq!(c.total(), 1000);
    }

    #[test]
    fn written_then_read_back_with_a_cut_last_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.verify.csv");
        let mut w = VerificationWriter::create(&p, false).unwrap();
        for (r, s) in [(1, "VERIFIED"), (2, "PENDING"), (5, "VERIFIED")] {
            w.push(&Verification {
                record: r,
                identity_reference: format!("c-{r}"),
                kyc_status: s.into(),
                http_status: Some(200),
                checked_at: SystemTime::now(),
                message: "a, \"quoted\" message".into(),
                answered: true,
            })
            .unwrap();
        }
        w.sync().unwrap();
        drop(w);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(looks_like_verification(&p));
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"6,c-6,VERI").unwrap();
        let prior = read_prior_checks(&p, true).unwrap();
        let mut got: Vec<u64> = prior.records.keys().copied().collect();
        got.sort();
        assert_eq!(got, [1, 2, 5]);
        assert_eq!(prior.records[&2], id_hash("c-2"));
        assert_eq!(prior.counts["VERIFIED"], 2);
        assert_eq!(prior.truncated_bytes, 10);
        assert!(std::fs::read_to_string(&p).unwrap().ends_with('\n'));
        assert!(
            VerificationWriter::create(&p, false).is_err(),
            "no silent replace"
        );
    }
}
