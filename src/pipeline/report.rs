//! The report of a run: the summary (counts, reasons, what to do next),
//! the exit code, the ledger's run row and the metrics file.

use std::time::{Duration, SystemTime};

use super::feed::ReadReport;
use super::manifest::{command_line, resume_command, shell_line};
use super::plan::Plan;
use crate::ledger::{RunCounts, RunId};
use crate::model::AbortReason;
use crate::output::journal::JournalReport;
use crate::output::{Counts, Summary};

/// What the stages hand over once they have stopped.
pub struct Finished<'a> {
    pub counts: &'a Counts,
    pub read: ReadReport,
    pub journal: JournalReport,
    pub requests_sent: u64,
    pub elapsed: Duration,
    pub aborted: Option<AbortReason>,
    /// The run's row in the ledger (with `--ledger`).
    pub run_id: Option<RunId>,
    pub metrics: crate::output::metrics::RunMetrics,
}

/// The summary of a finished (or stopped) run; closes its ledger run and
/// writes the metrics file. Problems with either become next steps: the
/// rows are already safe in the results file.
pub fn summarise(plan: &Plan, f: Finished<'_>) -> Summary {
    let mut summary = Summary::new(
        "run",
        &plan.source.display(),
        &plan.results.display().to_string(),
    );
    summary.set_counts(f.counts);
    summary.from_earlier_runs = f.read.earlier_done;
    summary.requests_sent = f.requests_sent;
    summary.elapsed_seconds = f.elapsed.as_secs_f64();
    let this_run = summary.total.saturating_sub(f.read.earlier_done);
    summary.records_per_second = this_run as f64 / summary.elapsed_seconds.max(1e-9);
    summary.top_reasons = f.journal.reasons.top(5);
    if f.journal.retry_written {
        summary.retry_file = Some(plan.retry.display().to_string());
    }
    if let Some(r) = &f.aborted {
        // Records read but without an outcome: --resume sends them.
        summary.pending = f.read.records.saturating_sub(summary.total);
        summary.total = summary.total.max(f.read.records);
        summary.aborted = Some(r.to_string());
        summary.exit_code = 3;
    } else {
        summary.exit_code = summary.completed_exit_code();
    }
    if !f.journal.in_doubt.is_empty() {
        let list: Vec<String> = f
            .journal
            .in_doubt
            .iter()
            .map(|(r, id, o)| format!("record {r} ({id}): {o}"))
            .collect();
        summary.next_steps.push(format!(
            "{} record(s) reached an outcome that could NOT be written to the results file; check them in Banxa before resuming: {}",
            list.len(),
            list.join(", ")
        ));
    }
    if f.read.limited && f.aborted.is_none() {
        summary.limit_reached = plan.limit;
    }
    next_steps(&mut summary, plan, f.aborted.as_ref(), f.read.limited);

    let ended = SystemTime::now();
    let mut last_success = None;
    if let (Some(mut l), Some(id)) = (f.journal.ledger, f.run_id) {
        let counts = RunCounts::from(&summary);
        if let Err(e) = l.end_run(id, ended, &counts, summary.exit_code) {
            summary
                .next_steps
                .push(format!("could not close the run in the ledger: {e}"));
        }
        last_success = l.last_success().ok().flatten();
    }
    f.metrics.end(crate::output::metrics::Ending {
        exit_code: summary.exit_code,
        error_class: f.aborted.as_ref().map(|r| r.class().to_string()),
        ended_at: Some(ended),
        last_success: if summary.exit_code <= 1 {
            Some(ended)
        } else {
            // The ledger remembers the last exit 0; the previous metrics
            // file the last completed run (0 or 1): the later of the two.
            last_success.max(
                plan.metrics
                    .as_deref()
                    .and_then(crate::output::metrics::previous_last_success),
            )
        },
    });
    if let Some(path) = &plan.metrics {
        if let Err(e) = f.metrics.write(path) {
            summary.next_steps.push(format!(
                "could not write the metrics file {}: {e}",
                path.display()
            ));
        }
    }
    summary
}

