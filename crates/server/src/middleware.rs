//! Cross-cutting request handling, outermost first: a request id on every
//! request and log line, metrics and an access log; authentication of the
//! `Authorization` header once per request; `Idempotency-Key` replay.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orgplane_store::IdempotencyBegin;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::error::ApiError;
use crate::extract::{authenticate_scoped, read_body};
use crate::state::AppState;

/// Top-level JSON fields of a response that hold a one-time secret (an
/// invitation's accept token). They are removed from the copy stored for
/// `Idempotency-Key` replay: a replay answers without them, and the secret
/// is never written to the database in plain text.
#[derive(Clone, Copy, Debug)]
pub struct SecretFields(pub &'static [&'static str]);

/// The request's id: the caller's `X-Request-Id` when it is sane, else ours.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn request_id(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id)
}

/// `req_` + this process's random 64-bit prefix + a counter, in hex: unique
/// across replicas and restarts in practice, and made without a system call
/// (a UUIDv7 per request asked the kernel for random bytes each time).
fn new_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    format!("req_{prefix:016x}{:012x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

pub async fn request_context(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    // A clone of the matched path is a reference count, not a copy.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let mut response = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status();
    state.metrics.observe(method.as_str(), route, status.as_u16(), elapsed);
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), micros = elapsed.as_micros() as u64, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), micros = elapsed.as_micros() as u64, "request");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Verifies the `Authorization` header once; extractors read the result.
/// A bad token is refused here, before any handler runs, and counts against
/// its peer address's anonymous rate (see `crate::limits`).
pub async fn authentication(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match authenticate_scoped(&state, req.headers()).await {
        Ok(Some((principal, scope))) => {
            if let Some(scope) = scope {
                if let Err(refusal) = crate::keys::scope_allows(scope, &req) {
                    return refusal.into_response();
                }
                req.extensions_mut().insert(scope);
            }
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            match crate::limits::charge_refused_credentials(&state, &req) {
                Ok(()) => e.into_response(),
                Err(refusal) => refusal.into_response(),
            }
        }
        Err(e) => e.into_response(),
    }
}

/// `Idempotency-Key` on POST: the first response is stored (per principal
/// and key) and replayed for a repeat with the same body; another body under
/// the same key is refused. Failures on our side (5xx, a panic, the request
/// timeout) are not stored and release the key, so a retry runs again.
///
/// From the claim on, the request runs in a task of its own: a client that
/// disconnects can't cancel it half-way, and the task stores the response
/// (or releases the key) whether or not anyone still listens, so the retry
/// replays it. A claim whose replica died is taken over by a retry once its
/// lease (`server.idempotency_lease_secs`) has run out.
pub async fn idempotency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get("idempotency-key").cloned() else {
        return next.run(req).await;
    };
    // Visible ASCII only (HTTP has already dropped blanks around the value):
    // the document's pattern, so a key with a space inside is refused too.
    let visible = |k: &str| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..=0x7e).contains(&b));
    let Some(key) = key.to_str().ok().filter(|k| visible(k)).map(str::to_owned) else {
        return ApiError::invalid("Idempotency-Key must be 1 to 255 visible ASCII characters")
            .with_param("Idempotency-Key")
            .into_response();
    };
    // Keys are scoped to who sent them: without credentials there is no one
    // to scope to (the route answers 401, or needs none), so nothing is
    // claimed and two strangers' equal keys never meet.
    let Some(principal) = req.extensions().get::<crate::extract::Principal>().map(|p| p.key()) else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match read_body(Request::from_parts(parts.clone(), body), state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update(b" ");
    hasher.update(parts.uri.path().as_bytes());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let request_hash = hex::encode(hasher.finalize());
    let request = Request::from_parts(parts, Body::from(bytes));
    // Claim, run and record in a task that outlives this future: hyper drops
    // the future when the client goes away, and a claim made but never
    // finished would hold the key until its lease ends.
    let claimed = IdempotentRequest { state, principal, key, request_hash };
    match tokio::spawn(claimed.run(request, next).in_current_span()).await {
        Ok(response) => response,
        Err(e) => ApiError::internal(format!("idempotent request task: {e}")).into_response(),
    }
}

