//! `kycshare ledger FILE [--json]`: what a nightly ledger holds.
//!
//! ```text
//! kycshare ledger FILE [--json]
//! ```
//!
//! Wiring only: open the ledger read-only (no run lock, so it works during a
//! run), take its report from `crate::ledger`, print it as text on stdout or
//! as one JSON object.

use clap::Args;
use std::fmt::Write;

use crate::ledger::{LedgerLocation, LedgerReport, LedgerView};

pub const LEDGER_ABOUT: &str = "\
Show what a ledger (`kycshare run --ledger FILE`) holds: how many identities
Banxa has accepted, how many were last rejected or failed (those are sent
again by the next run), the oldest failure still pending, the accepted
identities by what `kycshare verify --ledger` last found (VERIFIED, PENDING,
REJECTED, not_found, not checked) with the oldest one not VERIFIED, and the
last runs with their counts and exit codes.

The ledger is a file (SQLite) or postgres://USER@HOST:PORT/DB (password in
the URL or PGPASSWORD, never shown; sslmode honoured). It is read, never
changed, and without taking the run lock, so this works while a nightly run
is going. A run with no end time either is still
going or was killed (the next run picks up where it stopped). See
docs/nightly.md for scheduling, alerting, sqlite3 and PostgreSQL queries.

Exit codes: 0 shown, 2 the file is missing or is not a ledger.

Example:
  kycshare ledger /var/lib/kycshare/ledger.db
  kycshare ledger /var/lib/kycshare/ledger.db --json | jq .oldestPendingFailure
  PGPASSWORD=… kycshare ledger 'postgres://kycshare@db.internal:5432/kycshare?sslmode=verify-full'";

#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// The ledger: a file (an SQLite database written by `kycshare run
    /// --ledger FILE`) or postgres://USER@HOST:PORT/DB (password in the URL
    /// or PGPASSWORD, never shown).
    #[arg(value_name = "FILE|URL", value_parser = crate::ledger::LedgerLocation::parse)]
    pub file: LedgerLocation,
    /// Print one JSON object on stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: LedgerArgs) -> anyhow::Result<i32> {
    let report = LedgerView::open_at(&args.file)?.report()?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(0)
}

/// The text report.
pub fn render(r: &LedgerReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "ledger {}", r.path);
    if let Some(h) = &r.in_use_by {
        let _ = writeln!(s, "  in use by a run now ({h})");
    }
    let _ = writeln!(s, "identities by last outcome:");
    for (name, n) in [
        ("accepted", r.accepted),
        ("rejected", r.rejected),
        ("failed", r.failed),
        ("total", r.identities),
    ] {
        let _ = writeln!(s, "  {name:<10} {n:>10}");
    }
    let pending = r.rejected + r.failed;
    if pending > 0 {
        let _ = writeln!(
            s,
            "  {pending} not accepted: the next run sends them again{}",
            if r.changed_not_yet_accepted > 0 {
                format!(
                    " ({} of them accepted earlier with other details)",
                    r.changed_not_yet_accepted
                )
            } else {
                String::new()
            }
        );
    }
    match &r.oldest_pending_failure {
        Some(f) => {
            let _ = write!(
                s,
                "oldest pending failure: {} {} since {} (last attempt {}",
                f.identity_reference, f.last_outcome, f.since, f.last_attempt
            );
            if let Some(st) = f.http_status {
                let _ = write!(s, ", HTTP {st}");
            }
            if !f.trace_id.is_empty() {
                let _ = write!(s, ", traceId {}", f.trace_id);
            }
            let _ = writeln!(s, ")");
        }
        None => {
            let _ = writeln!(s, "oldest pending failure: none");
        }
    }
    if r.accepted > 0 && !r.kyc.is_empty() {
        let _ = writeln!(
            s,
            "accepted identities by verification (kycshare verify --ledger):"
        );
        for (status, n) in &r.kyc {
            let _ = writeln!(s, "  {status:<12} {n:>10}");
        }
        match &r.oldest_unverified {
            Some(u) => {
                let _ = writeln!(
                    s,
                    "oldest unverified: {} accepted {} ({})",
                    u.identity_reference,
                    u.accepted_at,
                    match (&u.kyc_status, &u.kyc_checked_at) {
                        (Some(k), Some(at)) => format!("{k} when checked {at}"),
                        _ => "not checked since".to_string(),
                    }
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "oldest unverified: none (every accepted identity is VERIFIED)"
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "last successful run (exit 0) ended: {}",
        r.last_success.as_deref().unwrap_or("never")
    );
    if r.runs.is_empty() {
        let _ = writeln!(s, "runs: none yet");
        return s;
    }
    let _ = writeln!(s, "last runs, newest first:");
    for run in &r.runs {
        let _ = write!(s, "  #{} {} -> ", run.id, run.started_at);
        match (&run.ended_at, &run.counts) {
            (Some(end), Some(c)) => {
                let _ = write!(
                    s,
                    "{end}  exit {}  {}\n      total {}  accepted {}  skipped {}  rejected {}  failed {}  invalid {}  duplicate {}  requests {}",
                    run.exit_code.map_or("?".to_string(), |c| c.to_string()),
                    run.input,
                    c.total,
                    c.accepted,
                    c.skipped,
                    c.rejected,
                    c.failed,
                    c.invalid,
                    c.duplicate,
                    c.requests_sent
                );
                if c.validated > 0 {
                    let _ = write!(s, "  validated {}", c.validated);
                }
                let _ = writeln!(s);
            }
            _ => {
                let running = r.in_use_by.as_ref().and_then(|h| h.pid) == Some(run.pid)
                    && run.id == r.runs[0].id;
                let _ = writeln!(
                    s,
                    "{}  {} (pid {})",
                    if running {
                        "still running"
                    } else {
                        "did not finish (killed or crashed: the next run picks up)"
                    },
                    run.input,
                    run.pid
                );
            }
        }
    }
    s
}
