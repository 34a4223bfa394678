//! The retry file: the input rows whose outcome is `failed`, with the
//! input's own header and columns, so `kycshare run X.retry.csv` retries
//! exactly them. Built in a temporary file beside the target and renamed
//! into place at the end (atomic); mode 0600; only written when non-empty.

use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::OutputError;

pub struct RetryWriter {
    path: PathBuf,
    w: csv::Writer<NamedTempFile>,
    rows: u64,
}

impl RetryWriter {
    pub fn new(path: &Path, header: &csv::ByteRecord, delimiter: u8) -> Result<Self, OutputError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        // NamedTempFile is created with mode 0600.
        let tmp = tempfile::Builder::new()
            .prefix(".kycshare-retry")
            .tempfile_in(dir)
            .map_err(|e| OutputError::io(path, e))?;
        let mut w = csv::WriterBuilder::new()
            .delimiter(delimiter)
            .from_writer(tmp);
        w.write_byte_record(header)
            .map_err(|e| OutputError::io(path, e.into()))?;
        Ok(RetryWriter {
            path: path.to_path_buf(),
            w,
            rows: 0,
        })
    }

    pub fn push(&mut self, record: &csv::ByteRecord) -> Result<(), OutputError> {
        self.rows += 1;
        self.w
            .write_byte_record(record)
            .map_err(|e| OutputError::io(&self.path, e.into()))
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file into place when it holds rows. With none, nothing is
    /// written, and a retry file left by an earlier run at the same path is
    /// removed (it no longer describes the results). Returns whether a file
    /// was written.
    pub fn finish(self) -> Result<bool, OutputError> {
        let path = self.path.clone();
        let tmp = self
            .w
            .into_inner()
            .map_err(|e| OutputError::io(&path, e.into_error()))?;
        if self.rows == 0 {
            drop(tmp);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(OutputError::io(&path, e)),
            }
            return Ok(false);
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| OutputError::io(&path, e))?;
        tmp.persist(&path)
            .map_err(|e| OutputError::io(&path, e.error))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_atomically_private_and_only_when_non_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.retry.csv");
        let header = csv::ByteRecord::from(vec!["identityReference", "email"]);
        let mut w = RetryWriter::new(&p, &header, b';').unwrap();
        w.push(&csv::ByteRecord::from(vec!["c-1", "a;b@x.com"]))
            .unwrap();
        assert!(!p.exists(), "nothing in place before finish");
        assert!(w.finish().unwrap());
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "identityReference;email\nc-1;\"a;b@x.com\"\n"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let w = RetryWriter::new(&p, &header, b',').unwrap();
        assert!(!w.finish().unwrap());
        assert!(!p.exists(), "a stale retry file is removed");
    }
}
