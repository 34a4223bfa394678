//! The run lock: an exclusive `flock` on `FILE.lock`, which holds the pid and
//! start time of the run holding it (see "One run at a time" in the module
//! doc of [`crate::ledger`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use super::{io_err, stamp, LedgerError};

/// Who holds a ledger's lock, as written in `FILE.lock`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LockHolder {
    pub pid: Option<u32>,
    /// RFC 3339 UTC.
    pub started: Option<String>,
    /// The holder's host (PostgreSQL ledgers: runs may be on any host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = match &self.host {
            Some(h) => format!(" on {h}"),
            None => String::new(),
        };
        match (&self.pid, &self.started) {
            (Some(p), Some(s)) => write!(f, "pid {p}{on}, started {s}"),
            (Some(p), None) => write!(f, "pid {p}{on}"),
            _ => f.write_str("holder unknown"),
        }
    }
}

/// `FILE.lock` beside the ledger.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

fn read_holder(lock: &mut File) -> LockHolder {
    let mut s = String::new();
    let _ = lock.seek(SeekFrom::Start(0));
    let _ = lock.take(256).read_to_string(&mut s);
    parse_holder(&s)
}

fn parse_holder(s: &str) -> LockHolder {
    let mut h = LockHolder::default();
    for line in s.lines() {
        if let Some(p) = line.strip_prefix("pid ") {
            h.pid = p.trim().parse().ok();
        } else if let Some(t) = line.strip_prefix("started ") {
            h.started = Some(t.trim().to_string());
        }
    }
    h
}

/// Takes the run lock on `FILE.lock`, at once or not at all.
pub(super) fn take_lock(path: &Path) -> Result<File, LedgerError> {
    let lp = lock_path(path);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lp)
        .map_err(io_err(&lp, "cannot open the lock file"))?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(LedgerError::Locked {
                path: path.display().to_string(),
                holder: read_holder(&mut f),
            });
        }
        return Err(io_err(&lp, "cannot lock the lock file")(e));
    }
    let me = format!(
        "pid {}\nstarted {}\n",
        std::process::id(),
        stamp(SystemTime::now())
    );
    f.set_len(0)
        .and_then(|_| f.seek(SeekFrom::Start(0)))
        .and_then(|_| f.write_all(me.as_bytes()))
        .map_err(io_err(&lp, "cannot write the lock file"))?;
    Ok(f)
}

/// The run holding the ledger, going by the lock file (written by the
/// holder, emptied when it closes) and whether that process is alive. Reads
/// only: taking the lock, even for a moment, could turn a run away.
pub fn in_use_by(path: &Path) -> Option<LockHolder> {
    let s = std::fs::read_to_string(lock_path(path)).ok()?;
    let h = parse_holder(&s);
    let pid = h.pid?;
    crate::model::process_alive(pid).then_some(h)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::ledger::test_support::fresh;
    use crate::ledger::{Ledger, LedgerView};

    #[test]
    fn second_open_fails_at_once_with_the_holder() {
        let (_d, p) = fresh();
        let l = Ledger::open(&p).unwrap();
        let started = Instant::now();
        let e = Ledger::open(&p).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        match &e {
            LedgerError::Locked { holder, .. } => {
                assert_eq!(holder.pid, Some(std::process::id()));
                assert!(holder.started.is_some());
            }
            other => panic!("{other}"),
        }
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "ledger {} is in use by another kycshare run (pid {}, started 20",
                p.display(),
                std::process::id()
            )),
            "{msg}"
        );
        assert!(msg.contains("wait for it to finish"), "{msg}");
        // Readable while locked.
        assert_eq!(
            LedgerView::open(&p).unwrap().report().unwrap().in_use_by,
            Some(parse_holder(
                &std::fs::read_to_string(lock_path(&p)).unwrap()
            ))
        );
        drop(l);
        // The lock file stays, emptied; the next open takes it.
        assert_eq!(std::fs::read_to_string(lock_path(&p)).unwrap(), "");
        assert_eq!(
            LedgerView::open(&p).unwrap().report().unwrap().in_use_by,
            None
        );
        let _l = Ledger::open(&p).unwrap();
    }

    #[test]
    fn stale_lock_file_is_taken() {
        let (_d, p) = fresh();
        std::fs::write(
            lock_path(&p),
            "pid 999999999\nstarted 2020-01-01T00:00:00.000Z\n",
        )
        .unwrap();
        let _l = Ledger::open(&p).unwrap();
        let h = parse_holder(&std::fs::read_to_string(lock_path(&p)).unwrap());
        assert_eq!(h.pid, Some(std::process::id()));
    }
}
