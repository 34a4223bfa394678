//! `kycshare ledger FILE [--json]`, run as the real binary over ledgers
//! written through the library.

mod common;
use common::*;

use std::path::Path;
use std::time::{Duration, SystemTime};

use kycshare::ledger::{Ledger, LedgerLocation, RunCounts, Update};
use kycshare::model::fingerprint;
use kycshare::model::Outcome;

fn t(secs: u64) -> SystemTime {
    // 2026-11-26T02:00:00Z
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_658_400 + secs)
}

fn upd(id: &str, email: &str, outcome: Outcome, at: u64) -> Update {
    Update {
        identity_reference: id.into(),
        fingerprint: fingerprint(email, "61410001000", "sumsub"),
        outcome,
        http_status: Some(match outcome {
            Outcome::Accepted => 202,
            Outcome::Rejected => 422,
            _ => 500,
        }),
        trace_id: if outcome == Outcome::Failed {
            format!("trace-{id}")
        } else {
            String::new()
        },
        attempts: 1,
        at: t(at),
    }
}

/// Two nights: the first ends with exit 1, the second with 0.
fn two_nights(path: &Path) -> Ledger {
    two_nights_in(Ledger::open(path).unwrap())
}

fn two_nights_in(mut l: Ledger) -> Ledger {
    let r1 = l.begin_run("export.csv", t(0)).unwrap();
    l.record(upd("c-1", "a@x.io", Outcome::Accepted, 1))
        .unwrap();
    l.record(upd("c-2", "b@x.io", Outcome::Accepted, 1))
        .unwrap();
    l.record(upd("c-3", "c@x.io", Outcome::Failed, 2)).unwrap();
    let c1 = RunCounts {
        total: 4,
        accepted: 2,
        failed: 1,
        invalid: 1,
        requests_sent: 7,
        ..Default::default()
    };
    l.end_run(r1, t(60), &c1, 1).unwrap();
    let r2 = l.begin_run("export.csv", t(86_400)).unwrap();
    l.record(upd("c-2", "b2@x.io", Outcome::Rejected, 86_401))
        .unwrap();
    l.record(upd("c-3", "c@x.io", Outcome::Failed, 86_402))
        .unwrap();
    let c2 = RunCounts {
        total: 4,
        skipped: 1,
        rejected: 1,
        failed: 1,
        invalid: 1,
        requests_sent: 6,
        ..Default::default()
    };
    l.end_run(r2, t(86_430), &c2, 1).unwrap();
    l
}

#[test]
fn text_report() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(two_nights(&path));
    let out = run(bin().arg("ledger").arg(&path));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), want_text(&path.display().to_string()));
    // No emails in the report, ever.
    assert!(!stdout(&out).contains("x.io"));
}

