//! `kycshare validate` on the edge-case fixtures: every record's outcome,
//! line and message, and the exit code.

mod common;
use common::*;

fn validate(
    fixture_name: &str,
    extra: &[&str],
) -> (std::process::Output, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("r.csv");
    let out = run(bin()
        .arg("validate")
        .arg(fixture(fixture_name))
        .arg("--results")
        .arg(&results)
        .args(extra));
    (out, dir, results)
}

#[test]
fn crlf_bom_aliases_multiline_and_duplicates() {
    let (out, _d, r) = validate("edge-crlf-bom.csv", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(
        outcomes(&r),
        vec![
            o(1, 2, "c-1", "validated", ""),
            o(2, 5, "c-2", "validated", ""),
            o(3, 6, "c-3", "validated", ""),
            o(4, 7, "c-1", "duplicate", "duplicate of record 1"),
            o(5, 8, "", "invalid", "record has 5 fields, the header has 6"),
        ]
    );
}

#[test]
fn every_rule_has_a_specific_reason() {
    let (out, _d, r) = validate("edge-semicolon.csv", &["--delimiter", ";"]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        outcomes(&r),
        vec![
            o(1, 2, "r-1", "validated", ""),
            o(
                2,
                5,
                "r-2",
                "invalid",
                "email: domain has no dot (expected e.g. example.com)"
            ),
            o(3, 6, "r-3", "invalid", "mobileNumber: 4 digits, need 8-15"),
            o(
                4,
                7,
                "",
                "invalid",
                "identityReference: invalid character '_' at position 2 (allowed: A-Z a-z 0-9 -)"
            ),
            o(5, 8, "r-5", "invalid", "token: contains whitespace"),
            o(6, 9, "r-6", "invalid", "email: missing"),
            o(7, 10, "r-7", "invalid", "token: missing"),
            o(8, 11, "r-8", "validated", ""),
        ]
    );
}

#[test]
fn bad_utf8_only_matters_in_used_columns() {
    let (out, _d, r) = validate("bad-utf8.csv", &[]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        outcomes(&r),
        vec![
            o(1, 2, "u-1", "validated", ""),
            o(
                2,
                3,
                "u-2",
                "invalid",
                "email: not valid UTF-8 (byte 6 of the field; re-export the file as UTF-8)"
            ),
            o(3, 4, "u-3", "validated", ""),
        ]
    );
}

#[test]
fn wrong_field_count_and_quoted_newlines() {
    let (out, _d, r) = validate("edge-quoting.csv", &[]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        outcomes(&r),
        vec![
            o(1, 2, "v-1", "validated", ""),
            o(2, 3, "", "invalid", "record has 5 fields, the header has 4"),
            o(3, 4, "v-3", "invalid", "email: contains whitespace"),
            o(4, 6, "v-4", "validated", ""),
        ]
    );
}

#[test]
fn map_flags_name_the_columns() {
    let (out, _d, r) = validate(
        "mapped-columns.csv",
        &[
            "--map",
            "identityReference=customer_id",
            "--map",
            "email=E-mail",
            "--map",
            "mobileNumber=phone",
            "--map",
            "token=share_token",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        outcomes(&r),
        vec![
            o(1, 2, "m-1", "validated", ""),
            o(2, 3, "m-2", "validated", "")
        ]
    );
}

#[test]
fn sample_fixture_plain_and_gzip_agree_and_json_counts_add_up() {
    let (out, _d, r) = validate("sample.csv", &["--json"]);
    assert_eq!(code(&out), 1);
    let (out_gz, _d2, r_gz) = validate("sample.csv.gz", &[]);
    assert_eq!(code(&out_gz), 1);
    assert_eq!(outcomes(&r), outcomes(&r_gz));
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(j["total"], 200);
    let sum: u64 = [
        "validated",
        "invalid",
        "duplicate",
        "accepted",
        "rejected",
        "failed",
        "skipped",
    ]
    .iter()
    .map(|k| j[k].as_u64().unwrap())
    .sum();
    assert_eq!(sum, 200);
    assert!(j["invalid"].as_u64().unwrap() > 0 && j["duplicate"].as_u64().unwrap() > 0);
    assert!(j["elapsedSeconds"].is_number());
    assert_eq!(outcomes(&r).len(), 200);
    let err = stderr(&out);
    assert!(err.contains("Most common reasons"), "{err}");
    assert!(err.contains(&r.display().to_string()), "{err}");
}

#[test]
fn stdin_needs_results_and_works_with_it() {
    use std::io::Write;
    let out = run(bin().args(["validate", "-"]));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--results"), "{}", stderr(&out));

    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("r.csv");
    let mut child = bin()
        .args(["validate", "-", "--results"])
        .arg(&results)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"identityReference,email,mobileNumber,token\ns-1,s1@example.com,61410006001,tok-s1\n",
        )
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(outcomes(&results), vec![o(1, 2, "s-1", "validated", "")]);
}

#[test]
fn header_only_is_zero_records_exit_0() {
    let (out, _d, r) = validate("header-only.csv", &["--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(outcomes(&r).is_empty());
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(j["total"], 0);
}

#[test]
fn unusable_inputs_exit_2_with_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let unreadable = dir.path().join("secret.csv");
    std::fs::write(&unreadable, "identityReference\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o000)).unwrap();
    let root = unsafe_is_root();
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (fixture("empty.csv"), "is empty"),
        (fixture("binary.bin"), "binary"),
        (fixture(""), "is a directory"),
        (dir.path().join("nope.csv"), "no such file"),
        (fixture("no-header.csv"), "Headers found: id, e, m, t"),
    ];
    for (path, expect) in cases {
        let out = run(bin()
            .arg("validate")
            .arg(&path)
            .arg("--results")
            .arg(dir.path().join("r.csv")));
        assert_eq!(code(&out), 2, "{path:?}");
        let err = stderr(&out);
        assert!(err.contains(expect), "{path:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one message: {err}");
    }
    if !root {
        let out = run(bin()
            .arg("validate")
            .arg(&unreadable)
            .arg("--results")
            .arg(dir.path().join("r.csv")));
        assert_eq!(code(&out), 2);
        assert!(
            stderr(&out).contains("permission denied"),
            "{}",
            stderr(&out)
        );
    }
}

fn unsafe_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn missing_required_column_names_it_and_lists_headers() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("x.csv");
    std::fs::write(
        &input,
        "identityReference,email,phone,token\nx-1,a@b.co,61410001000,tok-x1\n",
    )
    .unwrap();
    let out = run(bin().arg("validate").arg(&input));
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("`mobileNumber`"), "{err}");
    assert!(
        err.contains("identityReference, email, phone, token"),
        "{err}"
    );
    assert!(
        !dir.path().join("x.results.csv").exists(),
        "nothing written on a fatal error"
    );
}

