//! The contract as Banxa's and Sumsub's published docs give it, through the
//! real binary: authentication codes and what the stop message says of
//! them, field limits, duplicates, rate defaults and warnings, the minting
//! safety rule, and the emulator's help text.

mod common;
use common::*;

/// A 401 with Banxa's code stops the run (exit 3) with the code, the
/// request_id and an explanation an operator can act on.
#[test]
fn a_401_names_banxas_code_and_explains_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = export(dir.path(), "export.csv", "a", 5);
    let emu = Emu::start(|c| c.error_codes = true);
    let out = run(run_cmd(&input, &emu.url)
        .env("BANXA_API_SECRET", "not-the-secret")
        .args(["--rate", "50/s", "--concurrency", "1"]));
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    assert!(err.contains("code 40103"), "{err}");
    assert!(err.contains("request_id mock-"), "{err}");
    assert!(err.contains("signature does not match"), "{err}");
    assert!(
        !err.contains("not-the-secret"),
        "the secret is never printed"
    );
    // Nothing was accepted; the unsent rows are out of the results.
    let res = dir.path().join("export.results.csv");
    assert!(ids_with_outcome(&res, "accepted").is_empty());

    // A key Banxa no longer knows (revoked): 40100, the environment hint.
    let emu = Emu::start(|c| {
        c.error_codes = true;
        c.unauth_after = Some(2);
    });
    let out =
        run(run_cmd(&input, &emu.url).args(["--rate", "50/s", "--concurrency", "1", "--force"]));
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    assert!(err.contains("code 40100"), "{err}");
    assert!(err.contains("sandbox key on production"), "{err}");
}

/// Banxa's limits: email at most 200 characters, token 6 to 1024 bytes;
/// and an invalid record does not claim its identityReference.
#[test]
fn field_limits_and_duplicates_follow_the_docs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("limits.csv");
    let email200 = format!(
        "{}@{}.{}.{}",
        "a".repeat(64),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(7)
    );
    assert_eq!(email200.len(), 200);
    let rows = [
        format!("l-1,{email200},61410000001,tok-l1"),
        format!("l-2,x{email200},61410000002,tok-l2"),
        "l-3,l3@example.com,61410000003,12345".to_string(),
        "l-4,l4@example.com,61410000004,123456".to_string(),
        format!("l-5,l5@example.com,61410000005,{}", "t".repeat(1024)),
        format!("l-6,l6@example.com,61410000006,{}", "t".repeat(1025)),
        // Invalid first, then valid: the valid one is sent, not a duplicate.
        "l-7,not-an-email,61410000007,tok-l7".to_string(),
        "l-7,l7@example.com,61410000017,tok-l7b".to_string(),
        // Valid first, then another: the second is the duplicate.
        "l-7,l7c@example.com,61410000027,tok-l7c".to_string(),
    ];
    std::fs::write(
        &input,
        format!(
            "identityReference,email,mobileNumber,token\n{}\n",
            rows.join("\n")
        ),
    )
    .unwrap();
    let res = dir.path().join("limits.results.csv");
    let out = run(bin().arg("validate").arg(&input));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let got: Vec<(u64, String, String)> = outcomes(&res)
        .into_iter()
        .map(|r| (r.0, r.3, r.4))
        .collect();
    let want = [
        (1, "validated", ""),
        (
            2,
            "invalid",
            "email: 201 characters, at most 200 (Banxa's limit)",
        ),
        (
            3,
            "invalid",
            "token: 5 bytes, at least 6 (Banxa's minimum: a cut-off export?)",
        ),
        (4, "validated", ""),
        (5, "validated", ""),
        (6, "invalid", "token: 1025 bytes, at most 1024"),
        (7, "invalid", "email: missing @"),
        (8, "validated", ""),
        (9, "duplicate", "duplicate of record 8"),
    ]
    .map(|(r, o, m)| (r, o.to_string(), m.to_string()));
    assert_eq!(got, want);

    // The emulator holds Banxa's side of the same limits (422).
    let emu = Emu::start(|_| {});
    let out = run(run_cmd(&input, &emu.url).args(["--rate", "100/s", "--force"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(
        ids_with_outcome(&res, "accepted"),
        ["l-1", "l-4", "l-5", "l-7"].map(String::from).into()
    );
}

/// A header-only export sends nothing, so these runs show only the
/// settings checks.
fn header_only(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("empty.csv");
    std::fs::write(&p, "identityReference,email,mobileNumber,token\n").unwrap();
    p
}

#[test]
fn a_rate_above_the_published_limit_is_warned_about_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = header_only(dir.path());
    let out = run(run_cmd(&input, "https://api.banxa.com").args(["--rate", "10/s"]));
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert_eq!(
        err.matches("above Banxa's published limit").count(),
        1,
        "{err}"
    );
    assert!(err.contains("500 requests per minute per IP"), "{err}");

    let out = run(
        run_cmd(&input, "https://api.banxa-sandbox.com").args(["--rate", "450/min", "--force"])
    );
    let err = stderr(&out);
    assert!(err.contains("120 requests per minute"), "{err}");

    // The defaults stay under the limits: no warning.
    for url in ["https://api.banxa.com", "https://api.banxa-sandbox.com"] {
        let out = run(run_cmd(&input, url).args(["--force", "-v"]));
        let err = stderr(&out);
        assert!(!err.contains("published limit"), "{url}: {err}");
        let want = if url.contains("sandbox") {
            "100/min"
        } else {
            "450/min"
        };
        assert!(err.contains(&format!("rate={want}")), "{url}: {err}");
    }
}

#[test]
fn minting_against_a_loopback_banxa_needs_an_explicit_sumsub() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mint.csv");
    std::fs::write(
        &input,
        "identityReference,email,mobileNumber,applicantId\nm-1,m1@example.com,61410000001,app-1\n",
    )
    .unwrap();
    let emu = Emu::start(|_| {});
    let out = run(run_cmd(&input, &emu.url)
        .args(["--mint", "--for-client-id", "banxa"])
        .env("SUMSUB_APP_TOKEN", "app")
        .env("SUMSUB_SECRET_KEY", "sumsub-secret"));
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.contains("needs --sumsub-base-url"), "{err}");
    assert!(err.contains("must not mint production tokens"), "{err}");
    assert_eq!(emu.stats().total, 0, "nothing was sent");
    assert!(!dir.path().join("mint.results.csv").exists());
}

#[test]
fn mock_help_never_shows_secret_values() {
    let out = run(bin()
        .args(["mock", "--help"])
        .env("SUMSUB_APP_TOKEN", "sumsub-app-token-value-77")
        .env("BANXA_API_KEY", "banxa-key-value-88")
        .env("BANXA_API_SECRET", "banxa-secret-value-99"));
    assert_eq!(code(&out), 0);
    let help = stdout(&out);
    assert!(help.contains("--error-codes"), "{help}");
    for v in [
        "sumsub-app-token-value-77",
        "banxa-key-value-88",
        "banxa-secret-value-99",
    ] {
        assert!(!help.contains(v), "mock --help shows {v}");
    }
}
