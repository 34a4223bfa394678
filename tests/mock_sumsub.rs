//! The emulator's Sumsub share-token endpoint and `--check-tokens`, and the
//! Sumsub client (`kycshare::request::mint`) against it, over real loopback HTTP.
//!
//! Signatures pasted here were computed outside Rust, with OpenSSL:
//!
//! ```sh
//! printf '%s' "TS""POST""/resources/accessTokens/shareToken""BODY" \
//!   | openssl dgst -sha256 -hmac SECRET
//! ```
//!
//! with the server clock fixed (`fixed_now_micros`) so their timestamps stay
//! fresh. Requests that need other bodies, and Banxa requests, are signed
//! with `ring`, an HMAC independent of the crates the emulator and client
//! use.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kycshare::mock::{MockConfig, MockServer, Stats};
use kycshare::model::Answer as PolicyAnswer;
use kycshare::request::mint::{MintResult, SumsubClient, SumsubCredentials};
use kycshare::secret::Secret;
use serde_json::{json, Value};

const KEY: &str = "test-key";
const SECRET: &str = "s3cr3t-test";
const BANXA_PATH: &str = "/eapi/v0/identities/token/share";
const SUMSUB_PATH: &str = "/resources/accessTokens/shareToken";
const APP_TOKEN: &str = "sbx:test-app-token";
const SUMSUB_SECRET: &str = "sumsub-test-secret";
/// 2025-11-26T14:00:00Z.
const NOW: u64 = 1_764_165_600_000_000;
const TS: &str = "1764165600";

/// printf '%s' "1764165600POST/resources/accessTokens/shareToken{BODY}" | openssl dgst -sha256 -hmac sumsub-test-secret
const MINT: (&str, &str) = (
    r#"{"applicantId":"5f8b1c2d3e4a5b6c7d8e9f00","forClientId":"banxa.com","ttlInSecs":600}"#,
    "f020a4369b55b917b083ddac14dff8f494684c099581f9aa64d363247419b7fc",
);
/// MINT's request signed with "other-secret".
const MINT_WRONG_SECRET_SIG: &str =
    "c13fc9a39e292abb493688e15fe6ca2fd30dd78b0eb90edb70bdab88f91923fb";
/// MINT's body, ts 301 s before NOW (stale), then 61 s (stale: Sumsub
/// allows 1 minute), then exactly 60 s (fresh).
const VERY_STALE_TS: (&str, &str) = (
    "1764165299",
    "bc9bb8523d2dee9529dadfe15566ee48748fa09d4df0ed1b7d42c8164c197429",
);
const STALE_TS: (&str, &str) = (
    "1764165539",
    "e96f76d868739be4797633aabd90fab7193d05255c39441968e5136b10fdbb33",
);
const EDGE_TS: (&str, &str) = (
    "1764165540",
    "4578f18a0a2e787a86e07c215b82cef9411a45f3a8a6d9036e41ff35fd64664d",
);
/// An applicant that does not exist (the `unknown` prefix convention).
const MINT_UNKNOWN: (&str, &str) = (
    r#"{"applicantId":"unknown-1","forClientId":"banxa.com","ttlInSecs":600}"#,
    "b2183e20daf097aaeb02ae90dccffbe4de0624a6c2c4acdf5918875839e6afc0",
);
/// A token that lives one second.
const MINT_TTL_1: (&str, &str) = (
    r#"{"applicantId":"5f8b1c2d3e4a5b6c7d8e9f00","forClientId":"banxa.com","ttlInSecs":1}"#,
    "52beabdf637d3a07fefbee3a2e444457b97c30c0f75624bbfdbee06475a7719f",
);
/// No forClientId.
const MINT_NO_CLIENT: (&str, &str) = (
    r#"{"applicantId":"5f8b1c2d3e4a5b6c7d8e9f00","ttlInSecs":600}"#,
    "95cf240053d9f4b205e2fe51eebb66c690f7d91194db45e91db35363f15d9d74",
);

fn config() -> MockConfig {
    let mut config = MockConfig::new(KEY, Secret::new(SECRET));
    config.fixed_now_micros = Some(NOW);
    config.seed = Some(7);
    config.sumsub_app_token = Some(APP_TOKEN.to_string());
    config.sumsub_secret = Some(Secret::new(SUMSUB_SECRET));
    config
}

fn checking() -> MockConfig {
    let mut config = config();
    config.check_tokens = true;
    config
}

