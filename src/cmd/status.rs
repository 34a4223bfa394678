//! `kycshare status RESULTS [--json]`: what a run is doing or did, from its
//! files alone (safe while it runs: nothing is written, no lock is taken
//! for more than a moment):
//!
//! - **running** (a run holds the lock of its events file), **stopped**
//!   (exit 3, or killed: the exact `kycshare resume` command), or
//!   **finished** (exit 0 or 1);
//! - counts by outcome (the results file), what is left (the input's
//!   records without an outcome, when the input is readable);
//! - the rate and the ETA from the results file's most recent rows;
//! - the last error (the stop's reason, else the last not-accepted row);
//! - the retry runs made from it (their manifests name it as parent),
//!   followed down, and each record's final state across them.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use crate::model::Outcome;
use crate::output::events::{is_running, read_events};
use crate::output::progress::thousands;
use crate::output::results::read_prior;
use crate::pipeline::manifest::{manifest_path, resume_command, Manifest};

pub const STATUS_ABOUT: &str = "\
What a run is doing or did, from its files: running, stopped (with the exact
command that continues it) or finished; counts by outcome; what is left;
the rate and ETA from the most recent rows; the last error; and the retry
runs made from it, so that one view shows each record's final state. Safe
to run while the run is going (it only reads).

Examples:
  kycshare status export.results.csv
  kycshare status export.results.csv --json | jq .state
  watch -n 60 kycshare status export.results.csv";

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The results file of the run (export.results.csv).
    #[arg(value_name = "RESULTS")]
    pub results: PathBuf,
    /// One JSON object on stdout instead of the text.
    #[arg(long)]
    pub json: bool,
}

/// The status of one run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    pub results: String,
    /// `running`, `stopped` or `finished`.
    pub state: &'static str,
    pub exit_code: Option<i64>,
    pub input: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub counts: HashMap<&'static str, u64>,
    pub done: u64,
    /// Records in the input (when it is readable).
    pub input_records: Option<u64>,
    pub left: Option<u64>,
    /// Records per second over the most recent rows.
    pub records_per_second: Option<f64>,
    pub eta_seconds: Option<u64>,
    pub last_error: Option<String>,
    /// The command that continues it (stopped runs).
    pub resume_command: Option<String>,
    pub retry_runs: Vec<RunStatus>,
}

/// The whole view: the run, its retry runs, and the final state.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct View {
    #[serde(flatten)]
    run: RunStatus,
    /// Each record's last outcome across the run and its retry runs
    /// (present when there are retry runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    final_counts: Option<HashMap<&'static str, u64>>,
}

pub fn run(args: StatusArgs) -> anyhow::Result<i32> {
    if !args.results.exists() {
        bail!(
            "{}: no such results file (the run writes export.results.csv beside its input unless --results says otherwise)",
            args.results.display()
        );
    }
    let run = status_of(&args.results, 0)?;
    let final_counts = if run.retry_runs.is_empty() {
        None
    } else {
        Some(final_state(&args.results, &run)?)
    };
    let view = View { run, final_counts };
    if args.json {
        println!("{}", serde_json::to_string(&view)?);
    } else {
        print_view(&view);
    }
    Ok(0)
}

