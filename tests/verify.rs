//! `kycshare verify` against the emulator: the verification file, one GET
//! per accepted record, the rate, the 401 stop and `--resume`, the ledger's
//! statuses and `run --reshare-unverified`.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn verify_cmd(args: &[&str]) -> std::process::Command {
    let mut c = bin();
    c.arg("verify")
        .args(args)
        .env("BANXA_API_KEY", KEY)
        .env("BANXA_API_SECRET", SECRET);
    c
}

/// The verification file as (record -> (identityReference, kycStatus, httpStatus)).
fn checks(path: &Path) -> BTreeMap<u64, (String, String, String)> {
    let mut r = csv::Reader::from_path(path).expect("verification file");
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>().join(","),
        "record,identityReference,kycStatus,httpStatus,checkedAt,message"
    );
    let mut m = BTreeMap::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        let record: u64 = rec[0].parse().unwrap();
        let old = m.insert(
            record,
            (rec[1].to_string(), rec[2].to_string(), rec[3].to_string()),
        );
        assert!(old.is_none(), "record {record} checked twice");
    }
    m
}

/// The emulator's answer to a signed GET of an identity, asked here
/// without kycshare's client (own HMAC, raw HTTP/1.1): the oracle.
fn banxa_kyc(url: &str, id: &str) -> String {
    use hmac::{Hmac, Mac};
    let addr = url.trim_start_matches("http://");
    let path = format!("/eapi/v0/identities/{id}");
    let nonce = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("GET\n{path}\n{nonce}").as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}:{sig}:{nonce}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status: u16 = answer[9..12].parse().unwrap();
    if status == 404 {
        return "not_found".into();
    }
    assert_eq!(status, 200, "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    // A chunked body: the JSON object is between the first { and the last }.
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["kyc"]["status"].as_str().unwrap().to_string()
}

/// identityReferences of the emulator's record lines: identity GETs, shares.
fn recorded(path: &Path) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut gets, mut shares) = (Vec::new(), Vec::new());
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let id = v["identityReference"].as_str().unwrap_or("").to_string();
        if v["route"] == "identity" {
            gets.push(id);
        } else {
            shares.push(id);
        }
    }
    (gets, shares)
}

