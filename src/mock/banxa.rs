//! Banxa's API, as the emulator answers it: [`handle`] takes each request
//! through the checks of the module doc of [`crate::mock`] in order, one
//! function per stage (routing, body size, rate limit, authentication,
//! request format, fields, tokens, faults, accepted); the first stage that
//! answers ([`ControlFlow::Break`]) decides. Then the answer is counted,
//! recorded and sent after `--latency`.

use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use rand::Rng;
use serde::Serialize;
use serde_json::{Map, Value};

use super::auth::{self, AuthFailure};
use super::faults::Fault;
use super::shared::{json, to_json, Body, Dropped, InFlight, Shared, State};
use super::sumsub::{self, TokenRejection};
use super::validate::{self, FieldErrors};
use super::{record, sumsub_handler, Route, SHARE_PATH, STATS_PATH};

const UNAUTHENTICATED: &str = r#"{"message":"Unauthenticated.","status":401}"#;

/// What to do with a request, and what to count and record about it.
struct Decision {
    action: Action,
    reason: Option<AuthFailure>,
    fault: Option<Fault>,
    /// The identityReference, when the body was valid.
    id: Option<String>,
    payload: Option<Value>,
    /// `--check-tokens` refused the token (422).
    token_rejection: Option<TokenRejection>,
}

enum Action {
    Answer(Response<Body>),
    Reset,
    Hang,
}

impl Decision {
    fn answer(response: Response<Body>) -> Decision {
        Decision {
            action: Action::Answer(response),
            reason: None,
            fault: None,
            id: None,
            payload: None,
            token_rejection: None,
        }
    }

    fn status(&self) -> u16 {
        match &self.action {
            Action::Answer(r) => r.status().as_u16(),
            Action::Reset | Action::Hang => 0,
        }
    }
}

/// One request, from routing to the answer (see the module doc).
pub(super) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<Body>, Dropped> {
    let route = Route::of(req.uri().path());
    if route == Route::Stats {
        return Ok(stats(shared, req.method()));
    }
    let _in_flight = InFlight::enter(shared);
    let arrived = SystemTime::now();

    let (parts, body) = req.into_parts();
    let body = read_body(shared, body).await?;
    if route == Route::SumsubApplicant {
        return Ok(sumsub_handler::applicant(shared, parts));
    }
    if route == Route::SumsubShareToken {
        return Ok(sumsub_handler::handle(shared, &parts, body.as_ref()).await);
    }
    let (seq, admitted) = arrive(shared, route, &parts, body.is_some());
    let (Continue(decision) | Break(decision)) = if route == Route::Identity {
        identity(shared, &parts, admitted)
    } else {
        checks(shared, route, &parts, body.as_ref(), admitted)
    };
    count(shared, &decision);
    write_record(
        shared,
        route,
        seq,
        arrived,
        &parts,
        body.as_ref(),
        &decision,
    );
    respond(shared, decision.action).await
}

/// `GET /stats` is answered at once: never rate limited, no latency, not
/// counted.
fn stats(shared: &Shared, method: &Method) -> Response<Body> {
    match *method {
        Method::GET => {
            let body = serde_json::to_string(&shared.stats()).unwrap_or_default();
            json(StatusCode::OK, body)
        }
        _ => method_not_allowed(method, STATS_PATH, "GET"),
    }
}

/// The body, up to [`MockConfig::body_limit`](super::MockConfig::body_limit)
/// (`None` above it).
async fn read_body(shared: &Shared, body: Incoming) -> Result<Option<Bytes>, Dropped> {
    match Limited::new(body, shared.config.body_limit).collect().await {
        Ok(collected) => Ok(Some(collected.to_bytes())),
        Err(e) if e.is::<LengthLimitError>() => Ok(None),
        // The client went away mid-body: nobody to answer.
        Err(_) => Err(Dropped),
    }
}

