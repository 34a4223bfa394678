//! `kycshare report`: the figures of a run and its retry runs, read from
//! their results files (streamed, one reused record, never all rows in
//! memory) and events files, then drawn as one self-contained HTML page
//! (`html`, with the SVG charts of `charts`) or printed as JSON.
//!
//! What is kept while reading: counts, one aggregate per minute (counts
//! by outcome, requests, a small latency histogram), the attempts
//! distribution, the reasons (outcome + message, with the 422 field
//! names), and at most [`TABLE_CAP`] not-accepted rows. With several
//! files, also a 64-bit hash of each identityReference and its last
//! outcome (the final state).
//!
//! Not for: a live view of a running run (that is `kycshare status`, or
//! the metrics), or the records themselves (the results file has them).
//! Nothing here reads the input: the results and events files hold no
//! email, mobile number, token or secret, and neither does the report.

pub mod charts;
pub mod hist;
pub mod html;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::model::Outcome;
use crate::output::events::read_events;
use crate::output::results::HEADER;
use hist::LatencyHistogram;

/// At most this many not-accepted records in the page's table.
pub const TABLE_CAP: usize = 1000;
/// At most this many distinct reasons are told apart; the rest are counted
/// together as "other reasons".
const MAX_REASONS: usize = 10_000;
/// Reasons listed on the page and in the JSON.
pub const TOP_REASONS: usize = 25;

/// Why a report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: no such results file (a run writes export.results.csv beside its input unless --results says otherwise)")]
    Missing { path: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: csv::Error,
    },
    #[error("{path} is not a kycshare results file: its header is `{found}`, expected `{HEADER}`")]
    NotResults { path: String, found: String },
    #[error("cannot write the report {path}: {reason}")]
    Write { path: String, reason: String },
}

/// Counts by outcome, in the order of [`Outcome::ALL`]; zero counts are
/// left out of the JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts(pub [u64; 7]);

impl Counts {
    pub fn add(&mut self, o: Outcome) {
        self.0[index(o)] += 1;
    }
    pub fn get(&self, o: Outcome) -> u64 {
        self.0[index(o)]
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    pub fn not_accepted(&self) -> u64 {
        Outcome::ALL
            .iter()
            .filter(|o| !o.is_success())
            .map(|o| self.get(*o))
            .sum()
    }
}

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for o in Outcome::ALL {
            if self.get(o) > 0 {
                m.serialize_entry(o.as_str(), &self.get(o))?;
            }
        }
        m.end()
    }
}

pub fn index(o: Outcome) -> usize {
    Outcome::ALL.iter().position(|x| *x == o).unwrap_or(0)
}

/// p50/p95/p99 (and more for the whole run) in milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    pub count: u64,
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub p99: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
}

/// One file's figures.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileFigures {
    pub results: String,
    pub rows: u64,
    pub counts: Counts,
    pub first_completed_at: Option<String>,
    pub last_completed_at: Option<String>,
    /// The rate each start (and resume) of the run was given.
    pub configured: Vec<ConfiguredRate>,
    pub exit_code: Option<i64>,
    /// Records not accepted in this file, their last outcome being later
    /// superseded or not.
    pub not_accepted: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfiguredRate {
    pub time: String,
    pub rate: String,
    pub per_minute: f64,
    #[serde(skip)]
    pub unix_ms: i64,
}

/// One minute of all the files together (UTC, by `completedAt`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Minute {
    /// The minute's start, `2026-11-26T12:00:00Z`.
    pub minute: String,
    #[serde(skip)]
    pub unix_minute: i64,
    pub counts: Counts,
    /// Requests sent by the rows completed in this minute (their
    /// `attempts`: a retried row's earlier attempts count in the minute it
    /// ended).
    pub requests: u64,
    /// The configured rate in this minute (the last `started` event at or
    /// before it), requests per minute.
    pub configured_per_minute: Option<f64>,
    pub latency_ms: Percentiles,
}

/// A reason records were not accepted: outcome and message, with the
/// 422 field names of its rows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reason {
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    pub message: String,
    pub count: u64,
    /// Field name (a key of the `errors` object) -> rows naming it.
    pub fields: BTreeMap<String, u64>,
}

/// A pause of the breaker, from an events file.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    pub results: String,
    pub start: String,
    pub end: Option<String>,
    pub seconds: Option<f64>,
    pub message: String,
    /// The run ended during the pause (`end` is when it ended).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub run_ended: bool,
    #[serde(skip)]
    pub start_ms: i64,
    #[serde(skip)]
    pub end_ms: Option<i64>,
}

