//! The output stage: the results journal, the retry file, the summary and
//! the progress bar.
//!
//! Not for: deciding outcomes (that is `dispatch` and `input`); this stage
//! only records them.

pub mod events;
pub mod journal;
pub mod metrics;
pub mod metrics_server;
pub mod progress;
pub mod results;
pub mod retry;
pub mod summary;
pub mod verification;

use std::path::Path;

pub use results::{ResultRow, ResultsWriter};
pub use summary::{Counts, Summary};

/// Problems with the files kycshare writes.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}: {reason}")]
    Io {
        path: String,
        reason: String,
        kind: std::io::ErrorKind,
    },
    #[error("{path} exists: it holds {what}. {advice}")]
    Exists {
        path: String,
        what: String,
        advice: String,
    },
    #[error("{path} is not a kycshare results file ({reason}); use --results to write elsewhere")]
    NotResults { path: String, reason: String },
    #[error("{path} is not a kycshare verification file ({reason}); give another --output, or --force to replace it")]
    NotVerification { path: String, reason: String },
}

impl OutputError {
    pub fn io(path: &Path, e: std::io::Error) -> OutputError {
        OutputError::Io {
            path: path.display().to_string(),
            kind: e.kind(),
            reason: crate::model::describe_io(&e),
        }
    }
}

/// Checks before anything is sent that `path` can be created or written:
/// its folder exists and is writable. Does not leave a file behind.
pub fn check_writable(path: &Path) -> Result<(), OutputError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if path.is_dir() {
        return Err(OutputError::Io {
            path: path.display().to_string(),
            reason: "is a directory".into(),
            kind: std::io::ErrorKind::IsADirectory,
        });
    }
    if !dir.is_dir() {
        return Err(OutputError::Io {
            path: path.display().to_string(),
            reason: format!(
                "its folder {} does not exist: create it (mkdir -p {}) or choose another path",
                dir.display(),
                dir.display()
            ),
            kind: std::io::ErrorKind::NotFound,
        });
    }
    tempfile::Builder::new()
        .prefix(".kycshare-check")
        .tempfile_in(&dir)
        .map(drop)
        .map_err(|e| OutputError::io(path, e))
}