/// Counts the arrival and applies the rate limit, under one lock: the
/// request's sequence number on its route (share or identity; `None` for
/// any other), and the limiter's verdict (`Err(retry_after)` when it
/// refuses).
fn arrive(
    shared: &Shared,
    route: Route,
    parts: &Parts,
    within_limit: bool,
) -> (Option<u64>, Result<(), u64>) {
    // Only a routed request of the right method and size meets the limiter
    // (as in Laravel, 404/405 are decided by the router, before throttling).
    let limited = (route == Route::Share && parts.method == Method::POST && within_limit)
        || (route == Route::Identity && parts.method == Method::GET);

    let mut state = shared.lock();
    let now = shared.started.elapsed().as_micros() as u64;
    let state = &mut *state;
    state.counters.total += 1;
    let seq = if route == Route::Share {
        state.counters.share_requests += 1;
        state.counters.in_60s.record(now);
        state.counters.in_1s.record(now);
        Some(state.counters.share_requests)
    } else if route == Route::Identity {
        state.counters.identity_requests += 1;
        Some(state.counters.identity_requests)
    } else {
        None
    };
    let admitted = match &mut state.limiter {
        Some(limiter) if limited => limiter.admit(now),
        _ => Ok(()),
    };
    (seq, admitted)
}

/// The checks, in order: the first that answers breaks with its decision.
fn checks(
    shared: &Shared,
    route: Route,
    parts: &Parts,
    body: Option<&Bytes>,
    admitted: Result<(), u64>,
) -> ControlFlow<Decision, Decision> {
    routed(route, parts)?;
    in_service(shared)?;
    let body = sized(shared, body)?;
    rate_limited(admitted)?;
    authenticated(shared, parts, body)?;
    let object = well_formed(shared, parts, body)?;
    let id = valid_fields(&object)?;
    let token = object
        .get("provider")
        .and_then(|p| p.get("token"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let fault = {
        let mut state = shared.lock();
        let state = &mut *state;
        token_checked(shared, state, token, &id)?;
        // Decided and used up under the same lock as the check, so two
        // concurrent requests cannot both spend one token.
        faulted(shared, state, token, &id)
    };
    Continue(accepted(shared, object, id, fault))
}

/// Stage 1, routing: an unknown path is 404, a wrong method 405.
fn routed(route: Route, parts: &Parts) -> ControlFlow<Decision> {
    match route {
        Route::NotFound => Break(Decision::answer(json(
            StatusCode::NOT_FOUND,
            to_json(&Message {
                message: &format!("The route {} could not be found.", parts.uri.path()),
                errors: None,
                status: 404,
                trace_id: None,
            }),
        ))),
        Route::Share if parts.method != Method::POST => Break(Decision::answer(
            method_not_allowed(&parts.method, SHARE_PATH, "POST"),
        )),
        Route::Share => Continue(()),
        Route::Stats | Route::SumsubShareToken | Route::SumsubApplicant | Route::Identity => {
            unreachable!("answered above")
        }
    }
}

/// Stage 1b, maintenance: inside `--outage-after/--outage-for`, 503.
fn in_service(shared: &Shared) -> ControlFlow<Decision> {
    let Some(after) = shared.config.outage_after else {
        return Continue(());
    };
    let t = shared.started.elapsed();
    if t >= after && t < after + shared.config.outage_for {
        return Break(Decision::answer(json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"message":"Service Unavailable","status":503}"#.to_string(),
        )));
    }
    Continue(())
}

