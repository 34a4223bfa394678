//! `kycshare run` over real loopback HTTP against the emulator.

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};

fn ids_with(path: &std::path::Path, outcome: &str) -> BTreeSet<String> {
    results(path)
        .into_iter()
        .filter(|r| r["outcome"] == outcome)
        .map(|r| r["identityReference"].clone())
        .collect()
}

fn accepted_in_record(recs: &[Rec]) -> Vec<String> {
    recs.iter()
        .filter(|r| r.status == 202)
        .map(|r| r.identity_reference.clone().unwrap())
        .collect()
}

#[test]
fn all_rows_accepted_and_the_wire_is_right() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| c.record = Some(record.clone()));
    let input = export(dir.path(), "export.csv", "a", 40);
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "200/s", "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let res = dir.path().join("export.results.csv");
    let rows = results(&res);
    assert_eq!(rows.len(), 40);
    for r in &rows {
        assert_eq!(r["outcome"], "accepted");
        assert_eq!(r["httpStatus"], "202");
        assert_eq!(r["attempts"], "1");
        assert!(!r["latencyMs"].is_empty());
        assert!(r["completedAt"].ends_with('Z'));
    }
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(j["accepted"], 40);
    assert_eq!(j["total"], 40);
    // The payload on the wire: normalised mobile, vendor default, token.
    let recs = record_lines(&record);
    assert_eq!(recs.len(), 40);
    let p = recs
        .iter()
        .find(|r| r.identity_reference.as_deref() == Some("a-7"))
        .and_then(|r| r.payload.clone())
        .unwrap();
    assert_eq!(
        p,
        serde_json::json!({"identityReference":"a-7","email":"user7.a@example.com","mobileNumber":"61400000007","provider":{"vendor":"sumsub","token":"tok-a-7-Zx9"}})
    );
    assert!(
        !dir.path().join("export.retry.csv").exists(),
        "no retry file when nothing failed"
    );
    let stats = emu.stats();
    assert_eq!(stats.auth_failures.values().sum::<u64>(), 0);
}

#[test]
fn a_422_is_rejected_with_its_errors_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|_| {});
    let input = dir.path().join("x.csv");
    // Valid locally (UTF-8 local part), refused by the emulator's ASCII-only rule.
    std::fs::write(
        &input,
        "identityReference,email,mobileNumber,token\nr-1,jöhn@example.com,61410000001,tok-t1\nr-2,ok@example.com,61410000002,tok-t2\n",
    )
    .unwrap();
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "100/s"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let rows = results(&dir.path().join("x.results.csv"));
    let r1 = rows
        .iter()
        .find(|r| r["identityReference"] == "r-1")
        .unwrap();
    assert_eq!(r1["outcome"], "rejected");
    assert_eq!(r1["httpStatus"], "422");
    assert_eq!(r1["attempts"], "1");
    let errors: serde_json::Value = serde_json::from_str(&r1["errors"]).unwrap();
    assert!(errors.get("email").is_some(), "{errors}");
    assert!(
        !r1["errors"].contains("jöhn"),
        "the email must not be echoed"
    );
    assert_eq!(r1["message"], "The given data was invalid.");
    let r2 = rows
        .iter()
        .find(|r| r["identityReference"] == "r-2")
        .unwrap();
    assert_eq!(r2["outcome"], "accepted");
    assert!(
        stderr(&out).contains("rejected by Banxa"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_500_then_202_takes_two_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|c| c.fail_first = 1);
    let input = export(dir.path(), "e.csv", "f", 5);
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "100/s"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for r in results(&dir.path().join("e.results.csv")) {
        assert_eq!(r["outcome"], "accepted");
        assert_eq!(r["attempts"], "2");
    }
    assert_eq!(emu.stats().by_status.get("500"), Some(&5));
}

