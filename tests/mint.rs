//! `run --mint`: share tokens minted just in time, against the emulator
//! with `check_tokens` (Banxa accepts only tokens it minted, once, in time).

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const APP: &str = "test-sumsub-app";
const SUMSUB_SECRET: &str = "test-sumsub-secret-4c1f";

fn emu(f: impl FnOnce(&mut kycshare::mock::MockConfig)) -> Emu {
    Emu::start(|c| {
        c.sumsub_app_token = Some(APP.into());
        c.sumsub_secret = Some(kycshare::secret::Secret::new(SUMSUB_SECRET));
        c.check_tokens = true;
        f(c);
    })
}

fn mint_cmd(input: &Path, url: &str) -> std::process::Command {
    let mut c = run_cmd(input, url);
    c.args([
        "--mint",
        "--for-client-id",
        "banxa-test",
        "--sumsub-base-url",
        url,
    ])
    .env("SUMSUB_APP_TOKEN", APP)
    .env("SUMSUB_SECRET_KEY", SUMSUB_SECRET);
    c
}

/// An export carrying applicant ids (`unknown…` ids do not exist in the emulator).
fn applicants(dir: &Path, name: &str, ids: &[&str]) -> PathBuf {
    let mut s = String::from("identityReference,email,mobileNumber,applicantId\n");
    for (i, app) in ids.iter().enumerate() {
        s.push_str(&format!("m-{i},m{i}@example.com,6141{:07},{app}\n", i));
    }
    let p = dir.join(name);
    std::fs::write(&p, s).unwrap();
    p
}

fn many(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{:024x}", 0xabc0_0000u64 + i as u64))
        .collect()
}

