//! The retry file: the input rows whose outcome is `failed`, with the
//! input's own header and columns, so `kycshare run X.retry.csv` retries
//! exactly them. Built in a temporary file beside the target and renamed
//! into place at the end (atomic); mode 0600; only written when non-empty.
//!
//! The temporary file has a fixed name (`.NAME.kycshare-tmp` beside the
//! target), so a run killed mid-way leaves at most one behind (it holds
//! customer rows), which the next run over the same target replaces.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::OutputError;

pub struct RetryWriter {
    path: PathBuf,
    tmp: PathBuf,
    w: Option<csv::Writer<BufWriter<File>>>,
    rows: u64,
}

/// The temporary file a retry file is built in.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "retry.csv".into());
    path.with_file_name(format!(".{name}.kycshare-tmp"))
}

impl RetryWriter {
    pub fn new(path: &Path, header: &csv::ByteRecord, delimiter: u8) -> Result<Self, OutputError> {
        let tmp = temp_path(path);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| OutputError::io(&tmp, e))?;
        // A file left by an earlier run kept its mode: make it 0600 too.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| OutputError::io(&tmp, e))?;
        }
        let mut w = csv::WriterBuilder::new()
            .delimiter(delimiter)
            .from_writer(BufWriter::new(file));
        w.write_byte_record(header)
            .map_err(|e| OutputError::io(path, e.into()))?;
        Ok(RetryWriter {
            path: path.to_path_buf(),
            tmp,
            w: Some(w),
            rows: 0,
        })
    }

    pub fn push(&mut self, record: &csv::ByteRecord) -> Result<(), OutputError> {
        self.rows += 1;
        let w = self.w.as_mut().expect("not finished");
        w.write_byte_record(record)
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
    pub fn finish(mut self) -> Result<bool, OutputError> {
        let path = self.path.clone();
        let w = self.w.take().expect("not finished");
        let file = w
            .into_inner()
            .map_err(|e| OutputError::io(&path, e.into_error()))?
            .into_inner()
            .map_err(|e| OutputError::io(&path, e.into_error()))?;
        if self.rows == 0 {
            drop(file);
            let _ = std::fs::remove_file(&self.tmp);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(OutputError::io(&path, e)),
            }
            return Ok(false);
        }
        file.sync_all().map_err(|e| OutputError::io(&path, e))?;
        std::fs::rename(&self.tmp, &path).map_err(|e| OutputError::io(&path, e))?;
        Ok(true)
    }
}

impl Drop for RetryWriter {
    /// Not finished (the run stopped on a write error): the half-built
    /// file is removed; `--resume` builds the retry file again.
    fn drop(&mut self) {
        if self.w.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
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
        assert!(!temp_path(&p).exists(), "no temporary file is left");
        let mut w = RetryWriter::new(&p, &header, b',').unwrap();
        w.push(&csv::ByteRecord::from(vec!["c-2", "x"])).unwrap();
        drop(w);
        assert!(!temp_path(&p).exists(), "an unfinished one is removed");
    }
}
