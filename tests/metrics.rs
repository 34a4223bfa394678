//! Metrics (SPEC "Metrics"): the file at every exit (0, 1, 2 and 3), read
//! back by a Prometheus text parser (`prometheus-parse`); per-run values
//! are gauges; `/metrics` served live and changing during a slow run.

mod common;
use common::*;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

/// The samples of a metrics text, by `name{labels}` (labels sorted).
fn parse(text: &str) -> (HashMap<String, f64>, prometheus_parse::Scrape) {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a valid exposition");
    let mut by = HashMap::new();
    for s in &scrape.samples {
        let mut labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        let v = match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        by.insert(key, v);
    }
    (by, scrape)
}

fn read_metrics(path: &std::path::Path) -> (HashMap<String, f64>, String) {
    let text = std::fs::read_to_string(path).expect("the metrics file is written");
    let (by, _) = parse(&text);
    (by, text)
}

#[test]
fn the_file_is_written_at_exit_0_1_2_and_3() {
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("kycshare.prom");
    let emu = Emu::start(|c| c.fail_always = vec!["m-2".into()]);

    // Exit 0.
    let good = export(dir.path(), "good.csv", "g", 5);
    let out = run(run_cmd(&good, &emu.url)
        .args(["--rate", "100/s", "--metrics-file"])
        .arg(&prom));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (m, text) = read_metrics(&prom);
    assert_eq!(m["kycshare_exit_code"], 0.0);
    assert_eq!(m["kycshare_rows{outcome=\"accepted\"}"], 5.0);
    assert_eq!(m["kycshare_requests{status=\"202\"}"], 5.0);
    assert_eq!(m["kycshare_request_duration_seconds_count"], 5.0);
    let inf = text
        .lines()
        .find_map(|l| l.strip_prefix("kycshare_request_duration_seconds_bucket{le=\"+Inf\"} "))
        .unwrap();
    assert_eq!(
        inf.trim(),
        "5",
        "the +Inf bucket holds every request: {text}"
    );
    assert!(text.contains("# TYPE kycshare_rows gauge"), "{text}");
    assert!(
        text.contains("# TYPE kycshare_requests_sent gauge"),
        "{text}"
    );
    assert!(
        !text.contains(" counter"),
        "per-run values are gauges: {text}"
    );
    let success0 = m["kycshare_last_success_timestamp_seconds"];
    assert!(success0 > 1.7e9, "{text}");
    assert!(!m.keys().any(|k| k.starts_with("kycshare_error")), "{text}");

    // Exit 1: a row that always fails.
    let some = export(dir.path(), "some.csv", "m", 4);
    let out = run(run_cmd(&some, &emu.url)
        .args(["--rate", "100/s", "--max-attempts", "2", "--metrics-file"])
        .arg(&prom));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let (m, _) = read_metrics(&prom);
    assert_eq!(m["kycshare_exit_code"], 1.0);
    assert_eq!(m["kycshare_rows{outcome=\"failed\"}"], 1.0);
    assert_eq!(m["kycshare_requests{status=\"500\"}"], 2.0);
    let success1 = m["kycshare_last_success_timestamp_seconds"];
    assert!(
        success1 >= success0,
        "a run that completed (exit 1) is a success for the alert"
    );

    // Exit 2: a missing input; and a missing secret.
    let out = run(run_cmd(&dir.path().join("nope.csv"), &emu.url)
        .arg("--metrics-file")
        .arg(&prom));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let (m, text) = read_metrics(&prom);
    assert_eq!(m["kycshare_exit_code"], 2.0, "{text}");
    assert_eq!(m["kycshare_error{class=\"input\"}"], 1.0, "{text}");
    assert_eq!(
        m["kycshare_last_success_timestamp_seconds"], success1,
        "the last success is kept: {text}"
    );
    let out = run(bin()
        .args(["run"])
        .arg(&good)
        .args(["--base-url", &emu.url, "--force", "--metrics-file"])
        .arg(&prom));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let (m, text) = read_metrics(&prom);
    assert_eq!(m["kycshare_error{class=\"credentials\"}"], 1.0, "{text}");

    // Exit 3: a 401 mid-run.
    let emu401 = Emu::start(|c| c.unauth_after = Some(2));
    let stop = export(dir.path(), "stop.csv", "s", 20);
    let out = run(run_cmd(&stop, &emu401.url)
        .args(["--rate", "50/s", "--concurrency", "1", "--metrics-file"])
        .arg(&prom));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let (m, text) = read_metrics(&prom);
    assert_eq!(m["kycshare_exit_code"], 3.0, "{text}");
    assert_eq!(m["kycshare_error{class=\"unauthorized\"}"], 1.0, "{text}");
    assert_eq!(m["kycshare_requests{status=\"401\"}"], 1.0, "{text}");
    assert_eq!(m["kycshare_last_success_timestamp_seconds"], success1);
    // Nothing personal.
    for secret in [KEY, SECRET, "example.com", "tok-"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

fn scrape(addr: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// A free loopback port.
fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn metrics_are_served_live_and_change_during_a_slow_run() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|_| {});
    let input = export(dir.path(), "slow.csv", "l", 60);
    let addr = format!("127.0.0.1:{}", port());
    let (mut child, rx) =
        spawn(run_cmd(&input, &emu.url).args(["--rate", "20/s", "--metrics-listen", &addr]));
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(&addr).is_ok()
    }));
    std::thread::sleep(Duration::from_millis(700));
    let (head, first) = scrape(&addr);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase().contains("application/openmetrics-text"),
        "{head}"
    );
    assert!(first.ends_with("# EOF\n"), "{first}");
    std::thread::sleep(Duration::from_millis(1500));
    let (_, second) = scrape(&addr);
    let a = parse(&first).0;
    let b = parse(&second).0;
    let sent = |m: &HashMap<String, f64>| m["kycshare_requests_sent"];
    assert!(sent(&b) > sent(&a), "{first}\n---\n{second}");
    assert_eq!(b["kycshare_running"], 1.0);
    assert_eq!(b["kycshare_configured_rate_per_second"], 20.0);
    assert!(b["kycshare_achieved_rate_per_second"] > 5.0, "{second}");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", collect(&rx));
    // Gone with the run.
    assert!(std::net::TcpStream::connect(&addr).is_err());
}

#[test]
fn a_port_in_use_is_exit_2_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|_| {});
    let input = export(dir.path(), "e.csv", "b", 3);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(run_cmd(&input, &emu.url).args(["--metrics-listen", &addr]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--metrics-listen"),
        "{}",
        stderr(&out)
    );
    assert_eq!(emu.stats().share_requests, 0);
}
