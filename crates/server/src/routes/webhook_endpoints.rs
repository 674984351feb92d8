//! The app's outgoing webhook endpoints (API keys): create, list, read,
//! change, delete, rotate the signing secret, send a test event, read the
//! delivery log, replay. Sending is `crate::webhook_worker`'s.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use orgplane_core::webhooks::EventTypeFilter;
use orgplane_core::{EventId, Label, OrgId, Timestamp, WebhookEndpointId};
use orgplane_store::{
    DeliveryRecord, DeliveryStatus, NewWebhookEndpoint, ReplayFrom, WebhookEndpointPatch, WebhookEndpointRecord,
};
use serde::{Deserialize, Deserializer, Serialize};

use super::events::EventResponse;
use super::{Deleted, List, rfc3339};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiKeyCaller, ApiQuery, PageParams, Pagination, PathId};
use crate::state::AppState;
use crate::webhook_delivery::SigningSecret;

/// How long a rotated-out secret keeps signing.
const ROTATION_OVERLAP: time::Duration = time::Duration::hours(24);

#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookEndpointResponse {
    /// `whe_…`
    pub id: String,
    pub url: String,
    /// Exact event types and `prefix.*` patterns; `null`: every event.
    pub event_types: Option<Vec<String>>,
    /// Set: only this org's events.
    pub org_id: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why the endpoint was disabled (410 Gone, failing too long, or through the API).
    pub disabled_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// `whsec_…`: only in the answer that made it (creation, rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<WebhookEndpointRecord> for WebhookEndpointResponse {
    fn from(e: WebhookEndpointRecord) -> Self {
        WebhookEndpointResponse {
            id: e.id.to_string(),
            url: e.url,
            event_types: (!e.event_types.is_empty()).then_some(e.event_types),
            org_id: e.org_id,
            description: e.description,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
            secret: None,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookEndpoint {
    /// `https://…` (`http://` only with `webhooks.allow_http`).
    #[schema(value_type = crate::openapi::schema::HttpUrl)]
    pub url: String,
    /// Exact names (`org.updated`) and prefixes (`subscription.*`); absent: every event.
    #[schema(value_type = Option<Vec<crate::openapi::schema::EventTypePattern>>, max_items = 100)]
    pub event_types: Option<Vec<String>>,
    /// Only this org's events.
    #[schema(value_type = Option<crate::openapi::schema::OrgId>)]
    pub org_id: Option<String>,
    #[schema(value_type = Option<crate::openapi::schema::Label>)]
    pub description: Option<Label>,
}

/// `null` and absent differ for `description`: null clears it.
fn some_nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Label>>, D::Error> {
    Option::<Label>::deserialize(d).map(Some)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookEndpoint {
    #[schema(value_type = Option<crate::openapi::schema::HttpUrl>)]
    pub url: Option<String>,
    /// `[]` or `["*"]`: every event.
    #[schema(value_type = Option<Vec<crate::openapi::schema::EventTypePattern>>, max_items = 100)]
    pub event_types: Option<Vec<String>>,
    /// `true` again after a disable: deliveries resume (events committed
    /// meanwhile are not sent; replay them).
    pub enabled: Option<bool>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "some_nullable")]
    #[schema(value_type = Option<crate::openapi::schema::Label>)]
    pub description: Option<Option<Label>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RotatedSecret {
    pub id: String,
    /// The new `whsec_…`, shown once.
    pub secret: String,
    /// Until then the previous secret signs too (a second signature).
    pub previous_secret_expires_at: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TestQueued {
    /// The `webhook-id` the test delivery carries.
    pub event_id: String,
    /// `dlv_…`, listed in the delivery log.
    pub delivery_id: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AttemptResponse {
    pub attempt: i64,
    pub attempted_at: String,
    /// `null`: no answer (connection failure, timeout, refused address).
    pub status_code: Option<u16>,
    pub duration_ms: i64,
    /// The first KiB of the answer's body.
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryResponse {
    /// `dlv_…`
    pub id: String,
    /// The event (and the `webhook-id` header).
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `succeeded` or `failed`
    pub status: &'static str,
    /// When the next attempt goes out (pending only).
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub attempts: Vec<AttemptResponse>,
}

impl From<DeliveryRecord> for DeliveryResponse {
    fn from(d: DeliveryRecord) -> Self {
        DeliveryResponse {
            id: d.id.to_string(),
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status.as_str(),
            next_attempt_at: d.next_attempt_at.map(rfc3339),
            created_at: rfc3339(d.created_at),
            attempts: d
                .attempts
                .into_iter()
                .map(|a| AttemptResponse {
                    attempt: a.attempt,
                    attempted_at: rfc3339(a.attempted_at),
                    status_code: a.status_code,
                    duration_ms: a.duration_ms,
                    response_excerpt: a.response_excerpt,
                    error: a.error,
                })
                .collect(),
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// `evt_…` (every event after it) or an RFC 3339 time (every event committed at or after it).
    #[schema(value_type = crate::openapi::schema::Text)]
    pub since: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReplayQueued {
    pub queued: u64,
}

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    status: Option<String>,
}

fn unprocessable_url(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message).with_param("url")
}

/// Creates an endpoint; the answer carries its signing secret, once.
#[utoipa::path(post, path = "/v1/webhook_endpoints", operation_id = "create_webhook_endpoint", tag = "webhooks", security(("api_key" = [])),
    request_body = CreateWebhookEndpoint,
    responses((status = 201, body = WebhookEndpointResponse, description = "with `secret` (`whsec_…`), shown once"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "the URL is refused: not https, or a private address")))]
pub async fn create(
    State(state): State<AppState>,
    _caller: ApiKeyCaller,
    ApiJson(body): ApiJson<CreateWebhookEndpoint>,
) -> ApiResult<(StatusCode, Json<WebhookEndpointResponse>)> {
    let event_types = EventTypeFilter::parse(&body.event_types.unwrap_or_default())?;
    let org_id = body
        .org_id
        .map(|o| o.parse::<OrgId>().map_err(|e| ApiError::invalid(e.to_string()).with_param("org_id")))
        .transpose()?;
    state.webhooks.sender_policy().check_url(&body.url).await.map_err(unprocessable_url)?;
    let id = WebhookEndpointId::new();
    let secret = SigningSecret::generate();
    let new = NewWebhookEndpoint {
        id,
        url: body.url,
        event_types,
        org_id,
        description: body.description.map(|d| d.as_str().to_owned()),
        secret: state.webhooks.secrets().seal(id, &secret),
    };
    let record = state.store.create_webhook_endpoint(&new, state.clock.now()).await?;
    let mut response = WebhookEndpointResponse::from(record);
    response.secret = Some(secret.display());
    Ok((StatusCode::CREATED, Json(response)))
}

/// Every endpoint, oldest first.
#[utoipa::path(get, path = "/v1/webhook_endpoints", operation_id = "list_webhook_endpoints", tag = "webhooks", security(("api_key" = [])),
    params(PageParams),
    responses((status = 200, body = List<WebhookEndpointResponse>),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _caller: ApiKeyCaller,
    Pagination(page): Pagination,
) -> ApiResult<Json<List<WebhookEndpointResponse>>> {
    let page = state.store.webhook_endpoints(&page).await?;
    Ok(Json(List { data: page.data.into_iter().map(Into::into).collect(), has_more: page.has_more }))
}

/// One endpoint (without its secret).
#[utoipa::path(get, path = "/v1/webhook_endpoints/{endpoint}", operation_id = "get_webhook_endpoint", tag = "webhooks", security(("api_key" = [])),
    params(("endpoint" = String, Path)),
    responses((status = 200, body = WebhookEndpointResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    _caller: ApiKeyCaller,
    PathId(id): PathId<WebhookEndpointId>,
) -> ApiResult<Json<WebhookEndpointResponse>> {
    let record =
        state.store.webhook_endpoint(id).await?.ok_or_else(|| ApiError::not_found("webhook endpoint not found"))?;
    Ok(Json(record.into()))
}

/// Changes `url`, `event_types`, `enabled` or `description`.
#[utoipa::path(patch, path = "/v1/webhook_endpoints/{endpoint}", operation_id = "update_webhook_endpoint", tag = "webhooks", security(("api_key" = [])),
    params(("endpoint" = String, Path)), request_body = UpdateWebhookEndpoint,
    responses((status = 200, body = WebhookEndpointResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    _caller: ApiKeyCaller,
    PathId(id): PathId<WebhookEndpointId>,
    ApiJson(body): ApiJson<UpdateWebhookEndpoint>,
) -> ApiResult<Json<WebhookEndpointResponse>> {
    let event_types = body.event_types.as_deref().map(EventTypeFilter::parse).transpose()?;
    if let Some(url) = &body.url {
        state.webhooks.sender_policy().check_url(url).await.map_err(unprocessable_url)?;
    }
    let patch = WebhookEndpointPatch {
        url: body.url,
        event_types,
        enabled: body.enabled,
        description: body.description.map(|d| d.map(|d| d.as_str().to_owned())),
    };
    let record = state.store.update_webhook_endpoint(id, &patch, state.clock.now()).await?;
    Ok(Json(record.into()))
}

/// Deletes the endpoint with its delivery log.
#[utoipa::path(delete, path = "/v1/webhook_endpoints/{endpoint}", operation_id = "delete_webhook_endpoint", tag = "webhooks", security(("api_key" = [])),
    params(("endpoint" = String, Path)),
    responses((status = 200, body = Deleted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    _caller: ApiKeyCaller,
    PathId(id): PathId<WebhookEndpointId>,
) -> ApiResult<Json<Deleted>> {
    if !state.store.delete_webhook_endpoint(id).await? {
        return Err(ApiError::not_found("webhook endpoint not found"));
    }
    Ok(Json(Deleted { id: id.to_string(), deleted: true }))
}

/// A new signing secret, shown once; the previous one also signs for 24 hours.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{endpoint}/rotate_secret", operation_id = "rotate_webhook_secret", tag = "webhooks", security(("api_key" = [])),
    params(("endpoint" = String, Path)),
    responses((status = 200, body = RotatedSecret), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    _caller: ApiKeyCaller,
    PathId(id): PathId<WebhookEndpointId>,
) -> ApiResult<Json<RotatedSecret>> {
    let secret = SigningSecret::generate();
    let now = state.clock.now();
    let until = now + ROTATION_OVERLAP;
    state.store.rotate_webhook_secret(id, &state.webhooks.secrets().seal(id, &secret), until, now).await?;
    Ok(Json(RotatedSecret { id: id.to_string(), secret: secret.display(), previous_secret_expires_at: rfc3339(until) }))
}

/// Queues a `webhook.test` event to this endpoint only.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{endpoint}/test", operation_id = "test_webhook_endpoint", tag = "webhooks", security(("api_key" = [])),
    params(("endpoint" = String, Path)),
    responses((status = 202, body = TestQueued), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the endpoint is disabled")))]
pub async fn test(
    State(state): State<AppState>,
    ApiKeyCaller(key): ApiKeyCaller,
    PathId(id): PathId<WebhookEndpointId>,
) -> ApiResult<(StatusCode, Json<TestQueued>)> {
    let event_id = EventId::new();
    let now: Timestamp = state.clock.now();
    let event = EventResponse {
        id: event_id.to_string(),
        org_id: None,
        kind: "webhook.test".to_owned(),
        actor: key.to_string(),
        data: serde_json::json!({"endpoint_id": id.to_string()}),
        created_at: rfc3339(now),
        seq: 0,
    };
    let payload = serde_json::to_string(&event).map_err(ApiError::internal)?;
    let delivery = state.store.queue_webhook_test(id, event_id, "webhook.test", &payload, now).await?;
    Ok((StatusCode::ACCEPTED, Json(TestQueued { event_id: event_id.to_string(), delivery_id: delivery.to_string() })))
}

/// The endpoint's deliveries, newest first, with every attempt.
#[utoipa::path(get, path = "/v1/webhook_endpoints/{endpoint}/deliveries", operation_id = "list_webhook_deliveries", tag = "webhooks", security(("api_key" = [])),
    params(("endpoint" = String, Path), ("status" = Option<crate::openapi::schema::DeliveryStatus>, Query, description = "pending, succeeded or failed"),
        PageParams),
    responses((status = 200, body = List<DeliveryResponse>),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    _caller: ApiKeyCaller,
    PathId(id): PathId<WebhookEndpointId>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
    Pagination(page): Pagination,
) -> ApiResult<Json<List<DeliveryResponse>>> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(DeliveryStatus::parse(text).ok_or_else(|| {
            ApiError::invalid("status must be one of pending, succeeded, failed").with_param("status")
        })?),
    };
    let page = state.store.webhook_deliveries(id, status, &page).await?;
    Ok(Json(List { data: page.data.into_iter().map(Into::into).collect(), has_more: page.has_more }))
}

/// Sends again every stored event after `since` that the endpoint takes.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{endpoint}/replay", operation_id = "replay_webhook_events", tag = "webhooks", security(("api_key" = [])),
    params(("endpoint" = String, Path)), request_body = ReplayRequest,
    responses((status = 200, body = ReplayQueued), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn replay(
    State(state): State<AppState>,
    _caller: ApiKeyCaller,
    PathId(id): PathId<WebhookEndpointId>,
    ApiJson(body): ApiJson<ReplayRequest>,
) -> ApiResult<Json<ReplayQueued>> {
    let since = body.since.trim();
    let from = if since.starts_with("evt_") {
        ReplayFrom::AfterEvent(since.to_owned())
    } else {
        let at = Timestamp::parse(since, &time::format_description::well_known::Rfc3339).map_err(|_| {
            ApiError::invalid("since must be an event id (evt_…) or an RFC 3339 time such as 2026-11-29T12:00:00Z")
                .with_param("since")
        })?;
        ReplayFrom::Since(at)
    };
    let queued = state.store.replay_webhook_events(id, &from, state.clock.now()).await?;
    Ok(Json(ReplayQueued { queued }))
}