fn status_of(results: &Path, depth: usize) -> anyhow::Result<RunStatus> {
    let prior = read_prior(results, false).with_context(|| format!("{}", results.display()))?;
    let manifest = Manifest::load(results).ok().flatten();
    let events = read_events(results);
    let running = is_running(results);
    let started = events.iter().rev().find(|e| e["event"] == "started");
    let ended = events
        .iter()
        .rev()
        .take_while(|e| e["event"] != "started")
        .find(|e| e["event"] == "ended");
    let exit_code = ended.and_then(|e| e["exitCode"].as_i64());
    let limited = ended.is_some_and(|e| !e["limitReached"].is_null());
    let mut counts = HashMap::new();
    for o in Outcome::ALL {
        if prior.count(o) > 0 {
            counts.insert(o.as_str(), prior.count(o));
        }
    }
    let done = prior.rows;
    let input_records = manifest.as_ref().and_then(count_input);
    let left = input_records.map(|n| n.saturating_sub(done));
    let state = if running {
        "running"
    } else {
        match exit_code {
            Some(0) | Some(1) if !limited && left.unwrap_or(0) == 0 => "finished",
            Some(0) | Some(1) if manifest.is_none() => "finished",
            None if events.is_empty() && left == Some(0) => "finished",
            _ => "stopped",
        }
    };
    let (rate, last_failure) = recent(results);
    let eta_seconds = match (left, rate) {
        (Some(l), Some(r)) if r > 0.0 && state == "running" => Some((l as f64 / r).ceil() as u64),
        _ => None,
    };
    let last_error = ended
        .and_then(|e| e["reason"].as_str().map(String::from))
        .or(last_failure);
    let resume = (state == "stopped" && manifest.is_some()).then(|| resume_command(results));
    let mut retry_runs = Vec::new();
    if depth < 16 {
        for child in children(results) {
            retry_runs.push(status_of(&child, depth + 1)?);
        }
    }
    Ok(RunStatus {
        results: results.display().to_string(),
        state,
        exit_code,
        input: manifest.as_ref().map(|m| m.input.display().to_string()),
        started_at: started
            .and_then(|e| e["time"].as_str().map(String::from))
            .or_else(|| manifest.as_ref().map(|m| m.started_at.clone())),
        ended_at: ended.and_then(|e| e["time"].as_str().map(String::from)),
        counts,
        done,
        input_records,
        left,
        records_per_second: rate,
        eta_seconds,
        last_error,
        resume_command: resume,
        retry_runs,
    })
}

/// Records in the run's input (`None` when it cannot be read: stdin, a
/// file moved away).
fn count_input(m: &Manifest) -> Option<u64> {
    let path = &m.input;
    if path == Path::new("-") {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    let name = path.to_string_lossy();
    let reader: Box<dyn Read> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let delimiter = match m.delimiter.as_str() {
        "\\t" => b'\t',
        d => *d.as_bytes().first().unwrap_or(&b','),
    };
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(reader);
    let mut n = 0u64;
    let mut rec = csv::ByteRecord::new();
    loop {
        match csv.read_byte_record(&mut rec) {
            Ok(true) => n += 1,
            Ok(false) => break,
            // A malformed record still counts (it gets an `invalid` row).
            Err(_) => n += 1,
        }
        if n > 100_000_000 {
            return None;
        }
    }
    Some(n)
}

/// From the last rows of the results file: records per second, and the
/// last not-accepted row's message.
fn recent(results: &Path) -> (Option<f64>, Option<String>) {
    const TAIL: u64 = 256 * 1024;
    let Ok(mut f) = std::fs::File::open(results) else {
        return (None, None);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return (None, None);
    }
    let mut buf = Vec::new();
    if f.take(TAIL).read_to_end(&mut buf).is_err() {
        return (None, None);
    }
    // Skip the first line: the header, or a line cut by the seek.
    let body = match memchr::memchr(b'\n', &buf) {
        Some(i) => &buf[i + 1..],
        None => &[][..],
    };
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut times: Vec<SystemTime> = Vec::new();
    let mut last_failure = None;
    for rec in csv.records().map_while(Result::ok) {
        // record,line,identityReference,outcome,httpStatus,attempts,traceId,message,errors,latencyMs,completedAt
        if rec.len() < 11 {
            continue;
        }
        let sent = rec.get(5).is_some_and(|a| a != "0");
        if let Ok(t) = humantime::parse_rfc3339(rec.get(10).unwrap_or("")) {
            if sent {
                times.push(t);
            }
        }
        let outcome = rec.get(3).unwrap_or("");
        if matches!(outcome, "failed" | "rejected") {
            last_failure = Some(format!(
                "record {} (line {}) {outcome}: {}",
                rec.get(0).unwrap_or("?"),
                rec.get(1).unwrap_or("?"),
                rec.get(7).unwrap_or("")
            ));
        }
    }
    times.sort();
    let rate = match (times.first(), times.last()) {
        (Some(a), Some(b)) if times.len() >= 2 => {
            let secs = b.duration_since(*a).unwrap_or_default().as_secs_f64();
            (secs > 0.0).then(|| (times.len() - 1) as f64 / secs)
        }
        _ => None,
    };
    (rate, last_failure)
}

/// The results files of the runs whose input is `results`' retry file.
fn children(results: &Path) -> Vec<PathBuf> {
    let results = std::path::absolute(results).unwrap_or_else(|_| results.to_path_buf());
    let mut dirs: Vec<PathBuf> = results
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    if let Ok(Some(m)) = Manifest::load(&results) {
        if let Some(d) = m.retry_file.parent() {
            if !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_path_buf());
            }
        }
    }
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".manifest.json") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let Ok(m) = serde_json::from_str::<Manifest>(&text) else {
                continue;
            };
            if m.parent.as_deref() == Some(results.as_path())
                && m.results != results
                && m.results.exists()
                && manifest_path(&m.results) == entry.path()
            {
                out.push((m.started_at.clone(), m.results));
            }
        }
    }
    out.sort();
    out.into_iter().map(|(_, p)| p).collect()
}

