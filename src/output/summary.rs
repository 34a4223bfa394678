//! Counting outcomes and telling the operator what happened: the human
//! summary on stderr and the `--json` object on stdout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::model::Outcome;

/// Outcome counters, shared with the progress bar.
#[derive(Debug, Default)]
pub struct Counts {
    by: [AtomicU64; 7],
}

impl Counts {
    pub fn add(&self, o: Outcome, n: u64) {
        self.by[o as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, o: Outcome) -> u64 {
        self.by[o as usize].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        Outcome::ALL.iter().map(|o| self.get(*o)).sum()
    }
}

/// The most common reasons rows were not sent or not accepted.
#[derive(Debug, Default)]
pub struct Reasons {
    map: HashMap<String, u64>,
}

const MAX_REASONS: usize = 1000;

impl Reasons {
    /// Counts an outcome's reasons: an invalid record's typed problems by
    /// kind, any other outcome's message.
    pub fn add_final(&mut self, f: &crate::model::Final) {
        if f.outcome == Outcome::Invalid && !f.problems.is_empty() {
            self.add_problems(&f.problems);
        } else if f.outcome == Outcome::Rejected && self.add_field_errors(&f.errors) {
            // Banxa's 422 names the fields: counted by field and message.
        } else {
            self.add(f.outcome, &f.message);
        }
    }

    /// Counts a 422's `errors` (`{"field":["message",…]}`) by field and
    /// message; false when there are none to count.
    fn add_field_errors(&mut self, errors: &str) -> bool {
        if errors.is_empty() {
            return false;
        }
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(errors)
        else {
            return false;
        };
        let mut any = false;
        for (field, messages) in &map {
            let first = match messages {
                serde_json::Value::Array(a) => a.first().and_then(|m| m.as_str()).unwrap_or(""),
                serde_json::Value::String(m) => m.as_str(),
                _ => "",
            };
            let field = crate::model::cut_text(field, 80);
            let first = crate::model::cut_text(first, 200);
            self.bump(format!("rejected: {field}: {first}"));
            any = true;
        }
        any
    }

    /// Counts each problem of an invalid record by its kind
    /// ([`crate::model::Problem::key`]): no text is parsed.
    pub fn add_problems(&mut self, problems: &[crate::model::Problem]) {
        for p in problems {
            self.bump(p.key().into_owned());
        }
    }

    /// Counts a message that is not a list of problems: a duplicate as one
    /// kind, Banxa's (or Sumsub's) `; `-separated messages each under its
    /// outcome.
    pub fn add(&mut self, outcome: Outcome, message: &str) {
        if message.is_empty() {
            return;
        }
        if outcome == Outcome::Duplicate {
            self.bump("duplicate identityReference".into());
            return;
        }
        for part in message.split("; ") {
            self.bump(format!("{outcome}: {part}"));
        }
    }

    fn bump(&mut self, key: String) {
        if self.map.len() >= MAX_REASONS && !self.map.contains_key(&key) {
            *self.map.entry("(other reasons)".into()).or_default() += 1;
        } else {
            *self.map.entry(key).or_default() += 1;
        }
    }

    pub fn top(&self, n: usize) -> Vec<Reason> {
        let mut v: Vec<Reason> = self
            .map
            .iter()
            .map(|(k, c)| Reason {
                reason: k.clone(),
                count: *c,
            })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
        v.truncate(n);
        v
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Reason {
    pub reason: String,
    pub count: u64,
}

/// The end-of-run summary. Serialised as the `--json` object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub command: String,
    pub input: String,
    pub total: u64,
    pub accepted: u64,
    pub invalid: u64,
    pub duplicate: u64,
    pub rejected: u64,
    pub failed: u64,
    pub skipped: u64,
    pub validated: u64,
    /// Records left without an outcome (an aborted run): `--resume` sends them.
    pub pending: u64,
    /// Of the counts, how many came from earlier runs (`--resume`).
    pub from_earlier_runs: u64,
    pub elapsed_seconds: f64,
    pub records_per_second: f64,
    pub requests_sent: u64,
    pub results_file: String,
    pub retry_file: Option<String>,
    pub exit_code: i32,
    pub aborted: Option<String>,
    pub top_reasons: Vec<Reason>,
    pub next_steps: Vec<String>,
    /// The commands the next steps name, each exactly as it appears there
    /// (and runs as printed, credentials aside).
    pub next_commands: Vec<String>,
    /// `--limit N` stopped the run with records left: N.
    pub limit_reached: Option<u64>,
}

impl Summary {
    pub fn new(command: &str, input: &str, results_file: &str) -> Summary {
        Summary {
            command: command.into(),
            input: input.into(),
            total: 0,
            accepted: 0,
            invalid: 0,
            duplicate: 0,
            rejected: 0,
            failed: 0,
            skipped: 0,
            validated: 0,
            pending: 0,
            from_earlier_runs: 0,
            elapsed_seconds: 0.0,
            records_per_second: 0.0,
            requests_sent: 0,
            results_file: results_file.into(),
            retry_file: None,
            exit_code: 0,
            aborted: None,
            top_reasons: Vec::new(),
            next_steps: Vec::new(),
            next_commands: Vec::new(),
            limit_reached: None,
        }
    }

