//! The run's metrics, through the Prometheus project's Rust client
//! (`prometheus-client`): one registry, holding one collector that reads
//! the run's live state (the journal's [`Counts`], the dispatcher's
//! [`Live`]) at every encode. It is
//!
//! - written to `--metrics-file` at every exit, exit 2 included (Prometheus
//!   text format 0.0.4, for node_exporter's textfile collector: name the
//!   file `*.prom` in the collector's directory), atomically (a temporary
//!   file in the same folder, synced, renamed over it) and mode 0644
//!   (node_exporter usually runs as another user);
//! - served at `--metrics-listen ADDR` (`GET /metrics`, OpenMetrics text)
//!   while the run lasts.
//!
//! Per-run values are gauges (a new run starts from zero; the file keeps
//! the last run's values); the latency is a histogram. Counts and times
//! only: never an identity, token, email, number or secret.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::Counts;
use crate::model::{Live, Outcome};

/// How the run ended (set once, at exit).
#[derive(Debug, Clone, Default)]
pub struct Ending {
    pub exit_code: i32,
    /// For exit 2 and 3: what kind of error (`usage`, `credentials`,
    /// `input`, `ledger`, … or the stop's kind: `unauthorized`, `outage`,
    /// `signal`, …).
    pub error_class: Option<String>,
    pub ended_at: Option<SystemTime>,
    /// The end of the last run that completed (exit 0 or 1): this one, or
    /// the ledger's or the previous metrics file's memory; `None`: never.
    pub last_success: Option<SystemTime>,
}

/// Everything the collector reads.
#[derive(Debug)]
struct Source {
    counts: Arc<Counts>,
    live: Arc<Live>,
    started: SystemTime,
    configured_rate: Option<f64>,
    /// Records read from the input so far (what is left = read - done).
    ending: Mutex<Option<Ending>>,
}

/// The run's metrics: cheap to clone, shared by the run, the file writer
/// and the `/metrics` server.
#[derive(Clone, Debug)]
pub struct RunMetrics {
    source: Arc<Source>,
    registry: Arc<Registry>,
}

impl RunMetrics {
    /// Metrics over a run's live state. `configured_rate`: `--rate` in
    /// requests per second.
    pub fn new(counts: Arc<Counts>, live: Arc<Live>, configured_rate: Option<f64>) -> RunMetrics {
        let source = Arc::new(Source {
            counts,
            live,
            started: SystemTime::now(),
            configured_rate,
            ending: Mutex::new(None),
        });
        let mut registry = Registry::default();
        registry.register_collector(Box::new(RunCollector(source.clone())));
        RunMetrics {
            source,
            registry: Arc::new(registry),
        }
    }

    /// The metrics of a run that ended before it started (exit 2): zeros,
    /// the exit code and the error class.
    pub fn failed_before_start(ending: Ending) -> RunMetrics {
        let m = RunMetrics::new(Arc::new(Counts::default()), Arc::new(Live::default()), None);
        m.end(ending);
        m
    }

    pub fn end(&self, ending: Ending) {
        *self.source.ending.lock().unwrap_or_else(|e| e.into_inner()) = Some(ending);
    }

    /// The Prometheus text format (0.0.4), as the file holds it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// OpenMetrics text, as `/metrics` serves it.
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Writes the file atomically: a temporary file beside it, synced,
    /// renamed over it.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        write_atomically(path, self.render().as_bytes())
    }
}

#[derive(Debug)]
struct RunCollector(Arc<Source>);

