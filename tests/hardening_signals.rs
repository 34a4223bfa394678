//! Hardening, signals: SIGINT and SIGTERM drain (no new rows, requests in
//! flight finish, everything flushed, retry file written, exit 3, the
//! operator told to --resume); a second SIGINT exits at once; `--resume`
//! completes the run either way without a record twice.

mod common;
use common::*;

use std::time::{Duration, Instant};

const ROWS: u64 = 200;

/// One drain by `sig`: returns nothing, asserts everything.
fn drains_on(sig: i32) {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| {
        c.record = Some(rec.clone());
        c.latency = std::time::Duration::from_millis(100);
        c.fail_rate = 0.15;
        c.seed = Some(5);
    });
    let input = export(dir.path(), "export.csv", "s", ROWS as usize);
    let res = dir.path().join("export.results.csv");
    let retry = dir.path().join("export.retry.csv");
    let args = [
        "--concurrency",
        "8",
        "--rate",
        "100000/s",
        "--max-attempts",
        "1",
        "--timeout",
        "5",
    ];
    let (mut child, rx) = spawn(run_cmd(&input, &emu.url).args(args));
    // Signal once some rows are written and (with failures at 15%) some failed.
    assert!(wait_until(Duration::from_secs(30), || count_lines(&res) > 40));
    let at_signal = Instant::now();
    signal(&child, sig);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let drained_in = at_signal.elapsed();
    let err = collect(&rx);
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(
        drained_in < Duration::from_secs(5),
        "in-flight requests finish within the timeout: {drained_in:?}"
    );
    assert!(
        err.contains("kycshare resume "),
        "tells the operator to resume: {err}"
    );
    // Everything the emulator saw is journaled: no request lost in flight.
    let requests = record_lines(&rec).len();
    let rows = results(&res).len();
    assert_eq!(
        requests, rows,
        "every request sent has its row (in-flight ones finished and were flushed)"
    );
    assert!(
        (rows as u64) < ROWS,
        "the run stopped taking new rows ({rows} of {ROWS})"
    );
    assert_eq!(emulator_accepted(&rec), ids_with_outcome(&res, "accepted"));
    // The retry file holds exactly the failed rows.
    let failed = ids_with_outcome(&res, "failed");
    assert!(
        !failed.is_empty(),
        "the seed gives failures before the signal"
    );
    assert_eq!(retry_ids(&retry), failed, "retry file after {sig}");

    // --resume completes the run.
    let out = run(run_cmd(&input, &emu.url).args(args).arg("--resume"));
    assert_eq!(code(&out), 1, "some rows failed: {}", stderr(&out));
    assert_one_row_per_record(&res, ROWS);
    assert_eq!(emulator_accepted(&rec), ids_with_outcome(&res, "accepted"));
    let (twice, _) = double_sends(&rec);
    assert_eq!(twice, 0, "a drain leaves nothing to send twice");
    assert_eq!(
        retry_ids(&retry),
        ids_with_outcome(&res, "failed"),
        "the retry file holds this run's and the earlier run's failures"
    );
}

fn retry_ids(path: &std::path::Path) -> std::collections::BTreeSet<String> {
    let mut r = csv::Reader::from_path(path).expect("retry file");
    r.records().map(|x| x.unwrap()[0].to_string()).collect()
}

#[test]
fn sigint_drains_and_resume_completes() {
    drains_on(libc::SIGINT);
}

#[test]
fn sigterm_drains_and_resume_completes() {
    drains_on(libc::SIGTERM);
}

#[test]
fn a_second_sigint_exits_at_once_and_loses_nothing_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.jsonl");
    // Slow answers: the drain after the first SIGINT takes seconds.
    let emu = Emu::start(|c| {
        c.record = Some(rec.clone());
        c.latency = Duration::from_millis(1500);
    });
    let input = export(dir.path(), "export.csv", "d", 48);
    let res = dir.path().join("export.results.csv");
    let args = [
        "--concurrency",
        "16",
        "--rate",
        "100000/s",
        "--timeout",
        "10",
    ];
    let (mut child, rx) = spawn(run_cmd(&input, &emu.url).args(args));
    assert!(wait_until(Duration::from_secs(30), || count_lines(&res) > 16));
    // The second wave of 16 is in flight now.
    signal(&child, libc::SIGINT);
    let mut err = String::new();
    let draining = wait_until(Duration::from_secs(10), || {
        while let Ok(l) = rx.try_recv() {
            err.push_str(&l);
            err.push('\n');
        }
        err.contains("finishing requests in flight")
    });
    assert!(draining, "the first SIGINT starts a drain: {err}");
    let second = Instant::now();
    signal(&child, libc::SIGINT);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let took = second.elapsed();
    err.push_str(&collect(&rx));
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(
        took < Duration::from_millis(700),
        "the second SIGINT exits at once, not after the 1.5 s answers: {took:?}"
    );
    assert!(err.contains("kycshare resume "), "{err}");
    let journaled = results(&res).len();

    let out = run(run_cmd(&input, &emu.url).args(args).arg("--resume"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_one_row_per_record(&res, 48);
    assert!(results(&res).len() >= journaled);
    assert_eq!(emulator_accepted(&rec), ids_with_outcome(&res, "accepted"));
}