async fn start(config: MockConfig) -> MockServer {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    MockServer::start(listen, config)
        .await
        .expect("emulator starts")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// A hand-made Sumsub request; `None` leaves a header out.
async fn mint_raw(
    server: &MockServer,
    app_token: Option<&str>,
    ts: Option<&str>,
    sig: Option<&str>,
    body: &str,
) -> Answer {
    let mut request = http()
        .post(format!("{}{SUMSUB_PATH}", server.base_url()))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    for (name, value) in [
        ("X-App-Token", app_token),
        ("X-App-Access-Ts", ts),
        ("X-App-Access-Sig", sig),
    ] {
        if let Some(value) = value {
            request = request.header(name, value);
        }
    }
    let response = request.send().await.expect("an answer");
    Answer {
        status: response.status().as_u16(),
        body: response.text().await.unwrap(),
    }
}

/// A pasted vector at the fixed clock.
async fn mint_pasted(server: &MockServer, (body, sig): (&str, &str)) -> Answer {
    mint_raw(server, Some(APP_TOKEN), Some(TS), Some(sig), body).await
}

fn ring_hex(secret: &str, message: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, message.as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Mints a token at the fixed clock, signed with ring; returns it.
async fn mint_token(server: &MockServer, applicant: &str, ttl: u64) -> String {
    let body =
        json!({"applicantId": applicant, "forClientId": "banxa.com", "ttlInSecs": ttl}).to_string();
    let sig = ring_hex(SUMSUB_SECRET, &format!("{TS}POST{SUMSUB_PATH}{body}"));
    let answer = mint_raw(server, Some(APP_TOKEN), Some(TS), Some(&sig), &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()["token"].as_str().unwrap().to_string()
}

/// A valid Banxa share request carrying `token`, nonce NOW + `n` µs,
/// signed with ring.
async fn share(server: &MockServer, id: &str, token: &str, n: u64) -> Answer {
    let body = json!({
        "identityReference": id,
        "email": "jane@example.com",
        "mobileNumber": "61410001000",
        "provider": {"vendor": "sumsub", "token": token},
    })
    .to_string();
    let nonce = (NOW + n).to_string();
    let sig = ring_hex(SECRET, &format!("POST\n{BANXA_PATH}\n{nonce}\n{body}"));
    let response = http()
        .post(format!("{}{BANXA_PATH}", server.base_url()))
        .header("Authorization", format!("Bearer {KEY}:{sig}:{nonce}"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("an answer");
    Answer {
        status: response.status().as_u16(),
        body: response.text().await.unwrap(),
    }
}

fn count(map: &std::collections::BTreeMap<String, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

const TOKEN_422: &str = r#"{"message":"The given data was invalid.","errors":{"provider.token":["The provider.token is invalid or expired."]},"status":422}"#;

// ---------------------------------------------------------------- minting

#[tokio::test]
async fn good_mint_with_a_pasted_vector() {
    let server = start(config()).await;
    let answer = mint_pasted(&server, MINT).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let value = answer.json();
    assert_eq!(value["forClientId"], "banxa.com");
    let token = value["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("_act-"), "{token}");
    assert!(token.len() >= 64, "{token}");
    // The same signed request again (Sumsub has no nonce): another token.
    let again = mint_pasted(&server, MINT).await.json();
    assert_ne!(again["token"].as_str().unwrap(), token);

    let stats = server.stats();
    assert_eq!(stats.tokens_minted, 2);
    assert_eq!(count(&stats.sumsub_requests, "200"), 2);
    assert_eq!(stats.total, 2);
    // Sumsub is another service: not in Banxa's counters.
    assert_eq!(stats.share_requests, 0);
    assert!(stats.by_status.is_empty(), "{stats:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn timestamp_exactly_1_minute_old_is_fresh() {
    let server = start(config()).await;
    let (ts, sig) = EDGE_TS;
    let answer = mint_raw(&server, Some(APP_TOKEN), Some(ts), Some(sig), MINT.0).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    server.shutdown().await;
}

async fn assert_401(server: &MockServer, answer: Answer, reason: &str) {
    assert_eq!(answer.status, 401, "{}", answer.body);
    let value = answer.json();
    assert_eq!(value["code"], 401);
    assert!(value["description"].as_str().unwrap().len() > 5, "{value}");
    assert!(value["correlationId"].as_str().is_some(), "{value}");
    let stats = server.stats();
    assert_eq!(count(&stats.sumsub_auth_failures, reason), 1, "{stats:?}");
    assert_eq!(stats.tokens_minted, 0);
}

#[tokio::test]
async fn wrong_signature_is_401() {
    let server = start(config()).await;
    let answer = mint_raw(
        &server,
        Some(APP_TOKEN),
        Some(TS),
        Some(MINT_WRONG_SECRET_SIG),
        MINT.0,
    )
    .await;
    assert_401(&server, answer, "bad_signature").await;
    server.shutdown().await;
}

#[tokio::test]
async fn signature_over_other_bytes_or_uppercase_is_401() {
    let server = start(config()).await;
    let tampered = MINT.0.replace("600", "601");
    let answer = mint_raw(&server, Some(APP_TOKEN), Some(TS), Some(MINT.1), &tampered).await;
    assert_eq!(answer.status, 401);
    let upper = MINT.1.to_uppercase();
    let answer = mint_raw(&server, Some(APP_TOKEN), Some(TS), Some(&upper), MINT.0).await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        count(&server.stats().sumsub_auth_failures, "bad_signature"),
        2
    );
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_app_token_is_401() {
    let server = start(config()).await;
    let answer = mint_raw(&server, Some("sbx:other"), Some(TS), Some(MINT.1), MINT.0).await;
    assert_401(&server, answer, "unknown_app_token").await;
    server.shutdown().await;
}

#[tokio::test]
async fn stale_timestamp_is_401() {
    let server = start(config()).await;
    let (ts, sig) = STALE_TS;
    let answer = mint_raw(&server, Some(APP_TOKEN), Some(ts), Some(sig), MINT.0).await;
    assert_401(&server, answer, "stale_ts").await;
    server.shutdown().await;
    let server = start(config()).await;
    let (ts, sig) = VERY_STALE_TS;
    let answer = mint_raw(&server, Some(APP_TOKEN), Some(ts), Some(sig), MINT.0).await;
    assert_401(&server, answer, "stale_ts").await;
    server.shutdown().await;
}

#[tokio::test]
async fn missing_header_is_401() {
    let server = start(config()).await;
    let answer = mint_raw(&server, Some(APP_TOKEN), None, Some(MINT.1), MINT.0).await;
    assert_401(&server, answer, "missing_header").await;
    server.shutdown().await;
}

#[tokio::test]
async fn unconfigured_sumsub_is_401() {
    let mut config = config();
    config.sumsub_app_token = None;
    config.sumsub_secret = None;
    let server = start(config).await;
    let answer = mint_pasted(&server, MINT).await;
    assert_401(&server, answer, "not_configured").await;
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_applicant_is_404() {
    let server = start(config()).await;
    let answer = mint_pasted(&server, MINT_UNKNOWN).await;
    assert_eq!(answer.status, 404);
    let value = answer.json();
    assert_eq!(value["description"], "Applicant not found");
    assert_eq!(value["code"], 404);
    assert!(value["correlationId"].is_string());
    assert_eq!(server.stats().tokens_minted, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn missing_field_is_400() {
    let server = start(config()).await;
    let answer = mint_pasted(&server, MINT_NO_CLIENT).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let value = answer.json();
    assert_eq!(value["code"], 400);
    assert!(
        value["description"]
            .as_str()
            .unwrap()
            .contains("forClientId"),
        "{value}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn forbidden_client_is_403_and_wrong_method_405() {
    let mut config = config();
    config.sumsub_forbidden_client = Some("banxa.com".into());
    let server = start(config).await;
    let answer = mint_pasted(&server, MINT).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let response = http()
        .get(format!("{}{SUMSUB_PATH}", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    server.shutdown().await;
}

#[tokio::test]
async fn sumsub_fail_rate_1_is_500_and_mints_nothing() {
    let mut config = config();
    config.sumsub_fail_rate = 1.0;
    let server = start(config).await;
    let answer = mint_pasted(&server, MINT).await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.json()["code"], 500);
    // Faults come after authentication: a 401 stays a 401.
    let answer = mint_raw(
        &server,
        Some(APP_TOKEN),
        Some(TS),
        Some(MINT_WRONG_SECRET_SIG),
        MINT.0,
    )
    .await;
    assert_eq!(answer.status, 401);
    let stats = server.stats();
    assert_eq!(stats.tokens_minted, 0);
    assert_eq!(count(&stats.sumsub_requests, "500"), 1);
    assert_eq!(count(&stats.sumsub_requests, "401"), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn sumsub_is_not_under_banxas_rate_limit() {
    let mut config = checking();
    config.rate_limit_per_min = Some(1);
    let server = start(config).await;
    let mut tokens = Vec::new();
    for _ in 0..5 {
        tokens.push(mint_token(&server, "a-1", 600).await);
    }
    assert_eq!(share(&server, "c-1", &tokens[0], 0).await.status, 202);
    assert_eq!(share(&server, "c-2", &tokens[1], 1).await.status, 429);
    server.shutdown().await;
}

// ---------------------------------------------------------------- --check-tokens

#[tokio::test]
async fn minted_token_is_accepted_once() {
    let server = start(checking()).await;
    let token = mint_token(&server, "applicant-1", 600).await;
    let answer = share(&server, "c-1", &token, 0).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let answer = share(&server, "c-1", &token, 1).await;
    assert_eq!(answer.status, 422);
    assert_eq!(answer.body, TOKEN_422);
    // Another customer with the same token: still used.
    assert_eq!(share(&server, "c-2", &token, 2).await.status, 422);
    let stats = server.stats();
    assert_eq!(count(&stats.token_rejections, "used"), 2);
    assert_eq!(count(&stats.token_rejections, "unknown"), 0);
    assert_eq!(count(&stats.by_status, "202"), 1);
    assert_eq!(count(&stats.by_status, "422"), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn expired_token_is_422() {
    let server = start(checking()).await;
    let answer = mint_pasted(&server, MINT_TTL_1).await;
    assert_eq!(answer.status, 200);
    let token = answer.json()["token"].as_str().unwrap().to_string();
    let fresh = mint_token(&server, "applicant-2", 600).await;
    // One second later, by the emulator's clock.
    server.set_now_micros(NOW + 1_000_000);
    let answer = share(&server, "c-1", &token, 1_000_000).await;
    assert_eq!(answer.status, 422);
    assert_eq!(answer.body, TOKEN_422);
    assert_eq!(
        share(&server, "c-2", &fresh, 1_000_001).await.status,
        202,
        "a token within its TTL still works"
    );
    let stats = server.stats();
    assert_eq!(count(&stats.token_rejections, "expired"), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn token_just_inside_its_ttl_is_accepted() {
    let server = start(checking()).await;
    let answer = mint_pasted(&server, MINT_TTL_1).await;
    let token = answer.json()["token"].as_str().unwrap().to_string();
    server.set_now_micros(NOW + 999_999);
    assert_eq!(share(&server, "c-1", &token, 999_999).await.status, 202);
    server.shutdown().await;
}

#[tokio::test]
async fn unminted_token_is_422_unless_tokens_are_not_checked() {
    let server = start(checking()).await;
    let answer = share(&server, "c-1", "_act-sbx-jwt-eyJhbGciOiJub25lIn0", 0).await;
    assert_eq!(answer.status, 422);
    assert_eq!(answer.body, TOKEN_422);
    assert_eq!(
        count(&server.stats().token_rejections, "unknown"),
        1,
        "{:?}",
        server.stats()
    );
    server.shutdown().await;

    let server = start(config()).await;
    let answer = share(&server, "c-1", "_act-sbx-jwt-eyJhbGciOiJub25lIn0", 0).await;
    assert_eq!(answer.status, 202);
    server.shutdown().await;
}

#[tokio::test]
async fn other_field_errors_come_before_the_token_check() {
    let server = start(checking()).await;
    let token = mint_token(&server, "applicant-1", 600).await;
    // An invalid identityReference: 422 on that field, the token untouched.
    let answer = share(&server, "c_1", &token, 0).await;
    assert_eq!(answer.status, 422);
    assert!(answer.body.contains("identityReference"), "{}", answer.body);
    assert!(!answer.body.contains("provider.token"), "{}", answer.body);
    assert_eq!(share(&server, "c-1", &token, 1).await.status, 202);
    server.shutdown().await;
}

#[tokio::test]
async fn fault_consumes_the_token_with_consume_token_on_fault() {
    let mut config = checking();
    config.fail_first = 1;
    config.consume_token_on_fault = true;
    let server = start(config).await;
    let first = mint_token(&server, "applicant-1", 600).await;
    assert_eq!(share(&server, "c-1", &first, 0).await.status, 500);
    // The failed attempt used the token up: resending it is refused...
    let answer = share(&server, "c-1", &first, 1).await;
    assert_eq!(answer.status, 422);
    assert_eq!(answer.body, TOKEN_422);
    // ...while a freshly minted one is accepted.
    let second = mint_token(&server, "applicant-1", 600).await;
    assert_eq!(share(&server, "c-1", &second, 2).await.status, 202);
    let stats = server.stats();
    assert_eq!(count(&stats.token_rejections, "used"), 1);
    assert_eq!(count(&stats.by_status, "500"), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn fault_keeps_the_token_without_consume_token_on_fault() {
    let mut config = checking();
    config.fail_first = 1;
    let server = start(config).await;
    let token = mint_token(&server, "applicant-1", 600).await;
    assert_eq!(share(&server, "c-1", &token, 0).await.status, 500);
    assert_eq!(share(&server, "c-1", &token, 1).await.status, 202);
    assert_eq!(share(&server, "c-1", &token, 2).await.status, 422);
    server.shutdown().await;
}

#[tokio::test]
async fn concurrent_requests_spend_a_token_once() {
    let mut config = checking();
    config.rate_limit_per_min = None;
    let server = start(config).await;
    let token = mint_token(&server, "applicant-1", 600).await;
    let ids: Vec<String> = (0..16).map(|n| format!("c-{n}")).collect();
    let answers = futures::future::join_all(
        ids.iter()
            .zip(0u64..)
            .map(|(id, n)| share(&server, id, &token, n)),
    )
    .await;
    let accepted = answers.iter().filter(|a| a.status == 202).count();
    let refused = answers.iter().filter(|a| a.status == 422).count();
    assert_eq!((accepted, refused), (1, 15));
    server.shutdown().await;
}

// ---------------------------------------------------------------- the client

fn unix_now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn creds(secret: &str) -> SumsubCredentials {
    SumsubCredentials {
        app_token: APP_TOKEN.to_string(),
        secret_key: Secret::new(secret),
    }
}

/// The client signs with the system clock: fix the emulator's clock at now.
fn live_config() -> MockConfig {
    let mut config = config();
    config.fixed_now_micros = Some(unix_now_micros());
    config
}

fn client_for(server: &MockServer, secret: &str) -> SumsubClient {
    SumsubClient::new(
        &server.base_url(),
        creds(secret),
        "banxa.com".to_string(),
        600,
        http(),
    )
}

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn client_mints_a_token_banxa_accepts_once() {
    let mut config = live_config();
    config.check_tokens = true;
    let now = config.fixed_now_micros.unwrap();
    let server = start(config).await;
    let client = client_for(&server, SUMSUB_SECRET);
    let token = match client.mint("5f8b1c2d3e4a5b6c7d8e9f00", TIMEOUT).await {
        MintResult::Token(token) => token,
        other => panic!("{other:?}"),
    };
    assert_eq!(format!("{token:?}"), "***");
    assert!(token.expose().starts_with("_act-"));
    // Banxa's side, with the clock of this test's nonces.
    server.set_now_micros(NOW);
    assert_eq!(share(&server, "c-1", token.expose(), 0).await.status, 202);
    assert_eq!(share(&server, "c-1", token.expose(), 1).await.status, 422);
    server.set_now_micros(now);
    // One call, one request.
    let stats = server.stats();
    assert_eq!(count(&stats.sumsub_requests, "200"), 1);
    assert_eq!(stats.tokens_minted, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn client_rejected_for_an_unknown_applicant() {
    let server = start(live_config()).await;
    let client = client_for(&server, SUMSUB_SECRET);
    match client.mint("unknown-42", TIMEOUT).await {
        MintResult::Rejected { status, message } => {
            assert_eq!(status, 404);
            assert_eq!(message, "Sumsub 404: Applicant not found");
        }
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn client_rejected_for_a_forbidden_client() {
    let mut config = live_config();
    config.sumsub_forbidden_client = Some("banxa.com".into());
    let server = start(config).await;
    match client_for(&server, SUMSUB_SECRET)
        .mint("applicant-1", TIMEOUT)
        .await
    {
        MintResult::Rejected { status, message } => {
            assert_eq!(status, 403);
            assert!(message.starts_with("Sumsub 403: "), "{message}");
        }
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn client_retryable_on_sumsub_500() {
    let mut config = live_config();
    config.sumsub_fail_rate = 1.0;
    let server = start(config).await;
    match client_for(&server, SUMSUB_SECRET)
        .mint("applicant-1", TIMEOUT)
        .await
    {
        MintResult::Retryable { answer, message } => {
            assert_eq!(
                answer,
                PolicyAnswer::Http {
                    status: 500,
                    retry_after: None
                }
            );
            assert!(message.starts_with("Sumsub 500: "), "{message}");
        }
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn client_unauthorized_with_a_wrong_secret() {
    let server = start(live_config()).await;
    match client_for(&server, "wrong-secret")
        .mint("applicant-1", TIMEOUT)
        .await
    {
        MintResult::Unauthorized { message } => {
            assert!(message.starts_with("Sumsub 401: "), "{message}");
            assert!(!message.contains("wrong-secret"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let stats = server.stats();
    assert_eq!(count(&stats.sumsub_auth_failures, "bad_signature"), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn client_times_out_on_a_slow_sumsub() {
    let mut config = live_config();
    config.sumsub_latency = Duration::from_secs(30);
    let server = start(config).await;
    let result = client_for(&server, SUMSUB_SECRET)
        .mint("applicant-1", Duration::from_millis(200))
        .await;
    match result {
        MintResult::Retryable { answer, message } => {
            assert_eq!(answer, PolicyAnswer::Timeout);
            assert!(message.starts_with("Sumsub"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown cuts the latency short");
}

#[tokio::test]
async fn client_transport_error_when_nothing_listens() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = SumsubClient::new(&url, creds(SUMSUB_SECRET), "banxa.com".into(), 600, http());
    match client.mint("applicant-1", TIMEOUT).await {
        MintResult::Retryable { answer, message } => {
            assert_eq!(answer, PolicyAnswer::Transport);
            assert!(message.starts_with("Sumsub: "), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn client_keeps_a_base_url_path_prefix() {
    // The emulator serves no path prefix: the client sends the prefix (it
    // does not drop it), and the router's 404 is a Rejected, not a token.
    let server = start(live_config()).await;
    let client = SumsubClient::new(
        &format!("{}/prefix/", server.base_url()),
        creds(SUMSUB_SECRET),
        "banxa.com".into(),
        600,
        http(),
    );
    match client.mint("applicant-1", TIMEOUT).await {
        MintResult::Rejected { status, message } => {
            assert_eq!(status, 404);
            assert!(message.starts_with("Sumsub 404: "), "{message}");
        }
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

// ---------------------------------------------------------------- the binary

#[tokio::test]
async fn binary_serves_sumsub_with_check_tokens() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("sumsub-secret");
    std::fs::write(&secret_file, format!("{SUMSUB_SECRET}\n")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kycshare"))
        .args([
            "mock",
            "--listen",
            "127.0.0.1:0",
            "--check-tokens",
            "--sumsub-app-token",
            APP_TOKEN,
            "--sumsub-secret-file",
        ])
        .arg(&secret_file)
        .env("BANXA_API_KEY", KEY)
        .env("BANXA_API_SECRET", SECRET)
        .env_remove("SUMSUB_APP_TOKEN")
        .env_remove("SUMSUB_SECRET_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the address is printed")
        .unwrap()
        .expect("a line");
    let url = line.strip_prefix("listening on ").unwrap().to_string();
    let client = SumsubClient::new(&url, creds(SUMSUB_SECRET), "banxa.com".into(), 600, http());
    let MintResult::Token(token) = client.mint("applicant-1", TIMEOUT).await else {
        panic!("a token");
    };
    // Banxa's endpoint refuses a token it did not mint.
    let body = json!({
        "identityReference": "c-1",
        "email": "jane@example.com",
        "mobileNumber": "61410001000",
        "provider": {"vendor": "sumsub", "token": "_act-not-minted"},
    })
    .to_string();
    let nonce = unix_now_micros().to_string();
    let sig = ring_hex(SECRET, &format!("POST\n{BANXA_PATH}\n{nonce}\n{body}"));
    let response = http()
        .post(format!("{url}{BANXA_PATH}"))
        .header("Authorization", format!("Bearer {KEY}:{sig}:{nonce}"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let stats = http()
        .get(format!("{url}/stats"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let stats: Stats = serde_json::from_str(&stats).expect("stats JSON");
    assert_eq!(stats.tokens_minted, 1);
    assert_eq!(count(&stats.token_rejections, "unknown"), 1);

    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains(SUMSUB_SECRET), "{stderr}");
    assert!(!stderr.contains(token.expose()), "{stderr}");
}

#[tokio::test]
async fn binary_refuses_an_app_token_without_a_secret() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kycshare"))
        .args([
            "mock",
            "--listen",
            "127.0.0.1:0",
            "--sumsub-app-token",
            APP_TOKEN,
        ])
        .env("BANXA_API_KEY", KEY)
        .env("BANXA_API_SECRET", SECRET)
        .env_remove("SUMSUB_APP_TOKEN")
        .env_remove("SUMSUB_SECRET_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SUMSUB_SECRET_KEY"), "{stderr}");
}
