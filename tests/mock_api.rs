//! The emulator over real loopback HTTP, request by request.
//!
//! Every signature pasted here was computed outside Rust, with OpenSSL
//! (`sh tests/mock_vectors.sh SECRET NONCE BODY`), never with the crate's
//! signer. The server clock is fixed (`fixed_now_micros`) so the pasted
//! nonces stay fresh. Tests that need many fresh nonces sign with `ring`,
//! an HMAC independent of the `hmac`/`sha2` crates the emulator uses.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kycshare::mock::{MockConfig, MockServer, Stats};
use kycshare::secret::Secret;
use serde_json::{json, Value};

const KEY: &str = "test-key";
const SECRET: &str = "s3cr3t-test";
const PATH: &str = "/eapi/v0/identities/token/share";
/// 2025-11-26T14:00:00Z in microseconds: the nonce of the pasted vectors.
const NONCE: &str = "1764165600000000";
const NOW: u64 = 1_764_165_600_000_000;
const MINUTE: u64 = 60_000_000;

const GOOD: (&str, &str) = (
    r#"{"identityReference":"c-13344","email":"jane@example.com","mobileNumber":"61410001000","provider":{"vendor":"sumsub","token":"_act-sbx-jwt-eyJhbGciOiJub25lIn0"}}"#,
    "9009436d28680c5c45f3e8481f60adedeeea8a5e21bab7ceb2a08832185649ca",
);
/// GOOD's body signed with the secret "other-secret".
const WRONG_SECRET_SIG: &str = "2a90f8658d505040feb9f6f1a0515bd6f9041dffce7615975274e1276767d9df";
/// GOOD's body with the nonce in seconds, then in milliseconds.
const SECS_NONCE: (&str, &str) = (
    "1764165600",
    "ffbf277162d36025b25ef114750cc9041319f7e36a269e9b3e43a98d2c2e4c3d",
);
const MILLIS_NONCE: (&str, &str) = (
    "1764165600000",
    "8ce841a4b13c2868d9e2b41f55208c85b4ad1c268b25353d0ead6fef0e80c5d8",
);
/// GOOD's body with a nonce that is not digits only, correctly signed.
const LETTERS_NONCE: (&str, &str) = (
    "17641656000000ab",
    "bf6484ce02463c0a8aed9c38cf8cb1dff15523d25bf89a03e1de97a8a16fb8f0",
);
/// GOOD's fields, pretty-printed (whitespace between elements), signed.
const PRETTY: (&str, &str) = (
    "{\n  \"identityReference\": \"c-13344\",\n  \"email\": \"jane@example.com\",\n  \"mobileNumber\": \"61410001000\",\n  \"provider\": {\"vendor\": \"sumsub\", \"token\": \"_act-sbx-jwt-eyJhbGciOiJub25lIn0\"}\n}",
    "2a511f875430617470f68621cde0a0ab2ca6d4a7fb8abc0fdb4760da6aba1121",
);
/// Invalid bodies (one field wrong each), signed with the OpenSSL tool.
const BAD_ID: (&str, &str) = (
    r#"{"identityReference":"c_13344","email":"jane@example.com","mobileNumber":"61410001000","provider":{"vendor":"sumsub","token":"_act-sbx-jwt-eyJhbGciOiJub25lIn0"}}"#,
    "61bce3fd4718387f95720dba35d8219af3c98ab665f4355eec83893e2af70efe",
);
const NO_ID: (&str, &str) = (
    r#"{"email":"jane@example.com","mobileNumber":"61410001000","provider":{"vendor":"sumsub","token":"_act-sbx-jwt-eyJhbGciOiJub25lIn0"}}"#,
    "b8f423513ef53ef1b5333ad49a1159716fffe0f2c6afbdb896624f65c8850311",
);
const BAD_EMAIL: (&str, &str) = (
    r#"{"identityReference":"c-13344","email":"jane.example.com","mobileNumber":"61410001000","provider":{"vendor":"sumsub","token":"_act-sbx-jwt-eyJhbGciOiJub25lIn0"}}"#,
    "4b3d59001d6cd3df25a3128a65c85cde01ace2825f015fbe9a3976292b719058",
);
const NO_EMAIL: (&str, &str) = (
    r#"{"identityReference":"c-13344","mobileNumber":"61410001000","provider":{"vendor":"sumsub","token":"_act-sbx-jwt-eyJhbGciOiJub25lIn0"}}"#,
    "7f164f77a1bcad9c735e31cec12e436357c3e66dba42454965008c77f07a20de",
);
const BAD_MOBILE: (&str, &str) = (
    r#"{"identityReference":"c-13344","email":"jane@example.com","mobileNumber":"+61410001000","provider":{"vendor":"sumsub","token":"_act-sbx-jwt-eyJhbGciOiJub25lIn0"}}"#,
    "f009a08ad63060de9a5fafda223779ce5448ca449d75039e39e906166e185acf",
);
const EMPTY_MOBILE: (&str, &str) = (
    r#"{"identityReference":"c-13344","email":"jane@example.com","mobileNumber":"","provider":{"vendor":"sumsub","token":"_act-sbx-jwt-eyJhbGciOiJub25lIn0"}}"#,
    "b34ad839472dab022456611ec57cb6fdb90f92d42794bcf34093b52828cd4832",
);
const NUMERIC_MOBILE: (&str, &str) = (
    r#"{"identityReference":"c-13344","email":"jane@example.com","mobileNumber":61410001000,"provider":{"vendor":"sumsub","token":"_act-sbx-jwt-eyJhbGciOiJub25lIn0"}}"#,
    "aa3dce3e6df9092639caebe3c8b4c90f0d7f3706f120a34dadcbd30abbf094d6",
);
const BAD_VENDOR: (&str, &str) = (
    r#"{"identityReference":"c-13344","email":"jane@example.com","mobileNumber":"61410001000","provider":{"vendor":"onfido","token":"_act-sbx-jwt-eyJhbGciOiJub25lIn0"}}"#,
    "eb97be953000701e603a5d3fad193c465cd71809dad7e88dfeef353d8ebdb015",
);
const NO_TOKEN: (&str, &str) = (
    r#"{"identityReference":"c-13344","email":"jane@example.com","mobileNumber":"61410001000","provider":{"vendor":"sumsub"}}"#,
    "ea9ebe48842a8c39d8aea275054adbc5d3f922698373dbf9bb3ec6ca79485cdd",
);
const NO_PROVIDER: (&str, &str) = (
    r#"{"identityReference":"c-13344","email":"jane@example.com","mobileNumber":"61410001000"}"#,
    "3adc62c778631ea5c9a65da221803461fd86a2624e06e6ba7349b262b230bc30",
);
const EMPTY_OBJECT: (&str, &str) = (
    r#"{}"#,
    "e9d09b902f6a57cfbea5919222918760224dc44f34928d55c6c8e3e95e7dd8cb",
);
/// GOOD with a token of 1025 and 1024 `a`s (bodies built by `token_body`).
const LONG_TOKEN_SIG: &str = "c1c339f8b02048aac9437d76bf9c022496792e32da9b164b79e5010321005fd4";
const MAX_TOKEN_SIG: &str = "26a4eba4eba56fd9333cd8016c264e5cc7c82887488b826c5468789cc6a964f7";