/// `GET /eapi/v0/identities/{identityReference}`: the maintenance window,
/// the rate limit, Banxa's GET signature (no body line), then 404 for an
/// identity never accepted, else 200 with its account and KYC status
/// (`PENDING` until `kyc_delay` after the last accepted share, then
/// `REJECTED` for a `kyc_reject_rate` share of identities, else `VERIFIED`).
fn identity(
    shared: &Shared,
    parts: &Parts,
    admitted: Result<(), u64>,
) -> ControlFlow<Decision, Decision> {
    if parts.method != Method::GET {
        return Break(Decision::answer(method_not_allowed(
            &parts.method,
            parts.uri.path(),
            "GET",
        )));
    }
    in_service(shared)?;
    rate_limited(admitted)?;
    let path_with_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or(parts.uri.path());
    let header = parts.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let creds = auth::parse_header(header);
    if let Err(reason) = authenticate_get(shared, creds, path_with_query) {
        let body = if shared.config.error_codes {
            serde_json::json!({
                "message": "Unauthenticated.",
                "status": 401,
                "code": reason.code(),
                "request_id": shared.trace_id(),
            })
            .to_string()
        } else {
            UNAUTHENTICATED.to_string()
        };
        let mut decision = Decision::answer(json(StatusCode::UNAUTHORIZED, body));
        decision.reason = Some(reason);
        return Break(decision);
    }
    let id = identity_of(parts).to_string();
    let known = shared.lock().identities.get(&id).copied();
    let Some((first, last)) = known else {
        let mut decision = Decision::answer(json(
            StatusCode::NOT_FOUND,
            r#"{"message":"Identity not found.","status":404}"#.to_string(),
        ));
        decision.id = Some(id);
        return Break(decision);
    };
    let now = shared.now_micros();
    let status = if now.saturating_sub(last) < shared.config.kyc_delay.as_micros() as u64 {
        "PENDING"
    } else if super::faults::kyc_rejected(shared.seed, &id, shared.config.kyc_reject_rate) {
        "REJECTED"
    } else {
        "VERIFIED"
    };
    let created = humantime::format_rfc3339_seconds(
        SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(first),
    )
    .to_string();
    let body = serde_json::json!({
        "identityReference": id,
        "account": {"exists": true, "blocked": false, "createdAt": created},
        "kyc": {"status": status},
    })
    .to_string();
    let mut decision = Decision::answer(json(StatusCode::OK, body));
    decision.id = Some(id);
    Continue(decision)
}

/// The `{identityReference}` of an identity route's path.
fn identity_of(parts: &Parts) -> &str {
    &parts.uri.path()[super::IDENTITY_PREFIX.len()..]
}

fn authenticate_get(
    shared: &Shared,
    creds: Result<auth::Credentials<'_>, AuthFailure>,
    path_with_query: &str,
) -> Result<(), AuthFailure> {
    let n = shared.authenticating.fetch_add(1, Ordering::Relaxed) + 1;
    if shared.config.unauth_after.is_some_and(|limit| n > limit) {
        return Err(AuthFailure::Revoked);
    }
    let creds = creds?;
    let nonce = shared.verifier.verify_get(&creds, path_with_query)?;
    let now = shared.now_micros();
    shared.lock().nonces.admit(nonce, now)
}

/// Stage 2, body size: 413 above the limit, and the connection is closed.
fn sized<'b>(shared: &Shared, body: Option<&'b Bytes>) -> ControlFlow<Decision, &'b Bytes> {
    let Some(body) = body else {
        let mut response = json(
            StatusCode::PAYLOAD_TOO_LARGE,
            to_json(&Message {
                message: &format!(
                    "The request body is larger than {} bytes.",
                    shared.config.body_limit
                ),
                errors: None,
                status: 413,
                trace_id: None,
            }),
        );
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return Break(Decision::answer(response));
    };
    Continue(body)
}

/// Stage 3, rate limit: 429 with `Retry-After` (the limiter ran in [`arrive`]).
fn rate_limited(admitted: Result<(), u64>) -> ControlFlow<Decision> {
    if let Err(retry_after) = admitted {
        let mut response = json(
            StatusCode::TOO_MANY_REQUESTS,
            to_json(&Message {
                message: "Too Many Attempts.",
                errors: None,
                status: 429,
                trace_id: None,
            }),
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after));
        return Break(Decision::answer(response));
    }
    Continue(())
}

/// Stage 4, authentication: 401, the reason counted (see [`auth`]), including
/// `--unauth-after` (reason `revoked`).
fn authenticated(shared: &Shared, parts: &Parts, body: &Bytes) -> ControlFlow<Decision> {
    let header = parts.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let creds = auth::parse_header(header);
    // A body that is not compact JSON cannot match a signature over the
    // compact form: the contract answers it 401 like any other auth failure.
    let checked = authenticate(shared, creds, parts.method.as_str(), body).and_then(|()| {
        if validate::is_compact(body) {
            Ok(())
        } else {
            Err(AuthFailure::NotCompact)
        }
    });
    if let Err(reason) = checked {
        let body = if shared.config.error_codes {
            // Banxa's documented codes, and a request_id as Banxa asks
            // integrators to log.
            serde_json::json!({
                "message": "Unauthenticated.",
                "status": 401,
                "code": reason.code(),
                "request_id": shared.trace_id(),
            })
            .to_string()
        } else {
            UNAUTHENTICATED.to_string()
        };
        let mut decision = Decision::answer(json(StatusCode::UNAUTHORIZED, body));
        decision.reason = Some(reason);
        return Break(decision);
    }
    Continue(())
}