/// Each record's last outcome across the run and its retry runs (by
/// identityReference: the retry runs number their records afresh).
fn final_state(results: &Path, run: &RunStatus) -> anyhow::Result<HashMap<&'static str, u64>> {
    let mut by_id: HashMap<String, Outcome> = HashMap::new();
    let mut unnamed: HashMap<&'static str, u64> = HashMap::new();
    fn walk(
        path: &Path,
        run: &RunStatus,
        by_id: &mut HashMap<String, Outcome>,
        unnamed: &mut HashMap<&'static str, u64>,
    ) -> anyhow::Result<()> {
        let mut csv = csv::Reader::from_path(path).with_context(|| path.display().to_string())?;
        for rec in csv.records().map_while(Result::ok) {
            let Some(o) = rec.get(3).and_then(Outcome::parse) else {
                continue;
            };
            match rec.get(2) {
                Some(id) if !id.is_empty() => {
                    by_id.insert(id.to_string(), o);
                }
                _ => *unnamed.entry(o.as_str()).or_default() += 1,
            }
        }
        for child in &run.retry_runs {
            walk(Path::new(&child.results), child, by_id, unnamed)?;
        }
        Ok(())
    }
    walk(results, run, &mut by_id, &mut unnamed)?;
    let mut counts = unnamed;
    for o in by_id.values() {
        *counts.entry(o.as_str()).or_default() += 1;
    }
    Ok(counts)
}

fn counts_text(c: &HashMap<&'static str, u64>) -> String {
    let parts: Vec<String> = Outcome::ALL
        .iter()
        .filter_map(|o| {
            c.get(o.as_str())
                .map(|n| format!("{} {}", o.as_str(), thousands(*n)))
        })
        .collect();
    if parts.is_empty() {
        "no records yet".into()
    } else {
        parts.join(", ")
    }
}

fn print_run(r: &RunStatus, indent: &str) {
    let exit = r
        .exit_code
        .map(|c| format!(", exit {c}"))
        .unwrap_or_default();
    println!("{indent}{}: {}{exit}", r.results, r.state);
    if let Some(i) = &r.input {
        match (r.input_records, r.left) {
            (Some(n), Some(l)) => println!(
                "{indent}  input {i}: {} records, {} with an outcome, {} left",
                thousands(n),
                thousands(r.done),
                thousands(l)
            ),
            _ => println!(
                "{indent}  input {i} (not readable now): {} records with an outcome",
                thousands(r.done)
            ),
        }
    }
    if let Some(t) = &r.started_at {
        match &r.ended_at {
            Some(e) => println!("{indent}  started {t}, ended {e}"),
            None => println!("{indent}  started {t}"),
        }
    }
    println!("{indent}  {}", counts_text(&r.counts));
    if let Some(rate) = r.records_per_second {
        let eta = r
            .eta_seconds
            .map(|s| {
                format!(
                    ", ETA {}",
                    humantime::format_duration(std::time::Duration::from_secs(s))
                )
            })
            .unwrap_or_default();
        println!("{indent}  rate {rate:.1} records/s over the most recent rows{eta}");
    }
    if let Some(e) = &r.last_error {
        println!("{indent}  last error: {e}");
    }
    if let Some(c) = &r.resume_command {
        println!("{indent}  continue with: {c}");
    }
    for child in &r.retry_runs {
        println!("{indent}  retry run:");
        print_run(child, &format!("{indent}    "));
    }
}

fn print_view(v: &View) {
    print_run(&v.run, "");
    if let Some(f) = &v.final_counts {
        println!(
            "final state of each record across the run and its retry runs: {}",
            counts_text(f)
        );
    }
    if v.run.state == "running" {
        println!("(running: figures change as it goes; `kycshare status` only reads)");
    }
}
