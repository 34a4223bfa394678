//! Hardening, secrets and PII: with maximum verbosity and JSON logs, over
//! accepted, failed (500s), rejected (422), invalid and duplicate rows, no
//! API secret, token, email or mobile number reaches stdout, stderr (the
//! logs) or the results file. The retry file is input (it holds them) and is
//! private (mode 0600).

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;

struct Export {
    text: String,
    /// Every value that must never be written anywhere but the retry file.
    private: Vec<String>,
}

fn export_with_pii() -> Export {
    let mut text = String::from("identityReference,email,mobileNumber,token\n");
    let mut private = vec![SECRET.to_string()];
    for i in 1..=30 {
        let email = format!("person{i}.pii@example.org");
        let mobile = format!("+61 4{i:02} 777 {i:03}");
        let token = format!("SHARETOKEN-{i}-qq");
        text.push_str(&format!("p-{i},{email},{mobile},{token}\n"));
        private.push(format!("person{i}.pii"));
        private.push(format!("614{i:02}777{i:03}"));
        private.push(format!("777 {i:03}"));
        private.push(token);
    }
    // Rejected by the emulator (422: ASCII-only email), valid locally.
    text.push_str("p-rej,jöhn.pii@example.org,+61 455 888 999,SHARETOKEN-rej-qq\n");
    private.extend(["jöhn.pii", "61455888999", "888 999", "SHARETOKEN-rej-qq"].map(String::from));
    // Invalid locally: each bad value must not be echoed in the reason.
    text.push_str("p-bad1,not-an-email.pii-x1,+61 455 888 111,SHARETOKEN-bad1-qq\n");
    text.push_str("p-bad2,ok.pii-x2@example.org,+61 4AB-pii-x3,SHARETOKEN-bad2-qq\n");
    text.push_str("p-bad3,ok.pii-x4@example.org,+61 455 888 222,SHARE TOKEN-pii-x5\n");
    // A duplicate of p-1 with other details.
    text.push_str("p-1,dup.pii-x6@example.org,+61 455 888 333,SHARETOKEN-dup-qq\n");
    private.extend(
        [
            "not-an-email.pii-x1",
            "pii-x2",
            "4AB-pii-x3",
            "pii-x4",
            "TOKEN-pii-x5",
            "pii-x6",
            "61455888111",
            "61455888222",
            "61455888333",
            "SHARETOKEN-bad1-qq",
            "SHARETOKEN-bad2-qq",
            "SHARETOKEN-dup-qq",
        ]
        .map(String::from),
    );
    Export { text, private }
}

fn assert_clean(what: &str, text: &str, private: &[String]) {
    for p in private {
        assert!(
            !text.contains(p.as_str()),
            "{what} holds the private value {p:?}:\n{text}"
        );
    }
}

#[test]
fn nothing_private_in_any_output_at_maximum_verbosity() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(|c| {
        c.fail_rate = 0.4;
        c.seed = Some(99);
    });
    let ex = export_with_pii();
    let input = dir.path().join("export.csv");
    std::fs::write(&input, &ex.text).unwrap();

    // The dry run.
    let vres = dir.path().join("dry.results.csv");
    let out = run(bin()
        .args(["-vvv", "--log-format", "json", "validate"])
        .arg(&input)
        .arg("--results")
        .arg(&vres)
        .arg("--json"));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("\"level\""), "JSON logs at -vvv");
    assert_clean("validate stdout", &stdout(&out), &ex.private);
    assert_clean("validate stderr", &stderr(&out), &ex.private);
    assert_clean(
        "validate results",
        &std::fs::read_to_string(&vres).unwrap(),
        &ex.private,
    );

    // The import: accepted, failed after retries, rejected, invalid, duplicate.
    let out = run(run_cmd(&input, &emu.url)
        .args(["--rate", "1000/s", "--max-attempts", "2", "--json"])
        .args(["-vvv", "--log-format", "json"]));
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    let res = dir.path().join("export.results.csv");
    let rows = results(&res);
    for o in ["accepted", "failed", "rejected", "invalid", "duplicate"] {
        assert!(
            rows.iter().any(|r| r["outcome"] == o),
            "the export exercises `{o}`"
        );
    }
    assert!(err.lines().count() > 30, "-vvv logs every answer");
    assert!(err.contains("\"level\""), "JSON logs");
    assert_clean("run stdout", &stdout(&out), &ex.private);
    assert_clean("run stderr", &err, &ex.private);
    let results_text = std::fs::read_to_string(&res).unwrap();
    assert_clean("run results", &results_text, &ex.private);

    for p in [&vres, &res] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    // The retry file is input (it holds the rows as exported), private.
    let retry = dir.path().join("export.retry.csv");
    let mode = std::fs::metadata(&retry).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(std::fs::read_to_string(&retry)
        .unwrap()
        .contains("pii@example.org"));
}