/// Stage 5, request format: 400 with a traceId (see [`validate`]).
fn well_formed(
    shared: &Shared,
    parts: &Parts,
    body: &Bytes,
) -> ControlFlow<Decision, Map<String, Value>> {
    let content_type = parts.headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes);
    let parsed =
        validate::check_content_type(content_type).and_then(|()| validate::parse_body(body));
    match parsed {
        Ok(object) => Continue(object),
        Err(e) => Break(Decision::answer(json(
            StatusCode::BAD_REQUEST,
            to_json(&Message {
                message: &e.message(),
                errors: None,
                status: 400,
                trace_id: Some(shared.trace_id()),
            }),
        ))),
    }
}

/// Stage 6, fields: 422 with Laravel-style `errors`; the identityReference.
fn valid_fields(object: &Map<String, Value>) -> ControlFlow<Decision, String> {
    match validate::validate(object) {
        Ok(id) => Continue(id),
        Err(errors) => Break(Decision::answer(json(
            StatusCode::UNPROCESSABLE_ENTITY,
            to_json(&Message {
                message: "The given data was invalid.",
                errors: Some(&errors),
                status: 422,
                trace_id: None,
            }),
        ))),
    }
}

/// Stage 7, tokens: with `--check-tokens`, `provider.token` is 422 unless
/// this emulator minted it, it is unused and unexpired (see
/// [`sumsub::TokenBook`]).
fn token_checked(
    shared: &Shared,
    state: &mut State,
    token: &str,
    id: &str,
) -> ControlFlow<Decision> {
    if shared.config.check_tokens {
        let now = shared.now_micros();
        if let Err(rejection) = state.tokens.check(token, now) {
            state.counters.token_rejections[rejection.index()] += 1;
            let mut errors = FieldErrors::default();
            errors.add("provider.token", sumsub::TOKEN_INVALID.to_string());
            let mut decision = Decision::answer(json(
                StatusCode::UNPROCESSABLE_ENTITY,
                to_json(&Message {
                    message: "The given data was invalid.",
                    errors: Some(&errors),
                    status: 422,
                    trace_id: None,
                }),
            ));
            decision.id = Some(id.to_string());
            decision.token_rejection = Some(rejection);
            return Break(decision);
        }
    }
    Continue(())
}

/// Stage 8, injected faults (see [`faults`](super::faults)); with
/// `--check-tokens` the token is used up, unless a fault struck and
/// `--consume-token-on-fault` is off.
fn faulted(shared: &Shared, state: &mut State, token: &str, id: &str) -> Option<Fault> {
    let fault = if shared.config.fail_always.iter().any(|f| f == id) {
        Some(Fault::FailRate)
    } else {
        state.faults.decide(id)
    };
    if shared.config.check_tokens && (fault.is_none() || shared.config.consume_token_on_fault) {
        state.tokens.consume(token);
    }
    fault
}

/// Stage 9, accepted: 202 `{"identityReference": …}`, or the fault's answer
/// (500, reset, hang).
fn accepted(
    shared: &Shared,
    object: Map<String, Value>,
    id: String,
    fault: Option<Fault>,
) -> Decision {
    let mut decision = Decision::answer(match fault {
        Some(Fault::FailFirst | Fault::FailRate) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            to_json(&Message {
                message: "Server Error",
                errors: None,
                status: 500,
                trace_id: Some(shared.trace_id()),
            }),
        ),
        _ => json(
            StatusCode::ACCEPTED,
            serde_json::json!({ "identityReference": id }).to_string(),
        ),
    });
    match fault {
        Some(Fault::Reset) => decision.action = Action::Reset,
        Some(Fault::Hang) => decision.action = Action::Hang,
        Some(_) => {}
        None => {
            decision.payload = Some(Value::Object(object));
            let now = shared.now_micros();
            shared
                .lock()
                .identities
                .entry(id.clone())
                .and_modify(|(_, last)| *last = now)
                .or_insert((now, now));
        }
    }
    decision.fault = fault;
    decision.id = Some(id);
    decision
}