#[test]
fn failures_go_to_the_retry_file_which_then_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("export.csv");
    // 6 rows, one invalid, one duplicate: 4 are sent and fail.
    std::fs::write(
        &input,
        "identityReference;email;mobileNumber;token;note\n\
         g-1;g1@example.com;61410000001;tok-t1;\"a;b\"\n\
         g-2;bad-email;61410000002;tok-t2;x\n\
         g-3;g3@example.com;61410000003;tok-t3;x\n\
         g-1;g1b@example.com;61410000009;tok-t9;dup\n\
         g-4;g4@example.com;61410000004;tok-t4;x\n\
         g-5;g5@example.com;61410000005;tok-t5;x\n",
    )
    .unwrap();
    {
        let emu = Emu::start(|c| c.fail_rate = 1.0);
        let out = run(run_cmd(&input, &emu.url).args([
            "--rate",
            "100/s",
            "--max-attempts",
            "2",
            "--delimiter",
            ";",
        ]));
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        let res = dir.path().join("export.results.csv");
        assert_eq!(
            ids_with(&res, "failed"),
            ["g-1", "g-3", "g-4", "g-5"].map(String::from).into()
        );
        for r in results(&res).iter().filter(|r| r["outcome"] == "failed") {
            assert_eq!(r["attempts"], "2");
            assert_eq!(r["httpStatus"], "500");
            assert!(r["traceId"].starts_with("mock-"), "{r:?}");
        }
        let err = stderr(&out);
        assert!(
            err.contains("kycshare run") && err.contains("export.retry.csv"),
            "{err}"
        );
    }
    let retry = dir.path().join("export.retry.csv");
    let text = std::fs::read_to_string(&retry).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.remove(0),
        "identityReference;email;mobileNumber;token;note"
    );
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "g-1;g1@example.com;61410000001;tok-t1;\"a;b\"",
            "g-3;g3@example.com;61410000003;tok-t3;x",
            "g-4;g4@example.com;61410000004;tok-t4;x",
            "g-5;g5@example.com;61410000005;tok-t5;x",
        ]
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&retry).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Retry exactly those rows against a healthy emulator.
    let emu = Emu::start(|_| {});
    let out = run(run_cmd(&retry, &emu.url).args(["--rate", "100/s", "--delimiter", ";"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        ids_with(&dir.path().join("export.retry.results.csv"), "accepted"),
        ["g-1", "g-3", "g-4", "g-5"].map(String::from).into()
    );
}

#[test]
fn a_401_mid_run_stops_with_exit_3_and_resume_completes_without_resending() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "u", 60);
    let rec1 = dir.path().join("rec1.jsonl");
    let res = dir.path().join("e.results.csv");
    let port: u16;
    {
        let emu = Emu::start(|c| {
            c.unauth_after = Some(20);
            c.record = Some(rec1.clone());
        });
        let out = run(run_cmd(&input, &emu.url).args([
            "--rate",
            "200/s",
            "--concurrency",
            "4",
            "--json",
        ]));
        assert_eq!(code(&out), 3, "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("401"), "{err}");
        assert!(err.contains("kycshare resume "), "{err}");
        let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert!(j["aborted"].is_string());
        port = emu.url.rsplit(':').next().unwrap().parse().unwrap();
    }
    let first = results(&res);
    assert!(first.len() >= 20 && first.len() < 60, "{}", first.len());
    assert!(
        first.iter().all(|r| r["outcome"] == "accepted"),
        "401s leave rows out of the results"
    );
    let rec2 = dir.path().join("rec2.jsonl");
    // The same Banxa, its key fixed (a resume to another base URL is refused).
    let emu = Emu::start_on(port, |c| c.record = Some(rec2.clone()));
    // Without --resume the journal is protected.
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "200/s"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("kycshare resume "),
        "{}",
        stderr(&out)
    );
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "200/s", "--resume", "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(j["accepted"], 60);
    assert_eq!(j["total"], 60);
    // Every record once in the results; every id accepted exactly once overall.
    let all = results(&res);
    assert_eq!(all.len(), 60);
    let records: BTreeSet<String> = all.iter().map(|r| r["record"].clone()).collect();
    assert_eq!(records.len(), 60);
    let mut accepted = accepted_in_record(&record_lines(&rec1));
    accepted.extend(accepted_in_record(&record_lines(&rec2)));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in accepted {
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(counts.len(), 60);
    assert!(
        counts.values().all(|c| *c == 1),
        "a row was accepted twice: {counts:?}"
    );
}

