//! `kycshare status` on a running, a stopped and a finished run, and
//! across a retry run; one run at a time per results file.

mod common;
use common::*;

use std::time::Duration;

fn status(results: &std::path::Path) -> serde_json::Value {
    let out = run(bin().arg("status").arg(results).arg("--json"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).unwrap()
}

#[test]
fn running_then_finished_and_a_second_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|_| {});
    let input = export(dir.path(), "export.csv", "r", 80);
    let res = dir.path().join("export.results.csv");
    let (mut child, rx) = spawn(run_cmd(&input, &emu.url).args(["--rate", "20/s"]));
    assert!(wait_until(Duration::from_secs(10), || count_lines(&res) > 20));
    let s = status(&res);
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["inputRecords"], 80, "{s}");
    let left = s["left"].as_u64().unwrap();
    assert!(left > 0 && left < 80, "{s}");
    let rate = s["recordsPerSecond"].as_f64().unwrap();
    assert!((10.0..=25.0).contains(&rate), "{s}");
    assert!(s["etaSeconds"].as_u64().is_some(), "{s}");
    // The text form says the same.
    let out = run(bin().arg("status").arg(&res));
    assert!(stdout(&out).contains("running"), "{}", stdout(&out));

    // A second run on the same results would send the same rows: refused.
    let out = run(run_cmd(&input, &emu.url).args(["--resume", "--rate", "20/s"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another kycshare run"),
        "{}",
        stderr(&out)
    );

    let st = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "{}", collect(&rx));
    let s = status(&res);
    assert_eq!(s["state"], "finished", "{s}");
    assert_eq!(s["exitCode"], 0);
    assert_eq!(s["counts"]["accepted"], 80);
    assert_eq!(s["left"], 0);
    assert!(s["resumeCommand"].is_null());
    assert_eq!(emu.stats().share_requests, 80, "nothing sent twice");
}

#[test]
fn stopped_says_how_to_continue_and_a_retry_run_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|c| c.fail_always = vec!["s-4".into(), "s-9".into()]);
    let input = export(dir.path(), "export.csv", "s", 12);
    let res = dir.path().join("export.results.csv");
    // A canary of 5: stopped, with the command that continues it.
    let out = run(run_cmd(&input, &emu.url).args([
        "--rate",
        "100/s",
        "--max-attempts",
        "1",
        "--limit",
        "5",
    ]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let s = status(&res);
    assert_eq!(s["state"], "stopped", "{s}");
    assert_eq!(s["left"], 7, "{s}");
    let resume = s["resumeCommand"].as_str().unwrap().to_string();
    assert!(resume.starts_with("kycshare resume "), "{resume}");
    assert!(
        s["lastError"].as_str().unwrap().contains("record 4"),
        "the last not-accepted row: {s}"
    );
    // The printed command finishes it.
    let out = run_printed(&resume, dir.path());
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let s = status(&res);
    assert_eq!(s["state"], "finished", "{s}");
    assert_eq!(s["counts"]["failed"], 2);
    assert!(s.get("finalCounts").is_none(), "no retry run yet");

    // The retry run of its retry file: s-4 and s-9 now pass.
    let emu2 = Emu::start(|_| {});
    let retry = dir.path().join("export.retry.csv");
    let out = run(run_cmd(&retry, &emu2.url).args(["--rate", "100/s"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s = status(&res);
    assert_eq!(s["retryRuns"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s["retryRuns"][0]["state"], "finished");
    assert_eq!(s["retryRuns"][0]["counts"]["accepted"], 2);
    assert_eq!(s["finalCounts"]["accepted"], 12, "{s}");
    assert!(s["finalCounts"].get("failed").is_none(), "{s}");
}

#[test]
fn a_killed_run_is_stopped_and_a_missing_file_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|_| {});
    let input = export(dir.path(), "export.csv", "k", 100);
    let res = dir.path().join("export.results.csv");
    let (mut child, _rx) = spawn(run_cmd(&input, &emu.url).args(["--rate", "20/s"]));
    assert!(wait_until(Duration::from_secs(10), || count_lines(&res) > 10));
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let s = status(&res);
    assert_eq!(s["state"], "stopped", "a kill releases the lock: {s}");
    assert!(s["resumeCommand"].as_str().is_some(), "{s}");
    let out = run(bin().arg("status").arg(dir.path().join("nope.results.csv")));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("no such results file"),
        "{}",
        stderr(&out)
    );
}