/// Counts the answer by status (resets and hangs apart), and a 401's reason.
fn count(shared: &Shared, decision: &Decision) {
    let status = decision.status();
    let mut state = shared.lock();
    let counters = &mut state.counters;
    match decision.action {
        Action::Answer(_) => *counters.by_status.entry(status).or_insert(0) += 1,
        Action::Reset => counters.resets += 1,
        Action::Hang => counters.hangs += 1,
    }
    if let Some(reason) = decision.reason {
        counters.auth_failures[reason.index()] += 1;
    }
}

/// Writes a share or identity request to the record file, before its
/// answer is sent. Identity lines add `route` and `method`.
fn write_record(
    shared: &Shared,
    route: Route,
    seq: Option<u64>,
    arrived: SystemTime,
    parts: &Parts,
    body: Option<&Bytes>,
    decision: &Decision,
) {
    let status = decision.status();
    if let (Some(recorder), Some(seq)) = (&shared.recorder, seq) {
        // Requests refused before parsing (401, 429) are still attributed to
        // a customer when their body and header allow it.
        let identity = route == Route::Identity;
        let id = decision.id.clone().or_else(|| {
            if identity {
                return Some(identity_of(parts).to_string());
            }
            let value = serde_json::from_slice::<Value>(body?).ok()?;
            Some(value.get("identityReference")?.as_str()?.to_string())
        });
        let header = parts.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
        let nonce = auth::parse_header(header).ok().map(|c| c.nonce);
        let (time, unix_micros) = record::timestamp(arrived);
        let entry = record::Entry {
            seq,
            route: identity.then_some("identity"),
            method: identity.then_some(parts.method.as_str()),
            time,
            unix_micros,
            identity_reference: id.as_deref(),
            status,
            nonce,
            reason: decision
                .reason
                .map(AuthFailure::as_str)
                .or(decision.token_rejection.map(|r| match r {
                    TokenRejection::Unknown => "unknown_token",
                    TokenRejection::Used => "used_token",
                    TokenRejection::Expired => "expired_token",
                })),
            fault: decision.fault.map(Fault::as_str),
            payload: decision.payload.as_ref(),
        };
        // A rehearsal tool: a full disk must not take the emulator down.
        let _ = recorder.write(&entry);
    }
}

/// Sends the answer after `--latency` (and its jitter), cut short by
/// shutdown; a hang waits for shutdown, then drops the connection.
async fn respond(shared: &Shared, action: Action) -> Result<Response<Body>, Dropped> {
    match action {
        Action::Hang => {
            shared.shutting_down().await;
            Err(Dropped)
        }
        action => {
            let mut delay = shared.config.latency;
            let jitter = shared.config.latency_jitter;
            if !jitter.is_zero() {
                let f: f64 = shared.lock().jitter_rng.random();
                delay += jitter.mul_f64(f);
            }
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.shutting_down() => {}
                }
            }
            match action {
                Action::Answer(response) => Ok(response),
                _ => Err(Dropped),
            }
        }
    }
}

fn authenticate(
    shared: &Shared,
    creds: Result<auth::Credentials<'_>, AuthFailure>,
    method: &str,
    body: &[u8],
) -> Result<(), AuthFailure> {
    let n = shared.authenticating.fetch_add(1, Ordering::Relaxed) + 1;
    if shared.config.unauth_after.is_some_and(|limit| n > limit) {
        return Err(AuthFailure::Revoked);
    }
    let creds = creds?;
    let nonce = shared.verifier.verify(&creds, method, SHARE_PATH, body)?;
    let now = shared.now_micros();
    shared.lock().nonces.admit(nonce, now)
}

/// The JSON error bodies, fields in Banxa's order.
#[derive(Serialize)]
struct Message<'a> {
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a FieldErrors>,
    status: u16,
    #[serde(rename = "traceId", skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
}

fn method_not_allowed(method: &Method, path: &str, allowed: &'static str) -> Response<Body> {
    let mut response = json(
        StatusCode::METHOD_NOT_ALLOWED,
        to_json(&Message {
            message: &format!(
                "The {method} method is not supported for route {path}. Supported methods: {allowed}."
            ),
            errors: None,
            status: 405,
            trace_id: None,
        }),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allowed));
    response
}