fn gauge<N>(e: &mut DescriptorEncoder, name: &str, help: &str, v: N) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    let m = e.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Collector for RunCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let ending = s.ending.lock().unwrap_or_else(|p| p.into_inner()).clone();
        {
            let mut fam = e.encode_descriptor(
                "kycshare_rows",
                "Records of this run by outcome (records resumed from an earlier run included).",
                None,
                MetricType::Gauge,
            )?;
            for o in Outcome::ALL {
                let labels = [("outcome", o.as_str())];
                ConstGauge::new(s.counts.get(o) as i64).encode(fam.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut e,
            "kycshare_requests_sent",
            "Requests sent to Banxa by this run, retries and probes of rows included.",
            s.live.requests() as i64,
        )?;
        {
            let by = s.live.by_status();
            let mut fam = e.encode_descriptor(
                "kycshare_requests",
                "Requests sent to Banxa by this run, by the answer's HTTP status (`none`: no answer: connection error or timeout).",
                None,
                MetricType::Gauge,
            )?;
            for (status, n) in by {
                let status = status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "none".into());
                let labels = [("status", status.as_str())];
                ConstGauge::new(n as i64).encode(fam.encode_family(&labels)?)?;
            }
        }
        {
            let (sum, count, buckets) = s.live.latency();
            let m = e.encode_descriptor(
                "kycshare_request_duration_seconds",
                "Time from sending a request to its answer (a minted token's round trip included).",
                None,
                MetricType::Histogram,
            )?;
            let mut m = m;
            m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum, count, &buckets, None,
            )?;
        }
        gauge(
            &mut e,
            "kycshare_requests_in_flight",
            "Requests sent and not answered yet.",
            s.live
                .in_flight
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(0),
        )?;
        gauge(
            &mut e,
            "kycshare_achieved_rate_per_second",
            "Requests per second over the last minute.",
            s.live.achieved_rate(),
        )?;
        if let Some(r) = s.configured_rate {
            gauge(
                &mut e,
                "kycshare_configured_rate_per_second",
                "The rate limit of the run (--rate), in requests per second.",
                r,
            )?;
        }
        gauge(
            &mut e,
            "kycshare_pauses",
            "Times this run paused for an outage (the breaker opened).",
            s.live.pauses.load(std::sync::atomic::Ordering::Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "kycshare_paused",
            "1 while the run is paused for an outage (probing Banxa), else 0.",
            s.live.paused.load(std::sync::atomic::Ordering::Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "kycshare_tokens_minted",
            "Share tokens minted from Sumsub by this run (--mint).",
            s.live
                .tokens_minted
                .load(std::sync::atomic::Ordering::Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "kycshare_ledger_skipped",
            "Records skipped because the ledger holds them as accepted (--ledger).",
            s.counts.get(Outcome::Skipped) as i64,
        )?;
        gauge(
            &mut e,
            "kycshare_run_start_timestamp_seconds",
            "When this run started, in Unix seconds.",
            unix(s.started),
        )?;
        let end = ending
            .as_ref()
            .and_then(|x| x.ended_at)
            .unwrap_or_else(SystemTime::now);
        gauge(
            &mut e,
            "kycshare_run_duration_seconds",
            "Wall time of this run so far (of the whole run once it ended).",
            end.duration_since(s.started)
                .unwrap_or_default()
                .as_secs_f64(),
        )?;
        gauge(
            &mut e,
            "kycshare_running",
            "1 while the run is going, 0 once it ended.",
            ending.is_none() as i64,
        )?;
        if let Some(x) = &ending {
            if let Some(t) = x.ended_at {
                gauge(
                    &mut e,
                    "kycshare_last_run_timestamp_seconds",
                    "When the last run ended (any exit code), in Unix seconds.",
                    unix(t),
                )?;
            }
            gauge(
                &mut e,
                "kycshare_last_success_timestamp_seconds",
                "When the last run that completed (exit 0 or 1: every record has its outcome) ended, in Unix seconds; 0 when none has yet.",
                x.last_success.map(unix).unwrap_or(0.0),
            )?;
            gauge(
                &mut e,
                "kycshare_exit_code",
                "Exit code of the last run: 0 all done, 1 some records not accepted, 2 nothing sent (usage, input or set-up error), 3 stopped (resumable).",
                x.exit_code as i64,
            )?;
            let mut fam = e.encode_descriptor(
                "kycshare_error",
                "1 for the kind of error that ended the last run with exit 2 or 3 (no series when it completed).",
                None,
                MetricType::Gauge,
            )?;
            if let Some(class) = &x.error_class {
                let labels = [("class", class.as_str())];
                ConstGauge::new(1i64).encode(fam.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The value of `kycshare_last_success_timestamp_seconds` in an earlier
/// metrics file (so that a run that fails keeps the last success known),
/// `None` when absent, unreadable or 0.
pub fn previous_last_success(path: &Path) -> Option<SystemTime> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("kycshare_last_success_timestamp_seconds "))?
        .trim()
        .parse()
        .ok()?;
    (v > 0.0 && v.is_finite())
        .then(|| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs_f64(v))
}

/// A temporary file beside `path`, synced, renamed over it; mode 0644.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".kycshare-metrics")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
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
        let counts = Arc::new(Counts::default());
        counts.add(Outcome::Accepted, 10);
        counts.add(Outcome::Skipped, 980);
        counts.add(Outcome::Failed, 3);
        let live = Arc::new(Live::default());
        live.observe(Some(202), Duration::from_millis(40));
        live.observe(Some(500), Duration::from_millis(70));
        live.observe(None, Duration::from_secs(30));
        RunMetrics::new(counts, live, Some(7.5))
    }

    /// The value of the series `name` (exact, labels included).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{series} ")))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn live_values_then_the_ending() {
        let m = sample();
        let t = m.render();
        assert_eq!(value(&t, "kycshare_rows{outcome=\"accepted\"}"), Some(10.0));
        assert_eq!(value(&t, "kycshare_rows{outcome=\"invalid\"}"), Some(0.0));
        assert_eq!(value(&t, "kycshare_requests{status=\"500\"}"), Some(1.0));
        assert_eq!(value(&t, "kycshare_requests{status=\"none\"}"), Some(1.0));
        assert_eq!(value(&t, "kycshare_requests_sent"), Some(3.0));
        assert_eq!(value(&t, "kycshare_configured_rate_per_second"), Some(7.5));
        assert_eq!(
            value(&t, "kycshare_request_duration_seconds_bucket{le=\"0.05\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&t, "kycshare_request_duration_seconds_count"),
            Some(3.0)
        );
        assert_eq!(value(&t, "kycshare_running"), Some(1.0));
        assert!(t.contains("# TYPE kycshare_rows gauge"), "{t}");
        assert!(!t.contains("kycshare_exit_code"), "not while running: {t}");
        m.end(Ending {
            exit_code: 3,
            error_class: Some("outage".into()),
            ended_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_694_400)),
            last_success: None,
        });
        let t = m.render();
        assert_eq!(value(&t, "kycshare_exit_code"), Some(3.0));
        assert_eq!(value(&t, "kycshare_error{class=\"outage\"}"), Some(1.0));
        assert_eq!(
            value(&t, "kycshare_last_success_timestamp_seconds"),
            Some(0.0)
        );
        assert_eq!(
            value(&t, "kycshare_last_run_timestamp_seconds"),
            Some(1_795_694_400.0)
        );
        assert_eq!(value(&t, "kycshare_running"), Some(0.0));
        let om = m.render_openmetrics();
        assert!(om.ends_with("# EOF\n"), "{om}");
    }

    #[test]
    fn written_atomically_readable_replaced_and_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kycshare.prom");
        std::fs::write(&path, "old").unwrap();
        let m = sample();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_608_000);
        m.end(Ending {
            exit_code: 0,
            last_success: Some(at),
            ended_at: Some(at),
            ..Ending::default()
        });
        m.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), m.render());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(previous_last_success(&path), Some(at));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("kycshare.prom")]);
        assert!(m.write(&dir.path().join("no/such.prom")).is_err());
    }
}
