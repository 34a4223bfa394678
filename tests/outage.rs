//! Outages pause the run instead of failing every row; an unreachable API
//! stops it at once (SPEC "Resume and crash safety").

mod common;
use common::*;

use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_unreachable_port_stops_at_once_and_resume_completes_once_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "export.csv", "u", 50);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let out = run(run_cmd(&input, &url).args(["--rate", "100/s", "--json"]));
    let took = started.elapsed();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")),
        "names the address: {err}"
    );
    assert!(
        err.to_lowercase().contains("refused"),
        "names the cause: {err}"
    );
    let res = dir.path().join("export.results.csv");
    assert!(
        results(&res).iter().all(|r| r["outcome"] != "failed"),
        "no row failed by an unreachable API"
    );
    let cmds = next_commands(&out);
    assert_eq!(cmds.len(), 1, "{cmds:?}");

    let rec = dir.path().join("rec.jsonl");
    let emu = Emu::start_on(port, |c| c.record = Some(rec.clone()));
    let out = run_printed(&cmds[0], dir.path());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_one_row_per_record(&res, 50);
    assert_eq!(emulator_accepted(&rec).len(), 50);
    drop(emu);
}

#[test]
fn a_dns_failure_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "export.csv", "d", 20);
    let out = run(run_cmd(&input, "https://kycshare-test.invalid").args(["--rate", "100/s"]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("kycshare-test.invalid:443"), "{err}");
    assert!(err.contains("DNS"), "{err}");
}

#[test]
fn https_to_a_plain_http_port_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|_| {});
    let input = export(dir.path(), "export.csv", "t", 20);
    let url = emu.url.replace("http://", "https://");
    let out = run(run_cmd(&input, &url).args(["--rate", "100/s"]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("unreachable"), "{err}");
    assert!(err.contains("TLS") || err.contains("http"), "{err}");
    assert_eq!(emu.stats().share_requests, 0);
}

/// A run of `n` rows against an emulator set up by `f`: (exit code, wall
/// time, results file).
fn timed_run(
    dir: &std::path::Path,
    n: usize,
    max_attempts: &str,
    f: impl FnOnce(&mut kycshare::mock::MockConfig),
) -> (i32, Duration, std::path::PathBuf, String) {
    let emu = Emu::start(f);
    let name = format!("e{}.csv", rand_suffix());
    let input = export(dir, &name, "f", n);
    let started = Instant::now();
    let out = run(run_cmd(&input, &emu.url).args([
        "--rate",
        "400/s",
        "--concurrency",
        "16",
        "--max-attempts",
        max_attempts,
    ]));
    let res = input.with_file_name(name.replace(".csv", ".results.csv"));
    (code(&out), started.elapsed(), res, stderr(&out))
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn faults_that_spare_some_rows_do_not_slow_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (c, base, _, err) = timed_run(dir.path(), 200, "5", |_| {});
    assert_eq!(c, 0, "{err}");

    // A 5% error rate: retried, all accepted, no pause worth the name.
    let (c, t, res, err) = timed_run(dir.path(), 200, "8", |cfg| {
        cfg.fail_rate = 0.05;
        cfg.seed = Some(3);
    });
    assert_eq!(c, 0, "{err}");
    assert_one_row_per_record(&res, 200);
    assert!(
        t < base + Duration::from_secs(4),
        "5%: {t:?} vs {base:?}: {err}"
    );

    // Every row fails twice, then passes.
    let (c, t, res, err) = timed_run(dir.path(), 200, "5", |cfg| cfg.fail_first = 2);
    assert_eq!(c, 0, "{err}");
    assert!(results(&res).iter().all(|r| r["outcome"] == "accepted"));
    // Two backoffs per row (full jitter, at most 1 s then 2 s) plus what
    // the breaker costs: a few seconds at most.
    assert!(
        t < base + Duration::from_secs(8),
        "fail-first 2: {t:?} vs {base:?}: {err}"
    );
}

#[test]
fn twenty_rows_of_two_hundred_that_always_fail_end_failed_without_slowing_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (c, base, _, err) = timed_run(dir.path(), 200, "3", |_| {});
    assert_eq!(c, 0, "{err}");
    // Rows f-1, f-11, f-21, …: 20 of the 200, spread through the file.
    let bad: Vec<String> = (0..20).map(|i| format!("f-{}", i * 10 + 1)).collect();
    let (c, t, res, err) = timed_run(dir.path(), 200, "3", |cfg| cfg.fail_always = bad.clone());
    assert_eq!(c, 1, "{err}");
    let rows = results(&res);
    let failed: std::collections::BTreeSet<String> = rows
        .iter()
        .filter(|r| r["outcome"] == "failed")
        .map(|r| r["identityReference"].clone())
        .collect();
    assert_eq!(failed, bad.iter().cloned().collect(), "{err}");
    assert_eq!(
        rows.iter().filter(|r| r["outcome"] == "accepted").count(),
        180
    );
    // Their retries back off (1 s, then up to 2 s) alongside the other rows.
    assert!(
        t < base + Duration::from_secs(6),
        "{t:?} vs {base:?}: {err}"
    );
}