/// A row of the not-accepted table.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableRow {
    /// Which RESULTS file (0: the first).
    pub file: usize,
    pub record: String,
    pub line: String,
    pub identity_reference: String,
    pub outcome: Outcome,
    pub http_status: String,
    pub message: String,
}

/// The not-accepted table (in the page only; the JSON has its counts).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    /// Records whose final outcome is not a success.
    pub total: u64,
    pub shown: u64,
    pub left_out: u64,
    #[serde(skip)]
    pub rows: Vec<TableRow>,
}

/// Everything the page and the JSON show.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    pub generated_at: String,
    pub files: Vec<FileFigures>,
    /// All rows of all files.
    pub counts: Counts,
    /// Each record's last outcome across the files, in the order given
    /// (by identityReference; `duplicate` rows and rows without one count
    /// as they are).
    pub final_counts: Counts,
    /// Over every sent row (`latencyMs` of its last attempt).
    pub latency_ms: Percentiles,
    /// Sent rows by number of attempts; `0` is rows not sent.
    pub attempts: BTreeMap<u32, u64>,
    pub per_minute: Vec<Minute>,
    pub reasons: Vec<Reason>,
    /// Distinct reasons beyond the top ones (and beyond what is told apart).
    pub other_reasons: u64,
    /// 422 field name -> rows naming it.
    pub fields: BTreeMap<String, u64>,
    pub pauses: Vec<Pause>,
    pub not_accepted: Table,
    /// The overall latency histogram, for the distribution chart.
    #[serde(skip)]
    pub histogram: LatencyHistogram,
    #[serde(skip)]
    pub minute_histograms: Vec<LatencyHistogram>,
}

#[derive(Default)]
struct MinuteAgg {
    counts: Counts,
    requests: u64,
    hist: LatencyHistogram,
}

