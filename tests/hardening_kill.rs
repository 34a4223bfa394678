//! Hardening, kill and resume: a 5,000-row import is SIGKILLed at seeded
//! random moments, resumed each time, and nothing is lost or doubled
//! beyond what was in flight at the kills.

mod common;
use common::*;

use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROWS: usize = 5000;
const CONCURRENCY: usize = 32;
const KILLS: usize = 12;
const SEED: u64 = 0x6b69_6c6c;

#[test]
fn sigkill_at_random_moments_then_resume_loses_nothing() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| {
        c.record = Some(rec.clone());
        c.latency = Duration::from_millis(5);
        c.latency_jitter = Duration::from_millis(15);
        c.seed = Some(SEED);
    });
    let input = export(dir.path(), "export.csv", "k", ROWS);
    let res = dir.path().join("export.results.csv");
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut kills = 0;
    let mut runs = 0;
    let spawn = |runs: usize| {
        let log = std::fs::File::create(dir.path().join(format!("stderr-{runs}.txt"))).unwrap();
        let mut cmd = run_cmd(&input, &emu.url);
        cmd.args(["--concurrency", "32", "--rate", "100000/s"])
            .stdout(Stdio::null())
            .stderr(log);
        if res.exists() {
            cmd.arg("--resume");
        }
        cmd.spawn().expect("spawn kycshare run")
    };
    while kills < KILLS {
        runs += 1;
        let before = count_lines(&res);
        let mut child = spawn(runs);
        if rng.random_range(0..4) == 0 {
            // Anywhere from start-up (before the header is written) on.
            std::thread::sleep(Duration::from_millis(rng.random_range(0..120)));
        } else {
            let target = before.max(1) + rng.random_range(20..350);
            let grew = wait_until(Duration::from_secs(60), || {
                count_lines(&res) >= target || child.try_wait().unwrap().is_some()
            });
            assert!(grew, "run {runs}: the results file stopped growing");
        }
        if child.try_wait().unwrap().is_some() {
            panic!("run {runs} finished before its kill: too few rows for {KILLS} kills");
        }
        signal(&child, libc::SIGKILL);
        child.wait().unwrap();
        kills += 1;
    }
    runs += 1;
    let mut child = spawn(runs);
    let status = wait_exit(&mut child, Duration::from_secs(120));
    let log = std::fs::read_to_string(dir.path().join(format!("stderr-{runs}.txt"))).unwrap();
    assert_eq!(status.code(), Some(0), "final run: {log}");

    assert_one_row_per_record(&res, ROWS as u64);
    let accepted = ids_with_outcome(&res, "accepted");
    assert_eq!(accepted.len(), ROWS, "every row accepted in the end");
    assert_eq!(
        emulator_accepted(&rec),
        accepted,
        "the emulator's accepted set is the results' accepted set"
    );
    let (ids, extra) = double_sends(&rec);
    eprintln!(
        "kill/resume: {kills} SIGKILLs over {runs} runs; {ids} rows sent more than once ({extra} extra requests); bound {}; {:.1} s",
        CONCURRENCY * kills,
        t0.elapsed().as_secs_f64()
    );
    assert!(
        ids <= CONCURRENCY * kills,
        "{ids} rows sent twice, more than the {} that can be in flight at {kills} kills",
        CONCURRENCY * kills
    );
    // A kill leaves no half-built retry file behind (they hold customer data).
    let litter: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("kycshare"))
        .collect();
    assert!(
        litter.is_empty(),
        "temporary files left by the kills: {litter:?}"
    );
}

/// A kill between creating the results file and writing its header leaves
/// an empty file, or a header cut short: `--resume` must write the header.
#[test]
fn resume_after_a_kill_before_the_header_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|_| {});
    let input = export(dir.path(), "e.csv", "h", 5);
    let res = dir.path().join("e.results.csv");
    for partial in ["", "record,line,identityRef"] {
        std::fs::write(&res, partial).unwrap();
        let out = run(run_cmd(&input, &emu.url).args(["--rate", "1000/s", "--resume"]));
        assert_eq!(code(&out), 0, "{partial:?}: {}", stderr(&out));
        assert_one_row_per_record(&res, 5);
    }
}