/// A POST with an `Idempotency-Key`, from its claim to its stored answer.
struct IdempotentRequest {
    state: AppState,
    principal: String,
    key: String,
    request_hash: String,
}

impl IdempotentRequest {
    async fn run(self, request: Request, next: Next) -> Response {
        let now = self.state.clock.now();
        let lease = self.state.config.server.idempotency_lease();
        let claimed_at = match self
            .state
            .store
            .idempotency_begin(&self.principal, &self.key, &self.request_hash, now, lease)
            .await
        {
            Ok(IdempotencyBegin::Proceed { claimed_at }) => claimed_at,
            Ok(IdempotencyBegin::Replay { status, body }) => {
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
                response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
                return response;
            }
            Ok(IdempotencyBegin::Mismatch) => {
                return ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    "this Idempotency-Key was already used with a different request; use a new key for a new request",
                )
                .with_param("Idempotency-Key")
                .into_response();
            }
            Ok(IdempotencyBegin::InProgress { until }) => return in_progress(now, until),
            Err(e) => return ApiError::from(e).into_response(),
        };
        // The handler runs in a task of its own so that a panic in it is
        // seen here, and the key released, rather than unwinding this task.
        let response = match tokio::spawn(next.run(request).in_current_span()).await {
            Ok(response) => response,
            Err(e) => {
                self.release(claimed_at).await;
                return ApiError::internal(format!("request handler: {e}")).into_response();
            }
        };
        let status = response.status();
        if status.is_server_error() {
            self.release(claimed_at).await;
            return response;
        }
        let (parts, body) = response.into_parts();
        let bytes = match axum::body::to_bytes(body, 16 * 1024 * 1024).await {
            Ok(b) => b,
            Err(e) => {
                self.release(claimed_at).await;
                return ApiError::internal(format!("response body: {e}")).into_response();
            }
        };
        let stored = match parts.extensions.get::<SecretFields>() {
            Some(SecretFields(fields)) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Object(mut map)) => {
                    for field in *fields {
                        map.remove(*field);
                    }
                    serde_json::to_vec(&map).unwrap_or_default()
                }
                _ => bytes.to_vec(),
            },
            None => bytes.to_vec(),
        };
        match self
            .state
            .store
            .idempotency_complete(&self.principal, &self.key, claimed_at, status.as_u16(), &stored)
            .await
        {
            Ok(true) => {}
            // Only possible when this request outlived its lease, which the
            // request timeout (shorter than the lease) prevents.
            Ok(false) => tracing::warn!("an Idempotency-Key claim was taken over before its request finished"),
            Err(e) => return ApiError::from(e).into_response(),
        }
        Response::from_parts(parts, Body::from(bytes))
    }

    async fn release(&self, claimed_at: orgplane_core::Timestamp) {
        if let Err(e) = self.state.store.idempotency_release(&self.principal, &self.key, claimed_at).await {
            tracing::warn!(error = %e, "could not release an idempotency key; a retry can take it over when its lease ends");
        }
    }
}

/// 409 for a key held by a running request, with when to retry.
fn in_progress(now: time::OffsetDateTime, until: time::OffsetDateTime) -> Response {
    let wait = (until - now).whole_seconds().max(0) + 1;
    let message = format!(
        "a request with this Idempotency-Key is still in progress; retry in {wait} s (see Retry-After) with the same key to get its answer"
    );
    let mut response = ApiError::conflict(message).into_response();
    response.headers_mut().insert("retry-after", HeaderValue::from(wait));
    response
}

/// Stops a request that runs longer than `server.request_timeout_secs` and
/// answers `503 unavailable` with `Retry-After`. What the request had not
/// committed is rolled back as its future is dropped, and the idempotency
/// layer around this one releases its key. The event stream
/// (`GET /v1/events/stream`) is long-lived by design and exempt.
pub async fn request_timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    if route.as_deref() == Some("/v1/events/stream") {
        return next.run(req).await;
    }
    let limit = state.config.server.request_timeout_secs;
    match tokio::time::timeout(state.config.server.request_timeout(), next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable(
            format!("the request did not finish within {limit} s and was stopped; retry in a moment"),
            1,
        )
        .into_response(),
    }
}