#[test]
fn every_row_is_accepted_with_a_freshly_minted_token_and_no_token_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("rec.jsonl");
    let e = emu(|c| c.record = Some(record.clone()));
    let ids = many(30);
    let input = applicants(
        dir.path(),
        "a.csv",
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let out = run(mint_cmd(&input, &e.url).args(["--rate", "100/s", "-vv", "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rows = results(&dir.path().join("a.results.csv"));
    assert_eq!(rows.len(), 30);
    assert!(rows.iter().all(|r| r["outcome"] == "accepted"));
    let stats = e.stats();
    assert_eq!(stats.tokens_minted, 30);
    assert_eq!(stats.token_rejections.values().sum::<u64>(), 0);
    // The tokens Banxa saw never appear in kycshare's outputs.
    let tokens: Vec<String> = record_lines(&record)
        .into_iter()
        .filter_map(|r| r.payload)
        .map(|p| p["provider"]["token"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tokens.len(), 30);
    let all = format!(
        "{}{}{}",
        stdout(&out),
        stderr(&out),
        std::fs::read_to_string(dir.path().join("a.results.csv")).unwrap()
    );
    for t in &tokens {
        assert!(!all.contains(t.as_str()), "a token leaked");
    }
    assert!(!all.contains(SUMSUB_SECRET));
}

#[test]
fn a_banxa_500_is_retried_with_a_new_token_even_when_the_fault_used_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let e = emu(|c| {
        c.fail_first = 1;
        c.consume_token_on_fault = true;
    });
    let ids = many(5);
    let input = applicants(
        dir.path(),
        "a.csv",
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let out = run(mint_cmd(&input, &e.url).args(["--rate", "100/s"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for r in results(&dir.path().join("a.results.csv")) {
        assert_eq!(r["outcome"], "accepted");
        assert_eq!(r["attempts"], "2");
    }
    let stats = e.stats();
    assert_eq!(stats.tokens_minted, 10, "one token per attempt");
    assert_eq!(stats.token_rejections.values().sum::<u64>(), 0);
}

#[test]
fn an_unknown_applicant_is_rejected_and_never_reaches_banxa() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("rec.jsonl");
    let e = emu(|c| c.record = Some(record.clone()));
    let input = applicants(dir.path(), "a.csv", &["aaaa1111", "unknown-42", "bbbb2222"]);
    let out = run(mint_cmd(&input, &e.url).args(["--rate", "100/s"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let rows = results(&dir.path().join("a.results.csv"));
    let r = rows
        .iter()
        .find(|r| r["identityReference"] == "m-1")
        .unwrap();
    assert_eq!(r["outcome"], "rejected");
    assert_eq!(r["attempts"], "0");
    assert!(r["message"].contains("Sumsub 404"), "{r:?}");
    let sent: BTreeSet<String> = record_lines(&record)
        .into_iter()
        .filter_map(|r| r.identity_reference)
        .collect();
    assert_eq!(sent, ["m-0", "m-2"].map(String::from).into());
}

#[test]
fn sumsub_5xx_are_retried_then_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let e = emu(|c| {
        c.sumsub_fail_rate = 0.5;
        c.seed = Some(5);
    });
    let ids = many(20);
    let input = applicants(
        dir.path(),
        "a.csv",
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let out = run(mint_cmd(&input, &e.url).args(["--rate", "200/s", "--max-attempts", "10"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(results(&dir.path().join("a.results.csv"))
        .iter()
        .all(|r| r["outcome"] == "accepted"));
    let stats = e.stats();
    assert!(
        stats.sumsub_requests.get("500").copied().unwrap_or(0) > 0,
        "{stats:?}"
    );
    assert_eq!(stats.tokens_minted, 20);
}

#[test]
fn a_sumsub_401_stops_the_run_and_resume_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = emu(|_| {});
    let ids = many(10);
    let input = applicants(
        dir.path(),
        "a.csv",
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let out = run(mint_cmd(&input, &e.url)
        .args(["--rate", "100/s"])
        .env("SUMSUB_SECRET_KEY", "wrong"));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Sumsub answered 401"),
        "{}",
        stderr(&out)
    );
    assert_eq!(e.stats().share_requests, 0, "nothing reached Banxa");
    let out = run(mint_cmd(&input, &e.url).args(["--rate", "100/s", "--resume"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rows = results(&dir.path().join("a.results.csv"));
    assert_eq!(rows.len(), 10);
    assert!(rows.iter().all(|r| r["outcome"] == "accepted"));
}

#[test]
fn tokens_minted_up_front_expire_while_just_in_time_tokens_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let e = emu(|_| {});
    let ids = many(30);
    // Mint every token up front, with a 2-second lifetime, as an export would carry them.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = kycshare::request::mint::SumsubClient::new(
        &e.url,
        kycshare::request::mint::SumsubCredentials {
            app_token: APP.into(),
            secret_key: kycshare::secret::Secret::new(SUMSUB_SECRET),
        },
        "banxa-test".into(),
        2,
        reqwest::Client::new(),
    );
    let mut s = String::from("identityReference,email,mobileNumber,token\n");
    for (i, app) in ids.iter().enumerate() {
        let t = match rt.block_on(client.mint(app, std::time::Duration::from_secs(5))) {
            kycshare::request::mint::MintResult::Token(t) => t,
            other => panic!("{other:?}"),
        };
        s.push_str(&format!(
            "m-{i},m{i}@example.com,6141{:07},{}\n",
            i,
            t.expose()
        ));
    }
    let upfront = dir.path().join("upfront.csv");
    std::fs::write(&upfront, s).unwrap();
    // 30 rows at 10/s take 3 s: the tokens of the later rows are dead.
    let out = run(run_cmd(&upfront, &e.url).args(["--rate", "10/s"]));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let rows = results(&dir.path().join("upfront.results.csv"));
    let rejected: Vec<_> = rows.iter().filter(|r| r["outcome"] == "rejected").collect();
    assert!(rejected.len() >= 5, "{} rejected", rejected.len());
    assert!(rejected
        .iter()
        .all(|r| r["httpStatus"] == "422" && r["errors"].contains("provider.token")));
    // The same customers with --mint, at the same rate: all accepted.
    let input = applicants(
        dir.path(),
        "jit.csv",
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let out = run(mint_cmd(&input, &e.url).args(["--rate", "10/s", "--token-ttl", "2"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(results(&dir.path().join("jit.results.csv"))
        .iter()
        .all(|r| r["outcome"] == "accepted"));
}

#[test]
fn validate_mint_checks_applicant_ids_offline() {
    let dir = tempfile::tempdir().unwrap();
    let input = applicants(dir.path(), "a.csv", &["abc123", "bad id!", ""]);
    let out = run(bin().args(["validate", "--mint"]).arg(&input));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let o = outcomes(&dir.path().join("a.results.csv"));
    assert_eq!(o[0].3, "validated");
    assert_eq!(
        o[1].4,
        "applicantId: only letters, digits, - and _ are allowed"
    );
    assert_eq!(o[2].4, "applicantId: missing");
    // Without --mint the same file lacks its token column.
    let out = run(bin().args(["validate", "--force"]).arg(&input));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("token"), "{}", stderr(&out));
}
