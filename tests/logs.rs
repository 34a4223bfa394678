//! Logs for machines and people (SPEC "Outputs", issue "Visible while it
//! runs"): no colour off a terminal, progress lines off a terminal at
//! `--progress-interval`, text and JSON, and `-v` naming every retry and
//! every record not accepted with its reason.

mod common;
use common::*;

fn esc_free(s: &str) -> bool {
    !s.as_bytes().contains(&0x1b)
}

/// 60 rows at 20/s (3 s): progress lines at a 1 s interval.
fn slow_run(dir: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let emu = Emu::start(|_| {});
    let input = export(dir, "export.csv", "p", 60);
    let out = run(run_cmd(&input, &emu.url)
        .args(["--rate", "20/s", "--progress-interval", "1", "--force"])
        .args(extra));
    (code(&out), stderr(&out))
}

#[test]
fn progress_lines_off_a_terminal_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let (c, err) = slow_run(dir.path(), &[]);
    assert_eq!(c, 0, "{err}");
    assert!(esc_free(&err), "no escape codes in a file: {err:?}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("progress:")).collect();
    assert!(lines.len() >= 2, "a line a second over 3 s: {err}");
    // Records done and total (known once the file is read), counts by
    // outcome, the rate over the interval, the ETA.
    let last = lines.last().unwrap();
    assert!(last.contains(" of 60 ("), "{last}");
    assert!(last.contains("accepted "), "{last}");
    assert!(last.contains("/s over the last 1s"), "{last}");
    assert!(last.contains("ETA "), "{last}");
    // Default verbosity: nothing else at info.
    assert!(!err.contains("run starting"), "{err}");
}

#[test]
fn progress_lines_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let (c, err) = slow_run(dir.path(), &["--log-format", "json"]);
    assert_eq!(c, 0, "{err}");
    let progress: Vec<serde_json::Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("progress:"))
        })
        .collect();
    assert!(progress.len() >= 2, "{err}");
    let last = progress.last().unwrap();
    assert_eq!(last["total"], 60, "{last}");
    assert!(last["done"].as_u64().unwrap() <= 60, "{last}");
    assert!(last["accepted"].as_u64().is_some(), "{last}");
    assert!(last["records_per_second"].as_f64().unwrap() > 5.0, "{last}");
    assert!(last.get("eta_seconds").is_some(), "{last}");
    assert!(esc_free(&err));
}

#[test]
fn colour_only_when_asked_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // A warning at default verbosity (a rate above Banxa's limit).
    let input = export(dir.path(), "e.csv", "c", 2);
    let emu = Emu::start(|_| {});
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "600/min", "-v"]));
    let err = stderr(&out);
    assert!(err.contains("WARN") || err.contains("INFO"), "{err}");
    assert!(esc_free(&err), "auto off a terminal: {err:?}");
    let out =
        run(run_cmd(&input, &emu.url)
            .args(["--rate", "600/min", "-v", "--force", "--color", "always"]));
    assert!(!esc_free(&stderr(&out)), "always: {:?}", stderr(&out));
    let out =
        run(run_cmd(&input, &emu.url)
            .args(["--rate", "600/min", "-v", "--force", "--color", "never"]));
    assert!(esc_free(&stderr(&out)));
}

#[test]
fn verbose_names_every_retry_and_every_record_not_accepted() {
    let dir = tempfile::tempdir().unwrap();
    // Every row fails once (then passes); one row always fails; a bad row.
    let emu = Emu::start(|c| {
        c.fail_first = 1;
        c.fail_always = vec!["v-3".into()];
    });
    let input = export(dir.path(), "export.csv", "v", 6);
    let mut text = std::fs::read_to_string(&input).unwrap();
    text.push_str("v-7,not-an-email,+61 400000007,tok-v-7-Zx9,x\n");
    std::fs::write(&input, text).unwrap();
    let out = run(run_cmd(&input, &emu.url).args([
        "--rate",
        "50/s",
        "--max-attempts",
        "2",
        "--progress-interval",
        "0",
        "-v",
    ]));
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    for r in 1..=6 {
        assert!(
            err.contains(&format!("record {r} attempt 1 of 2: ")),
            "retry of record {r} logged: {err}"
        );
    }
    assert!(err.contains("retrying in "), "{err}");
    assert!(
        err.contains("record 3 (line 4) failed: gave up after 2 attempts"),
        "{err}"
    );
    assert!(err.contains("record 7 (line 8) invalid: email"), "{err}");
    assert!(
        !err.contains("not-an-email"),
        "no value of a row in the logs: {err}"
    );
    assert!(!err.contains("tok-v-"), "no token in the logs: {err}");
}
