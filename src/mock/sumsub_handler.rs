//! Sumsub's share-token endpoint over HTTP: the method and size checks,
//! then the checks of [`sumsub`] in order, its own counters in `/stats` and
//! its own latency (`--sumsub-latency`). Not written to the record file.

use bytes::Bytes;
use hyper::header::{HeaderValue, ALLOW};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use rand::Rng;

use super::shared::{json, to_json, Body, Shared};
use super::sumsub::{self, SignedHeaders, SumsubAuthFailure};

/// The endpoint's answer, sent after `--sumsub-latency` (cut short by
/// shutdown).
pub(super) async fn handle(shared: &Shared, parts: &Parts, body: Option<&Bytes>) -> Response<Body> {
    let response = share_token(shared, parts, body);
    if !shared.config.sumsub_latency.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(shared.config.sumsub_latency) => {}
            _ = shared.shutting_down() => {}
        }
    }
    response
}

/// Sumsub's "get applicant data", `GET /resources/applicants/{id}/one`:
/// the same signature check (method GET, empty body), then 404 for an
/// applicant the emulator does not know, else 200 with its id. What
/// `kycshare check --mint` reads to test Sumsub's credentials.
pub(super) fn applicant(shared: &Shared, parts: Parts) -> Response<Body> {
    let error = |status: StatusCode, description: &str| {
        let correlation_id = shared.trace_id();
        json(
            status,
            to_json(&sumsub::ErrorBody {
                description,
                code: status.as_u16(),
                correlation_id: &correlation_id,
            }),
        )
    };
    let mut reason = None;
    let response = 'answer: {
        if parts.method != Method::GET {
            break 'answer error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        }
        let headers = SignedHeaders {
            app_token: parts.headers.get("x-app-token").map(HeaderValue::as_bytes),
            ts: parts
                .headers
                .get("x-app-access-ts")
                .map(HeaderValue::as_bytes),
            sig: parts
                .headers
                .get("x-app-access-sig")
                .map(HeaderValue::as_bytes),
        };
        let path_with_query = parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |p| p.as_str());
        let verified = match &shared.sumsub_verifier {
            None => Err(SumsubAuthFailure::NotConfigured),
            Some(verifier) => {
                verifier.verify(headers, "GET", path_with_query, b"", shared.now_micros())
            }
        };
        if let Err(failure) = verified {
            reason = Some(failure);
            break 'answer error(StatusCode::UNAUTHORIZED, failure.description());
        }
        let id = parts
            .uri
            .path()
            .trim_start_matches("/resources/applicants/")
            .trim_end_matches("/one");
        if !sumsub::applicant_exists(id) {
            break 'answer error(StatusCode::NOT_FOUND, "Applicant not found");
        }
        json(StatusCode::OK, serde_json::json!({ "id": id }).to_string())
    };
    let mut state = shared.lock();
    let counters = &mut state.counters;
    counters.total += 1;
    *counters
        .sumsub_by_status
        .entry(response.status().as_u16())
        .or_insert(0) += 1;
    if let Some(reason) = reason {
        counters.sumsub_auth_failures[reason.index()] += 1;
    }
    response
}

/// Sumsub's share-token endpoint (see [`sumsub`] for the checks). Counted
/// apart from Banxa's requests; never rate limited.
fn share_token(shared: &Shared, parts: &Parts, body: Option<&Bytes>) -> Response<Body> {
    let mut reason = None;
    let mut minted = false;
    let (status, response) = 'answer: {
        let error = |status: StatusCode, description: &str| {
            let correlation_id = shared.trace_id();
            let body = to_json(&sumsub::ErrorBody {
                description,
                code: status.as_u16(),
                correlation_id: &correlation_id,
            });
            (status, json(status, body))
        };
        if parts.method != Method::POST {
            let description = format!(
                "The {} method is not supported for {}; use POST",
                parts.method,
                sumsub::SHARE_TOKEN_PATH
            );
            let (status, mut response) = error(StatusCode::METHOD_NOT_ALLOWED, &description);
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            break 'answer (status, response);
        }
        let Some(body) = body else {
            let description = format!(
                "The request body is larger than {} bytes",
                shared.config.body_limit
            );
            break 'answer error(StatusCode::PAYLOAD_TOO_LARGE, &description);
        };
        let headers = SignedHeaders {
            app_token: parts.headers.get("x-app-token").map(HeaderValue::as_bytes),
            ts: parts
                .headers
                .get("x-app-access-ts")
                .map(HeaderValue::as_bytes),
            sig: parts
                .headers
                .get("x-app-access-sig")
                .map(HeaderValue::as_bytes),
        };
        let path_with_query = parts
            .uri
            .path_and_query()
            .map_or(sumsub::SHARE_TOKEN_PATH, |p| p.as_str());
        let verified = match &shared.sumsub_verifier {
            None => Err(SumsubAuthFailure::NotConfigured),
            Some(verifier) => verifier.verify(
                headers,
                parts.method.as_str(),
                path_with_query,
                body,
                shared.now_micros(),
            ),
        };
        if let Err(failure) = verified {
            reason = Some(failure);
            break 'answer error(StatusCode::UNAUTHORIZED, failure.description());
        }
        let request = match sumsub::parse_request(body) {
            Ok(request) => request,
            Err(description) => break 'answer error(StatusCode::BAD_REQUEST, &description),
        };
        if !sumsub::applicant_exists(&request.applicant_id) {
            break 'answer error(StatusCode::NOT_FOUND, "Applicant not found");
        }
        if shared.config.sumsub_forbidden_client.as_deref() == Some(&request.for_client_id) {
            break 'answer error(
                StatusCode::FORBIDDEN,
                "Sharing applicant data with this client is not allowed",
            );
        }
        let fail_rate = shared.config.sumsub_fail_rate;
        if fail_rate > 0.0 && shared.lock().sumsub_rng.random::<f64>() < fail_rate {
            break 'answer error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
        }
        let token = sumsub::new_token();
        let answer = serde_json::json!({
            "token": token,
            "forClientId": request.for_client_id,
        })
        .to_string();
        let now = shared.now_micros();
        shared.lock().tokens.insert(token, request.ttl_secs, now);
        minted = true;
        (StatusCode::OK, json(StatusCode::OK, answer))
    };
    let mut state = shared.lock();
    let counters = &mut state.counters;
    counters.total += 1;
    *counters
        .sumsub_by_status
        .entry(status.as_u16())
        .or_insert(0) += 1;
    if minted {
        counters.tokens_minted += 1;
    }
    if let Some(reason) = reason {
        counters.sumsub_auth_failures[reason.index()] += 1;
    }
    response
}
