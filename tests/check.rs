//! `kycshare check`: the preflight, through the real binary.

mod common;
use common::*;

fn check(url: &str) -> std::process::Command {
    let mut c = bin();
    c.args(["check", "--base-url", url, "--json"])
        .env("BANXA_API_KEY", KEY)
        .env("BANXA_API_SECRET", SECRET);
    c
}

fn checks(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(stdout(o).trim()).expect("--json")
}

#[test]
fn a_good_setup_is_ready_and_changes_nothing() {
    let emu = Emu::start(|_| {});
    let out = run(&mut check(&emu.url));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let j = checks(&out);
    assert_eq!(j["ready"], true);
    assert!(
        stderr(&out).contains("credentials were accepted"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("clock"), "{}", stderr(&out));
    assert_eq!(emu.stats().by_status.get("202"), None, "nothing shared");
}

#[test]
fn an_unreachable_banxa_is_not_ready_and_says_why() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(&mut check(&format!("http://127.0.0.1:{port}")));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("127.0.0.1:{port} unreachable")),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn no_credentials_is_not_ready() {
    let emu = Emu::start(|_| {});
    let out = run(check(&emu.url).env_remove("BANXA_API_SECRET"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("BANXA_API_SECRET"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let out = run(&mut check("http://api.banxa.com"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("plain http"), "{}", stderr(&out));
}

#[test]
fn a_wrong_secret_is_not_ready_with_banxas_code_explained() {
    let emu = Emu::start(|c| c.error_codes = true);
    let out = run(check(&emu.url).env("BANXA_API_SECRET", "not-the-secret"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("401") && err.contains("40103"), "{err}");
    assert!(err.contains("signature does not match"), "{err}");
}

fn mint_check(url: &str, sumsub_secret: &str) -> std::process::Command {
    let mut c = check(url);
    c.args([
        "--mint",
        "--for-client-id",
        "banxa",
        "--sumsub-base-url",
        url,
    ])
    .env("SUMSUB_APP_TOKEN", "app-token-1")
    .env("SUMSUB_SECRET_KEY", sumsub_secret);
    c
}

#[test]
fn with_mint_sumsubs_credentials_are_checked_too() {
    let emu = Emu::start(|c| {
        c.sumsub_app_token = Some("app-token-1".into());
        c.sumsub_secret = Some(kycshare::secret::Secret::new("sumsub-secret-1"));
    });
    let out = run(&mut mint_check(&emu.url, "sumsub-secret-1"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("app token and secret were accepted"),
        "{}",
        stderr(&out)
    );
    let out = run(&mut mint_check(&emu.url, "wrong"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("NO  sumsub") && err.contains("401"), "{err}");
    assert_eq!(emu.stats().tokens_minted, 0, "nothing minted");
}