#[test]
fn text_and_json_report_postgres() {
    let Some(url) = pg_ledger("text_report") else {
        return;
    };
    let at = LedgerLocation::parse(&url).unwrap();
    let l = two_nights_in(Ledger::open_at(&at, None).unwrap());
    // While a run holds it: read all the same, the holder named.
    let out = run(bin().args(["ledger", &url, "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(j["inUseBy"]["pid"], std::process::id());
    assert!(j["inUseBy"]["host"].is_string(), "{j}");
    assert_eq!(j["path"], pg_shown(&url));
    drop(l);
    // The same text as the SQLite ledger's, and the same JSON shape.
    let out = run(bin().args(["ledger", &url]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), want_text(&pg_shown(&url)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(two_nights(&path));
    let keys = |args: &[&str]| -> Vec<String> {
        let out = run(bin().args(args));
        let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        let mut k: Vec<String> = j.as_object().unwrap().keys().cloned().collect();
        k.sort();
        assert_eq!(j["inUseBy"], serde_json::Value::Null);
        assert_eq!(j["identities"], 3);
        assert_eq!(j["runs"].as_array().unwrap().len(), 2);
        k
    };
    assert_eq!(
        keys(&["ledger", &url, "--json"]),
        keys(&["ledger", path.to_str().unwrap(), "--json"])
    );
    // Wrong password: exit 2, said without the password.
    let bad = url.replace(&pg_password(&url), "not-the-password");
    let out = run(bin().args(["ledger", &bad]));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("password authentication failed"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("not-the-password"),
        "{}",
        stderr(&out)
    );
}

fn want_text(path: &str) -> String {
    format!(
        "\
ledger {}
identities by last outcome:
  accepted            1
  rejected            1
  failed              1
  total               3
  2 not accepted: the next run sends them again (1 of them accepted earlier with other details)
oldest pending failure: c-3 failed since 2026-11-26T02:00:02.000Z (last attempt 2026-11-27T02:00:02.000Z, HTTP 500, traceId trace-c-3)
accepted identities by verification (kycshare verify --ledger):
  not checked           1
oldest unverified: c-1 accepted 2026-11-26T02:00:01.000Z (not checked since)
last successful run (exit 0) ended: never
last runs, newest first:
  #2 2026-11-27T02:00:00.000Z -> 2026-11-27T02:00:30.000Z  exit 1  export.csv
      total 4  accepted 0  skipped 1  rejected 1  failed 1  invalid 1  duplicate 0  requests 6
  #1 2026-11-26T02:00:00.000Z -> 2026-11-26T02:01:00.000Z  exit 1  export.csv
      total 4  accepted 2  skipped 0  rejected 0  failed 1  invalid 1  duplicate 0  requests 7
",
        path
    )
}

#[test]
fn json_report_and_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let mut l = two_nights(&path);
    let r3 = l.begin_run("export.csv", t(172_800)).unwrap();
    l.record(upd("c-3", "c@x.io", Outcome::Accepted, 172_801))
        .unwrap();
    l.flush().unwrap();
    // Read while the run holds the ledger.
    let out = run(bin().arg("ledger").arg(&path).arg("--json"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["identities"], 3);
    assert_eq!(v["accepted"], 2);
    assert_eq!(v["rejected"], 1);
    assert_eq!(v["failed"], 0);
    assert_eq!(v["oldestPendingFailure"]["identityReference"], "c-2");
    assert_eq!(v["oldestPendingFailure"]["lastOutcome"], "rejected");
    assert_eq!(v["runs"].as_array().unwrap().len(), 3);
    assert_eq!(v["runs"][0]["id"], r3.0);
    assert_eq!(v["runs"][0]["endedAt"], serde_json::Value::Null);
    assert_eq!(v["runs"][1]["counts"]["requestsSent"], 6);
    assert_eq!(v["runs"][1]["exitCode"], 1);
    assert_eq!(v["inUseBy"]["pid"], std::process::id());
    let text = stdout(&run(bin().arg("ledger").arg(&path)));
    assert!(text.contains("in use by a run now (pid "), "{text}");
    assert!(text.contains("still running  export.csv"), "{text}");

    // The run ends with 0: the last success is known.
    l.end_run(r3, t(172_830), &RunCounts::default(), 0).unwrap();
    drop(l);
    let out = run(bin().arg("ledger").arg(&path).arg("--json"));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["lastSuccess"], "2026-11-28T02:00:30.000Z");
    assert_eq!(v["inUseBy"], serde_json::Value::Null);
}

#[test]
fn a_killed_run_is_reported_as_unfinished() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let mut l = two_nights(&path);
    l.begin_run("export.csv", t(172_800)).unwrap();
    drop(l); // no end_run: as after a kill
    let text = stdout(&run(bin().arg("ledger").arg(&path)));
    assert!(
        text.contains("did not finish (killed or crashed: the next run picks up)"),
        "{text}"
    );
}

#[test]
fn missing_or_foreign_file_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.db");
    let out = run(bin().arg("ledger").arg(&missing));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains(&format!("ledger {} does not exist", missing.display())),
        "{}",
        stderr(&out)
    );
    assert!(!missing.exists(), "the command must not create a ledger");
    let text = dir.path().join("notes.csv");
    std::fs::write(&text, "identityReference,email\n".repeat(20)).unwrap();
    let out = run(bin().arg("ledger").arg(&text));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("is not a kycshare ledger"),
        "{}",
        stderr(&out)
    );
}