    pub fn set_counts(&mut self, c: &Counts) {
        self.accepted = c.get(Outcome::Accepted);
        self.invalid = c.get(Outcome::Invalid);
        self.duplicate = c.get(Outcome::Duplicate);
        self.rejected = c.get(Outcome::Rejected);
        self.failed = c.get(Outcome::Failed);
        self.skipped = c.get(Outcome::Skipped);
        self.validated = c.get(Outcome::Validated);
        self.total = c.total() + self.pending;
    }

    /// 0 when every record is accepted, skipped or validated; 1 otherwise.
    pub fn completed_exit_code(&self) -> i32 {
        if self.invalid + self.duplicate + self.rejected + self.failed > 0 {
            1
        } else {
            0
        }
    }

    /// A next step that ends with a command: `text` then the command.
    pub fn step_with_command(&mut self, text: &str, command: String) {
        self.next_steps.push(format!("{text} {command}"));
        self.next_commands.push(command);
    }

    /// The human summary, for stderr.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let verb = match (&self.aborted, self.limit_reached) {
            (Some(_), _) => "stopped".to_string(),
            (None, Some(n)) => format!("stopped after sending {n} (--limit)"),
            (None, None) => "finished".to_string(),
        };
        let _ = writeln!(
            s,
            "kycshare {} {}: {} record{} in {:.1} s ({:.0} records/s)",
            self.command,
            verb,
            self.total,
            if self.total == 1 { "" } else { "s" },
            self.elapsed_seconds,
            self.records_per_second
        );
        if let Some(why) = &self.aborted {
            let _ = writeln!(s, "  ABORTED: {why}");
        }
        let rows = [
            ("accepted", self.accepted),
            ("validated", self.validated),
            ("skipped", self.skipped),
            ("invalid", self.invalid),
            ("duplicate", self.duplicate),
            ("rejected", self.rejected),
            ("failed", self.failed),
            ("pending", self.pending),
        ];
        for (name, n) in rows {
            if n > 0
                || (name == "accepted" && self.command == "run")
                || (name == "validated" && self.command == "validate")
            {
                let _ = writeln!(s, "  {name:<10} {n:>10}");
            }
        }
        if self.from_earlier_runs > 0 {
            let _ = writeln!(
                s,
                "  ({} of these outcomes come from earlier runs, kept in the results file)",
                self.from_earlier_runs
            );
        }
        if self.requests_sent > 0 {
            let _ = writeln!(s, "  requests sent: {}", self.requests_sent);
        }
        if !self.top_reasons.is_empty() {
            let _ = writeln!(s, "Most common reasons:");
            for r in &self.top_reasons {
                let _ = writeln!(s, "  {:>8}  {}", r.count, r.reason);
            }
        }
        let _ = writeln!(s, "Results: {}", self.results_file);
        if let Some(r) = &self.retry_file {
            let _ = writeln!(s, "Retry file: {r}");
        }
        for n in &self.next_steps {
            let _ = writeln!(s, "Next: {n}");
        }
        s
    }
}

/// What the ledger records of a run.
impl From<&Summary> for crate::ledger::RunCounts {
    fn from(s: &Summary) -> crate::ledger::RunCounts {
        crate::ledger::RunCounts {
            total: s.total,
            accepted: s.accepted,
            invalid: s.invalid,
            duplicate: s.duplicate,
            rejected: s.rejected,
            failed: s.failed,
            skipped: s.skipped,
            validated: s.validated,
            requests_sent: s.requests_sent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Problem;

    #[test]
    fn a_422_is_counted_by_its_fields_messages() {
        let mut r = Reasons::default();
        let f = |errors: &str| crate::model::Final {
            record: 1,
            line: 2,
            identity_reference: "a".into(),
            outcome: Outcome::Rejected,
            http_status: Some(422),
            attempts: 1,
            trace_id: String::new(),
            message: "The given data was invalid.".into(),
            errors: errors.into(),
            latency_ms: None,
            completed_at: std::time::SystemTime::now(),
            raw: None,
            fingerprint: None,
            problems: Vec::new(),
            kyc_status: None,
        };
        r.add_final(&f(r#"{"email":["The email must be a valid email address."],"mobileNumber":["Too short."]}"#));
        r.add_final(&f(
            r#"{"email":["The email must be a valid email address."]}"#,
        ));
        r.add_final(&f(""));
        let top: Vec<(String, u64)> = r.top(5).into_iter().map(|x| (x.reason, x.count)).collect();
        assert_eq!(
            top,
            vec![
                (
                    "rejected: email: The email must be a valid email address.".to_string(),
                    2
                ),
                ("rejected: The given data was invalid.".to_string(), 1),
                ("rejected: mobileNumber: Too short.".to_string(), 1),
            ]
        );
    }

    #[test]
    fn reasons_are_grouped_without_positions() {
        let mut r = Reasons::default();
        let domain = Problem::Rule {
            field: "email",
            why: "missing domain",
        };
        let bad_char = |position| Problem::BadChar {
            field: "identityReference",
            shown: "'_'".into(),
            position: Some(position),
            allowed: "x",
        };
        r.add_problems(&[domain.clone(), Problem::MobileDigits { n: 7 }]);
        r.add_problems(&[domain]);
        r.add_problems(&[bad_char(3)]);
        r.add_problems(&[bad_char(9)]);
        r.add(Outcome::Duplicate, "duplicate of record 3");
        let top = r.top(2);
        assert_eq!(top[0].count, 2);
        assert_eq!(top[0].reason, "email: missing domain");
        assert_eq!(top[1].reason, "identityReference: invalid character '_'");
    }
}
