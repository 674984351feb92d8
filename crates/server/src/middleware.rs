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
use crate::extract::{authenticate, read_body};
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
        .unwrap_or_else(|| format!("req_{}", &orgplane_core::EventId::new().to_string()[4..]))
}

pub async fn request_context(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let mut response = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status();
    state.metrics.observe(method.as_str(), &route, status.as_u16(), elapsed);
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
/// A bad token is refused here, before any handler runs.
pub async fn authentication(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match authenticate(&state, req.headers()).await {
        Ok(Some(principal)) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// `Idempotency-Key` on POST: the first response is stored (per principal
/// and key) and replayed for a repeat with the same body; another body under
/// the same key is refused. Failures on our side (5xx) are not stored, so a
/// retry runs again.
pub async fn idempotency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get("idempotency-key").cloned() else {
        return next.run(req).await;
    };
    let Some(key) = key.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255).map(str::to_owned) else {
        return ApiError::invalid("Idempotency-Key must be 1 to 255 visible ASCII characters")
            .with_param("Idempotency-Key")
            .into_response();
    };
    let principal = match req.extensions().get::<crate::extract::Principal>() {
        Some(p) => p.key(),
        None => "anonymous".to_owned(),
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
    let now = time::OffsetDateTime::now_utc();
    match state.store.idempotency_begin(&principal, &key, &request_hash, now).await {
        Ok(IdempotencyBegin::Proceed) => {}
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
        Ok(IdempotencyBegin::InProgress) => {
            return ApiError::conflict("a request with this Idempotency-Key is still in progress; retry in a moment")
                .into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let status = response.status();
    if status.is_server_error() {
        if let Err(e) = state.store.idempotency_release(&principal, &key).await {
            tracing::warn!(error = %e, "could not release an idempotency key");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return ApiError::internal(format!("response body: {e}")).into_response(),
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
    if let Err(e) = state.store.idempotency_complete(&principal, &key, status.as_u16(), &stored).await {
        return ApiError::from(e).into_response();
    }
    Response::from_parts(parts, Body::from(bytes))
}