#[test]
fn resume_after_a_truncated_results_file_resends_only_the_cut_record() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "t", 30);
    let res = dir.path().join("e.results.csv");
    let emu = Emu::start(|_| {});
    assert_eq!(
        code(&run(run_cmd(&input, &emu.url).args(["--rate", "500/s"]))),
        0
    );
    // Simulate a kill: drop the last 10 rows and cut the one before in half.
    let text = std::fs::read_to_string(&res).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let keep = &lines[..lines.len() - 11];
    let cut = lines[lines.len() - 11];
    let mut damaged = keep.join("\n");
    damaged.push('\n');
    damaged.push_str(&cut[..cut.len() / 2]);
    std::fs::write(&res, damaged).unwrap();
    let before = emu.stats().by_status.get("202").copied().unwrap_or(0);
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "500/s", "--resume"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after = emu.stats().by_status.get("202").copied().unwrap_or(0);
    assert_eq!(
        after - before,
        11,
        "the 10 missing rows and the cut one are sent again"
    );
    let rows = results(&res);
    assert_eq!(rows.len(), 30);
    let records: BTreeSet<u64> = rows.iter().map(|r| r["record"].parse().unwrap()).collect();
    assert_eq!(records, (1..=30).collect());
}

#[test]
fn sixty_four_in_flight_and_no_nonce_is_ever_refused() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|c| c.latency = std::time::Duration::from_millis(5));
    let input = export(dir.path(), "e.csv", "n", 3000);
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "1000000/s", "--concurrency", "64"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let stats = emu.stats();
    assert_eq!(stats.auth_failures.values().sum::<u64>(), 0, "{stats:?}");
    assert_eq!(stats.by_status.get("202"), Some(&3000));
    assert!(
        stats.peak_in_flight > 8,
        "concurrency was not used: {}",
        stats.peak_in_flight
    );
    assert!(stats.peak_in_flight <= 64);
}

#[test]
fn invalid_and_duplicate_rows_never_reach_banxa() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| c.record = Some(record.clone()));
    let input = fixture("sample.csv");
    let res = dir.path().join("r.csv");
    let out = run(run_cmd(&input, &emu.url)
        .args(["--rate", "1000/s", "--results"])
        .arg(&res)
        .arg("--retry-file")
        .arg(dir.path().join("retry.csv")));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let rows = results(&res);
    assert_eq!(rows.len(), 200);
    let sent: Vec<String> = record_lines(&record)
        .into_iter()
        .filter_map(|r| r.identity_reference)
        .collect();
    let unique: BTreeSet<&String> = sent.iter().collect();
    assert_eq!(unique.len(), sent.len(), "an id was sent twice");
    let accepted = rows.iter().filter(|r| r["outcome"] == "accepted").count();
    assert_eq!(sent.len(), accepted);
    for r in rows
        .iter()
        .filter(|r| r["outcome"] == "invalid" || r["outcome"] == "duplicate")
    {
        assert_eq!(r["attempts"], "0");
        assert_eq!(r["httpStatus"], "");
        assert_eq!(r["latencyMs"], "");
    }
}

#[test]
fn configuration_errors_exit_2_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "c", 3);
    // Plain http to a remote host.
    let out = run(&mut run_cmd(&input, "http://api.banxa.com"));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("plain http"), "{}", stderr(&out));
    // A secret on the command line.
    let out = run(run_cmd(&input, "https://api.banxa.com").args(["--api-secret", "x"]));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("never accepted on the command line"),
        "{}",
        stderr(&out)
    );
    // No credentials.
    let out = run(bin()
        .arg("run")
        .arg(&input)
        .args(["--base-url", "https://api.banxa.com"]));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("BANXA_API_KEY"), "{}", stderr(&out));
    // Stdin cannot be resumed.
    let out = run(run_cmd(std::path::Path::new("-"), "https://api.banxa.com")
        .args(["--resume", "--results"])
        .arg(dir.path().join("r.csv")));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("cannot be resumed"),
        "{}",
        stderr(&out)
    );
    // An unwritable results folder is found before anything is sent.
    let out = run(run_cmd(&input, "https://api.banxa.com")
        .arg("--results")
        .arg(dir.path().join("no/such/dir/r.csv")));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("r.csv"), "{}", stderr(&out));
    assert!(!dir.path().join("e.results.csv").exists());
}

