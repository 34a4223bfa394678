//! The dry run (`validate`) on two cores: this thread reads, validates and
//! de-duplicates every record and builds each valid row's body (all in
//! input order: duplicates depend on it); a second thread signs the bodies
//! and writes the results file, batch by batch, so the file keeps the
//! input's order.
//!
//! ```text
//! reader (parse, validate, dedupe, build body) --batches--> signer (sign, write results)
//! ```

use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::SystemTime;

use crate::input::{Input, Verdict};
use crate::model::{problems_message, Outcome};
use crate::output::progress::Progress;
use crate::output::summary::Reasons;
use crate::output::{Counts, OutputError, ResultRow, ResultsWriter};
use crate::request::{NonceSource, Signer, SHARE_PATH};

/// Records per batch handed to the signer.
const BATCH: usize = 1024;
/// Batches in the channel: bounds memory (a batch is ~250 KiB).
const DEPTH: usize = 4;

/// Signed with a token of a real token's size when the input has none
/// (`--mint`: the token is minted later).
const MINT_PLACEHOLDER: &str =
    "_act-minted-just-in-time-placeholder-0000000000000000000000000000000000000000";

/// Why the dry run stopped.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("the signing thread stopped unexpectedly")]
    Thread,
}

/// What the dry run found.
pub struct DryRun {
    pub reasons: Reasons,
    pub signed_bytes: u64,
}

struct Row {
    record: u64,
    line: u64,
    outcome: Outcome,
    /// Ranges into the batch's `text`.
    id: Range<usize>,
    message: Range<usize>,
    /// Range into the batch's `bodies` (valid rows).
    body: Range<usize>,
}

#[derive(Default)]
struct Batch {
    text: String,
    bodies: Vec<u8>,
    rows: Vec<Row>,
}

impl Batch {
    fn clear(&mut self) {
        self.text.clear();
        self.bodies.clear();
        self.rows.clear();
    }
}

/// Runs the dry run of `input` into `writer`.
pub fn run(
    input: &mut Input,
    writer: ResultsWriter,
    signer: Signer,
    mint: bool,
    counts: &Arc<Counts>,
    progress: &Progress,
) -> Result<DryRun, DryRunError> {
    let (tx, rx) = sync_channel::<Batch>(DEPTH);
    // Emptied batches come back, so their buffers are reused.
    let (back_tx, back_rx) = sync_channel::<Batch>(DEPTH + 2);
    let signer_thread = std::thread::Builder::new()
        .name("signer".into())
        .spawn(move || sign_and_write(rx, back_tx, writer, signer))
        .map_err(|_| DryRunError::Thread)?;
    let mut reasons = Reasons::default();
    let read = read_batches(input, &tx, &back_rx, mint, counts, progress, &mut reasons);
    drop(tx);
    let written = signer_thread.join().map_err(|_| DryRunError::Thread)?;
    // A write error stops the reader too (its send fails): report it first.
    let signed_bytes = written?;
    read?;
    Ok(DryRun {
        reasons,
        signed_bytes,
    })
}

fn read_batches(
    input: &mut Input,
    tx: &SyncSender<Batch>,
    back: &Receiver<Batch>,
    mint: bool,
    counts: &Arc<Counts>,
    progress: &Progress,
    reasons: &mut Reasons,
) -> Result<(), DryRunError> {
    let mut batch = Batch::default();
    let mut dup_msg = String::new();
    let size = input.size();
    let send = |batch: &mut Batch| -> bool {
        let next = back.try_recv().unwrap_or_default();
        let full = std::mem::replace(batch, next);
        tx.send(full).is_ok()
    };
    while let Some(item) = input.next_item()? {
        let id_start = batch.text.len();
        batch.text.push_str(item.identity_reference);
        let id = id_start..batch.text.len();
        let mut body = 0..0;
        let outcome = match &item.verdict {
            Verdict::Valid(row) => {
                let mut req = row.share_request();
                if mint {
                    req.provider.token = MINT_PLACEHOLDER;
                }
                let start = batch.bodies.len();
                req.append_body(&mut batch.bodies);
                body = start..batch.bodies.len();
                Outcome::Validated
            }
            Verdict::Invalid(problems) => {
                reasons.add_problems(problems);
                batch.text.push_str(&problems_message(problems));
                Outcome::Invalid
            }
            Verdict::Duplicate { of } => {
                crate::input::duplicate_message(*of, &mut dup_msg);
                reasons.add(Outcome::Duplicate, &dup_msg);
                batch.text.push_str(&dup_msg);
                Outcome::Duplicate
            }
        };
        let message = id.end..batch.text.len();
        batch.rows.push(Row {
            record: item.record,
            line: item.line,
            outcome,
            id,
            message,
            body,
        });
        counts.add(outcome, 1);
        if batch.rows.len() == BATCH {
            progress.inc(BATCH as u64);
            progress.estimate_total(input.records_read(), input.bytes_read(), size);
            if !send(&mut batch) {
                // The signer stopped (a write error): it reports why.
                return Ok(());
            }
        }
    }
    progress.inc(batch.rows.len() as u64);
    progress.set_total(input.records_read());
    if !batch.rows.is_empty() {
        send(&mut batch);
    }
    Ok(())
}

fn sign_and_write(
    rx: Receiver<Batch>,
    back: SyncSender<Batch>,
    mut writer: ResultsWriter,
    signer: Signer,
) -> Result<u64, OutputError> {
    let nonces = NonceSource::new();
    let mut signed_bytes: u64 = 0;
    for mut batch in rx {
        // One time for the batch: its rows reached their outcome together.
        let completed_at = SystemTime::now();
        for r in &batch.rows {
            if !r.body.is_empty() {
                let body = &batch.bodies[r.body.clone()];
                let auth = signer.authorization(SHARE_PATH, nonces.next(), body);
                signed_bytes += std::hint::black_box(auth).len() as u64 + body.len() as u64;
            }
            // A dry run's results are not a journal (nothing is sent,
            // nothing to resume): rows are flushed per batch.
            writer.write_buffered(&ResultRow {
                record: r.record,
                line: r.line,
                identity_reference: &batch.text[r.id.clone()],
                outcome: r.outcome,
                http_status: None,
                attempts: 0,
                trace_id: "",
                message: &batch.text[r.message.clone()],
                errors: "",
                latency_ms: None,
                completed_at,
            })?;
        }
        writer.flush_row()?;
        batch.clear();
        let _ = back.try_send(batch);
    }
    writer.finish()?;
    Ok(signed_bytes)
}
