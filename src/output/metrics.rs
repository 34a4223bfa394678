//! `--metrics-file`: the run's figures in the Prometheus text exposition
//! format, for node_exporter's textfile collector (name the file `*.prom`
//! in the collector's directory).
//!
//! The file is replaced atomically (a temporary file in the same folder,
//! synced, then renamed over it), so the collector never reads half a file.
//! It is mode 0644: node_exporter usually runs as another user. It holds
//! counts and times only, never an identity, token, email or number.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::SystemTime;

use crate::model::Outcome;

/// What a run reports to the metrics file.
#[derive(Debug, Clone, Default)]
pub struct RunMetrics {
    /// Records by outcome; every outcome is written, 0 included.
    pub rows: Vec<(Outcome, u64)>,
    pub duration_seconds: f64,
    /// When the run ended.
    pub ended_at: Option<SystemTime>,
    /// End of the last run that exited 0: this run's end if it did, else the
    /// ledger's memory of an earlier one. `None` (no ledger, never a success
    /// yet): the line is left out.
    pub last_success: Option<SystemTime>,
    pub exit_code: i32,
    pub requests_sent: u64,
    /// Labels put on every series, e.g. `("job", "nightly")`. Keep them
    /// constant from run to run (not a dated file name): each new value is a
    /// new series.
    pub labels: Vec<(String, String)>,
}

impl RunMetrics {
    /// Counts from a run's summary.
    pub fn from_summary(s: &crate::output::Summary) -> RunMetrics {
        RunMetrics {
            rows: vec![
                (Outcome::Accepted, s.accepted),
                (Outcome::Invalid, s.invalid),
                (Outcome::Duplicate, s.duplicate),
                (Outcome::Rejected, s.rejected),
                (Outcome::Failed, s.failed),
                (Outcome::Skipped, s.skipped),
                (Outcome::Validated, s.validated),
            ],
            duration_seconds: s.elapsed_seconds,
            exit_code: s.exit_code,
            requests_sent: s.requests_sent,
            ..RunMetrics::default()
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let base = labels(&self.labels, None);
        header(
            &mut out,
            "kycshare_rows_total",
            "counter",
            "Records of the last run, by outcome.",
        );
        for o in Outcome::ALL {
            let n = self
                .rows
                .iter()
                .filter(|(k, _)| *k == o)
                .map(|(_, n)| n)
                .sum::<u64>();
            let l = labels(&self.labels, Some(("outcome", o.as_str())));
            let _ = writeln!(out, "kycshare_rows_total{l} {n}");
        }
        let gauge = |out: &mut String, name: &str, kind: &str, help: &str, v: String| {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name}{base} {v}");
        };
        gauge(
            &mut out,
            "kycshare_requests_sent_total",
            "counter",
            "Requests sent to Banxa by the last run, retries included.",
            self.requests_sent.to_string(),
        );
        gauge(
            &mut out,
            "kycshare_run_duration_seconds",
            "gauge",
            "Wall time of the last run.",
            format!("{:.3}", self.duration_seconds),
        );
        if let Some(t) = self.ended_at {
            gauge(
                &mut out,
                "kycshare_last_run_timestamp_seconds",
                "gauge",
                "When the last run ended, in Unix seconds.",
                unix(t),
            );
        }
        if let Some(t) = self.last_success {
            gauge(
                &mut out,
                "kycshare_last_success_timestamp_seconds",
                "gauge",
                "When the last run that exited 0 ended, in Unix seconds.",
                unix(t),
            );
        }
        gauge(
            &mut out,
            "kycshare_exit_code",
            "gauge",
            "Exit code of the last run: 0 all done, 1 some records not accepted, 2 nothing sent (usage or input error), 3 aborted.",
            self.exit_code.to_string(),
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn unix(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// `{a="x",b="y"}` with Prometheus escaping, or nothing when there are no labels.
fn labels(constant: &[(String, String)], extra: Option<(&str, &str)>) -> String {
    let all: Vec<(&str, &str)> = constant
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra)
        .collect();
    if all.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in all.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

/// Writes the metrics file atomically: a temporary file beside it, synced,
/// renamed over it.
pub fn write_metrics(path: &Path, m: &RunMetrics) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".kycshare-metrics")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(m.render().as_bytes())?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample() -> RunMetrics {
        RunMetrics {
            rows: vec![
                (Outcome::Accepted, 10),
                (Outcome::Skipped, 980),
                (Outcome::Failed, 3),
                (Outcome::Invalid, 7),
            ],
            duration_seconds: 12.3456,
            ended_at: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_694_400_123)),
            last_success: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_608_000)),
            exit_code: 1,
            requests_sent: 21,
            labels: vec![],
        }
    }

    #[test]
    fn exact_text() {
        let want = "\
# HELP kycshare_rows_total Records of the last run, by outcome.
# TYPE kycshare_rows_total counter
kycshare_rows_total{outcome=\"accepted\"} 10
kycshare_rows_total{outcome=\"invalid\"} 7
kycshare_rows_total{outcome=\"duplicate\"} 0
kycshare_rows_total{outcome=\"rejected\"} 0
kycshare_rows_total{outcome=\"failed\"} 3
kycshare_rows_total{outcome=\"skipped\"} 980
kycshare_rows_total{outcome=\"validated\"} 0
# HELP kycshare_requests_sent_total Requests sent to Banxa by the last run, retries included.
# TYPE kycshare_requests_sent_total counter
kycshare_requests_sent_total 21
# HELP kycshare_run_duration_seconds Wall time of the last run.
# TYPE kycshare_run_duration_seconds gauge
kycshare_run_duration_seconds 12.346
# HELP kycshare_last_run_timestamp_seconds When the last run ended, in Unix seconds.
# TYPE kycshare_last_run_timestamp_seconds gauge
kycshare_last_run_timestamp_seconds 1795694400.123
# HELP kycshare_last_success_timestamp_seconds When the last run that exited 0 ended, in Unix seconds.
# TYPE kycshare_last_success_timestamp_seconds gauge
kycshare_last_success_timestamp_seconds 1795608000.000
# HELP kycshare_exit_code Exit code of the last run: 0 all done, 1 some records not accepted, 2 nothing sent (usage or input error), 3 aborted.
# TYPE kycshare_exit_code gauge
kycshare_exit_code 1
";
        assert_eq!(sample().render(), want);
    }

    #[test]
    fn labels_are_escaped_and_unknown_success_is_left_out() {
        let mut m = sample();
        m.last_success = None;
        m.labels = vec![("job".into(), "night\"ly\\\n".into())];
        let t = m.render();
        assert!(
            t.contains("kycshare_rows_total{job=\"night\\\"ly\\\\\\n\",outcome=\"failed\"} 3\n")
        );
        assert!(t.contains("kycshare_exit_code{job=\"night\\\"ly\\\\\\n\"} 1\n"));
        assert!(!t.contains("last_success"));
    }

    #[test]
    fn written_atomically_readable_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kycshare.prom");
        std::fs::write(&path, "old").unwrap();
        write_metrics(&path, &sample()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), sample().render());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("kycshare.prom")]);
        // A folder that does not exist: an error, and nothing written.
        assert!(write_metrics(&dir.path().join("no/such.prom"), &sample()).is_err());
    }
}
