//! Nightly reconciliation with `run --ledger` against the emulator.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;

fn write_export(path: &Path, rows: &[(String, String)]) {
    let mut s = String::from("identityReference,email,mobileNumber,token\n");
    for (i, (id, email)) in rows.iter().enumerate() {
        s.push_str(&format!("{id},{email},6141{:07},tok-{id}\n", i));
    }
    std::fs::write(path, s).unwrap();
}

fn sent_ids(record: &Path) -> BTreeSet<String> {
    record_lines(record)
        .into_iter()
        .filter_map(|r| r.identity_reference)
        .collect()
}

fn with_outcome(res: &Path, outcome: &str) -> BTreeSet<String> {
    results(res)
        .into_iter()
        .filter(|r| r["outcome"] == outcome)
        .map(|r| r["identityReference"].clone())
        .collect()
}

#[test]
fn three_nights_send_only_new_changed_and_failed_rows() {
    let dir = tempfile::tempdir().unwrap();
    three_nights(dir.path(), dir.path().join("ledger.db").as_os_str());
}

#[test]
fn three_nights_send_only_new_changed_and_failed_rows_postgres() {
    let Some(url) = pg_ledger("three_nights") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    three_nights(dir.path(), url.as_ref());
}

fn three_nights(dir: &Path, ledger: &OsStr) {
    let metrics = dir.join("kycshare.prom");
    let input = dir.join("export.csv");
    let res = dir.join("export.results.csv");
    let mut rows: Vec<(String, String)> = (1..=60)
        .map(|i| (format!("n-{i}"), format!("n{i}@example.com")))
        .collect();
    write_export(&input, &rows);

    // Night 1: the emulator fails about a quarter of the rows.
    let rec1 = dir.join("rec1.jsonl");
    let failed1 = {
        let emu = Emu::start(|c| {
            c.fail_rate = 0.25;
            c.seed = Some(3);
            c.record = Some(rec1.clone());
        });
        let out = run(run_cmd(&input, &emu.url)
            .args(["--rate", "500/s", "--max-attempts", "1", "--ledger"])
            .arg(ledger));
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        assert_eq!(sent_ids(&rec1).len(), 60);
        with_outcome(&res, "failed")
    };
    assert!(!failed1.is_empty() && failed1.len() < 30, "{failed1:?}");

    // Night 2: ten new customers and one changed email.
    rows[4].1 = "n5.changed@example.com".into();
    for i in 61..=70 {
        rows.push((format!("n-{i}"), format!("n{i}@example.com")));
    }
    write_export(&input, &rows);
    let rec2 = dir.join("rec2.jsonl");
    {
        let emu = Emu::start(|c| c.record = Some(rec2.clone()));
        let out = run(run_cmd(&input, &emu.url)
            .args(["--rate", "500/s", "--force", "--ledger"])
            .arg(ledger));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let mut expected: BTreeSet<String> = failed1.clone();
    expected.insert("n-5".into());
    expected.extend((61..=70).map(|i| format!("n-{i}")));
    assert_eq!(
        sent_ids(&rec2),
        expected,
        "night 2 sends exactly new, changed and failed rows"
    );
    assert_eq!(with_outcome(&res, "skipped").len(), 70 - expected.len());
    assert!(results(&res)
        .iter()
        .filter(|r| r["outcome"] == "skipped")
        .all(|r| r["attempts"] == "0"));

    // Night 3: nothing new: nothing sent, exit 0, metrics say so.
    let rec3 = dir.join("rec3.jsonl");
    {
        let emu = Emu::start(|c| c.record = Some(rec3.clone()));
        let out = run(run_cmd(&input, &emu.url)
            .args(["--rate", "500/s", "--force", "--json", "--ledger"])
            .arg(ledger)
            .arg("--metrics-file")
            .arg(&metrics));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(j["skipped"], 70);
        assert_eq!(j["requestsSent"], 0);
    }
    assert!(sent_ids(&rec3).is_empty());
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("kycshare_rows{outcome=\"skipped\"} 70"),
        "{prom}"
    );
    assert!(
        prom.contains("kycshare_rows{outcome=\"accepted\"} 0"),
        "{prom}"
    );
    assert!(prom.contains("kycshare_exit_code 0"), "{prom}");
    assert!(
        prom.contains("# TYPE kycshare_run_duration_seconds gauge"),
        "{prom}"
    );
    assert!(
        prom.contains("kycshare_last_success_timestamp_seconds"),
        "{prom}"
    );

    // The ledger command reports the three runs.
    let out = run(bin().arg("ledger").arg(ledger).arg("--json"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(j["runs"].as_array().unwrap().len(), 3, "{j}");
    assert_eq!(j["identities"], 70);
    assert_eq!(j["accepted"], 70);
}

#[test]
fn a_killed_nightly_run_leaves_a_ledger_the_next_run_completes_without_resending() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.db");
    killed_night(&dir, ledger.as_os_str());
}

#[test]
fn a_killed_nightly_run_leaves_a_ledger_the_next_run_completes_without_resending_postgres() {
    let Some(url) = pg_ledger("killed_night") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    killed_night(&dir, url.as_ref());
}

fn killed_night(dir: &tempfile::TempDir, ledger: &OsStr) {
    let input = export(dir.path(), "e.csv", "k", 400);
    let res = dir.path().join("e.results.csv");
    let rec1 = dir.path().join("rec1.jsonl");
    {
        let emu = Emu::start(|c| c.record = Some(rec1.clone()));
        let mut child = run_cmd(&input, &emu.url)
            .args(["--rate", "100/s", "--concurrency", "4", "--ledger"])
            .arg(ledger)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until a quarter of the rows are journaled, then SIGKILL.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let n = std::fs::read_to_string(&res)
                .map(|t| t.lines().count())
                .unwrap_or(0);
            if n > 100 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the run did not progress"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let journaled_accepted = with_outcome(&res, "accepted");
    assert!(journaled_accepted.len() >= 100);
    let accepted_by_banxa: BTreeSet<String> = record_lines(&rec1)
        .into_iter()
        .filter(|r| r.status == 202)
        .filter_map(|r| r.identity_reference)
        .collect();

    // The next night (a fresh results file) completes the job.
    let rec2 = dir.path().join("rec2.jsonl");
    let emu = Emu::start(|c| c.record = Some(rec2.clone()));
    let out = run(run_cmd(&input, &emu.url)
        .args(["--rate", "1000/s", "--force", "--ledger"])
        .arg(ledger));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let resent: BTreeSet<String> = sent_ids(&rec2)
        .intersection(&accepted_by_banxa)
        .cloned()
        .collect();
    // Nothing journaled as accepted is sent again; at most the requests in
    // flight at the kill (accepted by Banxa, never journaled) are.
    assert!(resent.is_disjoint(&journaled_accepted), "{resent:?}");
    assert!(
        resent.len() <= 4,
        "{} re-sent, more than the 4 in flight",
        resent.len()
    );
    let all: BTreeSet<String> = accepted_by_banxa.union(&sent_ids(&rec2)).cloned().collect();
    assert_eq!(all.len(), 400);
}

#[test]
fn a_second_run_on_the_same_ledger_refuses_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.db");
    second_run_refused(&dir, ledger.as_os_str());
}

#[test]
fn a_second_run_on_the_same_ledger_refuses_at_once_postgres() {
    let Some(url) = pg_ledger("second_run") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let err = second_run_refused(&dir, url.as_ref());
    // The holder is named: its pid and host, from the ledger.
    assert!(
        err.contains("in use by another kycshare run (pid ") && err.contains(" on "),
        "{err}"
    );
    assert!(err.contains(&pg_shown(&url)), "{err}");
    assert!(!err.contains(&pg_password(&url)), "{err}");
}

/// Returns the second run's stderr.
fn second_run_refused(dir: &tempfile::TempDir, ledger: &OsStr) -> String {
    let input = export(dir.path(), "e.csv", "q", 300);
    let other = export(dir.path(), "f.csv", "q", 3);
    let emu = Emu::start(|_| {});
    let mut first = run_cmd(&input, &emu.url)
        .args(["--rate", "50/s", "--ledger"])
        .arg(ledger)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let res = dir.path().join("e.results.csv");
    while std::fs::read_to_string(&res)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < 3
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let started = std::time::Instant::now();
    let out = run(run_cmd(&other, &emu.url).arg("--ledger").arg(ledger));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("in use by another kycshare run"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "refused at once"
    );
    assert!(
        !dir.path().join("f.results.csv").exists(),
        "nothing written"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("(pid {}", first.id())),
        "names the holder: {err}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    err
}
