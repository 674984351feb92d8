//! Payment-provider webhooks. Each handler reads the raw body (up to
//! `max_body_bytes`, else 413), hands it with its signature header to the
//! billing service, and answers 2xx once the event is stored: applied,
//! ignored, unmatched or failed alike (the last two are retried by
//! reconciliation, so the provider need not retry them). A signature that
//! does not verify is `400 invalid_signature` and nothing is stored; a
//! database that is unavailable answers `503 unavailable` at once, with
//! nothing stored, so the provider delivers again.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::HeaderMap;

use crate::billing::WebhookReceipt;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::read_body;
use crate::state::AppState;

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Stripe's webhook endpoint: `Stripe-Signature` verified against every
/// configured secret, within the timestamp tolerance.
#[utoipa::path(post, path = "/v1/webhooks/stripe", operation_id = "receive_stripe_webhook", tag = "webhooks",
    params(("Stripe-Signature" = String, Header)),
    request_body(content = Object, content_type = "application/json", description = "a Stripe event, verbatim"),
    responses((status = 200, body = WebhookReceipt), (status = 400, body = ErrorBody, description = "invalid_signature"),
        (status = 413, body = ErrorBody, description = "payload_too_large"), (status = 503, body = ErrorBody, description = "unavailable: deliver again")))]
pub async fn stripe(State(state): State<AppState>, req: Request) -> ApiResult<Json<WebhookReceipt>> {
    let signature = header(req.headers(), orgplane_billing::stripe::signature::HEADER);
    let body = read_body(req, state.config.max_body_bytes).await?;
    Ok(Json(state.billing.receive_stripe(&body, signature.as_deref()).await?))
}

/// Lemon Squeezy's webhook endpoint: `X-Signature` verified with the signing secret.
#[utoipa::path(post, path = "/v1/webhooks/lemonsqueezy", operation_id = "receive_lemonsqueezy_webhook", tag = "webhooks",
    params(("X-Signature" = String, Header), ("X-Event-Name" = Option<String>, Header)),
    request_body(content = Object, content_type = "application/json", description = "a Lemon Squeezy event, verbatim"),
    responses((status = 200, body = WebhookReceipt), (status = 400, body = ErrorBody, description = "invalid_signature"),
        (status = 413, body = ErrorBody, description = "payload_too_large"), (status = 503, body = ErrorBody, description = "unavailable: deliver again")))]
pub async fn lemonsqueezy(State(state): State<AppState>, req: Request) -> ApiResult<Json<WebhookReceipt>> {
    let signature = header(req.headers(), orgplane_billing::lemonsqueezy::signature::HEADER);
    let event_name = header(req.headers(), orgplane_billing::lemonsqueezy::signature::EVENT_NAME_HEADER);
    let body = read_body(req, state.config.max_body_bytes).await?;
    Ok(Json(state.billing.receive_lemonsqueezy(&body, signature.as_deref(), event_name.as_deref()).await?))
}
