//! The emulator's `GET /eapi/v0/identities/{identityReference}`,
//! `--kyc-delay`, `--kyc-reject-rate` and the maintenance window, over real
//! loopback HTTP.
//!
//! Requests are signed with `ring`, an HMAC independent of the `hmac`/`sha2`
//! crates the emulator uses. The server clock is fixed (`fixed_now_micros`)
//! and moved with `set_now_micros`, so the KYC delay passes without sleeping.

use std::net::SocketAddr;
use std::time::Duration;

use kycshare::mock::{MockConfig, MockServer, Stats};
use kycshare::secret::Secret;
use serde_json::Value;

const KEY: &str = "test-key";
const SECRET: &str = "s3cr3t-test";
const SHARE: &str = "/eapi/v0/identities/token/share";
/// 2025-11-26T14:00:00Z in microseconds.
const NOW: u64 = 1_764_165_600_000_000;
const BODY: &str = r#"{"identityReference":"c-13344","email":"jane@example.com","mobileNumber":"61410001000","provider":{"vendor":"sumsub","token":"_act-sbx-jwt-eyJhbGciOiJub25lIn0"}}"#;

fn hmac_hex(secret: &str, message: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, message.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    Answer { status, body }
}

/// A share of `body`, signed, with nonce `nonce` (unix micros).
async fn share(server: &MockServer, body: &str, nonce: u64) -> Answer {
    let nonce = nonce.to_string();
    let sig = hmac_hex(SECRET, &format!("POST\n{SHARE}\n{nonce}\n{body}"));
    answer(
        client()
            .post(format!("{}{SHARE}", server.base_url()))
            .header("Authorization", format!("Bearer {KEY}:{sig}:{nonce}"))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// How a GET is signed.
#[derive(Clone, Copy, PartialEq)]
enum Sign {
    /// `GET\n{path_with_query}\n{nonce}`, the documented form.
    Get,
    /// The documented form with another secret.
    WrongSecret,
    /// As a POST with an empty body: `GET\n{path}\n{nonce}\n`.
    PostStyle,
}

/// `GET {path_with_query}` with nonce `nonce` (unix micros).
async fn get(server: &MockServer, path_with_query: &str, nonce: u64, sign: Sign) -> Answer {
    let nonce = nonce.to_string();
    let sig = match sign {
        Sign::Get => hmac_hex(SECRET, &format!("GET\n{path_with_query}\n{nonce}")),
        Sign::WrongSecret => hmac_hex("other-secret", &format!("GET\n{path_with_query}\n{nonce}")),
        Sign::PostStyle => hmac_hex(SECRET, &format!("GET\n{path_with_query}\n{nonce}\n")),
    };
    answer(
        client()
            .get(format!("{}{path_with_query}", server.base_url()))
            .header("Authorization", format!("Bearer {KEY}:{sig}:{nonce}"))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn get_id(server: &MockServer, id: &str, nonce: u64) -> Answer {
    get(
        server,
        &format!("/eapi/v0/identities/{id}"),
        nonce,
        Sign::Get,
    )
    .await
}

fn by_status(stats: &Stats, status: &str) -> u64 {
    stats.by_status.get(status).copied().unwrap_or(0)
}

#[tokio::test]
async fn an_identity_never_accepted_is_404() {
    let server = start(config()).await;
    let a = get_id(&server, "c-unknown", NOW + 1).await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(a.body, r#"{"message":"Identity not found.","status":404}"#);
    // A share that is refused (422) does not make the identity known.
    let bad = BODY.replace("jane@example.com", "jane.example.com");
    assert_eq!(share(&server, &bad, NOW + 2).await.status, 422);
    assert_eq!(get_id(&server, "c-13344", NOW + 3).await.status, 404);
    let stats = server.stats();
    assert_eq!(stats.identity_requests, 2);
    assert_eq!(stats.share_requests, 1);
    assert_eq!(stats.total, 3);
    assert_eq!(by_status(&stats, "404"), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn pending_during_the_kyc_delay_then_verified() {
    let mut c = config();
    c.kyc_delay = Duration::from_secs(10);
    let server = start(c).await;
    assert_eq!(share(&server, BODY, NOW + 1).await.status, 202);

    let a = get_id(&server, "c-13344", NOW + 2).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let j = a.json();
    assert_eq!(j["identityReference"], "c-13344");
    assert_eq!(j["account"]["exists"], true);
    assert_eq!(j["account"]["blocked"], false);
    assert_eq!(j["account"]["createdAt"], "2025-11-26T14:00:00Z");
    assert_eq!(j["kyc"]["status"], "PENDING");

    // 9.9 s later: still pending.
    let t = NOW + 9_900_000;
    server.set_now_micros(t);
    assert_eq!(
        get_id(&server, "c-13344", t).await.json()["kyc"]["status"],
        "PENDING"
    );
    // 10 s after the accept: verified.
    let t = NOW + 10_000_000;
    server.set_now_micros(t);
    let a = get_id(&server, "c-13344", t + 1).await;
    assert_eq!(a.json()["kyc"]["status"], "VERIFIED", "{}", a.body);

    // A new accepted share starts the delay again; createdAt stays the first.
    assert_eq!(share(&server, BODY, t + 2).await.status, 202);
    let j = get_id(&server, "c-13344", t + 3).await.json();
    assert_eq!(j["kyc"]["status"], "PENDING");
    assert_eq!(j["account"]["createdAt"], "2025-11-26T14:00:00Z");
    server.shutdown().await;
}

#[tokio::test]
async fn the_get_signature_is_checked() {
    let mut c = config();
    c.error_codes = true;
    let server = start(c).await;
    assert_eq!(share(&server, BODY, NOW + 1).await.status, 202);
    let path = "/eapi/v0/identities/c-13344";

    let a = get(&server, path, NOW + 2, Sign::WrongSecret).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(a.json()["code"], 40103);

    let a = get(&server, path, NOW + 3, Sign::PostStyle).await;
    assert_eq!(
        a.status, 401,
        "a POST-style signature (body line): {}",
        a.body
    );
    assert_eq!(a.json()["code"], 40103);

    // The query is part of what is signed.
    let with_query = format!("{path}?include=kyc");
    assert_eq!(
        get(&server, &with_query, NOW + 4, Sign::Get).await.status,
        200
    );
    let nonce = (NOW + 5).to_string();
    let sig = hmac_hex(SECRET, &format!("GET\n{path}\n{nonce}"));
    let a = answer(
        client()
            .get(format!("{}{with_query}", server.base_url()))
            .header("Authorization", format!("Bearer {KEY}:{sig}:{nonce}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 401, "signed without the query: {}", a.body);

    // Nonces: shared with the share endpoint, used once.
    let a = get(&server, path, NOW + 4, Sign::Get).await;
    assert_eq!(a.json()["code"], 40003, "{}", a.body);
    let a = get(&server, path, NOW + 1, Sign::Get).await;
    assert_eq!(a.json()["code"], 40003, "the share's nonce: {}", a.body);

    let stats = server.stats();
    assert_eq!(stats.auth_failures["bad_signature"], 3);
    assert_eq!(stats.auth_failures["reused_nonce"], 2);
    assert_eq!(by_status(&stats, "401"), 5);
    server.shutdown().await;
}

#[tokio::test]
async fn a_reject_rate_of_one_rejects_every_identity() {
    let mut c = config();
    c.kyc_reject_rate = 1.0;
    let server = start(c).await;
    assert_eq!(share(&server, BODY, NOW + 1).await.status, 202);
    let a = get_id(&server, "c-13344", NOW + 2).await;
    assert_eq!(a.json()["kyc"]["status"], "REJECTED", "{}", a.body);
    server.shutdown().await;

    // Rejection comes after the delay, like verification.
    let mut c = config();
    c.kyc_reject_rate = 1.0;
    c.kyc_delay = Duration::from_secs(5);
    let server = start(c).await;
    assert_eq!(share(&server, BODY, NOW + 1).await.status, 202);
    assert_eq!(
        get_id(&server, "c-13344", NOW + 2).await.json()["kyc"]["status"],
        "PENDING"
    );
    server.set_now_micros(NOW + 5_000_000);
    assert_eq!(
        get_id(&server, "c-13344", NOW + 5_000_001).await.json()["kyc"]["status"],
        "REJECTED"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_reject_rate_is_seeded() {
    async fn statuses(seed: u64) -> Vec<String> {
        let mut c = config();
        c.kyc_reject_rate = 0.5;
        c.seed = Some(seed);
        let server = start(c).await;
        let mut out = Vec::new();
        for i in 0..20u64 {
            let id = format!("c-{i}");
            let body = BODY.replace("c-13344", &id);
            assert_eq!(share(&server, &body, NOW + 2 * i).await.status, 202);
            let a = get_id(&server, &id, NOW + 2 * i + 1).await;
            out.push(a.json()["kyc"]["status"].as_str().unwrap().to_string());
        }
        server.shutdown().await;
        out
    }
    let first = statuses(3).await;
    assert_eq!(first, statuses(3).await, "same seed, same verdicts");
    assert!(first.iter().any(|s| s == "REJECTED"), "{first:?}");
    assert!(first.iter().any(|s| s == "VERIFIED"), "{first:?}");
}

#[tokio::test]
async fn other_methods_are_405() {
    let server = start(config()).await;
    let a = answer(
        client()
            .post(format!("{}/eapi/v0/identities/c-13344", server.base_url()))
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 405, "{}", a.body);
    assert_eq!(server.stats().identity_requests, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn identity_gets_share_the_rate_limit() {
    let mut c = config();
    c.rate_limit_per_min = Some(2);
    let server = start(c).await;
    assert_eq!(share(&server, BODY, NOW + 1).await.status, 202);
    assert_eq!(get_id(&server, "c-13344", NOW + 2).await.status, 200);
    assert_eq!(get_id(&server, "c-13344", NOW + 3).await.status, 429);
    let body = BODY.replace("c-13344", "c-2");
    assert_eq!(share(&server, &body, NOW + 4).await.status, 429);
    let stats = server.stats();
    assert_eq!(by_status(&stats, "429"), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn identity_requests_are_recorded_with_their_route() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.jsonl");
    let mut c = config();
    c.record = Some(rec.clone());
    let server = start(c).await;
    assert_eq!(get_id(&server, "c-13344", NOW + 1).await.status, 404);
    assert_eq!(share(&server, BODY, NOW + 2).await.status, 202);
    assert_eq!(
        get(
            &server,
            "/eapi/v0/identities/c-13344",
            NOW + 3,
            Sign::WrongSecret
        )
        .await
        .status,
        401
    );
    assert_eq!(get_id(&server, "c-13344", NOW + 4).await.status, 200);
    server.shutdown().await;

    let lines: Vec<Value> = std::fs::read_to_string(&rec)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let summary: Vec<(Value, Value, Value, Value)> = lines
        .iter()
        .map(|l| {
            (
                l["seq"].clone(),
                l["route"].clone(),
                l["status"].clone(),
                l["identityReference"].clone(),
            )
        })
        .collect();
    use serde_json::json;
    assert_eq!(
        summary,
        vec![
            (json!(1), json!("identity"), json!(404), json!("c-13344")),
            (json!(1), Value::Null, json!(202), json!("c-13344")),
            (json!(2), json!("identity"), json!(401), json!("c-13344")),
            (json!(3), json!("identity"), json!(200), json!("c-13344")),
        ]
    );
    assert_eq!(lines[0]["method"], "GET");
    assert!(
        lines[1].get("method").is_none(),
        "share lines are unchanged"
    );
    assert_eq!(lines[2]["reason"], "bad_signature");
    assert_eq!(lines[3]["nonce"], (NOW + 4).to_string());
    assert!(lines[3].get("payload").is_none());
}

#[tokio::test]
async fn the_maintenance_window_answers_503_inside_and_202_after() {
    let mut c = config();
    c.outage_after = Some(Duration::from_millis(1000));
    c.outage_for = Duration::from_millis(1500);
    c.sumsub_app_token = Some("app".into());
    c.sumsub_secret = Some(Secret::new("sumsub-secret"));
    let server = start(c).await;
    // Before the window.
    assert_eq!(share(&server, BODY, NOW + 1).await.status, 202);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Inside: every Banxa request, before auth.
    let a = share(&server, BODY, NOW + 2).await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.body, r#"{"message":"Service Unavailable","status":503}"#);
    let a = get_id(&server, "c-13344", NOW + 3).await;
    assert_eq!(a.status, 503, "{}", a.body);
    let unsigned = answer(
        client()
            .get(format!("{}/eapi/v0/identities/c-13344", server.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(unsigned.status, 503, "before auth: {}", unsigned.body);
    // Not /stats, not Sumsub's endpoint (401 here: unsigned).
    let stats = answer(
        client()
            .get(format!("{}/stats", server.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stats.status, 200);
    let sumsub = answer(
        client()
            .post(format!(
                "{}/resources/accessTokens/shareToken",
                server.base_url()
            ))
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_ne!(sumsub.status, 503, "{}", sumsub.body);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    // After: the nonces refused in the window were not used up.
    let a = share(&server, BODY, NOW + 2).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(get_id(&server, "c-13344", NOW + 3).await.status, 200);

    let s = server.stats();
    assert_eq!(by_status(&s, "503"), 3);
    assert_eq!(by_status(&s, "202"), 2);
    assert_eq!(s.auth_failures.values().sum::<u64>(), 0);
    server.shutdown().await;
}