fn accepted_ids(res: &Path) -> BTreeSet<String> {
    results(res)
        .into_iter()
        .filter(|r| r["outcome"] == "accepted")
        .map(|r| r["identityReference"].clone())
        .collect()
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(stdout(out).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

/// The sample export (200 rows, some invalid or duplicate) copied into `dir`.
fn sample(dir: &Path) -> PathBuf {
    let p = dir.join("export.csv");
    std::fs::copy(fixture("sample.csv"), &p).unwrap();
    p
}

#[test]
fn verify_after_a_run_writes_what_banxa_answers_one_get_per_accepted_record() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample(dir.path());
    let rec = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| {
        c.kyc_reject_rate = 0.3;
        c.seed = Some(11);
        c.record = Some(rec.clone());
    });
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "500/s"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let res = dir.path().join("export.results.csv");
    let accepted = accepted_ids(&res);
    assert!(accepted.len() > 150, "{}", accepted.len());
    let rows = results(&res);

    // The base URL and the rate come from the run's manifest.
    let out = run(&mut verify_cmd(&[res.to_str().unwrap(), "--json"]));
    assert_eq!(code(&out), 1, "some are REJECTED: {}", stderr(&out));
    let j = json_of(&out);
    let file = dir.path().join("export.verify.csv");
    assert_eq!(j["output"], file.display().to_string());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let c = checks(&file);
    // One row per accepted record, with the run's record numbers, and
    // none for the others.
    let expected: BTreeMap<u64, String> = rows
        .iter()
        .filter(|r| r["outcome"] == "accepted")
        .map(|r| (r["record"].parse().unwrap(), r["identityReference"].clone()))
        .collect();
    assert_eq!(
        c.iter()
            .map(|(k, v)| (*k, v.0.clone()))
            .collect::<BTreeMap<_, _>>(),
        expected
    );
    // Each status is what Banxa (the emulator, asked independently) says.
    let mut by = BTreeMap::<String, u64>::new();
    for (id, status, http) in c.values() {
        assert_eq!(status, &banxa_kyc(&emu.url, id), "{id}");
        assert_eq!(http, "200");
        *by.entry(status.clone()).or_default() += 1;
    }
    assert!(by["REJECTED"] > 20 && by["VERIFIED"] > 80, "{by:?}");
    assert_eq!(j["statuses"]["REJECTED"], by["REJECTED"]);
    assert_eq!(j["verified"], by["VERIFIED"]);
    assert_eq!(j["checked"], accepted.len() as u64);
    // Exactly one GET per accepted identity (the oracle's own GETs above
    // came after, and are not in this count: they are counted separately).
    let (gets, _) = recorded(&rec);
    let gets_by_kycshare: Vec<&String> = gets.iter().take(accepted.len()).collect();
    assert_eq!(
        gets_by_kycshare
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        accepted
    );
    assert_eq!(
        gets.len(),
        accepted.len() * 2,
        "kycshare's and the oracle's"
    );
    assert!(stderr(&out).contains("REJECTED"), "{}", stderr(&out));

    // A second check without --resume or --force is refused: the file is
    // the journal of the first.
    let out = run(&mut verify_cmd(&[res.to_str().unwrap()]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--resume"), "{}", stderr(&out));
    // The run made again: the old check is not continued as if it were
    // this run's.
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "500/s", "--force"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let out = run(&mut verify_cmd(&[res.to_str().unwrap(), "--resume"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("older than the run") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn resume_asks_again_what_got_no_answer_and_keeps_one_row_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "u", 3);
    let emu = Emu::start(|_| {});
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "500/s"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // A results file (no manifest) whose third accepted row cannot be
    // asked about: its identityReference is not one Banxa's path takes.
    let res = dir.path().join("hand.results.csv");
    std::fs::write(
        &res,
        "record,line,identityReference,outcome,httpStatus,attempts,traceId,message,errors,latencyMs,completedAt\n\
         1,2,u-1,accepted,202,1,,,,5,2026-12-07T00:00:00.000Z\n\
         2,3,u-2,accepted,202,1,,,,5,2026-12-07T00:00:00.000Z\n\
         3,4,u_3,accepted,202,1,,,,5,2026-12-07T00:00:00.000Z\n",
    )
    .unwrap();
    let file = dir.path().join("hand.verify.csv");
    let args = [res.to_str().unwrap(), "--base-url", &emu.url, "--json"];
    let out = run(&mut verify_cmd(&args));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let c = checks(&file);
    assert_eq!(c[&3].1, "unknown");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("could not check: not a valid identityReference"),
        "{text}"
    );
    let before = emu.stats().identity_requests;
    let out = run(&mut verify_cmd(&[args.as_slice(), &["--resume"]].concat()));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let j = json_of(&out);
    assert_eq!(j["fromEarlier"], 2, "the answered ones are kept");
    assert_eq!(j["checked"], 3);
    // One row per record still (checks() refuses a record twice), and the
    // answered ones were not asked again.
    let c = checks(&file);
    assert_eq!(c.len(), 3);
    assert_eq!(
        (c[&1].1.as_str(), c[&2].1.as_str()),
        ("VERIFIED", "VERIFIED")
    );
    assert_eq!(emu.stats().identity_requests, before);
}

#[test]
fn every_identity_verified_is_exit_0_and_a_kyc_delay_leaves_them_pending() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "v", 30);
    let emu = Emu::start(|_| {});
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "500/s"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let res = dir.path().join("e.results.csv");
    let out = run(&mut verify_cmd(&[res.to_str().unwrap(), "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let j = json_of(&out);
    assert_eq!(j["verified"], 30);
    assert_eq!(j["statuses"]["VERIFIED"], 30);
    let c = checks(&dir.path().join("e.verify.csv"));
    assert_eq!(c.len(), 30);
    assert!(c.values().all(|v| v.1 == "VERIFIED"));

    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "p", 20);
    let emu = Emu::start(|c| c.kyc_delay = Duration::from_secs(3600));
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "500/s"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let res = dir.path().join("e.results.csv");
    let file = dir.path().join("checks.csv");
    let out = run(&mut verify_cmd(&[
        res.to_str().unwrap(),
        "--output",
        file.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(code(&out), 1, "PENDING is not VERIFIED: {}", stderr(&out));
    let c = checks(&file);
    assert_eq!(c.len(), 20);
    assert!(c.values().all(|v| v.1 == "PENDING"), "{c:?}");
    let j = json_of(&out);
    let steps = j["nextSteps"].to_string();
    assert!(
        steps.contains("PENDING") && steps.contains("--force"),
        "{steps}"
    );
    // The printed command runs as printed (it replaces the file).
    let step = j["nextSteps"][0].as_str().unwrap();
    let cmdline = &step[step.find("kycshare verify").unwrap()..];
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let out = run(&mut verify_cmd(&words[2..]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(checks(&file).len(), 20);
}

#[test]
fn the_rate_holds_for_the_checks() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "r", 60);
    let emu = Emu::start(|_| {});
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "500/s"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let before = emu.stats();
    let res = dir.path().join("e.results.csv");
    let out = run(&mut verify_cmd(&[res.to_str().unwrap(), "--rate", "20/s"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after = emu.stats();
    assert_eq!(after.identity_requests - before.identity_requests, 60);
    // The shares ran at 500/s, so the window of the checks alone is read
    // from the record of a fresh emulator instead.
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "s", 45);
    let rec = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| c.record = Some(rec.clone()));
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "500/s"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let res = dir.path().join("e.results.csv");
    let out = run(&mut verify_cmd(&[
        res.to_str().unwrap(),
        "--rate",
        "15/s",
        "--progress-interval",
        "1",
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Off a terminal: progress lines with the counts by status.
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains("records checked; VERIFIED ") && l.contains(" of 45 ")),
        "{err}"
    );
    drop(emu);
    let text = std::fs::read_to_string(&rec).unwrap();
    let times: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["route"] == "identity")
        .map(|v| v["unixMicros"].as_u64().unwrap())
        .collect();
    assert_eq!(times.len(), 45);
    // Never more than 15 in any second.
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|u| **u < t + 1_000_000)
            .count();
        assert!(in_window <= 15, "{in_window} checks within 1 s from {t}");
    }
}

#[test]
fn a_401_stops_the_check_with_exit_3_and_resume_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "k", 30);
    let res = dir.path().join("e.results.csv");
    let file = dir.path().join("e.verify.csv");
    {
        // 30 shares, then 12 checks, then the key is revoked.
        let emu = Emu::start(|c| c.unauth_after = Some(42));
        let out = run(run_cmd(&input, &emu.url).args(["--rate", "500/s"]));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let out = run(&mut verify_cmd(&[
            res.to_str().unwrap(),
            "--concurrency",
            "2",
            "--json",
        ]));
        assert_eq!(code(&out), 3, "{}", stderr(&out));
        let j = json_of(&out);
        assert!(j["aborted"].as_str().unwrap().contains("401"), "{j}");
        let steps = j["nextSteps"].to_string();
        assert!(steps.contains("--resume"), "{steps}");
    }
    let first = checks(&file);
    assert!(
        first.len() >= 10 && first.len() <= 12,
        "the answers before the 401: {}",
        first.len()
    );
    assert!(first.values().all(|v| v.1 == "VERIFIED"), "{first:?}");
    // Banxa with its key fixed (here: another emulator, taught the
    // identities by the same shares into another results file).
    let rec = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| c.record = Some(rec.clone()));
    let again = dir.path().join("again.results.csv");
    let out = run(run_cmd(&input, &emu.url)
        .args(["--rate", "500/s", "--results"])
        .arg(&again));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(&mut verify_cmd(&[
        res.to_str().unwrap(),
        "--resume",
        "--json",
        "--base-url",
        &emu.url,
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let j = json_of(&out);
    assert_eq!(j["checked"], 30);
    assert_eq!(j["fromEarlier"], first.len() as u64);
    let all = checks(&file);
    assert_eq!(all.len(), 30, "one row per accepted record");
    assert!(all.values().all(|v| v.1 == "VERIFIED"));
    // Only the identities not checked before were asked.
    let (gets, _) = recorded(&rec);
    let asked: BTreeSet<String> = gets.into_iter().collect();
    let before: BTreeSet<String> = first.values().map(|v| v.0.clone()).collect();
    assert_eq!(asked.len(), 30 - first.len());
    assert!(asked.is_disjoint(&before));
    // --resume with no verification file is refused.
    let out = run(&mut verify_cmd(&[
        res.to_str().unwrap(),
        "--resume",
        "--output",
        dir.path().join("nope.csv").to_str().unwrap(),
    ]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

#[test]
fn the_ledger_records_statuses_rechecks_only_the_unverified_and_reshares_them() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.db");
    let file = dir.path().join("ledger.db.verify.csv");
    ledger_checks(&dir, ledger.to_str().unwrap(), &[], &file);
}

#[test]
fn the_ledger_records_statuses_rechecks_only_the_unverified_and_reshares_them_postgres() {
    let Some(url) = pg_ledger("verify_ledger") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg.verify.csv");
    ledger_checks(&dir, &url, &["--output", file.to_str().unwrap()], &file);
}

/// `extra`: flags for each `verify` (the file it writes is `file`).
fn ledger_checks(dir: &tempfile::TempDir, l: &str, extra: &[&str], file: &Path) {
    let ledger = l;
    let input = export(dir.path(), "e.csv", "L", 40);
    let res = dir.path().join("e.results.csv");
    let rec = dir.path().join("rec.jsonl");
    let emu = Emu::start(|c| {
        c.kyc_reject_rate = 0.25;
        c.seed = Some(5);
        c.record = Some(rec.clone());
    });
    let out = run(run_cmd(&input, &emu.url)
        .args(["--rate", "500/s", "--ledger"])
        .arg(ledger));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(verify_cmd(&["--ledger", l, "--base-url", &emu.url, "--json"]).args(extra));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let j = json_of(&out);
    let rejected = j["statuses"]["REJECTED"].as_u64().unwrap();
    assert!((4..=20).contains(&rejected), "{rejected}");
    assert_eq!(j["checked"], 40);
    let first = checks(file);
    let unverified: BTreeSet<String> = first
        .values()
        .filter(|v| v.1 != "VERIFIED")
        .map(|v| v.0.clone())
        .collect();
    assert_eq!(unverified.len() as u64, rejected);

    // `kycshare ledger` shows the counts by status.
    let out = run(bin().args(["ledger", l, "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lj = json_of(&out);
    assert_eq!(lj["kyc"]["REJECTED"], rejected);
    assert_eq!(lj["kyc"]["VERIFIED"], 40 - rejected);
    assert!(lj["oldestUnverified"]["identityReference"].is_string());

    // A second check asks only the not-VERIFIED (and replaces the file).
    let (gets_before, _) = recorded(&rec);
    let out = run(verify_cmd(&["--ledger", l, "--base-url", &emu.url]).args(extra));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let (gets_after, _) = recorded(&rec);
    let asked: BTreeSet<String> = gets_after[gets_before.len()..].iter().cloned().collect();
    assert_eq!(asked, unverified);
    assert_eq!(gets_after.len() - gets_before.len(), unverified.len());

    // Ten new customers, accepted and never verified.
    let input2 = export(dir.path(), "e2.csv", "L", 50);
    let res2 = dir.path().join("e2.results.csv");
    let out = run(run_cmd(&input2, &emu.url)
        .args(["--rate", "500/s", "--ledger"])
        .arg(ledger));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(accepted_ids(&res2).len(), 10);

    // A status seen sooner than AGE after the share says nothing yet
    // (Banxa may still be at work): nothing is sent again.
    let (_, shares_before) = recorded(&rec);
    let out = run(run_cmd(&input2, &emu.url)
        .args([
            "--rate",
            "500/s",
            "--force",
            "--reshare-unverified",
            "1h",
            "--json",
            "--ledger",
        ])
        .arg(ledger));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json_of(&out)["skipped"], 50);
    assert_eq!(recorded(&rec).1.len(), shares_before.len(), "none sent");

    // --reshare-unverified sends exactly the unverified again; the
    // VERIFIED and the never-verified are skipped.
    let out = run(run_cmd(&input2, &emu.url)
        .args([
            "--rate",
            "500/s",
            "--force",
            "--reshare-unverified",
            "0s",
            "--json",
            "--ledger",
        ])
        .arg(ledger));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (_, shares_after) = recorded(&rec);
    let sent: BTreeSet<String> = shares_after[shares_before.len()..]
        .iter()
        .cloned()
        .collect();
    assert_eq!(sent, unverified);
    let j = json_of(&out);
    assert_eq!(j["accepted"], unverified.len() as u64);
    assert_eq!(j["skipped"], 50 - unverified.len() as u64);
    // Accepted again: their status is unknown until the next check.
    let out = run(bin().args(["ledger", l, "--json"]));
    let lj = json_of(&out);
    assert_eq!(lj["kyc"]["not checked"], 10 + unverified.len() as u64);
    assert!(lj["kyc"].get("REJECTED").is_none(), "{lj}");
    drop(res);
}

#[test]
fn no_personal_data_in_the_verification_file_or_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "e.csv", "x", 20);
    let emu = Emu::start(|c| {
        c.kyc_reject_rate = 0.5;
        c.seed = Some(2);
        c.fail_rate = 0.2;
    });
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "500/s", "--max-attempts", "8"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let res = dir.path().join("e.results.csv");
    let out = run(&mut verify_cmd(&[res.to_str().unwrap(), "-vv", "--json"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let file = std::fs::read_to_string(dir.path().join("e.verify.csv")).unwrap();
    let logs = format!("{}{}", stderr(&out), stdout(&out));
    let mut r = csv::Reader::from_path(&input).unwrap();
    for rec in r.records() {
        let rec = rec.unwrap();
        for value in [&rec[1], &rec[2], &rec[3]] {
            assert!(!file.contains(value), "{value} in the verification file");
            assert!(!logs.contains(value), "{value} in the logs");
        }
        let digits: String = rec[2].chars().filter(|c| c.is_ascii_digit()).collect();
        assert!(!file.contains(&digits) && !logs.contains(&digits));
    }
    assert!(!logs.contains(SECRET) && !file.contains(SECRET));
}
