//! The feed: records in, jobs and the outcomes that need no request out.
//! It runs on its own thread (CSV parsing is blocking work) and skips what
//! an earlier run of the same results file already finished (`--resume`)
//! and what the ledger says Banxa already has (`--ledger`).

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::dispatch::{Job, Payload};
use crate::input::{Input, Item, Verdict};
use crate::ledger::LedgerReader;
use crate::model::{problems_message, Abort, AbortReason, Final, OutMsg, Outcome};
use crate::output::journal;
use crate::output::progress::Progress;
use crate::output::results::Prior;

/// What the feed read.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// The last record number read.
    pub records: u64,
    /// Records whose outcome an earlier run already wrote (`--resume`).
    pub earlier_done: u64,
    /// Records handed to the dispatcher to be sent.
    pub to_send: u64,
    /// True when `--limit` stopped the reading with records left.
    pub limited: bool,
}

/// The most jobs (or outcomes) handed over at once.
pub const BATCH: usize = 256;

/// Hands jobs and outcomes over in batches: one channel operation (and at
/// most one wake-up) per batch instead of per record. A batch goes as soon
/// as it is full, or at once when the dispatcher has nothing left to do,
/// so batching never delays a slow run.
struct Batcher<'a> {
    jobs_tx: &'a mpsc::Sender<Vec<Job>>,
    out: &'a mpsc::Sender<OutMsg>,
    jobs: Vec<Job>,
    finals: Vec<Final>,
}

impl Batcher<'_> {
    fn job(&mut self, job: Job) -> Result<(), ()> {
        self.jobs.push(job);
        let idle = self.jobs_tx.capacity() == self.jobs_tx.max_capacity();
        if self.jobs.len() >= BATCH || idle {
            self.send_jobs()?;
        }
        Ok(())
    }

    fn send_jobs(&mut self) -> Result<(), ()> {
        // The outcomes first: the job channel may block for a long time
        // at a slow rate, and they should not wait for it.
        self.send_finals()?;
        if self.jobs.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.jobs, Vec::with_capacity(BATCH));
        self.jobs_tx.blocking_send(batch).map_err(|_| ())
    }

    fn unsent(&mut self, f: Final) -> Result<(), ()> {
        self.finals.push(f);
        if self.finals.len() >= BATCH {
            self.send_finals()?;
        }
        Ok(())
    }

    fn send_finals(&mut self) -> Result<(), ()> {
        if self.finals.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.finals);
        self.out
            .blocking_send(OutMsg::Finals(batch))
            .map_err(|_| ())
    }
}

/// What the feed skips, and where it stops.
pub struct Rules<'a> {
    /// `--limit N`: stop after N records handed over to be sent.
    pub limit: Option<u64>,
    /// `--resume`: the outcomes an earlier run wrote.
    pub prior: Option<&'a Prior>,
    /// `--ledger`: what Banxa already has.
    pub ledger: Option<&'a LedgerReader>,
}

pub fn read_jobs(
    input: &mut Input,
    rules: Rules<'_>,
    jobs: &mpsc::Sender<Vec<Job>>,
    out: &mpsc::Sender<OutMsg>,
    abort: &Abort,
    progress: &Progress,
) -> Result<ReadReport, crate::input::InputError> {
    let mut batch = Batcher {
        jobs_tx: jobs,
        out,
        jobs: Vec::with_capacity(BATCH),
        finals: Vec::new(),
    };
    let result = feed(input, rules, &mut batch, abort, progress);
    // What is batched goes even when reading failed: those records were
    // read and decided. After an abort the dispatcher takes no more jobs.
    if !abort.is_triggered() {
        let _ = batch.send_jobs();
    }
    let _ = batch.send_finals();
    result
}

fn feed(
    input: &mut Input,
    Rules {
        limit,
        prior,
        ledger,
    }: Rules<'_>,
    batch: &mut Batcher<'_>,
    abort: &Abort,
    progress: &Progress,
) -> Result<ReadReport, crate::input::InputError> {
    let out = batch.out;
    let mut report = ReadReport::default();
    // The bar's total, estimated from how far into the file the records
    // are: no second pass over the input.
    let size = input.size();
    let mut body = Vec::with_capacity(512);
    let mut dup = String::new();
    loop {
        if abort.is_triggered() {
            break;
        }
        if limit.is_some_and(|n| report.to_send >= n) {
            // The canary has been sent: the rest waits for `resume`. The
            // next record is peeked at only to know whether any is left.
            report.limited = input.next_item()?.is_some();
            break;
        }
        if report.records.is_multiple_of(1024) {
            progress.estimate_total(report.records, input.bytes_read(), size);
        }
        let Some(item) = input.next_item()? else {
            // The whole input is read: the total is known.
            progress.set_total(report.records);
            break;
        };
        report.records = item.record;
        if let Some(p) = prior {
            if let Some(o) = p.outcome(item.record) {
                if !p.matches(item.record, item.identity_reference) {
                    abort.trigger(AbortReason::Input(format!(
                        "the results file does not belong to this input: record {} (line {}) is `{}` in the input but something else in the results file; use the same input, or --results for a new file",
                        item.record, item.line, item.identity_reference
                    )));
                    break;
                }
                report.earlier_done += 1;
                if o == Outcome::Failed
                    && out
                        .blocking_send(OutMsg::EarlierFailed(item.raw.to_byte_record()))
                        .is_err()
                {
                    break;
                }
                continue;
            }
        }
        let sent = match &item.verdict {
            Verdict::Invalid(problems) => {
                let mut f = unsent(&item, Outcome::Invalid, problems_message(problems));
                f.problems = problems.clone();
                batch.unsent(f)
            }
            Verdict::Duplicate { of } => {
                crate::input::duplicate_message(*of, &mut dup);
                batch.unsent(unsent(&item, Outcome::Duplicate, dup.clone()))
            }
            Verdict::Valid(row) => {
                let fingerprint = ledger
                    .map(|_| crate::model::fingerprint(row.email, row.mobile_number, row.vendor));
                let skip = matches!((ledger, &fingerprint), (Some(l), Some(fp)) if l.should_skip(row.identity_reference, fp));
                if skip {
                    batch.unsent(unsent(
                        &item,
                        Outcome::Skipped,
                        "already accepted with the same details (ledger)".into(),
                    ))
                } else {
                    let payload = if row.applicant_id.is_empty() {
                        row.share_request().write_body(&mut body);
                        Payload::Body(Bytes::copy_from_slice(&body))
                    } else {
                        Payload::Mint {
                            applicant_id: row.applicant_id.to_string(),
                            email: row.email.to_string(),
                            mobile_number: row.mobile_number.to_string(),
                            vendor: row.vendor,
                        }
                    };
                    let job = Job {
                        record: item.record,
                        line: item.line,
                        identity_reference: row.identity_reference.to_string(),
                        payload,
                        private: [row.email, row.mobile_number, row.token].join("\n"),
                        raw: item.raw.to_byte_record(),
                        fingerprint,
                    };
                    report.to_send += 1;
                    batch.job(job)
                }
            }
        };
        if sent.is_err() {
            // The dispatcher stopped (abort): this record stays unsent.
            break;
        }
    }
    Ok(report)
}

/// The outcome of a record that needs no request (invalid, duplicate,
/// skipped).
fn unsent(item: &Item<'_>, outcome: Outcome, message: String) -> Final {
    journal::unsent(
        item.record,
        item.line,
        item.identity_reference,
        outcome,
        message,
    )
}