#[test]
fn results_default_beside_the_input_and_a_run_journal_is_never_clobbered() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("export.csv.gz");
    std::fs::copy(fixture("sample.csv.gz"), &input).unwrap();
    let out = run(bin().arg("validate").arg(&input));
    assert_eq!(code(&out), 1);
    let results = dir.path().join("export.results.csv");
    assert_eq!(outcomes(&results).len(), 200);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&results).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A second dry run may replace a dry run's results...
    assert_eq!(code(&run(bin().arg("validate").arg(&input))), 1);
    // ...but not the journal of a real run.
    std::fs::write(
        &results,
        "record,line,identityReference,outcome,httpStatus,attempts,traceId,message,errors,latencyMs,completedAt\n1,2,c-1,accepted,202,1,t,,,5,2026-11-26T12:00:00.000Z\n",
    )
    .unwrap();
    let out = run(bin().arg("validate").arg(&input));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("journal of a run"),
        "{}",
        stderr(&out)
    );
    let out = run(bin().arg("validate").arg(&input).arg("--force"));
    assert_eq!(code(&out), 1);
}

#[test]
fn help_teaches() {
    let out = run(bin().args(["validate", "--help"]));
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    for needle in [
        "--map",
        "--delimiter",
        "--results",
        "--json",
        "Example",
        "duplicate",
    ] {
        assert!(text.contains(needle), "{needle} missing from help:\n{text}");
    }
}

#[test]
fn json_consumers_get_an_object_even_on_a_fatal_error() {
    let out = run(bin()
        .args(["validate", "--json"])
        .arg(fixture("no-header.csv"))
        .arg("--results")
        .arg(std::env::temp_dir().join("kycshare-never-written.csv")));
    assert_eq!(code(&out), 2);
    let j: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(j["exitCode"], 2);
    assert_eq!(j["command"], "validate");
    assert!(j["error"].as_str().unwrap().contains("required column"));
}
