//! The run's events file, `export.results.events.jsonl` beside the results
//! file (mode 0600): one JSON object per line, appended as things happen,
//! for `kycshare status` and `kycshare report`:
//!
//! ```text
//! {"time":"2026-12-06T19:00:00.123Z","event":"started","pid":4242,"host":"worker-1","rate":"450/min","ratePerSecond":7.5}
//! {"time":"…","event":"paused","message":"Banxa not answering: sending paused, probing"}
//! {"time":"…","event":"resumed","pausedSeconds":252.4}
//! {"time":"…","event":"ended","exitCode":3,"reason":"…"}
//! ```
//!
//! The run holds an exclusive `flock` on it while it lasts: a second run
//! on the same results file is refused (it would send the same rows), and
//! `status` knows a run is going when it cannot take the lock. A killed
//! run releases it with its process. No personal data: times, counts and
//! stop reasons (already scrubbed) only.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{json, Value};

/// `export.results.csv` -> `export.results.events.jsonl`.
pub fn events_path(results: &Path) -> PathBuf {
    let name = results
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".csv").unwrap_or(&name);
    results.with_file_name(format!("{stem}.events.jsonl"))
}

/// The open events file of a running run (its lock held).
#[derive(Debug)]
pub struct EventLog {
    file: File,
    path: PathBuf,
}

/// Why the events file could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Another run holds the lock.
    Busy { path: PathBuf, holder: String },
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Busy { path, holder } => write!(
                f,
                "another kycshare run is writing these results ({holder}; its lock is on {}): two runs would send the same rows; wait for it, or see `kycshare status`",
                path.display()
            ),
            OpenError::Io { path, error } => write!(
                f,
                "cannot open the events file {}: {}",
                path.display(),
                crate::model::describe_io(error)
            ),
        }
    }
}

fn try_lock(file: &File, exclusive: bool) -> bool {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    } | libc::LOCK_NB;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    unsafe { libc::flock(file.as_raw_fd(), op) == 0 }
}

impl EventLog {
    /// Opens (creates) the events file of `results` and takes its lock.
    pub fn open(results: &Path) -> Result<EventLog, OpenError> {
        let path = events_path(results);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(&path)
            .map_err(|error| OpenError::Io {
                path: path.clone(),
                error,
            })?;
        if !try_lock(&file, true) {
            let holder = read_events(results)
                .iter()
                .rev()
                .find(|e| e["event"] == "started")
                .map(|e| {
                    format!(
                        "pid {} on {}, started {}",
                        e["pid"],
                        e["host"].as_str().unwrap_or("?"),
                        e["time"].as_str().unwrap_or("?")
                    )
                })
                .unwrap_or_else(|| "a run".into());
            return Err(OpenError::Busy { path, holder });
        }
        Ok(EventLog { file, path })
    }

    /// Empties the file: a run that starts afresh (not a resume) has no
    /// earlier events.
    pub fn start_afresh(&mut self) {
        if let Err(e) = self.file.set_len(0) {
            tracing::warn!(
                "could not empty the events file {}: {e}",
                self.path.display()
            );
        }
    }

    /// Appends one event (`fields` must be an object); a failure is
    /// logged, never fatal: the results file is what counts.
    pub fn write(&mut self, event: &str, fields: Value) {
        let mut obj = json!({
            "time": crate::model::rfc3339_millis(SystemTime::now()),
            "event": event,
        });
        if let (Some(o), Value::Object(f)) = (obj.as_object_mut(), fields) {
            o.extend(f);
        }
        let mut line = obj.to_string();
        line.push('\n');
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            tracing::warn!(
                "could not write to the events file {}: {e}",
                self.path.display()
            );
        }
    }
}

/// Whether a run holds the lock of `results`' events file right now.
pub fn is_running(results: &Path) -> bool {
    let Ok(file) = File::open(events_path(results)) else {
        return false;
    };
    !try_lock(&file, false)
}

/// The events of `results`' runs, oldest first; bad lines are skipped.
pub fn read_events(results: &Path) -> Vec<Value> {
    let Ok(file) = File::open(events_path(results)) else {
        return Vec::new();
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// The host name, for the `started` event (`?` when unknown).
pub use crate::model::host_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_at_a_time_and_events_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("e.results.csv");
        assert!(!is_running(&results));
        let mut log = EventLog::open(&results).unwrap();
        log.write("started", json!({"pid": 1, "host": "h"}));
        assert!(is_running(&results));
        let again = EventLog::open(&results).unwrap_err();
        assert!(again.to_string().contains("pid 1 on h"), "{again}");
        log.write("ended", json!({"exitCode": 0}));
        drop(log);
        assert!(!is_running(&results));
        let ev = read_events(&results);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1]["exitCode"], 0);
        assert_eq!(
            events_path(&results),
            dir.path().join("e.results.events.jsonl")
        );
    }
}