#[test]
fn an_api_failing_every_row_while_answering_probes_fails_the_rows() {
    // 500 to every share but Banxa answers the probe: the failures are the
    // rows' own; they end `failed` after their attempts, not paused forever.
    let dir = tempfile::tempdir().unwrap();
    let (c, t, res, err) = timed_run(dir.path(), 40, "2", |cfg| cfg.fail_rate = 1.0);
    assert_eq!(c, 1, "{err}");
    assert!(
        results(&res).iter().all(|r| r["outcome"] == "failed"),
        "{err}"
    );
    assert!(t < Duration::from_secs(30), "{t:?}");
    assert!(
        err.contains("Banxa answering again"),
        "the pause is logged: {err}"
    );
}

#[test]
fn a_maintenance_window_mid_run_pauses_and_fails_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "export.csv", "w", 120);
    let emu = Emu::start(|c| {
        c.outage_after = Some(Duration::from_secs(1));
        c.outage_for = Duration::from_secs(4);
    });
    // Concurrency auto: many workers wait for the rate limiter's go-ahead;
    // none may send once the breaker is open.
    // --max-attempts 1: a row whose only attempt fails in the moments
    // before the breaker opens is held until a probe tells whether Banxa
    // was up; it was not, so the attempt is given back.
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "40/s", "--max-attempts", "1"]));
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    let res = dir.path().join("export.results.csv");
    assert_one_row_per_record(&res, 120);
    assert!(
        results(&res).iter().all(|r| r["outcome"] == "accepted"),
        "{err}"
    );
    assert!(err.contains("Banxa unreachable since"), "{err}");
    assert!(err.contains("Banxa answering again after"), "{err}");
    // The pause stopped the sends: the 503s are the failures that opened
    // the breaker, the few in flight, and one probe at a time (backing off
    // from 0.5 s over 4 s: about 4), not 4 s of traffic at 40/s.
    let s = emu.stats();
    let unavailable = s.by_status.get("503").copied().unwrap_or(0);
    assert!(unavailable >= 20, "{s:?}");
    assert!(unavailable <= 20 + 10 + 10, "{unavailable} 503s: {s:?}");
}

#[test]
fn a_long_outage_stops_at_max_outage_and_resume_completes() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "export.csv", "l", 80);
    let port;
    let resume;
    {
        let emu = Emu::start(|c| {
            c.outage_after = Some(Duration::from_millis(500));
            c.outage_for = Duration::from_secs(3600);
        });
        port = emu.url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        let started = Instant::now();
        let out = run(run_cmd(&input, &emu.url).args([
            "--rate",
            "50/s",
            "--concurrency",
            "4",
            "--max-outage",
            "3s",
            "--json",
        ]));
        let err = stderr(&out);
        assert_eq!(code(&out), 3, "{err}");
        assert!(started.elapsed() < Duration::from_secs(20), "{err}");
        assert!(err.contains("--max-outage"), "{err}");
        let res = dir.path().join("export.results.csv");
        assert!(
            results(&res).iter().all(|r| r["outcome"] == "accepted"),
            "{err}"
        );
        let cmds = next_commands(&out);
        assert_eq!(cmds.len(), 1, "{cmds:?}");
        assert!(cmds[0].starts_with("kycshare resume "), "{cmds:?}");
        resume = cmds[0].clone();
    }
    // Banxa is back on the same address: the printed command completes.
    let _emu = Emu::start_on(port, |_| {});
    let out = run_printed(&resume, dir.path());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_one_row_per_record(&dir.path().join("export.results.csv"), 80);
}

#[test]
fn the_last_rows_failing_in_an_outage_are_not_failed() {
    // Five rows, all sent into a 3 s outage at --max-attempts 1: too few to
    // open the breaker, so each is held at its last attempt until a probe
    // says whether Banxa is up. It is not: the attempts are given back, the
    // run pauses, and once the window ends every row is accepted.
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "export.csv", "z", 5);
    let emu = Emu::start(|c| {
        c.outage_after = Some(Duration::ZERO);
        c.outage_for = Duration::from_secs(3);
    });
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "20/s", "--max-attempts", "1"]));
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    let res = dir.path().join("export.results.csv");
    assert_one_row_per_record(&res, 5);
    assert!(
        results(&res).iter().all(|r| r["outcome"] == "accepted"),
        "{err}"
    );
    assert!(err.contains("Banxa unreachable since"), "{err}");
}

#[test]
fn a_last_row_failing_on_its_own_ends_failed_after_one_probe() {
    // The only row always gets 500 while Banxa answers the probe: after one
    // probe (about a second) it ends `failed`, as usual.
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "export.csv", "o", 1);
    let emu = Emu::start(|c| c.fail_always = vec!["o-1".to_string()]);
    let started = Instant::now();
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "20/s", "--max-attempts", "2"]));
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    let rows = results(&dir.path().join("export.results.csv"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["outcome"], "failed", "{err}");
    assert_eq!(rows[0]["attempts"], "2", "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
}
