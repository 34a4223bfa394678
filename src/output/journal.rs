//! The output stage of `run`: one thread that owns the results journal and
//! the retry file, and records every final outcome as it happens.
//!
//! A write error (disk full, file-size limit, I/O error) stops the run at
//! once: the dispatcher stops sending, and every outcome that could not be
//! journaled is listed as "in doubt" so the operator knows exactly which
//! records to check before resuming.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;

use super::progress::Progress;
use super::retry::RetryWriter;
use super::summary::Reasons;
use super::{Counts, OutputError, ResultRow, ResultsWriter};
use crate::model::Outcome;
use crate::model::{Abort, AbortReason, Final, OutMsg};

/// What the journal thread reports at the end.
#[derive(Debug, Default)]
pub struct JournalReport {
    pub reasons: Reasons,
    /// Whether a retry file was written, and how many rows it holds.
    pub retry_written: bool,
    pub retry_rows: u64,
    /// Outcomes reached but not journaled because of a write error.
    pub in_doubt: Vec<(u64, String, Outcome)>,
    pub error: Option<String>,
    /// The ledger, handed back for `end_run`.
    pub ledger: Option<crate::ledger::Ledger>,
}

pub struct Journal {
    pub writer: ResultsWriter,
    pub retry: RetryWriter,
    pub counts: Arc<Counts>,
    pub progress: Progress,
    pub abort: Abort,
    /// With `--ledger`: every sent outcome is recorded (batched).
    pub ledger: Option<crate::ledger::Ledger>,
    /// The ledger failed a write: the run is stopping (no more rows are
    /// sent), the results file goes on recording what comes back.
    pub ledger_broken: bool,
}

/// The most rows written at once.
const BLOCK: usize = 1024;

/// The rows buffered since the last write: (record, identityReference,
/// outcome, sent).
#[derive(Default)]
struct Block {
    rows: Vec<(u64, String, crate::model::Outcome, bool)>,
    sent: bool,
}