fn next_steps(s: &mut Summary, plan: &Plan, aborted: Option<&AbortReason>, limited: bool) {
    let resume = resume_command(&plan.results);
    match aborted {
        Some(AbortReason::Unauthorized(_)) => s.step_with_command(
            "fix the credentials (BANXA_API_KEY / BANXA_API_SECRET, or the --api-secret-file: wrong, or revoked?), then continue with:",
            resume,
        ),
        Some(AbortReason::Untrusted(_)) => {
            let mut again = plan.settings.clone();
            again.resume = true;
            again.ca_cert = None;
            let mut words = command_line(&again, &plan.settings.input, Some(&plan.results));
            words.push("--resume".into());
            s.next_steps.push(format!(
                "check --base-url {} is really Banxa; if it is reached through a private CA (a TLS-inspecting proxy, a test server), continue with that CA (PEM) added: {} --ca-cert CA.pem (the run remembers it from then on)",
                plan.base_url,
                shell_line(&words)
            ));
        }
        Some(AbortReason::Unreachable(_)) => s.step_with_command(
            &format!(
                "no row was sent or failed: check --base-url {} (see why above; `curl -sv {}` from this host tells the same), then continue with:",
                plan.base_url, plan.base_url
            ),
            resume,
        ),
        Some(AbortReason::Outage(_)) => s.step_with_command(
            &format!(
                "{} record(s) not sent yet (none was failed by the outage); when Banxa answers again (its status page, or `curl -s -o /dev/null -w '%{{http_code}}' {}`), continue with:",
                s.pending, plan.base_url
            ),
            resume,
        ),
        Some(AbortReason::Storage(_)) => s.step_with_command(
            &format!(
                "free space or fix {} (see the error above), then continue with:",
                plan.results.display()
            ),
            resume,
        ),
        Some(AbortReason::Ledger(_)) => s.step_with_command(
            &format!(
                "when the ledger {} can be written again (see the error above){}, continue with:",
                plan.ledger.as_ref().map(|l| l.to_string()).unwrap_or_default(),
                if matches!(plan.ledger, Some(crate::ledger::LedgerLocation::Postgres(_))) {
                    " and with PGPASSWORD set (the ledger's password is never stored)"
                } else {
                    ""
                }
            ),
            resume,
        ),
        Some(AbortReason::Input(_)) => s.step_with_command(
            &format!(
                "the input could not be read to the end (see above): repair it in place (the same records in the same order; the records already in {} are kept), then send the rest with:",
                plan.results.display()
            ),
            resume,
        ),
        Some(_) => s.step_with_command(
            &format!(
                "{} record(s) not sent yet; continue with:",
                s.pending
            ),
            resume,
        ),
        None if limited => s.step_with_command(
            "the canary is done (check its outcomes above); send the rest with:",
            resume,
        ),
        None => {}
    }
    if s.failed > 0 {
        let retry = shell_line(&command_line(&plan.settings, &plan.retry, None));
        s.step_with_command(
            &format!(
                "{} row{} failed after retries (429/5xx/timeouts): once Banxa answers again, retry {} with:",
                s.failed,
                if s.failed == 1 { "" } else { "s" },
                if s.failed == 1 { "it" } else { "them" },
            ),
            retry,
        );
    }
    if s.rejected > 0 {
        s.next_steps.push(format!(
            "{} row{} rejected by Banxa: see columns message and errors in {}; fix the data and send those rows again",
            s.rejected,
            if s.rejected == 1 { " was" } else { "s were" },
            plan.results.display()
        ));
    }
    if s.invalid + s.duplicate > 0 {
        s.next_steps.push(format!(
            "{} row{} not sent (invalid or duplicate): see {}",
            s.invalid + s.duplicate,
            if s.invalid + s.duplicate == 1 {
                " was"
            } else {
                "s were"
            },
            plan.results.display()
        ));
    }
    if aborted.is_none() && !limited && s.exit_code == 0 {
        s.next_steps
            .push("nothing left to do: every record is accepted".into());
    }
}