/// Reads the files (a run first, then its retry runs, in order) and
/// computes the figures.
pub fn figures(files: &[PathBuf]) -> Result<Figures, ReportError> {
    let mut counts = Counts::default();
    let mut per_file = Vec::new();
    let mut minutes: BTreeMap<i64, MinuteAgg> = BTreeMap::new();
    let mut histogram = LatencyHistogram::default();
    let mut latency_sum: u128 = 0;
    let mut attempts: BTreeMap<u32, u64> = BTreeMap::new();
    let mut reasons: HashMap<(Outcome, Option<u16>, String), Reason> = HashMap::new();
    let mut overflow_reasons = 0u64;
    let mut fields: BTreeMap<String, u64> = BTreeMap::new();
    // Final state (several files only): identityReference hash -> outcome.
    let several = files.len() > 1;
    let mut last: HashMap<u64, Outcome> = HashMap::new();
    let mut unkeyed = Counts::default();
    // The table: rows, and where a keyed row sits (to supersede it).
    let mut table: Vec<Option<TableRow>> = Vec::new();
    let mut in_table: HashMap<u64, usize> = HashMap::new();
    let mut table_live = 0usize;
    let mut pauses = Vec::new();
    let mut configured_all: Vec<ConfiguredRate> = Vec::new();

    for (fi, path) in files.iter().enumerate() {
        let shown = path.display().to_string();
        if !path.exists() {
            return Err(ReportError::Missing { path: shown });
        }
        let read_err = |source| ReportError::Read {
            path: shown.clone(),
            source,
        };
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .from_path(path)
            .map_err(read_err)?;
        let header = rdr.byte_headers().map_err(read_err)?.clone();
        let found = header
            .iter()
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(",");
        if found != HEADER {
            return Err(ReportError::NotResults { path: shown, found });
        }
        let mut fc = Counts::default();
        let mut first_ms: Option<i64> = None;
        let mut last_ms: Option<i64> = None;
        let mut rec = csv::StringRecord::new();
        loop {
            match rdr.read_record(&mut rec) {
                Ok(true) => {}
                Ok(false) => break,
                // The disk failing: say so (the same error would come back).
                Err(e) if e.is_io_error() => return Err(read_err(e)),
                // A last line cut short by a kill: the run sends it again.
                Err(_) => continue,
            }
            if rec.len() < 11 {
                continue;
            }
            let Some(outcome) = Outcome::parse(&rec[3]) else {
                continue;
            };
            counts.add(outcome);
            fc.add(outcome);
            let tries: u32 = rec[5].parse().unwrap_or(0);
            *attempts.entry(tries).or_default() += 1;
            let latency: Option<u64> = rec[9].parse().ok();
            let at_ms = parse_ms(&rec[10]);
            if let Some(ms) = at_ms {
                first_ms = Some(first_ms.map_or(ms, |f| f.min(ms)));
                last_ms = Some(last_ms.map_or(ms, |l| l.max(ms)));
                let m = minutes.entry(ms.div_euclid(60_000)).or_default();
                m.counts.add(outcome);
                m.requests += u64::from(tries);
                if let Some(l) = latency {
                    m.hist.record(l);
                }
            }
            if let Some(l) = latency {
                histogram.record(l);
                latency_sum += u128::from(l);
            }
            let http_status: Option<u16> = rec[4].parse().ok();
            if !outcome.is_success() {
                // `duplicate of record 17` names another record each
                // time: one reason for them all.
                let message = if outcome == Outcome::Duplicate {
                    "duplicate identityReference (of an earlier record)"
                } else {
                    &rec[7]
                };
                let key = (outcome, http_status, message.to_string());
                let names = field_names(&rec[8]);
                let room = reasons.len() < MAX_REASONS;
                match reasons.get_mut(&key) {
                    Some(r) => {
                        r.count += 1;
                        for n in &names {
                            *r.fields.entry(n.clone()).or_default() += 1;
                        }
                    }
                    None if room => {
                        let mut f = BTreeMap::new();
                        for n in &names {
                            *f.entry(n.clone()).or_default() += 1;
                        }
                        reasons.insert(
                            key.clone(),
                            Reason {
                                outcome,
                                http_status,
                                message: key.2,
                                count: 1,
                                fields: f,
                            },
                        );
                    }
                    None => overflow_reasons += 1,
                }
                for n in names {
                    *fields.entry(n).or_default() += 1;
                }
            }
            // The final state, and the table.
            let id = &rec[2];
            let key = (!id.is_empty() && outcome != Outcome::Duplicate)
                .then(|| xxhash_rust::xxh3::xxh3_64(id.as_bytes()));
            if several {
                match key {
                    Some(k) => {
                        last.insert(k, outcome);
                    }
                    None => unkeyed.add(outcome),
                }
            }
            let earlier = key.and_then(|k| in_table.get(&k).copied());
            if let Some(i) = earlier {
                if outcome.is_success() {
                    table[i] = None;
                    table_live -= 1;
                    if let Some(k) = key {
                        in_table.remove(&k);
                    }
                    continue;
                }
            }
            if outcome.is_success() {
                continue;
            }
            let row = TableRow {
                file: fi,
                record: rec[0].to_string(),
                line: rec[1].to_string(),
                identity_reference: id.to_string(),
                outcome,
                http_status: rec[4].to_string(),
                message: rec[7].to_string(),
            };
            match earlier {
                Some(i) => table[i] = Some(row),
                None if table_live < TABLE_CAP => {
                    if let Some(k) = key {
                        in_table.insert(k, table.len());
                    }
                    table.push(Some(row));
                    table_live += 1;
                }
                None => {}
            }
        }

        // The events file: configured rates, pauses, the exit code.
        let events = read_events(path);
        let mut configured = Vec::new();
        let mut exit_code = None;
        let mut open: Option<Pause> = None;
        for e in &events {
            let time = e["time"].as_str().unwrap_or("").to_string();
            let ms = parse_ms(&time);
            match e["event"].as_str() {
                Some("started") => {
                    if let (Some(ms), Some(ps)) = (ms, e["ratePerSecond"].as_f64()) {
                        configured.push(ConfiguredRate {
                            time: time.clone(),
                            rate: e["rate"].as_str().unwrap_or("").to_string(),
                            per_minute: ps * 60.0,
                            unix_ms: ms,
                        });
                    }
                    exit_code = None;
                }
                Some("paused") => {
                    if let Some(p) = open.take() {
                        pauses.push(p);
                    }
                    if let Some(ms) = ms {
                        open = Some(Pause {
                            results: shown.clone(),
                            start: time.clone(),
                            end: None,
                            seconds: None,
                            message: e["message"].as_str().unwrap_or("").to_string(),
                            run_ended: false,
                            start_ms: ms,
                            end_ms: None,
                        });
                    }
                }
                Some("resumed") | Some("ended") => {
                    if let Some(mut p) = open.take() {
                        p.end = Some(time.clone());
                        p.end_ms = ms;
                        p.run_ended = e["event"] == "ended";
                        p.seconds = e["pausedSeconds"]
                            .as_f64()
                            .or_else(|| ms.map(|end| (end - p.start_ms).max(0) as f64 / 1000.0));
                        pauses.push(p);
                    }
                    if e["event"] == "ended" {
                        exit_code = e["exitCode"].as_i64();
                    }
                }
                _ => {}
            }
        }
        if let Some(p) = open.take() {
            pauses.push(p);
        }
        configured_all.extend(configured.iter().cloned());
        per_file.push(FileFigures {
            results: shown,
            rows: fc.total(),
            counts: fc,
            first_completed_at: first_ms.map(format_ms),
            last_completed_at: last_ms.map(format_ms),
            configured,
            exit_code,
            not_accepted: fc.not_accepted(),
        });
    }

    let final_counts = if several {
        let mut c = unkeyed;
        for o in last.values() {
            c.add(*o);
        }
        c
    } else {
        counts
    };
    let rows: Vec<TableRow> = table.into_iter().flatten().collect();
    let total = final_counts.not_accepted();
    let not_accepted = Table {
        total,
        shown: rows.len() as u64,
        left_out: total.saturating_sub(rows.len() as u64),
        rows,
    };

    configured_all.sort_by_key(|c| c.unix_ms);
    let mut per_minute = Vec::with_capacity(minutes.len());
    let mut minute_histograms = Vec::with_capacity(minutes.len());
    for (m, agg) in minutes {
        let end_ms = (m + 1) * 60_000;
        let configured_per_minute = configured_all
            .iter()
            .rev()
            .find(|c| c.unix_ms < end_ms)
            .map(|c| c.per_minute);
        per_minute.push(Minute {
            minute: format_minute(m),
            unix_minute: m,
            counts: agg.counts,
            requests: agg.requests,
            configured_per_minute,
            latency_ms: agg.hist.percentiles(false),
        });
        minute_histograms.push(agg.hist);
    }

    let mut reasons: Vec<Reason> = reasons.into_values().collect();
    reasons.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.outcome.cmp(&b.outcome))
            .then(a.message.cmp(&b.message))
    });
    let other_reasons = overflow_reasons
        + reasons
            .iter()
            .skip(TOP_REASONS)
            .map(|r| r.count)
            .sum::<u64>();
    reasons.truncate(TOP_REASONS);

    let mut latency_ms = histogram.percentiles(true);
    if latency_ms.count > 0 {
        latency_ms.mean =
            Some((latency_sum as f64 / latency_ms.count as f64 * 10.0).round() / 10.0);
    }
    pauses.sort_by_key(|p| p.start_ms);

    Ok(Figures {
        generated_at: crate::model::rfc3339_millis(SystemTime::now()),
        files: per_file,
        counts,
        final_counts,
        latency_ms,
        attempts,
        per_minute,
        reasons,
        other_reasons,
        fields,
        pauses,
        not_accepted,
        histogram,
        minute_histograms,
    })
}