impl Journal {
    /// Runs until every sender is gone. Blocking: call on its own thread.
    pub fn run(mut self, mut rx: mpsc::Receiver<OutMsg>) -> JournalReport {
        let mut report = JournalReport::default();
        let mut broken = false;
        let mut n: u64 = 0;
        // Rows are written in blocks: what arrived together, one write
        // when nothing more is waiting (or every BLOCK rows). A kill loses
        // at most the block being written, whose requests were in flight
        // a moment before; a failed write names exactly the rows of the
        // block that did not reach the file.
        let mut block = Block::default();
        loop {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Nothing waiting: write out what is buffered.
                    self.flush_block(&mut block, &mut broken, &mut report);
                    self.attempt(&mut broken, &mut report, |j| j.flush_ledger(false));
                    match rx.blocking_recv() {
                        Some(m) => m,
                        None => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            match msg {
                OutMsg::Tick => {
                    self.progress.show_counts(&self.counts);
                    self.flush_block(&mut block, &mut broken, &mut report);
                    self.attempt(&mut broken, &mut report, |j| {
                        j.writer.sync()?;
                        j.flush_ledger(true)
                    });
                }
                OutMsg::EarlierFailed(raw) => {
                    self.attempt(&mut broken, &mut report, |j| j.retry.push(&raw));
                }
                OutMsg::Final(f) => {
                    let waiting = rx.len();
                    self.record(f, waiting, &mut broken, &mut report, &mut n, &mut block);
                }
                OutMsg::Finals(batch) => {
                    let waiting = rx.len();
                    let last = batch.len().saturating_sub(1);
                    for (i, f) in batch.into_iter().enumerate() {
                        let more = waiting + (last - i);
                        self.record(f, more, &mut broken, &mut report, &mut n, &mut block);
                    }
                }
            }
        }
        self.progress.show_counts(&self.counts);
        self.flush_block(&mut block, &mut broken, &mut report);
        let finished = !broken;
        self.attempt(&mut broken, &mut report, |j| {
            j.writer.sync()?;
            j.flush_ledger(false)
        });
        if finished {
            report.retry_rows = self.retry.rows();
            match self.retry.finish() {
                Ok(w) => report.retry_written = w,
                Err(e) => {
                    report.error = Some(e.to_string());
                }
            }
        }
        report.ledger = self.ledger.take();
        report
    }

    /// Journals one final outcome (ledger first, then the results row,
    /// then the retry file). `more_waiting`: outcomes already queued
    /// behind this one (the ledger commits when there are none).
    fn record(
        &mut self,
        f: Final,
        more_waiting: usize,
        broken: &mut bool,
        report: &mut JournalReport,
        n: &mut u64,
        block: &mut Block,
    ) {
        if *broken {
            report
                .in_doubt
                .push((f.record, f.identity_reference.clone(), f.outcome));
            return;
        }
        let row = ResultRow {
            record: f.record,
            line: f.line,
            identity_reference: &f.identity_reference,
            outcome: f.outcome,
            http_status: f.http_status,
            attempts: f.attempts,
            trace_id: &f.trace_id,
            message: &f.message,
            errors: &f.errors,
            latency_ms: f.latency_ms,
            completed_at: f.completed_at,
        };
        // The ledger first: when nothing else is waiting (a
        // nightly run's pace) its commit lands before the
        // journal row, so no kill can leave an accepted row
        // journaled but unknown to the ledger. Under load the
        // update joins a batch (at most 64).
        let mut res = Ok(());
        if f.attempts > 0 && !self.ledger_broken {
            if let (Some(l), Some(fp)) = (&mut self.ledger, f.fingerprint) {
                let mut lr = l.record(crate::ledger::Update {
                    identity_reference: f.identity_reference.clone(),
                    fingerprint: fp,
                    outcome: f.outcome,
                    http_status: f.http_status,
                    trace_id: f.trace_id.clone(),
                    attempts: f.attempts,
                    at: f.completed_at,
                });
                if lr.is_ok() && more_waiting == 0 {
                    lr = l.flush();
                }
                // The results row is written all the same: the results
                // file is what `resume` reads, and it still works.
                if let Err(e) = lr {
                    self.ledger_failed(e);
                }
            }
        }
        if res.is_ok() {
            res = self.writer.write_buffered(&row);
        }
        if res.is_ok() {
            if let Some(raw) = &f.raw {
                res = self.retry.push(raw);
            }
        }
        if res.is_ok() {
            block.rows.push((
                f.record,
                f.identity_reference.clone(),
                f.outcome,
                f.attempts > 0,
            ));
            block.sent |= f.attempts > 0;
        }
        if let Err(e) = res {
            *broken = true;
            report
                .in_doubt
                .push((f.record, f.identity_reference.clone(), f.outcome));
            self.fail(report, e);
            return;
        }
        self.counts.add(f.outcome, 1);
        if !matches!(
            f.outcome,
            Outcome::Accepted | Outcome::Skipped | Outcome::Validated
        ) {
            // `-v`: every record not accepted, with its reason (messages
            // are scrubbed of the row's private values upstream); the
            // fields in JSON only (the text says it all).
            if !crate::logging::is_json() {
                tracing::info!(
                    "record {} (line {}) {}: {}",
                    f.record,
                    f.line,
                    f.outcome.as_str(),
                    f.message
                );
            } else {
                tracing::info!(
                    record = f.record,
                    line = f.line,
                    identity_reference = %f.identity_reference,
                    outcome = f.outcome.as_str(),
                    http_status = f.http_status,
                    attempts = f.attempts,
                    "record {} (line {}) {}: {}",
                    f.record,
                    f.line,
                    f.outcome.as_str(),
                    f.message
                );
            }
        }
        report.reasons.add_final(&f);
        self.progress.inc(1);
        *n += 1;
        if n.is_multiple_of(16) {
            self.progress.show_counts(&self.counts);
        }
        // Sent rows go out as soon as nothing more is waiting; rows of
        // records never sent may wait for a full block (losing one to a
        // kill only means it is looked at again on --resume).
        if (block.sent && more_waiting == 0) || block.rows.len() >= BLOCK {
            self.flush_block(block, broken, report);
        }
    }

    /// Writes the block to the file. On failure the rows that did not
    /// reach it are in doubt (the sent ones) and the journal breaks.
    fn flush_block(&mut self, block: &mut Block, broken: &mut bool, report: &mut JournalReport) {
        if block.rows.is_empty() || *broken {
            block.rows.clear();
            block.sent = false;
            return;
        }
        if let Err(e) = self.writer.flush_row() {
            let lost = self.writer.rows_not_written().min(block.rows.len());
            let from = block.rows.len() - lost;
            for (record, id, outcome, sent) in block.rows.drain(from..) {
                if sent {
                    report.in_doubt.push((record, id, outcome));
                }
            }
            *broken = true;
            self.fail(report, e);
        }
        block.rows.clear();
        block.sent = false;
    }

    /// Runs one write unless the journal is already broken; a failure breaks
    /// it (and stops the run).
    fn attempt(
        &mut self,
        broken: &mut bool,
        report: &mut JournalReport,
        write: impl FnOnce(&mut Self) -> Result<(), OutputError>,
    ) {
        if *broken {
            return;
        }
        if let Err(e) = write(self) {
            *broken = true;
            self.fail(report, e);
        }
    }

    /// Commits the ledger's pending batch: now, or only if it is due. A
    /// failure stops the run ([`Journal::ledger_failed`]) but not the
    /// results file.
    fn flush_ledger(&mut self, only_if_due: bool) -> Result<(), OutputError> {
        if self.ledger_broken {
            return Ok(());
        }
        let r = match &mut self.ledger {
            Some(l) if only_if_due => l.flush_if_due(),
            Some(l) => l.flush(),
            None => Ok(()),
        };
        if let Err(e) = r {
            self.ledger_failed(e);
        }
        Ok(())
    }

    /// The ledger cannot record: stop sending (a row sent now could not be
    /// recorded), keep journaling what comes back. The batch that failed
    /// is not in the ledger: the next run sends those rows again.
    fn ledger_failed(&mut self, e: crate::ledger::LedgerError) {
        self.ledger_broken = true;
        let msg = e.to_string();
        tracing::error!(error = %msg, "ledger write failed: no more rows are sent");
        self.abort.trigger(AbortReason::Ledger(msg));
    }

    fn fail(&self, report: &mut JournalReport, e: OutputError) {
        let msg = e.to_string();
        tracing::error!(error = %msg, "results journal write failed");
        self.abort.trigger(AbortReason::Storage(msg.clone()));
        report.error = Some(msg);
    }
}

/// Sends a tick once a second so the journal syncs even when idle.
pub async fn ticker(tx: mpsc::Sender<OutMsg>, abort_done: tokio_util::sync::CancellationToken) {
    let mut t = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = t.tick() => {
                if tx.send(OutMsg::Tick).await.is_err() {
                    break;
                }
            }
            _ = abort_done.cancelled() => break,
        }
    }
}

/// A `Final` for a record that was never sent (invalid, duplicate).
pub fn unsent(record: u64, line: u64, id: &str, outcome: Outcome, message: String) -> Final {
    Final {
        record,
        line,
        identity_reference: id.to_string(),
        outcome,
        http_status: None,
        attempts: 0,
        trace_id: String::new(),
        message,
        errors: String::new(),
        latency_ms: None,
        completed_at: SystemTime::now(),
        raw: None,
        fingerprint: None,
        problems: Vec::new(),
        kyc_status: None,
    }
}
