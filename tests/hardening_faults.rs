//! Hardening, fault matrix: 2,000 rows against an emulator that fails 20%
//! of requests with 500, resets 5% of connections, never answers 2%, adds
//! jittered latency and rate-limits tightly (429 + Retry-After). At the end
//! every record has exactly one outcome, the counts add up, the `failed`
//! rows are exactly the retry file, and what the emulator accepted is what
//! the results say was accepted.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const ROWS: u64 = 2000;

#[test]
fn every_record_gets_one_outcome_under_every_fault_at_once() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| {
        c.record = Some(rec.clone());
        c.fail_rate = 0.2;
        c.reset_rate = 0.05;
        c.hang_rate = 0.02;
        c.latency = Duration::from_millis(2);
        c.latency_jitter = Duration::from_millis(20);
        // A tight limit on a short window: 429s with Retry-After of a second.
        c.rate_limit_per_min = Some(300);
        c.rate_window = Duration::from_secs(1);
        c.seed = Some(20_251_126);
    });
    let input = export(dir.path(), "export.csv", "m", ROWS as usize);
    let res = dir.path().join("export.results.csv");
    let retry = dir.path().join("export.retry.csv");
    let out = run(run_cmd(&input, &emu.url).args([
        "--rate",
        "450/s",
        "--concurrency",
        "32",
        "--timeout",
        "1",
        "--max-attempts",
        "4",
        "--json",
    ]));
    let elapsed = t0.elapsed();
    let err = stderr(&out);
    assert!(matches!(code(&out), 0 | 1), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // One outcome per record, counts that add up.
    assert_one_row_per_record(&res, ROWS);
    let rows = results(&res);
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(j["total"], ROWS);
    let mut sum = 0;
    for o in [
        "accepted",
        "invalid",
        "duplicate",
        "rejected",
        "failed",
        "skipped",
        "validated",
    ] {
        let n = rows.iter().filter(|r| r["outcome"] == o).count() as u64;
        assert_eq!(j[o], n, "summary count of {o}");
        sum += n;
    }
    assert_eq!(sum, ROWS, "the counts add up to the total");
    for r in &rows {
        let attempts: u32 = r["attempts"].parse().unwrap();
        // `attempts` counts requests sent (SPEC); more than --max-attempts
        // only when the breaker paused the run and gave attempts back.
        let paused = err.contains("Banxa answering again");
        assert!(
            (1..=4).contains(&attempts) || (paused && attempts > 4),
            "{r:?}"
        );
        assert!(
            matches!(r["outcome"].as_str(), "accepted" | "failed"),
            "{r:?}"
        );
    }

    // `failed` rows are exactly the retry file's rows.
    let failed = ids_with_outcome(&res, "failed");
    let mut retry_rows: Vec<String> = Vec::new();
    if retry.exists() {
        let mut r = csv::Reader::from_path(&retry).unwrap();
        retry_rows = r.records().map(|x| x.unwrap()[0].to_string()).collect();
    }
    assert_eq!(
        retry_rows.len(),
        failed.len(),
        "no row twice in the retry file"
    );
    assert_eq!(retry_rows.into_iter().collect::<BTreeSet<_>>(), failed);

    // The emulator's accepted set is the results' accepted set.
    assert_eq!(emulator_accepted(&rec), ids_with_outcome(&res, "accepted"));

    // Every fault really happened.
    let s = emu.stats();
    let n429 = s.by_status.get("429").copied().unwrap_or(0);
    let n500 = s.by_status.get("500").copied().unwrap_or(0);
    eprintln!(
        "fault matrix: {} requests, 500: {n500}, 429: {n429}, resets: {}, hangs: {}; failed rows: {}; {:.1} s",
        s.share_requests,
        s.resets,
        s.hangs,
        failed.len(),
        elapsed.as_secs_f64()
    );
    assert!(n429 > 0, "the rate limit was hit");
    assert!(n500 > 0 && s.resets > 0 && s.hangs > 0, "{s:?}");
    assert!(!failed.is_empty(), "with 4 attempts some rows fail");
}
