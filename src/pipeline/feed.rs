//! The feed: records in, jobs and the outcomes that need no request out.
//! It runs on its own thread (CSV parsing is blocking work) and skips what
//! an earlier run of the same results file already finished (`--resume`)
//! and what the ledger says Banxa already has (`--ledger`).

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::dispatch::{Job, Payload};
use crate::input::{Input, Item, Verdict};
use crate::ledger::LedgerReader;
use crate::model::{problems_message, Abort, AbortReason, OutMsg, Outcome};
use crate::output::journal;
use crate::output::results::Prior;

/// What the feed read.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// The last record number read.
    pub records: u64,
    /// Records whose outcome an earlier run already wrote (`--resume`).
    pub earlier_done: u64,
}

pub fn read_jobs(
    input: &mut Input,
    prior: Option<&Prior>,
    ledger: Option<&LedgerReader>,
    jobs: &mpsc::Sender<Job>,
    out: &mpsc::Sender<OutMsg>,
    abort: &Abort,
) -> Result<ReadReport, crate::input::InputError> {
    let mut report = ReadReport::default();
    let mut body = Vec::with_capacity(512);
    let mut dup = String::new();
    loop {
        if abort.is_triggered() {
            break;
        }
        let Some(item) = input.next_item()? else {
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
                let mut f = journal::unsent(
                    item.record,
                    item.line,
                    item.identity_reference,
                    Outcome::Invalid,
                    problems_message(problems),
                );
                f.problems = problems.clone();
                out.blocking_send(OutMsg::Final(f)).map_err(|_| ())
            }
            Verdict::Duplicate { of } => {
                crate::input::duplicate_message(*of, &mut dup);
                send_unsent(out, &item, Outcome::Duplicate, dup.clone())
            }
            Verdict::Valid(row) => {
                let fingerprint = ledger
                    .map(|_| crate::model::fingerprint(row.email, row.mobile_number, row.vendor));
                let skip = matches!((ledger, &fingerprint), (Some(l), Some(fp)) if l.should_skip(row.identity_reference, fp));
                if skip {
                    send_unsent(
                        out,
                        &item,
                        Outcome::Skipped,
                        "already accepted with the same details (ledger)".into(),
                    )
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
                        private: vec![
                            row.email.to_string(),
                            row.mobile_number.to_string(),
                            row.token.to_string(),
                        ],
                        raw: item.raw.to_byte_record(),
                        fingerprint,
                    };
                    jobs.blocking_send(job).map_err(|_| ())
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

/// Sends the outcome of a record that needs no request (invalid,
/// duplicate, skipped) straight to the journal.
fn send_unsent(
    out: &mpsc::Sender<OutMsg>,
    item: &Item<'_>,
    outcome: Outcome,
    message: String,
) -> Result<(), ()> {
    out.blocking_send(OutMsg::Final(journal::unsent(
        item.record,
        item.line,
        item.identity_reference,
        outcome,
        message,
    )))
    .map_err(|_| ())
}