const UNAUTHENTICATED: &str = r#"{"message":"Unauthenticated.","status":401}"#;

fn token_body(len: usize) -> String {
    format!(
        r#"{{"identityReference":"c-13344","email":"jane@example.com","mobileNumber":"61410001000","provider":{{"vendor":"sumsub","token":"{}"}}}}"#,
        "a".repeat(len)
    )
}

/// A valid body for another customer.
fn body_for(id: &str) -> String {
    GOOD.0.replace("c-13344", id)
}

/// Signs with `ring` (independent of the emulator's HMAC crates).
fn ring_sign(secret: &str, nonce: &str, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let message = format!("POST\n{PATH}\n{nonce}\n{body}");
    let tag = ring::hmac::sign(&key, message.as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn config() -> MockConfig {
    let mut config = MockConfig::new(KEY, Secret::new(SECRET));
    config.fixed_now_micros = Some(NOW);
    config.seed = Some(7);
    config
}

async fn start(config: MockConfig) -> MockServer {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    MockServer::start(listen, config)
        .await
        .expect("emulator starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
    headers: reqwest::header::HeaderMap,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// Sends a hand-made request to the share endpoint.
async fn post_raw(
    client: &reqwest::Client,
    server: &MockServer,
    authorization: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> reqwest::Result<Answer> {
    let mut request = client
        .post(format!("{}{PATH}", server.base_url()))
        .body(body.to_string());
    if let Some(auth) = authorization {
        request = request.header("Authorization", auth);
    }
    if let Some(ct) = content_type {
        request = request.header("Content-Type", ct);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await?;
    Ok(Answer {
        status,
        body,
        headers,
    })
}

/// A signed request with the given nonce and signature.
async fn post(server: &MockServer, body: &str, nonce: &str, signature: &str) -> Answer {
    let auth = format!("Bearer {KEY}:{signature}:{nonce}");
    post_raw(
        &client(),
        server,
        Some(&auth),
        Some("application/json"),
        body,
    )
    .await
    .expect("an answer")
}

/// A request signed with ring, nonce NOW + `n` microseconds.
async fn post_fresh(
    client: &reqwest::Client,
    server: &MockServer,
    body: &str,
    n: u64,
) -> reqwest::Result<Answer> {
    let nonce = (NOW + n).to_string();
    let auth = format!("Bearer {KEY}:{}:{nonce}", ring_sign(SECRET, &nonce, body));
    post_raw(client, server, Some(&auth), Some("application/json"), body).await
}

async fn get_stats(server: &MockServer) -> Stats {
    let text = client()
        .get(format!("{}/stats", server.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).expect("stats JSON")
}

fn auth_failures(stats: &Stats, reason: &str) -> u64 {
    stats.auth_failures[reason]
}

fn by_status(stats: &Stats, status: &str) -> u64 {
    stats.by_status.get(status).copied().unwrap_or(0)
}

// ---------------------------------------------------------------- accepted

#[tokio::test]
async fn good_request_is_accepted() {
    let server = start(config()).await;
    let answer = post(&server, GOOD.0, NONCE, GOOD.1).await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.body, r#"{"identityReference":"c-13344"}"#);
    assert_eq!(answer.headers["content-type"], "application/json");
    let stats = server.stats();
    assert_eq!(by_status(&stats, "202"), 1);
    assert_eq!(stats.share_requests, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn charset_parameter_is_accepted() {
    let server = start(config()).await;
    let auth = format!("Bearer {KEY}:{}:{NONCE}", GOOD.1);
    let answer = post_raw(
        &client(),
        &server,
        Some(&auth),
        Some("application/json; charset=utf-8"),
        GOOD.0,
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 202, "{}", answer.body);
    server.shutdown().await;
}

#[tokio::test]
async fn nonce_in_seconds_or_milliseconds_is_accepted() {
    let server = start(config()).await;
    for (nonce, sig) in [SECS_NONCE, MILLIS_NONCE] {
        let answer = post(&server, GOOD.0, nonce, sig).await;
        assert_eq!(answer.status, 202, "nonce {nonce}: {}", answer.body);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn token_of_exactly_1024_chars_is_accepted() {
    let server = start(config()).await;
    let answer = post(&server, &token_body(1024), NONCE, MAX_TOKEN_SIG).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    server.shutdown().await;
}

// ---------------------------------------------------------------- 401

async fn assert_unauthenticated(server: &MockServer, answer: Answer, reason: &str) {
    assert_eq!(answer.status, 401);
    assert_eq!(answer.body, UNAUTHENTICATED);
    let stats = get_stats(server).await;
    assert_eq!(auth_failures(&stats, reason), 1, "{stats:?}");
    assert_eq!(by_status(&stats, "401"), 1);
    assert_eq!(by_status(&stats, "202"), 0);
}

#[tokio::test]
async fn wrong_key_is_unauthenticated() {
    let server = start(config()).await;
    let auth = format!("Bearer other-key:{}:{NONCE}", GOOD.1);
    let answer = post_raw(
        &client(),
        &server,
        Some(&auth),
        Some("application/json"),
        GOOD.0,
    )
    .await
    .unwrap();
    assert_unauthenticated(&server, answer, "unknown_key").await;
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_secret_is_unauthenticated() {
    let server = start(config()).await;
    let answer = post(&server, GOOD.0, NONCE, WRONG_SECRET_SIG).await;
    assert_unauthenticated(&server, answer, "bad_signature").await;
    server.shutdown().await;
}

#[tokio::test]
async fn signature_over_other_bytes_is_unauthenticated() {
    let server = start(config()).await;
    // The same fields, one byte different: the signature covers raw bytes.
    let tampered = GOOD.0.replace("61410001000", "61410001001");
    let answer = post(&server, &tampered, NONCE, GOOD.1).await;
    assert_unauthenticated(&server, answer, "bad_signature").await;
    server.shutdown().await;
}

#[tokio::test]
async fn uppercase_signature_is_unauthenticated() {
    let server = start(config()).await;
    let answer = post(&server, GOOD.0, NONCE, &GOOD.1.to_uppercase()).await;
    assert_unauthenticated(&server, answer, "bad_signature").await;
    server.shutdown().await;
}

#[tokio::test]
async fn missing_header_is_unauthenticated() {
    let server = start(config()).await;
    let answer = post_raw(&client(), &server, None, Some("application/json"), GOOD.0)
        .await
        .unwrap();
    assert_unauthenticated(&server, answer, "missing_header").await;
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_header_is_unauthenticated() {
    let server = start(config()).await;
    let auth = format!("Bearer {KEY}:{}", GOOD.1);
    let answer = post_raw(
        &client(),
        &server,
        Some(&auth),
        Some("application/json"),
        GOOD.0,
    )
    .await
    .unwrap();
    assert_unauthenticated(&server, answer, "malformed_header").await;
    server.shutdown().await;
}

#[tokio::test]
async fn reused_nonce_is_unauthenticated() {
    let server = start(config()).await;
    assert_eq!(post(&server, GOOD.0, NONCE, GOOD.1).await.status, 202);
    let again = post(&server, GOOD.0, NONCE, GOOD.1).await;
    assert_eq!(again.status, 401);
    assert_eq!(again.body, UNAUTHENTICATED);
    let stats = server.stats();
    assert_eq!(auth_failures(&stats, "reused_nonce"), 1);
    assert_eq!(by_status(&stats, "202"), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn stale_nonce_is_unauthenticated() {
    // The server clock just over 5 minutes after the nonce, then before it.
    for now in [NOW + 5 * MINUTE + 1, NOW - 5 * MINUTE - 1] {
        let mut config = config();
        config.fixed_now_micros = Some(now);
        let server = start(config).await;
        let answer = post(&server, GOOD.0, NONCE, GOOD.1).await;
        assert_unauthenticated(&server, answer, "stale_nonce").await;
        server.shutdown().await;
    }
}

#[tokio::test]
async fn nonce_exactly_5_minutes_old_is_fresh() {
    let mut config = config();
    config.fixed_now_micros = Some(NOW + 5 * MINUTE);
    let server = start(config).await;
    assert_eq!(post(&server, GOOD.0, NONCE, GOOD.1).await.status, 202);
    server.shutdown().await;
}

#[tokio::test]
async fn non_digit_nonce_is_unauthenticated() {
    let server = start(config()).await;
    let answer = post(&server, GOOD.0, LETTERS_NONCE.0, LETTERS_NONCE.1).await;
    assert_unauthenticated(&server, answer, "bad_nonce").await;
    server.shutdown().await;
}

// ---------------------------------------------------------------- 400

/// SPEC lists "the body is compact JSON" among the checks whose failure
/// answers 401 (Banxa signs the compact form), even with a signature over
/// the pretty bytes.
#[tokio::test]
async fn pretty_printed_body_is_unauthenticated() {
    let server = start(config()).await;
    let answer = post(&server, PRETTY.0, NONCE, PRETTY.1).await;
    assert_unauthenticated(&server, answer, "not_compact").await;
    assert_eq!(by_status(&server.stats(), "400"), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_content_type_is_a_bad_request() {
    let server = start(config()).await;
    let auth = format!("Bearer {KEY}:{}:{NONCE}", GOOD.1);
    let answer = post_raw(&client(), &server, Some(&auth), Some("text/plain"), GOOD.0)
        .await
        .unwrap();
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body,
        r#"{"message":"The request must have the header Content-Type: application/json.","status":400,"traceId":"mock-00000001"}"#
    );
    server.shutdown().await;
}

#[tokio::test]
async fn missing_content_type_is_a_bad_request() {
    let server = start(config()).await;
    let auth = format!("Bearer {KEY}:{}:{NONCE}", GOOD.1);
    let answer = post_raw(&client(), &server, Some(&auth), None, GOOD.0)
        .await
        .unwrap();
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["traceId"], "mock-00000001");
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_json_is_a_bad_request() {
    let server = start(config()).await;
    let client = client();
    for (n, body) in [r#"{"identityReference":"c-1""#, "[1,2]"]
        .into_iter()
        .enumerate()
    {
        let answer = post_fresh(&client, &server, body, n as u64).await.unwrap();
        assert_eq!(answer.status, 400, "{body}");
        let json = answer.json();
        assert_eq!(json["status"], 400);
        assert!(json["traceId"].as_str().unwrap().starts_with("mock-"));
    }
    assert_eq!(by_status(&server.stats(), "400"), 2);
    server.shutdown().await;
}

// ---------------------------------------------------------------- 422

#[tokio::test]
async fn each_invalid_field_is_unprocessable() {
    let long_token = token_body(1025);
    let cases: Vec<(&str, &str, Value)> = vec![
        (
            BAD_ID.0,
            BAD_ID.1,
            json!({"identityReference": ["The identityReference field format is invalid."]}),
        ),
        (
            NO_ID.0,
            NO_ID.1,
            json!({"identityReference": ["The identityReference field is required."]}),
        ),
        (
            BAD_EMAIL.0,
            BAD_EMAIL.1,
            json!({"email": ["The email field must be a valid email address."]}),
        ),
        (
            NO_EMAIL.0,
            NO_EMAIL.1,
            json!({"email": ["The email field is required."]}),
        ),
        (
            BAD_MOBILE.0,
            BAD_MOBILE.1,
            json!({"mobileNumber": ["The mobileNumber field format is invalid."]}),
        ),
        (
            EMPTY_MOBILE.0,
            EMPTY_MOBILE.1,
            json!({"mobileNumber": ["The mobileNumber field is required."]}),
        ),
        (
            NUMERIC_MOBILE.0,
            NUMERIC_MOBILE.1,
            json!({"mobileNumber": ["The mobileNumber field must be a string."]}),
        ),
        (
            BAD_VENDOR.0,
            BAD_VENDOR.1,
            json!({"provider.vendor": ["The selected provider.vendor is invalid."]}),
        ),
        (
            NO_TOKEN.0,
            NO_TOKEN.1,
            json!({"provider.token": ["The provider.token field is required."]}),
        ),
        (
            &long_token,
            LONG_TOKEN_SIG,
            json!({"provider.token": ["The provider.token field must not be greater than 1024 characters."]}),
        ),
        (
            NO_PROVIDER.0,
            NO_PROVIDER.1,
            json!({
                "provider.vendor": ["The provider.vendor field is required."],
                "provider.token": ["The provider.token field is required."],
            }),
        ),
    ];
    for (body, sig, errors) in cases {
        // A server per case: every vector shares the one fixed nonce.
        let server = start(config()).await;
        let answer = post(&server, body, NONCE, sig).await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.body);
        assert_eq!(
            answer.json(),
            json!({"message": "The given data was invalid.", "errors": errors, "status": 422}),
            "{body}"
        );
        assert_eq!(by_status(&server.stats(), "422"), 1);
        server.shutdown().await;
    }
}

#[tokio::test]
async fn empty_object_lists_every_field_in_order() {
    let server = start(config()).await;
    let answer = post(&server, EMPTY_OBJECT.0, NONCE, EMPTY_OBJECT.1).await;
    assert_eq!(answer.status, 422);
    assert_eq!(
        answer.body,
        concat!(
            r#"{"message":"The given data was invalid.","errors":{"#,
            r#""identityReference":["The identityReference field is required."],"#,
            r#""email":["The email field is required."],"#,
            r#""mobileNumber":["The mobileNumber field is required."],"#,
            r#""provider.vendor":["The provider.vendor field is required."],"#,
            r#""provider.token":["The provider.token field is required."]},"#,
            r#""status":422}"#
        )
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------- routing

#[tokio::test]
async fn unknown_path_wrong_method_and_large_body() {
    let server = start(config()).await;
    let client = client();
    let base = server.base_url();

    let answer = client.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(answer.status(), 404);
    assert_eq!(
        answer.text().await.unwrap(),
        r#"{"message":"The route /nope could not be found.","status":404}"#
    );

    let answer = client.get(format!("{base}{PATH}")).send().await.unwrap();
    assert_eq!(answer.status(), 405);
    assert_eq!(answer.headers()["allow"], "POST");
    assert_eq!(
        serde_json::from_str::<Value>(&answer.text().await.unwrap()).unwrap()["status"],
        405
    );

    let huge = "x".repeat(65 * 1024);
    let answer = post_fresh(&client, &server, &huge, 1).await.unwrap();
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["status"], 413);

    let stats = server.stats();
    assert_eq!(by_status(&stats, "404"), 1);
    assert_eq!(by_status(&stats, "405"), 1);
    assert_eq!(by_status(&stats, "413"), 1);
    server.shutdown().await;
}

// ---------------------------------------------------------------- 429

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let mut config = config();
    config.rate_limit_per_min = Some(3);
    let server = start(config).await;
    let client = client();
    for n in 0..3 {
        let answer = post_fresh(&client, &server, GOOD.0, n).await.unwrap();
        assert_eq!(answer.status, 202, "request {n}");
    }
    let answer = post_fresh(&client, &server, GOOD.0, 3).await.unwrap();
    assert_eq!(answer.status, 429);
    assert_eq!(
        answer.body,
        r#"{"message":"Too Many Attempts.","status":429}"#
    );
    let retry_after: u64 = answer.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (59..=60).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    // Refused requests do not count, but still are refused.
    let answer = post_fresh(&client, &server, GOOD.0, 4).await.unwrap();
    assert_eq!(answer.status, 429);
    // The router answers before the limiter: an unknown path is a 404.
    let answer = client
        .get(format!("{}/nope", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    // /stats is exempt, and counts the refused share request.
    let stats = get_stats(&server).await;
    assert_eq!(by_status(&stats, "202"), 3);
    assert_eq!(by_status(&stats, "429"), 2);
    assert_eq!(stats.max_in_60s, 5);
    server.shutdown().await;
}

#[tokio::test]
async fn rate_limit_off_admits_everything() {
    let mut config = config();
    config.rate_limit_per_min = None;
    let server = start(config).await;
    let client = client();
    for n in 0..600 {
        let answer = post_fresh(&client, &server, GOOD.0, n).await.unwrap();
        assert_eq!(answer.status, 202);
    }
    server.shutdown().await;
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn fail_rate_1_answers_500_with_trace_id() {
    let mut config = config();
    config.fail_rate = 1.0;
    let server = start(config).await;
    let answer = post(&server, GOOD.0, NONCE, GOOD.1).await;
    assert_eq!(answer.status, 500);
    assert_eq!(
        answer.body,
        r#"{"message":"Server Error","status":500,"traceId":"mock-00000001"}"#
    );
    // Faults come after authentication and validation: a 401 stays a 401.
    let answer = post(&server, GOOD.0, NONCE, WRONG_SECRET_SIG).await;
    assert_eq!(answer.status, 401);
    server.shutdown().await;
}

#[tokio::test]
async fn reset_rate_1_drops_the_connection() {
    let mut config = config();
    config.reset_rate = 1.0;
    let server = start(config).await;
    let result = post_fresh(&client(), &server, GOOD.0, 0).await;
    let error = result.expect_err("no answer");
    assert!(!error.is_timeout(), "{error:?}");
    let stats = server.stats();
    assert_eq!(stats.resets, 1);
    assert!(stats.by_status.is_empty(), "{stats:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn hang_rate_1_never_answers_and_shutdown_is_clean() {
    let mut config = config();
    config.hang_rate = 1.0;
    let server = start(config).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let results =
        futures::future::join_all((0..3).map(|n| post_fresh(&client, &server, GOOD.0, n))).await;
    for result in results {
        assert!(result.expect_err("no answer").is_timeout());
    }
    let stats = server.stats();
    assert_eq!(stats.hangs, 3);
    assert_eq!(stats.peak_in_flight, 3);
    tokio::time::timeout(Duration::from_secs(2), server.shutdown())
        .await
        .expect("shutdown does not wait for hung requests");
}

#[tokio::test]
async fn shutdown_drops_a_held_hung_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = config();
    config.hang_rate = 1.0;
    let server = start(config).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let request = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}:{}:{NONCE}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        GOOD.1,
        GOOD.0.len(),
        GOOD.0
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Wait (on the condition itself, not a timer) until the server holds it.
    tokio::time::timeout(Duration::from_secs(10), async {
        while server.stats().hangs < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the request reaches the emulator");
    assert_eq!(server.stats().in_flight, 1);
    let mut byte = [0u8; 1];
    assert!(
        matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no answer while hanging"
    );
    tokio::time::timeout(Duration::from_secs(2), server.shutdown())
        .await
        .expect("shutdown aborts the hung request");
    let n = stream.read(&mut byte).await.unwrap_or(0);
    assert_eq!(n, 0, "connection closed without an answer");
}

#[tokio::test]
async fn latency_is_added_to_every_answer() {
    let mut config = config();
    config.latency = Duration::from_millis(300);
    let server = start(config).await;
    let started = Instant::now();
    let answer = post(&server, GOOD.0, NONCE, GOOD.1).await;
    assert_eq!(answer.status, 202);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let answer = post(&server, GOOD.0, NONCE, WRONG_SECRET_SIG).await;
    assert_eq!(answer.status, 401);
    assert!(started.elapsed() >= Duration::from_millis(300));
    server.shutdown().await;
}

#[tokio::test]
async fn fail_first_2_gives_500_500_202_per_id() {
    let mut config = config();
    config.fail_first = 2;
    let server = start(config).await;
    let client = client();
    let mut statuses = vec![];
    for n in 0..3 {
        statuses.push(
            post_fresh(&client, &server, GOOD.0, n)
                .await
                .unwrap()
                .status,
        );
    }
    assert_eq!(statuses, [500, 500, 202]);
    // Another customer starts its own count.
    let other = body_for("c-2");
    assert_eq!(
        post_fresh(&client, &server, &other, 3)
            .await
            .unwrap()
            .status,
        500
    );
    // An invalid request does not use up a failure.
    let answer = post_fresh(&client, &server, BAD_EMAIL.0, 10).await.unwrap();
    assert_eq!(answer.status, 422);
    assert_eq!(
        post_fresh(&client, &server, &other, 4)
            .await
            .unwrap()
            .status,
        500
    );
    assert_eq!(
        post_fresh(&client, &server, &other, 5)
            .await
            .unwrap()
            .status,
        202
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unauth_after_2_revokes_the_key() {
    let mut config = config();
    config.unauth_after = Some(2);
    let server = start(config).await;
    let client = client();
    let mut statuses = vec![];
    for n in 0..4 {
        let answer = post_fresh(&client, &server, GOOD.0, n).await.unwrap();
        if answer.status == 401 {
            assert_eq!(answer.body, UNAUTHENTICATED);
        }
        statuses.push(answer.status);
    }
    assert_eq!(statuses, [202, 202, 401, 401]);
    assert_eq!(auth_failures(&server.stats(), "revoked"), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn same_seed_same_faults() {
    async fn run(seed: u64) -> Vec<u16> {
        let mut config = config();
        config.fail_rate = 0.5;
        config.seed = Some(seed);
        config.rate_limit_per_min = None;
        let server = start(config).await;
        let client = client();
        let mut statuses = vec![];
        for n in 0..32 {
            statuses.push(
                post_fresh(&client, &server, GOOD.0, n)
                    .await
                    .unwrap()
                    .status,
            );
        }
        server.shutdown().await;
        statuses
    }
    let first = run(42).await;
    assert_eq!(first, run(42).await);
    assert_ne!(first, run(43).await);
    assert!(first.contains(&500) && first.contains(&202), "{first:?}");
}

// ---------------------------------------------------------------- record

#[tokio::test]
async fn record_holds_one_line_per_share_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests.jsonl");
    let mut config = config();
    config.fail_first = 1;
    config.rate_limit_per_min = Some(4);
    config.record = Some(path.clone());
    let server = start(config).await;
    let client = client();
    let before = std::time::SystemTime::now();
    let a = post_fresh(&client, &server, GOOD.0, 1).await.unwrap(); // 500 fail-first
    let b = post(&server, GOOD.0, NONCE, GOOD.1).await; // 202
    let c = post(&server, GOOD.0, NONCE, GOOD.1).await; // 401 reused
    let d = post_fresh(&client, &server, BAD_EMAIL.0, 2).await.unwrap(); // 422
    let e = post_fresh(&client, &server, GOOD.0, 3).await.unwrap(); // 429
    assert_eq!(
        [a.status, b.status, c.status, d.status, e.status],
        [500, 202, 401, 422, 429]
    );
    // Read right away: every line is flushed before its answer.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{text}");

    let before_micros = before
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"], i as u64 + 1);
        assert_eq!(line["identityReference"], "c-13344");
        let time = line["time"].as_str().unwrap();
        let parsed = humantime::parse_rfc3339(time).unwrap();
        let micros = parsed
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        assert_eq!(line["unixMicros"], micros, "{time}");
        assert!(micros >= before_micros);
        assert!(
            time.ends_with('Z') && time.len() == "2026-11-26T12:00:00.123456Z".len(),
            "{time}"
        );
    }
    assert_eq!(lines[0]["status"], 500);
    assert_eq!(lines[0]["fault"], "fail-first");
    assert_eq!(lines[0]["nonce"], (NOW + 1).to_string());
    assert!(lines[0].get("payload").is_none());
    assert_eq!(lines[1]["status"], 202);
    assert_eq!(lines[1]["nonce"], NONCE);
    assert_eq!(
        lines[1]["payload"],
        serde_json::from_str::<Value>(GOOD.0).unwrap()
    );
    assert_eq!(lines[2]["status"], 401);
    assert_eq!(lines[2]["reason"], "reused_nonce");
    assert!(lines[2].get("payload").is_none());
    assert_eq!(lines[3]["status"], 422);
    assert!(lines[3].get("payload").is_none());
    assert_eq!(lines[4]["status"], 429);
    assert_eq!(lines[4]["nonce"], (NOW + 3).to_string());
    server.shutdown().await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn record_marks_resets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests.jsonl");
    let mut config = config();
    config.reset_rate = 1.0;
    config.record = Some(path.clone());
    let server = start(config).await;
    assert!(post_fresh(&client(), &server, GOOD.0, 0).await.is_err());
    server.shutdown().await;
    let text = std::fs::read_to_string(&path).unwrap();
    let line: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(line["status"], 0);
    assert_eq!(line["fault"], "reset");
}

// ---------------------------------------------------------------- stats

#[tokio::test]
async fn stats_count_by_status_and_reason() {
    let server = start(config()).await;
    let client = client();
    assert_eq!(post(&server, GOOD.0, NONCE, GOOD.1).await.status, 202);
    assert_eq!(post(&server, GOOD.0, NONCE, GOOD.1).await.status, 401);
    assert_eq!(
        post(&server, GOOD.0, NONCE, WRONG_SECRET_SIG).await.status,
        401
    );
    assert_eq!(post(&server, PRETTY.0, NONCE, PRETTY.1).await.status, 401); // nonce used
    assert_eq!(
        post_fresh(&client, &server, BAD_ID.0, 1)
            .await
            .unwrap()
            .status,
        422
    );
    client
        .get(format!("{}/nope", server.base_url()))
        .send()
        .await
        .unwrap();

    let response = client
        .get(format!("{}/stats", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let raw: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    for key in [
        "total",
        "shareRequests",
        "byStatus",
        "authFailures",
        "maxIn60s",
        "maxIn1s",
        "peakInFlight",
        "inFlight",
        "resets",
        "hangs",
    ] {
        assert!(raw.get(key).is_some(), "{key} in {raw}");
    }
    let stats: Stats = serde_json::from_value(raw).unwrap();
    assert_eq!(stats, server.stats(), "/stats is not counted itself");
    assert_eq!(stats.total, 6);
    assert_eq!(stats.share_requests, 5);
    assert_eq!(by_status(&stats, "202"), 1);
    assert_eq!(by_status(&stats, "401"), 3);
    assert_eq!(by_status(&stats, "422"), 1);
    assert_eq!(by_status(&stats, "404"), 1);
    assert_eq!(auth_failures(&stats, "reused_nonce"), 2);
    assert_eq!(auth_failures(&stats, "bad_signature"), 1);
    assert_eq!(auth_failures(&stats, "stale_nonce"), 0);
    assert_eq!(stats.auth_failures.len(), 9, "every reason listed");
    assert_eq!(stats.max_in_60s, 5);
    assert!(stats.max_in_1s >= 1 && stats.max_in_1s <= 5);
    assert_eq!(stats.peak_in_flight, 1);
    assert_eq!(stats.in_flight, 0);
    server.shutdown().await;
}

// ---------------------------------------------------------------- binary

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Starts `kycshare mock`, returns the child and the URL it printed.
async fn spawn_binary(cmd: &mut tokio::process::Command) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = cmd
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
    let url = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    (child, url)
}

fn binary() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kycshare"));
    cmd.env_remove("BANXA_API_KEY")
        .env_remove("BANXA_API_SECRET");
    cmd
}

#[tokio::test]
async fn binary_prints_its_address_answers_and_stops_on_sigterm() {
    let mut cmd = binary();
    cmd.args(["mock", "--listen", "127.0.0.1:0"])
        .env("BANXA_API_KEY", KEY)
        .env("BANXA_API_SECRET", SECRET);
    let (child, url) = spawn_binary(&mut cmd).await;

    let nonce = now_micros().to_string();
    let auth = format!("Bearer {KEY}:{}:{nonce}", ring_sign(SECRET, &nonce, GOOD.0));
    let response = client()
        .post(format!("{url}{PATH}"))
        .header("Authorization", auth)
        .header("Content-Type", "application/json")
        .body(GOOD.0)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"identityReference":"c-13344"}"#
    );

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
    assert!(!stderr.contains(SECRET), "the secret is never printed");
}

#[tokio::test]
async fn binary_reads_the_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let mut cmd = binary();
    cmd.args([
        "mock",
        "--listen",
        "127.0.0.1:0",
        "--api-key",
        KEY,
        "--api-secret-file",
    ])
    .arg(&secret_file);
    let (mut child, url) = spawn_binary(&mut cmd).await;
    let nonce = now_micros().to_string();
    let auth = format!("Bearer {KEY}:{}:{nonce}", ring_sign(SECRET, &nonce, GOOD.0));
    let response = client()
        .post(format!("{url}{PATH}"))
        .header("Authorization", auth)
        .header("Content-Type", "application/json")
        .body(GOOD.0)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn binary_without_a_secret_is_a_configuration_error() {
    let output = binary()
        .args(["mock", "--listen", "127.0.0.1:0", "--api-key", KEY])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("BANXA_API_SECRET"), "{stderr}");
    assert!(output.stdout.is_empty());
}

// ------------------------------------------------- nonce lengths, codes

/// Banxa accepts nonces of 10, 13 or 16 digits and nothing else: every
/// length from 9 to 17, each correctly signed and fresh in its unit.
#[tokio::test]
async fn only_nonces_of_10_13_or_16_digits_are_accepted() {
    let mut config = config();
    config.error_codes = true;
    let server = start(config).await;
    let client = client();
    for digits in 9..=17u32 {
        // A fresh instant in the unit of this length where there is one
        // (seconds, milliseconds, microseconds), a distinct one each time.
        let nonce = match digits {
            10 => (NOW / 1_000_000 + 1).to_string(),
            13 => (NOW / 1_000 + 2_000).to_string(),
            16 => (NOW + 3_000_000).to_string(),
            n => {
                let s = NOW.to_string();
                if n as usize <= s.len() {
                    s[..n as usize].to_string()
                } else {
                    format!("{s}{}", "0".repeat(n as usize - s.len()))
                }
            }
        };
        assert_eq!(nonce.len(), digits as usize);
        let body = body_for(&format!("c-len{digits}"));
        let auth = format!("Bearer {KEY}:{}:{nonce}", ring_sign(SECRET, &nonce, &body));
        let answer = post_raw(
            &client,
            &server,
            Some(&auth),
            Some("application/json"),
            &body,
        )
        .await
        .unwrap();
        if matches!(digits, 10 | 13 | 16) {
            assert_eq!(answer.status, 202, "{digits} digits: {}", answer.body);
        } else {
            assert_eq!(answer.status, 401, "{digits} digits: {}", answer.body);
            assert_eq!(answer.json()["code"], 40001, "{digits} digits");
        }
    }
    let stats = server.stats();
    assert_eq!(by_status(&stats, "202"), 3);
    assert_eq!(auth_failures(&stats, "bad_nonce"), 6);
    server.shutdown().await;
}

/// `--error-codes`: each authentication failure answers Banxa's code and a
/// request_id; without it, the plain body of the contract.
#[tokio::test]
async fn error_codes_name_each_authentication_failure() {
    let mut cfg = config();
    cfg.error_codes = true;
    let server = start(cfg).await;
    let client = client();
    let cases: Vec<(Option<String>, &str, u64)> = vec![
        (None, GOOD.0, 40102),
        (Some("Basic abc".into()), GOOD.0, 40101),
        (
            Some(format!("Bearer other-key:{}:{NONCE}", GOOD.1)),
            GOOD.0,
            40100,
        ),
        (
            Some(format!("Bearer {KEY}:{WRONG_SECRET_SIG}:{NONCE}")),
            GOOD.0,
            40103,
        ),
        (
            Some(format!(
                "Bearer {KEY}:{}:{}",
                LETTERS_NONCE.1, LETTERS_NONCE.0
            )),
            GOOD.0,
            40001,
        ),
        (Some(format!("Bearer {KEY}:{}:{NONCE}", GOOD.1)), GOOD.0, 0),
        (
            Some(format!("Bearer {KEY}:{}:{NONCE}", GOOD.1)),
            GOOD.0,
            40003,
        ),
    ];
    for (auth, body, code) in cases {
        let answer = post_raw(
            &client,
            &server,
            auth.as_deref(),
            Some("application/json"),
            body,
        )
        .await
        .unwrap();
        if code == 0 {
            assert_eq!(answer.status, 202, "{}", answer.body);
            continue;
        }
        assert_eq!(answer.status, 401, "{auth:?}: {}", answer.body);
        let v = answer.json();
        assert_eq!(v["code"], code, "{auth:?}: {v}");
        assert_eq!(v["message"], "Unauthenticated.");
        assert!(
            v["request_id"].as_str().is_some_and(|r| !r.is_empty()),
            "{v}"
        );
    }
    server.shutdown().await;

    let mut cfg = config();
    cfg.fixed_now_micros = Some(NOW + 6 * MINUTE);
    cfg.error_codes = true;
    let server = start(cfg).await;
    let answer = post(&server, GOOD.0, NONCE, GOOD.1).await;
    assert_eq!(answer.json()["code"], 40002, "a stale nonce");
    server.shutdown().await;

    let mut cfg = config();
    cfg.error_codes = true;
    let server = start(cfg).await;
    let answer = post(&server, PRETTY.0, NONCE, PRETTY.1).await;
    assert_eq!(answer.json()["code"], 40103, "a body that is not compact");
    server.shutdown().await;

    let server = start(config()).await;
    let answer = post(&server, GOOD.0, NONCE, WRONG_SECRET_SIG).await;
    assert_eq!(
        answer.body, UNAUTHENTICATED,
        "no codes without --error-codes"
    );
    server.shutdown().await;
}

/// A `GET` of an identity, signed with ring over `GET\n{path}\n{nonce}`
/// (no body line); `sign_as_post` signs it as a POST with an empty body.
async fn get_identity(
    server: &MockServer,
    id: &str,
    n: u64,
    secret: &str,
    sign_as_post: bool,
) -> Answer {
    let path = format!("/eapi/v0/identities/{id}");
    let nonce = (NOW + n).to_string();
    let message = if sign_as_post {
        format!("POST\n{path}\n{nonce}\n")
    } else {
        format!("GET\n{path}\n{nonce}")
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let sig: String = ring::hmac::sign(&key, message.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let response = client()
        .get(format!("{}{path}", server.base_url()))
        .header("Authorization", format!("Bearer {KEY}:{sig}:{nonce}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    Answer {
        status,
        body,
        headers,
    }
}

#[tokio::test]
async fn get_identity_is_404_until_accepted_then_200_verified() {
    let server = start(config()).await;
    let a = get_identity(&server, "c-13344", 1, SECRET, false).await;
    assert_eq!(a.status, 404, "{}", a.body);
    let shared = post_fresh(&client(), &server, GOOD.0, 2).await.unwrap();
    assert_eq!(shared.status, 202, "{}", shared.body);
    let a = get_identity(&server, "c-13344", 3, SECRET, false).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let j = a.json();
    assert_eq!(j["identityReference"], "c-13344");
    assert_eq!(j["account"]["exists"], true);
    assert_eq!(j["kyc"]["status"], "VERIFIED");
}

#[tokio::test]
async fn get_identity_is_pending_during_the_kyc_delay() {
    let mut c = config();
    c.kyc_delay = Duration::from_secs(3600);
    let server = start(c).await;
    assert_eq!(
        post_fresh(&client(), &server, GOOD.0, 1)
            .await
            .unwrap()
            .status,
        202
    );
    let a = get_identity(&server, "c-13344", 2, SECRET, false).await;
    assert_eq!(a.json()["kyc"]["status"], "PENDING", "{}", a.body);
}

#[tokio::test]
async fn get_identity_checks_the_get_signature() {
    let server = start(config()).await;
    assert_eq!(
        get_identity(&server, "x-1", 1, "wrong", false).await.status,
        401
    );
    assert_eq!(
        get_identity(&server, "x-1", 2, SECRET, true).await.status,
        401,
        "a POST signature"
    );
    assert_eq!(
        get_identity(&server, "x-1", 3, SECRET, false).await.status,
        404
    );
}

#[tokio::test]
async fn a_maintenance_window_answers_503_then_recovers() {
    let mut c = config();
    c.outage_after = Some(Duration::ZERO);
    c.outage_for = Duration::from_millis(400);
    let server = start(c).await;
    let a = post_fresh(&client(), &server, GOOD.0, 1).await.unwrap();
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(
        get_identity(&server, "c-13344", 2, SECRET, false)
            .await
            .status,
        503
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = post_fresh(&client(), &server, GOOD.0, 3).await.unwrap();
    assert_eq!(a.status, 202, "{}", a.body);
}