#[test]
fn a_secret_file_works_and_nothing_private_reaches_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|c| c.fail_first = 1);
    let input = export(dir.path(), "e.csv", "p", 10);
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let out = run(bin()
        .arg("-vvv")
        .args(["--log-format", "json", "run"])
        .arg(&input)
        .args([
            "--base-url",
            &emu.url,
            "--rate",
            "100/s",
            "--api-secret-file",
        ])
        .arg(&secret_file)
        .env("BANXA_API_KEY", KEY));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let all = format!(
        "{}{}{}",
        stdout(&out),
        stderr(&out),
        std::fs::read_to_string(dir.path().join("e.results.csv")).unwrap()
    );
    assert!(all.contains("\"record\""), "debug logs were produced");
    for i in 1..=10 {
        for private in [
            format!("user{i}.p@example.com"),
            format!("tok-p-{i}-Zx9"),
            format!("614{:08}", i),
        ] {
            assert!(!all.contains(&private), "{private} leaked");
        }
    }
    assert!(!all.contains(SECRET));
}

#[test]
fn a_429_retry_after_is_respected() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| {
        c.rate_limit_per_min = Some(3);
        c.rate_window = std::time::Duration::from_secs(2);
        c.record = Some(record.clone());
    });
    let input = export(dir.path(), "e.csv", "l", 6);
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "100/s", "--concurrency", "2"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let recs = record_lines(&record);
    let limited: Vec<&Rec> = recs.iter().filter(|r| r.status == 429).collect();
    assert!(!limited.is_empty(), "the test needs some 429s");
    for r in limited {
        let id = r.identity_reference.as_deref().unwrap();
        let next = recs
            .iter()
            .filter(|n| n.identity_reference.as_deref() == Some(id) && n.seq > r.seq)
            .min_by_key(|n| n.seq)
            .expect("a 429 is retried");
        let waited = next.unix_micros - r.unix_micros;
        // The emulator asked for at least 1 s (rounded up to whole seconds).
        assert!(waited >= 990_000, "{id} retried after {waited} µs");
    }
    let rows = results(&dir.path().join("e.results.csv"));
    assert!(rows.iter().all(|r| r["outcome"] == "accepted"));
    assert!(rows.iter().any(|r| r["attempts"] != "1"));
}

#[test]
fn a_dry_run_then_the_run_just_works_and_is_never_mistaken_for_a_journal() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "d", 8);
    let res = dir.path().join("e.results.csv");
    assert_eq!(code(&run(bin().arg("validate").arg(&input))), 0);
    assert!(results(&res).iter().all(|r| r["outcome"] == "validated"));
    let emu = Emu::start(|_| {});
    // --resume on a dry run's results must not skip the validated rows.
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "200/s", "--resume"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(emu.stats().by_status.get("202"), Some(&8));
    assert!(results(&res).iter().all(|r| r["outcome"] == "accepted"));
    // And a plain run after a dry run replaces its results.
    let input2 = export(dir.path(), "f.csv", "d2", 3);
    assert_eq!(code(&run(bin().arg("validate").arg(&input2))), 0);
    let out = run(run_cmd(&input2, &emu.url).args(["--rate", "200/s"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(results(&dir.path().join("f.results.csv")).len(), 3);
}

#[test]
fn an_input_cut_short_stops_the_run_with_exit_3_and_keeps_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let gz = std::fs::read(fixture("sample.csv.gz")).unwrap();
    let input = dir.path().join("cut.csv.gz");
    std::fs::write(&input, &gz[..gz.len() / 2]).unwrap();
    let emu = Emu::start(|_| {});
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "1000/s"]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("read error near line"), "{err}");
    assert!(err.contains("repair it in place"), "{err}");
    let rows = results(&dir.path().join("cut.results.csv"));
    assert!(!rows.is_empty() && rows.len() < 200);
    let accepted = rows.iter().filter(|r| r["outcome"] == "accepted").count() as u64;
    assert_eq!(
        emu.stats().by_status.get("202").copied().unwrap_or(0),
        accepted
    );
}