/// The keys of a 422 `errors` object (compact JSON); none when it is empty
/// or not an object (a cut one included).
fn field_names(errors: &str) -> Vec<String> {
    if errors.is_empty() {
        return Vec::new();
    }
    match serde_json::from_str::<serde_json::Value>(errors) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// `2026-11-26T12:00:00.123Z` -> Unix milliseconds.
pub fn parse_ms(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}

fn to_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

pub fn format_ms(ms: i64) -> String {
    crate::model::rfc3339_millis(to_time(ms))
}

/// A Unix minute as `2026-11-26T12:00:00Z`.
pub fn format_minute(m: i64) -> String {
    humantime::format_rfc3339_seconds(to_time(m * 60_000)).to_string()
}

/// A Unix minute as `12:00` (UTC), for axis labels.
pub fn clock(m: i64) -> String {
    let s = format_minute(m);
    s.get(11..16).unwrap_or("").to_string()
}

/// The default report path: `export.results.csv` -> `export.results.report.html`.
pub fn default_output(first: &Path) -> PathBuf {
    let name = first
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".csv").unwrap_or(&name);
    first.with_file_name(format!("{stem}.report.html"))
}

/// Writes the page atomically (a temporary file beside it, renamed), mode
/// 0600: it holds identityReferences.
pub fn write_private(path: &Path, text: &str) -> Result<(), ReportError> {
    use std::io::Write;
    let err = |e: std::io::Error| ReportError::Write {
        path: path.display().to_string(),
        reason: crate::model::describe_io(&e),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".kycshare-report")
        .tempfile_in(&dir)
        .map_err(err)?;
    // tempfile creates it 0600.
    tmp.write_all(text.as_bytes()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_times() {
        assert_eq!(
            default_output(Path::new("/x/export.results.csv")),
            Path::new("/x/export.results.report.html")
        );
        let ms = parse_ms("2026-11-26T12:03:04.123Z").unwrap();
        assert_eq!(format_ms(ms), "2026-11-26T12:03:04.123Z");
        assert_eq!(format_minute(ms.div_euclid(60_000)), "2026-11-26T12:03:00Z");
        assert_eq!(clock(ms.div_euclid(60_000)), "12:03");
        assert_eq!(
            field_names(r#"{"email":["x"],"mobileNumber":["y"]}"#),
            ["email", "mobileNumber"]
        );
        assert!(field_names("{\"email\":[\"x…").is_empty());
    }
}
